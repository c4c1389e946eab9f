// Files, directories and shm segments: what a job may register, and removal that never follows a
// symlink, never crosses a mount and never removes anything but what was registered.
#pragma once

#include <sys/stat.h>

#include <string>
#include <vector>

#include "core/supervisor.h"
#include "proto/unique_fd.h"

namespace warden {

struct PathRules {
  // Registered paths must lie strictly beneath one of these (trusted, from the config).
  std::vector<std::string> allowed_roots{"/tmp", "/var/tmp", "/dev/shm", "/run/user"};
  std::string shm_dir = "/dev/shm";  // where POSIX shm segments and named semaphores live
};

// Opens `path` as a process whose root is the directory `root` would (View::root()): symlinks
// resolved within that root, no /proc magic links (openat2 with RESOLVE_IN_ROOT). Empty, with
// errno set, on failure: ENOSYS where a seccomp filter does not know openat2.
UniqueFd open_in_root(int root, const std::string& path, int flags);

// `root` is the directory a job's "/" is (View::root(): AT_FDCWD for a job where wardend is, a
// container's root otherwise); the allowed roots are found beneath it, symlinks in them resolved
// within it.
//
// Checks a path for registration and returns it with its identity. Throws Error:
// bad_request for a relative path, a "." or ".." component, a path outside the allowed roots or a
// root itself, a symlink in any component, or the wrong type (a directory for add_file, a device);
// not_found if nothing is there. For PathKind::shm, `path` is the segment's name ("/name",
// "name" or "sem.name"); for PathKind::shm_glob, an fnmatch pattern over names in the shm dir.
TrackedPath resolve_path(const PathRules& rules, int root, PathKind kind, const std::string& path);

// What is at `path` beneath an allowed root, as the job sees it (`root` as for resolve_path),
// without following a symlink in any component: 0 with `out` filled (birth time where the file
// system keeps one), else an errno value (EPERM for a path beneath no allowed root).
int statx_in_root(const PathRules& rules, int root, const std::string& path, struct statx& out);

// Removes a registered path (blocking: run it off the event loop). Files and segments are
// unlinked; directories are emptied depth-first without crossing into other mounts or into
// subdirectories `owner` does not own (owner 0 may enter any). Before anything is removed the
// entry is checked against the registered identity; a changed one is `refused`.
PathReport remove_path(const PathRules& rules, int root, const TrackedPath& path, uid_t owner);

}  // namespace warden
