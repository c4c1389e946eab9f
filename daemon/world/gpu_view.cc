#include "world/gpu_view.h"

#include "world/namespaces.h"
#include "world/process.h"

namespace warden {

GpusReply gpu_view(Gpus& gpus, const std::vector<CheckedJob>& jobs, Cgroups* cgroups,
                   const Caller& caller) {
  GpuSnapshot snapshot = gpus.look();
  GpusReply reply{.note = snapshot.note};
  for (const auto& d : snapshot.devices) {
    reply.gpus.push_back({.device = d.path,
                          .uuid = d.uuid,
                          .memory_total_bytes = d.memory_total,
                          .memory_used_bytes = d.memory_used});
  }
  if (snapshot.devices.empty()) return reply;
  JobOwners owners(jobs, cgroups);
  for (const auto& [pid, held] : gpus.holders(snapshot)) {
    pid_t seen = pid;
    if (caller.view != nullptr && !caller.view->shares_pids()) {
      auto local = caller.view->local_pid(pid);
      if (!local) continue;
      seen = *local;
    }
    GpuHolder holder{
        .pid = seen, .uid = read_proc_real_uid(pid).value_or(0), .command = read_command_line(pid)};
    if (const CheckedJob* job = owners.of(pid); job != nullptr && job->active) {
      holder.job = job->id;
      // Another user's job is named by its number only.
      if (caller.is_admin() || job->uid == caller.uid) holder.job_name = job->name;
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
