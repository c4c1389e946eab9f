#include "warden/outcomes.h"

namespace warden {

bool ended(const ProcessReport& p) {
  return p.outcome == Outcome::terminated || p.outcome == Outcome::killed;
}

bool lives_on(const ProcessReport& p) {
  return p.outcome == Outcome::unkillable || p.outcome == Outcome::kept;
}

bool remains(const PathReport& p) { return went_wrong(p) || p.outcome == Outcome::kept; }

bool went_wrong(const PathReport& p) {
  return p.outcome == Outcome::failed || p.outcome == Outcome::refused;
}

bool went_wrong(const CommandReport& hook) {
  return hook.outcome == Outcome::failed || hook.outcome == Outcome::timed_out;
}

ReportTally tally(const CleanupReport& report) {
  ReportTally t;
  for (const auto& p : report.processes) {
    t.terminated += p.outcome == Outcome::terminated;
    t.killed += p.outcome == Outcome::killed;
    t.unkillable += p.outcome == Outcome::unkillable;
  }
  for (const auto& p : report.paths) {
    t.removed += p.outcome == Outcome::removed;
    t.paths_wrong += went_wrong(p);
  }
  for (const auto& h : report.hooks) t.hooks_wrong += went_wrong(h);
  return t;
}

}  // namespace warden
