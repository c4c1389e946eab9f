#include "daemon/cleanup.h"

#include <fmt/format.h>
#include <signal.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cerrno>
#include <cstring>
#include <memory>

#include "daemon/process.h"

namespace warden {
namespace asio = boost::asio;

namespace {

double ms_between(TimePoint from, TimePoint to) {
  return std::chrono::duration<double, std::milli>(to - from).count();
}

// Shared by the coroutine and the exit handlers, which may run after the coroutine has finished
// (a cancelled wait still delivers its handler), so they hold it by shared_ptr.
struct Termination {
  struct Entry {
    ProcessReport report;
    std::unique_ptr<asio::posix::stream_descriptor> pidfd;
    bool waiting = false;   // a signal was delivered and we wait for its exit
    bool sent_kill = false;
    std::optional<TimePoint> gone_at;
  };

  explicit Termination(const asio::any_io_executor& ex) : timer(ex) {}

  asio::steady_timer timer;
  std::vector<Entry> entries;
  std::size_t live = 0;
  TimePoint start = Clock::now();

  void on_exit(std::size_t i) {
    Entry& e = entries[i];
    if (e.gone_at) return;
    e.gone_at = Clock::now();
    if (--live == 0) timer.cancel();
  }

  // Sends `sig` to every process still being waited on (or, first time, to every live one).
  void signal_live(int sig) {
    for (auto& e : entries) {
      if (!e.waiting || e.gone_at) continue;
      if (sig == SIGKILL) e.sent_kill = true;
      int err = pidfd_signal(e.pidfd->native_handle(), sig);
      if (err == 0) continue;
      e.waiting = false;
      --live;
      if (err == ESRCH) {
        e.gone_at = Clock::now();
      } else {
        e.report.outcome = ProcessOutcome::failed;
        e.report.detail = std::string(sig == SIGKILL ? "SIGKILL: " : "SIGTERM: ") + std::strerror(err);
      }
    }
  }

  asio::awaitable<void> wait_for_exits(Duration bound) {
    if (live == 0) co_return;
    timer.expires_after(bound);
    co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
  }
};

}  // namespace

asio::awaitable<std::vector<ProcessReport>> terminate_processes(std::vector<ProcessToEnd> processes,
                                                                Duration grace,
                                                                Duration kill_timeout) {
  auto ex = co_await asio::this_coro::executor;
  auto t = std::make_shared<Termination>(ex);
  t->entries.resize(processes.size());

  for (std::size_t i = 0; i < processes.size(); ++i) {
    auto& p = processes[i];
    auto& e = t->entries[i];
    e.report.pid = p.target.identity.pid;
    e.report.role = p.target.role;
    e.report.leftover = p.target.leftover;
    e.report.outcome = ProcessOutcome::already_gone;
    if (p.target.exited || !p.pidfd || pidfd_exited(p.pidfd.get())) {
      e.report.leftover = false;
      e.report.detail = "exited before cleanup";
      continue;
    }
    e.pidfd = std::make_unique<asio::posix::stream_descriptor>(ex, p.pidfd.release());
    e.waiting = true;
    ++t->live;
  }

  // Arm the exit waits before signalling so that no exit goes unseen.
  for (std::size_t i = 0; i < t->entries.size(); ++i) {
    auto& e = t->entries[i];
    if (!e.waiting) continue;
    e.pidfd->async_wait(asio::posix::descriptor_base::wait_read,
                        [t, i](boost::system::error_code ec) {
                          if (!ec) t->on_exit(i);
                        });
  }

  if (grace > Duration::zero()) {
    t->signal_live(SIGTERM);
    co_await t->wait_for_exits(grace);
  }
  t->signal_live(SIGKILL);
  co_await t->wait_for_exits(kill_timeout);

  std::vector<ProcessReport> reports;
  reports.reserve(t->entries.size());
  for (auto& e : t->entries) {
    if (e.waiting) {
      if (!e.gone_at) {
        e.report.outcome = ProcessOutcome::unkillable;
        e.report.detail = fmt::format("still alive {:.1f} s after SIGKILL (uninterruptible sleep?)",
                                      ms_between(t->start, Clock::now()) / 1000);
      } else {
        e.report.outcome = e.sent_kill ? ProcessOutcome::killed : ProcessOutcome::terminated;
      }
    }
    if (e.gone_at) e.report.elapsed_ms = ms_between(t->start, *e.gone_at);
    if (e.pidfd) e.pidfd->cancel();
    reports.push_back(std::move(e.report));
  }
  co_return reports;
}

asio::awaitable<CleanupReport> run_cleanup(CleanupPlan plan, std::vector<UniqueFd> pidfds,
                                           CleanupOptions options) {
  CleanupReport report;
  report.reason = plan.reason;
  report.started_unix_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                               std::chrono::system_clock::now().time_since_epoch())
                               .count();
  auto start = Clock::now();

  std::vector<ProcessToEnd> processes;
  processes.reserve(plan.targets.size());
  for (std::size_t i = 0; i < plan.targets.size(); ++i) {
    processes.push_back({.target = std::move(plan.targets[i]), .pidfd = std::move(pidfds.at(i))});
  }
  report.processes = co_await terminate_processes(std::move(processes), plan.grace,
                                                  options.kill_timeout);

  report.duration_ms = ms_between(start, Clock::now());
  co_return report;
}

}  // namespace warden
