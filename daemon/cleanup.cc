#include "daemon/cleanup.h"

#include <fmt/format.h>
#include <signal.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cerrno>
#include <cstring>
#include <memory>

#include "daemon/command_runner.h"
#include "daemon/diagnostics.h"
#include "daemon/process.h"
#include "daemon/process_tree.h"
#include "daemon/wall_clock.h"

namespace warden {
namespace asio = boost::asio;

namespace {

// Rescans for escapees are bounded: a job that forks faster than it can be stopped is still
// finished by SIGKILL rounds, and an endless loop here would hold the cleanup forever.
constexpr int kMaxScanRounds = 32;
// After SIGKILL, how often to look again for processes forked in the meantime.
constexpr Duration kRescanInterval = std::chrono::milliseconds(50);

double ms_between(TimePoint from, TimePoint to) {
  return std::chrono::duration<double, std::milli>(to - from).count();
}

// g++ 12 destroys some non-trivial temporaries of a co_await expression twice (a lambda's
// by-value captures, for one). So the coroutines here take callables and specs by reference to
// named locals of the awaiting frame, which outlive the await, and no co_await expression
// creates an object with a destructor.
template <class Fn>
asio::awaitable<std::invoke_result_t<Fn&>> call(Fn* fn) {
  co_return (*fn)();
}

// Runs `fn` on the blocking executor and resumes the caller on its own executor.
template <class Fn>
asio::awaitable<std::invoke_result_t<Fn&>> offload(const asio::any_io_executor& pool, Fn& fn) {
  co_return co_await asio::co_spawn(pool, call(&fn), asio::use_awaitable);
}

// The processes being ended. Exit handlers may run after the coroutine has finished (a cancelled
// wait still delivers its handler), so they share this by shared_ptr.
struct Termination {
  struct Entry {
    ProcessReport report;
    std::uint64_t start_time = 0;
    std::unique_ptr<asio::posix::stream_descriptor> pidfd;
    bool waiting = false;  // alive as far as we know; its exit is awaited
    bool sent_kill = false;
    std::optional<TimePoint> gone_at;
  };

  explicit Termination(const asio::any_io_executor& ex) : executor(ex), timer(ex) {}

  asio::any_io_executor executor;
  asio::steady_timer timer;
  std::vector<Entry> entries;
  std::size_t live = 0;
  CookieMemo cookie_memo;  // touched only by the scans, one at a time on the blocking executor
  TimePoint start = Clock::now();

  // Starts waiting for an alive process's exit; the pidfd identifies exactly that process.
  void add(ProcessReport report, std::uint64_t start_time, UniqueFd fd,
           const std::shared_ptr<Termination>& self) {
    std::size_t i = entries.size();
    Entry& e = entries.emplace_back();
    e.report = std::move(report);
    e.start_time = start_time;
    e.pidfd = std::make_unique<asio::posix::stream_descriptor>(executor, fd.release());
    e.waiting = true;
    ++live;
    arm(i, self);
  }

  // Waits for readiness of entry i's pidfd. A wakeup is trusted only if the process really has
  // exited: readiness of a pidfd has been seen without an exit, and believing it would leave a
  // stopped process behind as "terminated".
  void arm(std::size_t i, const std::shared_ptr<Termination>& self) {
    entries[i].pidfd->async_wait(asio::posix::descriptor_base::wait_read,
                                 [self, i](boost::system::error_code ec) {
                                   if (ec) return;
                                   if (pidfd_exited(self->entries[i].pidfd->native_handle())) {
                                     self->on_exit(i);
                                   } else {
                                     self->arm(i, self);
                                   }
                                 });
  }

  void add_gone(ProcessReport report) {
    report.outcome = Outcome::already_gone;
    report.leftover = false;
    if (report.detail.empty()) report.detail = "exited before cleanup";
    entries.push_back({.report = std::move(report)});
  }

  void on_exit(std::size_t i) {
    Entry& e = entries[i];
    if (e.gone_at || !e.waiting) return;
    e.gone_at = Clock::now();
    if (--live == 0) timer.cancel();
  }

