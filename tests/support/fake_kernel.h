// FakeKernel: the Kernel seam in memory, for unit tests of the cleanup engine's escalation. Its
// processes are made up, each with a fate: how it answers SIGTERM and SIGKILL. Each pidfd it
// hands out is an eventfd that turns readable when the process "exits", so the engine waits on it
// exactly as on a real pidfd. Every signal is recorded in order.
#pragma once

#include <signal.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdint>
#include <deque>
#include <map>
#include <string>
#include <vector>

#include "world/kernel.h"
#include "warden/errors.h"

namespace warden::testing {

class FakeKernel final : public Kernel {
 public:
  enum class Fate {
    obeys,         // SIGTERM ends it
    ignores_term,  // only SIGKILL ends it
    never_dies,    // nothing ends it (uninterruptible sleep in a driver)
  };

  ~FakeKernel() override {
    for (auto& [pid, p] : processes_) ::close(p.exit_fd);
  }

  // A process of the test's making; its pid (and start time: the same number).
  pid_t add(Fate fate) {
    pid_t pid = next_pid_++;
    processes_[pid] = {.fate = fate, .exit_fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)};
    return pid;
  }
  // Processes that the next scans find, one batch per scan (what the job forked meanwhile).
  std::deque<std::vector<pid_t>> appear_on_scan;

  // --- what the engine did ---
  std::vector<std::string> signals;  // "TERM 1001", in order
  int scans = 0;

  bool alive(pid_t pid) const { return !processes_.at(pid).exited; }
  // One that survived SIGKILL so far is gone at last (its wait in the driver ended).
  void finish(pid_t pid) { exit(processes_.at(pid)); }

  ProcessHandle open(pid_t pid) override {
    auto it = processes_.find(pid);
    if (it == processes_.end() || it->second.exited) {
      throw Error(ErrorCode::no_such_process, "no process " + std::to_string(pid));
    }
    UniqueFd fd(::dup(it->second.exit_fd));
    holders_[fd.get()] = pid;
    return {.identity = {.pid = pid, .start_time = static_cast<std::uint64_t>(pid)},
            .pidfd = std::move(fd)};
  }

  int signal(int pidfd, int sig) override {
    pid_t pid = holders_.at(pidfd);
    Process& p = processes_.at(pid);
    if (p.exited) return ESRCH;
    signals.push_back(std::string(::sigabbrev_np(sig)) + " " + std::to_string(pid));
    bool ends =
        (sig == SIGTERM && p.fate == Fate::obeys) || (sig == SIGKILL && p.fate != Fate::never_dies);
    if (ends) exit(p);
    return 0;
  }

  bool exited(int pidfd) override { return processes_.at(holders_.at(pidfd)).exited; }

  std::string command_line(pid_t pid) override { return "fake " + std::to_string(pid); }

  // One that nothing ends sleeps uninterruptibly in a driver, as such processes do.
  ProcessSnapshot snapshot(pid_t pid) override {
    const Process& p = processes_.at(pid);
    if (p.exited) return {.pid = pid, .detail = "gone"};
    bool stuck = p.fate == Fate::never_dies;
    return {.pid = pid, .state = stuck ? 'D' : 'S', .wchan = stuck ? "fake_driver_wait" : ""};
  }

  std::vector<Discovered> discover(const DiscoveryQuery&, std::chrono::steady_clock::time_point,
                                   CookieMemo&) override {
    ++scans;
    std::vector<Discovered> found;
    if (appear_on_scan.empty()) return found;
    for (pid_t pid : appear_on_scan.front()) {
      found.push_back({.pid = pid,
                       .start_time = static_cast<std::uint64_t>(pid),
                       .found_by = "forked during the cleanup"});
    }
    appear_on_scan.pop_front();
    return found;
  }

 private:
  struct Process {
    Fate fate = Fate::obeys;
    int exit_fd = -1;  // readable once exited; the pidfds handed out are dups of it
    bool exited = false;
  };
  static void exit(Process& p) {
    if (p.exited) return;
    p.exited = true;
    std::uint64_t one = 1;
    // An eventfd's counter: a write of 1 cannot fail short of overflow.
    [[maybe_unused]] ssize_t written = ::write(p.exit_fd, &one, sizeof one);
  }

  std::map<pid_t, Process> processes_;
  std::map<int, pid_t> holders_;  // pidfd handed out -> its process
  pid_t next_pid_ = 1001;
};

}  // namespace warden::testing
