#include "daemon/server.h"

#include <fcntl.h>
#include <malloc.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <cstring>
#include <deque>
#include <span>
#include <filesystem>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "daemon/commands.h"
#include "daemon/namespaces.h"
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

// A pidfd for the connecting process, where the kernel has SO_PEERPIDFD (6.5): it names that very
// process, whatever happens to its pid later.
UniqueFd peer_pidfd(stream_protocol::socket& socket) {
#ifndef SO_PEERPIDFD
  constexpr int SO_PEERPIDFD = 77;
#endif
  int fd = -1;
  socklen_t len = sizeof(fd);
  if (::getsockopt(socket.native_handle(), SOL_SOCKET, SO_PEERPIDFD, &fd, &len) != 0) return {};
  return UniqueFd(fd);
}

// Descriptors a connection may have passed and not yet used; more are closed on arrival.
constexpr std::size_t kMaxPassedFds = 64;

// Reads what is there, with descriptors passed along (SCM_RIGHTS: pidfds for add_process).
// Returns eof at the end of the stream, would_block if woken without data.
std::pair<boost::system::error_code, std::size_t> receive(int socket, std::span<char> into,
                                                          std::deque<UniqueFd>& fds) {
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 16)];
  iovec iov{.iov_base = into.data(), .iov_len = into.size()};
  msghdr msg{.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control,
             .msg_controllen = sizeof(control)};
  ssize_t n = ::recvmsg(socket, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
  if (n < 0) return {boost::system::error_code(errno, boost::system::system_category()), 0};
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (std::size_t i = 0; i < count; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
      UniqueFd owned(fd);
      if (fds.size() < kMaxPassedFds) fds.push_back(std::move(owned));
    }
  }
  if (n == 0) return {asio::error::eof, 0};
  return {{}, static_cast<std::size_t>(n)};
}

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
    throw std::runtime_error(dir + " (the socket's directory) is not a directory (a symlink?); "
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
      activated_(listener.has_value()),
      reserve_(::open("/dev/null", O_RDONLY | O_CLOEXEC)) {
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
    asio::co_spawn(io_, session(std::move(socket)), asio::detached);
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
                                   "wardend is out of file descriptors; retry shortly") + "\n";
    ::send(refused.get(), line.data(), line.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  }
  refused = UniqueFd();
  reserve_ = UniqueFd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (++shed_ % 100 == 1) spdlog::warn("out of file descriptors: refused {} connections so far", shed_);
  if (!refused && !reserve_) {
    // Nothing could be freed (another thread of the process took it?): do not spin.
    asio::steady_timer pause(io_, std::chrono::milliseconds(100));
    co_await pause.async_wait(asio::as_tuple(asio::use_awaitable));
  }
}

asio::awaitable<bool> Server::write_all(Socket& socket, const std::string& data, uid_t uid) {
  using namespace asio::experimental::awaitable_operators;
  // Almost always the socket takes it all at once; only a client that does not read needs the
  // timer (and its cost).
  std::size_t sent = 0;
  while (sent < data.size()) {
    ssize_t n = ::send(socket.native_handle(), data.data() + sent, data.size() - sent,
                       MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno != EAGAIN) co_return false;
    if (n < 0) break;
    sent += static_cast<std::size_t>(n);
  }
  if (sent == data.size()) co_return true;
  asio::steady_timer timeout(io_, options_.limits.request_timeout);
  auto result = co_await (asio::async_write(socket, asio::buffer(data.data() + sent, data.size() - sent),
                                            asio::as_tuple(asio::use_awaitable)) ||
                          timeout.async_wait(asio::as_tuple(asio::use_awaitable)));
  // The timer, or the read deadline (which cancels every wait on the socket), ended the write.
  if (result.index() == 1 || std::get<0>(std::get<0>(result)) == asio::error::operation_aborted) {
    spdlog::info("dropping connection uid={}: it read none of wardend's answers for {:g} s "
                 "(request-timeout)",
                 uid, to_seconds(options_.limits.request_timeout));
    co_return false;
  }
  co_return !std::get<0>(std::get<0>(result));
}

