// The node's GPU view for requests: the jobs copied on the event loop, the node read on the
// views thread (world/gpu_view.h).
#include "edge/service.h"
#include "world/gpu_view.h"

namespace warden {

std::function<GpusReply()> Service::gpus(const Caller& caller) const {
  return [gpus = gpus_, jobs = checked_jobs(/*with_cleaned=*/false), cgroups = cgroups_, caller] {
    return gpu_view(*gpus, jobs, cgroups, caller);
  };
}

}  // namespace warden
