// One reading of a report's outcomes for every reader (warden/outcomes.h).
#include "warden/outcomes.h"

#include <gtest/gtest.h>

namespace warden {
namespace {

CleanupReport every_outcome() {
  CleanupReport r;
  for (Outcome o : {Outcome::already_gone, Outcome::terminated, Outcome::killed, Outcome::killed,
                    Outcome::unkillable, Outcome::kept}) {
    r.processes.push_back({.pid = static_cast<pid_t>(100 + r.processes.size()), .outcome = o});
  }
  for (Outcome o : {Outcome::removed, Outcome::removed, Outcome::already_gone, Outcome::refused,
                    Outcome::failed, Outcome::kept}) {
    r.paths.push_back({.kind = PathKind::file, .path = "/tmp/x", .outcome = o});
  }
  for (Outcome o : {Outcome::succeeded, Outcome::failed, Outcome::timed_out, Outcome::kept}) {
    r.hooks.push_back({.argv = {"true"}, .outcome = o});
  }
  return r;
}

TEST(Outcomes, AReportIsCountedOnceByTheSameRules) {
  ReportTally t = tally(every_outcome());
  EXPECT_EQ(t.terminated, 1u);
  EXPECT_EQ(t.killed, 2u);
  EXPECT_EQ(t.unkillable, 1u);
  EXPECT_EQ(t.removed, 2u);
  EXPECT_EQ(t.paths_wrong, 2u) << "failed and refused; a kept path is an output, not a failure";
  EXPECT_EQ(t.hooks_wrong, 2u) << "failed and timed out; a kept hook did not run by policy";
}

TEST(Outcomes, WhatRunsOnAndWhatRemains) {
  CleanupReport r = every_outcome();
  std::vector<Outcome> living, remaining;
  for (const auto& p : r.processes) {
    if (lives_on(p)) living.push_back(p.outcome);
    EXPECT_EQ(ended(p), p.outcome == Outcome::terminated || p.outcome == Outcome::killed);
  }
  for (const auto& p : r.paths) {
    if (remains(p)) remaining.push_back(p.outcome);
  }
  EXPECT_EQ(living, (std::vector<Outcome>{Outcome::unkillable, Outcome::kept}));
  EXPECT_EQ(remaining, (std::vector<Outcome>{Outcome::refused, Outcome::failed, Outcome::kept}));
}

}  // namespace
}  // namespace warden
