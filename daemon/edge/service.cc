#include "edge/service.h"

#include <malloc.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "world/report_bound.h"
#include "edge/systemd.h"
#include "core/wall_clock.h"
#include "warden/outcomes.h"

namespace warden {

namespace {

// Under systemd, a copy of each watched pidfd goes to the service's descriptor store, so that a
// restarted wardend gets back handles that a recycled pid cannot confuse.
ProcessWatch::Keeper pidfd_keeper(Systemd* systemd) {
  if (systemd == nullptr || !systemd->supervised()) return {};
  return {.keep =
              [systemd](JobId job, const ProcessIdentity& process, int pidfd) {
                std::string name = Systemd::pidfd_name(job, process);
                systemd->store_pidfd(name, pidfd);
                return name;
              },
          .release = [systemd](const std::string& name) { systemd->remove_pidfd(name); }};
}

}  // namespace

Service::Service(boost::asio::io_context& io, ServiceOptions options, Journal& journal)
    : io_(io),
      instance_(options.instance),
      systemd_(options.systemd),
      cgroups_(options.cgroups),
      gpus_(std::make_shared<Gpus>(options.cleanup.gpus)),
      cleanup_options_(options.cleanup),
      check_options_(options.check),
      check_timer_(io),
      journal_(journal),
      core_(options.limits),
      job_cgroups_(options.cgroups, options.cgroup_prefix, core_),
      watch_(
          background_.get_executor(), [this](JobId job, pid_t pid) { on_process_exit(job, pid); },
          pidfd_keeper(options.systemd)),
      deadline_alarm_(io.get_executor(),
                      [this](TimePoint now, Duration late_by) { deadlines_due(now, late_by); }),
      cleanups_(io, [this](CleanupPlan plan) { launch_cleanup(std::move(plan)); }),
      status_timer_(io) {
  journal_.on_event_written(
      [this](const Event& event, const std::shared_ptr<const std::string>& line) {
        subscribers_.publish(event, line);
      },
      [followed = subscribers_.followed()](const Event& event) {
        return followed->load(std::memory_order_relaxed) ? event_line(event) : nullptr;
      });
  schedule_check(Duration::zero());
  watch_creations();
}

void Service::stop_threads() {
  for (auto* pool : {&views_, &removals_, &blocking_}) pool->stop_and_drop();
}

void Service::reconfigure(const SupervisorLimits& limits, const CleanupOptions& cleanup,
                          const NodeCheckOptions& check) {
  core_.set_limits(limits);
  if (cleanup.gpus != cleanup_options_.gpus) gpus_ = std::make_shared<Gpus>(cleanup.gpus);
  bool rewatch = cleanup.paths.allowed_roots != cleanup_options_.paths.allowed_roots;
  cleanup_options_ = cleanup;
  if (rewatch) watch_creations();
  bool rearm = check.interval != check_options_.interval;
  check_options_ = check;
  if (rearm) schedule_check(check.interval);
}

std::string Service::summary() const {
  return fmt::format("{} jobs active, {} processes tracked, {} cleanups running",
                     core_.active_jobs(), watch_.size(), cleanups_.running());
}

void Service::status_changed() {
  if (systemd_ == nullptr || !systemd_->supervised() || status_pending_) return;
  status_pending_ = true;
  status_timer_.expires_after(std::chrono::seconds(1));
  status_timer_.async_wait([this](boost::system::error_code ec) {
    status_pending_ = false;
    if (!ec) systemd_->status(summary());
  });
}

std::shared_ptr<const View> Service::home_of(JobId id) const {
  const Job* job = core_.find(id);
  return job != nullptr ? homes_.of(*job) : View::wardends();
}

Service::Registered Service::register_job(const Caller& caller, const RegisterJobRequest& request,
                                          UniqueFd pidfd) {
  ProcessHandle main = namer_.job_process(caller, request.pid, std::move(pidfd));
  const bool contained = caller.view != nullptr && !caller.view->is_wardends();
  JobSpec spec{.name = request.name,
               .heartbeat = from_seconds(request.heartbeat_s),
               .grace = from_seconds(request.grace_s),
               .kill_main_on_stall = request.kill_main_on_stall,
               .diagnose = request.diagnose,
               .group = request.group,
               .home = contained ? caller.view->home() : std::nullopt,
               .discover = request.discover};
  JobId id = core_.register_job(caller, std::move(spec), main.identity, Clock::now());
  if (contained) homes_.keep(id, caller.view);
  std::string cgroup = job_cgroups_.make_leaf(id, main);
  core_.set_cgroup(id, cgroup);
  spdlog::info("job={} state=running name={:?} uid={} pid={} heartbeat_s={} grace_s={} tracking={}",
               id, request.name, caller.uid, request.pid, request.heartbeat_s, request.grace_s,
               cgroup.empty() ? "scan" : cgroup);
  watch_.watch(id, std::move(main));
  rearm_deadline();
  const Job& job = *core_.find(id);
  status_changed();
  journal_.stage({job_record(job), event_record(job), NextJobId{core_.next_id()}},
                 [this, id, cgroup] {
                   if (core_.discard_job(id)) {
                     spdlog::warn("job={} registration taken back: it could not be recorded", id);
                     watch_.forget_job(id);
                     homes_.forget(id);
                     if (!cgroup.empty()) job_cgroups_.release(cgroup);
                     rearm_deadline();
                   }
                 });
  return {id, cgroup};
}

ProcessIdentity Service::add_process(const Caller& caller, const AddProcessRequest& request,
                                     UniqueFd pidfd) {
  const bool passed = bool(pidfd);
  ProcessHandle process = namer_.job_process(caller, request.pid, std::move(pidfd));
  ProcessIdentity identity = process.identity;
  if (!core_.add_process(caller, request.job, identity, request.policy)) return identity;
  spdlog::debug("job={} added pid={} start_time={} pidfd={}", request.job, identity.pid,
                identity.start_time, passed ? "passed by the client" : "opened by wardend");
  const JobId job = request.job;
  std::string leaf = job_cgroups_.adopt(*core_.find(job), process);
  watch_.watch(job, std::move(process));
  std::vector<Record> records{ProcessRecord{job, {.identity = identity, .policy = request.policy}}};
  // A new leaf of the job's is recorded with it, so that a restarted wardend finds it again.
  if (!leaf.empty()) {
    core_.add_cgroup(job, std::move(leaf));
    records.push_back(job_record(*core_.find(job)));
  }
  journal_.stage(std::move(records),
                 [this, job, identity] {
                   core_.discard_process(job, identity);
                   watch_.forget(job, identity.pid);
                 });
  return identity;
}

std::string Service::add_path(const Caller& caller, const AddPathRequest& request) {
  // Checking the job first spares a stranger's request the file-system work.
  core_.visible_job(caller, request.job);
  // A path means what it means where the job lives; asked from elsewhere, it would name another
  // file.
  auto home = home_of(request.job);
  if (home == nullptr) {
    throw Error(ErrorCode::invalid_state, "job " + std::to_string(request.job) + " has ended");
  }
  const View& where = caller.view != nullptr ? *caller.view : *View::wardends();
  if (!where.same_paths(*home)) {
    throw Error(ErrorCode::permission_denied,
                "job " + std::to_string(request.job) +
                    " lives in another mount namespace or root "
                    "than you (a container); register its paths from inside it");
  }
  TrackedPath path = resolve_path(cleanup_options_.paths, home->root(), request.kind, request.path);
  path.policy = request.policy;
  std::string canonical = path.path;
  JobId job = request.job;
  PathKind kind = request.kind;
  Record record = PathRecord{job, path};
  auto previous = core_.add_path(caller, job, std::move(path));
  journal_.stage({std::move(record)}, [this, job, kind, canonical, previous] {
    core_.discard_path(job, kind, canonical, previous);
  });
  spdlog::debug("job={} added {}={:?} policy={}", request.job, to_string(request.kind), canonical,
                to_string(request.policy));
  return canonical;
}

void Service::add_hook(const Caller& caller, const AddHookRequest& request) {
  TrackedHook hook{.command = request.hook, .policy = request.policy};
  core_.add_hook(caller, request.job, hook);
  spdlog::debug("job={} added hook={:?}", request.job, request.hook.argv[0]);
  JobId job = request.job;
  journal_.stage({HookRecord{job, hook}}, [this, job, hook] { core_.discard_hook(job, hook); });
}

std::optional<Duration> Service::heartbeat(const Caller& caller, const HeartbeatRequest& request) {
  auto now = Clock::now();
  auto deadline = core_.heartbeat(caller, request.job, now);
  if (request.unsupervised_s > 0) {
    // Not a state change: the job's history says when it ran without wardend hearing of it.
    Event event = event_record(*core_.find(request.job));
    event.reason_detail = fmt::format(
        "supervised again: the job could not reach wardend for {:.1f} s", request.unsupervised_s);
    spdlog::warn("job={} {}", request.job, event.reason_detail);
    journal_.stage({std::move(event)});
  }
  if (!deadline) return std::nullopt;
  // A beat only ever moves a deadline later, so the armed timer stays valid; it re-arms when it
  // fires.
  return *deadline - now;
}

std::size_t Service::cleanup(const Caller& caller, const CleanupRequest& request) {
  auto plans = core_.cleanup(caller, request);
  for (auto& plan : plans) start_cleanup(std::move(plan));
  rearm_deadline();
  return plans.size();
}

void Service::end_job(const Caller& caller, const EndJobRequest& request) {
  start_cleanup(core_.end_job(caller, request.job, request.outcome == JobEnd::ok));
  rearm_deadline();
}

std::vector<json> Service::events(const Caller& caller, const EventsRequest& request) {
  Store* store = journal_.store();
  if (store == nullptr) {
    throw Error(ErrorCode::unavailable,
                "this wardend runs without a state store (--durable=false) and keeps no event "
                "history");
  }
  // A user sees the events of its own jobs, even of jobs long gone from `status`.
  EventQuery query{.job = request.job,
                   .since_unix_ms = request.since_unix_ms,
                   .after_seq = request.after_seq,
                   .limit = request.limit};
  if (!caller.is_admin()) query.uid = caller.uid;
  try {
    return store->events(query);
  } catch (const std::exception& e) {
    throw Error(ErrorCode::unavailable, std::string("cannot read the event history: ") + e.what());
  }
}

std::vector<JobStatus> Service::status(const Caller& caller, const StatusRequest& request) const {
  StatusShape shape{.summary = request.summary,
                    .discover = cleanup_options_.discover,
                    .tracking_of = [this](const Job& job, pid_t pid) {
                      return job_cgroups_.tracking_of(job, pid);
                    }};
  std::vector<JobStatus> out;
  if (request.job) {
    out.push_back(status_of(core_.visible_job(caller, *request.job), caller, shape));
  } else {
    for (const Job* job : core_.visible_jobs(caller)) out.push_back(status_of(*job, caller, shape));
  }
  return out;
}

void Service::on_process_exit(JobId job, pid_t pid) {
  ExitEffect effect = core_.process_exited(job, pid, Clock::now());
  if (effect.untrack) {
    spdlog::debug("job={} pid={} exited; no longer tracked", job, pid);
    watch_.forget(job, pid);
  }
  if (effect.cleanup) {
    start_cleanup(std::move(*effect.cleanup));
    rearm_deadline();
  }
}

void Service::rearm_deadline() { deadline_alarm_.arm(core_.next_deadline()); }

void Service::deadlines_due(TimePoint now, Duration late_by) {
  // A timer that fires long after it was due means wardend itself did not run (SIGSTOP, a stuck
  // disk, a suspended machine): jobs' beats may be waiting unread in its sockets. Jobs are given
  // the time wardend lost, so that they are judged by their beats, not by its pause.
  constexpr Duration kLate = std::chrono::seconds(1);
  if (late_by > kLate) {
    spdlog::warn(
        "wardend did not run for {:.1f} s (stopped or starved); heartbeat deadlines move "
        "that much later",
        to_seconds(late_by));
    core_.postpone_deadlines(late_by);
  }
  for (auto& plan : core_.expire(now)) start_cleanup(std::move(plan));
  rearm_deadline();
}

void Service::start_cleanup(CleanupPlan plan) {
  const Job& job = *core_.find(plan.job);
  spdlog::info("job={} state=cleaning reason={} detail={:?} targets={}", plan.job,
               to_string(plan.reason), job.reason_detail, plan.targets.size());
  record_state(job);
  cleanups_.start(std::move(plan));
}

// The handle of each target, aligned with plan.targets: wardend's own where it still watches the
// process, one opened again for a cleanup resumed after a restart, else none (it exited).
std::vector<UniqueFd> Service::pidfds_for(const CleanupPlan& plan) {
  std::vector<UniqueFd> pidfds;
  pidfds.reserve(plan.targets.size());
  for (const auto& target : plan.targets) {
    int fd = watch_.pidfd(plan.job, target.identity.pid);
    if (fd >= 0) {
      pidfds.push_back(dup_fd(fd));
    } else if (auto handle = target.exited ? std::nullopt : reopen(target.identity)) {
      pidfds.push_back(std::move(handle->pidfd));
    } else {
      pidfds.push_back(UniqueFd());
    }
  }
  return pidfds;
}

// What the engine needs of wardend for job `id`'s cleanup, and how it records its progress.
CleanupContext Service::cleanup_context(JobId id) {
  if (creation_watch_) creation_watch_->drain();  // what the job made up to its end
  return {.options = cleanup_options_,
          .blocking = blocking_.get_executor(),
          .removals = removals_.get_executor(),
          .self = ::getpid(),
          .instance = instance_,
          .kernel = &kernel_,
          .cgroups = cgroups_,
          .home = home_of(id),
          .gpus = gpus_,
          .created = creations_.take(id),
          .claim_made = [this](const std::vector<ProcessIdentity>& makers) {
            return creations_.claim(makers);
          },
          .hook_started = [this, id](std::size_t index) { return hook_started(id, index); },
          .hook_finished =
              [this, id](std::size_t index, const CommandReport& ran) {
                core_.hook_finished(id, index, ran);
                journal_.stage({HookRun{.job = id, .index = index, .report = ran}});
              },
          .progress = [this, id](const CleanupReport& so_far) {
            CleanupReport kept = so_far;  // within the bound its record is written in
            bound_report(kept, cleanup_options_.max_report_bytes);
            core_.cleanup_progress(id, std::move(kept));
            if (const Job* job = core_.find(id)) journal_.stage({job_record(*job)});
          }};
}

namespace {

// A line per step of a finished cleanup, for the journal of the node.
void log_report(JobId id, const CleanupReport& report) {
  for (const auto& p : report.processes) {
    spdlog::info("job={} pid={} role={} outcome={}{} detail={:?}", id, p.pid, p.role,
                 to_string(p.outcome), p.leftover ? " leftover=true" : "", p.detail);
  }
  for (const auto& h : report.hooks) {
    spdlog::info("job={} hook={:?} outcome={} detail={:?}", id, h.argv.at(0),
                 to_string(h.outcome), h.detail);
  }
  for (const auto& p : report.paths) {
    spdlog::info("job={} {}={:?} outcome={} removed={}{} detail={:?}", id, to_string(p.kind),
                 p.path, to_string(p.outcome), p.removed, p.leftover ? " leftover=true" : "",
                 p.detail);
  }
  spdlog::info("job={} state=cleaned duration_ms={:.1f}", id, report.duration_ms);
}

}  // namespace

void Service::launch_cleanup(CleanupPlan plan) {
  JobId id = plan.job;
  std::vector<UniqueFd> pidfds = pidfds_for(plan);
  boost::asio::co_spawn(
      background_.get_executor(),
      run_cleanup(std::move(plan), std::move(pidfds), cleanup_context(id)),
      [this, id](std::exception_ptr error, CleanupReport report) {
        cleanups_.finished();
        if (error) {
          // The engine reports failures per step; an exception here is a bug. Record it anyway so
          // the job does not sit in `cleaning` forever.
          try {
            std::rethrow_exception(error);
          } catch (const std::exception& e) {
            spdlog::error("job={} cleanup aborted: {}", id, e.what());
          }
        }
        log_report(id, report);
        cleanup_finished(id, std::move(report));
        // What the cleanups just finished used (plans, full reports before their bound, a mass
        // death's burst) goes back to the system once none is running, off the loop.
        if (cleanups_.running() == 0) boost::asio::post(blocking_, [] { ::malloc_trim(0); });
      });
}

std::function<std::string()> Service::metrics_text() const {
  Gauges g{.processes = watch_.size(),
           .cleanups_running = cleanups_.running(),
           .event_subscribers = subscribers_.size(),
           .store_write_failures = journal_.failed_writes(),
           .proc_scans = kernel_.scans()};
  for (const Job* job : core_.visible_jobs(Caller{.uid = 0})) {
    ++g.jobs[job->state];
    if (job->state != JobState::cleaned) g.paths += job->paths.size();
  }
  return [g = std::move(g), metrics = metrics_, gpus = gpus(Caller{.uid = 0})]() mutable {
    g.gpus = gpus();
    return metrics.render(g);
  };
}

boost::asio::awaitable<void> Service::hook_started(JobId id, std::size_t index) {
  core_.hook_started(id, index);
  std::uint64_t seq = journal_.stage({HookRun{.job = id, .index = index}});
  if (seq == 0) co_return;  // no store: nothing outlives wardend to rerun it
  // A hook runs once what says it started is on disk, so that a restart never runs it again.
  // Where the write fails (a full disk), it runs all the same: cleaning comes first.
  boost::asio::steady_timer written(io_, boost::asio::steady_timer::time_point::max());
  bool done = false;
  journal_.when_written(seq, [&](const Written&) {
    done = true;
    written.cancel();
  });
  if (!done) co_await written.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
}

void Service::cleanup_finished(JobId id, CleanupReport report) {
  metrics_.cleanup_finished(report);
  for (const auto& d : report.discovered) creations_.remove(d.path);  // settled, one way or other
  std::vector<JobId> retired = core_.cleanup_finished(id, std::move(report), Clock::now());
  watch_.forget_job(id);
  homes_.forget(id);
  creations_.forget(id);  // what it made while its cleanup ran
  if (const Job* job = core_.find(id)) record_state(*job);
  if (!retired.empty()) {
    std::vector<Record> forgotten;
    for (JobId r : retired) forgotten.push_back(JobForgotten{r});
    journal_.stage(std::move(forgotten));
  }
}

void Service::record_state(const Job& job) {
  journal_.stage({job_record(job), event_record(job)});
  status_changed();
}

Service::Restored Service::restore(StoredState stored, TimePoint now) {
  Restored restored;
  std::vector<Record> forgotten;
  for (Job& job : stored.jobs) {
    if (job.state == JobState::running) restored.running.push_back(job.id);
    if (job.state == JobState::cleaning) restored.cleaning.push_back(job.id);
    for (JobId r : core_.restore(std::move(job), stored.next_id, now)) {
      forgotten.push_back(JobForgotten{r});
    }
  }
  if (!forgotten.empty()) journal_.stage(std::move(forgotten));
  return restored;
}

bool Service::rewatch(JobId id, const FindProcess& find, TimePoint now) {
  const Job& job = *core_.find(id);
  auto main = find(id, job.main);
  std::vector<std::pair<pid_t, std::optional<ProcessHandle>>> workers;
  for (const auto& w : job.workers) workers.emplace_back(w.identity.pid, find(id, w.identity));
  for (auto& [pid, handle] : workers) {
    if (handle) {
      watch_.watch(id, std::move(*handle));
    } else {
      core_.process_exited(id, pid, now);
    }
  }
  if (!main) {
    ExitEffect effect = core_.process_exited(id, job.main.pid, now);
    if (effect.cleanup) start_cleanup(std::move(*effect.cleanup));
    return false;
  }
  watch_.watch(id, std::move(*main));
  spdlog::info("job={} state=running resumed after restart; workers={}", id,
               core_.find(id)->live_workers());
  return true;
}

void Service::recover(StoredState stored, std::map<std::string, UniqueFd> pidfds) {
  const auto now = Clock::now();
  const std::size_t jobs = stored.jobs.size();
  Restored restored = restore(std::move(stored), now);
  // A pidfd systemd kept is certain; without one, the pid is checked against its identity.
  std::size_t from_systemd = 0;
  FindProcess find = [&](JobId id,
                         const ProcessIdentity& identity) -> std::optional<ProcessHandle> {
    auto kept = pidfds.find(Systemd::pidfd_name(id, identity));
    if (kept == pidfds.end()) return reopen(identity);
    ++from_systemd;
    if (pidfd_exited(kept->second.get())) return std::nullopt;
    return ProcessHandle{identity, std::move(kept->second)};
  };
  for (JobId id : restored.running) homes_.find_again(*core_.find(id));
  for (JobId id : restored.cleaning) homes_.find_again(*core_.find(id));
  std::size_t resumed = 0;
  for (JobId id : restored.running) resumed += rewatch(id, find, now) ? 1 : 0;
  for (JobId id : restored.cleaning) {
    spdlog::info("job={} cleanup interrupted by a restart; resuming it", id);
    start_cleanup(core_.resume_cleanup(id));
  }
  job_cgroups_.sweep();
  rearm_deadline();
  spdlog::info(
      "recovered jobs={} running={} main_died_while_down={} cleanups_resumed={} "
      "pidfds_from_systemd={}",
      jobs, resumed, restored.running.size() - resumed, restored.cleaning.size(), from_systemd);
}

}  // namespace warden
