#include "world/cleanup.h"

#include <signal.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <memory>
#include <set>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "world/command_runner.h"
#include "world/diagnostics.h"
#include "world/discovery.h"
#include "world/process.h"
#include "world/process_tree.h"
#include "world/report_bound.h"
#include "core/wall_clock.h"

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

// Work that may go on beside the rest of a job's end, once none of its processes can run again.
using WhileDying = std::function<asio::awaitable<void>()>;

// The processes being ended. Exit handlers may run after the coroutine has finished (a cancelled
// wait still delivers its handler), so they share this by shared_ptr.
struct Termination {
  struct Entry {
    ProcessReport report;
    std::uint64_t start_time = 0;
    std::unique_ptr<asio::posix::stream_descriptor> pidfd;
    bool waiting = false;    // alive as far as we know; its exit is awaited
    bool in_cgroup = false;  // a member of the job's tracking cgroup: cgroup.kill reaches it
    bool sent_kill = false;
    std::optional<TimePoint> gone_at;
  };

  Termination(const asio::any_io_executor& ex, Kernel& k, const View* h)
      : executor(ex), timer(ex), kernel(k), home(h) {}

  asio::any_io_executor executor;
  asio::steady_timer timer;
  Kernel& kernel;
  // Where the job's processes live; a container job's reports carry its own numbering too.
  const View* home;
  std::vector<Entry> entries;
  std::size_t live = 0;
  std::set<std::string> busy_cgroups;  // the job's leaves still holding a process
  Cgroups* cgroups = nullptr;          // where they are; nullptr: none
  CookieMemo cookie_memo;  // touched only by the scans, one at a time on the blocking executor
  // The processes added while the job is stopped are named (their command lines read) off the
  // loop, all at once, before any is signalled (look_at_stopped); those found later at once.
  bool naming_later = true;
  TimePoint start = Clock::now();

