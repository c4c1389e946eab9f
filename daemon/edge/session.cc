#include "edge/session.h"

#include <malloc.h>
#include <sys/socket.h>
#include <sys/syscall.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <span>
#include <string_view>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "world/namespaces.h"

namespace warden {
namespace asio = boost::asio;

namespace {

constexpr std::size_t kReadChunk = 16 * 1024;
// Descriptors a connection may have passed and not yet used; more are closed on arrival.
constexpr std::size_t kMaxPassedFds = 64;
// A request line this long took memory that malloc would otherwise keep for good.
constexpr std::size_t kLargeLine = 1 << 20;
// A connection keeps its batch's buffers between reads up to these sizes: a status reply may be
// megabytes, a pipelining client's batch tens of thousands of replies; they go once sent.
constexpr std::size_t kKeptReplyBuffer = 64 * 1024;
constexpr std::size_t kKeptReplies = 64;

Caller peer_credentials(Socket& socket) {
  ucred cred{};
  socklen_t len = sizeof(cred);
  if (::getsockopt(socket.native_handle(), SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    throw std::system_error(errno, std::generic_category(), "SO_PEERCRED");
  }
  return {.pid = cred.pid, .uid = cred.uid, .gid = cred.gid};
}

// A pidfd for the connecting process, where the kernel has SO_PEERPIDFD (6.5): it names that very
// process, whatever happens to its pid later.
UniqueFd peer_pidfd(Socket& socket) {
#ifndef SO_PEERPIDFD
  constexpr int SO_PEERPIDFD = 77;
#endif
  int fd = -1;
  socklen_t len = sizeof(fd);
  if (::getsockopt(socket.native_handle(), SOL_SOCKET, SO_PEERPIDFD, &fd, &len) != 0) return {};
  return UniqueFd(fd);
}

// Reads what is there, with descriptors passed along (SCM_RIGHTS: pidfds for add_process).
// Returns eof at the end of the stream, would_block if woken without data.
std::pair<boost::system::error_code, std::size_t> receive(int socket, std::span<char> into,
                                                          std::deque<UniqueFd>& fds) {
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 16)];
  iovec iov{.iov_base = into.data(), .iov_len = into.size()};
  msghdr msg{
      .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof(control)};
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

std::string storage_error(const Written& w) {
  if (w.undone) {
    return "wardend could not record this change in its state directory (" + w.error +
           "), so nothing was changed; free space there (or make it writable) and retry";
  }
  return "the change took effect, but wardend could not record it yet (" + w.error +
         "); it keeps trying, and the change is lost if wardend restarts first";
}

// A connection's read deadline, kept by one timer that is re-armed lazily: a request only updates
// `last_read`, and the timer, when it fires early, goes back to sleep until the real deadline.
struct ReadDeadline {
  explicit ReadDeadline(const asio::any_io_executor& ex) : timer(ex) {}
  asio::steady_timer timer;
  std::chrono::steady_clock::time_point last_read = std::chrono::steady_clock::now();
  std::optional<std::chrono::steady_clock::time_point> line_started;  // a request under way
  // While wardend answers, it reads nothing: that time is not the client's, and neither clock runs.
  std::optional<std::chrono::steady_clock::time_point> answering_since;
  bool expired = false;
  bool done = false;    // the session has ended: touch nothing of it
  bool parked = false;  // the timer sleeps for good (it fired while wardend answered)

