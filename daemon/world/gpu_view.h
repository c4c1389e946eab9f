// The node's GPU view (`gpus`, a full `status`, `metrics`): who holds each GPU, attributed to the
// jobs of wardend's that they belong to. It walks every process's descriptors, so it runs off the
// event loop, on a snapshot of the jobs taken on it.
#pragma once

#include <vector>

#include "world/gpus.h"
#include "world/job_owners.h"
#include "proto/messages.h"

namespace warden {

// As `caller` may see it: each holder numbered as the caller numbers it (one outside a container
// caller's PID namespace is left out), with the job it belongs to, named only where that job is
// the caller's. `jobs`: the active ones; `cgroups`: nullptr without tracking cgroups.
GpusReply gpu_view(Gpus& gpus, const std::vector<CheckedJob>& jobs, Cgroups* cgroups,
                   const Caller& caller);

}  // namespace warden
