// The warden C++ client: talks to wardend over its Unix socket (protocol in proto/PROTOCOL.md).
//
//   warden::Client client;                                   // $WARDEN_SOCKET or the default path
//   warden::Job job(client, {.name = "train", .pid = getpid(), .heartbeat_s = 30});
//   job.add_process(worker_pid);
//   for (...) { train_step(); job.beat(); }
//   // leaving scope normally ends the job ok; leaving by an exception ends it failed
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "warden/errors.h"
#include "warden/types.h"

namespace warden {

struct ClientOptions {
  // When the connection breaks (wardend restarted), how long to keep reconnecting, with backoff,
  // before giving up. Zero: never reconnect.
  std::chrono::milliseconds reconnect_for = std::chrono::seconds(30);
  // How long connecting, sending, and waiting for each answer may take before the call throws
  // unavailable (and drops the connection): a hung wardend (stopped, a stuck disk) costs a caller
  // at most this. Zero: no bound.
  std::chrono::milliseconds timeout = std::chrono::seconds(5);
};

// The group a job started here belongs to, from the scheduler's environment: SLURM_JOB_ID, else
// TORCHELASTIC_RUN_ID, else none ("").
std::string group_from_environment();

// One connection to wardend. Blocking; not thread-safe (use one Client per thread).
// Every call throws warden::Error: the daemon's error code for a refused request, or
// ErrorCode::unavailable when the daemon cannot be reached.
//
// A broken connection is re-established (see ClientOptions) and the request sent again, except a
// register_job that broke while awaiting its reply: whether the daemon registered it is unknown,
// so that call throws unavailable rather than risk a second job. The daemon keeps its jobs across
// restarts, so a job simply continues on the new connection.
class Client {
 public:
  // Connects to `socket_path` (default: $WARDEN_SOCKET, else /run/warden/warden.sock where that
  // socket exists, else $XDG_RUNTIME_DIR/warden/warden.sock) and exchanges hello.
  explicit Client(std::string socket_path = {}, ClientOptions options = {});
  Client(Client&& other) noexcept;
  Client& operator=(Client&&) = delete;
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;
  ~Client();

  // Without a group, the job gets group_from_environment()'s.
  JobId register_job(const RegisterJobRequest& request);
  // Returns the start time wardend recorded for the process.
  std::uint64_t add_process(JobId job, pid_t pid, Policy policy = Policy::always);
  // Any kind of path (path_kinds(); request.path is a segment's name for shm, a pattern for
  // shm_glob). Returns the path as wardend will remove it (a pattern as given).
  std::string add_path(const AddPathRequest& request);
  void add_hook(const AddHookRequest& request);
  // Returns the seconds left until the new heartbeat deadline (nullopt: the job has none).
  // `unsupervised_s`: on the first beat after this client could not reach wardend, how long that
  // lasted (the job's history records it).
  std::optional<double> heartbeat(JobId job, double unsupervised_s = 0);
  void end_job(JobId job, bool ok);
  // Cleans a job or a group now (as failed, main process included); returns how many jobs.
  std::size_t cleanup(const CleanupRequest& request);
  std::vector<JobStatus> status(std::optional<JobId> job = std::nullopt, bool summary = false);

  // The node's GPUs and the processes holding each, with their jobs.
  GpusReply gpus();
  // wardend's metrics, in the Prometheus text format.
  std::string metrics();
  // Is the node clean for the next job? With request.reclaim (root), after ending and removing
  // what is safe to: give such a client a timeout beyond the grace and wardend's kill-timeout.
  CheckReply check(const CheckRequest& request = {});

  // The event history: state changes and cleanup reports of the caller's jobs.
  std::vector<Event> events(const EventsRequest& request);
  // Calls `on_event` with the events `request` selects, then with each new one as it happens,
  // until `on_event` returns false (then true), or `bound` passes (false; zero: no bound). Across a
  // daemon restart it reconnects and carries on after the last event seen. The connection is
  // given over to the stream meanwhile, and the next call makes a new one.
  bool follow_events(EventsRequest request, const std::function<bool(const Event&)>& on_event,
                     std::chrono::milliseconds bound = std::chrono::milliseconds(0));

  const HelloReply& server() const;
  const ClientOptions& options() const;
  const std::string& socket_path() const;
  // Connections made after the first, because one broke.
  std::size_t reconnects() const;

