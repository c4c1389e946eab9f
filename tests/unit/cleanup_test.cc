#include "world/cleanup.h"

#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/thread_pool.hpp>
#include <gtest/gtest.h>

#include "world/process.h"
#include "tests/support/fake_cgroups.h"
#include "tests/support/processes.h"

namespace warden {
namespace {

using std::chrono::milliseconds;
using testing::Behaviour;

// Runs a cleanup to its end on `io`, through `cgroups` where given.
CleanupReport clean(CleanupPlan plan, std::vector<UniqueFd> pidfds, boost::asio::io_context& io,
                    Cgroups* cgroups = nullptr, Duration kill_timeout = std::chrono::seconds(5)) {
  boost::asio::thread_pool blocking(1);
  boost::asio::thread_pool removals(1);
  ScanCache scans;
  RealKernel kernel(scans);
  CleanupReport report;
  CleanupContext context{.options = {.kill_timeout = kill_timeout},
                         .blocking = blocking.get_executor(),
                         .removals = removals.get_executor(),
                         .self = ::getpid(),
                         .kernel = &kernel,
                         .cgroups = cgroups};
  boost::asio::co_spawn(io, run_cleanup(std::move(plan), std::move(pidfds), context),
                        [&](std::exception_ptr e, CleanupReport r) {
                          if (e) std::rethrow_exception(e);
                          report = std::move(r);
                        });
  io.run();
  io.restart();
  return report;
}

CleanupReport clean(CleanupPlan plan, std::vector<UniqueFd> pidfds) {
  boost::asio::io_context io;
  return clean(std::move(plan), std::move(pidfds), io);
}

class CleanupTest : public ::testing::Test {
 protected:
  void TearDown() override { testing::kill_and_reap(children); }

  pid_t spawn(Behaviour b) { return children.emplace_back(testing::spawn(b)); }

  // A plan for a failed job whose (long dead) main process was pid 1's neighbour; `workers` are
  // registered targets with pidfds.
  void target(pid_t pid, bool keep = false) {
    auto handle = open_process(pid);
    plan.targets.push_back({.identity = handle.identity, .role = "worker", .keep = keep});
    pidfds.push_back(std::move(handle.pidfd));
  }

  std::vector<pid_t> children;
  CleanupPlan plan{.job = 424242,
                   .reason = JobState::failed,
                   .uid = ::getuid(),
                   .gid = ::getgid(),
                   .grace = milliseconds(300),
                   .main = {.pid = 1}};
  std::vector<UniqueFd> pidfds;
};

TEST_F(CleanupTest, ObedientProcessIsTerminatedAndStubbornOneKilledAfterGrace) {
  pid_t obedient = spawn(Behaviour::sleep);
  pid_t stubborn = spawn(Behaviour::ignore_term);
  target(obedient);
  target(stubborn);

  auto report = clean(std::move(plan), std::move(pidfds));
  ASSERT_EQ(report.processes.size(), 2u);
  EXPECT_EQ(report.processes[0].pid, obedient);
  EXPECT_EQ(report.processes[0].outcome, Outcome::terminated);
  EXPECT_EQ(report.processes[1].outcome, Outcome::killed);
  EXPECT_GE(report.processes[1].elapsed_ms, 300) << "SIGKILL only after the grace period";
  EXPECT_TRUE(testing::is_gone(obedient));
  EXPECT_TRUE(testing::is_gone(stubborn));
}

TEST_F(CleanupTest, ZeroGraceKillsAtOnce) {
  pid_t p = spawn(Behaviour::ignore_term);
  target(p);
  plan.grace = Duration::zero();
  auto report = clean(std::move(plan), std::move(pidfds));
  ASSERT_EQ(report.processes.size(), 1u);
  EXPECT_EQ(report.processes[0].outcome, Outcome::killed);
  EXPECT_TRUE(testing::is_gone(p));
}

TEST_F(CleanupTest, ProcessThatAlreadyExitedIsReportedGoneNotFailed) {
  pid_t p = spawn(Behaviour::sleep);
  target(p);
  testing::kill_and_reap({p});
  auto report = clean(std::move(plan), std::move(pidfds));
  ASSERT_EQ(report.processes.size(), 1u);
  EXPECT_EQ(report.processes[0].outcome, Outcome::already_gone);
}

TEST_F(CleanupTest, ProcessKnownToHaveExitedIsNotSignalled) {
  plan.targets.push_back({.identity = {.pid = 1}, .role = "worker", .exited = true});
  pidfds.emplace_back();
  auto report = clean(std::move(plan), std::move(pidfds));
  ASSERT_EQ(report.processes.size(), 1u);
  EXPECT_EQ(report.processes[0].outcome, Outcome::already_gone);
}

TEST_F(CleanupTest, KeptProcessIsLeftRunning) {
  pid_t p = spawn(Behaviour::sleep);
  target(p, /*keep=*/true);
  auto report = clean(std::move(plan), std::move(pidfds));
  ASSERT_EQ(report.processes.size(), 1u);
  EXPECT_EQ(report.processes[0].outcome, Outcome::kept);
  EXPECT_FALSE(testing::is_gone(p));
}

TEST_F(CleanupTest, NothingToEndFinishesWithoutWaiting) {
  plan.grace = std::chrono::seconds(30);
  auto start = Clock::now();
  auto report = clean(std::move(plan), std::move(pidfds));
  EXPECT_TRUE(report.processes.empty());
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(10));
}

// A job tracked by a cgroup: the engine names its members from the cgroup, ends them through it and
// waits until it is empty; the kernel's side is FakeCgroups.
class TrackedCleanupTest : public CleanupTest {
 protected:
  TrackedCleanupTest() { plan.cgroup = "/job"; }

