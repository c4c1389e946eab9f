#include "world/command_runner.h"

#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <gtest/gtest.h>

#include "tests/support/processes.h"
#include "tests/support/temp_dir.h"

namespace warden {
namespace {

CommandReport run(const CommandSpec& spec, RunAs user = {.uid = ::getuid(), .gid = ::getgid()}) {
  boost::asio::io_context io;
  CommandReport report;
  std::vector<std::pair<std::string, std::string>> env{{"WARDEN_JOB", "7"}};
  boost::asio::co_spawn(io, run_command(spec, user, env),
                        [&](std::exception_ptr e, CommandReport r) {
                          if (e) std::rethrow_exception(e);
                          report = std::move(r);
                        });
  io.run();
  return report;
}

CommandSpec sh(const std::string& script, double timeout_s = 10) {
  return {.argv = {"sh", "-c", script}, .timeout_s = timeout_s};
}

TEST(CommandRunner, CapturesOutputAndExitStatus) {
  auto ok = run(sh("echo out; echo err >&2"));
  EXPECT_EQ(ok.outcome, Outcome::succeeded);
  EXPECT_EQ(ok.exit_code, 0);
  EXPECT_EQ(ok.output, "out\nerr\n");

  auto bad = run(sh("exit 3"));
  EXPECT_EQ(bad.outcome, Outcome::failed);
  EXPECT_EQ(bad.exit_code, 3);
}

TEST(CommandRunner, EnvironmentIsCleanPlusTheJobsOwn) {
  ::setenv("WARDEN_TEST_SECRET", "leak", 1);
  CommandSpec spec = sh("env");
  spec.env.emplace_back("MINE", "yes");
  auto r = run(spec);
  EXPECT_EQ(r.output.find("WARDEN_TEST_SECRET"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("MINE=yes"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("WARDEN_JOB=7"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("PATH=/usr/local/bin:/usr/bin:/bin"), std::string::npos) << r.output;
}

TEST(CommandRunner, HangingCommandAndItsChildrenAreKilledAtTheTimeout) {
  auto r = run(sh("sleep 300 & echo $! ; sleep 300", 0.5));
  EXPECT_EQ(r.outcome, Outcome::timed_out);
  EXPECT_GE(r.elapsed_ms, 500);
  EXPECT_LT(r.elapsed_ms, 10000);
  pid_t background = std::stoi(r.output);
  EXPECT_TRUE(testing::wait_exited(background, std::chrono::seconds(5)))
      << "the command's whole process group dies";
}

TEST(CommandRunner, WhatACommandLeavesBehindDiesWithIt) {
  auto r = run(sh("sleep 300 >/dev/null 2>&1 & echo $!"));
  EXPECT_EQ(r.outcome, Outcome::succeeded);
  EXPECT_TRUE(testing::wait_exited(std::stoi(r.output), std::chrono::seconds(5)));
}

TEST(CommandRunner, OutputIsBounded) {
  auto r = run(sh("yes | head -c 200000"));
  EXPECT_EQ(r.output.size(), kMaxCommandOutput);
  EXPECT_TRUE(r.truncated);
}

TEST(CommandRunner, MissingProgramIsAFailureNotACrash) {
  auto r = run({.argv = {"no-such-program-here"}});
  EXPECT_EQ(r.outcome, Outcome::failed);
  EXPECT_NE(r.detail.find("not found"), std::string::npos);
}

TEST(CommandRunner, WorkingDirectoryIsEnteredWithTheUsersPermissions) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to switch users";
  testing::TempDir private_dir("warden-private");  // mode 0700, root's
  CommandSpec spec = sh("pwd");
  spec.cwd = private_dir.path();
  auto r = run(spec, {.uid = 65534, .gid = 65534});
  EXPECT_EQ(r.outcome, Outcome::failed);
  EXPECT_NE(r.detail.find("Permission denied"), std::string::npos) << r.detail;
}

TEST(CommandRunner, RunsAsTheJobsUserNeverAsRoot) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to switch users";
  auto r = run(sh("id -u; id -g; id -G"), {.uid = 65534, .gid = 65534});
  EXPECT_EQ(r.outcome, Outcome::succeeded) << r.detail;
  EXPECT_EQ(r.output.substr(0, r.output.find('\n')), "65534") << r.output;
  EXPECT_EQ(r.output.find("\n0"), std::string::npos) << "no root group left: " << r.output;
}

}  // namespace
}  // namespace warden
