// Test helpers for real processes: spawning workers, process trees, and waiting for exits by pidfd.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "proto/unique_fd.h"

namespace warden::testing {

// How a spawned test process behaves.
enum class Behaviour {
  sleep,        // waits forever; SIGTERM ends it
  ignore_term,  // waits forever with SIGTERM ignored; only SIGKILL ends it
  exit_now,     // exits at once with status 0
  // waits forever holding 1,000 descriptors of a 64 KiB segment it made and never registered,
  // /dev/shm/warden-held-PID, as a DataLoader worker holds its batches; SIGTERM ends it
  hold_segment,
};

// Forks a child of the calling process that behaves as asked. Never returns in the child.
// With `uid`, the child first becomes that user (the caller must be root).
pid_t spawn(Behaviour behaviour, std::optional<uid_t> uid = std::nullopt);

// Replaces the calling process with argv (execv: argv[0] is a path); exits 127 if that fails.
[[noreturn]] void exec_argv(const std::vector<std::string>& argv);

// Forks a child that runs argv (execv, so it gets the caller's current environment).
pid_t spawn_exec(const std::vector<std::string>& argv);

// A worker that escapes its tree the way daemons do: it forks a child that calls setsid(), forks
// a grandchild that execs `sleep` and exits, leaving the grandchild reparented away. Returns the
// worker (which then waits forever) and the escaped grandchild.
struct Escape {
  pid_t worker = 0;
  pid_t escapee = 0;
};
Escape spawn_escape();

// A job's main process that forked its own workers (as a DataLoader does). Created with the calling
// process as child subreaper, so that workers orphaned by the main's death are reparented to it
// and can be reaped by reap_all().
struct ProcessTree {
  pid_t main = 0;
  std::vector<pid_t> workers;
};
ProcessTree spawn_tree(const std::vector<Behaviour>& workers);

// A pidfd for `pid`; aborts the test on failure.
UniqueFd open_pidfd(pid_t pid);

// Waits until every pidfd is readable (its process exited) or `timeout` passes. Returns true if
// all exited.
bool wait_exited(const std::vector<int>& pidfds, std::chrono::milliseconds timeout);
bool wait_exited(pid_t pid, std::chrono::milliseconds timeout);

// True if the process has exited (a zombie counts as exited) or no longer exists.
bool is_gone(pid_t pid);

// A process's resident set (VmRSS), KiB; 0 if it cannot be read.
std::size_t rss_kib(pid_t pid);

// SIGKILLs the processes and reaps those that are children (or adopted orphans) of the caller.
void kill_and_reap(const std::vector<pid_t>& pids);

}  // namespace warden::testing
