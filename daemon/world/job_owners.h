// Which of wardend's jobs a process of the node belongs to, for the views that walk the node off
// the event loop (the node check, the GPU view): the jobs are copied on the loop (CheckedJob), the
// node is read on a worker thread.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/supervisor.h"
#include "world/cgroup.h"

namespace warden {

// A path a cleanup left in place, as registered, with what the cleanup said of it.
struct LeftPath {
  TrackedPath path;
  Outcome outcome = Outcome::failed;  // failed | refused | kept
  std::string detail;
};

// One of wardend's jobs as a view of the node needs it, copied from the core on the event loop.
struct CheckedJob {
  JobId id = 0;
  std::string name;
  uid_t uid = 0;
  bool active = false;  // running or being cleaned: its processes belong to a job
  std::vector<std::string> cgroups;  // its tracking cgroups (none: tracked by scanning)
  // Its main process and workers (those still tracked, for an active job).
  std::vector<ProcessIdentity> processes;
  // A cleaned job: when its cleanup ended, and what the cleanup left.
  std::optional<std::int64_t> finished_unix_ms;
  std::vector<ProcessReport> unkillable;
  std::vector<LeftPath> left;
  bool paths_here = true;  // its paths are in wardend's mount namespace (not a container's)
};

// The job a process belongs to: a member of a job's tracking cgroup, one of its processes (by
// identity: a recycled pid is not the job's), or a descendant of one. A running job's claim wins
// over a cleaned one's (which only says where a leftover came from). Reads /proc and cgroupfs.
class JobOwners {
 public:
  // `cgroups`: nullptr where this wardend has no tracking cgroups. Both must outlive it.
  JobOwners(const std::vector<CheckedJob>& jobs, Cgroups* cgroups);
  // nullptr: no job's.
  const CheckedJob* of(pid_t pid) const;

 private:
  Cgroups* const cgroups_;
  std::map<pid_t, std::vector<std::pair<std::uint64_t, const CheckedJob*>>> by_pid_;
  std::vector<const CheckedJob*> with_cgroup_;
};

}  // namespace warden
