#include "warden/client.h"

#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <exception>
#include <utility>

#include "proto/framing.h"
#include "proto/messages.h"
#include "proto/socket_path.h"
#include "proto/unique_fd.h"

namespace warden {
namespace {

// Replies can be larger than requests (status of many jobs); the client accepts up to this.
constexpr std::size_t kMaxReplyBytes = 256 << 20;

[[noreturn]] void unavailable(const std::string& what) {
  throw Error(ErrorCode::unavailable, what);
}

// The connection broke (or never came up): worth reconnecting, unlike a refusal by wardend.
// `maybe_delivered`: the request may have reached wardend (it broke while awaiting the reply).
class ConnectionLost : public Error {
 public:
  ConnectionLost(const std::string& what, bool maybe_delivered)
      : Error(ErrorCode::unavailable, what), maybe_delivered(maybe_delivered) {}
  bool maybe_delivered;
};

[[noreturn]] void lost(const std::string& what, bool maybe_delivered = false) {
  throw ConnectionLost(what, maybe_delivered);
}

}  // namespace

// One connection to wardend and the protocol on it: everything of a Client but its typed
// operations, kept out of the public header (framing, JSON).
class Client::Connection {
 public:
  Connection(std::string socket_path, ClientOptions options);
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  ~Connection();

  // Sends one request (an object with "op"; "id" is added) and returns the successful reply;
  // `pass_fd` (unless -1) goes along with the request line, each time it is sent.
  json call(json request, int pass_fd = -1);
  // call() with a pidfd of `pid` passed along, unless `pid` is this process.
  json call_with_pidfd(json request, pid_t pid);
  // Connects again with backoff; false once options_.reconnect_for has passed.
  bool reconnect();
  // Waits at most options_.timeout for the line unless `bounded` is false (a followed stream).
  std::string read_line(bool bounded = true);
  // The next line, or nullopt if none has come by `until`.
  std::optional<std::string> read_line_until(std::chrono::steady_clock::time_point until);
  // Closes the connection; the next call() connects anew.
  void drop() { disconnect(); }

  const std::string socket_path_;
  const ClientOptions options_;
  std::size_t reconnects_ = 0;
  bool last_call_resent_ = false;  // the last call() was sent again on a new connection
  HelloReply hello_;

 private:
  void connect();
  void disconnect();
  json exchange(const json& request, int pass_fd = -1);
  void send_line(const std::string& line, int pass_fd);
  // Why a send failed, in wardend's own words where it said why it closed the connection.
  std::string send_failure(int err);
  bool readable_within(std::chrono::milliseconds wait);
  // Reads what has arrived (at least one byte) into the decoder.
  void receive();

  int fd_ = -1;
  std::uint64_t next_id_ = 1;
  FrameDecoder decoder_;
};

Client::Connection::Connection(std::string socket_path, ClientOptions options)
    : socket_path_(socket_path.empty() ? client_socket_path() : std::move(socket_path)),
      options_(options),
      decoder_(kMaxReplyBytes) {
  connect();
}

Client::Connection::~Connection() { disconnect(); }

Client::Client(std::string socket_path, ClientOptions options)
    : connection_(std::make_unique<Connection>(std::move(socket_path), options)) {}

Client::Client(Client&& other) noexcept = default;
Client::~Client() = default;

const HelloReply& Client::server() const { return connection_->hello_; }
const ClientOptions& Client::options() const { return connection_->options_; }
const std::string& Client::socket_path() const { return connection_->socket_path_; }
std::size_t Client::reconnects() const { return connection_->reconnects_; }

void Client::Connection::connect() {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path_.size() >= sizeof(addr.sun_path)) {
    throw Error(ErrorCode::bad_request, "socket path too long: " + socket_path_);
  }
  std::memcpy(addr.sun_path, socket_path_.c_str(), socket_path_.size() + 1);
  fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0) unavailable(std::string("socket: ") + std::strerror(errno));
  if (options_.timeout.count() > 0) {
    // Bounds connect() (a full listen backlog) and every send.
    auto ms = options_.timeout.count();
    timeval bound{.tv_sec = static_cast<time_t>(ms / 1000),
                  .tv_usec = static_cast<suseconds_t>(ms % 1000 * 1000)};
    ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &bound, sizeof(bound));
  }
  if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    int err = errno;
    disconnect();
    lost("cannot connect to " + socket_path_ + ": " + std::strerror(err) +
         " (is wardend running? set WARDEN_SOCKET or --socket)");
  }
  // Only root's wardend or one's own is trusted with one's pids and paths: a process of another
  // user listening there (a squatted /tmp/warden-UID) is an impostor.
  ucred server{};
  socklen_t len = sizeof(server);
  if (::getsockopt(fd_, SOL_SOCKET, SO_PEERCRED, &server, &len) == 0 && server.uid != 0 &&
      server.uid != ::geteuid()) {
    disconnect();
    unavailable("the process listening on " + socket_path_ + " runs as uid " +
                std::to_string(server.uid) +
                ", neither root nor you: it is not your wardend "
                "(another user may have squatted the path); refusing to talk to it");
  }
  hello_ =
      from_json<HelloReply>(exchange(to_json(HelloRequest{.client = "libwarden/" WARDEN_VERSION})));
}