  std::chrono::steady_clock::time_point due(const ConnectionLimits& limits) const {
    if (answering_since) return std::chrono::steady_clock::time_point::max();
    return line_started ? *line_started + limits.request_timeout : last_read + limits.idle_timeout;
  }
  void answering() { answering_since = std::chrono::steady_clock::now(); }
  // Both clocks move on by the time spent answering. The deadline only moved later, so a timer
  // still armed for the old one wakes early and sleeps again; only a parked one is woken here
  // (waking the watch after every request cost each heartbeat a coroutine resumption).
  void answered() {
    auto paused = std::chrono::steady_clock::now() - *answering_since;
    answering_since.reset();
    last_read += paused;
    if (line_started) *line_started += paused;
    if (parked) timer.cancel();
  }
};

// Ends the socket's waits once the deadline passes (the session then says why and closes).
asio::awaitable<void> watch_deadline(std::shared_ptr<ReadDeadline> deadline, Socket& socket,
                                     ConnectionLimits limits) {
  for (;;) {
    const auto due = deadline->due(limits);
    deadline->parked = due == std::chrono::steady_clock::time_point::max();
    deadline->timer.expires_at(due);
    co_await deadline->timer.async_wait(asio::as_tuple(asio::use_awaitable));
    if (deadline->done) co_return;
    if (std::chrono::steady_clock::now() >= deadline->due(limits)) {
      deadline->expired = true;
      boost::system::error_code ec;
      socket.cancel(ec);  // the session's wait for input ends, and it says why
      co_return;
    }
  }
}

class Session {
 public:
  Session(Socket socket, SessionSettings settings, std::shared_ptr<Connections> connections)
      : socket_(std::move(socket)),
        settings_(settings),
        connections_(std::move(connections)),
        listed_(connections_->open.insert(connections_->open.end(), &socket_)),
        decoder_(settings_.max_frame),
        deadline_(std::make_shared<ReadDeadline>(socket_.get_executor())) {}
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;
  ~Session() {
    connections_->open.erase(listed_);
    if (counted_) {
      --connections_->total;
      if (--connections_->per_user[caller_.uid] == 0) connections_->per_user.erase(caller_.uid);
    }
    deadline_->done = true;
    deadline_->timer.cancel();
  }

  asio::awaitable<void> run() {
    if (auto refusal = identify()) {
      spdlog::info("dropping connection: {}", *refusal);
      co_await write_all(error_reply(nullptr, ErrorCode::unavailable, *refusal) + "\n");
      co_return;
    }
    if (auto why = admit()) {
      spdlog::info("refusing connection pid={} uid={}: {}", caller_.pid, caller_.uid, *why);
      settings_.service.count_refusal(ErrorCode::limit_exceeded);
      co_await write_all(error_reply(nullptr, ErrorCode::limit_exceeded, *why) + "\n");
      co_return;
    }
    spdlog::debug("connect pid={} uid={} peer_pidfd={} container={}", caller_.pid, caller_.uid,
                  caller_pidfd_ ? "yes" : "no", caller_.view->is_wardends() ? "no" : "yes");
    // An idle connection may wait long; a request once begun must arrive in full soon.
    asio::co_spawn(socket_.get_executor(), watch_deadline(deadline_, socket_, settings_.limits),
                   log_if_thrown("a connection's deadline watch"));
    if (co_await read_requests()) co_await follow_events(follow_->job);
    spdlog::debug("disconnect pid={} uid={}", caller_.pid, caller_.uid);
  }

 private:
  // Who is connecting, from the kernel: a refusal for the client where it cannot be told.
  std::optional<std::string> identify() {
    try {
      caller_ = peer_credentials(socket_);
      caller_pidfd_ = peer_pidfd(socket_);
      // Before Linux 6.5 the pid might be taken by another process meanwhile: a small race that
      // the kernel's own pidfd closes. Out of descriptors, the connection is served without one.
      if (!caller_pidfd_) {
        caller_pidfd_.reset(static_cast<int>(::syscall(SYS_pidfd_open, caller_.pid, 0)));
      }
      caller_.pidfd = caller_pidfd_.get();
      caller_.view = View::of(caller_.pid, caller_.pidfd);
      return std::nullopt;
    } catch (const std::exception& e) {
      return std::string("wardend cannot serve this connection: ") + e.what();
    }
  }

  // Counts the connection; why it may not stay where it is over a limit.
  std::optional<std::string> admit() {
    Connections& c = *connections_;
    const ConnectionLimits& limits = settings_.limits;
    ++c.total;
    std::size_t mine = ++c.per_user[caller_.uid];
    counted_ = true;
    if (c.total > limits.max_connections) {
      return "wardend already serves " + std::to_string(limits.max_connections) +
             " connections (the limit); retry shortly";
    }
    if (mine > limits.max_connections_per_user) {
      return "uid " + std::to_string(caller_.uid) + " already has " +
             std::to_string(limits.max_connections_per_user) +
             " connections to wardend (the limit); close some";
    }
    return std::nullopt;
  }

