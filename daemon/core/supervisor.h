// The supervisor core: jobs, their processes, heartbeat deadlines and the job state machine.
//
// Plain C++ with no sockets, no timers and no system calls: every call gets the current time as an
// argument, and the core answers with what should happen (a cleanup plan, a new deadline). The
// service (service.h) feeds it requests and world events and carries out its answers, so the core
// is tested with a fake clock and made-up process identities.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "core/identity.h"
#include "proto/messages.h"

namespace warden {

using Clock = std::chrono::steady_clock;
using TimePoint = Clock::time_point;
using Duration = Clock::duration;

// Seconds as the protocol and the config give them, and back.
inline Duration from_seconds(double s) {
  return std::chrono::duration_cast<Duration>(std::chrono::duration<double>(s));
}
inline double to_seconds(Duration d) { return std::chrono::duration<double>(d).count(); }

class View;

// Who is asking, from the connection's SO_PEERCRED; never from the request body.
struct Caller {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  int pidfd = -1;  // the connecting process (SO_PEERPIDFD, Linux 6.5+), owned by the connection
  // Its namespaces and root (namespaces.h); nullptr: it shares wardend's.
  std::shared_ptr<const View> view;
  bool is_admin() const { return uid == 0; }
};

// Where a job's client lives when that is not where wardend does (a container): the namespaces its
// pids and paths were read in, by inode, so that a restarted wardend can find them again through a
// process of the job still in them. Zero where it shares wardend's.
struct JobHome {
  std::uint64_t pid_ns = 0;
  std::uint64_t mount_ns = 0;
  std::uint64_t root_dev = 0;
  std::uint64_t root_ino = 0;
  bool operator==(const JobHome&) const = default;
};

struct JobSpec {
  std::string name;
  Duration heartbeat{};  // zero: no heartbeat deadline
  Duration grace{};      // SIGTERM -> SIGKILL
  bool kill_main_on_stall = false;
  std::optional<CommandSpec> diagnose;
  std::string group;
  std::optional<JobHome> home;  // nullopt: the job lives where wardend does
  std::optional<Discover> discover;  // nullopt: wardend's setting at cleanup
};

struct TrackedProcess {
  ProcessIdentity identity;
  Policy policy = Policy::always;
  std::optional<TimePoint> exited_at;  // exited on its own while the job ran: no longer tracked
};

// What a path was when it was registered; removal re-checks it and refuses anything else.
struct PathIdentity {
  dev_t dev = 0;
  ino_t ino = 0;
  uid_t uid = 0;
  mode_t type = 0;  // the S_IFMT bits
  bool operator==(const PathIdentity&) const = default;
};

// A file, directory or shm segment (identity known), or an shm glob (path holds the pattern).
struct TrackedPath {
  PathKind kind = PathKind::file;
  std::string path;
  PathIdentity identity;
  Policy policy = Policy::always;
};

// A hook, and how far a cleanup got with it: hooks run at most once, even across a restart of
// wardend in the middle of a cleanup (a hook that was running then is not run again).
struct TrackedHook {
  CommandSpec command;
  Policy policy = Policy::always;
  bool started = false;                    // durably recorded before it was started
  std::optional<CommandReport> finished;   // what it did, once it ended
  // The same registration (what ran of it aside).
  bool operator==(const TrackedHook& o) const {
    return command == o.command && policy == o.policy;
  }
};

struct Job {
  JobId id = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  JobSpec spec;
  ProcessIdentity main;
  std::vector<TrackedProcess> workers;  // in registration order
  std::vector<TrackedPath> paths;
  std::vector<TrackedHook> hooks;
  // The job's tracking cgroup (cgroup.h), which holds every process it forks; empty where it has
  // none, and its processes are found by scanning /proc at cleanup.
  std::string cgroup;
  // Leaves of the same name beneath other cgroups, for registered processes that live outside the
  // main's (a launcher's workers): each keeps its parent's limits and accounting.
  std::vector<std::string> more_cgroups;
  JobState state = JobState::running;
  std::optional<JobState> reason;  // ended | failed | stalled, once the job has ended
  std::string reason_detail;
  TimePoint created{};
  std::optional<TimePoint> last_beat;
  std::optional<TimePoint> deadline;
  bool cleanup_includes_main = false;  // its cleanup terminates the main process too
  std::optional<CleanupReport> report;
  // While it is being cleaned: the steps its cleanup has finished (processes, then paths), kept
  // so that one a restart interrupts resumes with what was done before (CleanupPlan::earlier).
  std::optional<CleanupReport> progress;
  TimePoint finished{};  // when it became cleaned

