#include "world/node_check.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <thread>

#include <fmt/format.h>

#include "world/files.h"
#include "world/process.h"

namespace warden {
namespace {

constexpr std::size_t kLargestOwners = 3;

std::int64_t clock_ms(clockid_t clock) {
  timespec ts{};
  ::clock_gettime(clock, &ts);
  return std::int64_t{ts.tv_sec} * 1000 + ts.tv_nsec / 1'000'000;
}

std::string mib(std::uint64_t bytes) { return fmt::format("{:.1f} MiB", bytes / 1048576.0); }

std::string named(pid_t pid, const std::string& command) {
  return command.empty() ? fmt::format("pid {}", pid) : fmt::format("pid {} ({})", pid, command);
}

void attribute(Finding& f, const CheckedJob& job) {
  f.job = job.id;
  f.job_name = job.name;
}

// The processes that outlived a cleaned job's cleanup and are still those processes.
void look_at_unkillable(const CheckedJob& job, NodeCheckContext& context,
                        std::vector<Found>& found) {
  for (const ProcessReport& p : job.unkillable) {
    std::optional<ProcessHandle> handle;
    try {
      handle = context.kernel.open(p.pid);
    } catch (const Error&) {
      continue;  // gone at last
    }
    if (context.kernel.exited(handle->pidfd.get())) continue;
    if (p.start_time != 0 && handle->identity.start_time != p.start_time) continue;  // recycled
    ProcessSnapshot s = context.kernel.snapshot(p.pid);
    std::string command = context.kernel.command_line(p.pid);
    Finding f{.kind = FindingKind::unkillable,
              .what = named(p.pid, command),
              .action = "it survived SIGKILL, so it waits in the kernel: find what it waits on "
                        "(a GPU driver, NFS, a FUSE server) and release that, or reboot the "
                        "node; `wardenctl check --reclaim` sends SIGKILL again",
              .detail = fmt::format("state {}{}", s.state,
                                    s.wchan.empty() ? "" : ", waiting in " + s.wchan),
              .since_unix_ms = job.finished_unix_ms,
              .pid = p.pid,
              .uid = job.uid,
              .command = command};
    attribute(f, job);
    found.push_back({.finding = std::move(f), .start_time = handle->identity.start_time});
  }
}

void look_at_cgroup(const CheckedJob& job, const std::string& cgroup, NodeCheckContext& context,
                    std::vector<Found>& found) {
  if (context.cgroups == nullptr || !context.cgroups->populated(cgroup)) return;
  std::vector<pid_t> members = context.cgroups->members(cgroup);
  std::string listed;
  for (std::size_t i = 0; i < members.size() && i < 5; ++i) {
    listed += (i == 0 ? "" : ", ") + std::to_string(members[i]);
  }
  Finding f{.kind = FindingKind::populated_cgroup,
            .what = "cgroup " + cgroup,
            .action = "`wardenctl check --reclaim` kills its processes (cgroup.kill) and removes it",
            .detail = fmt::format("{} process{} still in it{}", members.size(),
                                  members.size() == 1 ? "" : "es",
                                  listed.empty() ? "" : ": pid " + listed),
            .since_unix_ms = job.finished_unix_ms,
            .uid = job.uid,
            .path = cgroup};
  attribute(f, job);
  found.push_back({.finding = std::move(f), .cgroup = cgroup});
}

void look_at_paths(const CheckedJob& job, std::vector<Found>& found) {
  if (!job.paths_here) return;  // a container's files: not reachable from here
  for (const LeftPath& left : job.left) {
    if (info_of(left.path.kind).pattern) continue;  // not one object
    struct stat st{};
    if (::lstat(left.path.path.c_str(), &st) != 0) continue;  // gone since
    const PathIdentity& id = left.path.identity;
    bool same = st.st_dev == id.dev && st.st_ino == id.ino && st.st_uid == id.uid &&
                (st.st_mode & S_IFMT) == id.type;
    std::string action =
        left.outcome == Outcome::failed && same
            ? "removing it failed; `wardenctl check --reclaim` tries again"
            : "warden will not remove it (" +
                  std::string(same ? "see detail" : "it is no longer what the job registered") +
                  "): check who uses it, then remove it by hand";
    Finding f{.kind = FindingKind::leftover_path,
              .what = left.path.path,
              .action = std::move(action),
              .detail = fmt::format("{}: {}", to_string(left.outcome), left.detail),
              .since_unix_ms = job.finished_unix_ms,
              .uid = st.st_uid,
              .path = left.path.path,
              .bytes = static_cast<std::uint64_t>(st.st_blocks) * 512};
    attribute(f, job);
    found.push_back({.finding = std::move(f),
                     .path = left.path,
                     .removable = left.outcome == Outcome::failed && same});
  }
}

void look_at_gpus(const std::vector<CheckedJob>& jobs, const NodeCheckOptions& options,
                  NodeCheckContext& context, NodeLook& look) {
  if (context.gpus == nullptr || !context.gpus->any()) return;
  GpuSnapshot snapshot = context.gpus->look();
  if (!snapshot.has_memory()) look.note = "GPU memory not measured: " + snapshot.note;
  JobOwners owners(jobs, context.cgroups);
  std::vector<std::uint64_t> held(snapshot.devices.size(), 0);
  for (const auto& [key, bytes] : snapshot.memory) held[key.first] += bytes;
  for (const auto& [pid, devices] : context.gpus->holders(snapshot)) {
    const CheckedJob* owner = owners.of(pid);
    if (owner != nullptr && owner->active) continue;
    auto stat = read_proc_stat(pid);
    if (!stat) continue;  // exited meanwhile
    std::string command = read_command_line(pid);
    std::string nodes;
    std::optional<std::uint64_t> memory;
    for (std::size_t i : devices) {
      nodes += (nodes.empty() ? "" : ", ") + snapshot.devices[i].path;
      if (auto m = snapshot.memory_of(i, pid)) memory = memory.value_or(0) + *m;
    }
    Finding f{.kind = FindingKind::stray_gpu_holder,
              .what = named(pid, command) + " holds " + nodes,
              .action = "it belongs to no running job: end it (`wardenctl check --reclaim` sends "
                        "SIGTERM, then SIGKILL) or register it with the job it serves",
              .detail = memory ? mib(*memory) + " of device memory" : "",
              .since_unix_ms = start_unix_ms(stat->start_time),
              .pid = pid,
              .uid = read_proc_real_uid(pid),
              .command = command,
              .path = snapshot.devices[devices.front()].path,
              .bytes = memory};
    if (owner != nullptr) attribute(f, *owner);
    look.found.push_back({.finding = std::move(f), .start_time = stat->start_time});
  }
  if (!snapshot.has_memory()) return;
  for (std::size_t i = 0; i < snapshot.devices.size(); ++i) {
    const GpuDevice& d = snapshot.devices[i];
    if (!d.memory_used || *d.memory_used <= held[i] + options.gpu_unheld_bytes) continue;
    std::uint64_t unheld = *d.memory_used - held[i];
    look.found.push_back(
        {.finding = {.kind = FindingKind::unheld_gpu_memory,
                     .what = fmt::format("{}: {} in use that no process holds", d.path, mib(unheld)),
                     .action = "the driver kept it (a context never torn down): reset the GPU "
                               "(nvidia-smi --gpu-reset) while it is idle, or drain the node",
                     .detail = d.uuid,
                     .path = d.path,
                     .bytes = unheld}});
  }
}

// The owners of most of a folder's space, largest first: (uid, bytes, entries).
std::vector<std::tuple<uid_t, std::uint64_t, std::size_t>> largest_owners(const std::string& dir) {
  std::map<uid_t, std::pair<std::uint64_t, std::size_t>> by_uid;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d)) {
      struct stat st{};
      if (e->d_name[0] == '.' || ::fstatat(::dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
        continue;
      }
      auto& [bytes, entries] = by_uid[st.st_uid];
      bytes += static_cast<std::uint64_t>(st.st_blocks) * 512;
      ++entries;
    }
    ::closedir(d);
  }
  std::vector<std::tuple<uid_t, std::uint64_t, std::size_t>> out;
  for (const auto& [uid, usage] : by_uid) out.emplace_back(uid, usage.first, usage.second);
  std::sort(out.begin(), out.end(),
            [](const auto& a, const auto& b) { return std::get<1>(a) > std::get<1>(b); });
  if (out.size() > kLargestOwners) out.resize(kLargestOwners);
  return out;
}