void Client::Connection::disconnect() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  decoder_ = FrameDecoder(kMaxReplyBytes);
}

bool Client::Connection::reconnect() {
  using namespace std::chrono;
  auto give_up = steady_clock::now() + options_.reconnect_for;
  auto pause = milliseconds(10);
  while (steady_clock::now() < give_up) {
    try {
      disconnect();
      connect();
      ++reconnects_;
      return true;
    } catch (const ConnectionLost&) {
      // wardend is still restarting (socket absent or refusing): wait a little longer each time.
      ::usleep(static_cast<useconds_t>(duration_cast<microseconds>(pause).count()));
      pause = std::min(pause * 2, milliseconds(500));
    }
  }
  return false;
}

void Client::Connection::send_line(const std::string& line, int pass_fd) {
  std::size_t sent = 0;
  if (pass_fd >= 0) {
    // The descriptor goes with the first bytes of the line (SCM_RIGHTS).
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
    iovec iov{.iov_base = const_cast<char*>(line.data()), .iov_len = line.size()};
    msghdr msg{.msg_iov = &iov,
               .msg_iovlen = 1,
               .msg_control = control,
               .msg_controllen = sizeof(control)};
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &pass_fd, sizeof(int));
    ssize_t n;
    do {
      n = ::sendmsg(fd_, &msg, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    if (n < 0) lost(send_failure(errno));
    sent = static_cast<std::size_t>(n);
  }
  while (sent < line.size()) {
    ssize_t n = ::send(fd_, line.data() + sent, line.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      disconnect();
      unavailable("wardend took no more of the request within " +
                  std::to_string(options_.timeout.count()) + " ms on " + socket_path_);
    }
    if (n < 0) lost(send_failure(errno));
    sent += static_cast<std::size_t>(n);
  }
}

std::string Client::Connection::send_failure(int err) {
  // wardend says why before it closes a connection (a limit, an idle timeout): its words, where it
  // left them, say more than "Broken pipe".
  if (err == EPIPE || err == ECONNRESET) {
    for (int reads = 0; reads < 16 && readable_within({}); ++reads) {
      auto space = decoder_.prepare(64 * 1024);
      ssize_t n = ::recv(fd_, space.data(), space.size(), MSG_DONTWAIT);
      if (n <= 0) break;
      decoder_.commit(static_cast<std::size_t>(n));
    }
    if (auto line = decoder_.next()) {
      json said = json::parse(*line, nullptr, /*allow_exceptions=*/false);
      if (said.is_object() && said.contains("error")) {
        return "wardend closed the connection: " +
               said["error"].value("message", std::string("no reason given"));
      }
    }
  }
  return "send to " + socket_path_ + ": " + std::strerror(err);
}

std::string Client::Connection::read_line(bool bounded) {
  for (;;) {
    if (auto line = decoder_.next()) return std::string(*line);
    if (decoder_.overflowed()) unavailable("reply from wardend exceeds the client's limit");
    if (bounded && options_.timeout.count() > 0 && !readable_within(options_.timeout)) {
      // A late answer would be taken for the next request's: the connection goes.
      disconnect();
      unavailable("wardend did not answer within " + std::to_string(options_.timeout.count()) +
                  " ms on " + socket_path_ + " (is it stopped or overloaded?)");
    }
    receive();
  }
}

std::optional<std::string> Client::Connection::read_line_until(
    std::chrono::steady_clock::time_point until) {
  for (;;) {
    if (auto line = decoder_.next()) return std::string(*line);
    if (decoder_.overflowed()) unavailable("reply from wardend exceeds the client's limit");
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        until - std::chrono::steady_clock::now());
    if (left.count() <= 0 || !readable_within(left)) return std::nullopt;
    receive();
  }
}

bool Client::Connection::readable_within(std::chrono::milliseconds wait) {
  pollfd ready{.fd = fd_, .events = POLLIN, .revents = 0};
  int n;
  do {
    n = ::poll(&ready, 1, static_cast<int>(wait.count()));
  } while (n < 0 && errno == EINTR);
  return n != 0;
}

