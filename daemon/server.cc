#include "daemon/server.h"

#include <sys/socket.h>
#include <sys/stat.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <deque>
#include <filesystem>
#include <spdlog/spdlog.h>

#include "daemon/commands.h"
#include "proto/framing.h"

namespace warden {
namespace asio = boost::asio;
using asio::local::stream_protocol;

namespace {

constexpr std::size_t kReadChunk = 16 * 1024;

Caller peer_credentials(stream_protocol::socket& socket) {
  ucred cred{};
  socklen_t len = sizeof(cred);
  if (::getsockopt(socket.native_handle(), SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    throw std::system_error(errno, std::generic_category(), "SO_PEERCRED");
  }
  return {.pid = cred.pid, .uid = cred.uid, .gid = cred.gid};
}

// True if something accepts connections on `path` (another wardend, most likely).
bool socket_is_live(asio::io_context& io, const std::string& path) {
  stream_protocol::socket probe(io);
  boost::system::error_code ec;
  probe.connect(stream_protocol::endpoint(path), ec);
  return !ec;
}

stream_protocol::acceptor bind_socket(asio::io_context& io, const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code fs_ec;
  fs::path dir = fs::path(path).parent_path();
  if (!dir.empty() && !fs::exists(dir, fs_ec)) {
    fs::create_directories(dir, fs_ec);
    if (fs_ec) throw std::runtime_error("create " + dir.string() + ": " + fs_ec.message());
    ::chmod(dir.c_str(), 0755);
  }
  if (fs::is_socket(fs::symlink_status(path, fs_ec))) {
    if (socket_is_live(io, path)) {
      throw std::runtime_error("another wardend is already listening on " + path +
                               "; stop it or pass --socket");
    }
    fs::remove(path, fs_ec);
  } else if (fs::exists(fs::symlink_status(path, fs_ec))) {
    throw std::runtime_error(path + " exists and is not a socket; remove it or pass --socket");
  }

  stream_protocol::acceptor acceptor(io);
  boost::system::error_code ec;
  stream_protocol::endpoint endpoint(path);
  acceptor.open(endpoint.protocol(), ec);
  if (!ec) acceptor.bind(endpoint, ec);
  if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) throw std::runtime_error("listen on " + path + ": " + ec.message());
  // Every local user may connect; what each may do is decided per request from SO_PEERCRED.
  if (::chmod(path.c_str(), 0666) != 0) {
    throw std::runtime_error("chmod " + path + ": " + std::strerror(errno));
  }
  return acceptor;
}

std::string storage_error(const Written& w) {
  if (w.undone) {
    return "wardend could not record this change in its state directory (" + w.error +
           "), so nothing was changed; free space there (or make it writable) and retry";
  }
  return "the change took effect, but wardend could not record it yet (" + w.error +
         "); it keeps trying, and the change is lost if wardend restarts first";
}

}  // namespace

asio::awaitable<void> Server::written(const std::vector<Unwritten>& unwritten,
                                      std::vector<Reply>& replies) {
  // The timer is a condition variable: the last answer cancels it.
  asio::steady_timer answered(io_, asio::steady_timer::time_point::max());
  std::size_t left = unwritten.size();
  for (const auto& u : unwritten) {
    journal_.when_written(u.seq, [&, index = u.reply](const Written& w) {
      if (!w.error.empty()) {
        replies[index].line = error_reply(replies[index].id, ErrorCode::unavailable, storage_error(w));
      }
      if (--left == 0) answered.cancel();
    });
  }
  co_await answered.async_wait(asio::as_tuple(asio::use_awaitable));
}

asio::awaitable<void> Server::follow_events(Socket& socket, const Caller& caller,
                                           std::optional<JobId> job) {
  using namespace asio::experimental::awaitable_operators;
  // Events queue here and go out in order; a reader that falls this far behind is dropped rather
  // than let its queue grow without bound.
  constexpr std::size_t kMaxQueued = 10'000;
  std::deque<std::string> queue;
  bool overflowed = false;
  asio::steady_timer queued(io_, asio::steady_timer::time_point::max());
  std::uint64_t id = service_.subscribe(caller, job, [&](const json& event) {
    if (queue.size() >= kMaxQueued) {
      overflowed = true;
    } else {
      queue.push_back(json{{"event", event}}.dump(-1, ' ', false, json::error_handler_t::replace) + "\n");
    }
    queued.cancel();
  });
  struct Unsubscribe {
    Service& service;
    std::uint64_t id;
    ~Unsubscribe() { service.unsubscribe(id); }
  } unsubscribe{service_, id};

  auto push = [&]() -> asio::awaitable<void> {
    for (;;) {
      while (!queue.empty()) {
        auto [ec, _] = co_await asio::async_write(socket, asio::buffer(queue.front()),
                                                  asio::as_tuple(asio::use_awaitable));
        if (ec) co_return;
        queue.pop_front();
      }
      if (overflowed) {
        spdlog::warn("uid={} dropped from the event stream: {} events behind", caller.uid, kMaxQueued);
        co_return;
      }
      queued.expires_at(asio::steady_timer::time_point::max());
      co_await queued.async_wait(asio::as_tuple(asio::use_awaitable));
    }
  };
  // The client sends nothing more; a read that ends means it has gone.
  auto until_closed = [&]() -> asio::awaitable<void> {
    char byte[256];
    for (;;) {
      auto [ec, n] = co_await socket.async_read_some(asio::buffer(byte), asio::as_tuple(asio::use_awaitable));
      if (ec) co_return;
    }
  };
  co_await (push() || until_closed());
}

Server::Server(asio::io_context& io, Service& service, Journal& journal, ServerOptions options,
               std::optional<UniqueFd> listener)
    : io_(io),
      service_(service),
      journal_(journal),
      options_(std::move(options)),
      acceptor_(io),
      activated_(listener.has_value()) {
  if (listener) {
    acceptor_.assign(stream_protocol(), listener->release());
  } else {
    acceptor_ = bind_socket(io, options_.socket_path);
  }
}

Server::~Server() { stop(); }

void Server::start() { asio::co_spawn(io_, accept_loop(), asio::detached); }

void Server::stop() {
  if (stopped_) return;
  stopped_ = true;
  boost::system::error_code ec;
  acceptor_.close(ec);
  for (Socket* s : *sessions_) s->close(ec);
  if (!activated_) std::filesystem::remove(options_.socket_path, ec);
}

asio::awaitable<void> Server::accept_loop() {
  while (!stopped_) {
    auto [ec, socket] = co_await acceptor_.async_accept(asio::as_tuple(asio::use_awaitable));
    if (stopped_) break;
    if (ec) {
      spdlog::warn("accept failed: {}", ec.message());
      continue;
    }
    asio::co_spawn(io_, session(std::move(socket)), asio::detached);
  }
}

asio::awaitable<void> Server::session(Socket socket) {
  auto sessions = sessions_;
  sessions->push_back(&socket);
  struct Unregister {
    std::shared_ptr<std::list<Socket*>> list;
    std::list<Socket*>::iterator it;
    ~Unregister() { list->erase(it); }
  } unregister{sessions, std::prev(sessions->end())};

  Caller caller;
  try {
    caller = peer_credentials(socket);
  } catch (const std::exception& e) {
    spdlog::warn("dropping connection: {}", e.what());
    co_return;
  }
  spdlog::debug("connect pid={} uid={}", caller.pid, caller.uid);

  std::optional<Follow> follow;
  RequestContext context{
      .service = service_, .caller = caller, .max_frame = options_.max_frame, .follow = &follow};
  FrameDecoder decoder(options_.max_frame);
  std::vector<Reply> replies;
  std::vector<Unwritten> unwritten;
  std::string out;
  for (;;) {
    auto space = decoder.prepare(kReadChunk);
    auto [ec, n] = co_await socket.async_read_some(asio::buffer(space.data(), space.size()),
                                                   asio::as_tuple(asio::use_awaitable));
    decoder.commit(ec ? 0 : n);
    replies.clear();
    unwritten.clear();
    while (auto line = decoder.next()) {
      std::uint64_t staged = journal_.last_staged();
      replies.push_back(dispatch(context, *line));
      if (journal_.last_staged() != staged) {
        unwritten.push_back({.reply = replies.size() - 1, .seq = journal_.last_staged()});
      }
    }
    // Nothing is acknowledged before it is on disk.
    if (!unwritten.empty()) co_await written(unwritten, replies);
    out.clear();
    for (const auto& r : replies) {
      out += r.line;
      out += '\n';
    }
    bool close = false;
    if (decoder.overflowed()) {
      out += error_reply(nullptr, ErrorCode::frame_too_large,
                         "request line exceeds " + std::to_string(options_.max_frame) +
                             " bytes; closing the connection");
      out += '\n';
      close = true;
    } else if (ec && decoder.pending() > 0 && ec == asio::error::eof) {
      // The peer shut down its side mid-line; it may still read our answer.
      out += error_reply(nullptr, ErrorCode::bad_request,
                         "connection closed in the middle of a request (" +
                             std::to_string(decoder.pending()) + " bytes without a newline)");
      out += '\n';
    }
    if (!out.empty()) {
      auto [wec, _] = co_await asio::async_write(socket, asio::buffer(out),
                                                 asio::as_tuple(asio::use_awaitable));
      if (wec) break;
    }
    if (ec || close) break;
    if (follow) {
      co_await follow_events(socket, caller, follow->job);
      break;
    }
  }
  spdlog::debug("disconnect pid={} uid={}", caller.pid, caller.uid);
}

}  // namespace warden
