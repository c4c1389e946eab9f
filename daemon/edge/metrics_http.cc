#include "edge/metrics_http.h"

#include <stdexcept>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <spdlog/spdlog.h>

namespace warden {
namespace asio = boost::asio;
namespace http = boost::beast::http;
using asio::ip::tcp;

namespace {

tcp::endpoint loopback_endpoint(asio::io_context& io, const std::string& address) {
  auto colon = address.rfind(':');
  if (colon == std::string::npos) {
    throw std::runtime_error("--metrics-listen " + address +
                             ": give HOST:PORT, e.g. 127.0.0.1:9464");
  }
  std::string host = address.substr(0, colon);
  if (host.size() > 1 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  boost::system::error_code ec;
  auto results = tcp::resolver(io).resolve(host, address.substr(colon + 1), ec);
  if (ec || results.empty()) {
    throw std::runtime_error("--metrics-listen " + address + ": " +
                             (ec ? ec.message() : "no address"));
  }
  tcp::endpoint endpoint = *results.begin();
  if (!endpoint.address().is_loopback()) {
    throw std::runtime_error("--metrics-listen " + address +
                             ": only a loopback address is allowed (127.0.0.1, ::1, localhost)");
  }
  return endpoint;
}

}  // namespace

MetricsListener::MetricsListener(asio::io_context& io, Service& service,
                                 const std::string& address)
    : io_(io), service_(service), acceptor_(io) {
  tcp::endpoint endpoint = loopback_endpoint(io, address);
  boost::system::error_code ec;
  acceptor_.open(endpoint.protocol(), ec);
  if (!ec) acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor_.bind(endpoint, ec);
  if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) throw std::runtime_error("--metrics-listen " + address + ": " + ec.message());
}

void MetricsListener::start() { asio::co_spawn(io_, accept_loop(), asio::detached); }

void MetricsListener::stop() {
  boost::system::error_code ec;
  acceptor_.close(ec);
}

asio::awaitable<void> MetricsListener::accept_loop() {
  for (;;) {
    auto [ec, socket] = co_await acceptor_.async_accept(asio::as_tuple(asio::use_awaitable));
    if (ec == asio::error::operation_aborted || !acceptor_.is_open()) co_return;
    if (ec) continue;
    asio::co_spawn(io_, serve(std::move(socket)), asio::detached);
  }
}

asio::awaitable<std::string> MetricsListener::rendered() {
  // Rendered on the views thread (its GPU view walks /proc); the loop serves on meanwhile. The
  // timer is a condition variable: the answer cancels it.
  asio::steady_timer answered(io_, asio::steady_timer::time_point::max());
  std::string text;
  asio::post(service_.views(), [&text, &answered, home = io_.get_executor(),
                                render = service_.metrics_text()] {
    asio::post(home, [&text, &answered, out = render()]() mutable {
      text = std::move(out);
      answered.cancel();
    });
  });
  co_await answered.async_wait(asio::as_tuple(asio::use_awaitable));
  co_return text;
}

asio::awaitable<void> MetricsListener::serve(tcp::socket socket) {
  boost::beast::flat_buffer buffer(8192);
  for (;;) {
    http::request_parser<http::empty_body> parser;
    parser.header_limit(8192);
    auto [ec, _] =
        co_await http::async_read(socket, buffer, parser, asio::as_tuple(asio::use_awaitable));
    if (ec) co_return;
    const auto& request = parser.get();
    http::response<http::string_body> response;
    response.version(request.version());
    response.keep_alive(request.keep_alive());
    response.set(http::field::server, "wardend/" WARDEN_VERSION);
    if (request.target() != "/metrics" && request.target() != "/") {
      response.result(http::status::not_found);
      response.set(http::field::content_type, "text/plain");
      response.body() = "wardend serves /metrics\n";
    } else if (request.method() != http::verb::get && request.method() != http::verb::head) {
      response.result(http::status::method_not_allowed);
      response.set(http::field::allow, "GET, HEAD");
    } else {
      response.result(http::status::ok);
      response.set(http::field::content_type, "text/plain; version=0.0.4; charset=utf-8");
      if (request.method() == http::verb::get) response.body() = co_await rendered();
    }
    response.prepare_payload();
    auto [wec, __] =
        co_await http::async_write(socket, response, asio::as_tuple(asio::use_awaitable));
    if (wec || !response.keep_alive()) co_return;
  }
}

}  // namespace warden
