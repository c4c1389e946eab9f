#include "edge/job_cgroups.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <system_error>

#include <spdlog/spdlog.h>

#include "world/process_tree.h"

namespace warden {

JobCgroups::JobCgroups(Cgroups* cgroups, std::string prefix, const Supervisor& core)
    : cgroups_(cgroups), prefix_(std::move(prefix)), core_(core) {}

std::string JobCgroups::make_leaf(JobId id, const ProcessHandle& main) {
  const pid_t pid = main.identity.pid;
  // (wardend and its ancestors are never a job's main: refuse_untouchable(), so wardend, which a
  // frozen or killed cgroup must never hold, is neither moved nor among the descendants.)
  if (cgroups_ == nullptr) return "";
  try {
    auto home = cgroups_->cgroup_of(pid);
    if (!home) {
      throw std::runtime_error("the cgroup of process " + std::to_string(pid) + " cannot be read");
    }
    // A process that is already the main one of a running tracked job (registered again, as a
    // benchmark does thousands of times) gets no cgroup nested in that job's: the nesting would
    // grow without bound. A job started inside a job has another main process and nests.
    if (const Job* owner = this->owner(*home);
        owner != nullptr && owner->state == JobState::running && owner->main == main.identity) {
      spdlog::info("job={} tracking=scan: its main process is already job {}'s, tracked by {}", id,
                   owner->id, *home);
      return "";
    }
    std::string cgroup = cgroups_->create(*home, prefix_ + std::to_string(id));
    try {
      cgroups_->move(pid, cgroup);
    } catch (...) {
      cgroups_->remove(cgroup);
      throw;
    }
    // The pid named the main process when it was moved only if that process is alive still.
    if (pidfd_exited(main.pidfd.get())) {
      release(cgroup);
      return "";
    }
    move_descendants(pid, home, cgroup);
    return cgroup;
  } catch (const std::exception& e) {
    spdlog::info("job={} tracking=scan: no tracking cgroup ({})", id, e.what());
    return "";
  }
}

void JobCgroups::move_descendants(pid_t pid, const std::optional<std::string>& home,
                                  const std::string& cgroup) {
  for (pid_t descendant : read_descendants(pid)) {
    if (cgroups_->cgroup_of(descendant) != home) continue;
    try {
      cgroups_->move(descendant, cgroup);
    } catch (const std::system_error&) {
      // Exited meanwhile; one that cannot be moved is still found by its parentage at cleanup.
    }
  }
}

std::string JobCgroups::adopt(const Job& job, const ProcessHandle& process) {
  if (cgroups_ == nullptr || job.cgroup.empty()) return "";
  const pid_t pid = process.identity.pid;
  try {
    auto home = cgroups_->cgroup_of(pid);
    if (!home) throw std::runtime_error("its cgroup cannot be read");
    if (const Job* owner = this->owner(*home)) {
      if (owner->id == job.id) return "";  // a process the job forked: kept already
      throw std::runtime_error("it is in job " + std::to_string(owner->id) + "'s cgroup");
    }
    const bool beside_main = *home == parent_cgroup(job.cgroup);
    std::string leaf =
        beside_main ? job.cgroup : cgroups_->create(*home, prefix_ + std::to_string(job.id));
    try {
      cgroups_->move(pid, leaf);
    } catch (...) {
      if (!beside_main) cgroups_->remove(leaf);
      throw;
    }
    // The pid named the process when it was moved only if that process is alive still.
    if (pidfd_exited(process.pidfd.get())) {
      cgroups_->move(pid, *home);
      if (!beside_main) cgroups_->remove(leaf);
      return "";
    }
    move_descendants(pid, home, leaf);
    spdlog::debug("job={} pid={} tracking={}", job.id, pid, leaf);
    const bool known = beside_main || std::find(job.more_cgroups.begin(), job.more_cgroups.end(),
                                                leaf) != job.more_cgroups.end();
    return known ? "" : leaf;
  } catch (const std::exception& e) {
    spdlog::info("job={} pid={} tracking=scan: not moved into a cgroup of the job ({})", job.id,
                 pid, e.what());
    return "";
  }
}

void JobCgroups::release(const std::string& cgroup) {
  try {
    for (pid_t pid : cgroups_->members(cgroup)) cgroups_->move(pid, parent_cgroup(cgroup));
  } catch (const std::exception& e) {
    spdlog::warn("cgroup={} cannot give its processes back: {}", cgroup, e.what());
  }
  if (int err = cgroups_->remove(cgroup); err != 0) {
    spdlog::warn("cgroup={} cannot be removed: {}", cgroup, std::strerror(err));
  }
}

const Job* JobCgroups::owner(const std::string& cgroup) const {
  std::string name = cgroup.substr(cgroup.rfind('/') + 1);
  if (!name.starts_with(prefix_)) return nullptr;
  const Job* job = core_.find(std::strtoull(name.c_str() + prefix_.size(), nullptr, 10));
  if (job == nullptr) return nullptr;
  bool its = job->cgroup == cgroup || std::find(job->more_cgroups.begin(), job->more_cgroups.end(),
                                                cgroup) != job->more_cgroups.end();
  return its ? job : nullptr;
}

std::string JobCgroups::tracking_of(const Job& job, pid_t pid) const {
  if (cgroups_ == nullptr || job.cgroup.empty()) return "scan";
  auto cgroup = cgroups_->cgroup_of(pid);
  if (cgroup_within(cgroup, job.cgroup)) return "cgroup";
  for (const auto& leaf : job.more_cgroups) {
    if (cgroup_within(cgroup, leaf)) return "cgroup";
  }
  return "scan";
}

void JobCgroups::sweep() {
  if (cgroups_ == nullptr) return;
  for (const std::string& cgroup : cgroups_->find(prefix_)) {
    const Job* job = owner(cgroup);
    if (job != nullptr && job->state != JobState::cleaned) continue;
    if (job == nullptr) {
      spdlog::info("cgroup={} belongs to no recorded job; its processes go back to {}", cgroup,
                   parent_cgroup(cgroup));
      release(cgroup);
      continue;
    }
    if (cgroup_within(cgroups_->cgroup_of(::getpid()), cgroup)) continue;  // wardend is in it
    spdlog::info("job={} cgroup={} outlived the job's cleanup; killing what is left", job->id,
                 cgroup);
    try {
      cgroups_->kill(cgroup);
    } catch (const std::exception& e) {
      spdlog::warn("cgroup={} kill: {}", cgroup, e.what());
    }
    Cgroups* cgroups = cgroups_;
    cgroups_->when_empty(cgroup, [cgroups, cgroup] { cgroups->remove(cgroup); });
  }
}

}  // namespace warden