  // Reads and answers requests until the client goes or breaks a rule (false), or asks to follow
  // the event stream (true).
  asio::awaitable<bool> read_requests() {
    for (;;) {
      auto [wait_ec] =
          co_await socket_.async_wait(Socket::wait_read, asio::as_tuple(asio::use_awaitable));
      if (deadline_->expired) {
        co_await say_expired();
        co_return false;
      }
      auto space = decoder_.prepare(kReadChunk);
      auto [ec, n] = wait_ec ? std::pair{wait_ec, std::size_t{0}}
                             : receive(socket_.native_handle(), space, passed_fds_);
      const auto idle_since = deadline_->last_read;
      const std::size_t requests_before = requests_;
      deadline_->last_read = std::chrono::steady_clock::now();
      decoder_.commit(ec ? 0 : n);
      if (ec == asio::error::would_block || ec == asio::error::interrupted) continue;

      deadline_->answering();
      bool answered = true;
      for (Answering now; answered && (now = answer_now()) != Answering::done;) {
        answered = now == Answering::waits && co_await finish_batch();
      }
      deadline_->answered();
      if (!answered) co_return false;
      // Blank lines are no request: they do not keep an idle connection open.
      if (requests_ == requests_before && decoder_.pending() == 0) {
        deadline_->last_read = idle_since;
      }
      note_partial_line();
      bool close = false;
      if (std::string said = framing_error(ec, close); !said.empty() && !co_await write_all(said)) {
        co_return false;
      }
      if (ec || close) co_return false;
      if (follow_) co_return true;
    }
  }

  asio::awaitable<void> say_expired() {
    const ConnectionLimits& limits = settings_.limits;
    std::string why = deadline_->line_started
                          ? fmt::format(
                                "request not completed within {:g} s; closing the "
                                "connection",
                                to_seconds(limits.request_timeout))
                          : fmt::format(
                                "connection idle for {:g} s; closing it (reconnect when "
                                "needed)",
                                to_seconds(limits.idle_timeout));
    spdlog::info("dropping connection pid={} uid={}: {}", caller_.pid, caller_.uid, why);
    settings_.service.count_refusal(ErrorCode::limit_exceeded);
    co_await write_all(error_reply(nullptr, ErrorCode::limit_exceeded, why) + "\n");
  }

  // A partial line has a deadline of its own, earlier than the idle one the timer sleeps towards.
  void note_partial_line() {
    if (decoder_.pending() == 0) {
      deadline_->line_started.reset();
    } else if (!deadline_->line_started) {
      deadline_->line_started = deadline_->last_read;
      deadline_->timer.cancel();
    }
  }

  // The error line for a line over the frame limit (then `close`), or for one cut off by the
  // client's shutdown; empty for none.
  std::string framing_error(boost::system::error_code ec, bool& close) const {
    std::string out;
    if (decoder_.overflowed()) {
      out = error_reply(nullptr, ErrorCode::frame_too_large,
                        "request line exceeds " + std::to_string(settings_.max_frame) +
                            " bytes; closing the connection") +
            "\n";
      close = true;
    } else if (ec == asio::error::eof && decoder_.pending() > 0) {
      // The peer shut down its side mid-line; it may still read our answer.
      out = error_reply(nullptr, ErrorCode::bad_request,
                        "connection closed in the middle of a request (" +
                            std::to_string(decoder_.pending()) + " bytes without a newline)") +
            "\n";
    }
    return out;
  }

  enum class Answering { done, gone, waits };

  // Answers the complete lines the decoder holds, in batches of at most max_pending_output bytes
  // of replies, so that a client pipelining large requests without reading cannot make wardend
  // buffer without bound. Most batches (heartbeats) are answered here and now, without a coroutine
  // frame or a timer; one that must wait (for a reply computed on the views thread, a durable
  // write, or a client slow to read) is left to finish_batch(): `waits`. `gone`: the client is.
  Answering answer_now() {
    const RequestContext context{.service = settings_.service,
                                 .caller = caller_,
                                 .max_frame = settings_.max_frame,
                                 .follow = &follow_,
                                 .passed_fds = &passed_fds_,
                                 .journal = &settings_.journal};
    for (;;) {
      batch_.clear();
      batch_large_ = false;
      std::size_t bytes = 0;
      while (bytes < settings_.limits.max_pending_output) {
        auto line = decoder_.next();
        if (!line) break;
        batch_large_ = batch_large_ || line->size() > kLargeLine;
        ++requests_;
        batch_.push_back(dispatch(context, *line));
        bytes += batch_.back().line.size();
      }
      if (batch_.empty()) return Answering::done;
      // Nothing is acknowledged before it is on disk.
      if (std::any_of(batch_.begin(), batch_.end(),
                      [](const Reply& r) { return r.later || r.change; })) {
        return Answering::waits;
      }
      join_batch();
      std::optional<std::size_t> sent = send_now(out_);
      if (!sent) return Answering::gone;
      if (*sent < out_.size()) {
        out_.erase(0, *sent);
        return Answering::waits;
      }
      end_batch();
    }
  }

