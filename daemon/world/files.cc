#include "world/files.h"

#include <dirent.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>

#include "proto/unique_fd.h"

namespace warden {
namespace {

constexpr int kMaxDepth = 256;

std::string errno_text(const std::string& what, int err) {
  return what + ": " + std::strerror(err);
}

[[noreturn]] void refuse(const std::string& path, const std::string& why) {
  throw Error(ErrorCode::bad_request, path + ": " + why);
}

// Opens `relative` beneath `dirfd` one component at a time, none of them a symlink (ELOOP): what
// openat2 does where a seccomp filter does not know it and answers ENOSYS (systemd's and some
// container runtimes' filters do).
int walk_beneath(int dirfd, const std::string& relative, std::uint64_t flags) {
  std::vector<std::string> parts;
  for (std::size_t i = 0; i <= relative.size();) {
    std::size_t j = std::min(relative.find('/', i), relative.size());
    if (j > i) parts.push_back(relative.substr(i, j - i));
    i = j + 1;
  }
  if (parts.empty()) return ::openat(dirfd, ".", static_cast<int>(flags) | O_CLOEXEC);
  UniqueFd held;
  int at = dirfd;
  for (std::size_t k = 0; k < parts.size(); ++k) {
    const bool last = k + 1 == parts.size();
    int fd =
        ::openat(at, parts[k].c_str(),
                 (last ? static_cast<int>(flags) : O_PATH | O_DIRECTORY) | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
      int err = errno;
      struct stat st {};
      if ((err == ENOTDIR || err == ELOOP) &&
          ::fstatat(at, parts[k].c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode)) {
        err = ELOOP;
      }
      errno = err;
      return -1;
    }
    if (last) return fd;
    held.reset(fd);
    at = fd;
  }
  return -1;  // not reached
}

// openat2 beneath `dirfd`, refusing symlinks (and /proc magic links) in every component.
int open_beneath(int dirfd, const std::string& relative, std::uint64_t flags) {
  open_how how{};
  how.flags = flags | O_CLOEXEC | O_NOFOLLOW;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
  for (;;) {
    long fd = ::syscall(SYS_openat2, dirfd, relative.c_str(), &how, sizeof(how));
    if (fd < 0 && errno == ENOSYS) return walk_beneath(dirfd, relative, flags);
    if (fd >= 0 || errno != EAGAIN) return static_cast<int>(fd);
  }
}

PathIdentity identity_of(const struct stat& st) {
  return {.dev = st.st_dev, .ino = st.st_ino, .uid = st.st_uid, .type = st.st_mode & S_IFMT};
}

// An absolute path split into components; refuses ".", ".." and empty names.
std::vector<std::string> components(const std::string& path) {
  if (path.empty() || path[0] != '/') refuse(path, "must be an absolute path");
  std::vector<std::string> parts;
  std::size_t i = 1;
  while (i <= path.size()) {
    std::size_t j = path.find('/', i);
    if (j == std::string::npos) j = path.size();
    std::string part = path.substr(i, j - i);
    if (part == "." || part == "..") refuse(path, "must not contain '.' or '..' components");
    if (!part.empty()) parts.push_back(std::move(part));
    i = j + 1;
  }
  return parts;
}

std::string join(const std::vector<std::string>& parts, std::size_t from, std::size_t to) {
  std::string out;
  for (std::size_t k = from; k < to; ++k) out += (out.empty() ? "" : "/") + parts[k];
  return out;
}

// Where a registered path lies: its allowed root, the parent beneath that root, and its name.
struct Location {
  std::string root;
  std::string parent;  // relative to root; empty when the entry is directly beneath it
  std::string name;
};

Location locate(const PathRules& rules, const std::string& path) {
  auto parts = components(path);
  const std::string* best = nullptr;
  std::size_t best_depth = 0;
  for (const auto& root : rules.allowed_roots) {
    auto root_parts = components(root);
    if (root_parts.size() >= parts.size()) continue;
    if (!std::equal(root_parts.begin(), root_parts.end(), parts.begin())) continue;
    if (best == nullptr || root_parts.size() > best_depth) {
      best = &root;
      best_depth = root_parts.size();
    }
  }
  if (best == nullptr) {
    std::string roots;
    for (const auto& r : rules.allowed_roots) roots += (roots.empty() ? "" : ", ") + r;
    refuse(path, "is not beneath an allowed root (" + roots + ")");
  }
  return {.root = *best, .parent = join(parts, best_depth, parts.size() - 1), .name = parts.back()};
}

std::string shm_name(const std::string& given) {
  std::string name = given[0] == '/' ? given.substr(1) : given;
  if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos) {
    refuse(given, "is not a valid shm name (one name, no '/')");
  }
  return name;
}

// The parent directory of a registered entry, opened without following any symlink.
struct OpenedParent {
  UniqueFd fd;
  int err = 0;
};

// An allowed root (trusted, from the config) as the job sees it: beneath its "/", where symlinks
// are resolved as they are for the job (without openat2, a symlink in it is refused instead).
UniqueFd open_allowed_root(int job_root, const std::string& path, int flags) {
  if (job_root == AT_FDCWD) return UniqueFd(::open(path.c_str(), flags | O_CLOEXEC));
  UniqueFd fd = open_in_root(job_root, path, flags);
  if (!fd && errno == ENOSYS) {
    return UniqueFd(walk_beneath(job_root, path, static_cast<std::uint64_t>(flags)));
  }
  return fd;
}

OpenedParent open_parent(int job_root, const Location& at) {
  UniqueFd root = open_allowed_root(job_root, at.root, O_PATH | O_DIRECTORY);
  if (!root) return {.err = errno};
  if (at.parent.empty()) return {.fd = std::move(root)};
  UniqueFd parent(open_beneath(root.get(), at.parent, O_PATH | O_DIRECTORY));
  if (!parent) return {.err = errno};
  return {.fd = std::move(parent)};
}

// The space a file takes (a sparse segment's holes take none), which removing its last link frees.
std::uint64_t space_of(const struct stat& st) { return static_cast<std::uint64_t>(st.st_blocks) * 512; }

struct TreeResult {
  std::size_t removed = 0;
  std::uint64_t bytes = 0;  // the space the removed files took
  std::vector<std::string> problems;
};

// Empties the directory `dirfd` (on device `dev`) depth-first.
void empty_tree(int dirfd, dev_t dev, uid_t owner, const std::string& where, int depth,
                TreeResult& result) {
  if (depth > kMaxDepth) {
    result.problems.push_back(where + ": deeper than " + std::to_string(kMaxDepth) + " levels");
    return;
  }
  int listing = ::openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  DIR* dir = listing >= 0 ? ::fdopendir(listing) : nullptr;
  if (dir == nullptr) {
    if (listing >= 0) ::close(listing);
    result.problems.push_back(errno_text("list " + where, errno));
    return;
  }
  while (dirent* e = ::readdir(dir)) {
    std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    std::string path = where + "/" + name;
    struct stat st {};
    if (::fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno != ENOENT) result.problems.push_back(errno_text("stat " + path, errno));
      continue;
    }
    if (S_ISDIR(st.st_mode)) {
      if (st.st_dev != dev) {
        result.problems.push_back(path + ": a mount point; not crossed");
        continue;
      }
      if (owner != 0 && st.st_uid != owner) {
        result.problems.push_back(path + ": owned by uid " + std::to_string(st.st_uid) +
                                  "; not entered");
        continue;
      }
      UniqueFd child(::openat(dirfd, name.c_str(),
                              O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC | O_NOATIME));
      if (!child)
        child.reset(::openat(dirfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (!child) {
        result.problems.push_back(errno_text("open " + path, errno));
        continue;
      }
      empty_tree(child.get(), dev, owner, path, depth + 1, result);
      if (::unlinkat(dirfd, name.c_str(), AT_REMOVEDIR) == 0) {
        ++result.removed;
      } else if (errno != ENOENT) {
        result.problems.push_back(errno_text("rmdir " + path, errno));
      }
    } else if (::unlinkat(dirfd, name.c_str(), 0) == 0) {
      ++result.removed;
      result.bytes += space_of(st);
    } else if (errno != ENOENT) {
      result.problems.push_back(errno_text("unlink " + path, errno));
    }
  }
  ::closedir(dir);
}

PathReport remove_glob(const PathRules& rules, int job_root, const TrackedPath& glob, uid_t owner) {
  PathReport report{
      .kind = PathKind::shm_glob, .path = glob.path, .outcome = Outcome::already_gone};
  UniqueFd dirfd = open_allowed_root(job_root, rules.shm_dir, O_RDONLY | O_DIRECTORY);
  DIR* dir = dirfd ? ::fdopendir(::dup(dirfd.get())) : nullptr;
  if (dir == nullptr) {
    report.outcome = Outcome::failed;
    report.detail = errno_text("list " + rules.shm_dir, errno);
    return report;
  }
  std::vector<std::string> problems;
  while (dirent* e = ::readdir(dir)) {
    if (::fnmatch(glob.path.c_str(), e->d_name, FNM_PERIOD) != 0) continue;
    struct stat st {};
    if (::fstatat(dirfd.get(), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
    // Only the job's own segments: a pattern never reaches another user's.
    if (!S_ISREG(st.st_mode) || st.st_uid != owner) continue;
    if (::unlinkat(dirfd.get(), e->d_name, 0) == 0) {
      ++report.removed;
      report.bytes = report.bytes.value_or(0) + space_of(st);
    } else if (errno != ENOENT) {
      problems.push_back(errno_text(std::string("unlink ") + e->d_name, errno));
    }
  }
  ::closedir(dir);
  if (report.removed > 0) report.outcome = Outcome::removed;
  if (!problems.empty()) {
    report.outcome = Outcome::failed;
    report.detail = problems.front();
  }
  return report;
}

}  // namespace

UniqueFd open_in_root(int root, const std::string& path, int flags) {
  open_how how{.flags = static_cast<std::uint64_t>(flags | O_CLOEXEC),
               .mode = 0,
               .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS};
  for (;;) {
    long fd = ::syscall(SYS_openat2, root, path.c_str(), &how, sizeof(how));
    if (fd >= 0) return UniqueFd(static_cast<int>(fd));
    if (errno != EAGAIN && errno != EINTR) return {};
  }
}

int statx_in_root(const PathRules& rules, int root, const std::string& path, struct statx& out) {
  Location at;
  try {
    at = locate(rules, path);
  } catch (const Error&) {
    return EPERM;
  }
  auto parent = open_parent(root, at);
  if (!parent.fd) return parent.err;
  if (::statx(parent.fd.get(), at.name.c_str(), AT_SYMLINK_NOFOLLOW,
              STATX_BASIC_STATS | STATX_BTIME, &out) != 0) {
    return errno;
  }
  return 0;
}

TrackedPath resolve_path(const PathRules& rules, int job_root, PathKind kind,
                         const std::string& given) {
  if (kind == PathKind::shm_glob) {
    if (given.find('/') != std::string::npos) refuse(given, "a shm pattern must not contain '/'");
    return {.kind = kind, .path = given};
  }
  std::string path = kind == PathKind::shm ? rules.shm_dir + "/" + shm_name(given) : given;
  Location at = kind == PathKind::shm ? Location{.root = rules.shm_dir, .name = shm_name(given)}
                                      : locate(rules, path);
  auto parent = open_parent(job_root, at);
  if (!parent.fd) {
    if (parent.err == ENOENT) throw Error(ErrorCode::not_found, path + ": no such directory");
    if (parent.err == ELOOP || parent.err == EXDEV) {
      refuse(path, "a component is a symlink; register the real path");
    }
    refuse(path, errno_text("cannot open its directory", parent.err));
  }
  struct stat st {};
  if (::fstatat(parent.fd.get(), at.name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT) throw Error(ErrorCode::not_found, path + ": no such file or directory");
    refuse(path, errno_text("stat", errno));
  }
  bool ok_type = kind == PathKind::dir ? S_ISDIR(st.st_mode)
                 : kind == PathKind::shm
                     ? S_ISREG(st.st_mode)
                     : S_ISREG(st.st_mode) || S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode);
  if (!ok_type) {
    const char* what = S_ISLNK(st.st_mode)                          ? "a symlink"
                       : S_ISDIR(st.st_mode)                        ? "a directory (use add_dir)"
                       : S_ISBLK(st.st_mode) || S_ISCHR(st.st_mode) ? "a device"
                                                                    : "not a file of this kind";
    refuse(path, std::string("is ") + what);
  }
  // A canonical spelling, so that the same path registered twice is recognised.
  std::string canonical = at.root + (at.parent.empty() ? "" : "/" + at.parent) + "/" + at.name;
  return {.kind = kind, .path = canonical, .identity = identity_of(st)};
}

namespace {

// Why a tracked path's directory could not be opened, as its report says it.
void report_unopened_parent(int err, PathReport& report) {
  if (err == ENOENT) {
    report.outcome = Outcome::already_gone;
  } else if (err == ELOOP || err == EXDEV || err == ENOTDIR) {
    report.outcome = Outcome::refused;
    report.detail = "a directory on its path was replaced by a symlink or another file";
  } else {
    report.outcome = Outcome::failed;
    report.detail = errno_text("open its directory", err);
  }
}

// Unlinks a file or segment that `st` (its identity, checked) describes.
void unlink_checked(int parent, const std::string& name, const struct stat& st,
                    PathReport& report) {
  if (::unlinkat(parent, name.c_str(), 0) == 0) {
    report.outcome = Outcome::removed;
    report.removed = 1;
    report.bytes = space_of(st);
  } else {
    report.outcome = errno == ENOENT ? Outcome::already_gone : Outcome::failed;
    if (errno != ENOENT) report.detail = errno_text("unlink", errno);
  }
}

// Empties and removes a directory whose identity was checked, if what opens is still it.
void remove_checked_dir(int parent, const std::string& name, const TrackedPath& tracked,
                        uid_t owner, PathReport& report) {
  UniqueFd dir(::openat(parent, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  struct stat opened {};
  if (!dir || ::fstat(dir.get(), &opened) != 0 || identity_of(opened) != tracked.identity) {
    report.outcome = Outcome::refused;
    report.detail = "replaced while being opened";
    return;
  }
  TreeResult tree;
  empty_tree(dir.get(), opened.st_dev, owner, tracked.path, 0, tree);
  report.removed = tree.removed;
  report.bytes = tree.bytes;
  if (::unlinkat(parent, name.c_str(), AT_REMOVEDIR) == 0) {
    ++report.removed;
    report.outcome = Outcome::removed;
    return;
  }
  report.outcome = Outcome::failed;
  report.detail = tree.problems.empty() ? errno_text("rmdir", errno) : tree.problems.front();
  if (tree.problems.size() > 1) {
    report.detail += " (and " + std::to_string(tree.problems.size() - 1) + " more)";
  }
}

// Removes a registered file, segment or directory, only if it is still what was registered.
void remove_registered(const PathRules& rules, int job_root, const TrackedPath& tracked,
                       uid_t owner, PathReport& report) {
  Location at =
      tracked.kind == PathKind::shm
          ? Location{.root = rules.shm_dir, .name = tracked.path.substr(rules.shm_dir.size() + 1)}
          : locate(rules, tracked.path);
  auto parent = open_parent(job_root, at);
  if (!parent.fd) return report_unopened_parent(parent.err, report);
  struct stat st {};
  if (::fstatat(parent.fd.get(), at.name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    report.outcome = errno == ENOENT ? Outcome::already_gone : Outcome::failed;
    if (errno != ENOENT) report.detail = errno_text("stat", errno);
    return;
  }
  if (identity_of(st) != tracked.identity) {
    report.outcome = Outcome::refused;
    report.detail = S_ISLNK(st.st_mode) ? "replaced by a symlink" : "replaced by another file";
    return;
  }
  if (tracked.kind == PathKind::dir) {
    remove_checked_dir(parent.fd.get(), at.name, tracked, owner, report);
  } else {
    unlink_checked(parent.fd.get(), at.name, st, report);
  }
}

}  // namespace

PathReport remove_path(const PathRules& rules, int job_root, const TrackedPath& tracked,
                       uid_t owner) {
  auto start = std::chrono::steady_clock::now();
  PathReport report;
  if (tracked.kind == PathKind::shm_glob) {
    report = remove_glob(rules, job_root, tracked, owner);
  } else {
    report = {.kind = tracked.kind, .path = tracked.path};
    remove_registered(rules, job_root, tracked, owner, report);
  }
  report.elapsed_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  return report;
}

}  // namespace warden