 private:
  class Connection;  // the socket, framing and JSON (client.cc)
  std::unique_ptr<Connection> connection_;
};

struct JobOptions {
  // How long a beat may wait on wardend, on the background thread's own connection.
  std::chrono::milliseconds beat_timeout = std::chrono::seconds(1);
  // Throw when wardend cannot be reached, instead of one line on stderr and carrying on
  // unsupervised. Refusals (a bad path, another user's process) throw either way.
  bool strict = false;
};

// A job registered for the lifetime of this object. Its destructor ends the job: ok when the scope
// is left normally, failed when an exception is propagating. Destructor errors are swallowed (the
// daemon cleans a job whose main process exits anyway).
//
// Fail-open: without a reachable wardend (one that stopped answering within the Client's
// ClientOptions::timeout; use about a second for a training loop) the job says so once on stderr
// and its calls do nothing; JobOptions::strict throws instead. (Constructing the Client throws
// unavailable where no wardend runs at all: catch it to run unsupervised.) beat() never waits on
// wardend: a background thread sends the beats, on a connection of its own, and a wardend that
// does not answer costs the training loop nothing (one line on stderr when beats stop getting
// through, one when they do again).
//
// The constructor exports WARDEN_JOB=<id> and WARDEN_SOCKET into this process's environment, so
// that children started afterwards inherit them: wardend finds a job's escaped descendants by
// WARDEN_JOB, and a child can reach the job. Like any setenv(), do this before starting threads.
class Job {
 public:
  Job(Client& client, const RegisterJobRequest& request, JobOptions options = {});
  Job(const Job&) = delete;
  Job& operator=(const Job&) = delete;
  ~Job();

  // 0 where wardend could not be reached at registration (the job runs unsupervised).
  JobId id() const { return id_; }
  void add_process(pid_t pid, Policy policy = Policy::always);
  // Any kind of path (path_kinds()): returns it as wardend will remove it (a pattern as given).
  std::string add_path(PathKind kind, const std::string& path, Policy policy = Policy::always);
  std::string add_file(const std::string& path, Policy policy = Policy::always) {
    return add_path(PathKind::file, path, policy);
  }
  std::string add_dir(const std::string& path, Policy policy = Policy::always) {
    return add_path(PathKind::dir, path, policy);
  }
  // `name` as given to shm_open(3), or "sem.NAME" for a named semaphore.
  std::string add_shm(const std::string& name, Policy policy = Policy::always) {
    return add_path(PathKind::shm, name, policy);
  }
  void add_shm_glob(const std::string& pattern, Policy policy = Policy::always) {
    add_path(PathKind::shm_glob, pattern, policy);
  }
  void add_hook(const CommandSpec& hook, Policy policy = Policy::always);
  // Signals progress; returns at once (a few atomic operations). Safe to call every step: the
  // first beat is sent at once, later ones at most one per quarter of the deadline (the last of a
  // quarter when it ends), by the background thread.
  void beat();
  // Ends the job now; the destructor then does nothing.
  void end(bool ok);

 private:
  void send_beats();  // the background thread
  // Sends one beat on `beater` (a connection of its own, opened when there is none). `lost_at`:
  // when beats first failed to get through, the clock's epoch while they get through.
  void send_beat(std::optional<Client>& beater, std::chrono::steady_clock::time_point& lost_at);
  void stop_beats();
  // Runs a call of an unsupervised-or-not job: nothing without a job, and an unreachable wardend
  // is one warning and `fallback` (strict: rethrown).
  template <class Call, class Result>
  Result guarded(Call call, Result fallback);

  Client& client_;
  const JobOptions options_;
  JobId id_ = 0;
  int uncaught_at_start_;
  bool ended_ = false;
  bool warned_ = false;
  std::int64_t beat_every_ns_ = 0;  // a quarter of the deadline; 0: no beats to send
  const std::string socket_path_;
  // When a beat was last handed to the sender (steady clock); the lowest value: none yet, so the
  // first is sent at once.
  std::atomic<std::int64_t> last_beat_ns_{std::numeric_limits<std::int64_t>::min() / 2};
  std::atomic<bool> trailing_{false};  // a beat() coalesced since, sent when its quarter ends
  std::mutex mutex_;                   // held by the sender only while it waits, never during I/O
  std::condition_variable wake_;
  bool beat_due_ = false;
  bool stopping_ = false;
  std::thread sender_;
};

}  // namespace warden