  void signal(Entry& e, int sig) {
    if (!e.waiting || e.gone_at) return;
    if (sig == SIGKILL) e.sent_kill = true;
    int err = pidfd_signal(e.pidfd->native_handle(), sig);
    if (err == 0) return;
    if (err == ESRCH) return;  // exiting; its pidfd turns readable shortly
    e.waiting = false;
    --live;
    e.report.outcome = Outcome::failed;
    e.report.detail = fmt::format("signal {}: {}", ::sigabbrev_np(sig), std::strerror(err));
  }

  void signal_all(int sig) {
    for (auto& e : entries) signal(e, sig);
  }

  asio::awaitable<void> wait_for_exits(Duration bound) {
    if (live == 0) co_return;
    timer.expires_after(bound);
    co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
  }

  DiscoveryQuery query(const CleanupPlan& plan, pid_t self, const std::string& socket) const {
    DiscoveryQuery q{.owner = plan.uid,
                     .cookie = job_cookie(plan.job, socket),
                     .spared = plan.main_spared ? plan.main.pid : 0,
                     .self = self};
    for (const auto& e : entries) {
      if (e.waiting && !e.gone_at) q.members[e.report.pid] = e.start_time;
      if (e.waiting) q.leaders[e.report.pid] = e.start_time;
    }
    if (!plan.main_spared) q.leaders[plan.main.pid] = plan.main.start_time;
    return q;
  }
};

// Scans /proc (off the loop) for the job's processes not yet known, and adds each one found
// after verifying, through a pidfd, that it is still the process the scan saw. With `stop`, each
// is SIGSTOPped at once so that it cannot fork further. Returns how many were added.
asio::awaitable<std::size_t> find_more(const std::shared_ptr<Termination>& t,
                                       const CleanupPlan& plan, const CleanupContext& context,
                                       int first_signal) {
  auto query = t->query(plan, context.self, context.socket);
  auto scan = [&query, &t, owner = plan.uid] {
    return discover(scan_processes(owner != 0), query, read_environ, t->cookie_memo);
  };
  auto found = co_await offload(context.blocking, scan);
  std::size_t added = 0;
  for (const auto& d : found) {
    ProcessHandle handle;
    try {
      handle = open_process(d.pid);
    } catch (const Error&) {
      continue;  // already gone
    }
    if (handle.identity.start_time != d.start_time) continue;  // recycled since the scan
    t->add({.pid = d.pid, .role = "descendant", .leftover = plan.reason == JobState::ended,
            .detail = d.found_by},
           d.start_time, std::move(handle.pidfd), t);
    t->signal(t->entries.back(), first_signal);
    ++added;
  }
  co_return added;
}

asio::awaitable<std::vector<ProcessReport>> end_processes(const CleanupPlan& plan,
                                                          std::vector<UniqueFd>& pidfds,
                                                          const CleanupContext& context) {
  auto t = std::make_shared<Termination>(co_await asio::this_coro::executor);
  std::vector<ProcessReport> kept;
  for (std::size_t i = 0; i < plan.targets.size(); ++i) {
    const auto& target = plan.targets[i];
    ProcessReport report{.pid = target.identity.pid, .role = target.role,
                         .leftover = target.leftover};
    UniqueFd& fd = pidfds.at(i);
    if (target.keep) {
      report.outcome = Outcome::kept;
      report.detail = "policy: failure only";
      kept.push_back(std::move(report));
    } else if (target.exited || !fd || pidfd_exited(fd.get())) {
      t->add_gone(std::move(report));
    } else {
      t->add(std::move(report), target.identity.start_time, std::move(fd), t);
    }
  }

  // Freeze what is known, then look for the rest of the tree until a scan finds nothing new:
  // stopped processes cannot fork, so this converges.
  t->signal_all(SIGSTOP);
  bool frozen = false;
  for (int round = 0; round < kMaxScanRounds && !frozen; ++round) {
    frozen = co_await find_more(t, plan, context, SIGSTOP) == 0;
  }

  // SIGTERM reaches stopped processes but is only handled once they run again.
  if (plan.grace > Duration::zero()) {
    t->signal_all(SIGTERM);
    t->signal_all(SIGCONT);
    co_await t->wait_for_exits(plan.grace);
  }
  // Anything forked while handling SIGTERM is found and killed too, until nothing is left. With
  // no grace period nothing of the job has run since a freeze scan found nothing new (stopped
  // processes cannot fork), so that scan already confirmed the whole tree.
  const bool ran_since_freeze = plan.grace > Duration::zero() || !frozen;
  auto kill_deadline = Clock::now() + context.options.kill_timeout;
  for (int round = 0;; ++round) {
    t->signal_all(SIGKILL);
    std::size_t added = ran_since_freeze ? co_await find_more(t, plan, context, SIGKILL) : 0;
    if (t->live == 0 && added == 0) break;
    if (Clock::now() >= kill_deadline || round >= kMaxScanRounds) {
      co_await t->wait_for_exits(std::max(Duration::zero(), kill_deadline - Clock::now()));
      break;
    }
    co_await t->wait_for_exits(std::min(kRescanInterval, kill_deadline - Clock::now()));
  }

  std::vector<ProcessReport> reports;
  reports.reserve(t->entries.size() + kept.size());
  for (auto& e : t->entries) {
    if (e.waiting) {
      if (!e.gone_at) {
        e.report.outcome = Outcome::unkillable;
        e.report.detail = fmt::format("still alive {:.1f} s after SIGKILL (uninterruptible sleep?)",
                                      ms_between(t->start, Clock::now()) / 1000);
      } else {
        e.report.outcome = e.sent_kill ? Outcome::killed : Outcome::terminated;
      }
    }
    if (e.gone_at) e.report.elapsed_ms = ms_between(t->start, *e.gone_at);
    if (e.pidfd) e.pidfd->cancel();
    reports.push_back(std::move(e.report));
  }
  for (auto& k : kept) reports.push_back(std::move(k));
  co_return reports;
}

Diagnostics capture_diagnostics(const CleanupPlan& plan) {
  Diagnostics d;
  d.processes.push_back(snapshot_process(plan.main.pid, "main"));
  for (const auto& t : plan.targets) {
    if (t.exited || t.role == "main") continue;
    d.processes.push_back(snapshot_process(t.identity.pid, t.role));
  }
  return d;
}

// "{pid}" in any argument becomes the main process's pid.
CommandSpec with_pid(CommandSpec spec, pid_t pid) {
  for (auto& arg : spec.argv) {
    for (auto at = arg.find("{pid}"); at != std::string::npos; at = arg.find("{pid}", at)) {
      arg.replace(at, 5, std::to_string(pid));
    }
  }
  return spec;
}

}  // namespace

asio::awaitable<CleanupReport> run_cleanup(CleanupPlan plan, std::vector<UniqueFd> pidfds,
                                           CleanupContext context) {
  CleanupReport report;
  report.reason = plan.reason;
  report.started_unix_ms = unix_ms_now();
  auto start = Clock::now();
  RunAs user{.uid = plan.uid, .gid = plan.gid};
  std::vector<std::pair<std::string, std::string>> env{
      {"WARDEN_JOB", std::to_string(plan.job)}, {"WARDEN_REASON", std::string(to_string(plan.reason))}};

  if (plan.diagnose) {
    auto capture = [&plan] { return capture_diagnostics(plan); };
    report.diagnostics = co_await offload(context.blocking, capture);
    if (plan.diagnose_command) {
      CommandSpec command = with_pid(*plan.diagnose_command, plan.main.pid);
      report.diagnostics->command = co_await run_command(command, user, env);
    }
  }

  report.processes = co_await end_processes(plan, pidfds, context);

  for (const auto& hook : plan.hooks) {
    if (hook.keep) {
      report.hooks.push_back({.argv = hook.command.argv, .outcome = Outcome::kept,
                              .detail = "policy: failure only"});
      continue;
    }
    report.hooks.push_back(co_await run_command(hook.command, user, env));
  }

  // All paths in one hop to the worker thread: a hop per path costs more than a small file.
  auto remove_all = [&plan, &context] {
    std::vector<PathReport> reports;
    for (const auto& step : plan.paths) {
      if (step.keep) {
        reports.push_back({.kind = step.path.kind, .path = step.path.path,
                           .outcome = Outcome::kept, .detail = "policy: failure only"});
        continue;
      }
      PathReport removed = remove_path(context.options.paths, step.path, plan.uid);
      removed.leftover = step.leftover && removed.outcome == Outcome::removed;
      reports.push_back(std::move(removed));
    }
    return reports;
  };
  report.paths = co_await offload(context.blocking, remove_all);

  report.duration_ms = ms_between(start, Clock::now());
  co_return report;
}

}  // namespace warden
