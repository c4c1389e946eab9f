// The process a request names: a caller names a pid as its own PID namespace numbers it, and may
// send a pidfd of it along; wardend holds it by a pidfd from then on. Some processes no job may
// hold, since a job's processes are ended at cleanup.
#pragma once

#include <sys/types.h>

#include <vector>

#include "core/supervisor.h"
#include "world/process.h"

namespace warden {

// wardend's ancestors, parent first, by identity.
std::vector<ProcessIdentity> read_ancestors();

class ProcessNamer {
 public:
  // `ancestors`: wardend's (read_ancestors()), which a job may not hold.
  explicit ProcessNamer(std::vector<ProcessIdentity> ancestors = read_ancestors());

  // The process `caller` names `pid`, held by `passed` (a pidfd of it the caller sent) or by one
  // opened now. Throws Error: no_such_process where there is none; bad_request for a pidfd of
  // another pid; permission_denied for a pidfd from outside the caller's PID namespace, and for a
  // process no job may hold: wardend itself and its ancestors (ending one may end wardend), the
  // init of wardend's PID namespace (ending it ends every process in it) and kernel threads. A
  // container's own init is another process.
  ProcessHandle job_process(const Caller& caller, pid_t pid, UniqueFd passed) const;

 private:
  ProcessHandle named(const Caller& caller, pid_t pid, UniqueFd passed) const;
  void refuse_untouchable(const ProcessHandle& process, pid_t named) const;

  // Read once at start: ancestors only ever go away (a process is reparented to an ancestor), so
  // the list can only hold too many, and a recycled pid of one that went has another start time.
  const std::vector<ProcessIdentity> ancestors_;
};

}  // namespace warden
