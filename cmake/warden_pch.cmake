# Precompiled headers, one set per layer. Every translation unit used to parse Asio, fmt, spdlog and
# nlohmann::json again, 5 to 10 s of a 20 to 40 s compile, and CI builds the tree twice (plain and
# ASan) on two cores. Each set holds only headers its layer may include: the poison of
# cmake/poison stays in force for the layer's own includes.
set(WARDEN_PCH_WORLD
  <algorithm> <chrono> <filesystem> <functional> <map> <memory> <optional> <set> <string>
  <string_view> <vector>
  <boost/asio/any_io_executor.hpp> <boost/asio/as_tuple.hpp> <boost/asio/awaitable.hpp>
  <boost/asio/experimental/awaitable_operators.hpp> <boost/asio/posix/stream_descriptor.hpp>
  <boost/asio/steady_timer.hpp> <boost/asio/this_coro.hpp> <boost/asio/use_awaitable.hpp>
  <fmt/format.h> <nlohmann/json.hpp> <spdlog/spdlog.h>)
set(WARDEN_PCH_EDGE ${WARDEN_PCH_WORLD}
  <boost/asio/co_spawn.hpp> <boost/asio/io_context.hpp> <boost/asio/local/stream_protocol.hpp>
  <boost/asio/post.hpp> <boost/asio/thread_pool.hpp>)
set(WARDEN_PCH_TESTS ${WARDEN_PCH_EDGE} <gtest/gtest.h>)
