#include "wardenctl/status_view.h"

#include <pwd.h>

#include <algorithm>
#include <chrono>

#include <fmt/format.h>
#include <fmt/ostream.h>

#include "wardenctl/gpu_view.h"

namespace warden {

std::string user_name(uid_t uid) {
  passwd pw{};
  passwd* found = nullptr;
  char buf[1024];
  if (::getpwuid_r(uid, &pw, buf, sizeof(buf), &found) == 0 && found != nullptr) return pw.pw_name;
  return std::to_string(uid);
}

std::int64_t now_unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string age(std::int64_t since_unix_ms) {
  std::int64_t s = std::max<std::int64_t>(0, (now_unix_ms() - since_unix_ms) / 1000);
  if (s < 60) return fmt::format("{}s", s);
  if (s < 3600) return fmt::format("{}m{:02}s", s / 60, s % 60);
  if (s < 86400) return fmt::format("{}h{:02}m", s / 3600, (s % 3600) / 60);
  return fmt::format("{}d{:02}h", s / 86400, (s % 86400) / 3600);
}

namespace {

std::string state_text(const JobStatus& job) {
  std::string s(to_string(job.state));
  if (job.reason && job.state != *job.reason) s += fmt::format(" ({})", to_string(*job.reason));
  return s;
}

std::size_t live_workers(const JobStatus& job) {
  std::size_t n = 0;
  for (const auto& w : job.workers) n += w.exited ? 0 : 1;
  return n;
}

}  // namespace

void print_job_table(std::ostream& out, const std::vector<JobStatus>& jobs) {
  if (jobs.empty()) {
    out << "no jobs\n";
    return;
  }
  // The group column only where some job has one (a cluster node), so a workstation's table stays
  // narrow.
  bool groups =
      std::any_of(jobs.begin(), jobs.end(), [](const JobStatus& j) { return !j.group.empty(); });
  auto group = [&](const std::string& g) {
    return groups ? fmt::format("  {:<12.12}", g) : std::string();
  };
  fmt::print(out, "{:>6}  {:<20}{}  {:<10}  {:<20}  {:>7}  {:>9}  {:>5}  {:>5}  {:>4}  {}\n", "JOB",
             "NAME", group("GROUP"), "USER", "STATE", "AGE", "LAST BEAT", "PROCS", "FILES", "SHM",
             "TRACKING");
  for (const auto& job : jobs) {
    std::string beat = job.last_beat_unix_ms ? age(*job.last_beat_unix_ms) + " ago" : "-";
    fmt::print(
        out, "{:>6}  {:<20.20}{}  {:<10.10}  {:<20}  {:>7}  {:>9}  {:>5}  {:>5}  {:>4}  {}\n",
        job.id, job.name, group(job.group), user_name(job.uid), state_text(job),
        age(job.created_unix_ms), beat, job.live_processes, job.files, job.shm, job.tracking);
  }
}

namespace {

// What a job not yet cleaned has registered.
void print_registered(std::ostream& out, const JobStatus& job) {
  fmt::print(out, "  workers    {} tracked, {} exited on their own\n", live_workers(job),
             job.workers.size() - live_workers(job));
  for (const auto& w : job.workers) {
    fmt::print(out, "    pid {:<8} {}{}\n", w.pid, w.exited ? "exited" : "running",
               w.policy == Policy::failure ? "  (kept on success)" : "");
  }
  if (!job.paths.empty()) fmt::print(out, "  paths\n");
  for (const auto& p : job.paths) {
    fmt::print(out, "    {:<8} {}{}\n", to_string(p.kind), p.path,
               p.policy == Policy::failure ? "  (kept on success)" : "");
  }
  if (job.hooks > 0) fmt::print(out, "  hooks      {}\n", job.hooks);
}

// A cleaned job's report: what its cleanup did to each process, hook, path and GPU.
void print_report(std::ostream& out, const CleanupReport& r) {
  fmt::print(out, "cleanup ({}), {:.1f} ms\n", to_string(r.reason), r.duration_ms);
  if (r.reclaimed.total() > 0) {
    fmt::print(out, "  freed      {} files, {} shared memory, {} GPU memory\n",
               bytes_text(r.reclaimed.file_bytes), bytes_text(r.reclaimed.shm_bytes),
               bytes_text(r.reclaimed.gpu_bytes));
  }
  if (r.diagnostics) {
    fmt::print(out, "  diagnostics\n");
    for (const auto& d : r.diagnostics->processes) {
      fmt::print(out, "    pid {:<8} {:<10} state {}  wchan {}{}\n", d.pid, d.role, d.state,
                 d.wchan.empty() ? "-" : d.wchan, d.detail.empty() ? "" : "  (" + d.detail + ")");
    }
    if (const auto& c = r.diagnostics->command) {
      fmt::print(out, "    command {}  {}\n{}\n", to_string(c->outcome), c->detail, c->output);
    }
  }
  if (!r.processes.empty()) fmt::print(out, "  processes\n");
  for (const auto& p : r.processes) {
    std::string gpus;
    for (const auto& g : p.gpus) {
      gpus += fmt::format("{}{}{}", gpus.empty() ? "  gpu " : ", ", g.device,
                          g.memory_bytes ? " " + bytes_text(*g.memory_bytes) : "");
    }
    fmt::print(out, "    pid {:<8} {:<10} {:<13}{}{}{}{}{}\n", p.pid, p.role, to_string(p.outcome),
               p.local_pid ? fmt::format("  pid {} in its container", *p.local_pid) : "",
               p.leftover ? "  leftover" : "", p.detail.empty() ? "" : "  " + p.detail, gpus,
               p.command.empty() ? "" : "  [" + p.command + "]");
  }
  if (!r.hooks.empty()) fmt::print(out, "  hooks\n");
  for (const auto& h : r.hooks) {
    std::string command;
    for (const auto& a : h.argv) command += (command.empty() ? "" : " ") + a;
    fmt::print(out, "    {:<13} {}{}\n", to_string(h.outcome), command,
               h.detail.empty() ? "" : "  (" + h.detail + ")");
    if (!h.output.empty()) fmt::print(out, "      {}\n", h.output);
  }
  if (!r.paths.empty()) fmt::print(out, "  paths\n");
  for (const auto& p : r.paths) {
    fmt::print(out, "    {:<8} {:<13} {}{}{}{}\n", to_string(p.kind), to_string(p.outcome), p.path,
               p.bytes ? " " + bytes_text(*p.bytes) : "", p.leftover ? "  leftover" : "",
               p.detail.empty() ? "" : "  " + p.detail);
  }
  if (!r.discovered.empty()) fmt::print(out, "  discovered (held by the job, never registered)\n");
  for (const auto& p : r.discovered) {
    fmt::print(out, "    {:<8} {:<13} {} {}{}\n", to_string(p.kind), to_string(p.outcome), p.path,
               bytes_text(p.bytes.value_or(0)), p.detail.empty() ? "" : "  " + p.detail);
  }
  for (const auto& [list, omitted] : r.omitted) {
    std::string outcomes;
    for (const auto& [outcome, n] : omitted.outcomes) {
      outcomes += fmt::format("{}{} {}", outcomes.empty() ? "" : ", ", n, to_string(outcome));
    }
    fmt::print(out, "  and {} more {} not listed ({})\n", omitted.count, list, outcomes);
  }
  print_gpu_report(out, r);
}

}  // namespace

void print_job_detail(std::ostream& out, const JobStatus& job) {
  fmt::print(out, "job {}  {}\n", job.id, job.name);
  fmt::print(out, "  user       {} (uid {})\n", user_name(job.uid), job.uid);
  fmt::print(out, "  state      {}\n", state_text(job));
  if (!job.group.empty()) fmt::print(out, "  group      {}\n", job.group);
  if (job.reason) fmt::print(out, "  why        {}\n", job.reason_detail);
  fmt::print(out, "  main       pid {}\n", job.main_pid);
  fmt::print(out, "  age        {}\n", age(job.created_unix_ms));
  if (job.heartbeat_s > 0) {
    fmt::print(out, "  heartbeat  every {:g} s, last {}\n", job.heartbeat_s,
               job.last_beat_unix_ms ? age(*job.last_beat_unix_ms) + " ago" : "never");
  }
  fmt::print(out, "  grace      {:g} s\n", job.grace_s);
  if (job.tracking == "cgroup") {
    fmt::print(out, "  tracking   cgroup {} (every process the job forks)\n", job.cgroup);
  } else {
    fmt::print(out,
               "  tracking   scan (registered processes, their trees and the job's environment)\n");
  }
  if (job.report) {
    print_report(out, *job.report);
  } else {
    print_registered(out, job);
  }
}

}  // namespace warden
