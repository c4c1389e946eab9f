#include "world/discovery.h"

#include <dirent.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <map>
#include <cstring>
#include <set>

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

// The whole of a /proc file, read in as few read()s as its size needs (the kernel makes the text
// of maps on every read, so iostreams' small reads cost more than the parsing).
std::string slurp(const std::string& path) {
  std::string out;
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return out;
  char buffer[64 * 1024];
  for (ssize_t n; (n = ::read(fd.get(), buffer, sizeof buffer)) > 0;) out.append(buffer, n);
  return out;
}

// Calls `each(path, dev, ino)` for every mapping of a file in /proc/PID/maps ("addr perms offset
// MAJ:MIN INODE PATH").
template <class Each>
void for_each_mapping(pid_t pid, Each each) {
  const std::string maps = slurp("/proc/" + std::to_string(pid) + "/maps");
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
    for_each_mapping(pid, [&](std::string_view, dev_t dev, ino_t ino) {
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

std::vector<HeldObject> read_held_objects(const std::vector<pid_t>& pids,
                                          const std::vector<std::string>& roots) {
  std::map<Identity, std::string> found;
  std::set<Identity> elsewhere;  // seen, and not beneath a root
  // A worker holds its batches' segment by many descriptors: each file's path is read once.
  auto unseen = [&](const struct stat& st) {
    Identity id{st.st_dev, st.st_ino};
    return !found.contains(id) && !elsewhere.contains(id);
  };
  for (pid_t pid : pids) {
    for_each_descriptor(pid, unseen, [&](const std::string& path, const struct stat& st) {
      if (path.empty()) return;  // seen before
      Identity id{st.st_dev, st.st_ino};
      if (!deleted(path) && beneath(path, roots)) {
        found.emplace(id, path);
      } else {
        elsewhere.insert(id);
      }
    });
    for_each_mapping(pid, [&](std::string_view path, dev_t dev, ino_t ino) {
      if (!deleted(path) && beneath(std::string(path), roots)) {
        found.emplace(Identity{dev, ino}, std::string(path));
      }
    });
  }
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
