// The cleanup engine: carries out a CleanupPlan on the event loop and reports each step's outcome.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <vector>

#include "daemon/supervisor.h"
#include "daemon/unique_fd.h"

namespace warden {

struct CleanupOptions {
  // How long a process may survive SIGKILL before it is reported unkillable (D state, a stuck
  // NFS or GPU driver call). Waiting longer would hold the job's cleanup hostage.
  Duration kill_timeout = std::chrono::seconds(5);
};

// A process to end, with a pidfd of its own: the engine waits on and signals through it
// independently of the watch, which keeps its own descriptor. An empty pidfd means the process is
// no longer held (it exited and its handle was released).
struct ProcessToEnd {
  CleanupTarget target;
  UniqueFd pidfd;
};

// Ends the processes: SIGTERM, up to `grace` for them to exit, SIGKILL to the rest, up to
// `kill_timeout` more. With zero grace it sends SIGKILL at once. Never blocks the event loop:
// exits are pidfd readiness, the waits are timers. Signals go only through pidfds, so a recycled
// pid is never hit. Returns one report per process, in the order given.
boost::asio::awaitable<std::vector<ProcessReport>> terminate_processes(
    std::vector<ProcessToEnd> processes, Duration grace, Duration kill_timeout);

// Runs a whole plan. `pidfds` is aligned with plan.targets.
boost::asio::awaitable<CleanupReport> run_cleanup(CleanupPlan plan, std::vector<UniqueFd> pidfds,
                                                  CleanupOptions options);

}  // namespace warden
