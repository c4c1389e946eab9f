// The service's part in seeing what jobs make on the allowed roots (world/creations.h): the watch,
// and which job each maker belongs to.
#include <algorithm>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "edge/service.h"
#include "world/cgroup.h"

namespace warden {

std::map<pid_t, const Job*> Service::registered_processes() const {
  std::map<pid_t, const Job*> registered;
  for (const Job* job : core_.visible_jobs(Caller{.uid = 0})) {
    if (job->state == JobState::cleaned) continue;
    registered[job->main.pid] = job;
    for (const auto& w : job->workers) {
      if (!w.exited_at) registered[w.identity.pid] = job;
    }
  }
  return registered;
}

const Job* Service::job_of_process(pid_t pid, const std::map<pid_t, const Job*>& registered) const {
  if (cgroups_ != nullptr) {
    if (auto cgroup = cgroups_->cgroup_of(pid)) {
      if (const Job* job = job_cgroups_.owner(*cgroup)) return job;
    }
  }
  const Job* found = nullptr;
  any_ancestor(pid, [&](pid_t p, std::uint64_t start) {
    auto it = registered.find(p);
    if (it == registered.end()) return false;
    const Job& job = *it->second;
    bool same = job.main.pid == p
                    ? job.main.start_time == start
                    : std::any_of(job.workers.begin(), job.workers.end(),
                                  [&](const TrackedProcess& w) {
                                    return w.identity.pid == p && w.identity.start_time == start;
                                  });
    if (same) found = &job;  // else a recycled pid: not the job's
    return same;
  });
  return found;
}

void Service::watch_creations() {
  creation_watch_.reset();  // one group per root at a time
  creation_watch_ = std::make_unique<CreationWatch>(
      io_.get_executor(), cleanup_options_.paths.allowed_roots,
      [this](const std::vector<RootChange>& changes) { on_root_changes(changes); });
  if (!creation_watch_->unavailable().empty()) {
    spdlog::info("not watching the allowed roots for what jobs make there: {}",
                 creation_watch_->unavailable());
  }
}

void Service::on_root_changes(const std::vector<RootChange>& changes) {
  std::optional<std::map<pid_t, const Job*>> registered;  // read once per batch, if needed
  for (const auto& change : changes) {
    if (!change.created) {
      creations_.remove(change.object.path);
      continue;
    }
    if (change.pid <= 0 || change.pid == ::getpid()) continue;
    if (!registered) registered = registered_processes();
    const Job* job = job_of_process(change.pid, *registered);
    if (job == nullptr) {
      if (auto stat = read_proc_stat(change.pid)) {
        // Nobody's now; the cleanup that ends this very process may claim it.
        creations_.add_unclaimed(
            {.object = change.object, .maker = {change.pid, stat->start_time}});
        continue;
      }
      // Gone already (a main SIGKILLed just after it made the file, and reaped): a registered
      // process by that pid is the maker, since a pid is not handed out again that soon.
      auto it = registered->find(change.pid);
      if (it == registered->end()) {
        creations_.remove(change.object.path);  // nobody can be named for it
        continue;
      }
      job = it->second;
    }
    if (!creations_.add(job->id, change.object)) {
      spdlog::debug("job={} made more than {} objects on the roots; {} is not recorded", job->id,
                    Creations::kMaxPerJob, change.object.path);
    }
  }
}

std::string Service::discover_note() const {
  constexpr std::string_view kHeld =
      "discovery sees the objects a job's processes hold open or map when it is cleaned";
  if (creation_watch_ && creation_watch_->unavailable().empty()) {
    return fmt::format(
        "{}, and those they made directly in {} and did not remove (fanotify names each "
        "maker); not what an unregistered process made and exited before wardend read the event, "
        "nor what a container job made in its own mounts",
        kHeld, fmt::join(creation_watch_->roots(), ", "));
  }
  return fmt::format(
      "{}; one a job created and closed before it died is not seen (the roots are not watched: "
      "{})",
      kHeld, creation_watch_ ? creation_watch_->unavailable() : "no watch");
}

}  // namespace warden
