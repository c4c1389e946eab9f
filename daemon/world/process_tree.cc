#include "world/process_tree.h"

#include <dirent.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <deque>
#include <sstream>
#include <string_view>

namespace warden {
namespace {

// Calls `visit` with each "K=V" entry of an environment in /proc form ("K=V\0K=V\0..."), until
// it returns true; returns whether one did.
template <class Visit>
bool any_entry(std::string_view environ, Visit visit) {
  for (std::size_t pos = 0; pos < environ.size();) {
    std::size_t end = environ.find('\0', pos);
    if (end == std::string_view::npos) end = environ.size();
    if (visit(environ.substr(pos, end - pos))) return true;
    pos = end + 1;
  }
  return false;
}

bool has_entry(std::string_view environ, std::string_view entry) {
  return any_entry(environ, [entry](std::string_view e) { return e == entry; });
}

}  // namespace

std::vector<ProcEntry> scan_processes(bool with_uid) {
  std::vector<ProcEntry> out;
  DIR* proc = ::opendir("/proc");
  if (proc == nullptr) return out;
  while (dirent* e = ::readdir(proc)) {
    char* end = nullptr;
    long pid = std::strtol(e->d_name, &end, 10);
    if (pid <= 0 || *end != '\0') continue;
    auto stat = read_proc_stat(static_cast<pid_t>(pid));
    if (!stat || is_kernel_thread(*stat)) continue;  // gone, or a kernel thread
    std::optional<uid_t> uid = with_uid ? read_proc_real_uid(static_cast<pid_t>(pid)) : 0;
    if (!uid) continue;
    out.push_back({.pid = static_cast<pid_t>(pid), .stat = *stat, .uid = *uid});
  }
  ::closedir(proc);
  return out;
}

std::vector<pid_t> read_descendants(pid_t pid) {
  // Bounded, as a fork bomb's tree would otherwise hold the registration.
  constexpr std::size_t kMax = 65'536;
  std::vector<pid_t> out;
  std::deque<pid_t> pending{pid};
  while (!pending.empty() && out.size() < kMax) {
    pid_t parent = pending.front();
    pending.pop_front();
    std::string tasks = "/proc/" + std::to_string(parent) + "/task";
    DIR* dir = ::opendir(tasks.c_str());
    if (dir == nullptr) continue;  // exited meanwhile
    while (dirent* e = ::readdir(dir)) {
      if (e->d_name[0] == '.') continue;
      std::string name = "task/" + std::string(e->d_name) + "/children";
      std::istringstream children(read_proc_file(parent, name.c_str()).value_or(""));
      for (pid_t child = 0; children >> child;) {
        out.push_back(child);
        pending.push_back(child);
      }
    }
    ::closedir(dir);
  }
  return out;
}

std::optional<std::string> read_environ(pid_t pid) {
  return read_proc_file(pid, "environ", 1 << 20);
}

ScanCache::Processes ScanCache::processes(std::chrono::steady_clock::time_point asked,
                                          bool with_uid) {
  std::lock_guard lock(mutex_);
  if (latest_ && started_ >= asked && (with_uid_ || !with_uid)) return latest_;
  started_ = std::chrono::steady_clock::now();
  with_uid_ = with_uid;
  latest_ = std::make_shared<const std::vector<ProcEntry>>(scan_processes(with_uid));
  // Only processes still alive keep their cookie entries, so the memo stays the node's size.
  std::map<ProcessImage, std::string> kept;
  images_.clear();
  for (const auto& e : *latest_) {
    images_[e.pid] = image_of(e);
    auto it = cookies_.find(image_of(e));
    if (it != cookies_.end()) kept.insert(cookies_.extract(it));
  }
  cookies_ = std::move(kept);
  return latest_;
}

std::optional<std::string> ScanCache::cookie_entries(pid_t pid) {
  std::lock_guard lock(mutex_);
  auto image = images_.find(pid);
  if (image == images_.end()) return std::nullopt;
  const ProcessImage& key = image->second;
  if (auto it = cookies_.find(key); it != cookies_.end()) return it->second;
  auto environ = read_environ(pid);
  // A read that raced with an exec, an exit or a recycled pid is not remembered for this image.
  auto now = read_proc_stat(pid);
  if (!environ || !now || ProcessImage{pid, now->start_time, now->env_start} != key) {
    return std::nullopt;
  }
  std::string entries;
  any_entry(*environ, [&entries](std::string_view entry) {
    if (entry.starts_with("WARDEN_JOB=") || entry.starts_with("WARDEN_INSTANCE=")) {
      entries.append(entry).push_back('\0');
    }
    return false;  // every entry
  });
  cookies_.emplace(key, entries);
  return entries;
}

std::vector<std::string> job_cookie(std::uint64_t job, const std::string& instance) {
  return {"WARDEN_JOB=" + std::to_string(job), "WARDEN_INSTANCE=" + instance};
}

namespace {

using EnvironOf = std::function<std::optional<std::string>(pid_t)>;

// One discovery over one scan: the scan indexed by pid and by parent, the members so far, and
// the rules for what may be taken.
class TreeWalk {
 public:
  TreeWalk(const std::vector<ProcEntry>& scan, const DiscoveryQuery& query,
           const EnvironOf& environ_of, CookieMemo& memo)
      : scan_(scan), query_(query), environ_of_(environ_of), memo_(memo), members_(query.members) {
    for (const auto& e : scan) {
      by_pid_[e.pid] = &e;
      children_.emplace(e.stat.ppid, &e);
    }
  }

