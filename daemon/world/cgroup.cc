#include "world/cgroup.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <random>
#include <sstream>
#include <system_error>

#include <fmt/format.h>

#include "world/process.h"
#include "proto/unique_fd.h"

namespace warden {
namespace {

[[noreturn]] void fail(const std::string& what) {
  throw std::system_error(errno, std::generic_category(), what);
}

void write_file(const std::string& path, const std::string& value) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd) fail("open " + path);
  if (::write(fd.get(), value.data(), value.size()) != static_cast<ssize_t>(value.size())) {
    fail("write " + value + " to " + path);
  }
}

std::optional<std::string> read_file(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return std::nullopt;
  std::string out;
  char buf[4096];
  ssize_t n = 0;
  while ((n = ::read(fd.get(), buf, sizeof(buf))) > 0) out.append(buf, n);
  if (n < 0) return std::nullopt;
  return out;
}

// The cgroups directly beneath `dir` (a directory of cgroupfs).
std::vector<std::string> child_cgroups(const std::string& dir) {
  std::vector<std::string> out;
  // cgroupfs counts a directory's links as 2 plus its subdirectories: a job's leaf nearly always
  // has none, and one stat is cheaper than opening and reading the directory (on the event loop,
  // several times per cleanup, kernfs's readdir was 5 % of its time at a mass death).
  struct stat st {};
  if (::stat(dir.c_str(), &st) == 0 && st.st_nlink == 2) return out;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return out;
  while (dirent* e = ::readdir(d)) {
    if (e->d_type == DT_DIR && std::strcmp(e->d_name, ".") != 0 &&
        std::strcmp(e->d_name, "..") != 0) {
      out.emplace_back(e->d_name);
    }
  }
  ::closedir(d);
  return out;
}

}  // namespace

std::optional<std::string> find_cgroup2_mount(std::string_view mountinfo) {
  // Fields: id parent major:minor root mount-point options [optional...] - fstype source super.
  std::istringstream in{std::string(mountinfo)};
  for (std::string line; std::getline(in, line);) {
    auto dash = line.find(" - ");
    if (dash == std::string::npos || line.compare(dash + 3, 8, "cgroup2 ") != 0) continue;
    std::istringstream fields(line.substr(0, dash));
    std::string id, parent, devno, root, mount_point;
    if (fields >> id >> parent >> devno >> root >> mount_point) return mount_point;
  }
  return std::nullopt;
}

std::optional<std::string> parse_cgroup2_path(std::string_view proc_cgroup) {
  std::istringstream in{std::string(proc_cgroup)};
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("0::", 0) != 0) continue;
    std::string path = line.substr(3);
    // Outside the reader's cgroup namespace the kernel writes the path relative to its root.
    if (path.empty() || path[0] != '/' || path.find("/..") != std::string::npos)
      return std::nullopt;
    return path;
  }
  return std::nullopt;
}

std::string parent_cgroup(const std::string& cgroup) {
  auto slash = cgroup.rfind('/');
  return slash == 0 || slash == std::string::npos ? "/" : cgroup.substr(0, slash);
}

bool cgroup_within(const std::optional<std::string>& inner, const std::string& outer) {
  return inner && (*inner == outer || inner->starts_with(outer + "/"));
}

std::string instance_id(const std::string& state_dir) {
  std::string path = state_dir + "/instance";
  std::string id = read_file(path).value_or("");
  while (!id.empty() && std::isspace(static_cast<unsigned char>(id.back()))) id.pop_back();
  bool valid = id.size() == 16 && id.find_first_not_of("0123456789abcdef") == std::string::npos;
  if (!valid) {
    std::random_device random;
    id = fmt::format("{:08x}{:08x}", random(), random());
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (!fd && errno != EROFS) fail("create " + path);
    std::string line = id + "\n";
    if (fd && ::write(fd.get(), line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
      fail("write " + path);
    }
  }
  return id;
}

std::string cgroup_prefix(const std::string& state_dir) {
  return "warden-" + instance_id(state_dir) + "-";
}

std::unique_ptr<KernelCgroups> KernelCgroups::open(const boost::asio::any_io_executor& executor,
                                                   std::string& why) {
  auto mountinfo = read_file("/proc/self/mountinfo");
  auto mount = mountinfo ? find_cgroup2_mount(*mountinfo) : std::nullopt;
  if (!mount) {
    why = "no cgroup v2 hierarchy is mounted";
    return nullptr;
  }
  struct statvfs vfs {};
  if (::statvfs(mount->c_str(), &vfs) != 0 || (vfs.f_flag & ST_RDONLY) != 0) {
    why = "the cgroup v2 hierarchy at " + *mount + " is mounted read-only";
    return nullptr;
  }
  return std::make_unique<KernelCgroups>(executor, *mount);
}

KernelCgroups::KernelCgroups(const boost::asio::any_io_executor& executor, std::string mount)
    : mount_(std::move(mount)), inotify_(executor) {
  int fd = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (fd < 0) fail("inotify_init1");
  inotify_.assign(fd);
}

std::string KernelCgroups::file(const std::string& cgroup, const char* name) const {
  return mount_ + (cgroup == "/" ? "" : cgroup) + "/" + name;
}

std::optional<std::string> KernelCgroups::cgroup_of(pid_t pid) {
  auto text = read_proc_file(pid, "cgroup");
  if (!text) return std::nullopt;
  return parse_cgroup2_path(*text);
}

std::string KernelCgroups::create(const std::string& parent, const std::string& name) {
  std::string cgroup = (parent == "/" ? "" : parent) + "/" + name;
  std::string dir = mount_ + cgroup;
  // One that exists already is a leftover of this very job (a restart in the middle of a
  // registration): names carry wardend's instance and the job id.
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) fail("mkdir " + dir);
  return cgroup;
}

