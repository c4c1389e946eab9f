#include "wardenctl/events_view.h"

#include <ctime>

#include <fmt/chrono.h>
#include <fmt/format.h>
#include <fmt/ostream.h>

#include "warden/outcomes.h"
#include "wardenctl/status_view.h"

namespace warden {
namespace {

// What cleanup did, counted: "4 processes (2 killed), 3 paths removed, 1 hook failed".
std::string summary(const CleanupReport& r) {
  const ReportTally t = tally(r);
  std::string s =
      fmt::format("in {:.1f} ms: {} processes ({} terminated, {} killed), {}/{} paths removed",
                  r.duration_ms, r.processes.size(), t.terminated, t.killed, t.removed,
                  r.paths.size());
  if (!r.hooks.empty()) s += fmt::format(", {} hooks ({} failed)", r.hooks.size(), t.hooks_wrong);
  return s;
}

}  // namespace

void print_event(std::ostream& out, const Event& event) {
  std::time_t t = event.unix_ms / 1000;
  std::tm local{};
  ::localtime_r(&t, &local);
  std::string what;
  if (event.state == JobState::cleaned && event.report) {
    what = summary(*event.report);
  } else if (event.reason) {
    what = std::string(to_string(*event.reason)) + ": " + event.reason_detail;
  } else {
    what = event.reason_detail;  // e.g. a running job supervised again
  }
  fmt::print(out, "{:%Y-%m-%d %H:%M:%S}  job {:<6} {:<20.20} {:<10.10} {:<9} {}\n", local,
             event.job, event.name, user_name(event.uid), to_string(event.state), what);
}

std::optional<std::int64_t> parse_since(const std::string& text) {
  if (text.empty()) return std::nullopt;
  // A duration ago.
  static const std::pair<char, std::int64_t> kUnits[] = {
      {'s', 1000}, {'m', 60'000}, {'h', 3'600'000}, {'d', 86'400'000}};
  for (const auto& [unit, ms] : kUnits) {
    if (text.back() == unit && text.size() > 1) {
      std::size_t used = 0;
      try {
        double n = std::stod(text.substr(0, text.size() - 1), &used);
        if (used == text.size() - 1 && n >= 0)
          return now_unix_ms() - static_cast<std::int64_t>(n * ms);
      } catch (const std::exception&) {
      }
      return std::nullopt;
    }
  }
  // A local date, with or without a time.
  for (const char* format : {"%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d"}) {
    std::tm tm{};
    const char* end = ::strptime(text.c_str(), format, &tm);
    if (end != nullptr && *end == '\0') {
      tm.tm_isdst = -1;
      return static_cast<std::int64_t>(std::mktime(&tm)) * 1000;
    }
  }
  // Seconds since the epoch.
  std::size_t used = 0;
  try {
    long long s = std::stoll(text, &used);
    if (used == text.size() && s >= 0) return s * 1000;
  } catch (const std::exception&) {
  }
  return std::nullopt;
}

}  // namespace warden
