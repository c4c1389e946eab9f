#include "world/job_status.h"

#include <set>

#include "core/wall_clock.h"
#include "warden/outcomes.h"
#include "world/namespaces.h"

namespace warden {

namespace {

// What a cleaned job left behind: the processes that outlived its cleanup (or were kept by
// policy) and the paths still there. `status` shows these, not what was registered.
struct Remains {
  std::set<pid_t> processes;
  std::size_t files = 0;
  std::size_t shm = 0;
};

Remains remains_of(const CleanupReport& report) {
  Remains r;
  for (const auto& p : report.processes) {
    if (lives_on(p)) r.processes.insert(p.pid);
  }
  for (const auto& p : report.paths) {
    if (remains(p)) {
      (info_of(p.kind).shm ? r.shm : r.files) += 1;
    }
  }
  return r;
}

}  // namespace

JobStatus status_of(const Job& job, const Caller& viewer, const StatusShape& shape) {
  auto seen = [&viewer](const ProcessIdentity& p, bool alive) {
    if (viewer.view == nullptr || viewer.view->shares_pids()) return p.pid;
    return alive ? viewer.view->local_pid(p.pid).value_or(0) : 0;
  };
  JobStatus s{.id = job.id,
              .name = job.spec.name,
              .group = job.spec.group,
              .uid = job.uid,
              .state = job.state,
              .reason = job.reason,
              .reason_detail = job.reason_detail,
              .main_pid = seen(job.main, job.state == JobState::running),
              .main_start_time = job.main.start_time,
              .heartbeat_s = to_seconds(job.spec.heartbeat),
              .grace_s = to_seconds(job.spec.grace),
              .created_unix_ms = to_unix_ms(job.created),
              .hooks = job.hooks.size(),
              .tracking = job.cgroup.empty() ? "scan" : "cgroup",
              .cgroup = job.cgroup,
              .discover = job.spec.discover.value_or(shape.discover),
              .live_processes = job.live_workers() + (job.state == JobState::running ? 1 : 0)};
  if (job.last_beat) s.last_beat_unix_ms = to_unix_ms(*job.last_beat);
  std::optional<Remains> left;
  if (job.state == JobState::cleaned && job.report) left = remains_of(*job.report);
  if (left) {
    s.live_processes = left->processes.size();
    s.files = left->files;
    s.shm = left->shm;
  } else {
    for (const auto& p : job.paths) {
      (info_of(p.kind).shm ? s.shm : s.files) += 1;
    }
  }
  if (shape.summary) return s;
  s.report = job.report;
  s.workers.reserve(job.workers.size());
  for (const auto& w : job.workers) {
    bool exited = w.exited_at || (left && !left->processes.contains(w.identity.pid));
    bool tracked = job.state == JobState::running && !exited && shape.tracking_of;
    s.workers.push_back({.pid = seen(w.identity, !exited),
                         .start_time = w.identity.start_time,
                         .exited = exited,
                         .policy = w.policy,
                         .tracking = tracked ? shape.tracking_of(job, w.identity.pid) : ""});
  }
  std::size_t listed_bytes = 0;
  for (const auto& p : job.paths) {
    listed_bytes += p.path.size();
    if (listed_bytes > shape.max_listed_path_bytes) break;
    s.paths.push_back({.kind = p.kind, .path = p.path, .policy = p.policy});
  }
  return s;
}

}  // namespace warden
