#include "world/discovery.h"

#include <dirent.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <cstring>
#include <map>
#include <optional>
#include <set>
#include <system_error>
#include <thread>

#include <fmt/format.h>

#include "world/process.h"

namespace warden {
namespace {

using Identity = std::pair<dev_t, ino_t>;

bool beneath(const std::string& path, const std::vector<std::string>& roots) {
  return std::any_of(roots.begin(), roots.end(), [&path](const std::string& root) {
    return path.size() > root.size() + 1 && path.compare(0, root.size(), root) == 0 &&
           path[root.size()] == '/';
  });
}

// The rest of a /proc file from `fd`, read in as few read()s as its size needs (the kernel makes
// the text of maps on every read, so iostreams' small reads cost more than the parsing).
std::string slurp(int fd) {
  std::string out;
  char buffer[64 * 1024];
  for (ssize_t n; (n = ::read(fd, buffer, sizeof buffer)) > 0;) out.append(buffer, n);
  return out;
}

// Calls `each(path, dev, ino)` for every shared mapping of a file in the text of /proc/PID/maps
// ("addr perms offset MAJ:MIN INODE PATH", perms "rw-s").
template <class Each>
void each_mapping_in_text(int maps_fd, Each each) {
  const std::string maps = slurp(maps_fd);
  for (std::size_t begin = 0, end; begin < maps.size(); begin = end + 1) {
    end = maps.find('\n', begin);
    if (end == std::string::npos) end = maps.size();
    std::string_view line = std::string_view(maps).substr(begin, end - begin);
    std::size_t at = 0;
    std::string_view fields[5];
    for (auto& f : fields) {
      while (at < line.size() && line[at] == ' ') ++at;
      std::size_t end = line.find(' ', at);
      if (end == std::string::npos) break;
      f = line.substr(at, end - at);
      at = end;
    }
    while (at < line.size() && line[at] == ' ') ++at;
    if (at >= line.size() || line[at] != '/') continue;  // anonymous, [heap], [stack], ...
    // A private mapping is a copy (kShared).
    if (fields[1].size() < 4 || fields[1][3] != 's') continue;
    std::string_view dev = fields[3], inode = fields[4];
    auto colon = dev.find(':');
    unsigned major = 0, minor = 0;
    ino_t ino = 0;
    if (colon == std::string_view::npos ||
        std::from_chars(dev.data(), dev.data() + colon, major, 16).ec != std::errc() ||
        std::from_chars(dev.data() + colon + 1, dev.data() + dev.size(), minor, 16).ec !=
            std::errc() ||
        std::from_chars(inode.data(), inode.data() + inode.size(), ino).ec != std::errc()) {
      continue;
    }
    each(line.substr(at), ::makedev(major, minor), ino);
  }
}

// PROCMAP_QUERY (Linux 6.11, <linux/fs.h>; Debian 12's headers predate it): one file-backed
// mapping at a time, its identity without the text of all of maps, its path only when asked.
struct ProcmapQuery {
  std::uint64_t size = sizeof(ProcmapQuery);
  std::uint64_t query_flags = 0;
  std::uint64_t query_addr = 0;
  std::uint64_t vma_start = 0, vma_end = 0, vma_flags = 0, vma_page_size = 0, vma_offset = 0;
  std::uint64_t inode = 0;
  std::uint32_t dev_major = 0, dev_minor = 0;
  std::uint32_t vma_name_size = 0, build_id_size = 0;
  std::uint64_t vma_name_addr = 0, build_id_addr = 0;
};
constexpr unsigned long kProcmapQuery = _IOWR('f', 17, ProcmapQuery);
// Shared mappings only. A private one is a copy of its file (the program and libraries every
// process maps, a copy-on-write view) that keeps nothing of the job's in it; asking the kernel to
// skip those makes a process of a large image one query instead of one per mapping.
constexpr std::uint64_t kShared = 0x08;
constexpr std::uint64_t kCoveringOrNext = 0x10;
constexpr std::uint64_t kFileBacked = 0x20;

// Calls `each(path, dev, ino)` for every shared mapping of a file, through PROCMAP_QUERY: the path
// only for a file `wants_path(dev, ino)` (else empty), and a file mapped in several pieces once.
// False where the kernel has no PROCMAP_QUERY.
template <class WantsPath, class Each>
bool each_mapping_by_query(int maps_fd, WantsPath wants_path, Each each) {
  char name[4096];
  std::optional<std::pair<dev_t, ino_t>> last;
  for (std::uint64_t addr = 0;;) {
    ProcmapQuery q{.query_flags = kCoveringOrNext | kFileBacked | kShared, .query_addr = addr};
    if (::ioctl(maps_fd, kProcmapQuery, &q) != 0) {
      return addr != 0 || (errno != ENOTTY && errno != EINVAL);  // ENOENT: no more; ESRCH: gone
    }
    addr = q.vma_end;
    const dev_t dev = ::makedev(q.dev_major, q.dev_minor);
    if (last == std::pair{dev, static_cast<ino_t>(q.inode)}) continue;
    last = {dev, q.inode};
    std::string_view path;
    if (wants_path(dev, q.inode)) {
      ProcmapQuery named{.query_flags = kFileBacked | kShared,
                         .query_addr = q.vma_start,
                         .vma_name_size = sizeof name,
                         .vma_name_addr = reinterpret_cast<std::uintptr_t>(name)};
      if (::ioctl(maps_fd, kProcmapQuery, &named) == 0 && named.vma_name_size > 0) {
        path = std::string_view(name, named.vma_name_size - 1);  // the size counts the NUL
      }
    }
    each(path, dev, q.inode);
  }
}

// Calls `each(path, dev, ino)` for every shared mapping of a file by `pid`, with its path as the
// process sees it where `wants_path(dev, ino)` (possibly also where not: an older kernel's maps say
// it anyway; empty otherwise).
template <class WantsPath, class Each>
void for_each_mapping(pid_t pid, MapsReader reader, WantsPath wants_path, Each each) {
  UniqueFd maps(::open(("/proc/" + std::to_string(pid) + "/maps").c_str(), O_RDONLY | O_CLOEXEC));
  if (!maps) return;
  if (reader == MapsReader::best && each_mapping_by_query(maps.get(), wants_path, each)) return;
  each_mapping_in_text(maps.get(), each);
}

// Calls `each(path, st)` for every descriptor of `pid` that names a regular file: `st` of the file
// itself (through the magic link), and the path as the process sees it where `wants_path(st)`
// (a readlink more per descriptor: asked only for files not yet seen).
template <class WantsPath, class Each>
void for_each_descriptor(pid_t pid, WantsPath wants_path, Each each) {
  std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return;
  char target[4096];
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    struct stat st{};
    if (::fstatat(::dirfd(d), e->d_name, &st, 0) != 0 || !S_ISREG(st.st_mode)) continue;
    std::string path;
    if (wants_path(st)) {
      ssize_t n = ::readlinkat(::dirfd(d), e->d_name, target, sizeof target);
      if (n <= 0 || static_cast<std::size_t>(n) == sizeof target) continue;
      path.assign(target, static_cast<std::size_t>(n));
    }
    each(path, st);
  }
  ::closedir(d);
}

constexpr std::string_view kDeleted = " (deleted)";

bool deleted(std::string_view path) {
  return path.size() > kDeleted.size() && path.substr(path.size() - kDeleted.size()) == kDeleted;
}

// Which of `wanted` a process still on the node holds open or maps: identity -> its pid.
std::map<Identity, pid_t> outside_holders(const std::set<Identity>& wanted, pid_t self) {
  std::map<Identity, pid_t> holders;
  DIR* proc = ::opendir("/proc");
  if (proc == nullptr) return holders;
  while (dirent* e = ::readdir(proc)) {
    pid_t pid = 0;
    auto [end, ec] = std::from_chars(e->d_name, e->d_name + std::strlen(e->d_name), pid);
    if (ec != std::errc() || *end != '\0' || pid == self) continue;
    auto no_path = [](const struct stat&) { return false; };
    for_each_descriptor(pid, no_path, [&](const std::string&, const struct stat& st) {
      if (wanted.contains({st.st_dev, st.st_ino})) holders.emplace(Identity{st.st_dev, st.st_ino}, pid);
    });
    auto no_mapping_path = [](dev_t, ino_t) { return false; };
    for_each_mapping(pid, MapsReader::best, no_mapping_path,
                     [&](std::string_view, dev_t dev, ino_t ino) {
                       if (wanted.contains({dev, ino})) holders.emplace(Identity{dev, ino}, pid);
                     });
  }
  ::closedir(proc);
  return holders;
}

std::int64_t unix_ms(const statx_timestamp& t) {
  return t.tv_sec * 1000 + t.tv_nsec / 1'000'000;
}

// When it was made: its birth time, or where the file system keeps none the last change of its
// inode, which stands in for it.
std::int64_t born_unix_ms(const struct statx& stx) {
  return unix_ms((stx.stx_mask & STATX_BTIME) ? stx.stx_btime : stx.stx_ctime);
}

// The kernel stamps inodes with its coarse clock, which lags the time wardend read at
// registration by up to a tick: a segment a worker made a few milliseconds after the job
// registered could carry an earlier time and be kept as "existed before the job". What was born
// within a tick (and the milliseconds both times were cut to) before the registration counts as
// the job's.
std::int64_t inode_clock_lag_ms() {
  static const std::int64_t lag = [] {
    timespec tick{};
    if (::clock_getres(CLOCK_REALTIME_COARSE, &tick) != 0) return std::int64_t{11};
    return tick.tv_sec * 1000 + (tick.tv_nsec + 999'999) / 1'000'000 + 1;
  }();
  return lag;
}

bool born_after(const struct statx& stx, std::int64_t created_unix_ms) {
  return born_unix_ms(stx) + inode_clock_lag_ms() >= created_unix_ms;
}

}  // namespace

namespace {

// What some of a job's processes hold beneath the roots, read one process after another.
class HeldReader {
 public:
  HeldReader(const std::vector<std::string>& roots, MapsReader maps) : roots_(roots), maps_(maps) {}

