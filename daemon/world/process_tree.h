// Finding all of a job's processes at cleanup: descendants of its processes, members of process
// groups and sessions they lead, and anything carrying the job's environment cookie.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "world/process.h"

namespace warden {

// One process in a scan of /proc.
struct ProcEntry {
  pid_t pid = 0;
  ProcStat stat;
  uid_t uid = 0;  // real uid (0 where the scan did not read it)
};

// One program run by one process: pid and start time name the process, and the environment
// block's address (ProcStat::env_start) changes with every execve. A process's environment as
// /proc shows it is fixed for one image, so what is read of it is remembered per image.
using ProcessImage = std::tuple<pid_t, std::uint64_t, std::uint64_t>;
inline ProcessImage image_of(const ProcEntry& e) {
  return {e.pid, e.stat.start_time, e.stat.env_start};
}
// Every process now on the machine (kernel threads excluded). `with_uid`: also read each one's
// real uid (a second file per process), which only a non-root job's discovery needs.
std::vector<ProcEntry> scan_processes(bool with_uid);
// The descendants of `pid` now, from the kernel's lists of each thread's children
// (/proc/PID/task/TID/children): what a registration needs without scanning every process.
std::vector<pid_t> read_descendants(pid_t pid);
// The environment a process started with, as "K=V\0K=V\0..."; nullopt if unreadable.
std::optional<std::string> read_environ(pid_t pid);

// What the cleanups running at once share, so that many jobs dying together cost about one job's
// scans, not one each: a scan of /proc serves every cleanup that asked for one before it began
// (each caller has frozen its tree by then, so the scan still shows it whole), and each process's
// cookie entries (below) are read from its environment once, not once per cleanup. Thread-safe;
// the calls block on /proc, so they belong on the blocking executor.
class ScanCache {
 public:
  using Processes = std::shared_ptr<const std::vector<ProcEntry>>;
  // The processes now on the machine, from a scan that began at or after `asked`.
  Processes processes(std::chrono::steady_clock::time_point asked, bool with_uid);
  // The process's WARDEN_JOB and WARDEN_INSTANCE entries in environ form ("K=V\0..."), all a
  // cookie check needs; nullopt if its environment cannot be read now (asked again next time).
  std::optional<std::string> cookie_entries(pid_t pid);

 private:
  std::mutex mutex_;
  Processes latest_;
  std::chrono::steady_clock::time_point started_{};
  bool with_uid_ = false;
  std::map<pid_t, ProcessImage> images_;  // of the latest scan
  std::map<ProcessImage, std::string> cookies_;
};

// The environment entries that mark a job's processes: clients export WARDEN_JOB=<id> and
// WARDEN_INSTANCE=<the daemon's instance id> (from the register_job reply), and every descendant
// started by exec inherits them, even one that double-forked and called setsid(). Both must match,
// so that jobs of two daemons on one machine (a system and a per-user instance) never claim each
// other's processes. The instance id, unlike the socket's path, is the same inside a container
// that has the socket bind-mounted elsewhere. Processes that
// fork without exec keep the environment their program started with, so DataLoader-style
// workers are found by registration and parentage, not by this.
std::vector<std::string> job_cookie(std::uint64_t job, const std::string& instance);

// Processes are named by pid and start time throughout: a pid whose process in the scan started at
// another time was recycled and means nothing to the job.
using ProcessSet = std::map<pid_t, std::uint64_t>;

struct DiscoveryQuery {
  ProcessSet members;  // the job's processes: their children, groups and sessions are the job's
  ProcessSet leaders;  // besides members': processes whose groups and sessions are the job's
  uid_t owner = 0;     // found processes must run as this (real) uid, unless owner is root
  std::vector<std::string> cookie;  // environment entries that must all be present
  pid_t spared = 0;  // the living main process on a clean end: it and what it alone led stay
  pid_t self = 0;    // wardend
};

struct Discovered {
  pid_t pid = 0;
  std::uint64_t start_time = 0;
  std::string found_by;  // "child of 4312", "in session of 4313", "carries WARDEN_JOB=7"
};

// Whether a process image carries the job's cookie, remembered across the scans of one cleanup.
using CookieMemo = std::map<ProcessImage, bool>;

// Pure: the processes in `scan` that belong to the job and are not yet members, to a fixpoint
// (a child of a found process is found too). `environ_of` reads a process's environment.
std::vector<Discovered> discover(const std::vector<ProcEntry>& scan, const DiscoveryQuery& query,
                                 const std::function<std::optional<std::string>(pid_t)>& environ_of,
                                 CookieMemo& memo);

}  // namespace warden
