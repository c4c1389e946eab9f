#include "world/report_bound.h"

#include <algorithm>
#include <array>
#include <functional>
#include <numeric>
#include <string>
#include <vector>

namespace warden {
namespace {

bool problem(Outcome outcome) {
  switch (outcome) {
    case Outcome::failed:
    case Outcome::refused:
    case Outcome::unkillable:
    case Outcome::timed_out:
      return true;
    default:
      return false;
  }
}

template <class Entry>
bool problem(const Entry& e) {
  if constexpr (requires { e.leftover; }) {
    if (e.leftover) return true;
  }
  return problem(e.outcome);
}

template <class Entry>
std::size_t json_size(const Entry& e) {
  return to_json(e).dump().size() + 1;  // and its comma
}

// Keeps the first entries of `list` (problems first) that fit in `budget` bytes; returns the bytes
// used and counts the rest in `omitted`.
template <class Entry>
std::size_t fit(std::vector<Entry>& list, std::size_t budget, Omitted& omitted) {
  std::stable_partition(list.begin(), list.end(), [](const Entry& e) { return problem(e); });
  std::size_t used = 0, kept = 0;
  for (; kept < list.size(); ++kept) {
    std::size_t size = json_size(list[kept]);
    if (used + size > budget) break;
    used += size;
  }
  for (std::size_t i = kept; i < list.size(); ++i) {
    ++omitted.count;
    ++omitted.outcomes[list[i].outcome];
  }
  list.erase(list.begin() + static_cast<std::ptrdiff_t>(kept), list.end());
  return used;
}

template <class Entry>
std::size_t total_size(const std::vector<Entry>& list) {
  return std::accumulate(list.begin(), list.end(), std::size_t{0},
                         [](std::size_t sum, const Entry& e) { return sum + json_size(e); });
}

}  // namespace

void bound_report(CleanupReport& report, std::size_t max_bytes) {
  // Sized an entry at a time: the JSON of a whole report over the bound is what must not be made.
  CleanupReport bare;
  bare.reason = report.reason;
  bare.started_unix_ms = report.started_unix_ms;
  bare.duration_ms = report.duration_ms;
  bare.diagnostics = report.diagnostics;
  bare.gpus = report.gpus;
  bare.gpu_note = report.gpu_note;
  bare.reclaimed = report.reclaimed;
  // Room for the "omitted" object that says what the lists left out.
  constexpr std::size_t kOmittedRoom = 1024;
  const std::size_t fixed = to_json(bare).dump().size() + kOmittedRoom;
  // The smallest list first, each given an equal share of what is left, so that what one list
  // does not need goes to the others.
  struct List {
    const char* name;
    std::size_t size;
    std::function<std::size_t(std::size_t, Omitted&)> fit;
  };
  std::array<List, 4> lists{{
      {"processes", total_size(report.processes),
       [&](std::size_t b, Omitted& o) { return fit(report.processes, b, o); }},
      {"hooks", total_size(report.hooks),
       [&](std::size_t b, Omitted& o) { return fit(report.hooks, b, o); }},
      {"paths", total_size(report.paths),
       [&](std::size_t b, Omitted& o) { return fit(report.paths, b, o); }},
      {"discovered", total_size(report.discovered),
       [&](std::size_t b, Omitted& o) { return fit(report.discovered, b, o); }},
  }};
  std::size_t listed = 0;
  for (const auto& list : lists) listed += list.size;
  if (fixed + listed <= max_bytes) return;
  std::size_t budget = max_bytes > fixed ? max_bytes - fixed : 0;
  std::sort(lists.begin(), lists.end(),
            [](const List& a, const List& b) { return a.size < b.size; });
  for (std::size_t i = 0; i < lists.size(); ++i) {
    std::size_t share = budget / (lists.size() - i);
    Omitted omitted;
    budget -= lists[i].fit(share, omitted);
    if (omitted.count > 0) report.omitted[lists[i].name] = std::move(omitted);
  }
}

}  // namespace warden
