#include "edge/homes.h"

#include <vector>

#include <spdlog/spdlog.h>

#include "world/process.h"

namespace warden {

std::shared_ptr<const View> Homes::of(const Job& job) const {
  if (auto it = views_.find(job.id); it != views_.end()) return it->second;
  return job.spec.home ? nullptr : View::wardends();
}

bool Homes::find_again(const Job& job) {
  if (!job.spec.home) return true;
  std::vector<const ProcessIdentity*> members{&job.main};
  for (const auto& w : job.workers) members.push_back(&w.identity);
  for (const ProcessIdentity* member : members) {
    auto handle = reopen(*member);
    if (!handle) continue;
    try {
      auto view = View::of(member->pid, handle->pidfd.get());
      if (view->home() == job.spec.home) {
        keep(job.id, std::move(view));
        return true;
      }
    } catch (const Error&) {
      // Exited meanwhile.
    }
  }
  spdlog::warn(
      "job={} lived in a container none of whose processes is left: its paths and hooks "
      "cannot be reached any more",
      job.id);
  return false;
}

}  // namespace warden
