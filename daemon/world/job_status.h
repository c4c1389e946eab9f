// A job as `status` shows it to a caller: pids as that caller numbers them, what it holds counted,
// and in a full status its workers, its report and its paths (bounded in bytes).
#pragma once

#include <cstddef>
#include <functional>
#include <string>

#include "core/supervisor.h"

namespace warden {

struct StatusShape {
  bool summary = false;  // counts only: no workers, paths or report
  // What a job's cleanup does with what it never registered, where the job does not say.
  Discover discover = Discover::reclaim;
  // How a running worker is tracked ("cgroup", "cgroup beside the main", "scan": JobCgroups).
  std::function<std::string(const Job&, pid_t)> tracking_of;
  std::size_t max_listed_path_bytes = 256 * 1024;  // `counts` has them all
};

// A pid `viewer` cannot see (gone, or outside its PID namespace) is 0.
JobStatus status_of(const Job& job, const Caller& viewer, const StatusShape& shape);

}  // namespace warden
