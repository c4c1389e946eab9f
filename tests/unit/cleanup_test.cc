#include "daemon/cleanup.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/thread_pool.hpp>

#include "daemon/process.h"
#include "tests/support/processes.h"

namespace warden {
namespace {

using std::chrono::milliseconds;
using testing::Behaviour;

CleanupReport clean(CleanupPlan plan, std::vector<UniqueFd> pidfds) {
  boost::asio::io_context io;
  boost::asio::thread_pool blocking(1);
  CleanupReport report;
  CleanupContext context{.options = {.kill_timeout = std::chrono::seconds(5)},
                         .blocking = blocking.get_executor(),
                         .self = ::getpid()};
  boost::asio::co_spawn(io, run_cleanup(std::move(plan), std::move(pidfds), context),
                        [&](std::exception_ptr e, CleanupReport r) {
                          if (e) std::rethrow_exception(e);
                          report = std::move(r);
                        });
  io.run();
  return report;
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
  CleanupPlan plan{.job = 424242, .reason = JobState::failed, .uid = ::getuid(),
                   .gid = ::getgid(), .grace = milliseconds(300), .main = {.pid = 1}};
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

}  // namespace
}  // namespace warden