void look_at_shm(const NodeCheckOptions& options, const std::string& shm_dir, NodeLook& look) {
  struct statvfs fs{};
  if (::statvfs(shm_dir.c_str(), &fs) != 0 || fs.f_blocks == 0) return;
  std::uint64_t total = std::uint64_t{fs.f_blocks} * fs.f_frsize;
  std::uint64_t used = std::uint64_t{fs.f_blocks - fs.f_bfree} * fs.f_frsize;
  double share = static_cast<double>(used) / static_cast<double>(total);
  if (share <= options.shm_max_share) return;
  std::string owners;
  for (const auto& [uid, bytes, entries] : largest_owners(shm_dir)) {
    owners += fmt::format("{}uid {}: {} in {} entr{}", owners.empty() ? "" : "; ", uid, mib(bytes),
                          entries, entries == 1 ? "y" : "ies");
  }
  look.found.push_back(
      {.finding = {.kind = FindingKind::shm_full,
                   .what = fmt::format("{} is {:.0f}% full ({} of {})", shm_dir,
                                       share * 100, mib(used), mib(total)),
                   .action = fmt::format("more than {:.0f}% is in use: remove what its owners no "
                                         "longer need (ls -la {})",
                                         options.shm_max_share * 100, shm_dir),
                   .detail = owners.empty() ? "" : "largest owners: " + owners,
                   .path = shm_dir,
                   .bytes = used}});
}

