#include "wardenctl/cleanup_wait.h"

#include <algorithm>
#include <set>
#include <thread>

#include <fmt/format.h>
#include <fmt/ostream.h>

#include "warden/outcomes.h"

namespace warden {
namespace {

// How often the jobs are looked at again: a cleanup takes at least its grace period, so a tenth
// of a second costs wardend nothing and the epilog at most that much.
constexpr auto kPollInterval = std::chrono::milliseconds(100);

bool selected(const CleanupRequest& request, const JobStatus& job) {
  return request.job ? job.id == *request.job : job.group == request.group;
}

// Processes of the job that outlived its cleanup (unkillable) while holding a GPU: pid -> device.
std::set<pid_t> stuck_on_gpus(const JobStatus& job) {
  std::set<pid_t> pids;
  if (!job.report) return pids;
  for (const auto& p : job.report->processes) {
    if (!p.gpus.empty() && p.outcome == Outcome::unkillable) pids.insert(p.pid);
  }
  return pids;
}

std::string summary(const CleanupReport& r) {
  const ReportTally t = tally(r);
  std::string s =
      fmt::format("{} processes ended, {} paths removed", t.terminated + t.killed, t.removed);
  if (t.unkillable > 0) s += fmt::format(", {} processes UNKILLABLE", t.unkillable);
  if (std::size_t failed = t.paths_wrong + t.hooks_wrong; failed > 0) {
    s += fmt::format(", {} steps failed", failed);
  }
  for (const auto& g : r.gpus) {
    if (g.released_bytes) s += fmt::format(", {} released {} B", g.device, *g.released_bytes);
    if (!g.still_held_by.empty()) {
      s += fmt::format(", {} still held by {} process(es) outside the job", g.device,
                       g.still_held_by.size());
    }
  }
  return s;
}

}  // namespace

int cleanup_and_wait(Client& client, const CleanupRequest& request, std::chrono::milliseconds bound,
                     std::ostream& out) {
  const auto deadline = std::chrono::steady_clock::now() + bound;
  // A job already being cleaned (or cleaned) is waited for, not refused.
  if (!request.job || client.status(*request.job, true).at(0).state == JobState::running) {
    client.cleanup(request);
  }
  std::vector<JobStatus> jobs;
  std::set<pid_t> on_gpus;
  for (;;) {
    jobs.clear();
    for (auto& job : client.status(std::nullopt, /*summary=*/true)) {
      if (selected(request, job)) jobs.push_back(std::move(job));
    }
    bool cleaning = std::any_of(jobs.begin(), jobs.end(),
                                [](const JobStatus& j) { return j.state != JobState::cleaned; });
    on_gpus.clear();
    if (!cleaning) {
      // The full reports, for the summary and for processes that outlived SIGKILL on a GPU.
      for (auto& job : jobs) job = client.status(job.id).at(0);
      std::set<pid_t> stuck;
      for (const auto& job : jobs) stuck.merge(stuck_on_gpus(job));
      if (!stuck.empty()) {
        for (const auto& gpu : client.gpus().gpus) {
          for (const auto& h : gpu.holders) {
            if (stuck.contains(h.pid)) on_gpus.insert(h.pid);
          }
        }
      }
      if (on_gpus.empty()) break;
    }
    if (std::chrono::steady_clock::now() >= deadline) break;
    std::this_thread::sleep_for(kPollInterval);
  }

  bool done = true;
  for (const auto& job : jobs) {
    if (job.state != JobState::cleaned || !job.report) {
      fmt::print(out, "job {} {}: still {} after {:.0f} s\n", job.id, job.name,
                 to_string(job.state), std::chrono::duration<double>(bound).count());
      done = false;
      continue;
    }
    fmt::print(out, "job {} {}: cleaned: {}\n", job.id, job.name, summary(*job.report));
    for (pid_t pid : stuck_on_gpus(job)) {
      if (!on_gpus.contains(pid)) continue;
      fmt::print(out, "job {} {}: pid {} survived SIGKILL and still holds a GPU\n", job.id,
                 job.name, pid);
      done = false;
    }
  }
  if (jobs.empty()) {
    fmt::print(out, "{}: no such jobs\n",
               request.job ? fmt::format("job {}", *request.job) : "group " + request.group);
  }
  return done ? 0 : kNotAllCleaned;
}

}  // namespace warden
