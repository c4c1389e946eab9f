// Processes as warden sees them: identity from /proc (pid + start time), pidfds, and signalling
// that can never reach a recycled pid.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "core/identity.h"
#include "proto/unique_fd.h"

namespace warden {

// The fields of /proc/PID/stat that warden uses.
struct ProcStat {
  char state = '?';  // R, S, D, Z, T, ...
  pid_t ppid = 0;
  pid_t pgrp = 0;
  pid_t session = 0;
  std::uint64_t flags = 0;  // the kernel's PF_* flags (field 9)
  std::uint64_t start_time = 0;
  // Where the environment block starts (field 48, Linux 3.5+; 0 where absent). Every execve makes
  // a new one, while pid and start time stay: what was read of /proc/PID/environ before an exec
  // says nothing of the program after it.
  std::uint64_t env_start = 0;
};

// A kernel thread, as the kernel says (PF_KTHREAD), not by its number: inside a PID namespace
// pid 2 is an ordinary process.
inline bool is_kernel_thread(const ProcStat& st) { return (st.flags & 0x00200000) != 0; }

// Reads /proc/PID/NAME, at most `limit` bytes. nullopt (with errno set) if it cannot be read,
// e.g. because the process is gone.
std::optional<std::string> read_proc_file(pid_t pid, const char* name,
                                          std::size_t limit = 64 * 1024);

// Parses the text of /proc/PID/stat. The command name may hold spaces and parentheses, so fields
// are counted from the last ')'. Returns nullopt on malformed text.
std::optional<ProcStat> parse_proc_stat(const std::string& text);
// Reads /proc/PID/stat; nullopt if the process does not exist (any more).
std::optional<ProcStat> read_proc_stat(pid_t pid);
// The command line from /proc/PID/cmdline, arguments joined by spaces and cut at 256 bytes, for
// reports; empty if the process is gone (or a kernel thread).
std::string read_command_line(pid_t pid);
// The real uid from /proc/PID/status; nullopt if the process does not exist.
std::optional<uid_t> read_proc_real_uid(pid_t pid);
// Follows `pid` up its parent chain, itself first, until `is_it(pid, start_time)` holds; stops at
// init, at a process gone, and after 64 processes (deeper than any launcher chain: srun, torchrun,
// a shell, python, DataLoader workers; bounded against a loop). Returns whether one held.
bool any_ancestor(pid_t pid, const std::function<bool(pid_t, std::uint64_t start_time)>& is_it);

// A process held by pidfd, so that signals reach exactly the process that was identified.
struct ProcessHandle {
  ProcessIdentity identity;
  UniqueFd pidfd;
  bool kernel_thread = false;  // from the same read of /proc/PID/stat as the identity
};

// Opens a pidfd for `pid` and reads its identity. Because the identity is read after the pidfd is
// opened and the pidfd is then checked to be still alive, both refer to the same process.
// Throws Error{no_such_process} if it does not exist or has exited.
ProcessHandle open_process(pid_t pid);

// The process `identity` names if it still exists and is the same one: a pid reused since has
// another identity (start time and, where the kernel has pidfs, inode). nullopt otherwise.
std::optional<ProcessHandle> reopen(const ProcessIdentity& identity);

// The same for a pidfd already held (from SO_PEERPIDFD) of the process `pid`.
ProcessHandle identify(pid_t pid, UniqueFd pidfd);
// The pid, in wardend's numbering, of the process a descriptor a client passed is a pidfd of (its
// fdinfo says). Throws Error{bad_request} if it is no pidfd, no_such_process if that process has
// exited.
pid_t pidfd_pid(int fd);

// Signals through a pidfd. Returns 0 or an errno value (ESRCH: the process is gone).
int pidfd_signal(int pidfd, int sig);
// True once the process behind the pidfd has exited (the pidfd is readable).
bool pidfd_exited(int pidfd);
// Duplicates a file descriptor with close-on-exec; throws std::system_error on failure.
UniqueFd dup_fd(int fd);

}  // namespace warden
