#include "world/creations.h"

#include <fcntl.h>
#include <linux/capability.h>
#include <sys/fanotify.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>

#include <boost/asio/posix/descriptor_base.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace warden {
namespace asio = boost::asio;

namespace {

constexpr std::uint64_t kMask = FAN_CREATE | FAN_MOVED_TO | FAN_DELETE | FAN_MOVED_FROM;

// A directory as fanotify names it: its file system's id and its file handle.
struct DirId {
  std::array<int, 2> fsid{};
  int type = 0;
  std::string handle;

  bool operator==(const DirId&) const = default;
};

std::optional<DirId> dir_id(const std::string& path) {
  struct statfs fs {};
  alignas(file_handle) char buffer[sizeof(file_handle) + MAX_HANDLE_SZ];
  auto* handle = reinterpret_cast<file_handle*>(buffer);
  handle->handle_bytes = MAX_HANDLE_SZ;
  int mount_id = 0;
  if (::statfs(path.c_str(), &fs) != 0 ||
      ::name_to_handle_at(AT_FDCWD, path.c_str(), handle, &mount_id, AT_SYMLINK_FOLLOW) != 0) {
    return std::nullopt;
  }
  DirId id{.type = handle->handle_type,
           .handle = std::string(reinterpret_cast<const char*>(handle->f_handle),
                                 handle->handle_bytes)};
  std::memcpy(id.fsid.data(), &fs.f_fsid, sizeof id.fsid);
  return id;
}

// The directory and the entry's name of an event reported with FAN_REPORT_DFID_NAME, from the
// bytes after its metadata (`info` to `end`); nullopt where it carries none. Events are only
// 4-byte aligned in the buffer, so every field is copied out, never read in place.
std::optional<std::pair<DirId, std::string_view>> entry_of(const char* info, const char* end) {
  fanotify_event_info_fid fid{};
  file_handle handle{};
  const char* bytes = info + sizeof fid + sizeof handle;
  if (bytes > end) return std::nullopt;
  std::memcpy(&fid, info, sizeof fid);
  std::memcpy(&handle, info + sizeof fid, sizeof handle);
  const char* name = bytes + handle.handle_bytes;
  if (fid.hdr.info_type != FAN_EVENT_INFO_TYPE_DFID_NAME || name >= end) return std::nullopt;
  DirId dir{.type = handle.handle_type, .handle = std::string(bytes, handle.handle_bytes)};
  std::memcpy(dir.fsid.data(), &fid.fsid, sizeof dir.fsid);
  return std::pair{dir, std::string_view(name, ::strnlen(name, end - name))};
}

// A created entry's identity, if it is a regular file still there.
bool identify(HeldObject& object) {
  struct stat st {};
  if (::lstat(object.path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return false;
  object.dev = st.st_dev;
  object.ino = st.st_ino;
  return true;
}

}  // namespace

struct CreationWatch::Group {
  struct Root {
    std::string path;
    DirId id;
  };
  std::vector<Root> roots;
  asio::posix::stream_descriptor events;
  Handler handler;
  char buffer[64 * 1024];

  Group(const asio::any_io_executor& executor, int fanotify, Handler h)
      : events(executor, fanotify), handler(std::move(h)) {}

  void arm() {
    events.async_wait(asio::posix::descriptor_base::wait_read,
                      [this](boost::system::error_code ec) {
                        if (ec) return;  // cancelled: the group is gone
                        drain();
                        arm();
                      });
  }

  // Reads what is queued now and hands it over in one batch.
  void drain() {
    std::vector<RootChange> changes;
    for (ssize_t n; (n = ::read(events.native_handle(), buffer, sizeof buffer)) > 0;) {
      fanotify_event_metadata event{};
      for (ssize_t at = 0; at + static_cast<ssize_t>(sizeof event) <= n; at += event.event_len) {
        std::memcpy(&event, buffer + at, sizeof event);
        if (event.event_len < sizeof event || at + event.event_len > n) break;
        if (event.vers != FANOTIFY_METADATA_VERSION) continue;
        if (event.mask & FAN_Q_OVERFLOW) {
          spdlog::warn("the kernel dropped events of the allowed roots (queue full): what jobs "
                       "made meanwhile is found only if held at cleanup");
          continue;
        }
        auto entry = entry_of(buffer + at + event.metadata_len, buffer + at + event.event_len);
        if (!entry || entry->second.empty()) continue;
        auto root = std::find_if(roots.begin(), roots.end(),
                                 [&](const Root& r) { return r.id == entry->first; });
        if (root == roots.end()) continue;
        RootChange change{.created = (event.mask & (FAN_CREATE | FAN_MOVED_TO)) != 0,
                          .object = {.path = root->path + "/" + std::string(entry->second)},
                          .pid = event.pid};
        if (change.created && !identify(change.object)) continue;
        changes.push_back(std::move(change));
      }
    }
    if (!changes.empty()) handler(changes);
  }
};

namespace {

// Whether this process has CAP_SYS_ADMIN in effect. Since Linux 5.13 fanotify works without it,
// but then names no other process behind an event (its pid is 0): of no use here.
bool has_sys_admin() {
  __user_cap_header_struct header{.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
  __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {};
  if (::syscall(SYS_capget, &header, data) != 0) return false;
  return (data[CAP_SYS_ADMIN / 32].effective & (1u << (CAP_SYS_ADMIN % 32))) != 0;
}

}  // namespace

CreationWatch::CreationWatch(const asio::any_io_executor& executor,
                             const std::vector<std::string>& roots, Handler handler) {
  if (!has_sys_admin()) {
    unavailable_ =
        "fanotify names the process behind a file only to a watcher with CAP_SYS_ADMIN, which "
        "this wardend lacks (a per-user one, or a unit without it)";
    return;
  }
  int fd = ::fanotify_init(FAN_CLASS_NOTIF | FAN_REPORT_DFID_NAME | FAN_CLOEXEC | FAN_NONBLOCK,
                           O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    unavailable_ = fmt::format("fanotify_init: {}{}", std::strerror(errno),
                               errno == EPERM ? " (it needs CAP_SYS_ADMIN: a root wardend)" : "");
    return;
  }
  auto group = std::make_unique<Group>(executor, fd, std::move(handler));
  std::string why = "none of the allowed roots exists";
  for (const auto& path : roots) {
    auto id = dir_id(path);
    if (!id) continue;  // a root this node does not have
    if (::fanotify_mark(fd, FAN_MARK_ADD, kMask, AT_FDCWD, path.c_str()) != 0) {
      why = fmt::format("fanotify_mark {}: {}", path, std::strerror(errno));
      continue;
    }
    group->roots.push_back({path, std::move(*id)});
  }
  if (group->roots.empty()) {
    unavailable_ = why;
    return;
  }
  group_ = std::move(group);
  group_->arm();
}

CreationWatch::~CreationWatch() = default;

void CreationWatch::drain() {
  if (group_) group_->drain();
}

std::vector<std::string> CreationWatch::roots() const {
  std::vector<std::string> out;
  if (group_) {
    for (const auto& root : group_->roots) out.push_back(root.path);
  }
  return out;
}

bool Creations::add(JobId job, HeldObject object) {
  if (auto it = by_path_.find(object.path); it != by_path_.end() && it->second != job) {
    remove(object.path);  // made again, by another job's process
  }
  if (unclaimed_.contains(object.path)) remove(object.path);
  auto& mine = by_job_[job];
  if (mine.size() >= kMaxPerJob && !mine.contains(object.path)) return false;
  by_path_[object.path] = job;
  std::string path = object.path;
  mine[path] = std::move(object);
  return true;
}

void Creations::add_unclaimed(MadeObject made) {
  std::string path = made.object.path;
  remove(path);  // whoever made it before
  if (unclaimed_.size() >= kMaxUnclaimed) {
    std::string oldest = unclaimed_order_.begin()->second;  // a copy: remove() erases the original
    remove(oldest);
  }
  std::uint64_t order = next_order_++;
  unclaimed_order_.emplace(order, path);
  unclaimed_by_maker_.emplace(std::pair{made.maker.pid, made.maker.start_time}, path);
  unclaimed_.emplace(std::move(path), Unclaimed{std::move(made), order});
}

std::vector<HeldObject> Creations::claim(const std::vector<ProcessIdentity>& makers) {
  std::vector<std::string> paths;
  for (const auto& maker : makers) {
    auto [lo, hi] = unclaimed_by_maker_.equal_range({maker.pid, maker.start_time});
    for (auto it = lo; it != hi; ++it) paths.push_back(it->second);
  }
  std::vector<HeldObject> out;
  for (const auto& path : paths) {
    out.push_back(unclaimed_.at(path).made.object);
    remove(path);
  }
  return out;
}

void Creations::remove(const std::string& path) {
  if (auto u = unclaimed_.find(path); u != unclaimed_.end()) {
    const ProcessIdentity& maker = u->second.made.maker;
    auto [lo, hi] = unclaimed_by_maker_.equal_range({maker.pid, maker.start_time});
    for (auto it = lo; it != hi; ++it) {
      if (it->second == path) {
        unclaimed_by_maker_.erase(it);
        break;
      }
    }
    unclaimed_order_.erase(u->second.order);
    unclaimed_.erase(u);
  }
  auto it = by_path_.find(path);
  if (it == by_path_.end()) return;
  auto job = by_job_.find(it->second);
  if (job != by_job_.end()) {
    job->second.erase(path);
    if (job->second.empty()) by_job_.erase(job);
  }
  by_path_.erase(it);
}

std::vector<HeldObject> Creations::take(JobId job) {
  std::vector<HeldObject> out;
  auto it = by_job_.find(job);
  if (it == by_job_.end()) return out;
  for (auto& [path, object] : it->second) {
    by_path_.erase(path);
    out.push_back(std::move(object));
  }
  by_job_.erase(it);
  return out;
}

}  // namespace warden