void Client::Connection::receive() {
  for (;;) {
    auto space = decoder_.prepare(64 * 1024);
    ssize_t n = ::recv(fd_, space.data(), space.size(), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) lost("receive from " + socket_path_ + ": " + std::strerror(errno), true);
    if (n == 0) lost("wardend closed the connection on " + socket_path_, true);
    decoder_.commit(static_cast<std::size_t>(n));
    return;
  }
}

json Client::Connection::call(json request, int pass_fd) {
  const bool resendable = request.value("op", "") != "register_job";
  last_call_resent_ = false;
  for (;;) {
    try {
      if (fd_ < 0) connect();  // dropped after a followed stream (or lost before)
      return exchange(request, pass_fd);
    } catch (const ConnectionLost& e) {
      if (options_.reconnect_for.count() == 0) throw;
      if (!reconnect()) {
        unavailable(std::string(e.what()) + "; no wardend answered for " +
                    std::to_string(options_.reconnect_for.count()) + " ms");
      }
      if (!resendable && e.maybe_delivered) {
        unavailable(std::string(e.what()) +
                    " during register_job: reconnected, but whether the job was registered is "
                    "unknown; register again (a duplicate is cleaned when its heartbeat stops)");
      }
      last_call_resent_ = true;
    }
  }
}

json Client::Connection::exchange(const json& request_body, int pass_fd) {
  json request = request_body;
  std::uint64_t id = next_id_++;
  request["id"] = id;
  send_line(request.dump() + "\n", pass_fd);
  for (;;) {
    json reply = json::parse(read_line(), nullptr, /*allow_exceptions=*/false);
    if (!reply.is_object()) unavailable("wardend sent a reply that is not a JSON object");
    // A line without an id is wardend closing this connection (idle, over a limit): it read
    // nothing after writing it, so the request was not delivered and may be sent again.
    if (reply.value("id", json()).is_null() && !reply.value("ok", false)) {
      lost("wardend closed the connection: " +
           reply.value("error", json::object()).value("message", std::string("no reason given")));
    }
    // Replies come in request order; one without our id answers something we never sent.
    if (reply.value("id", json()) != json(id)) {
      unavailable("wardend answered out of order (expected id " + std::to_string(id) + ")");
    }
    if (reply.value("ok", false)) return reply;
    const json error = reply.value("error", json::object());
    auto code =
        error_code_from_string(error.value("code", "internal")).value_or(ErrorCode::internal);
    throw Error(code, error.value("message", "wardend refused the request"));
  }
}

json Client::Connection::call_with_pidfd(json request, pid_t pid) {
  // wardend cannot tell which process a bare pid names when this process is in a container (its
  // numbering is not wardend's); a pidfd says it. The process itself is known by its connection.
  // For a child of this process the pidfd is also certainly that child's: it cannot be reaped,
  // nor its pid reused, before this process waits for it.
  UniqueFd pidfd;
  if (pid != ::getpid()) pidfd = UniqueFd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  if (pidfd) request["pidfd"] = true;
  return call(std::move(request), pidfd.get());
}

JobId Client::register_job(const RegisterJobRequest& request) {
  RegisterJobRequest with_group = request;
  if (with_group.group.empty()) with_group.group = group_from_environment();
  return connection_->call_with_pidfd(to_json(with_group), request.pid).at("job").get<JobId>();
}

std::uint64_t Client::add_process(JobId job, pid_t pid, Policy policy) {
  AddProcessRequest request{.job = job, .pid = pid, .policy = policy};
  return connection_->call_with_pidfd(to_json(request), pid).value("start_time", std::uint64_t{0});
}

std::string Client::add_path(const AddPathRequest& request) {
  json reply = connection_->call(to_json(request));
  return reply.value(info_of(request.kind).pattern ? "pattern" : "path", request.path);
}

void Client::add_hook(const AddHookRequest& request) { connection_->call(to_json(request)); }

std::optional<double> Client::heartbeat(JobId job, double unsupervised_s) {
  json reply =
      connection_->call(to_json(HeartbeatRequest{.job = job, .unsupervised_s = unsupervised_s}));
  if (!reply.contains("deadline_in_s")) return std::nullopt;
  return reply["deadline_in_s"].get<double>();
}

void Client::end_job(JobId job, bool ok) {
  try {
    connection_->call(
        to_json(EndJobRequest{.job = job, .outcome = ok ? JobEnd::ok : JobEnd::failed}));
  } catch (const Error& e) {
    // Sent again after a restart: the first one was recorded, only its reply was lost.
    if (!(connection_->last_call_resent_ && e.code() == ErrorCode::invalid_state)) throw;
  }
}

