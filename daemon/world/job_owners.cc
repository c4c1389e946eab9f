#include "world/job_owners.h"

#include "world/process.h"

namespace warden {
namespace {

// How far up the parent chain a process is followed to a job's: deep enough for any launcher
// chain (srun, torchrun, a shell, python, DataLoader workers), bounded against a loop.
constexpr int kMaxAncestry = 64;

}  // namespace

JobOwners::JobOwners(const std::vector<CheckedJob>& jobs, Cgroups* cgroups) : cgroups_(cgroups) {
  for (const CheckedJob& job : jobs) {
    for (const ProcessIdentity& p : job.processes) by_pid_[p.pid].push_back({p.start_time, &job});
    if (!job.cgroups.empty()) with_cgroup_.push_back(&job);
  }
}

const CheckedJob* JobOwners::of(pid_t pid) const {
  const CheckedJob* cleaned = nullptr;
  auto consider = [&](const CheckedJob* job) {
    if (job->active) return true;
    if (cleaned == nullptr) cleaned = job;
    return false;
  };
  if (cgroups_ != nullptr && !with_cgroup_.empty()) {
    auto cgroup = cgroups_->cgroup_of(pid);
    for (const CheckedJob* job : with_cgroup_) {
      for (const auto& leaf : job->cgroups) {
        if (cgroup_within(cgroup, leaf) && consider(job)) return job;
      }
    }
  }
  for (int depth = 0; depth < kMaxAncestry && pid > 1; ++depth) {
    auto stat = read_proc_stat(pid);
    if (!stat) break;
    if (auto it = by_pid_.find(pid); it != by_pid_.end()) {
      for (const auto& [start_time, job] : it->second) {
        if (start_time == stat->start_time && consider(job)) return job;
      }
    }
    pid = stat->ppid;
  }
  return cleaned;
}

}  // namespace warden