  // Members' descendants, then whatever shares a member's group or session or carries the
  // cookie, and their descendants, until nothing more is found.
  std::vector<Discovered> run() {
    for (const auto& [pid, start_time] : members_) {
      if (alive_as(pid, start_time)) frontier_.push_back(pid);
    }
    take_descendants();
    for (bool grew = true; grew;) {
      grew = false;
      for (const auto& e : scan_) {
        if (members_.contains(e.pid) || !eligible(e) || under_spared_main(e)) continue;
        std::string why = kinship(e);
        if (why.empty()) continue;
        take(e, std::move(why));
        grew = true;
      }
      take_descendants();
    }
    return std::move(found_);
  }

 private:
  // True if the scan shows this very process (same start time) alive.
  bool alive_as(pid_t pid, std::uint64_t start_time) const {
    auto it = by_pid_.find(pid);
    return it != by_pid_.end() && it->second->stat.start_time == start_time;
  }

  // A group or session is the job's when a member or a given leader leads it. A leader that has
  // exited still names its group while members remain (the kernel does not recycle the id then);
  // one whose pid now belongs to a younger process does not.
  bool leads(pid_t id) const {
    for (const ProcessSet* set : std::array<const ProcessSet*, 2>{&members_, &query_.leaders}) {
      auto it = set->find(id);
      if (it != set->end() && (alive_as(id, it->second) || !by_pid_.contains(id))) return true;
    }
    return false;
  }

  bool carries_cookie(const ProcEntry& e) {
    ProcessImage key = image_of(e);
    if (auto it = memo_.find(key); it != memo_.end()) return it->second;
    auto env = environ_of_(e.pid);
    // An environment that could not be read (the process was mid-exec, say) is asked again in
    // the next scan, not remembered as lacking the cookie.
    if (!env) return false;
    bool carries = !query_.cookie.empty() &&
                   std::all_of(query_.cookie.begin(), query_.cookie.end(),
                               [&](const std::string& entry) { return has_entry(*env, entry); });
    memo_.emplace(key, carries);
    return carries;
  }

  // Why `e` is the job's though no member is its ancestor; empty: it is not.
  std::string kinship(const ProcEntry& e) {
    if (leads(e.stat.pgrp)) return "in process group of " + std::to_string(e.stat.pgrp);
    if (leads(e.stat.session)) return "in session of " + std::to_string(e.stat.session);
    if (carries_cookie(e)) return "carries " + query_.cookie.front();
    return {};
  }

  // Whether `e` may be taken at all: never init, wardend, a spared main process or anything
  // running as another user (unless the job is root's).
  bool eligible(const ProcEntry& e) const {
    return e.pid != 1 && e.pid != query_.self && e.pid != query_.spared &&
           (query_.owner == 0 || e.uid == query_.owner);
  }

  // A process reached by group, session or cookie whose ancestry reaches the spared main process
  // before any member belongs to the main process, not to what is being cleaned.
  bool under_spared_main(const ProcEntry& e) const {
    if (query_.spared == 0) return false;
    pid_t p = e.stat.ppid;
    for (int hops = 0; p > 1 && hops < 4096; ++hops) {
      if (members_.contains(p)) return false;
      if (p == query_.spared) return true;
      auto it = by_pid_.find(p);
      if (it == by_pid_.end()) return false;
      p = it->second->stat.ppid;
    }
    return false;
  }

  void take(const ProcEntry& e, std::string why) {
    members_[e.pid] = e.stat.start_time;
    found_.push_back({.pid = e.pid, .start_time = e.stat.start_time, .found_by = std::move(why)});
    frontier_.push_back(e.pid);
  }

  void take_descendants() {
    while (!frontier_.empty()) {
      pid_t parent = frontier_.front();
      frontier_.pop_front();
      auto [lo, hi] = children_.equal_range(parent);
      for (auto it = lo; it != hi; ++it) {
        const ProcEntry& child = *it->second;
        if (members_.contains(child.pid) || !eligible(child)) continue;
        take(child, "child of " + std::to_string(parent));
      }
    }
  }

  const std::vector<ProcEntry>& scan_;
  const DiscoveryQuery& query_;
  const EnvironOf& environ_of_;
  CookieMemo& memo_;
  std::map<pid_t, const ProcEntry*> by_pid_;
  std::multimap<pid_t, const ProcEntry*> children_;
  ProcessSet members_;
  std::deque<pid_t> frontier_;
  std::vector<Discovered> found_;
};

}  // namespace

std::vector<Discovered> discover(const std::vector<ProcEntry>& scan, const DiscoveryQuery& query,
                                 const EnvironOf& environ_of, CookieMemo& memo) {
  return TreeWalk(scan, query, environ_of, memo).run();
}

}  // namespace warden
