// Service: wardend's state and the actions requests and world events take, on one io_context.
//
// It joins the supervisor core (decisions) to the world: it opens pidfds, watches them, arms the
// heartbeat deadline timer and runs cleanups. The command table (commands.h) calls it with parsed
// requests; it throws Error for anything it refuses.
#pragma once

#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include "world/cleanup.h"
#include "world/creations.h"
#include "edge/background_lane.h"
#include "edge/cleanup_pacer.h"
#include "edge/deadline_alarm.h"
#include "edge/homes.h"
#include "edge/job_cgroups.h"
#include "edge/journal.h"
#include "edge/metrics.h"
#include "edge/subscribers.h"
#include "edge/execution_contexts.h"
#include "world/job_status.h"
#include "world/named_process.h"
#include "world/namespaces.h"
#include "world/node_check.h"
#include "core/supervisor.h"
#include "world/watch.h"
#include "proto/messages.h"

namespace warden {

class Systemd;

struct ServiceOptions {
  SupervisorLimits limits;
  CleanupOptions cleanup;
  NodeCheckOptions check;
  std::string instance;        // this wardend's id (instance_id()), part of each job's cookie
  Systemd* systemd = nullptr;  // for STATUS= and the pidfd store, when run by systemd
  // Tracking cgroups, where this wardend has them (nullptr: jobs are found by scanning), and the
  // prefix of their names (cgroup_prefix()).
  Cgroups* cgroups = nullptr;
  std::string cgroup_prefix;
};

// Single-threaded: every call runs on the io_context's thread. Every change it makes to the core is
// staged in the journal; a request's reply waits until its change is written (server.cc).
class Service {
 public:
  Service(boost::asio::io_context& io, ServiceOptions options, Journal& journal);
  Service(const Service&) = delete;
  Service& operator=(const Service&) = delete;

  // Ends the work off the event loop, once it has stopped: what waits in the pools is dropped,
  // what runs is waited for. Afterwards the loop's pending handlers may be destroyed: no thread
  // still reads what they hold.
  void stop_threads();
  // Once the loop's pending handlers are destroyed: destroys what that queued in the background
  // lane (the frames of abandoned cleanups), while everything they refer to still exists.
  void drop_background() { background_.drop_queued(); }

  // The new job's id and its tracking cgroup ("" where it is tracked by scanning).
  struct Registered {
    JobId id = 0;
    std::string cgroup;
  };
  // `pidfd`: the one the client passed for request.pid, if any.
  Registered register_job(const Caller& caller, const RegisterJobRequest& request,
                          UniqueFd pidfd = {});
  ProcessIdentity add_process(const Caller& caller, const AddProcessRequest& request,
                              UniqueFd pidfd = {});
  // add_file, add_dir, add_shm and add_shm_glob; returns the canonical path (or the pattern).
  std::string add_path(const Caller& caller, const AddPathRequest& request);
  void add_hook(const Caller& caller, const AddHookRequest& request);
  // Returns the time left until the new deadline (nullopt for a job without heartbeat).
  std::optional<Duration> heartbeat(const Caller& caller, const HeartbeatRequest& request);
  void end_job(const Caller& caller, const EndJobRequest& request);
  // Returns how many jobs it started cleaning.
  std::size_t cleanup(const Caller& caller, const CleanupRequest& request);
  std::vector<JobStatus> status(const Caller& caller, const StatusRequest& request) const;
  // The node's GPUs and every process holding one, with the job each belongs to
  // (service_gpus.cc): a look at every process's descriptors, so it comes back as work to run on
  // views(), on a snapshot of the jobs taken now.
  std::function<GpusReply()> gpus(const Caller& caller) const;
  // Is the node clean for the next job? (service_check.cc.) Refusals throw at once; the look
  // itself walks /proc and may wait out a reclaim's grace, so it comes back as work to run on
  // views() (thread-safe: it holds a snapshot of the jobs, taken now, and nothing of the service
  // but what outlives it).
  std::function<CheckReply()> check(const Caller& caller, const CheckRequest& request);
  // Where work that reads much of the node runs, off the event loop and apart from cleanups'.
  boost::asio::any_io_executor views() { return views_.get_executor(); }
  // The caller's event history. It reads the store: run it on views(), but for a follower's,
  // whose history must come before what it is sent live.
  std::vector<json> events(const Caller& caller, const EventsRequest& request);
  bool has_history() { return journal_.store() != nullptr; }
  const std::string& instance() const { return instance_; }
  // How a new job's processes are known: "cgroup" or "scan" (a job may still fall back to "scan"
  // where its own cgroup cannot take a child).
  std::string_view tracking() const { return cgroups_ != nullptr ? "cgroup" : "scan"; }
  // What a job's cleanup does with what it never registered, where the job does not say.
  Discover discover() const { return cleanup_options_.discover; }
  // What discovery sees and what it cannot, for people (service_creations.cc).
  std::string discover_note() const;

  // Live events: each state change is published to the followers as it is written.
  Subscribers& subscribers() { return subscribers_; }