  // Starts waiting for an alive process's exit; the pidfd identifies exactly that process.
  void add(ProcessReport report, std::uint64_t start_time, UniqueFd fd,
           const std::shared_ptr<Termination>& self, bool in_cgroup = false) {
    std::size_t i = entries.size();
    Entry& e = entries.emplace_back();
    e.report = std::move(report);
    e.report.start_time = start_time;
    if (e.report.command.empty() && !naming_later) {
      e.report.command = kernel.command_line(e.report.pid);
    }
    if (home != nullptr && !home->shares_pids()) e.report.local_pid = home->local_pid(e.report.pid);
    e.start_time = start_time;
    e.in_cgroup = in_cgroup;
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
                                   auto& e = self->entries[i];
                                   if (self->kernel.exited(e.pidfd->native_handle())) {
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

  bool done() const { return live == 0 && busy_cgroups.empty(); }

  void on_exit(std::size_t i) {
    Entry& e = entries[i];
    if (e.gone_at || !e.waiting) return;
    e.gone_at = Clock::now();
    if (--live == 0) look_at_cgroups();
    if (done()) timer.cancel();
  }

  void on_cgroup_empty(const std::string& leaf) {
    if (busy_cgroups.erase(leaf) == 1 && done()) timer.cancel();
  }

  // The kernel tells of a change of cgroup.events at most once per 10 ms (a freeze was one), so
  // the emptiness that follows the last exit can be told that much later: once no known process
  // is left, each busy leaf is read instead. One still populated holds a process nobody named
  // and is waited for.
  void look_at_cgroups() {
    if (cgroups == nullptr) return;
    for (auto it = busy_cgroups.begin(); it != busy_cgroups.end();) {
      if (cgroups->populated(*it)) {
        ++it;
        continue;
      }
      cgroups->forget_empty(*it);
      it = busy_cgroups.erase(it);
    }
  }

  // Whether a process of the job is alive outside the job's tracking cgroups (a registered pid
  // that could not be moved into one), or any at all without them: only a /proc scan finds what
  // such a process forks.
  bool runs_outside(bool tracked) const {
    return std::any_of(entries.begin(), entries.end(), [tracked](const Entry& e) {
      return e.waiting && !e.gone_at && !(tracked && e.in_cgroup);
    });
  }
  // Whether only a /proc scan can find the rest of the job. Without tracking cgroups always, even
  // with every known process gone: a main that died first leaves its session's and group's
  // members and its cookie's carriers, which nothing else names.
  bool needs_scan(bool tracked) const { return !tracked || runs_outside(tracked); }

  void signal(Entry& e, int sig) {
    if (!e.waiting || e.gone_at) return;
    if (sig == SIGKILL) e.sent_kill = true;
    int err = kernel.signal(e.pidfd->native_handle(), sig);
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
    if (done()) co_return;
    timer.expires_after(bound);
    co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
  }

  DiscoveryQuery query(const CleanupPlan& plan, pid_t self, const std::string& instance) const {
    DiscoveryQuery q{.owner = plan.uid,
                     .cookie = job_cookie(plan.job, instance),
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
  auto query = t->query(plan, context.self, context.instance);
  // Asked now, after this cleanup's last SIGSTOPs: a scan begun later shows its tree frozen.
  auto scan = [&query, &t, asked = Clock::now()] {
    return t->kernel.discover(query, asked, t->cookie_memo);
  };
  auto found = co_await offload(context.blocking, scan);
  std::size_t added = 0;
  for (const auto& d : found) {
    ProcessHandle handle;
    try {
      handle = t->kernel.open(d.pid);
    } catch (const Error&) {
      continue;  // already gone
    }
    if (handle.identity.start_time != d.start_time) continue;  // recycled since the scan
    t->add({.pid = d.pid,
            .role = "descendant",
            .leftover = plan.reason == JobState::ended,
            .detail = d.found_by},
           d.start_time, std::move(handle.pidfd), t);
    t->signal(t->entries.back(), first_signal);
    ++added;
  }
  co_return added;
}

// The job's tracking cgroups during one cleanup: the main's leaf and those of registered processes
// that live beneath other cgroups. A cgroup step that fails (a cgroup removed from under wardend,
// say) turns the rest of the cleanup into scans: slower, never less thorough.
struct Tracking {
  Cgroups* cgroups = nullptr;  // nullptr: not tracked (any more)
  std::vector<std::string> leaves;

  explicit operator bool() const { return cgroups != nullptr; }
  // The job's leaf that `cgroup` (a process's) is in or beneath; nullptr: none of the job's.
  const std::string* leaf_of(const std::optional<std::string>& cgroup) const {
    for (const auto& leaf : leaves) {
      if (cgroup_within(cgroup, leaf)) return &leaf;
    }
    return nullptr;
  }
  // `step(cgroups, leaf)` for each leaf.
  template <class Step>
  void each(Step step) {
    for (const auto& leaf : leaves) {
      attempt([&](Cgroups& c) { step(c, leaf); });
    }
  }
  template <class Step>
  void attempt(Step step) {
    if (!cgroups) return;
    try {
      step(*cgroups);
    } catch (const std::exception& e) {
      spdlog::warn("cgroup={} {}; cleaning the rest of the job by scanning /proc",
                   leaves.empty() ? "" : leaves.front(), e.what());
      cgroups = nullptr;
    }
  }
};

// Adds the members of the tracking cgroup not yet known. A pid read from cgroup.procs is
// verified through its pidfd to be still that member, so a recycled pid is never taken.
std::size_t add_members(const std::shared_ptr<Termination>& t, const CleanupPlan& plan,
                        Tracking& tracking) {
  std::vector<pid_t> pids;
  tracking.each([&](Cgroups& c, const std::string& leaf) {
    auto members = c.members(leaf);
    pids.insert(pids.end(), members.begin(), members.end());
  });
  if (!tracking) return 0;
  std::set<pid_t> known;
  for (const auto& e : t->entries) {
    if (e.waiting && !e.gone_at) known.insert(e.report.pid);
  }
  std::size_t added = 0;
  for (pid_t pid : pids) {
    if (known.contains(pid)) continue;
    ProcessHandle handle;
    try {
      handle = t->kernel.open(pid);
    } catch (const Error&) {
      continue;  // gone already
    }
    const std::string* leaf = tracking.leaf_of(tracking.cgroups->cgroup_of(pid));
    if (leaf == nullptr || t->kernel.exited(handle.pidfd.get())) continue;
    t->add({.pid = pid,
            .role = "descendant",
            .leftover = plan.reason == JobState::ended,
            .detail = "member of cgroup " + *leaf},
           handle.identity.start_time, std::move(handle.pidfd), t, /*in_cgroup=*/true);
    ++added;
  }
  return added;
}

// Puts the plan's targets in `t`: alive ones are waited on, exited ones reported gone; those kept
// by policy are returned, and leave the cgroup (as a spared main process does) so that ending its
// members does not reach them.
std::vector<ProcessReport> classify(const CleanupPlan& plan, std::vector<UniqueFd>& pidfds,
                                    const std::shared_ptr<Termination>& t, Tracking& tracking) {
  auto release = [&](pid_t pid) {
    if (!tracking) return;
    Cgroups& c = *tracking.cgroups;
    try {
      if (const std::string* leaf = tracking.leaf_of(c.cgroup_of(pid))) {
        c.move(pid, parent_cgroup(*leaf));
      }
    } catch (const std::exception&) {
    }
    // One that could not be moved out would die with the cgroup: end the job by scanning instead.
    if (tracking.leaf_of(c.cgroup_of(pid)) != nullptr) tracking.cgroups = nullptr;
  };
  if (plan.main_spared) release(plan.main.pid);
  // Who is in the job's leaves themselves: a read per leaf instead of one of /proc/PID/cgroup per
  // target (on the event loop, at a mass death, those reads were a quarter of its work). A target
  // not listed may still be in a cgroup beneath a leaf (a job inside the job), and is asked.
  std::set<pid_t> in_leaves;
  tracking.each([&](Cgroups& c, const std::string& leaf) {
    for (pid_t pid : c.members(leaf)) in_leaves.insert(pid);
  });
  auto member = [&](pid_t pid) {
    return tracking && (in_leaves.contains(pid) ||
                        tracking.leaf_of(tracking.cgroups->cgroup_of(pid)) != nullptr);
  };
  std::vector<ProcessReport> kept;
  for (std::size_t i = 0; i < plan.targets.size(); ++i) {
    const auto& target = plan.targets[i];
    ProcessReport report{.pid = target.identity.pid,
                         .start_time = target.identity.start_time,
                         .role = target.role,
                         .leftover = target.leftover};
    UniqueFd& fd = pidfds.at(i);
    if (target.keep) {
      report.outcome = Outcome::kept;
      report.detail = "policy: failure only";
      if (fd && !t->kernel.exited(fd.get())) release(target.identity.pid);
      kept.push_back(std::move(report));
    } else if (target.exited || !fd || t->kernel.exited(fd.get())) {
      t->add_gone(std::move(report));
    } else {
      bool in_cgroup = member(target.identity.pid);
      t->add(std::move(report), target.identity.start_time, std::move(fd), t, in_cgroup);
    }
  }
  return kept;
}

// Stops what `t` knows of the job and scans until a scan finds nothing new, SIGSTOPping each
// process found (stopped processes cannot fork, so this converges). Returns whether it converged
// within the bound.
asio::awaitable<bool> stop_and_scan(const std::shared_ptr<Termination>& t, const CleanupPlan& plan,
                                    const CleanupContext& context) {
  t->signal_all(SIGSTOP);
  for (int round = 0; round < kMaxScanRounds; ++round) {
    if (co_await find_more(t, plan, context, SIGSTOP) == 0) co_return true;
  }
  co_return false;
}

// Stops the job from forking: a tracked job's cgroup is frozen and its members taken; whatever
// lives outside it (or everything, without a cgroup) is stopped and the tree scanned to a fixed
// point. Returns whether the scans converged.
asio::awaitable<bool> freeze(const std::shared_ptr<Termination>& t, const CleanupPlan& plan,
                             const CleanupContext& context, Tracking& tracking) {
  tracking.each([](Cgroups& c, const std::string& leaf) { c.freeze(leaf, true); });
  add_members(t, plan, tracking);
  if (!t->needs_scan(bool(tracking))) co_return true;
  co_return co_await stop_and_scan(t, plan, context);
}

// SIGTERM to every process, then they run again (thawed, SIGCONT) for the grace period, or until
// all are gone.
asio::awaitable<void> terminate(const std::shared_ptr<Termination>& t, const CleanupPlan& plan,
                                Tracking& tracking) {
  // SIGTERM reaches stopped processes but is only handled once they run again.
  t->signal_all(SIGTERM);
  tracking.each([](Cgroups& c, const std::string& leaf) { c.freeze(leaf, false); });
  t->signal_all(SIGCONT);
  co_await t->wait_for_exits(plan.grace);
}

// SIGKILL to what is left: a tracked job's cgroups all at once (frozen first, so that what was
// forked during the grace period is named in the report), anything outside them through pidfds.
// Where part of the job outside the cgroups has run since the freeze and still lives
// (`ran_outside`), it is stopped and rescanned to a fixed point before anything is killed: a child
// forked during the grace whose parent was killed first would be orphaned before the look, and
// then only its group, session or cookie could name it. Waits until all are gone or the kill bound
// passes; once every process of the job has been sent SIGKILL and none can fork another,
// `meanwhile` (if any) runs beside that wait. Returns whether it ran.
asio::awaitable<bool> escalate(const std::shared_ptr<Termination>& t, const CleanupPlan& plan,
                               const CleanupContext& context, Tracking& tracking, bool ran_outside,
                               const WhileDying* meanwhile) {
  using namespace asio::experimental::awaitable_operators;
  tracking.each([](Cgroups& c, const std::string& leaf) { c.freeze(leaf, true); });
  add_members(t, plan, tracking);
  // A stop that did not converge (a fork faster than the scans) still ends in SIGKILL rounds
  // with rescans for what the unstopped part forks meanwhile.
  bool forking = ran_outside && !co_await stop_and_scan(t, plan, context);
  tracking.each([](Cgroups& c, const std::string& leaf) { c.kill(leaf); });
  auto kill_deadline = Clock::now() + context.options.kill_timeout;
  std::size_t added = 0;
  for (int round = 0;; ++round) {
    t->signal_all(SIGKILL);
    bool look = forking && (added > 0 || t->runs_outside(bool(tracking)));
    added = look ? co_await find_more(t, plan, context, SIGKILL) : 0;
    if (t->done() && added == 0) co_return false;
    const bool all_killed = added == 0 && !(forking && t->runs_outside(bool(tracking)));
    if (all_killed || Clock::now() >= kill_deadline || round >= kMaxScanRounds) {
      auto exits = t->wait_for_exits(std::max(Duration::zero(), kill_deadline - Clock::now()));
      if (!all_killed || meanwhile == nullptr) {
        co_await std::move(exits);
        co_return false;
      }
      auto beside = (*meanwhile)();  // named: see the note on g++ 12 above
      co_await (std::move(exits) && std::move(beside));
      co_return true;
    }
    co_await t->wait_for_exits(std::min(kRescanInterval, kill_deadline - Clock::now()));
  }
}

// The processes' report as it reads once SIGTERM is sent, each signalled one counted as ended by
// it: recorded then, a cleanup that a restart interrupts during the grace keeps, for what
// exited meanwhile, `terminated` instead of `already_gone` (CleanupPlan::earlier); what still
// lives is ended again and reported as that second cleanup finds it.
std::vector<ProcessReport> signalled(const Termination& t, const std::vector<ProcessReport>& kept) {
  std::vector<ProcessReport> reports;
  reports.reserve(t.entries.size() + kept.size());
  for (const auto& e : t.entries) {
    reports.push_back(e.report);
    if (e.waiting) reports.back().outcome = e.sent_kill ? Outcome::killed : Outcome::terminated;
  }
  reports.insert(reports.end(), kept.begin(), kept.end());
  return reports;
}

std::vector<ProcessReport> report(Termination& t, std::vector<ProcessReport> kept) {
  std::vector<ProcessReport> reports;
  reports.reserve(t.entries.size() + kept.size());
  for (auto& e : t.entries) {
    if (e.waiting) {
      if (!e.gone_at) {
        e.report.outcome = Outcome::unkillable;
        e.report.detail = fmt::format("still alive {:.1f} s after SIGKILL (uninterruptible sleep?)",
                                      ms_between(t.start, Clock::now()) / 1000);
      } else {
        e.report.outcome = e.sent_kill ? Outcome::killed : Outcome::terminated;
      }
    }
    if (e.gone_at) e.report.elapsed_ms = ms_between(t.start, *e.gone_at);
    if (e.pidfd) e.pidfd->cancel();
    reports.push_back(std::move(e.report));
  }
  for (auto& k : kept) reports.push_back(std::move(k));
  return reports;
}

// The report's GPU part, once the processes are gone: what each held, what was released and
// who else still holds those GPUs.
asio::awaitable<void> report_gpus(const GpuAccount& account, const CleanupPlan& plan,
                                  const CleanupContext& context, CleanupReport& out) {
  if (account.held.empty()) co_return;
  std::vector<pid_t> alive;  // of the job, and still holding what they held
  if (plan.main_spared) alive.push_back(plan.main.pid);
  for (auto& p : out.processes) {
    p.gpus = gpu_uses(account, p.pid);
    if (p.outcome == Outcome::unkillable || p.outcome == Outcome::kept) alive.push_back(p.pid);
  }
  auto settle = [&account, &alive, gpus = context.gpus.get()] {
    return settle_gpus(*gpus, account, alive);
  };
  out.gpus = co_await offload(context.blocking, settle);
  out.gpu_note = account.before.note;
}

// What the look at the job's stopped processes found.
struct Looked {
  std::vector<HeldObject> held;  // on the allowed roots, with `discover`
  GpuAccount gpus;               // which GPUs each held (none on a node without GPUs)
};

// Reads, off the loop, what the job's stopped processes are: the GPUs they hold, first, before any
// is ended; their command lines, for the report (a dead process has none; on the loop, at 18 µs
// each, they were most of the step that sorts a 64-worker job's targets); and with `discover` what
// they hold open or map on the allowed roots (discovery.h). Even the look for GPU device nodes
// stays off the loop: a glob per cleanup was up to 8 % of the loop's work at a mass death. With
// `kill_as_read` (no grace period, and the whole job frozen where only SIGKILL can follow) each is
// sent SIGKILL as soon as it has been read: its exit overlaps the reading of the rest, which for
// processes of a large image took as long as all the exits.
asio::awaitable<Looked> look_at_stopped(Termination& t, const CleanupContext& context,
                                        bool discover, bool kill_as_read) {
  std::vector<std::size_t> alive;  // entries
  std::vector<pid_t> pids;
  std::vector<int> pidfds;
  std::vector<char> unnamed;
  for (std::size_t i = 0; i < t.entries.size(); ++i) {
    const auto& e = t.entries[i];
    if (!e.waiting || e.gone_at) continue;
    alive.push_back(i);
    pids.push_back(e.report.pid);
    pidfds.push_back(e.pidfd->native_handle());
    unnamed.push_back(e.report.command.empty());
  }
  std::vector<std::string> names(alive.size());
  auto read = [&, &kernel = t.kernel](std::size_t k) {
    if (unnamed[k]) names[k] = kernel.command_line(pids[k]);
    if (kill_as_read) kernel.signal(pidfds[k], SIGKILL);
  };
  auto look = [&, &roots = context.options.paths.allowed_roots, gpus = context.gpus.get()] {
    Looked out;
    if (gpus != nullptr) out.gpus = account_gpus(*gpus, pids);
    if (discover && !pids.empty()) {
      out.held = read_held_objects(pids, roots, MapsReader::best, read);
    } else {
      for (std::size_t k = 0; k < pids.size(); ++k) read(k);
    }
    return out;
  };
  Looked looked = co_await offload(context.blocking, look);
  for (std::size_t k = 0; k < alive.size(); ++k) {
    auto& e = t.entries[alive[k]];
    if (!names[k].empty()) e.report.command = std::move(names[k]);
    e.sent_kill = e.sent_kill || kill_as_read;
  }
  t.naming_later = false;
  co_return looked;
}

// One cleanup's processes being ended: what it knows of them and how they are tracked.
struct Ending {
  std::shared_ptr<Termination> t;
  Tracking tracking;
  std::vector<ProcessReport> kept;  // spared by policy: not ended, reported as kept
  bool converged = true;            // the freeze stopped all it found
  // No grace period, and the whole job frozen in its cgroups: nothing but SIGKILL lies ahead.
  bool frozen_for_good = false;
};

// The rest of ending a frozen job: the look at what its processes hold (into `held`), the grace
// period, SIGKILL and the wait for the last exits (`meanwhile` beside that wait where it may run,
// see escalate), the leaves removed and the report. Returns whether `meanwhile` ran.
asio::awaitable<bool> finish_processes(Ending& e, const CleanupPlan& plan,
                                       const CleanupContext& context, bool discover,
                                       std::vector<HeldObject>& held, CleanupReport& out,
                                       const WhileDying* meanwhile) {
  const auto& t = e.t;
  Looked looked = co_await look_at_stopped(*t, context, discover, e.frozen_for_good);
  held = std::move(looked.held);
  const GpuAccount gpus = std::move(looked.gpus);
  if (discover) {
    spdlog::debug("job={} discovery: {} objects held on the allowed roots", plan.job, held.size());
  }
  // What is still alive outside the cgroups after the grace may have forked meanwhile, and is
  // stopped and looked at again before SIGKILL (escalate); without a grace period nothing ran
  // since the freeze's scans, unless they could not stop the tree. Where everything exited during
  // the grace no look follows: a child forked by a process that then obeyed SIGTERM is left to
  // its group, session or cookie being found by a later cleanup of the node (`wardenctl check`
  // names a GPU holder). One more scan per cleanup made a 200-job mass death in scan tracking take
  // 10.4 s instead of about 1 s.
  if (plan.grace > Duration::zero()) {
    if (context.progress) {
      out.processes = signalled(*t, e.kept);
      context.progress(out);
    }
    co_await terminate(t, plan, e.tracking);
  }
  const bool ran_outside = !e.converged || (plan.grace > Duration::zero() && t->live > 0 &&
                                            t->runs_outside(bool(e.tracking)));
  const bool ran = co_await escalate(t, plan, context, e.tracking, ran_outside, meanwhile);

  if (!plan.cgroup.empty() && context.cgroups != nullptr) {
    // A member that outlived SIGKILL keeps its leaf; the next start of wardend tries again.
    for (const auto& leaf : e.tracking.leaves) {
      context.cgroups->forget_empty(leaf);
      if (!t->busy_cgroups.contains(leaf) || !context.cgroups->populated(leaf)) {
        context.cgroups->remove(leaf);
      }
    }
  }
  out.processes = report(*t, std::move(e.kept));
  co_await report_gpus(gpus, plan, context, out);
  co_return ran;
}

// `held`: what discovery found the job's processes holding while they were stopped. `meanwhile`
// runs once nothing of the job can run again: with no grace period, from the moment the whole
// job is frozen in its cgroups (it is killed frozen); else beside the wait for the last exits,
// once every process has been sent SIGKILL. Returns whether it ran.
asio::awaitable<bool> end_processes(const CleanupPlan& plan, std::vector<UniqueFd>& pidfds,
                                    const CleanupContext& context, bool discover,
                                    std::vector<HeldObject>& held, CleanupReport& out,
                                    const WhileDying* meanwhile) {
  using namespace asio::experimental::awaitable_operators;
  // Not in one initializer: g++ 12 mishandles a co_await among temporaries (the note above).
  const auto executor = co_await asio::this_coro::executor;
  Ending e{.t = std::make_shared<Termination>(executor, *context.kernel, context.home.get()),
           .tracking = {.cgroups = plan.cgroup.empty() ? nullptr : context.cgroups}};
  Tracking& tracking = e.tracking;
  if (!plan.cgroup.empty()) tracking.leaves.push_back(plan.cgroup);
  tracking.leaves.insert(tracking.leaves.end(), plan.more_cgroups.begin(), plan.more_cgroups.end());
  // wardend may have been started from inside the job (a test, a user's own wardend): it must
  // never freeze or kill itself, and the scan knows to leave it alone.
  tracking.attempt([&](Cgroups& c) {
    if (tracking.leaf_of(c.cgroup_of(context.self)) != nullptr) tracking.cgroups = nullptr;
  });
  e.kept = classify(plan, pidfds, e.t, tracking);
  // Done means the cgroups are empty too: cgroup.events says so, on the event loop, or a look
  // once the last known process is gone (look_at_cgroups).
  e.t->cgroups = tracking.cgroups;
  tracking.each([t = e.t](Cgroups& c, const std::string& leaf) {
    t->busy_cgroups.insert(leaf);
    c.when_empty(leaf, [t, leaf] { t->on_cgroup_empty(leaf); });
  });

  e.converged = co_await freeze(e.t, plan, context, tracking);
  e.frozen_for_good = plan.grace == Duration::zero() && e.converged && tracking &&
                      !e.t->runs_outside(true);
  const bool beside_the_end = meanwhile != nullptr && e.frozen_for_good;
  // Named, both: see the note on g++ 12 above.
  auto ending = finish_processes(e, plan, context, discover, held, out,
                                 beside_the_end ? nullptr : meanwhile);
  if (!beside_the_end) co_return co_await std::move(ending);
  auto beside = (*meanwhile)();
  co_await (std::move(ending) && std::move(beside));
  co_return true;
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

// Adds to what the job held what it made and did not hold any more, each object once.
void add_created(std::vector<HeldObject>& held, std::vector<HeldObject> created) {
  std::set<std::pair<dev_t, ino_t>> seen;
  for (const auto& h : held) seen.emplace(h.dev, h.ino);
  for (auto& c : created) {
    if (seen.emplace(c.dev, c.ino).second) held.push_back(std::move(c));
  }
}

// The processes a cleanup ended (or found gone), by identity.
std::vector<ProcessIdentity> identities(const std::vector<ProcessReport>& processes) {
  std::vector<ProcessIdentity> out;
  for (const auto& p : processes) {
    if (p.start_time != 0) out.push_back({.pid = p.pid, .start_time = p.start_time});
  }
  return out;
}

// A resumed cleanup finds gone what the interrupted one ended or removed: those keep the outcome
// they had then (terminated, killed, removed, with the bytes freed), and a process it ended that
// nothing names any more (a member of the job's cgroup, not registered) is listed again.
void keep_earlier_outcomes(CleanupReport& report, const CleanupReport& earlier) {
  std::map<std::pair<pid_t, std::uint64_t>, const ProcessReport*> ended;
  for (const auto& p : earlier.processes) {
    if (p.outcome != Outcome::already_gone) ended[{p.pid, p.start_time}] = &p;
  }
  for (auto& p : report.processes) {
    auto it = ended.find({p.pid, p.start_time});
    if (it == ended.end()) continue;
    if (p.outcome == Outcome::already_gone) p = *it->second;
    ended.erase(it);
  }
  for (const auto& [key, p] : ended) report.processes.push_back(*p);
  std::map<std::pair<PathKind, std::string>, const PathReport*> removed;
  for (const auto& p : earlier.paths) {
    if (p.outcome == Outcome::removed) removed[{p.kind, p.path}] = &p;
  }
  for (auto& p : report.paths) {
    auto it = removed.find({p.kind, p.path});
    if (it != removed.end() && p.outcome == Outcome::already_gone) p = *it->second;
  }
}

// What the report's removals and GPU releases gave back, by kind.
Reclaimed tally_reclaimed(const CleanupReport& report) {
  Reclaimed r;
  for (const auto* paths : {&report.paths, &report.discovered}) {
    for (const auto& p : *paths) {
      if (p.outcome != Outcome::removed) continue;
      bool shm = info_of(p.kind).shm;
      (shm ? r.shm_bytes : r.file_bytes) += p.bytes.value_or(0);
    }
  }
  for (const auto& g : report.gpus) r.gpu_bytes += g.released_bytes.value_or(0);
  return r;
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

constexpr const char* kHomeGone =
    "the job's container is gone and wardend, restarted since, holds no way into it";
constexpr const char* kHookInterrupted =
    "interrupted: wardend stopped while this hook ran; hooks run at most once, so it was not "
    "run again";

// The steps of one cleanup after its processes, and what they share: who runs the job's commands
// and where. A container job's commands run in its file tree; a stall's diagnose command in its
// PID namespace too (the job is alive then), so that "{pid}" and /proc agree.
struct Steps {
  Steps(const CleanupPlan& plan, CleanupContext& context)
      : plan(plan),
        context(context),
        home(context.home.get()),
        place(home != nullptr && !home->shares_paths() ? Place{.root = home->root()} : Place{}),
        user{.uid = plan.uid, .gid = plan.gid},
        env{{"WARDEN_JOB", std::to_string(plan.job)},
            {"WARDEN_REASON", std::string(to_string(plan.reason))}} {}

  const CleanupPlan& plan;
  CleanupContext& context;
  const View* home;
  Place place;
  RunAs user;
  std::vector<std::pair<std::string, std::string>> env;

  // A stalled job, before anything is ended: its processes' states, and the job's own command.
  asio::awaitable<void> diagnose(CleanupReport& report) {
    auto capture = [this] { return capture_diagnostics(plan); };
    report.diagnostics = co_await offload(context.blocking, capture);
    if (!plan.diagnose_command || home == nullptr) co_return;
    Place inside = place;
    inside.pid_ns = home->pid_namespace();
    pid_t pid = home->local_pid(plan.main.pid).value_or(plan.main.pid);
    CommandSpec command = with_pid(*plan.diagnose_command, pid);
    report.diagnostics->command = co_await run_command(command, user, env, inside);
  }

  // Each hook at most once: one that ended before a restart keeps its report, one a restart
  // interrupted is reported so, and each is recorded as started before it starts.
  asio::awaitable<void> run_hooks(CleanupReport& report) {
    for (std::size_t i = 0; i < plan.hooks.size(); ++i) {
      const HookStep& hook = plan.hooks[i];
      if (hook.finished) {
        report.hooks.push_back(*hook.finished);
        continue;
      }
      if (hook.keep || home == nullptr || hook.interrupted) {
        report.hooks.push_back(
            {.argv = hook.command.argv,
             .outcome = hook.keep ? Outcome::kept : Outcome::failed,
             .detail = hook.keep            ? "policy: failure only"
                       : hook.interrupted   ? std::string(kHookInterrupted)
                                            : std::string(kHomeGone)});
        continue;
      }
      if (context.hook_started) {
        auto recorded = context.hook_started(i);  // named: see the note on g++ 12 above
        co_await std::move(recorded);
      }
      CommandReport ran = co_await run_command(hook.command, user, env, place);
      if (context.hook_finished) context.hook_finished(i, ran);
      report.hooks.push_back(std::move(ran));
    }
  }

  // Every registered path, on the worker thread in one hop: a hop per path costs more than a
  // small file.
  std::vector<PathReport> remove_paths() const {
    std::vector<PathReport> reports;
    for (const auto& step : plan.paths) {
      if (step.keep || home == nullptr) {
        reports.push_back({.kind = step.path.kind,
                           .path = step.path.path,
                           .outcome = step.keep ? Outcome::kept : Outcome::failed,
                           .detail = step.keep ? "policy: failure only" : kHomeGone});
        continue;
      }
      PathReport removed = remove_path(context.options.paths, home->root(), step.path, plan.uid);
      removed.leftover = step.leftover && removed.outcome == Outcome::removed;
      reports.push_back(std::move(removed));
    }
    return reports;
  }

  // What the job held or made and never registered, removed or kept by discovery's rules once
  // its processes are gone.
  asio::awaitable<void> settle_discovered(Discover mode, std::vector<HeldObject>& held,
                                          CleanupReport& report) {
    if (home == nullptr) co_return;
    // What the job made and closed is named in wardend's paths, which are the job's only where
    // it shares them.
    if (home->shares_paths()) {
      add_created(held, std::move(context.created));
      if (context.claim_made) add_created(held, context.claim_made(identities(report.processes)));
    }
    if (held.empty()) co_return;
    // What was removed is on record before the look, which may take a while.
    if (context.progress) context.progress(report);
    DiscoveryRules rules{.mode = mode,
                         .owner = plan.uid,
                         .created_unix_ms = to_unix_ms(plan.created),
                         .self = context.self};
    for (const auto& step : plan.paths) {
      if (info_of(step.path.kind).pattern) {
        rules.globs.push_back(step.path.path);
      } else if (step.path.kind == PathKind::dir) {
        rules.dirs.push_back(step.path.path);
      } else {
        rules.registered.push_back(step.path.identity);
      }
    }
    auto settle = [&held, &rules, this] {
      return warden::settle_discovered(held, rules, context.options.paths, home->root());
    };
    report.discovered = co_await offload(context.blocking, settle);
  }
};

}  // namespace

asio::awaitable<CleanupReport> run_cleanup(CleanupPlan plan, std::vector<UniqueFd> pidfds,
                                           CleanupContext context) {
  CleanupReport report;
  report.reason = plan.reason;
  report.started_unix_ms = unix_ms_now();
  auto start = Clock::now();
  Steps steps(plan, context);

  if (plan.diagnose) co_await steps.diagnose(report);
  const Discover discover = plan.discover.value_or(context.options.discover);
  std::vector<HeldObject> held;
  // The paths go after the hooks, which may want them. Without hooks they go as soon as none of
  // the job's processes can run again to make or use a file (end_processes says when), beside the
  // rest of their end: removing a file that a dying process still has open or mapped is what
  // unlink is for.
  auto remove_all = [&steps] { return steps.remove_paths(); };
  WhileDying remove_paths = [&]() -> asio::awaitable<void> {
    report.paths = co_await offload(context.removals, remove_all);
  };
  const bool removed =
      co_await end_processes(plan, pidfds, context,
                             discover != Discover::off && steps.home != nullptr, held, report,
                             plan.hooks.empty() ? &remove_paths : nullptr);
  if (!removed) {
    // What ended is on record before the hooks and the removal, which may take a while.
    if (context.progress) context.progress(report);
    co_await steps.run_hooks(report);
    report.paths = co_await offload(context.removals, remove_all);
  }
  if (discover != Discover::off) co_await steps.settle_discovered(discover, held, report);

  if (plan.earlier) keep_earlier_outcomes(report, *plan.earlier);
  report.reclaimed = tally_reclaimed(report);
  bound_report(report, context.options.max_report_bytes);
  report.duration_ms = ms_between(start, Clock::now());
  co_return report;
}

}  // namespace warden