  std::size_t live_workers() const;
};

struct CleanupTarget {
  ProcessIdentity identity;
  std::string role;  // "main" | "worker"
  bool leftover = false;
  bool exited = false;  // known to have exited before cleanup began
  bool keep = false;    // left alone by policy
};

struct PathStep {
  TrackedPath path;
  bool keep = false;      // left alone by policy
  bool leftover = false;  // a clean end: whatever is still there, the job forgot
};

struct HookStep {
  CommandSpec command;
  bool keep = false;
  // A cleanup that a restart interrupted: what this hook did then (not run again), or that it was
  // running then (interrupted: not run again either).
  std::optional<CommandReport> finished;
  bool interrupted = false;
};

// What the service must do to clean a job, then report back through cleanup_finished(). Steps run
// in this order: diagnostics (a stall), processes with their descendants, hooks, paths (without
// hooks, the paths go beside the processes' end, once none of them can run again).
struct CleanupPlan {
  JobId job = 0;
  JobState reason = JobState::failed;
  uid_t uid = 0;  // the job's owner: hooks run as it, discovered processes must belong to it
  gid_t gid = 0;
  Duration grace{};
  ProcessIdentity main;
  bool main_spared = true;  // the main process is alive and not to be touched
  std::string cgroup;       // the job's tracking cgroup; empty: find its processes by scanning
  std::vector<std::string> more_cgroups;  // its leaves beneath other cgroups (Job::more_cgroups)
  std::vector<CleanupTarget> targets;
  std::vector<HookStep> hooks;
  std::vector<PathStep> paths;
  bool diagnose = false;  // capture diagnostics first (a stall)
  std::optional<CommandSpec> diagnose_command;
  // What it held but never registered: only what was born after `created` may be the job's.
  std::optional<Discover> discover;  // nullopt: wardend's setting
  TimePoint created{};
  // A cleanup resumed after a restart: what the interrupted one had done (Job::progress). What it
  // ended or removed then is gone now, and keeps the outcome it had.
  std::optional<CleanupReport> earlier;
};

struct SupervisorLimits {
  std::size_t max_jobs_per_user = 1024;
  std::size_t max_processes_per_job = 4096;
  std::size_t max_paths_per_job = 4096;  // files, directories, shm segments and globs
  // Bytes of path names one user's running jobs may register together: what they cost wardend's
  // memory, which a job count and a path count alone do not bound (4,096 paths of 4 KiB each).
  std::size_t max_path_bytes_per_user = 64 << 20;
  std::size_t max_hooks_per_job = 16;
  std::size_t finished_jobs_kept = 1000;  // cleaned jobs kept for `status`, oldest dropped first
};

// What a process exit means for the job it belonged to.
struct ExitEffect {
  bool untrack = false;  // the process is no longer tracked: release its pidfd
  std::optional<CleanupPlan> cleanup;
};

// Not thread-safe: the service calls it from its one event-loop thread. Requests throw Error with a
// protocol code; world events never throw for unknown jobs or pids (they may race with cleanup).
class Supervisor {
 public:
  explicit Supervisor(SupervisorLimits limits = {});
  Supervisor(const Supervisor&) = delete;
  Supervisor& operator=(const Supervisor&) = delete;

