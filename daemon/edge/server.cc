#include "edge/server.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <cstring>
#include <filesystem>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "edge/commands.h"

namespace warden {
namespace asio = boost::asio;
using asio::local::stream_protocol;

namespace {

// True if something accepts connections on `path` (another wardend, most likely).
bool socket_is_live(asio::io_context& io, const std::string& path) {
  stream_protocol::socket probe(io);
  boost::system::error_code ec;
  probe.connect(stream_protocol::endpoint(path), ec);
  return !ec;
}

// The socket's directory must be wardend's (or root's) and writable by no one else (but for a
// sticky one, like /tmp): otherwise another user could have made it, or put a socket of their
// own there, and clients would tell that process their pids and paths.
void check_socket_dir(const std::string& dir) {
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0) {
    throw std::runtime_error("stat " + dir + ": " + std::strerror(errno));
  }
  if (!S_ISDIR(st.st_mode)) {
    throw std::runtime_error(dir +
                             " (the socket's directory) is not a directory (a symlink?); "
                             "remove it or pass --socket");
  }
  if (st.st_uid != ::geteuid() && st.st_uid != 0) {
    throw std::runtime_error(fmt::format(
        "{} (the socket's directory) belongs to uid {}, not to wardend's uid {}: another user "
        "made it and could put their own socket there; remove it, or pass --socket",
        dir, st.st_uid, ::geteuid()));
  }
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0 && (st.st_mode & S_ISVTX) == 0) {
    throw std::runtime_error(fmt::format(
        "{} (the socket's directory) is writable by other users (mode {:04o}): one could replace "
        "the socket; chmod go-w it, or pass --socket",
        dir, st.st_mode & 07777));
  }
}

stream_protocol::acceptor bind_socket(asio::io_context& io, const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code fs_ec;
  fs::path dir = fs::path(path).parent_path();
  if (!dir.empty() && !fs::exists(dir, fs_ec)) {
    fs::create_directories(dir, fs_ec);
    if (fs_ec) throw std::runtime_error("create " + dir.string() + ": " + fs_ec.message());
    // Root's socket serves every user; a per-user wardend's serves its user alone.
    ::chmod(dir.c_str(), ::geteuid() == 0 ? 0755 : 0700);
  }
  if (!dir.empty()) check_socket_dir(dir.string());
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

}  // namespace

Server::Server(asio::io_context& io, Service& service, Journal& journal, ServerOptions options,
               std::optional<UniqueFd> listener)
    : io_(io),
      service_(service),
      journal_(journal),
      options_(std::move(options)),
      acceptor_(io),
      activated_(listener.has_value()),
      reserve_(::open("/dev/null", O_RDONLY | O_CLOEXEC)) {
  if (listener) {
    acceptor_.assign(stream_protocol(), listener->release());
  } else {
    acceptor_ = bind_socket(io, options_.socket_path);
  }
}

Server::~Server() { stop(); }

void Server::start() { asio::co_spawn(io_, accept_loop(), log_if_thrown("accepting connections")); }

void Server::stop() {
  if (stopped_) return;
  stopped_ = true;
  boost::system::error_code ec;
  acceptor_.close(ec);
  for (Socket* s : connections_->open) s->close(ec);
  if (!activated_) std::filesystem::remove(options_.socket_path, ec);
}

asio::awaitable<void> Server::accept_loop() {
  acceptor_.native_non_blocking(true);
  while (!stopped_) {
    auto [ec, socket] = co_await acceptor_.async_accept(asio::as_tuple(asio::use_awaitable));
    if (stopped_) break;
    if (ec == asio::error::no_descriptors || ec == asio::error::no_buffer_space) {
      co_await shed_connection();
      continue;
    }
    if (ec) {
      spdlog::warn("accept failed: {}", ec.message());
      continue;
    }
    SessionSettings settings{.service = service_,
                             .journal = journal_,
                             .max_frame = options_.max_frame,
                             .limits = options_.limits};
    asio::co_spawn(io_, serve(std::move(socket), settings, connections_),
                   log_if_thrown("a connection's session"));
  }
}

// Out of descriptors: the waiting connection would make accept fail again at once, for ever.
// The descriptor kept in reserve makes room to accept it, tell it why, and close it; then the
// reserve is taken again. Connections are served again as soon as descriptors free up.
asio::awaitable<void> Server::shed_connection() {
  reserve_ = UniqueFd();
  UniqueFd refused(::accept4(acceptor_.native_handle(), nullptr, nullptr, SOCK_CLOEXEC));
  if (refused) {
    std::string line = error_reply(nullptr, ErrorCode::limit_exceeded,
                                   "wardend is out of file descriptors; retry shortly") +
                       "\n";
    ::send(refused.get(), line.data(), line.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  }
  refused = UniqueFd();
  reserve_ = UniqueFd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (++shed_ % 100 == 1)
    spdlog::warn("out of file descriptors: refused {} connections so far", shed_);
  if (!refused && !reserve_) {
    // Nothing could be freed (another thread of the process took it?): do not spin.
    asio::steady_timer pause(io_, std::chrono::milliseconds(100));
    co_await pause.async_wait(asio::as_tuple(asio::use_awaitable));
  }
}

}  // namespace warden
