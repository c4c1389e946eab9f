// The jobs' tracking cgroups (world/cgroup.h): the leaf each job gets beneath its main process's
// cgroup at registration, the leaves of processes registered beside it, and, at a restart, the
// cgroups of this wardend's that no recorded job owns. It reads the jobs from the supervisor and
// changes none of them: what it made is the caller's to record.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>

#include "core/supervisor.h"
#include "world/cgroup.h"
#include "world/process.h"

namespace warden {

class JobCgroups {
 public:
  // `cgroups`: nullptr where this wardend has none (its jobs are tracked by scanning); `prefix`:
  // the start of its cgroups' names (cgroup_prefix()).
  JobCgroups(Cgroups* cgroups, std::string prefix, const Supervisor& core);

  // Makes the job's leaf and moves its main process in (and those of its descendants that share
  // its cgroup); "" where it cannot, and the job is tracked by scanning.
  std::string make_leaf(JobId id, const ProcessHandle& main);
  // Gives a leaf's members back to the cgroup above and removes it (a registration taken back).
  void release(const std::string& cgroup);
  // Moves a process registered with the job that lives outside its leaves (with its descendants
  // that share its cgroup) into a leaf of the job's beneath its own cgroup: the main's leaf where
  // that is the same parent, else one of its own there, which it returns for the job to record
  // (Job::more_cgroups) unless the job has it already. "" otherwise: moved into a leaf the job
  // has, already the job's, or not movable (another user's delegated tree, a read-only cgroupfs,
  // another job's cgroup), and then found by scanning.
  std::string adopt(const Job& job, const ProcessHandle& process);
  // The job whose leaf `cgroup` is; nullptr if none of this wardend's jobs has it.
  const Job* owner(const std::string& cgroup) const;
  // How `pid`, a process of `job`, is known: "cgroup" (in one of its leaves) or "scan".
  std::string tracking_of(const Job& job, pid_t pid) const;
  // A restart's sweep: this wardend's cgroups that no active job owns are removed; members of one
  // whose job was never acknowledged go back to the cgroup above, a finished job's are killed.
  void sweep();

 private:
  // Moves `pid`'s descendants that share its cgroup `home` into `cgroup`.
  void move_descendants(pid_t pid, const std::optional<std::string>& home,
                        const std::string& cgroup);

  Cgroups* const cgroups_;
  const std::string prefix_;
  const Supervisor& core_;
};

}  // namespace warden