std::size_t Client::cleanup(const CleanupRequest& request) {
  return connection_->call(to_json(request)).value("jobs", std::size_t{0});
}

bool Client::follow_events(EventsRequest request, const std::function<bool(const Event&)>& on_event,
                           std::chrono::milliseconds bound) {
  request.follow = true;
  const auto until = std::chrono::steady_clock::now() + bound;
  std::int64_t last_seq = 0;
  // Events already seen are skipped: the backlog and the live stream may overlap by a batch.
  auto deliver = [&](const json& line) {
    Event event = from_json<Event>(line);
    if (event.seq != 0 && event.seq <= last_seq) return true;
    last_seq = std::max(last_seq, event.seq);
    return on_event(event);
  };
  // However it ends, the connection is a stream now: the next call makes a new one.
  struct Drop {
    Connection& c;
    ~Drop() { c.drop(); }
  } drop{*connection_};
  for (;;) {
    if (last_seq != 0) {
      request.after_seq = last_seq;
      request.since_unix_ms.reset();
    }
    for (const auto& e : connection_->call(to_json(request)).value("events", json::array())) {
      if (!deliver(e)) return true;
    }
    try {
      for (;;) {
        std::optional<std::string> text =
            bound.count() > 0 ? connection_->read_line_until(until) : connection_->read_line(false);
        if (!text) return false;
        json line = json::parse(*text, nullptr, /*allow_exceptions=*/false);
        if (line.contains("event") && !deliver(line["event"])) return true;
      }
    } catch (const ConnectionLost& e) {
      if (connection_->options_.reconnect_for.count() == 0 || !connection_->reconnect()) throw;
    }
  }
}

std::string group_from_environment() {
  for (const char* name : {"SLURM_JOB_ID", "TORCHELASTIC_RUN_ID"}) {
    const char* v = std::getenv(name);
    if (v != nullptr && *v != '\0') return v;
  }
  return {};
}

std::vector<Event> Client::events(const EventsRequest& request) {
  json reply = connection_->call(to_json(request));
  std::vector<Event> out;
  for (const auto& e : reply.value("events", json::array())) out.push_back(from_json<Event>(e));
  return out;
}

GpusReply Client::gpus() { return from_json<GpusReply>(connection_->call({{"op", "gpus"}})); }

CheckReply Client::check(const CheckRequest& request) {
  json call = to_json(request);
  call["op"] = "check";
  return from_json<CheckReply>(connection_->call(std::move(call)));
}

std::string Client::metrics() { return connection_->call({{"op", "metrics"}}).value("text", ""); }

std::vector<JobStatus> Client::status(std::optional<JobId> job, bool summary) {
  json reply = connection_->call(to_json(StatusRequest{.job = job, .summary = summary}));
  std::vector<JobStatus> out;
  for (const auto& j : reply.value("jobs", json::array())) out.push_back(from_json<JobStatus>(j));
  return out;
}

template <class Call, class Result>
Result Job::guarded(Call call, Result fallback) {
  try {
    return call();
  } catch (const Error& e) {
    if (e.code() != ErrorCode::unavailable || options_.strict) throw;
    if (!warned_) {
      warned_ = true;
      std::fprintf(stderr, "warden: %s; the job runs on without supervision\n", e.what());
    }
    return fallback;
  }
}

Job::Job(Client& client, const RegisterJobRequest& request, JobOptions options)
    : client_(client),
      options_(options),
      uncaught_at_start_(std::uncaught_exceptions()),
      socket_path_(client.socket_path()) {
  id_ = guarded([&] { return client.register_job(request); }, JobId{0});
  if (id_ == 0) return;
  ::setenv("WARDEN_JOB", std::to_string(id_).c_str(), 1);
  ::setenv("WARDEN_SOCKET", client.socket_path().c_str(), 1);
  ::setenv("WARDEN_INSTANCE", client.server().instance.c_str(), 1);
  beat_every_ns_ = static_cast<std::int64_t>(request.heartbeat_s * 1e9 / 4);
  if (beat_every_ns_ > 0) sender_ = std::thread([this] { send_beats(); });
}