  // Answers the batch answer_now() left: computes its replies, waits for its changes to be
  // written, sends it (or, where a slow reader took part of it, what out_ holds of it still);
  // false if the client is gone or stopped reading.
  asio::awaitable<bool> finish_batch() {
    if (out_.empty()) {
      if (std::any_of(batch_.begin(), batch_.end(), [](const Reply& r) { return bool(r.later); })) {
        co_await computed(batch_);
      }
      if (std::any_of(batch_.begin(), batch_.end(),
                      [](const Reply& r) { return r.change.has_value(); })) {
        co_await written(batch_);
      }
      join_batch();
    }
    if (!co_await write_all(out_)) co_return false;
    end_batch();
    co_return true;
  }

  // The batch's reply lines, as sent.
  void join_batch() {
    out_.clear();
    for (const auto& r : batch_) {
      out_ += r.line;
      out_ += '\n';
    }
  }

  // After a batch is sent; its memory goes back where it was large.
  void end_batch() {
    batch_.clear();
    out_.clear();
    if (batch_.capacity() > kKeptReplies) batch_ = std::vector<Reply>();
    if (out_.capacity() > kKeptReplyBuffer) out_ = std::string();
    if (batch_large_) ::malloc_trim(0);
  }

  // Computes, on the service's views thread, each reply whose answer is made there (Reply::later),
  // and waits for them all; the event loop answers other connections meanwhile.
  asio::awaitable<void> computed(std::vector<Reply>& replies) {
    asio::steady_timer answered(socket_.get_executor(), asio::steady_timer::time_point::max());
    std::size_t left = 0;
    const auto home = socket_.get_executor();
    for (auto& reply : replies) {
      if (!reply.later) continue;
      ++left;
      // The coroutine waits below until every one is back, so `reply` and `left` outlive them.
      asio::post(settings_.service.views(), [&reply, &left, &answered, home,
                                             later = std::move(reply.later)] {
        asio::post(home, [&reply, &left, &answered, line = later()]() mutable {
          reply.line = std::move(line);
          if (--left == 0) answered.cancel();
        });
      });
    }
    if (left > 0) co_await answered.async_wait(asio::as_tuple(asio::use_awaitable));
  }

  // Waits until each reply's change is written or has failed; a failed one's reply becomes an
  // error.
  asio::awaitable<void> written(std::vector<Reply>& replies) {
    // The timer is a condition variable: the last answer cancels it.
    asio::steady_timer answered(socket_.get_executor(), asio::steady_timer::time_point::max());
    std::size_t left = std::count_if(replies.begin(), replies.end(),
                                     [](const Reply& r) { return r.change.has_value(); });
    for (auto& reply : replies) {
      if (!reply.change) continue;
      settings_.journal.when_written(*reply.change, [&](const Written& w) {
        if (!w.error.empty()) {
          reply.line = error_reply(reply.id, ErrorCode::unavailable, storage_error(w));
        }
        if (--left == 0) answered.cancel();
      });
    }
    if (left > 0) co_await answered.async_wait(asio::as_tuple(asio::use_awaitable));
  }

