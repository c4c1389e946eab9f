#include "edge/metrics.h"

#include <chrono>
#include <map>
#include <optional>

#include <fmt/format.h>

namespace warden {
namespace {

void header(std::string& out, std::string_view name, std::string_view type, std::string_view help) {
  out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}

// Per GPU: its memory (NVML), and per job ("untracked": no job of wardend's) the processes holding
// it and the memory they hold.
void render_gpus(std::string& out, const GpusReply& gpus) {
  if (gpus.gpus.empty()) return;
  header(out, "warden_gpu_holders", "gauge",
         "Processes holding each GPU (its device node open), by job; job=\"untracked\": none of "
         "warden's jobs.");
  std::string memory;
  for (const auto& gpu : gpus.gpus) {
    // "untracked" always, so that a GPU nobody holds still has a series (0).
    std::map<std::string, std::pair<std::size_t, std::optional<std::uint64_t>>> by_job{
        {"untracked", {0, std::nullopt}}};
    for (const auto& h : gpu.holders) {
      auto& [count, bytes] = by_job[h.job ? std::to_string(*h.job) : "untracked"];
      ++count;
      if (h.memory_bytes) bytes = bytes.value_or(0) + *h.memory_bytes;
    }
    for (const auto& [job, held] : by_job) {
      out += fmt::format("warden_gpu_holders{{device=\"{}\",job=\"{}\"}} {}\n", gpu.device, job,
                         held.first);
      if (held.second) {
        memory += fmt::format("warden_gpu_held_bytes{{device=\"{}\",job=\"{}\"}} {}\n", gpu.device,
                              job, *held.second);
      }
    }
  }
  if (!gpus.note.empty()) return;  // no NVML: no memory figures
  header(out, "warden_gpu_held_bytes", "gauge", "Device memory held on each GPU, by job (NVML).");
  out += memory;
  header(out, "warden_gpu_memory_used_bytes", "gauge", "Device memory in use on each GPU (NVML).");
  for (const auto& gpu : gpus.gpus) {
    if (gpu.memory_used_bytes) {
      out += fmt::format("warden_gpu_memory_used_bytes{{device=\"{}\"}} {}\n", gpu.device,
                         *gpu.memory_used_bytes);
    }
  }
  header(out, "warden_gpu_memory_total_bytes", "gauge", "Device memory of each GPU (NVML).");
  for (const auto& gpu : gpus.gpus) {
    if (gpu.memory_total_bytes) {
      out += fmt::format("warden_gpu_memory_total_bytes{{device=\"{}\"}} {}\n", gpu.device,
                         *gpu.memory_total_bytes);
    }
  }
}

// The latest node check's verdict, and what it found by kind (every kind, zeros too, so that a
// query by kind always has a series).
void render_node(std::string& out, bool clean, const std::map<FindingKind, std::size_t>& findings,
                 std::int64_t unix_ms) {
  header(out, "warden_node_clean", "gauge",
         "1 when the latest node check found the node clean for the next job, else 0.");
  out += fmt::format("warden_node_clean {}\n", clean ? 1 : 0);
  header(out, "warden_node_findings", "gauge", "What the latest node check found, by kind.");
  for (FindingKind k : {FindingKind::stray_gpu_holder, FindingKind::unheld_gpu_memory,
                        FindingKind::unkillable, FindingKind::populated_cgroup,
                        FindingKind::leftover_path, FindingKind::shm_full}) {
    auto it = findings.find(k);
    out += fmt::format("warden_node_findings{{kind=\"{}\"}} {}\n", to_string(k),
                       it == findings.end() ? 0 : it->second);
  }
  header(out, "warden_node_check_timestamp_seconds", "gauge",
         "When the latest node check was made (Unix time).");
  out += fmt::format("warden_node_check_timestamp_seconds {:.3f}\n", unix_ms / 1000.0);
}

}  // namespace

void Metrics::node_checked(const CheckReply& reply) {
  NodeVerdict v{.clean = reply.clean,
                .unix_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                               std::chrono::system_clock::now().time_since_epoch())
                               .count()};
  for (const auto& f : reply.findings) ++v.findings[f.kind];
  node_ = std::move(v);
}