  void read(pid_t pid) {
    // A worker holds its batches' segment by many descriptors, and every process maps the same
    // libraries: each file's path is read once.
    auto unseen = [this](dev_t dev, ino_t ino) {
      Identity id{dev, ino};
      return !found.contains(id) && !elsewhere_.contains(id);
    };
    auto sort = [this](std::string_view path, dev_t dev, ino_t ino) {
      if (path.empty()) return;  // seen before
      Identity id{dev, ino};
      if (!deleted(path) && beneath(std::string(path), roots_)) {
        found.emplace(id, std::string(path));
      } else {
        elsewhere_.insert(id);
      }
    };
    for_each_descriptor(
        pid, [&](const struct stat& st) { return unseen(st.st_dev, st.st_ino); },
        [&](const std::string& path, const struct stat& st) { sort(path, st.st_dev, st.st_ino); });
    for_each_mapping(pid, maps_, unseen, sort);
  }

  std::map<Identity, std::string> found;

 private:
  const std::vector<std::string>& roots_;
  const MapsReader maps_;
  std::set<Identity> elsewhere_;  // seen, and not beneath a root
};

// Processes a thread of the look takes at least: a thread costs about as much as reading a few.
constexpr std::size_t kProcessesPerThread = 8;
constexpr std::size_t kMaxThreads = 4;

}  // namespace

std::vector<HeldObject> read_held_objects(const std::vector<pid_t>& pids,
                                          const std::vector<std::string>& roots, MapsReader maps,
                                          const std::function<void(std::size_t)>& read) {
  // The job is stopped until this is done, and cleaned only after: its processes are read by as
  // many threads as there are cores for, each taking every n-th.
  const std::size_t threads = std::clamp<std::size_t>(
      std::min<std::size_t>(std::thread::hardware_concurrency(), kMaxThreads), 1,
      std::max<std::size_t>(1, pids.size() / kProcessesPerThread));
  std::vector<HeldReader> readers(threads, HeldReader(roots, maps));
  auto read_share = [&](std::size_t share) {
    for (std::size_t i = share; i < pids.size(); i += threads) {
      readers[share].read(pids[i]);
      if (read) read(i);
    }
  };
  {
    std::vector<std::jthread> helpers;
    for (std::size_t share = 1; share < threads; ++share) {
      try {
        helpers.emplace_back(read_share, share);
      } catch (const std::system_error&) {
        read_share(share);  // no thread to be had (a limit): read here, in turn
      }
    }
    read_share(0);
  }
  std::map<Identity, std::string> found;
  for (auto& reader : readers) found.merge(reader.found);
  std::vector<HeldObject> out;
  out.reserve(found.size());
  for (auto& [id, path] : found) out.push_back({std::move(path), id.first, id.second});
  return out;
}

namespace {

struct Candidate {
  const HeldObject* object;
  struct statx stx;
};

// Whether the job registered the object, itself or beneath a registered directory or glob: then
// its registration, not discovery, decides.
bool registered(const HeldObject& object, const DiscoveryRules& rules, const PathRules& paths) {
  auto same = [&](const PathIdentity& r) { return r.dev == object.dev && r.ino == object.ino; };
  if (std::any_of(rules.registered.begin(), rules.registered.end(), same)) return true;
  if (beneath(object.path, rules.dirs)) return true;
  if (!beneath(object.path, {paths.shm_dir})) return false;
  std::string name = object.path.substr(paths.shm_dir.size() + 1);
  return std::any_of(rules.globs.begin(), rules.globs.end(), [&](const std::string& g) {
    return ::fnmatch(g.c_str(), name.c_str(), FNM_PATHNAME) == 0;
  });
}

// One candidate removed, or kept with the reason.
PathReport settle(const Candidate& c, const std::map<Identity, pid_t>& holders,
                  const DiscoveryRules& rules, const PathRules& paths, int root) {
  const auto& [object, stx] = c;
  PathReport r{.kind = beneath(object->path, {paths.shm_dir}) ? PathKind::shm : PathKind::file,
               .path = object->path,
               .outcome = Outcome::kept,
               .bytes = stx.stx_blocks * 512};
  if (stx.stx_uid != rules.owner) {
    r.detail = fmt::format("owned by uid {}", stx.stx_uid);
  } else if (!born_after(stx, rules.created_unix_ms)) {
    r.detail = "existed before the job";
  } else if (auto h = holders.find({object->dev, object->ino}); h != holders.end()) {
    std::string command = read_command_line(h->second);
    r.detail = command.empty() ? fmt::format("held by pid {}", h->second)
                               : fmt::format("held by pid {} ({})", h->second, command);
  } else if (rules.mode == Discover::report) {
    r.detail = "discover = report";
  } else {
    TrackedPath path{.kind = PathKind::file,
                     .path = object->path,
                     .identity = {object->dev, object->ino, stx.stx_uid, S_IFREG}};
    PathReport removed = remove_path(paths, root, path, rules.owner);
    r.outcome = removed.outcome;
    r.removed = removed.removed;
    r.detail = removed.detail;
  }
  return r;
}

}  // namespace

std::vector<PathReport> settle_discovered(const std::vector<HeldObject>& held,
                                          const DiscoveryRules& rules, const PathRules& paths,
                                          int root) {
  std::vector<Candidate> candidates;
  for (const HeldObject& object : held) {
    if (registered(object, rules, paths)) continue;
    struct statx stx{};
    if (statx_in_root(paths, root, object.path, stx) != 0) {
      continue;  // gone since (the job removed it as it died, say)
    }
    bool same = ::makedev(stx.stx_dev_major, stx.stx_dev_minor) == object.dev &&
                stx.stx_ino == object.ino && S_ISREG(stx.stx_mode);
    if (same) candidates.push_back({&object, stx});
  }
  // Only what passes the cheap rules is worth the walk over every process on the node.
  std::set<Identity> wanted;
  for (const auto& c : candidates) {
    if (c.stx.stx_uid == rules.owner && born_after(c.stx, rules.created_unix_ms)) {
      wanted.insert({c.object->dev, c.object->ino});
    }
  }
  auto holders = wanted.empty() ? std::map<Identity, pid_t>{} : outside_holders(wanted, rules.self);
  std::vector<PathReport> out;
  for (const auto& c : candidates) out.push_back(settle(c, holders, rules, paths, root));
  return out;
}

}  // namespace warden