  // --- requests ---
  // `main` is the identity the service read for the requested pid.
  JobId register_job(const Caller& caller, JobSpec spec, const ProcessIdentity& main,
                     TimePoint now);
  // True if the process is newly tracked (false: it already was).
  bool add_process(const Caller& caller, JobId id, const ProcessIdentity& process,
                   Policy policy = Policy::always);
  // The job's tracking cgroup, once the service has made it. Not a request: never throws.
  void set_cgroup(JobId id, std::string cgroup);
  // Another leaf of the job's (more_cgroups); one it has already is not added twice.
  void add_cgroup(JobId id, std::string cgroup);
  // `path.identity` is what the service found at the (validated) path. Returns the registration it
  // replaced, if the job had registered the same path before.
  std::optional<TrackedPath> add_path(const Caller& caller, JobId id, TrackedPath path);
  void add_hook(const Caller& caller, JobId id, TrackedHook hook);
  // Returns the new deadline (nullopt for a job without heartbeat).
  std::optional<TimePoint> heartbeat(const Caller& caller, JobId id, TimePoint now);
  // Ends the job and returns the plan that sweeps (ok) or removes (failed) what it registered.
  CleanupPlan end_job(const Caller& caller, JobId id, bool ok);
  // Cleans running jobs now as failed, main process included: one job, or every job of a group
  // the caller may see (none is not an error for a group: an epilog may run on an idle node).
  std::vector<CleanupPlan> cleanup(const Caller& caller, const CleanupRequest& request);
  // Every job the caller may see (its own; all for an admin), by id.
  std::vector<const Job*> visible_jobs(const Caller& caller) const;
  const Job& visible_job(const Caller& caller, JobId id) const;

  // --- world events ---
  ExitEffect process_exited(JobId id, pid_t pid, TimePoint now);
  // Marks every job whose deadline is at or before `now` stalled and returns their plans.
  std::vector<CleanupPlan> expire(TimePoint now);
  // Moves every running job's deadline `by` later: time wardend itself lost (stopped, a stuck
  // disk, a suspended machine), during which beats may have waited unread in its sockets.
  void postpone_deadlines(Duration by);
  std::optional<TimePoint> next_deadline() const;
  // Returns the cleaned jobs retired to make room (finished_jobs_kept), now forgotten.
  std::vector<JobId> cleanup_finished(JobId id, CleanupReport report, TimePoint now);
  // What a cleaning job's cleanup has done so far (its processes ended, its paths removed).
  void cleanup_progress(JobId id, CleanupReport so_far);
  // A cleaning job's hook `index` (in plan order) is about to start / has ended.
  void hook_started(JobId id, std::size_t index);
  void hook_finished(JobId id, std::size_t index, const CommandReport& report);

  // --- recovery: putting back what the durable store holds ---
  // Takes a job as it was recorded, restarted at `now`: a restart counts as a heartbeat (a running
  // job gets one full period to beat again), and a cleaned job's workers count as exited when it
  // finished. Ids of new jobs continue after the highest restored one and `next_id`. Returns the
  // cleaned jobs retired to make room, as cleanup_finished does.
  std::vector<JobId> restore(Job job, JobId next_id, TimePoint now);
  // The plan again for a job whose cleanup a restart interrupted; every step is idempotent.
  CleanupPlan resume_cleanup(JobId id);

  // --- undo: a request whose change could not be written is taken back ---
  bool discard_job(JobId id);  // only a job still running (true); one further along stays
  void discard_process(JobId id, const ProcessIdentity& process);
  void discard_path(JobId id, PathKind kind, const std::string& path,
                    std::optional<TrackedPath> previous);
  void discard_hook(JobId id, const TrackedHook& hook);  // the latest one like it

  // Any job, whoever owns it; nullptr if unknown. For the service's own bookkeeping.
  const Job* find(JobId id) const;
  std::size_t job_count() const { return jobs_.size(); }
  std::size_t active_jobs() const;  // running or being cleaned
  void set_limits(const SupervisorLimits& limits) { limits_ = limits; }
  JobId next_id() const { return next_id_; }

 private:
  Job& running_job(const Caller& caller, JobId id);
  CleanupPlan begin_cleanup(Job& job, JobState reason, std::string detail, bool include_main);
  Job* running(JobId id);  // nullptr unless known and running
  void set_deadline(Job& job, std::optional<TimePoint> deadline);
  void job_done(const Job& job);  // no longer counts against its user's limit
  std::vector<JobId> retire_finished();

  // Mutable state.
  SupervisorLimits limits_;
  JobId next_id_ = 1;
  std::map<JobId, Job> jobs_;
  std::map<uid_t, std::size_t> active_jobs_per_user_;  // jobs not yet cleaned
  std::map<uid_t, std::size_t> path_bytes_per_user_;   // their registered paths' names
  std::set<std::pair<TimePoint, JobId>> deadlines_;    // running jobs with a heartbeat
  std::deque<JobId> finished_order_;                   // cleaned jobs, oldest first
};

}  // namespace warden
