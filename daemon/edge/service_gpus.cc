// The node's GPU view: who holds each GPU, attributed to the jobs this wardend supervises.
#include <algorithm>
#include <map>

#include "world/cgroup.h"
#include "edge/service.h"

namespace warden {
namespace {

// How far up the parent chain a holder is followed to a registered process: deep enough for any
// launcher chain (srun, torchrun, a shell, python, DataLoader workers), bounded against a loop.
constexpr int kMaxAncestry = 64;

}  // namespace

std::map<pid_t, const Job*> Service::registered_processes() const {
  std::map<pid_t, const Job*> registered;
  for (const Job* job : core_.visible_jobs(Caller{.uid = 0})) {
    if (job->state == JobState::cleaned) continue;
    registered[job->main.pid] = job;
    for (const auto& w : job->workers) {
      if (!w.exited_at) registered[w.identity.pid] = job;
    }
  }
  return registered;
}

const Job* Service::job_of_process(pid_t pid, const std::map<pid_t, const Job*>& registered) const {
  if (cgroups_ != nullptr) {
    if (auto cgroup = cgroups_->cgroup_of(pid)) {
      if (const Job* job = job_of_cgroup(*cgroup)) return job;
    }
  }
  for (int depth = 0; depth < kMaxAncestry && pid > 1; ++depth) {
    auto stat = read_proc_stat(pid);
    if (!stat) return nullptr;
    if (auto it = registered.find(pid); it != registered.end()) {
      const Job& job = *it->second;
      bool same =
          job.main.pid == pid
              ? job.main.start_time == stat->start_time
              : std::any_of(job.workers.begin(), job.workers.end(), [&](const TrackedProcess& w) {
                  return w.identity.pid == pid && w.identity.start_time == stat->start_time;
                });
      if (same) return &job;  // else a recycled pid: not the job's
    }
    pid = stat->ppid;
  }
  return nullptr;
}

GpusReply Service::gpus(const Caller& caller) const {
  GpuSnapshot snapshot = gpus_->look();
  GpusReply reply{.note = snapshot.note};
  for (const auto& d : snapshot.devices) {
    reply.gpus.push_back({.device = d.path,
                          .uuid = d.uuid,
                          .memory_total_bytes = d.memory_total,
                          .memory_used_bytes = d.memory_used});
  }
  if (snapshot.devices.empty()) return reply;
  auto visible = core_.visible_jobs(caller);
  auto registered = registered_processes();
  for (const auto& [pid, held] : Gpus::holders(snapshot)) {
    // As the caller numbers it; a holder outside a container caller's PID namespace is not its to
    // see.
    pid_t seen = pid;
    if (caller.view != nullptr && !caller.view->shares_pids()) {
      auto local = caller.view->local_pid(pid);
      if (!local) continue;
      seen = *local;
    }
    GpuHolder holder{
        .pid = seen, .uid = read_proc_real_uid(pid).value_or(0), .command = read_command_line(pid)};
    if (const Job* job = job_of_process(pid, registered)) {
      holder.job = job->id;
      // Another user's job is named by its number only.
      if (std::find(visible.begin(), visible.end(), job) != visible.end()) {
        holder.job_name = job->spec.name;
      }
    }
    for (std::size_t i : held) {
      GpuHolder h = holder;
      h.memory_bytes = snapshot.memory_of(i, pid);
      reply.gpus[i].holders.push_back(std::move(h));
    }
  }
  return reply;
}

}  // namespace warden
