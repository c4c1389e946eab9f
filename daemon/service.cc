#include "daemon/service.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <boost/asio/co_spawn.hpp>

namespace warden {
namespace {

// Steady time as wall-clock milliseconds since the epoch, for people and other machines.
std::int64_t to_unix_ms(TimePoint t) {
  auto wall = std::chrono::system_clock::now() -
              std::chrono::duration_cast<std::chrono::system_clock::duration>(Clock::now() - t);
  return std::chrono::duration_cast<std::chrono::milliseconds>(wall.time_since_epoch()).count();
}

}  // namespace

Service::Service(boost::asio::io_context& io, ServiceOptions options)
    : io_(io),
      cleanup_options_(options.cleanup),
      socket_(options.socket),
      core_(options.limits),
      watch_(io.get_executor(), [this](JobId job, pid_t pid) { on_process_exit(job, pid); }),
      deadline_timer_(io) {}

JobId Service::register_job(const Caller& caller, const RegisterJobRequest& request) {
  ProcessHandle main = open_process(request.pid);
  JobSpec spec{.name = request.name,
               .heartbeat = from_seconds(request.heartbeat_s),
               .grace = from_seconds(request.grace_s),
               .kill_main_on_stall = request.kill_main_on_stall,
               .diagnose = request.diagnose};
  JobId id = core_.register_job(caller, std::move(spec), main.identity, Clock::now());
  spdlog::info("job={} state=running name={:?} uid={} pid={} heartbeat_s={} grace_s={}", id,
               request.name, caller.uid, request.pid, request.heartbeat_s, request.grace_s);
  watch_.watch(id, std::move(main));
  rearm_deadline();
  return id;
}

ProcessIdentity Service::add_process(const Caller& caller, const AddProcessRequest& request) {
  ProcessHandle process = open_process(request.pid);
  core_.add_process(caller, request.job, process.identity, request.policy);
  ProcessIdentity identity = process.identity;
  spdlog::debug("job={} added pid={} start_time={}", request.job, identity.pid, identity.start_time);
  watch_.watch(request.job, std::move(process));
  return identity;
}

std::string Service::add_path(const Caller& caller, const AddPathRequest& request) {
  // Checking the job first spares a stranger's request the file-system work.
  core_.visible_job(caller, request.job);
  TrackedPath path = resolve_path(cleanup_options_.paths, request.kind, request.path);
  path.policy = request.policy;
  std::string canonical = path.path;
  core_.add_path(caller, request.job, std::move(path));
  spdlog::debug("job={} added {}={:?} policy={}", request.job, to_string(request.kind), canonical,
                to_string(request.policy));
  return canonical;
}

void Service::add_hook(const Caller& caller, const AddHookRequest& request) {
  core_.add_hook(caller, request.job, {.command = request.hook, .policy = request.policy});
  spdlog::debug("job={} added hook={:?}", request.job, request.hook.argv[0]);
}

std::optional<Duration> Service::heartbeat(const Caller& caller, const HeartbeatRequest& request) {
  auto now = Clock::now();
  auto deadline = core_.heartbeat(caller, request.job, now);
  if (!deadline) return std::nullopt;
  // A beat only ever moves a deadline later, so the armed timer stays valid; it re-arms when it fires.
  return *deadline - now;
}

void Service::end_job(const Caller& caller, const EndJobRequest& request) {
  start_cleanup(core_.end_job(caller, request.job, request.ok));
  rearm_deadline();
}

std::vector<JobStatus> Service::status(const Caller& caller, const StatusRequest& request) const {
  std::vector<JobStatus> out;
  if (request.job) {
    out.push_back(to_status(core_.visible_job(caller, *request.job)));
  } else {
    for (const Job* job : core_.visible_jobs(caller)) out.push_back(to_status(*job));
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

void Service::rearm_deadline() {
  auto next = core_.next_deadline();
  if (!next) {
    if (armed_deadline_) deadline_timer_.cancel();
    armed_deadline_.reset();
    return;
  }
  // An earlier-armed timer is kept: when it fires, expire() finds nothing due and it re-arms.
  if (armed_deadline_ && *armed_deadline_ <= *next) return;
  armed_deadline_ = next;
  deadline_timer_.expires_at(*next);
  deadline_timer_.async_wait([this](boost::system::error_code ec) { on_deadline(ec); });
}

void Service::on_deadline(boost::system::error_code ec) {
  if (ec) return;  // re-armed or cancelled
  armed_deadline_.reset();
  for (auto& plan : core_.expire(Clock::now())) start_cleanup(std::move(plan));
  rearm_deadline();
}

void Service::start_cleanup(CleanupPlan plan) {
  spdlog::info("job={} state=cleaning reason={} detail={:?} targets={}", plan.job,
               to_string(plan.reason), core_.find(plan.job)->reason_detail, plan.targets.size());

  std::vector<UniqueFd> pidfds;
  pidfds.reserve(plan.targets.size());
  for (const auto& target : plan.targets) {
    int fd = watch_.pidfd(plan.job, target.identity.pid);
    pidfds.push_back(fd >= 0 ? dup_fd(fd) : UniqueFd());
  }

  JobId id = plan.job;
  ++cleanups_running_;
  boost::asio::co_spawn(
      io_,
      run_cleanup(std::move(plan), std::move(pidfds),
                  {.options = cleanup_options_, .blocking = blocking_.get_executor(),
                   .self = ::getpid(), .socket = socket_}),
      [this, id](std::exception_ptr error, CleanupReport report) {
        --cleanups_running_;
        if (error) {
          // The engine reports failures per step; an exception here is a bug. Record it anyway so
          // the job does not sit in `cleaning` forever.
          try {
            std::rethrow_exception(error);
          } catch (const std::exception& e) {
            spdlog::error("job={} cleanup aborted: {}", id, e.what());
          }
        }
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
        core_.cleanup_finished(id, std::move(report), Clock::now());
        watch_.forget_job(id);
      });
}

JobStatus Service::to_status(const Job& job) const {
  JobStatus s{.id = job.id,
              .name = job.spec.name,
              .uid = job.uid,
              .state = job.state,
              .reason = job.reason,
              .reason_detail = job.reason_detail,
              .main_pid = job.main.pid,
              .main_start_time = job.main.start_time,
              .heartbeat_s = to_seconds(job.spec.heartbeat),
              .grace_s = to_seconds(job.spec.grace),
              .created_unix_ms = to_unix_ms(job.created),
              .report = job.report};
  if (job.last_beat) s.last_beat_unix_ms = to_unix_ms(*job.last_beat);
  s.workers.reserve(job.workers.size());
  for (const auto& w : job.workers) {
    s.workers.push_back({.pid = w.identity.pid,
                         .start_time = w.identity.start_time,
                         .exited = w.exited_at.has_value(),
                         .policy = w.policy});
  }
  for (const auto& p : job.paths) {
    s.paths.push_back({.kind = p.kind, .path = p.path, .policy = p.policy});
  }
  s.hooks = job.hooks.size();
  return s;
}

}  // namespace warden