  // Takes back what the store held at start: jobs still alive resume (one heartbeat period to beat
  // again), jobs whose main process died meanwhile are cleaned, interrupted cleanups resume.
  // `pidfds` are those systemd kept for the previous wardend (Systemd::pidfd_name()).
  void recover(StoredState stored, std::map<std::string, UniqueFd> pidfds = {});
  // New limits and cleanup settings (a reloaded config); jobs and their state are kept.
  void reconfigure(const SupervisorLimits& limits, const CleanupOptions& cleanup,
                   const NodeCheckOptions& check);
  // One line for people: what is tracked now.
  std::string summary() const;
  // Prometheus text: what is tracked now and what happened since start. The counters are copied
  // now; the GPU view and the rendering are work to run on views().
  std::function<std::string()> metrics_text() const;
  void count_refusal(ErrorCode code) { metrics_.refused(code); }

 private:
  // Where the job's paths are resolved and its hooks run (Homes::of).
  std::shared_ptr<const View> home_of(JobId id) const;
  // recover()'s steps. The stored jobs go back into the core: which were running, and which a
  // restart interrupted in their cleanup.
  struct Restored {
    std::vector<JobId> running;
    std::vector<JobId> cleaning;
  };
  Restored restore(StoredState stored, TimePoint now);
  // A process of a job as it was stored, if it is still that process (nullopt: gone).
  using FindProcess = std::function<std::optional<ProcessHandle>(JobId, const ProcessIdentity&)>;
  // Watches a running job's processes again, each gone counted as exited. False where its main
  // process died while wardend was down (its cleanup then begins).
  bool rewatch(JobId id, const FindProcess& find, TimePoint now);
  // The registered processes of the jobs not yet cleaned, by pid.
  std::map<pid_t, const Job*> registered_processes() const;
  // The active job a process of the node belongs to: a member of its tracking cgroup, a registered
  // process of it, or a descendant of one. nullptr: none (untracked).
  const Job* job_of_process(pid_t pid, const std::map<pid_t, const Job*>& registered) const;
  void on_process_exit(JobId job, pid_t pid);
  // Arms the alarm at the earliest heartbeat deadline; deadlines_due() is its answer.
  void rearm_deadline();
  void deadlines_due(TimePoint now, Duration late_by);
  // Records the job as cleaning and queues its cleanup, launched in a later turn of the loop.
  void start_cleanup(CleanupPlan plan);
  void launch_cleanup(CleanupPlan plan);
  std::vector<UniqueFd> pidfds_for(const CleanupPlan& plan);
  CleanupContext cleanup_context(JobId id);
  void cleanup_finished(JobId id, CleanupReport report);
  // Records that the cleaning job's hook `index` starts, and completes once that is written.
  boost::asio::awaitable<void> hook_started(JobId id, std::size_t index);
  // Stages the job's header and a state-change event (a change wardend made: never undone).
  void record_state(const Job& job);
  // Tells systemd the new summary, at most once a second.
  void status_changed();
  // Watches the allowed roots for what jobs make there (service_creations.cc); again after a
  // reload that changed them.
  void watch_creations();
  // Records each regular file made on a root by a process of an active job, and forgets each
  // entry removed.
  void on_root_changes(const std::vector<RootChange>& changes);
  // The jobs as views of the node need them (service_check.cc); cleaned ones only where asked.
  std::vector<CheckedJob> checked_jobs(bool with_cleaned) const;
  // The check wardend makes by itself every check interval, for the metrics.
  void schedule_check(Duration after);
  // Records a root's-eye verdict for the metrics; runs on the event loop.
  void checked(const CheckReply& reply);

  // Constant after construction.
  boost::asio::io_context& io_;
  // Processes' exits and cleanups' steps run here, between requests (background_lane.h).
  BackgroundLane background_{io_};
  const std::string instance_;
  const ProcessNamer namer_;  // the processes requests name
  Systemd* const systemd_;
  Cgroups* const cgroups_;
  // Blocking cleanup work (/proc scans, the look at what a job holds) runs here, off the event
  // loop.
  WorkerPool blocking_{1};
  WorkerPool removals_{1};  // registered paths (CleanupContext::removals)
  ScanCache scans_;  // what concurrent cleanups share
  RealKernel kernel_{scans_};
  std::shared_ptr<Gpus> gpus_;  // replaced when a reload changes the GPU settings
  // Views of the node (the node check) run here: a slow look never delays a cleanup. Declared
  // after what its work uses, so that it is joined before they go.
  WorkerPool views_{1};

  // Mutable state.
  CleanupOptions cleanup_options_;
  NodeCheckOptions check_options_;
  boost::asio::steady_timer check_timer_;
  Journal& journal_;
  Supervisor core_;
  JobCgroups job_cgroups_;  // the jobs' tracking cgroups (cgroups_ and core_ seen together)
  ProcessWatch watch_;
  DeadlineAlarm deadline_alarm_;
  CleanupPacer cleanups_;
  boost::asio::steady_timer status_timer_;
  bool status_pending_ = false;
  Subscribers subscribers_;
  Homes homes_;
  // What active jobs made on the allowed roots and have not removed, and the watch that says so.
  Creations creations_;
  std::unique_ptr<CreationWatch> creation_watch_;
  Metrics metrics_;
  // Work on the pools posts its results back only while the service lives.
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace warden