  pid_t member(Behaviour b) {
    pid_t pid = spawn(b);
    cgroups.members_of["/job"].insert(pid);
    return pid;
  }
  CleanupReport run(Duration kill_timeout = std::chrono::seconds(5)) {
    return clean(std::move(plan), std::move(pidfds), io, &cgroups, kill_timeout);
  }
  // Ends a member that ignores SIGTERM with no grace period and `kill_timeout`, checks that it is
  // reported killed, and returns how long the cleanup took.
  Duration kill_a_member_ignoring_term(Duration kill_timeout) {
    pid_t p = member(Behaviour::ignore_term);
    plan.grace = Duration::zero();
    auto start = Clock::now();
    auto report = run(kill_timeout);
    auto took = Clock::now() - start;
    const ProcessReport* ended = report_of(report, p);
    EXPECT_NE(ended, nullptr);
    if (ended != nullptr) {
      EXPECT_EQ(ended->outcome, Outcome::killed);
    }
    return took;
  }
  const ProcessReport* report_of(const CleanupReport& r, pid_t pid) {
    for (const auto& p : r.processes) {
      if (p.pid == pid) return &p;
    }
    return nullptr;
  }

  boost::asio::io_context io;
  testing::FakeCgroups cgroups{io.get_executor()};
};

TEST_F(TrackedCleanupTest, UnregisteredMembersAreFrozenTerminatedAndTheRestKilledThroughTheCgroup) {
  pid_t obedient = member(Behaviour::sleep);
  pid_t stubborn = member(Behaviour::ignore_term);
  auto report = run();
  ASSERT_NE(report_of(report, obedient), nullptr) << "members are named in the report";
  EXPECT_EQ(report_of(report, obedient)->outcome, Outcome::terminated);
  EXPECT_EQ(report_of(report, obedient)->role, "descendant");
  EXPECT_EQ(report_of(report, obedient)->detail, "member of cgroup /job");
  EXPECT_FALSE(report_of(report, obedient)->command.empty());
  ASSERT_NE(report_of(report, stubborn), nullptr);
  EXPECT_EQ(report_of(report, stubborn)->outcome, Outcome::killed);
  EXPECT_TRUE(testing::is_gone(obedient));
  EXPECT_TRUE(testing::is_gone(stubborn));
  // Frozen before SIGTERM, thawed for the grace, frozen again and killed, then removed.
  EXPECT_LT(cgroups.order_of("freeze /job 1"), cgroups.order_of("freeze /job 0"));
  EXPECT_LT(cgroups.order_of("freeze /job 0"), cgroups.order_of("kill /job"));
  EXPECT_TRUE(cgroups.called("remove /job"));
}

TEST_F(TrackedCleanupTest, ZeroGraceKillsTheCgroupWithoutThawingIt) {
  pid_t p = member(Behaviour::ignore_term);
  plan.grace = Duration::zero();
  auto report = run();
  ASSERT_NE(report_of(report, p), nullptr);
  EXPECT_EQ(report_of(report, p)->outcome, Outcome::killed);
  EXPECT_FALSE(report_of(report, p)->command.empty()) << "named while it was still stopped";
  EXPECT_FALSE(cgroups.called("freeze /job 0"));
  EXPECT_TRUE(cgroups.called("kill /job"));
}

TEST_F(TrackedCleanupTest, MemberForkedDuringTheGraceIsNamedAndKilled) {
  member(Behaviour::ignore_term);
  pid_t late = 0;
  cgroups.on_thaw = [&] { late = member(Behaviour::ignore_term); };
  auto report = run();
  ASSERT_NE(late, 0);
  ASSERT_NE(report_of(report, late), nullptr) << "listed again before cgroup.kill";
  EXPECT_EQ(report_of(report, late)->outcome, Outcome::killed);
  EXPECT_TRUE(testing::is_gone(late));
}

TEST_F(TrackedCleanupTest, CgroupThatNeverEmptiesHoldsTheCleanupOnlyUntilTheKillBoundAndIsKept) {
  cgroups.never_empties = true;
  auto took = kill_a_member_ignoring_term(std::chrono::milliseconds(300));
  EXPECT_GE(took, std::chrono::milliseconds(300)) << "waited for cgroup.events to say empty";
  EXPECT_LT(took, std::chrono::seconds(3)) << "but no longer than the kill bound";
  EXPECT_FALSE(cgroups.called("remove /job")) << "a populated cgroup is kept for a later start";
}

TEST_F(TrackedCleanupTest, TheLastExitLooksAtTheCgroupInsteadOfWaitingToBeToldItIsEmpty) {
  cgroups.silent = true;
  auto took = kill_a_member_ignoring_term(std::chrono::seconds(30));
  EXPECT_LT(took, std::chrono::seconds(10)) << "not held until the kill bound";
  EXPECT_TRUE(cgroups.called("remove /job"));
}

TEST_F(TrackedCleanupTest, SparedMainAndKeptWorkerLeaveTheCgroupBeforeItIsKilled) {
  // A clean end: the main process lives on, a failure-only worker is kept, the rest are leftovers.
  pid_t main = member(Behaviour::sleep);
  pid_t kept = member(Behaviour::sleep);
  pid_t forgotten = member(Behaviour::sleep);
  plan.reason = JobState::ended;
  plan.main = open_process(main).identity;
  plan.main_spared = true;
  target(kept, /*keep=*/true);
  auto report = run();
  EXPECT_FALSE(testing::is_gone(main));
  EXPECT_FALSE(testing::is_gone(kept));
  EXPECT_TRUE(testing::is_gone(forgotten));
  EXPECT_LT(cgroups.order_of("move " + std::to_string(main) + " /"),
            cgroups.order_of("freeze /job 1"));
  EXPECT_LT(cgroups.order_of("move " + std::to_string(kept) + " /"),
            cgroups.order_of("freeze /job 1"));
  ASSERT_NE(report_of(report, forgotten), nullptr);
  EXPECT_TRUE(report_of(report, forgotten)->leftover);
  EXPECT_EQ(report_of(report, main), nullptr) << "the spared main process is not in the report";
}

TEST_F(TrackedCleanupTest, CgroupThatHoldsWardendIsNeverFrozenNorKilled) {
  cgroups.members_of["/job"].insert(::getpid());
  pid_t worker = spawn(Behaviour::sleep);
  target(worker);
  auto report = run();
  cgroups.members_of["/job"].erase(::getpid());
  EXPECT_FALSE(cgroups.called("freeze /job 1"));
  EXPECT_FALSE(cgroups.called("kill /job"));
  ASSERT_NE(report_of(report, worker), nullptr);
  EXPECT_EQ(report_of(report, worker)->outcome, Outcome::terminated) << "ended by the scan path";
}

}  // namespace
}  // namespace warden
