#include "wardenctl/gpu_view.h"

#include <array>

#include <fmt/format.h>
#include <fmt/ostream.h>

#include "wardenctl/status_view.h"

namespace warden {
namespace {

std::string memory_text(const std::optional<std::uint64_t>& bytes) {
  return bytes ? bytes_text(*bytes) : "-";
}

std::string job_text(const GpuHolder& h) {
  if (!h.job) return "untracked";
  return h.job_name.empty() ? std::to_string(*h.job) : fmt::format("{} {}", *h.job, h.job_name);
}

}  // namespace

std::string bytes_text(std::uint64_t bytes) {
  constexpr std::array<const char*, 5> kUnits{"B", "KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes);
  std::size_t unit = 0;
  while (value >= 1024 && unit + 1 < kUnits.size()) {
    value /= 1024;
    ++unit;
  }
  return unit == 0 ? fmt::format("{} B", bytes) : fmt::format("{:.1f} {}", value, kUnits[unit]);
}

void print_gpus(std::ostream& out, const GpusReply& gpus) {
  if (gpus.gpus.empty()) {
    out << "no GPUs: no device node of wardend's GPU set (gpu-devices) exists on this node\n";
    return;
  }
  for (const auto& g : gpus.gpus) {
    std::string memory = g.memory_used_bytes && g.memory_total_bytes
                             ? fmt::format("  {} of {} in use", bytes_text(*g.memory_used_bytes),
                                           bytes_text(*g.memory_total_bytes))
                             : "";
    fmt::print(out, "{}{}{}\n", g.device, g.uuid.empty() ? "" : "  " + g.uuid, memory);
    if (g.holders.empty()) {
      out << "  free: no process holds it\n";
      continue;
    }
    fmt::print(out, "  {:>8}  {:<10}  {:<24}  {:>10}  {}\n", "PID", "USER", "JOB", "MEMORY",
               "COMMAND");
    for (const auto& h : g.holders) {
      fmt::print(out, "  {:>8}  {:<10.10}  {:<24.24}  {:>10}  {}\n", h.pid, user_name(h.uid),
                 job_text(h), memory_text(h.memory_bytes), h.command);
    }
  }
  if (!gpus.note.empty()) fmt::print(out, "note: {}\n", gpus.note);
}

void print_gpu_report(std::ostream& out, const CleanupReport& report) {
  if (report.gpus.empty()) return;
  out << "  gpus\n";
  for (const auto& g : report.gpus) {
    std::string released = g.held_bytes
                               ? fmt::format("  held {}, released {}", bytes_text(*g.held_bytes),
                                             memory_text(g.released_bytes))
                               : "";
    fmt::print(out, "    {}{}{}\n", g.device, g.uuid.empty() ? "" : "  " + g.uuid, released);
    if (g.still_held_by.empty()) {
      out << "      no process outside the job holds it\n";
    }
    for (const auto& h : g.still_held_by) {
      fmt::print(out, "      still held by pid {} ({}){}  [{}]\n", h.pid, user_name(h.uid),
                 h.memory_bytes ? ", " + bytes_text(*h.memory_bytes) : "", h.command);
    }
  }
  if (!report.gpu_note.empty()) fmt::print(out, "    note: {}\n", report.gpu_note);
}

}  // namespace warden
