#include "world/named_process.h"

#include <unistd.h>

#include <algorithm>
#include <string>

#include "world/namespaces.h"

namespace warden {

std::vector<ProcessIdentity> read_ancestors() {
  std::vector<ProcessIdentity> out;
  for (pid_t up = ::getppid(); up > 1;) {
    auto st = read_proc_stat(up);
    if (!st) break;
    out.push_back({.pid = up, .start_time = st->start_time});
    up = st->ppid;
  }
  return out;
}

ProcessNamer::ProcessNamer(std::vector<ProcessIdentity> ancestors)
    : ancestors_(std::move(ancestors)) {}

ProcessHandle ProcessNamer::job_process(const Caller& caller, pid_t pid, UniqueFd passed) const {
  ProcessHandle process = named(caller, pid, std::move(passed));
  refuse_untouchable(process, pid);
  return process;
}

ProcessHandle ProcessNamer::named(const Caller& caller, pid_t pid, UniqueFd passed) const {
  const View& view = caller.view != nullptr ? *caller.view : *View::wardends();
  if (passed) {
    pid_t host = pidfd_pid(passed.get());
    auto local = view.local_pid(host);
    if (!local) {
      throw Error(ErrorCode::permission_denied,
                  "the pidfd passed is of a process outside your PID namespace");
    }
    if (*local != pid) {
      throw Error(ErrorCode::bad_request, "the pidfd passed is of process " +
                                              std::to_string(*local) + ", not of pid " +
                                              std::to_string(pid));
    }
    return identify(host, std::move(passed));
  }
  // A process naming itself is known by the connection's own pidfd, free of any pid race.
  if (caller.pidfd >= 0 && view.local_pid(caller.pid) == pid) {
    return identify(caller.pid, dup_fd(caller.pidfd));
  }
  if (view.shares_pids()) return open_process(pid);
  // A bare pid from a container: found through the numbers its processes have there.
  auto host = view.host_pid(pid);
  if (!host) {
    throw Error(ErrorCode::no_such_process,
                "no process " + std::to_string(pid) +
                    " in your PID namespace (a container's); "
                    "pass a pidfd of it with the request (\"pidfd\": true and SCM_RIGHTS), as the "
                    "warden clients do");
  }
  ProcessHandle handle = open_process(*host);
  // The pidfd is the process that had the number when it was looked up only if it has it still.
  if (view.local_pid(*host) != pid) {
    throw Error(ErrorCode::no_such_process, "process " + std::to_string(pid) + " has exited");
  }
  return handle;
}

void ProcessNamer::refuse_untouchable(const ProcessHandle& process, pid_t named) const {
  const ProcessIdentity& p = process.identity;
  std::string why;
  if (p.pid == ::getpid()) {
    why = "is wardend itself";
  } else if (p.pid == 1) {
    why = "is the init of wardend's PID namespace";
  } else if (process.kernel_thread) {
    why = "is a kernel thread";
  } else if (std::any_of(ancestors_.begin(), ancestors_.end(), [&p](const ProcessIdentity& a) {
               return a.pid == p.pid && a.start_time == p.start_time;
             })) {
    why = "is an ancestor of wardend, which ending it could end";
  }
  if (!why.empty()) {
    throw Error(ErrorCode::permission_denied,
                "process " + std::to_string(named) + " " + why +
                    "; a job's processes are ended at cleanup, so it cannot be one");
  }
}

}  // namespace warden