  // After `events` with follow: writes each new event until the client closes the connection.
  asio::awaitable<void> follow_events(std::optional<JobId> job) {
    using namespace asio::experimental::awaitable_operators;
    // Events queue here and go out in order (each line shared by every follower); a reader that
    // falls this far behind, in events or in bytes, is dropped rather than let its queue grow
    // without bound.
    constexpr std::size_t kMaxQueued = 10'000;
    const std::size_t max_bytes = settings_.limits.max_pending_output;
    std::deque<std::shared_ptr<const std::string>> queue;
    std::size_t queued_bytes = 0;
    bool overflowed = false;
    asio::steady_timer queued(socket_.get_executor(), asio::steady_timer::time_point::max());
    Subscribers& followers = settings_.service.subscribers();
    std::uint64_t id = followers.subscribe(
        caller_, job, [&](const std::shared_ptr<const std::string>& line) {
          if (queue.size() >= kMaxQueued || queued_bytes + line->size() > max_bytes) {
            overflowed = true;
          } else {
            queue.push_back(line);
            queued_bytes += line->size();
          }
          queued.cancel();
        });
    struct Unsubscribe {
      Subscribers& followers;
      std::uint64_t id;
      ~Unsubscribe() { followers.unsubscribe(id); }
    } unsubscribe{followers, id};

    auto push = [&]() -> asio::awaitable<void> {
      for (;;) {
        while (!queue.empty()) {
          auto line = queue.front();  // held while written
          auto [ec, _] = co_await asio::async_write(socket_, asio::buffer(*line),
                                                    asio::as_tuple(asio::use_awaitable));
          if (ec) co_return;
          queue.pop_front();
          queued_bytes -= line->size();
        }
        if (overflowed) {
          spdlog::warn("uid={} dropped from the event stream: more than {} events or {} bytes "
                       "behind",
                       caller_.uid, kMaxQueued, max_bytes);
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
        auto [ec, n] = co_await socket_.async_read_some(asio::buffer(byte),
                                                        asio::as_tuple(asio::use_awaitable));
        if (ec) co_return;
      }
    };
    co_await (push() || until_closed());
  }

  // Writes all of `data`; false if the peer is gone, or read nothing for the request timeout
  // (logged).
  asio::awaitable<bool> write_all(const std::string& data) {
    std::optional<std::size_t> sent = send_now(data);
    co_return sent && (*sent == data.size() || co_await write_rest(data, *sent));
  }

  // Sends what the socket takes of `data` now: how many bytes, or none if the peer is gone.
  std::optional<std::size_t> send_now(std::string_view data) {
    std::size_t sent = 0;
    while (sent < data.size()) {
      ssize_t n = ::send(socket_.native_handle(), data.data() + sent, data.size() - sent,
                         MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno != EAGAIN) return std::nullopt;
      if (n < 0) break;
      sent += static_cast<std::size_t>(n);
    }
    return sent;
  }

  // Writes the rest of `data`, from `sent` on, for a client slow to read (only it needs the timer,
  // and its cost); false as write_all.
  asio::awaitable<bool> write_rest(const std::string& data, std::size_t sent) {
    using namespace asio::experimental::awaitable_operators;
    asio::steady_timer timeout(socket_.get_executor(), settings_.limits.request_timeout);
    auto result =
        co_await (asio::async_write(socket_, asio::buffer(data.data() + sent, data.size() - sent),
                                    asio::as_tuple(asio::use_awaitable)) ||
                  timeout.async_wait(asio::as_tuple(asio::use_awaitable)));
    // The timer, or the read deadline (which cancels every wait on the socket), ended the write.
    if (result.index() == 1 || std::get<0>(std::get<0>(result)) == asio::error::operation_aborted) {
      spdlog::info(
          "dropping connection uid={}: it read none of wardend's answers for {:g} s "
          "(request-timeout)",
          caller_.uid, to_seconds(settings_.limits.request_timeout));
      co_return false;
    }
    co_return !std::get<0>(std::get<0>(result));
  }

  Socket socket_;
  const SessionSettings settings_;
  const std::shared_ptr<Connections> connections_;
  const std::list<Socket*>::iterator listed_;
  bool counted_ = false;  // counted in connections_ (admit())
  Caller caller_;
  UniqueFd caller_pidfd_;
  FrameDecoder decoder_;
  std::deque<UniqueFd> passed_fds_;
  std::optional<Follow> follow_;
  std::size_t requests_ = 0;  // lines answered, blank ones not counted
  // The batch being answered (answer_now), kept so that its buffers serve the next.
  std::vector<Reply> batch_;
  bool batch_large_ = false;  // with a line over kLargeLine: memory goes back after it
  std::string out_;  // its lines; between batches, only the rest of one a slow reader delays
  std::shared_ptr<ReadDeadline> deadline_;
};

}  // namespace

asio::awaitable<void> serve(Socket socket, SessionSettings settings,
                            std::shared_ptr<Connections> connections) {
  Session session(std::move(socket), settings, std::move(connections));
  co_await session.run();
}

std::function<void(std::exception_ptr)> log_if_thrown(std::string what) {
  return [what = std::move(what)](std::exception_ptr error) {
    if (!error) return;
    try {
      std::rethrow_exception(error);
    } catch (const std::exception& e) {
      spdlog::error("{} ended by an error: {}", what, e.what());
    }
  };
}

}  // namespace warden