// A connection's read deadline, kept by one timer that is re-armed lazily: a request only updates
// `last_read`, and the timer, when it fires early, goes back to sleep until the real deadline.
struct Server::ReadDeadline {
  explicit ReadDeadline(asio::io_context& io) : timer(io) {}
  asio::steady_timer timer;
  std::chrono::steady_clock::time_point last_read = std::chrono::steady_clock::now();
  std::optional<std::chrono::steady_clock::time_point> line_started;  // a request under way
  bool expired = false;
  bool done = false;  // the session has ended: touch nothing of it

  std::chrono::steady_clock::time_point due(const ConnectionLimits& limits) const {
    return line_started ? *line_started + limits.request_timeout : last_read + limits.idle_timeout;
  }
};

asio::awaitable<void> Server::watch_deadline(std::shared_ptr<ReadDeadline> deadline, Socket& socket) {
  for (;;) {
    deadline->timer.expires_at(deadline->due(options_.limits));
    co_await deadline->timer.async_wait(asio::as_tuple(asio::use_awaitable));
    if (deadline->done) co_return;
    if (std::chrono::steady_clock::now() >= deadline->due(options_.limits)) {
      deadline->expired = true;
      boost::system::error_code ec;
      socket.cancel(ec);  // the session's wait for input ends, and it says why
      co_return;
    }
  }
}

