// What the cleanup engine asks of the kernel about processes, behind one seam: the real thing
// (pidfds, /proc) in wardend, a fake in the engine's unit tests, which can then make a process
// ignore SIGTERM, survive SIGKILL or appear in the middle of a cleanup at will.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <string>
#include <vector>

#include "world/diagnostics.h"
#include "world/process.h"
#include "world/process_tree.h"

namespace warden {

class Kernel {
 public:
  virtual ~Kernel() = default;

  // The process `pid` names now, held by a pidfd (readable once it has exited). Throws
  // Error{no_such_process} if there is none.
  virtual ProcessHandle open(pid_t pid) = 0;
  // Signals the process behind `pidfd`: 0, or an errno value (ESRCH: it is gone).
  virtual int signal(int pidfd, int sig) = 0;
  // True once the process behind `pidfd` has exited.
  virtual bool exited(int pidfd) = 0;
  // Its command line, for reports ("" once gone).
  virtual std::string command_line(pid_t pid) = 0;
  // Its state and wait channel (diagnostics.h), for a report of a process that will not die.
  virtual ProcessSnapshot snapshot(pid_t pid) = 0;
  // The processes of the job `query` describes that it does not name yet, from a look at every
  // process that began at or after `asked`. Blocks: call it on the blocking executor.
  virtual std::vector<Discovered> discover(const DiscoveryQuery& query,
                                           std::chrono::steady_clock::time_point asked,
                                           CookieMemo& memo) = 0;
};

// The kernel itself: pidfds, and scans of /proc shared by the cleanups running at once.
class RealKernel final : public Kernel {
 public:
  explicit RealKernel(ScanCache& scans) : scans_(scans) {}

  ProcessHandle open(pid_t pid) override { return open_process(pid); }
  int signal(int pidfd, int sig) override { return pidfd_signal(pidfd, sig); }
  bool exited(int pidfd) override { return pidfd_exited(pidfd); }
  std::string command_line(pid_t pid) override { return read_command_line(pid); }
  ProcessSnapshot snapshot(pid_t pid) override { return snapshot_process(pid, ""); }
  std::vector<Discovered> discover(const DiscoveryQuery& query,
                                   std::chrono::steady_clock::time_point asked,
                                   CookieMemo& memo) override;
  // How many times a cleanup looked through /proc for a job's processes (the metrics show it:
  // a job kept whole by its cgroups needs none).
  std::uint64_t scans() const { return scans_made_.load(std::memory_order_relaxed); }

 private:
  ScanCache& scans_;
  std::atomic<std::uint64_t> scans_made_{0};
};

}  // namespace warden