void Job::beat() {
  if (beat_every_ns_ <= 0) return;
  const std::int64_t now = std::chrono::steady_clock::now().time_since_epoch().count();
  if (now - last_beat_ns_.load(std::memory_order_relaxed) < beat_every_ns_) {
    // Coalesced: sent when this quarter ends, unless one is already waiting for that. (The lock,
    // taken once a quarter, orders this with the sender's check before it sleeps.)
    if (!trailing_.exchange(true, std::memory_order_relaxed)) {
      { std::lock_guard lock(mutex_); }
      wake_.notify_one();
    }
    return;
  }
  last_beat_ns_.store(now, std::memory_order_relaxed);
  trailing_.store(false, std::memory_order_relaxed);
  {
    std::lock_guard lock(mutex_);
    beat_due_ = true;
  }
  wake_.notify_one();
}

// A beat's `lost_at` while beats get through: the clock's epoch. (Not an optional: g++ 12 with
// _FORTIFY_SOURCE warns that its value may be read uninitialized.)
constexpr std::chrono::steady_clock::time_point kGettingThrough{};

void Job::send_beats() {
  using std::chrono::steady_clock;
  std::optional<Client> beater;
  steady_clock::time_point lost_at = kGettingThrough;
  std::unique_lock lock(mutex_);
  for (;;) {
    // A coalesced beat is due when the quarter of the last one sent ends.
    auto quarter_end = [this] {
      return steady_clock::time_point(
          steady_clock::duration(last_beat_ns_.load(std::memory_order_relaxed) + beat_every_ns_));
    };
    auto trailing_due = [&] {
      return trailing_.load(std::memory_order_relaxed) && steady_clock::now() >= quarter_end();
    };
    if (trailing_.load(std::memory_order_relaxed)) {
      wake_.wait_until(lock, quarter_end(), [&] { return beat_due_ || stopping_; });
    } else {
      wake_.wait(lock, [this] {
        return beat_due_ || stopping_ || trailing_.load(std::memory_order_relaxed);
      });
    }
    if (stopping_) return;
    if (trailing_due()) {
      trailing_.store(false, std::memory_order_relaxed);
      last_beat_ns_.store(steady_clock::now().time_since_epoch().count(),
                          std::memory_order_relaxed);
      beat_due_ = true;
    }
    if (!beat_due_) continue;
    beat_due_ = false;
    lock.unlock();
    send_beat(beater, lost_at);
    lock.lock();
  }
}

void Job::send_beat(std::optional<Client>& beater, std::chrono::steady_clock::time_point& lost_at) {
  using std::chrono::steady_clock;
  try {
    if (!beater) {
      beater.emplace(socket_path_, ClientOptions{.reconnect_for = std::chrono::milliseconds(0),
                                                 .timeout = options_.beat_timeout});
    }
    double unsupervised_s =
        lost_at != kGettingThrough
            ? std::chrono::duration<double>(steady_clock::now() - lost_at).count()
            : 0;
    beater->heartbeat(id_, unsupervised_s);
    if (lost_at != kGettingThrough) {
      std::fprintf(stderr, "warden: job %llu is supervised again, after %.1f s without\n",
                   static_cast<unsigned long long>(id_), unsupervised_s);
      lost_at = kGettingThrough;
    }
  } catch (const Error& e) {
    beater.reset();  // the next beat connects anew
    if (lost_at == kGettingThrough) {
      lost_at = steady_clock::now();
      std::fprintf(stderr,
                   "warden: a heartbeat of job %llu did not get through (%s); the job "
                   "runs on, and beats are tried again\n",
                   static_cast<unsigned long long>(id_), e.what());
    }
  }
}

void Job::stop_beats() {
  if (!sender_.joinable()) return;
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_one();
  sender_.join();
}

void Job::add_process(pid_t pid, Policy policy) {
  if (id_ != 0) guarded([&] { return client_.add_process(id_, pid, policy); }, std::uint64_t{0});
}

std::string Job::add_path(PathKind kind, const std::string& path, Policy policy) {
  if (id_ == 0) return path;
  return guarded(
      [&] { return client_.add_path({.job = id_, .kind = kind, .path = path, .policy = policy}); },
      path);
}

void Job::add_hook(const CommandSpec& hook, Policy policy) {
  if (id_ == 0) return;
  guarded(
      [&] {
        client_.add_hook({.job = id_, .hook = hook, .policy = policy});
        return true;
      },
      false);
}

Job::~Job() {
  stop_beats();
  if (ended_) return;
  try {
    end(std::uncaught_exceptions() == uncaught_at_start_);
  } catch (const std::exception&) {
    // Nothing useful to do in a destructor; wardend cleans the job when its main process exits.
  }
}

void Job::end(bool ok) {
  stop_beats();
  ended_ = true;
  if (id_ == 0) return;
  guarded(
      [&] {
        client_.end_job(id_, ok);
        return true;
      },
      false);
}

}  // namespace warden