asio::awaitable<bool> Server::answer_lines(Socket& socket, FrameDecoder& decoder,
                                           const RequestContext& context) {
  // Replies go out in groups of at most max_pending_output bytes, so a client that pipelines many
  // large requests without reading cannot make wardend buffer without bound.
  std::vector<Reply> replies;
  std::vector<Unwritten> unwritten;
  std::string out;
  constexpr std::size_t kLargeLine = 1 << 20;
  for (bool lines_left = true; lines_left;) {
    replies.clear();
    unwritten.clear();
    std::size_t bytes = 0;
    bool large = false;
    while (bytes < options_.limits.max_pending_output) {
      auto line = decoder.next();
      if (!line) {
        lines_left = false;
        break;
      }
      std::uint64_t staged = journal_.last_staged();
      large = large || line->size() > kLargeLine;
      replies.push_back(dispatch(context, *line));
      bytes += replies.back().line.size();
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
    if (!out.empty() && !co_await write_all(socket, out, context.caller.uid)) co_return false;
    // Parsing a large line took memory that malloc would otherwise keep for good.
    if (large) ::malloc_trim(0);
  }
  co_return true;
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
  UniqueFd caller_pidfd;
  std::string refusal;
  try {
    caller = peer_credentials(socket);
    caller_pidfd = peer_pidfd(socket);
    // Before Linux 6.5 the pid might be taken by another process meanwhile: a small race that
    // the kernel's own pidfd closes. Out of descriptors, the connection is served without one.
    if (!caller_pidfd) {
      caller_pidfd.reset(static_cast<int>(::syscall(SYS_pidfd_open, caller.pid, 0)));
    }
    caller.pidfd = caller_pidfd.get();
    caller.view = View::of(caller.pid, caller.pidfd);
  } catch (const std::exception& e) {
    refusal = std::string("wardend cannot serve this connection: ") + e.what();
  }
  if (!refusal.empty()) {
    spdlog::info("dropping connection: {}", refusal);
    co_await write_all(socket, error_reply(nullptr, ErrorCode::unavailable, refusal) + "\n",
                       caller.uid);
    co_return;
  }
  const ConnectionLimits& limits = options_.limits;
  std::size_t& mine = connections_per_user_[caller.uid];
  struct Count {
    Server& server;
    uid_t uid;
    std::size_t& mine;
    ~Count() {
      --server.connections_;
      if (--mine == 0) server.connections_per_user_.erase(uid);
    }
  } count{*this, caller.uid, (++connections_, ++mine)};
  if (connections_ > limits.max_connections || mine > limits.max_connections_per_user) {
    std::string why = connections_ > limits.max_connections
                          ? "wardend already serves " + std::to_string(limits.max_connections) +
                                " connections (the limit); retry shortly"
                          : "uid " + std::to_string(caller.uid) + " already has " +
                                std::to_string(limits.max_connections_per_user) +
                                " connections to wardend (the limit); close some";
    spdlog::info("refusing connection pid={} uid={}: {}", caller.pid, caller.uid, why);
    service_.count_refusal(ErrorCode::limit_exceeded);
    co_await write_all(socket, error_reply(nullptr, ErrorCode::limit_exceeded, why) + "\n",
                       caller.uid);
    co_return;
  }
  spdlog::debug("connect pid={} uid={} peer_pidfd={} container={}", caller.pid, caller.uid,
                caller_pidfd ? "yes" : "no", caller.view->is_wardends() ? "no" : "yes");

  std::optional<Follow> follow;
  std::deque<UniqueFd> passed_fds;
  RequestContext context{.service = service_,
                         .caller = caller,
                         .max_frame = options_.max_frame,
                         .follow = &follow,
                         .passed_fds = &passed_fds};
  FrameDecoder decoder(options_.max_frame);
  // An idle connection may wait long; a request once begun must arrive in full soon.
  auto deadline = std::make_shared<ReadDeadline>(io_);
  struct EndWatch {
    std::shared_ptr<ReadDeadline> deadline;
    ~EndWatch() {
      deadline->done = true;
      deadline->timer.cancel();
    }
  } end_watch{deadline};
  asio::co_spawn(io_, watch_deadline(deadline, socket), asio::detached);
  for (;;) {
    auto [wait_ec] = co_await socket.async_wait(Socket::wait_read, asio::as_tuple(asio::use_awaitable));
    if (deadline->expired) {
      std::string why = deadline->line_started
                            ? "request not completed within " +
                                  fmt::format("{:g}", to_seconds(limits.request_timeout)) +
                                  " s; closing the connection"
                            : "connection idle for " +
                                  fmt::format("{:g}", to_seconds(limits.idle_timeout)) +
                                  " s; closing it (reconnect when needed)";
      spdlog::info("dropping connection pid={} uid={}: {}", caller.pid, caller.uid, why);
      service_.count_refusal(ErrorCode::limit_exceeded);
      co_await write_all(socket, error_reply(nullptr, ErrorCode::limit_exceeded, why) + "\n",
                         caller.uid);
      break;
    }
    auto space = decoder.prepare(kReadChunk);
    auto [ec, n] = wait_ec ? std::pair{wait_ec, std::size_t{0}}
                           : receive(socket.native_handle(), space, passed_fds);
    deadline->last_read = std::chrono::steady_clock::now();
    decoder.commit(ec ? 0 : n);
    if (ec == asio::error::would_block || ec == asio::error::interrupted) continue;

    if (!co_await answer_lines(socket, decoder, context)) break;
    if (decoder.pending() == 0) {
      deadline->line_started.reset();
    } else if (!deadline->line_started) {
      // A partial line: its deadline is earlier than the idle one the timer sleeps towards.
      deadline->line_started = deadline->last_read;
      deadline->timer.cancel();
    }

    std::string out;
    bool close = false;
    if (decoder.overflowed()) {
      out = error_reply(nullptr, ErrorCode::frame_too_large,
                        "request line exceeds " + std::to_string(options_.max_frame) +
                            " bytes; closing the connection") + "\n";
      close = true;
    } else if (ec && decoder.pending() > 0 && ec == asio::error::eof) {
      // The peer shut down its side mid-line; it may still read our answer.
      out = error_reply(nullptr, ErrorCode::bad_request,
                        "connection closed in the middle of a request (" +
                            std::to_string(decoder.pending()) + " bytes without a newline)") + "\n";
    }
    if (!out.empty() && !co_await write_all(socket, out, caller.uid)) break;
    if (ec || close) break;
    if (follow) {
      co_await follow_events(socket, caller, follow->job);
      break;
    }
  }
  spdlog::debug("disconnect pid={} uid={}", caller.pid, caller.uid);
}

}  // namespace warden
