#include "world/namespaces.h"

#include <dirent.h>
#include <linux/nsfs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#include <cstdlib>
#include <string>
#include <tuple>
#include <vector>

#include "world/process.h"
#include "warden/errors.h"

namespace warden {
namespace {

struct Identity {
  std::uint64_t pid_ns = 0;
  std::uint64_t mount_ns = 0;
  std::uint64_t root_dev = 0;
  std::uint64_t root_ino = 0;
};

// What /proc/PID shows of a process's namespaces and root; nullopt (errno set) if it is gone.
std::optional<Identity> identity_of(const std::string& proc) {
  struct stat pid_ns {
  }, mount_ns{}, root{};
  if (::stat((proc + "/ns/pid").c_str(), &pid_ns) != 0 ||
      ::stat((proc + "/ns/mnt").c_str(), &mount_ns) != 0 ||
      ::stat((proc + "/root").c_str(), &root) != 0) {
    return std::nullopt;
  }
  return Identity{pid_ns.st_ino, mount_ns.st_ino, root.st_dev, root.st_ino};
}

const Identity& wardens_identity() {
  static const Identity self = [] {
    auto id = identity_of("/proc/self");
    if (!id) throw std::system_error(errno, std::generic_category(), "read /proc/self/ns");
    return *id;
  }();
  return self;
}

// The NSpid line of /proc/PID/status: the process's pid in each namespace from the reader's down
// to its own. Empty if it is gone.
std::vector<pid_t> ns_pids(pid_t pid) {
  std::vector<pid_t> out;
  auto status = read_proc_file(pid, "status");
  if (!status) return out;
  auto at = status->find("\nNSpid:");
  if (at == std::string::npos) return out;
  const char* p = status->c_str() + at + 7;
  for (;;) {
    char* end = nullptr;
    long value = std::strtol(p, &end, 10);
    if (end == p) break;
    out.push_back(static_cast<pid_t>(value));
    if (*end == '\n' || *end == '\0') break;
    p = end;
  }
  return out;
}

UniqueFd open_or_gone(const std::string& path, int flags) {
  UniqueFd fd(::open(path.c_str(), flags | O_CLOEXEC));
  if (!fd) throw Error(ErrorCode::no_such_process, path + ": " + std::strerror(errno));
  return fd;
}

std::uint64_t inode_of(int fd) {
  struct stat st {};
  return ::fstat(fd, &st) == 0 ? st.st_ino : 0;
}

}  // namespace

std::shared_ptr<const View> View::wardends() {
  static const std::shared_ptr<const View> view(new View);
  return view;
}

std::shared_ptr<const View> View::of(pid_t pid, int pidfd) {
  const std::string proc = "/proc/" + std::to_string(pid);
  auto seen = identity_of(proc);
  auto gone = [pid] {
    return Error(ErrorCode::no_such_process, "process " + std::to_string(pid) + " has exited");
  };
  if (!seen || pidfd_exited(pidfd)) throw gone();
  const Identity& self = wardens_identity();
  const bool same_pids = seen->pid_ns == self.pid_ns;
  const bool same_paths = seen->mount_ns == self.mount_ns && seen->root_dev == self.root_dev &&
                          seen->root_ino == self.root_ino;
  if (same_pids && same_paths) return wardends();

  std::shared_ptr<View> view(new View);
  JobHome home;
  if (!same_pids) {
    view->pid_ns_ = open_or_gone(proc + "/ns/pid", O_RDONLY);
    view->depth_ = ns_pids(pid).size();
    home.pid_ns = inode_of(view->pid_ns_.get());
  }
  if (!same_paths) {
    view->mount_ns_ = open_or_gone(proc + "/ns/mnt", O_RDONLY);
    view->root_ = open_or_gone(proc + "/root", O_PATH | O_DIRECTORY);
    home.mount_ns = inode_of(view->mount_ns_.get());
    struct stat root {};
    ::fstat(view->root_.get(), &root);
    home.root_dev = root.st_dev;
    home.root_ino = root.st_ino;
  }
  // Only if the process is alive still were the descriptors above opened of it, not of a process
  // that took its pid since.
  if (pidfd_exited(pidfd) || view->depth_ == 0) throw gone();
  view->home_ = home;
  return view;
}

bool View::same_paths(const View& other) const {
  auto paths = [](const View& v) {
    JobHome h = v.home_.value_or(JobHome{});
    return std::tuple(h.mount_ns, h.root_dev, h.root_ino);
  };
  return paths(*this) == paths(other);
}

std::optional<pid_t> View::local_pid(pid_t host) const {
  if (shares_pids()) return host;
  auto pids = ns_pids(host);
  if (pids.size() < depth_) return std::nullopt;
  // Its pid at the viewer's depth is the viewer's number for it only if the namespace at that
  // depth is the viewer's (a sibling container has namespaces of the same depth).
  const std::uint64_t mine = inode_of(pid_ns_.get());
  if (pids.size() == depth_) {
    struct stat ns {};
    if (::stat(("/proc/" + std::to_string(host) + "/ns/pid").c_str(), &ns) != 0 ||
        ns.st_ino != mine) {
      return std::nullopt;
    }
    return pids[depth_ - 1];
  }
  UniqueFd ns(::open(("/proc/" + std::to_string(host) + "/ns/pid").c_str(), O_RDONLY | O_CLOEXEC));
  for (std::size_t up = pids.size() - depth_; ns && up > 0; --up) {
    ns.reset(::ioctl(ns.get(), NS_GET_PARENT));
  }
  if (!ns || inode_of(ns.get()) != mine) return std::nullopt;
  return pids[depth_ - 1];
}

std::optional<pid_t> View::host_pid(pid_t pid) const {
  if (shares_pids()) return pid;
  DIR* proc = ::opendir("/proc");
  if (proc == nullptr) return std::nullopt;
  std::optional<pid_t> found;
  while (dirent* e = ::readdir(proc)) {
    char* end = nullptr;
    long host = std::strtol(e->d_name, &end, 10);
    if (host <= 0 || *end != '\0') continue;
    // Cheap first: a process in a namespace as deep as the viewer's and numbered `pid` there.
    auto pids = ns_pids(static_cast<pid_t>(host));
    if (pids.size() < depth_ || pids[depth_ - 1] != pid) continue;
    if (local_pid(static_cast<pid_t>(host)) == pid) {
      found = static_cast<pid_t>(host);
      break;
    }
  }
  ::closedir(proc);
  return found;
}

}  // namespace warden