void Metrics::cleanup_finished(const CleanupReport& report) {
  ++cleanups_[report.reason];
  for (const auto& p : report.processes) ++outcomes_[{"process", p.outcome}];
  for (const auto& p : report.paths) ++outcomes_[{"path", p.outcome}];
  for (const auto& h : report.hooks) ++outcomes_[{"hook", h.outcome}];
  for (const auto& p : report.discovered) ++outcomes_[{"discovered", p.outcome}];
  for (const auto& [list, omitted] : report.omitted) {
    const char* kind = list == "processes" ? "process" : list == "hooks" ? "hook"
                       : list == "paths"   ? "path"
                                           : "discovered";
    for (const auto& [outcome, n] : omitted.outcomes) outcomes_[{kind, outcome}] += n;
  }
  reclaimed_["file"] += report.reclaimed.file_bytes;
  reclaimed_["shm"] += report.reclaimed.shm_bytes;
  reclaimed_["gpu"] += report.reclaimed.gpu_bytes;
  double s = report.duration_ms / 1000;
  for (std::size_t i = 0; i < kBuckets.size(); ++i) {
    if (s <= kBuckets[i]) {
      ++duration_buckets_[i];
      break;
    }
  }
  ++duration_count_;
  duration_sum_s_ += s;
}

void Metrics::refused(ErrorCode code) { ++refused_[code]; }

std::string Metrics::render(const Gauges& g) const {
  std::string out;
  header(out, "warden_jobs", "gauge", "Jobs by state (cleaned: kept for status).");
  for (JobState s : {JobState::running, JobState::cleaning, JobState::cleaned}) {
    auto it = g.jobs.find(s);
    out += fmt::format("warden_jobs{{state=\"{}\"}} {}\n", to_string(s),
                       it == g.jobs.end() ? 0 : it->second);
  }
  header(out, "warden_tracked_processes", "gauge", "Processes tracked, each by a pidfd.");
  out += fmt::format("warden_tracked_processes {}\n", g.processes);
  header(out, "warden_tracked_paths", "gauge",
         "Files, directories, shm segments and globs registered by jobs not yet cleaned.");
  out += fmt::format("warden_tracked_paths {}\n", g.paths);
  header(out, "warden_cleanups_running", "gauge", "Cleanups in progress.");
  out += fmt::format("warden_cleanups_running {}\n", g.cleanups_running);
  header(out, "warden_event_subscribers", "gauge", "Connections following the event stream.");
  out += fmt::format("warden_event_subscribers {}\n", g.event_subscribers);

  header(out, "warden_cleanups_total", "counter", "Cleanups finished, by how the job ended.");
  for (JobState r : {JobState::ended, JobState::failed, JobState::stalled}) {
    auto it = cleanups_.find(r);
    out += fmt::format("warden_cleanups_total{{reason=\"{}\"}} {}\n", to_string(r),
                       it == cleanups_.end() ? 0 : it->second);
  }
  header(out, "warden_cleanup_outcomes_total", "counter",
         "What cleanup did to each resource, by kind and outcome.");
  for (const auto& [key, n] : outcomes_) {
    out += fmt::format("warden_cleanup_outcomes_total{{resource=\"{}\",outcome=\"{}\"}} {}\n",
                       key.first, to_string(key.second), n);
  }
  header(out, "warden_cleanup_duration_seconds", "histogram",
         "From the start of a cleanup until everything was handled.");
  std::uint64_t cumulative = 0;
  for (std::size_t i = 0; i < kBuckets.size(); ++i) {
    cumulative += duration_buckets_[i];
    out += fmt::format("warden_cleanup_duration_seconds_bucket{{le=\"{}\"}} {}\n", kBuckets[i],
                       cumulative);
  }
  out += fmt::format("warden_cleanup_duration_seconds_bucket{{le=\"+Inf\"}} {}\n", duration_count_);
  out += fmt::format("warden_cleanup_duration_seconds_sum {}\n", duration_sum_s_);
  out += fmt::format("warden_cleanup_duration_seconds_count {}\n", duration_count_);

  header(out, "warden_requests_refused_total", "counter",
         "Requests answered with an error, by code.");
  for (const auto& [code, n] : refused_) {
    out += fmt::format("warden_requests_refused_total{{code=\"{}\"}} {}\n", to_string(code), n);
  }
  header(out, "warden_reclaimed_bytes_total", "counter",
         "Bytes cleanups gave back: files and segments removed (registered or discovered), GPU "
         "memory released (NVML), by kind.");
  for (const char* kind : {"file", "shm", "gpu"}) {
    auto it = reclaimed_.find(kind);
    out += fmt::format("warden_reclaimed_bytes_total{{kind=\"{}\"}} {}\n", kind,
                       it == reclaimed_.end() ? 0 : it->second);
  }
  header(out, "warden_proc_scans_total", "counter",
         "Looks through /proc for a job's processes by cleanups (none for a job its cgroups keep).");
  out += fmt::format("warden_proc_scans_total {}\n", g.proc_scans);
  header(out, "warden_store_write_failures_total", "counter",
         "Batches the state store could not write (disk full, read-only, I/O error).");
  out += fmt::format("warden_store_write_failures_total {}\n", g.store_write_failures);
  render_gpus(out, g.gpus);
  if (node_) render_node(out, node_->clean, node_->findings, node_->unix_ms);
  return out;
}

}  // namespace warden
