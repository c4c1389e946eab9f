// The cleanup engine: carries out a CleanupPlan on the event loop and reports each step's outcome.
#pragma once

#include <functional>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include "world/cgroup.h"
#include "world/creations.h"
#include "world/discovery.h"
#include "world/files.h"
#include "world/gpus.h"
#include "world/kernel.h"
#include "world/namespaces.h"
#include "world/process_tree.h"
#include "core/supervisor.h"
#include "proto/unique_fd.h"

namespace warden {

struct CleanupOptions {
  // How long a process may survive SIGKILL before it is reported unkillable (D state, a stuck
  // NFS or GPU driver call). Waiting longer would hold the job's cleanup hostage.
  Duration kill_timeout = std::chrono::seconds(5);
  PathRules paths;
  GpuOptions gpus;
  // What a job's cleanup does, unless the job said otherwise, with the objects on the allowed roots
  // its processes held open or mapped but it never registered (discovery.h).
  Discover discover = Discover::reclaim;
  // A report's JSON beyond this is cut down to what fits, the rest counted (report_bound.h).
  std::size_t max_report_bytes = 256 * 1024;
};

// Where a cleanup runs: the event loop it is spawned on, plus executors for blocking work (/proc
// scans, removing large trees) so the loop keeps answering heartbeats meanwhile.
struct CleanupContext {
  CleanupOptions options;
  boost::asio::any_io_executor blocking;
  // Registered paths are removed here, a thread of their own: a job's removal may then run while
  // its processes are looked at, and a long one holds no other cleanup's scans.
  boost::asio::any_io_executor removals;
  pid_t self = 0;            // wardend, never a candidate
  std::string instance;      // wardend's id, part of the job cookie (process_tree.h)
  Kernel* kernel = nullptr;  // processes: signals, exits, scans (shared by every cleanup); required
  // Tracking cgroups, where this wardend has them; a plan with a cgroup is carried out through
  // it: the kernel names every member, ends them all at once and says when none is left.
  Cgroups* cgroups = nullptr;
  // Where the job's paths are removed and its hooks run (namespaces.h); nullptr where the job
  // lived in a container that is gone and that this wardend, restarted, holds no descriptor of.
  std::shared_ptr<const View> home;
  // The node's GPUs, for the report's account of what the job held; nullptr: not looked at.
  std::shared_ptr<Gpus> gpus;
  // What the job's processes made on wardend's roots and had not removed (creations.h): with what
  // they hold at cleanup, discovery's candidates. Paths in wardend's file tree.
  std::vector<HeldObject> created;
  // What the processes this cleanup ended made while they were of no job (creations.h), asked on
  // the event loop once they are known; empty: nothing is watched.
  std::function<std::vector<HeldObject>(const std::vector<ProcessIdentity>&)> claim_made;
  // Hooks run at most once, even across a restart: `hook_started(i)` completes once it is
  // recorded durably that the plan's hook i starts, `hook_finished(i, report)` records what it
  // did. Empty: nothing is recorded.
  std::function<boost::asio::awaitable<void>(std::size_t)> hook_started;
  std::function<void(std::size_t, const CommandReport&)> hook_finished;
  // Called with the report so far before each step that may take long, to be recorded: as
  // SIGTERM is sent (a grace period), before the hooks (and the removal after them), before
  // discovery settles what the job held. A cleanup a restart interrupts resumes with it
  // (CleanupPlan::earlier).
  std::function<void(const CleanupReport& so_far)> progress;
};

// Runs a whole plan: diagnostics (a stall), processes and their descendants, hooks, paths (without
// hooks, the paths go beside the processes' end, once none of them can run again).
// `pidfds` is aligned with plan.targets; an empty one means the process is no longer held (it
// exited and its handle was released). Never throws for a step that fails: the report says so.
boost::asio::awaitable<CleanupReport> run_cleanup(CleanupPlan plan, std::vector<UniqueFd> pidfds,
                                                  CleanupContext context);

}  // namespace warden