// A process the reclaim is ending.
struct Victim {
  std::size_t finding = 0;  // index into the findings
  pid_t pid = 0;
  UniqueFd pidfd;
  bool killed = false;  // SIGKILL sent
  bool gone = false;
};

// Waits until every victim has exited or `deadline` passes, on their pidfds (readable at exit).
void wait_for_exits(Kernel& kernel, std::vector<Victim>& victims, Clock::time_point deadline) {
  for (;;) {
    std::vector<pollfd> fds;
    for (Victim& v : victims) {
      if (!v.gone) v.gone = kernel.exited(v.pidfd.get());
      if (!v.gone) fds.push_back({.fd = v.pidfd.get(), .events = POLLIN});
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (fds.empty() || left.count() <= 0) return;
    int ready = ::poll(fds.data(), fds.size(), static_cast<int>(left.count()));
    // A pidfd has been seen readable before its process is gone: do not spin on it.
    if (ready > 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

// Opens `pid` if it is still the process the finding named.
std::optional<ProcessHandle> reopen(Kernel& kernel, pid_t pid, std::uint64_t start_time) {
  try {
    ProcessHandle handle = kernel.open(pid);
    if (start_time == 0 || handle.identity.start_time == start_time) return handle;
  } catch (const Error&) {
  }
  return std::nullopt;
}

}  // namespace

std::int64_t start_unix_ms(std::uint64_t start_ticks) {
  static const long ticks_per_s = ::sysconf(_SC_CLK_TCK);
  std::int64_t boot_unix_ms = clock_ms(CLOCK_REALTIME) - clock_ms(CLOCK_BOOTTIME);
  return boot_unix_ms + static_cast<std::int64_t>(start_ticks * 1000 / ticks_per_s);
}

NodeLook look_at_node(const std::vector<CheckedJob>& jobs, const NodeCheckOptions& options,
                      const CleanupOptions& cleanup, NodeCheckContext& context) {
  NodeLook look;
  for (const CheckedJob& job : jobs) {
    if (job.active) continue;
    look_at_unkillable(job, context, look.found);
    for (const auto& cgroup : job.cgroups) look_at_cgroup(job, cgroup, context, look.found);
    look_at_paths(job, look.found);
  }
  look_at_gpus(jobs, options, context, look);
  look_at_shm(options, cleanup.paths.shm_dir, look);
  return look;
}

namespace {

// What a reclaim set going and then waits on: the processes signalled and the cgroups killed.
struct Reclaim {
  std::vector<ReclaimAct> acts;
  std::vector<Victim> victims;
  std::vector<std::size_t> cgroups;  // findings whose cgroup was killed
};

// A stray holder gets SIGTERM first; an unkillable process SIGKILL again.
void signal_process(const Found& found, std::size_t i, Kernel& kernel, Reclaim& reclaim) {
  const Finding& f = found.finding;
  auto handle = reopen(kernel, *f.pid, found.start_time);
  if (!handle) {
    reclaim.acts.push_back({f.kind, f.what, Outcome::already_gone, "exited before the reclaim"});
    return;
  }
  bool kill = f.kind == FindingKind::unkillable;
  kernel.signal(handle->pidfd.get(), kill ? SIGKILL : SIGTERM);
  reclaim.victims.push_back(
      {.finding = i, .pid = *f.pid, .pidfd = std::move(handle->pidfd), .killed = kill});
}

// A cleaned job's populated cgroup: every member killed at once, each waited on.
void kill_cgroup(const Found& found, std::size_t i, NodeCheckContext& context, Reclaim& reclaim) {
  if (context.cgroups == nullptr) return;
  std::vector<pid_t> members = context.cgroups->members(found.cgroup);
  try {
    context.cgroups->kill(found.cgroup);
  } catch (const std::exception& e) {
    reclaim.acts.push_back({found.finding.kind, found.finding.what, Outcome::failed, e.what()});
    return;
  }
  for (pid_t pid : members) {
    if (auto handle = reopen(context.kernel, pid, 0)) {
      reclaim.victims.push_back(
          {.finding = i, .pid = pid, .pidfd = std::move(handle->pidfd), .killed = true});
    }
  }
  reclaim.cgroups.push_back(i);
}

// Whatever survived its grace gets SIGKILL; then each signalled process's outcome.
void end_victims(const std::vector<Found>& found, Duration grace, const CleanupOptions& cleanup,
                 Kernel& kernel, Reclaim& reclaim) {
  wait_for_exits(kernel, reclaim.victims, Clock::now() + grace);
  for (Victim& v : reclaim.victims) {
    if (v.gone || v.killed) continue;
    kernel.signal(v.pidfd.get(), SIGKILL);
    v.killed = true;
  }
  wait_for_exits(kernel, reclaim.victims, Clock::now() + cleanup.kill_timeout);
  for (const Victim& v : reclaim.victims) {
    const Finding& f = found[v.finding].finding;
    if (f.kind == FindingKind::populated_cgroup) continue;  // one act for the whole cgroup
    bool term = f.kind == FindingKind::stray_gpu_holder;
    Outcome outcome = !v.gone ? Outcome::unkillable
                      : term && !v.killed ? Outcome::terminated
                                          : Outcome::killed;
    reclaim.acts.push_back({f.kind, f.what, outcome,
                            outcome == Outcome::unkillable
                                ? fmt::format("still alive {:.1f} s after SIGKILL",
                                              to_seconds(cleanup.kill_timeout))
                                : ""});
  }
}

// Each killed cgroup removed once its members are gone.
void remove_killed_cgroups(const std::vector<Found>& found, NodeCheckContext& context,
                           Reclaim& reclaim) {
  for (std::size_t i : reclaim.cgroups) {
    const Found& c = found[i];
    // cgroup.events lags an exit a little: an rmdir right after the last exit may see EBUSY.
    int err = context.cgroups->remove(c.cgroup);
    for (auto until = Clock::now() + std::chrono::seconds(1); err == EBUSY && Clock::now() < until;
         err = context.cgroups->remove(c.cgroup)) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    reclaim.acts.push_back({c.finding.kind, c.finding.what,
                            err == 0 ? Outcome::removed : Outcome::unkillable,
                            err == 0 ? "its processes killed and the cgroup removed"
                                     : "a process of it outlived cgroup.kill"});
  }
}

}  // namespace

std::vector<ReclaimAct> reclaim_node(const std::vector<Found>& found, Duration grace,
                                     const CleanupOptions& cleanup, NodeCheckContext& context) {
  Reclaim reclaim;
  for (std::size_t i = 0; i < found.size(); ++i) {
    const Finding& f = found[i].finding;
    switch (f.kind) {
      case FindingKind::stray_gpu_holder:
      case FindingKind::unkillable:
        signal_process(found[i], i, context.kernel, reclaim);
        break;
      case FindingKind::populated_cgroup:
        kill_cgroup(found[i], i, context, reclaim);
        break;
      case FindingKind::leftover_path: {
        if (!found[i].removable || !found[i].path) continue;
        PathReport r = remove_path(cleanup.paths, AT_FDCWD, *found[i].path, *f.uid);
        reclaim.acts.push_back({f.kind, f.what, r.outcome, r.detail});
        break;
      }
      case FindingKind::unheld_gpu_memory:
      case FindingKind::shm_full:
        break;  // nothing a process-level act can give back
    }
  }
  end_victims(found, grace, cleanup, context.kernel, reclaim);
  remove_killed_cgroups(found, context, reclaim);
  return std::move(reclaim.acts);
}

}  // namespace warden