void KernelCgroups::move(pid_t pid, const std::string& cgroup) {
  write_file(file(cgroup, "cgroup.procs"), std::to_string(pid));
}

std::vector<pid_t> KernelCgroups::members(const std::string& cgroup) {
  std::vector<pid_t> out;
  std::vector<std::string> pending{cgroup};
  while (!pending.empty()) {
    std::string current = std::move(pending.back());
    pending.pop_back();
    if (auto procs = read_file(file(current, "cgroup.procs"))) {
      std::istringstream in(*procs);
      for (pid_t pid = 0; in >> pid;) out.push_back(pid);
    }
    for (auto& child : child_cgroups(mount_ + current)) pending.push_back(current + "/" + child);
  }
  return out;
}

void KernelCgroups::freeze(const std::string& cgroup, bool frozen) {
  write_file(file(cgroup, "cgroup.freeze"), frozen ? "1" : "0");
}

void KernelCgroups::kill(const std::string& cgroup) {
  write_file(file(cgroup, "cgroup.kill"), "1");
}

bool KernelCgroups::populated(const std::string& cgroup) {
  auto events = read_file(file(cgroup, "cgroup.events"));
  // A cgroup that is gone holds nothing.
  return events && events->find("populated 1") != std::string::npos;
}

void KernelCgroups::when_empty(const std::string& cgroup, std::function<void()> emptied) {
  int watch = ::inotify_add_watch(inotify_.native_handle(), file(cgroup, "cgroup.events").c_str(),
                                  IN_MODIFY);
  if (watch < 0) {
    // Gone already, or out of watches: either way nobody is told later, so tell now if empty.
    if (!populated(cgroup)) boost::asio::post(inotify_.get_executor(), std::move(emptied));
    return;
  }
  waiting_[watch] = {cgroup, std::move(emptied)};
  read_notifications();
  check(watch);  // it may have emptied before the watch was in place
}

void KernelCgroups::forget_empty(const std::string& cgroup) {
  for (auto it = waiting_.begin(); it != waiting_.end();) {
    if (it->second.cgroup != cgroup) {
      ++it;
      continue;
    }
    ::inotify_rm_watch(inotify_.native_handle(), it->first);
    it = waiting_.erase(it);
  }
}

void KernelCgroups::check(int watch) {
  auto it = waiting_.find(watch);
  if (it == waiting_.end() || populated(it->second.cgroup)) return;
  auto emptied = std::move(it->second.emptied);
  ::inotify_rm_watch(inotify_.native_handle(), watch);
  waiting_.erase(it);
  boost::asio::post(inotify_.get_executor(), std::move(emptied));
}

void KernelCgroups::read_notifications() {
  if (reading_) return;
  reading_ = true;
  inotify_.async_read_some(
      boost::asio::buffer(buffer_),
      [this, alive = std::weak_ptr<bool>(alive_)](boost::system::error_code ec, std::size_t n) {
        if (alive.expired()) return;
        reading_ = false;
        if (ec) return;
        std::vector<int> changed;
        for (std::size_t at = 0; at + sizeof(inotify_event) <= n;) {
          inotify_event event;
          std::memcpy(&event, buffer_ + at, sizeof(event));
          changed.push_back(event.wd);
          at += sizeof(inotify_event) + event.len;
        }
        for (int watch : changed) check(watch);
        if (!waiting_.empty()) read_notifications();
      });
}

int KernelCgroups::remove(const std::string& cgroup) {
  for (auto& child : child_cgroups(mount_ + cgroup)) {
    if (int err = remove(cgroup + "/" + child); err != 0) return err;
  }
  std::string dir = mount_ + cgroup;
  if (::rmdir(dir.c_str()) != 0 && errno != ENOENT) return errno;
  return 0;
}

std::vector<std::string> KernelCgroups::find(const std::string& prefix) {
  std::vector<std::string> out;
  std::vector<std::string> pending{""};
  // Bounded: cgroupfs is a tree, but a pathological one should not hold a start-up for long.
  for (std::size_t visited = 0; !pending.empty() && visited < 100'000; ++visited) {
    std::string current = std::move(pending.back());
    pending.pop_back();
    for (auto& child : child_cgroups(mount_ + (current.empty() ? "/" : current))) {
      std::string path = current + "/" + child;
      if (child.rfind(prefix, 0) == 0) {
        out.push_back(path);
      } else {
        pending.push_back(path);
      }
    }
  }
  return out;
}

}  // namespace warden
