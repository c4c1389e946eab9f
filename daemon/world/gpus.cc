#include "world/gpus.h"

#include <dirent.h>
#include <fcntl.h>
#include <glob.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstring>

#include "world/process.h"
#include "proto/unique_fd.h"

namespace warden {
namespace {

std::vector<GpuDevice> match_devices(const std::vector<std::string>& patterns) {
  std::vector<GpuDevice> devices;
  for (const auto& pattern : patterns) {
    glob_t g{};
    if (::glob(pattern.c_str(), 0, nullptr, &g) == 0) {
      for (std::size_t i = 0; i < g.gl_pathc; ++i) {
        struct stat st {};
        if (::stat(g.gl_pathv[i], &st) != 0 || !S_ISCHR(st.st_mode)) continue;
        bool known = std::any_of(devices.begin(), devices.end(),
                                 [&](const GpuDevice& d) { return d.rdev == st.st_rdev; });
        if (!known) devices.push_back({.path = g.gl_pathv[i], .rdev = st.st_rdev});
      }
    }
    ::globfree(&g);
  }
  return devices;
}

// N of a node named nvidiaN: NVML names its GPUs by that minor number.
std::optional<unsigned> nvidia_minor(const std::string& path) {
  std::string_view name = path;
  name.remove_prefix(name.rfind('/') + 1);
  if (!name.starts_with("nvidia")) return std::nullopt;
  name.remove_prefix(6);
  unsigned minor = 0;
  auto [end, ec] = std::from_chars(name.data(), name.data() + name.size(), minor);
  if (ec != std::errc() || end != name.data() + name.size() || name.empty()) return std::nullopt;
  return minor;
}

void add_nvml(GpuSnapshot& snapshot, const std::vector<Nvml::Device>& nvml) {
  for (const auto& gpu : nvml) {
    for (std::size_t i = 0; i < snapshot.devices.size(); ++i) {
      GpuDevice& d = snapshot.devices[i];
      if (nvidia_minor(d.path) != gpu.minor) continue;
      d.uuid = gpu.uuid;
      d.memory_total = gpu.memory_total;
      d.memory_used = gpu.memory_used;
      for (const auto& p : gpu.processes) {
        if (p.memory_bytes) snapshot.memory[{i, p.pid}] = *p.memory_bytes;
      }
    }
  }
}

}  // namespace

std::optional<std::uint64_t> GpuSnapshot::memory_of(std::size_t device, pid_t pid) const {
  if (!has_memory()) return std::nullopt;
  auto it = memory.find({device, pid});
  // NVML lists every process with a context on the GPU; one it does not list holds none.
  return it != memory.end() ? it->second : 0;
}

Gpus::Gpus(GpuOptions options)
    : patterns_(std::move(options.devices)), nvml_(std::move(options.nvml_library)) {}

bool Gpus::any() const { return !match_devices(patterns_).empty(); }

GpuSnapshot Gpus::look() {
  GpuSnapshot snapshot{.devices = match_devices(patterns_)};
  if (snapshot.devices.empty()) return snapshot;
  auto nvml = nvml_.devices();
  if (nvml) {
    add_nvml(snapshot, *nvml);
  } else {
    snapshot.note = nvml_.note();
  }
  return snapshot;
}

GpuHoldings Gpus::held_by(pid_t pid, const GpuSnapshot& snapshot) {
  GpuHoldings held;
  if (snapshot.devices.empty()) return held;
  char path[32];
  std::snprintf(path, sizeof path, "/proc/%d/fd", pid);
  UniqueFd dir_fd(::open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir_fd) return held;  // gone, or not wardend's to read
  DIR* dir = ::fdopendir(dir_fd.get());
  if (dir == nullptr) return held;
  dir_fd.release();  // the DIR owns it now
  while (const dirent* entry = ::readdir(dir)) {
    if (entry->d_name[0] == '.') continue;
    struct stat st {};
    // Follows the descriptor's magic link to the open file itself, in whatever mount namespace.
    if (::fstatat(::dirfd(dir), entry->d_name, &st, 0) != 0 || !S_ISCHR(st.st_mode)) continue;
    for (std::size_t i = 0; i < snapshot.devices.size(); ++i) {
      if (snapshot.devices[i].rdev == st.st_rdev &&
          std::find(held.begin(), held.end(), i) == held.end()) {
        held.push_back(i);
      }
    }
  }
  ::closedir(dir);
  std::sort(held.begin(), held.end());
  return held;
}

std::map<pid_t, GpuHoldings> Gpus::holders(const GpuSnapshot& snapshot,
                                           const std::vector<std::size_t>& wanted) {
  std::map<pid_t, GpuHoldings> found;
  if (snapshot.devices.empty()) return found;
  DIR* proc = ::opendir("/proc");
  if (proc == nullptr) return found;
  std::vector<dev_t> devices;
  for (const auto& d : snapshot.devices) devices.push_back(d.rdev);
  std::lock_guard lock(holds_none_mutex_);
  if (devices != holds_none_of_) {
    holds_none_.clear();
    holds_none_of_ = devices;
  }
  std::map<pid_t, FdTable> holds_none;  // this walk's: processes gone are dropped
  const pid_t self = ::getpid();  // wardend holds NVML's own handles on the GPUs
  while (const dirent* entry = ::readdir(proc)) {
    pid_t pid = 0;
    auto [end, ec] =
        std::from_chars(entry->d_name, entry->d_name + std::strlen(entry->d_name), pid);
    if (ec != std::errc() || *end != '\0' || pid == self) continue;
    char path[32];
    std::snprintf(path, sizeof path, "%d/fd", pid);
    struct stat st {};
    if (::fstatat(::dirfd(proc), path, &st, 0) != 0) continue;  // gone
    FdTable table{.ino = st.st_ino, .count = st.st_size};
    // A size of 0 says nothing before Linux 6.2: such a table is always walked.
    bool known = table.count > 0;
    if (auto it = holds_none_.find(pid); known && it != holds_none_.end() && it->second == table) {
      holds_none.emplace(pid, table);
      continue;
    }
    GpuHoldings held = held_by(pid, snapshot);
    if (held.empty() && known) holds_none.emplace(pid, table);
    if (!wanted.empty()) {
      std::erase_if(held, [&](std::size_t i) {
        return std::find(wanted.begin(), wanted.end(), i) == wanted.end();
      });
    }
    if (!held.empty()) found[pid] = std::move(held);
  }
  ::closedir(proc);
  holds_none_ = std::move(holds_none);
  return found;
}

GpuAccount account_gpus(Gpus& gpus, const std::vector<pid_t>& pids) {
  GpuAccount account{.before = gpus.look()};
  if (account.before.devices.empty()) return account;
  for (pid_t pid : pids) {
    GpuHoldings held = Gpus::held_by(pid, account.before);
    if (!held.empty()) account.held[pid] = std::move(held);
  }
  return account;
}

std::vector<GpuUse> gpu_uses(const GpuAccount& account, pid_t pid) {
  std::vector<GpuUse> uses;
  auto it = account.held.find(pid);
  if (it == account.held.end()) return uses;
  for (std::size_t i : it->second) {
    uses.push_back({.device = account.before.devices[i].path,
                    .memory_bytes = account.before.memory_of(i, pid)});
  }
  return uses;
}

std::vector<GpuReport> settle_gpus(Gpus& gpus, const GpuAccount& account,
                                   const std::vector<pid_t>& alive) {
  std::vector<std::size_t> used;
  for (const auto& [pid, held] : account.held) {
    for (std::size_t i : held) {
      if (std::find(used.begin(), used.end(), i) == used.end()) used.push_back(i);
    }
  }
  std::sort(used.begin(), used.end());
  std::vector<GpuReport> reports;
  if (used.empty()) return reports;
  // The same devices as before, looked at again: the memory figures are of now.
  GpuSnapshot after = account.before;
  GpuSnapshot now = gpus.look();
  after.memory.clear();
  for (const auto& [key, bytes] : now.memory) {
    const auto& path = now.devices[key.first].path;
    for (std::size_t i = 0; i < after.devices.size(); ++i) {
      if (after.devices[i].path == path) after.memory[{i, key.second}] = bytes;
    }
  }
  after.note = now.note;
  auto holders = gpus.holders(after, used);
  for (std::size_t i : used) {
    GpuReport r{.device = account.before.devices[i].path, .uuid = account.before.devices[i].uuid};
    if (account.before.has_memory() && after.has_memory()) {
      std::uint64_t held = 0, kept = 0;
      for (const auto& [pid, devices] : account.held) {
        if (std::find(devices.begin(), devices.end(), i) == devices.end()) continue;
        held += account.before.memory_of(i, pid).value_or(0);
        kept += after.memory_of(i, pid).value_or(0);
      }
      r.held_bytes = held;
      r.released_bytes = held > kept ? held - kept : 0;
    }
    for (const auto& [pid, devices] : holders) {
      bool of_job = std::find(alive.begin(), alive.end(), pid) != alive.end();
      if (of_job || std::find(devices.begin(), devices.end(), i) == devices.end()) continue;
      r.still_held_by.push_back({.pid = pid,
                                 .uid = read_proc_real_uid(pid).value_or(0),
                                 .command = read_command_line(pid),
                                 .memory_bytes = after.memory_of(i, pid)});
    }
    reports.push_back(std::move(r));
  }
  return reports;
}

}  // namespace warden
