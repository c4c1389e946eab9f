// The node check: is this node clean for the next job? What the node shows now (processes holding
// GPUs, GPU memory, cgroups, /dev/shm, paths) read against what wardend knows of its jobs, and the
// reclaim that ends or removes what is safe to. Both block (they read /proc and cgroupfs, wait
// for processes to die): call them off the event loop, with a snapshot of the jobs taken on it.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/supervisor.h"
#include "world/cgroup.h"
#include "world/cleanup.h"
#include "world/gpus.h"
#include "world/job_owners.h"
#include "world/kernel.h"
#include "proto/messages.h"

namespace warden {

// The check's own settings; where segments live, how long SIGKILL may take and where paths may be
// removed from are the cleanup's (CleanupOptions).
struct NodeCheckOptions {
  // /dev/shm fuller than this share of its size is a finding (segments fill RAM, and the next
  // job's DataLoader dies of "Bus error").
  double shm_max_share = 0.5;
  // GPU memory in use beyond what its processes hold, by more than this, is a finding (NVML only;
  // the driver itself keeps a little on every GPU).
  std::uint64_t gpu_unheld_bytes = 1ULL << 30;
  // How often wardend checks the node by itself, for the metrics (zero: only when asked).
  Duration interval = std::chrono::minutes(5);
  bool operator==(const NodeCheckOptions&) const = default;
};

// What the check reads the node with. Thread-safe parts only: it runs on a worker thread.
struct NodeCheckContext {
  Kernel& kernel;
  Cgroups* cgroups = nullptr;  // nullptr: this wardend has no tracking cgroups
  Gpus* gpus = nullptr;        // nullptr: GPUs are not looked at
};

// A finding, with the start time of the process it names (0: none), so that a reclaim signals
// exactly that process and never a recycled pid.
struct Found {
  Finding finding;
  std::uint64_t start_time = 0;
  std::string cgroup;                // populated_cgroup: the cgroup
  std::optional<TrackedPath> path;   // leftover_path: the registration, identity and all
  bool removable = false;            // leftover_path: removal failed before; may be retried
};

struct NodeLook {
  std::vector<Found> found;
  std::string note;  // what could not be looked at
};

// Every finding on the node, whoever it concerns (the service filters by the asker).
NodeLook look_at_node(const std::vector<CheckedJob>& jobs, const NodeCheckOptions& options,
                      const CleanupOptions& cleanup, NodeCheckContext& context);

// Ends the stray GPU holders (SIGTERM, `grace`, SIGKILL) and what outlived its cleanup
// (SIGKILL, again), kills populated cgroups of cleaned jobs and removes leftover paths whose
// removal failed and that are still what was registered. Returns one act per finding acted on;
// findings it cannot act on (GPU memory, a full /dev/shm, a refused path) are left.
std::vector<ReclaimAct> reclaim_node(const std::vector<Found>& found, Duration grace,
                                     const CleanupOptions& cleanup, NodeCheckContext& context);

// A process's start (clock ticks after boot, /proc/PID/stat) as wall-clock milliseconds.
std::int64_t start_unix_ms(std::uint64_t start_ticks);

}  // namespace warden
