#include "daemon/cleanup.h"

#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include "daemon/process.h"
#include "tests/support/processes.h"

namespace warden {
namespace {

using std::chrono::milliseconds;
using testing::Behaviour;

std::vector<ProcessReport> terminate(std::vector<ProcessToEnd> processes, Duration grace,
                                     Duration kill_timeout = std::chrono::seconds(5)) {
  boost::asio::io_context io;
  std::vector<ProcessReport> reports;
  boost::asio::co_spawn(io, terminate_processes(std::move(processes), grace, kill_timeout),
                        [&](std::exception_ptr e, std::vector<ProcessReport> r) {
                          if (e) std::rethrow_exception(e);
                          reports = std::move(r);
                        });
  io.run();
  return reports;
}

ProcessToEnd target(pid_t pid) {
  auto handle = open_process(pid);
  return {.target = {.identity = handle.identity, .role = "worker"},
          .pidfd = std::move(handle.pidfd)};
}

class CleanupTest : public ::testing::Test {
 protected:
  void TearDown() override { testing::kill_and_reap(children); }
  pid_t spawn(Behaviour b) { return children.emplace_back(testing::spawn(b)); }
  std::vector<pid_t> children;
};

TEST_F(CleanupTest, ObedientProcessIsTerminatedAndStubbornOneKilledAfterGrace) {
  pid_t obedient = spawn(Behaviour::sleep);
  pid_t stubborn = spawn(Behaviour::ignore_term);
  std::vector<ProcessToEnd> procs;
  procs.push_back(target(obedient));
  procs.push_back(target(stubborn));

  auto reports = terminate(std::move(procs), milliseconds(300));
  ASSERT_EQ(reports.size(), 2u);
  EXPECT_EQ(reports[0].pid, obedient);
  EXPECT_EQ(reports[0].outcome, ProcessOutcome::terminated);
  EXPECT_EQ(reports[1].outcome, ProcessOutcome::killed);
  EXPECT_GE(reports[1].elapsed_ms, 300) << "SIGKILL only after the grace period";
  EXPECT_TRUE(testing::is_gone(obedient));
  EXPECT_TRUE(testing::is_gone(stubborn));
}

TEST_F(CleanupTest, ZeroGraceKillsAtOnce) {
  pid_t p = spawn(Behaviour::ignore_term);
  std::vector<ProcessToEnd> procs;
  procs.push_back(target(p));
  auto reports = terminate(std::move(procs), Duration::zero());
  ASSERT_EQ(reports.size(), 1u);
  EXPECT_EQ(reports[0].outcome, ProcessOutcome::killed);
  EXPECT_TRUE(testing::is_gone(p));
}

TEST_F(CleanupTest, ProcessThatAlreadyExitedIsReportedGoneNotFailed) {
  pid_t p = spawn(Behaviour::sleep);
  auto t = target(p);
  testing::kill_and_reap({p});
  std::vector<ProcessToEnd> procs;
  procs.push_back(std::move(t));
  auto reports = terminate(std::move(procs), milliseconds(100));
  ASSERT_EQ(reports.size(), 1u);
  EXPECT_EQ(reports[0].outcome, ProcessOutcome::already_gone);
}

TEST_F(CleanupTest, ProcessKnownToHaveExitedIsNotSignalled) {
  std::vector<ProcessToEnd> procs;
  procs.push_back({.target = {.identity = {.pid = 1}, .role = "worker", .exited = true}});
  auto reports = terminate(std::move(procs), milliseconds(100));
  ASSERT_EQ(reports.size(), 1u);
  EXPECT_EQ(reports[0].outcome, ProcessOutcome::already_gone);
}

TEST_F(CleanupTest, NothingToEndFinishesWithoutWaiting) {
  auto start = Clock::now();
  auto reports = terminate({}, std::chrono::seconds(30));
  EXPECT_TRUE(reports.empty());
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(10));
}

}  // namespace
}  // namespace warden
