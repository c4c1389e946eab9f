#include "world/job_owners.h"

#include "world/process.h"

namespace warden {

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
  const CheckedJob* running = nullptr;
  any_ancestor(pid, [&](pid_t p, std::uint64_t start) {
    auto it = by_pid_.find(p);
    if (it == by_pid_.end()) return false;
    for (const auto& [start_time, job] : it->second) {
      if (start_time == start && consider(job)) {
        running = job;
        return true;
      }
    }
    return false;
  });
  return running != nullptr ? running : cleaned;
}

}  // namespace warden
