#include "core/supervisor.h"

#include <algorithm>
#include <set>
#include <stdexcept>
#include <utility>

#include <fmt/format.h>

namespace warden {
namespace {

std::string job_str(JobId id) { return "job " + std::to_string(id); }

// A user sees its own jobs; an admin sees all.
bool sees(const Caller& caller, const Job& job) {
  return caller.is_admin() || job.uid == caller.uid;
}

}  // namespace

std::size_t Job::live_workers() const {
  return std::count_if(workers.begin(), workers.end(),
                       [](const TrackedProcess& p) { return !p.exited_at; });
}

Supervisor::Supervisor(SupervisorLimits limits) : limits_(limits) {}

JobId Supervisor::register_job(const Caller& caller, JobSpec spec, const ProcessIdentity& main,
                               TimePoint now) {
  if (!caller.is_admin() && main.uid != caller.uid) {
    throw Error(ErrorCode::permission_denied, "process " + std::to_string(main.pid) +
                                                  " belongs to uid " + std::to_string(main.uid) +
                                                  "; you may register only your own processes");
  }
  std::size_t& active = active_jobs_per_user_[caller.uid];
  if (active >= limits_.max_jobs_per_user) {
    throw Error(ErrorCode::limit_exceeded, "uid " + std::to_string(caller.uid) + " already has " +
                                               std::to_string(active) +
                                               " jobs (the limit); end some first");
  }
  JobId id = next_id_++;
  Job& job = jobs_[id];
  job.id = id;
  job.uid = caller.uid;
  job.gid = caller.gid;
  job.spec = std::move(spec);
  job.main = main;
  job.created = now;
  ++active;
  if (job.spec.heartbeat > Duration::zero()) set_deadline(job, now + job.spec.heartbeat);
  return id;
}

bool Supervisor::add_process(const Caller& caller, JobId id, const ProcessIdentity& process,
                             Policy policy) {
  Job& job = running_job(caller, id);
  if (!caller.is_admin() && process.uid != caller.uid) {
    throw Error(ErrorCode::permission_denied, "process " + std::to_string(process.pid) +
                                                  " belongs to uid " + std::to_string(process.uid) +
                                                  "; you may register only your own processes");
  }
  // Registering the same process twice is harmless (a client retrying after a reconnect).
  if (process == job.main) return false;
  for (const auto& w : job.workers) {
    if (w.identity == process && !w.exited_at) return false;
  }
  if (job.workers.size() >= limits_.max_processes_per_job) {
    // Records of workers that already exited are only history; make room by dropping the oldest.
    auto oldest_exited =
        std::find_if(job.workers.begin(), job.workers.end(),
                     [](const TrackedProcess& p) { return p.exited_at.has_value(); });
    if (oldest_exited == job.workers.end()) {
      throw Error(ErrorCode::limit_exceeded, job_str(id) + " already tracks " +
                                                 std::to_string(job.workers.size()) +
                                                 " processes (the limit)");
    }
    job.workers.erase(oldest_exited);
  }
  job.workers.push_back({.identity = process, .policy = policy});
  return true;
}

std::optional<TrackedPath> Supervisor::add_path(const Caller& caller, JobId id, TrackedPath path) {
  Job& job = running_job(caller, id);
  if (!info_of(path.kind).pattern && !caller.is_admin() && path.identity.uid != caller.uid) {
    throw Error(ErrorCode::permission_denied, path.path + " belongs to uid " +
                                                  std::to_string(path.identity.uid) +
                                                  "; you may register only your own files");
  }
  for (auto& p : job.paths) {
    if (p.kind == path.kind && p.path == path.path) {
      // Re-registration after the job re-created it: track the new one.
      return std::exchange(p, std::move(path));
    }
  }
  if (job.paths.size() >= limits_.max_paths_per_job) {
    throw Error(ErrorCode::limit_exceeded, job_str(id) + " already tracks " +
                                               std::to_string(job.paths.size()) +
                                               " paths (the limit); register a directory instead");
  }
  std::size_t& used = path_bytes_per_user_[job.uid];
  if (used + path.path.size() > limits_.max_path_bytes_per_user) {
    throw Error(ErrorCode::limit_exceeded,
                "uid " + std::to_string(job.uid) + "'s running jobs already register " +
                    std::to_string(used) + " bytes of paths (the limit is " +
                    std::to_string(limits_.max_path_bytes_per_user) +
                    "); register a directory instead of its files");
  }
  used += path.path.size();
  job.paths.push_back(std::move(path));
  return std::nullopt;
}

void Supervisor::add_hook(const Caller& caller, JobId id, TrackedHook hook) {
  Job& job = running_job(caller, id);
  if (job.hooks.size() >= limits_.max_hooks_per_job) {
    throw Error(
        ErrorCode::limit_exceeded,
        job_str(id) + " already has " + std::to_string(job.hooks.size()) + " hooks (the limit)");
  }
  job.hooks.push_back(std::move(hook));
}

std::optional<TimePoint> Supervisor::heartbeat(const Caller& caller, JobId id, TimePoint now) {
  Job& job = running_job(caller, id);
  job.last_beat = now;
  if (job.spec.heartbeat == Duration::zero()) return std::nullopt;
  set_deadline(job, now + job.spec.heartbeat);
  return job.deadline;
}

CleanupPlan Supervisor::end_job(const Caller& caller, JobId id, bool ok) {
  Job& job = running_job(caller, id);
  if (ok) return begin_cleanup(job, JobState::ended, "the job ended cleanly", false);
  return begin_cleanup(job, JobState::failed, "the job reported failure", false);
}

std::vector<CleanupPlan> Supervisor::cleanup(const Caller& caller, const CleanupRequest& request) {
  std::string detail = "cleanup requested by uid " + std::to_string(caller.uid);
  if (request.job) {
    return {begin_cleanup(running_job(caller, *request.job), JobState::failed, detail, true)};
  }
  std::vector<CleanupPlan> plans;
  for (auto& [id, job] : jobs_) {
    if (job.state == JobState::running && job.spec.group == request.group && sees(caller, job)) {
      plans.push_back(
          begin_cleanup(job, JobState::failed, detail + " for group " + request.group, true));
    }
  }
  return plans;
}

std::vector<const Job*> Supervisor::visible_jobs(const Caller& caller) const {
  std::vector<const Job*> out;
  for (const auto& [id, job] : jobs_) {
    if (sees(caller, job)) out.push_back(&job);
  }
  return out;
}

const Job& Supervisor::visible_job(const Caller& caller, JobId id) const {
  const Job* job = find(id);
  if (job == nullptr || !sees(caller, *job)) {
    throw Error(ErrorCode::not_found, job_str(id) + " not found among your jobs");
  }
  return *job;
}

ExitEffect Supervisor::process_exited(JobId id, pid_t pid, TimePoint now) {
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return {.untrack = true};
  Job& job = it->second;
  // Once cleanup has begun, the cleanup engine follows exits itself; handles go when it is done.
  if (job.state != JobState::running) return {};
  if (pid == job.main.pid) {
    // The main process is dead: it and everything it led are the job's to clean.
    CleanupPlan plan =
        begin_cleanup(job, JobState::failed,
                      "main process " + std::to_string(pid) + " exited without end_job", true);
    plan.targets.front().exited = true;
    return {.cleanup = std::move(plan)};
  }
  for (auto& w : job.workers) {
    if (w.identity.pid == pid && !w.exited_at) {
      w.exited_at = now;
      return {.untrack = true};
    }
  }
  return {.untrack = true};
}

std::vector<CleanupPlan> Supervisor::expire(TimePoint now) {
  std::vector<CleanupPlan> plans;
  while (!deadlines_.empty() && deadlines_.begin()->first <= now) {
    Job& job = jobs_.at(deadlines_.begin()->second);
    double silent = to_seconds(now - job.last_beat.value_or(job.created));
    plans.push_back(begin_cleanup(job, JobState::stalled,
                                  fmt::format("no heartbeat for {:.1f} s", silent),
                                  job.spec.kill_main_on_stall));
  }
  return plans;
}

void Supervisor::postpone_deadlines(Duration by) {
  std::set<std::pair<TimePoint, JobId>> later;
  for (auto [deadline, id] : deadlines_) {
    jobs_.at(id).deadline = deadline + by;
    later.insert({deadline + by, id});
  }
  deadlines_ = std::move(later);
}

std::optional<TimePoint> Supervisor::next_deadline() const {
  if (deadlines_.empty()) return std::nullopt;
  return deadlines_.begin()->first;
}

namespace {

// A cleaned job's report says what became of each path and hook: of its registrations it keeps
// only the paths its cleanup could not or would not remove (the node check looks at them again, by
// identity), so that thousands of long paths, or hooks' outputs, do not stay with a finished job
// for as long as it is kept.
void keep_only_what_is_left(Job& job) {
  std::set<std::pair<PathKind, std::string>> left;
  if (job.report) {
    for (const auto& p : job.report->paths) {
      if (p.outcome != Outcome::removed && p.outcome != Outcome::already_gone) {
        left.emplace(p.kind, p.path);
      }
    }
  }
  std::vector<TrackedPath> kept;
  for (auto& p : job.paths) {
    if (left.contains({p.kind, p.path})) kept.push_back(std::move(p));
  }
  job.paths = std::move(kept);
  // What each hook did is in the report too (up to 64 KiB of output each).
  for (auto& h : job.hooks) h.finished.reset();
}

// What a job's registered paths weigh against its user's bound: their names.
std::size_t path_bytes(const Job& job) {
  std::size_t bytes = 0;
  for (const auto& p : job.paths) bytes += p.path.size();
  return bytes;
}

}  // namespace

std::vector<JobId> Supervisor::cleanup_finished(JobId id, CleanupReport report, TimePoint now) {
  auto it = jobs_.find(id);
  if (it == jobs_.end() || it->second.state != JobState::cleaning) return {};
  Job& job = it->second;
  job.state = JobState::cleaned;
  job.report = std::move(report);
  job.progress.reset();
  job.finished = now;
  job_done(job);
  keep_only_what_is_left(job);
  finished_order_.push_back(id);
  return retire_finished();
}

std::vector<JobId> Supervisor::restore(Job job, JobId next_id, TimePoint now) {
  if (job.state == JobState::running) {
    job.deadline.reset();
    if (job.spec.heartbeat > Duration::zero()) job.deadline = now + job.spec.heartbeat;
    job.last_beat.reset();
  } else if (job.state == JobState::cleaned) {
    for (auto& w : job.workers) w.exited_at = job.finished;
  }
  next_id_ = std::max({next_id_, next_id, job.id + 1});
  JobId id = job.id;
  auto [it, inserted] = jobs_.try_emplace(id, std::move(job));
  if (!inserted) throw std::logic_error(job_str(id) + " restored twice");
  Job& j = it->second;
  if (j.state == JobState::cleaned) {
    keep_only_what_is_left(j);  // as cleanup_finished leaves it
    // The store lists jobs by id, the order they were created: close enough to the order they
    // finished for deciding which to retire first.
    finished_order_.push_back(id);
    return retire_finished();
  }
  ++active_jobs_per_user_[j.uid];
  path_bytes_per_user_[j.uid] += path_bytes(j);
  if (j.deadline) {
    std::optional<TimePoint> deadline = j.deadline;
    j.deadline.reset();
    set_deadline(j, deadline);
  }
  return {};
}

void Supervisor::hook_started(JobId id, std::size_t index) {
  Job& job = jobs_.at(id);
  if (job.state == JobState::cleaning && index < job.hooks.size()) job.hooks[index].started = true;
}

void Supervisor::hook_finished(JobId id, std::size_t index, const CommandReport& report) {
  Job& job = jobs_.at(id);
  if (job.state == JobState::cleaning && index < job.hooks.size()) {
    job.hooks[index].finished = report;
  }
}

CleanupPlan Supervisor::resume_cleanup(JobId id) {
  Job& job = jobs_.at(id);
  CleanupPlan plan = begin_cleanup(job, job.reason.value_or(JobState::failed), job.reason_detail,
                                   job.cleanup_includes_main);
  plan.earlier = job.progress;
  return plan;
}

void Supervisor::cleanup_progress(JobId id, CleanupReport so_far) {
  Job& job = jobs_.at(id);
  if (job.state == JobState::cleaning) job.progress = std::move(so_far);
}

bool Supervisor::discard_job(JobId id) {
  Job* job = running(id);
  if (job == nullptr) return false;
  set_deadline(*job, std::nullopt);
  job_done(*job);
  jobs_.erase(id);
  return true;
}

void Supervisor::discard_process(JobId id, const ProcessIdentity& process) {
  Job* job = running(id);
  if (job == nullptr) return;
  std::erase_if(job->workers, [&](const TrackedProcess& w) { return w.identity == process; });
}

void Supervisor::discard_path(JobId id, PathKind kind, const std::string& path,
                              std::optional<TrackedPath> previous) {
  Job* job = running(id);
  if (job == nullptr) return;
  auto it = std::find_if(job->paths.begin(), job->paths.end(),
                         [&](const TrackedPath& p) { return p.kind == kind && p.path == path; });
  if (it == job->paths.end()) return;
  if (previous) {
    *it = std::move(*previous);
  } else {
    path_bytes_per_user_[job->uid] -= it->path.size();
    job->paths.erase(it);
  }
}

void Supervisor::discard_hook(JobId id, const TrackedHook& hook) {
  Job* job = running(id);
  if (job == nullptr) return;
  auto it = std::find(job->hooks.rbegin(), job->hooks.rend(), hook);
  if (it != job->hooks.rend()) job->hooks.erase(std::next(it).base());
}

std::size_t Supervisor::active_jobs() const {
  std::size_t n = 0;
  for (const auto& [uid, count] : active_jobs_per_user_) n += count;
  return n;
}

const Job* Supervisor::find(JobId id) const {
  auto it = jobs_.find(id);
  return it == jobs_.end() ? nullptr : &it->second;
}

Job& Supervisor::running_job(const Caller& caller, JobId id) {
  // The one place that needs a mutable job by a caller's id: the lookup is visible_job's.
  Job& job = const_cast<Job&>(visible_job(caller, id));
  if (job.state != JobState::running) {
    throw Error(ErrorCode::invalid_state,
                job_str(id) + " has already ended (" + std::string(to_string(*job.reason)) +
                    ") and is " + std::string(to_string(job.state)) + "; register a new job");
  }
  return job;
}

Job* Supervisor::running(JobId id) {
  auto it = jobs_.find(id);
  return it == jobs_.end() || it->second.state != JobState::running ? nullptr : &it->second;
}

void Supervisor::set_cgroup(JobId id, std::string cgroup) {
  if (auto it = jobs_.find(id); it != jobs_.end()) it->second.cgroup = std::move(cgroup);
}

void Supervisor::add_cgroup(JobId id, std::string cgroup) {
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return;
  auto& more = it->second.more_cgroups;
  if (std::find(more.begin(), more.end(), cgroup) == more.end()) more.push_back(std::move(cgroup));
}

CleanupPlan Supervisor::begin_cleanup(Job& job, JobState reason, std::string detail,
                                      bool include_main) {
  set_deadline(job, std::nullopt);
  job.reason = reason;
  job.reason_detail = std::move(detail);
  job.state = JobState::cleaning;
  job.cleanup_includes_main = include_main;

  const bool clean = reason == JobState::ended;
  // On a clean end, `failure`-only resources are kept; everything else still there is a leftover.
  auto keep = [clean](Policy p) { return clean && p == Policy::failure; };
  CleanupPlan plan{
      .job = job.id,
      .reason = reason,
      .uid = job.uid,
      .gid = job.gid,
      .grace = job.spec.grace,
      .main = job.main,
      .main_spared = !include_main,
      .cgroup = job.cgroup,
      .more_cgroups = job.more_cgroups,
      .diagnose = reason == JobState::stalled,
      .diagnose_command = reason == JobState::stalled ? job.spec.diagnose : std::nullopt,
      .discover = job.spec.discover,
      .created = job.created};
  if (include_main) {
    plan.targets.push_back({.identity = job.main, .role = "main"});
  }
  for (const auto& w : job.workers) {
    plan.targets.push_back({.identity = w.identity,
                            .role = "worker",
                            .leftover = clean && !w.exited_at && !keep(w.policy),
                            .exited = w.exited_at.has_value(),
                            .keep = keep(w.policy)});
  }
  for (const auto& h : job.hooks) {
    plan.hooks.push_back({.command = h.command,
                          .keep = keep(h.policy),
                          .finished = h.finished,
                          .interrupted = h.started && !h.finished});
  }
  for (const auto& p : job.paths) {
    plan.paths.push_back({.path = p, .keep = keep(p.policy), .leftover = clean && !keep(p.policy)});
  }
  return plan;
}

void Supervisor::set_deadline(Job& job, std::optional<TimePoint> deadline) {
  if (job.deadline) deadlines_.erase({*job.deadline, job.id});
  job.deadline = deadline;
  if (deadline) deadlines_.insert({*deadline, job.id});
}

void Supervisor::job_done(const Job& job) {
  if (--active_jobs_per_user_[job.uid] == 0) active_jobs_per_user_.erase(job.uid);
  if ((path_bytes_per_user_[job.uid] -= path_bytes(job)) == 0) path_bytes_per_user_.erase(job.uid);
}

std::vector<JobId> Supervisor::retire_finished() {
  std::vector<JobId> retired;
  while (finished_order_.size() > limits_.finished_jobs_kept) {
    jobs_.erase(finished_order_.front());
    retired.push_back(finished_order_.front());
    finished_order_.pop_front();
  }
  return retired;
}

}  // namespace warden
