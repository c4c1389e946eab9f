// A cleanup report within its size bound: what fits is listed, problems first, and the rest is
// counted by outcome.
#include "world/report_bound.h"

#include <gtest/gtest.h>

namespace warden {
namespace {

PathReport path(int i, Outcome outcome = Outcome::removed) {
  return {.kind = PathKind::file,
          .path = "/tmp/job/" + std::string(2800, 'p') + std::to_string(i),
          .outcome = outcome};
}

TEST(ReportBound, AReportWithinTheBoundIsLeftAsItIs) {
  CleanupReport r;
  for (int i = 0; i < 80; ++i) r.paths.push_back(path(i));  // about 230 KiB
  const std::string before = to_json(r).dump();
  bound_report(r, 256 * 1024);
  EXPECT_EQ(to_json(r).dump(), before);
  EXPECT_TRUE(r.omitted.empty());
}

TEST(ReportBound, ThousandsOfLongPathsAreCutToTheBoundWithProblemsFirstAndTheRestCounted) {
  CleanupReport r;
  for (int i = 0; i < 2000; ++i) r.paths.push_back(path(i));
  r.paths[1500].outcome = Outcome::refused;
  r.paths[1501].outcome = Outcome::failed;
  r.processes.push_back({.pid = 7, .role = "main", .outcome = Outcome::killed});
  r.reclaimed.file_bytes = 123;

  bound_report(r, 256 * 1024);
  EXPECT_LE(to_json(r).dump().size(), 256u * 1024);
  ASSERT_GE(r.paths.size(), 2u);
  EXPECT_EQ(r.paths[0].outcome, Outcome::refused) << "problems are listed first";
  EXPECT_EQ(r.paths[1].outcome, Outcome::failed);
  EXPECT_EQ(r.paths[2].path, path(0).path) << "then the rest in order";
  ASSERT_TRUE(r.omitted.contains("paths"));
  const Omitted& left = r.omitted.at("paths");
  EXPECT_EQ(r.paths.size() + left.count, 2000u);
  EXPECT_EQ(left.outcomes.at(Outcome::removed), left.count);
  EXPECT_EQ(r.processes.size(), 1u) << "a small list is not cut for a large one";
  EXPECT_FALSE(r.omitted.contains("processes"));
  EXPECT_EQ(r.reclaimed.file_bytes, 123u) << "totals still count everything";

  auto back = from_json<CleanupReport>(to_json(r));
  EXPECT_EQ(back.omitted.at("paths").count, left.count);
  EXPECT_EQ(back.omitted.at("paths").outcomes, left.outcomes);
}

TEST(ReportBound, EveryListSharesTheBound) {
  CleanupReport r;
  for (int i = 0; i < 500; ++i) {
    r.paths.push_back(path(i));
    r.discovered.push_back(path(i, Outcome::kept));
    r.processes.push_back({.pid = i + 2,
                           .role = "descendant",
                           .outcome = Outcome::killed,
                           .detail = std::string(1000, 'd')});
  }
  bound_report(r, 64 * 1024);
  EXPECT_LE(to_json(r).dump().size(), 64u * 1024);
  EXPECT_FALSE(r.paths.empty());
  EXPECT_FALSE(r.discovered.empty());
  EXPECT_FALSE(r.processes.empty());
  EXPECT_EQ(r.omitted.at("processes").count + r.processes.size(), 500u);
  EXPECT_EQ(r.omitted.at("discovered").outcomes.at(Outcome::kept) + r.discovered.size(), 500u);
}

}  // namespace
}  // namespace warden
