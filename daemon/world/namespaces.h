// How a client's process sees the world: the PID namespace its pids are numbered in, and the mount
// namespace and root its paths are resolved in. A job in a container names its own pids and paths;
// wardend reads them through its View, never in its own numbering or its own file tree.
#pragma once

#include <fcntl.h>
#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <optional>

#include "core/supervisor.h"
#include "proto/unique_fd.h"

namespace warden {

class View {
 public:
  // wardend's own view: pids are its pids, paths its paths.
  static std::shared_ptr<const View> wardends();
  // The view of the live process `pid`, held by `pidfd` (which proves that what was read under
  // /proc/PID is that process's). Costs three stat() calls for a process that shares wardend's
  // namespaces and root (then it is wardends()). Throws Error{no_such_process} if it has exited.
  static std::shared_ptr<const View> of(pid_t pid, int pidfd);

  // Whether pids and paths mean what they mean to wardend.
  bool shares_pids() const { return !pid_ns_; }
  bool shares_paths() const { return !root_; }
  bool is_wardends() const { return shares_pids() && shares_paths(); }

  // The process the viewer calls `pid`, in wardend's numbering; nullopt if the viewer has none by
  // that number. Scans /proc when the viewer is in another PID namespace (the fallback for clients
  // that pass a bare pid instead of a pidfd).
  std::optional<pid_t> host_pid(pid_t pid) const;
  // The number the viewer knows wardend's process `host` by; nullopt if it cannot see it (gone, or
  // outside the viewer's PID namespace).
  std::optional<pid_t> local_pid(pid_t host) const;

  // A directory descriptor of the viewer's "/", whose lookups cross the viewer's mounts; AT_FDCWD
  // where it shares wardend's paths.
  int root() const { return root_ ? root_.get() : AT_FDCWD; }
  // Its PID namespace; -1 where it shares wardend's.
  int pid_namespace() const { return pid_ns_ ? pid_ns_.get() : -1; }
  // Whether a path means the same file to both (the same mount namespace and root).
  bool same_paths(const View& other) const;
  // What identifies it across a restart (stored with a job); nullopt for wardend's view.
  std::optional<JobHome> home() const { return home_; }

 private:
  View() = default;
  std::size_t depth_ = 1;  // namespaces from wardend's down to the viewer's (its NSpid entries)
  UniqueFd pid_ns_;
  // Held, not used: a mount namespace lives on while a descriptor of it is open, and with it the
  // mounts root_ is looked up through (a pod's private /tmp, a volume), after every process in it
  // is gone.
  UniqueFd mount_ns_;
  UniqueFd root_;
  std::optional<JobHome> home_;
};

}  // namespace warden
