#include "world/creations.h"

#include <fcntl.h>
#include <sys/fanotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <boost/asio/posix/descriptor_base.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace warden {
namespace asio = boost::asio;

namespace {

constexpr std::uint64_t kMask = FAN_CREATE | FAN_MOVED_TO | FAN_DELETE | FAN_MOVED_FROM;

// The entry's name in an event reported with FAN_REPORT_DFID_NAME: after the directory's file
// handle in the first info record; "" where the event carries none.
std::string_view name_of(const fanotify_event_metadata& event) {
  auto* info = reinterpret_cast<const fanotify_event_info_fid*>(&event + 1);
  const char* end = reinterpret_cast<const char*>(&event) + event.event_len;
  if (reinterpret_cast<const char*>(info + 1) > end ||
      info->hdr.info_type != FAN_EVENT_INFO_TYPE_DFID_NAME) {
    return {};
  }
  auto* handle = reinterpret_cast<const file_handle*>(info->handle);
  const char* name = reinterpret_cast<const char*>(handle->f_handle) + handle->handle_bytes;
  if (name >= end) return {};
  return {name, ::strnlen(name, static_cast<std::size_t>(end - name))};
}

}  // namespace

struct CreationWatch::Root {
  std::string path;
  UniqueFd dir;  // for the stat of what is made in it
  asio::posix::stream_descriptor events;
  Handler* handler = nullptr;
  std::shared_ptr<std::uint64_t> overflows;
  alignas(fanotify_event_metadata) char buffer[64 * 1024];

  Root(const asio::any_io_executor& executor, std::string p, UniqueFd d, int fanotify)
      : path(std::move(p)), dir(std::move(d)), events(executor, fanotify) {}

  void arm() {
    events.async_wait(asio::posix::descriptor_base::wait_read,
                      [this](boost::system::error_code ec) {
                        if (ec) return;
                        drain();
                        arm();
                      });
  }

  // Reads what is queued now and hands it over in one batch.
  void drain() {
    std::vector<RootChange> changes;
    for (;;) {
      ssize_t n = ::read(events.native_handle(), buffer, sizeof buffer);
      if (n <= 0) break;  // EAGAIN: all read
      auto* event = reinterpret_cast<const fanotify_event_metadata*>(buffer);
      for (; FAN_EVENT_OK(event, n); event = FAN_EVENT_NEXT(event, n)) {
        if (event->vers != FANOTIFY_METADATA_VERSION) continue;
        if (event->mask & FAN_Q_OVERFLOW) {
          ++*overflows;
          spdlog::warn("root={} the kernel dropped creation events (queue full): what jobs made "
                       "meanwhile is found only if held at cleanup",
                       path);
          continue;
        }
        std::string_view name = name_of(*event);
        if (name.empty() || name == "." || name == "..") continue;
        RootChange change{.created = (event->mask & (FAN_CREATE | FAN_MOVED_TO)) != 0,
                          .object = {.path = path + "/" + std::string(name)},
                          .pid = event->pid};
        if (change.created && !identify(name, change.object)) continue;
        changes.push_back(std::move(change));
      }
    }
    if (!changes.empty()) (*handler)(changes);
  }

  // A created entry's identity, if it is a regular file still there.
  bool identify(std::string_view name, HeldObject& object) const {
    struct stat st {};
    if (::fstatat(dir.get(), std::string(name).c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 ||
        !S_ISREG(st.st_mode)) {
      return false;
    }
    object.dev = st.st_dev;
    object.ino = st.st_ino;
    return true;
  }
};

CreationWatch::CreationWatch(const asio::any_io_executor& executor,
                             const std::vector<std::string>& roots, Handler handler) {
  auto shared = std::make_shared<Handler>(std::move(handler));
  std::string why;
  for (const auto& path : roots) {
    UniqueFd dir(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!dir) continue;  // a root this node does not have
    int fd = ::fanotify_init(FAN_CLASS_NOTIF | FAN_REPORT_DFID_NAME | FAN_CLOEXEC | FAN_NONBLOCK,
                             O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      why = fmt::format("fanotify_init: {}{}", std::strerror(errno),
                        errno == EPERM ? " (it needs CAP_SYS_ADMIN: only a root wardend has it)"
                                       : "");
      break;
    }
    if (::fanotify_mark(fd, FAN_MARK_ADD, kMask, dir.get(), nullptr) != 0) {
      why = fmt::format("fanotify_mark {}: {}", path, std::strerror(errno));
      ::close(fd);
      continue;
    }
    auto root = std::make_unique<Root>(executor, path, std::move(dir), fd);
    root->handler = shared.get();
    root->overflows = overflows_;
    roots_.push_back(std::move(root));
  }
  if (roots_.empty()) {
    unavailable_ = why.empty() ? "none of the allowed roots exists" : why;
    return;
  }
  handler_ = std::move(shared);
  for (auto& root : roots_) root->arm();
}

CreationWatch::~CreationWatch() = default;

std::vector<std::string> CreationWatch::roots() const {
  std::vector<std::string> out;
  for (const auto& root : roots_) out.push_back(root->path);
  return out;
}

bool Creations::add(JobId job, HeldObject object) {
  if (auto it = by_path_.find(object.path); it != by_path_.end() && it->second != job) {
    remove(object.path);  // made again, by another job's process
  }
  auto& mine = by_job_[job];
  if (mine.size() >= kMaxPerJob && !mine.contains(object.path)) return false;
  by_path_[object.path] = job;
  std::string path = object.path;
  mine[path] = std::move(object);
  return true;
}

void Creations::remove(const std::string& path) {
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
