// wardenctl against a real wardend: output for people and scripts, and one-line errors.
#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "tests/support/daemon_test.h"
#include "proto/messages.h"
#include "tests/support/processes.h"

namespace warden {
namespace {

using testing::run_command;

class Wardenctl : public testing::DaemonTest {
 protected:
  testing::CommandResult ctl(std::vector<std::string> args) {
    args.insert(args.begin(), {WARDENCTL_PATH, "--socket", daemon.socket()});
    return run_command(args);
  }
};

TEST_F(Wardenctl, RegisterAddBeatEndAndStatus) {
  pid_t main = spawned.emplace_back(testing::spawn(testing::Behaviour::sleep));
  pid_t worker = spawned.emplace_back(testing::spawn(testing::Behaviour::sleep));

  auto reg = ctl({"register", "--pid", std::to_string(main), "--name", "cli job", "--heartbeat",
                  "60", "--grace", "0.5"});
  ASSERT_EQ(reg.status, 0) << reg.err;
  std::string id = reg.out.substr(0, reg.out.find('\n'));
  EXPECT_EQ(std::stoull(id), 1u);

  EXPECT_EQ(ctl({"add", "--job", id, "--pid", std::to_string(worker)}).status, 0);
  EXPECT_EQ(ctl({"beat", "--job", id}).status, 0);

  auto table = ctl({"status"});
  ASSERT_EQ(table.status, 0);
  EXPECT_NE(table.out.find("cli job"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find("running"), std::string::npos) << table.out;

  auto js = ctl({"status", "--json"});
  ASSERT_EQ(js.status, 0);
  auto jobs = json::parse(js.out);
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(jobs[0]["name"], "cli job");
  EXPECT_EQ(jobs[0]["main"]["pid"], main);
  EXPECT_EQ(jobs[0]["workers"][0]["pid"], worker);
  EXPECT_EQ(jobs[0]["heartbeat_s"], 60.0);

  ASSERT_EQ(ctl({"end", "--job", id, "--failed"}).status, 0);
  ASSERT_TRUE(testing::wait_exited(worker, std::chrono::seconds(10)));
  EXPECT_FALSE(testing::is_gone(main));

  auto one = ctl({"status", "--json", id});
  ASSERT_EQ(one.status, 0);
  EXPECT_EQ(json::parse(one.out)["reason"], "failed");
  auto detail = ctl({"status", id});
  EXPECT_NE(detail.out.find("reported failure"), std::string::npos) << detail.out;
}

TEST_F(Wardenctl, ErrorsAreOneLineWithTheirCodeAndExitNonZero) {
  auto r = ctl({"beat", "--job", "12345"});
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(r.err, "wardenctl: not_found: job 12345 not found among your jobs\n");

  r = ctl({"register", "--pid", "999999999", "--name", "x"});
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("wardenctl: "), std::string::npos);
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
}

TEST_F(Wardenctl, NoDaemonIsUnavailableWithAHint) {
  auto r = run_command({WARDENCTL_PATH, "--socket", daemon.dir() + "/nothing.sock", "status"});
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("unavailable"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("is wardend running?"), std::string::npos) << r.err;
}

TEST_F(Wardenctl, HonoursWardenSocketFromTheEnvironment) {
  auto r = run_command({WARDENCTL_PATH, "status", "--json"}, {"WARDEN_SOCKET=" + daemon.socket()});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(json::parse(r.out), json::array());
}

TEST_F(Wardenctl, UsageErrorsExitNonZero) {
  EXPECT_NE(ctl({"register", "--name", "no pid"}).status, 0);
  EXPECT_NE(ctl({"frobnicate"}).status, 0);
}

TEST_F(Wardenctl, RunCleansTheTreeAndTmpdirOfACommandThatDies) {
  // The shell leaves a background sleeper and a setsid one, writes into TMPDIR, then SIGKILLs
  // itself; its pids go to a file so the test can check them.
  std::string pids = daemon.dir() + "/pids";
  auto r = ctl({"run", "--grace", "0.5", "--", "/bin/sh", "-c",
                "sleep 300 & echo $! > " + pids + "; setsid sleep 300 & echo $! >> " + pids +
                    "; echo $TMPDIR >> " + pids + "; echo x > $TMPDIR/f; kill -9 $$"});
  EXPECT_EQ(r.status, 128 + SIGKILL) << r.err;
  std::ifstream in(pids);
  pid_t background = 0, detached = 0;
  std::string tmpdir;
  in >> background >> detached >> tmpdir;
  ASSERT_GT(background, 0);
  ASSERT_GT(detached, 0);
  EXPECT_TRUE(testing::wait_exited(background, std::chrono::seconds(10)));
  EXPECT_TRUE(testing::wait_exited(detached, std::chrono::seconds(10)));
  auto jobs = client.status();
  ASSERT_EQ(jobs.size(), 1u);
  auto done = wait_for_state(jobs[0].id, JobState::cleaned);
  EXPECT_EQ(done.reason, JobState::failed);
  EXPECT_FALSE(std::filesystem::exists(tmpdir)) << tmpdir;
}

TEST_F(Wardenctl, RunExitsWithTheCommandsStatusAndEndsTheJobAccordingly) {
  EXPECT_EQ(ctl({"run", "--", "/bin/sh", "-c", "exit 3"}).status, 3);
  auto ok = ctl({"run", "--name", "fine", "--", "/bin/sh", "-c", "test -d \"$TMPDIR\" && test -n \"$WARDEN_JOB\""});
  EXPECT_EQ(ok.status, 0) << ok.err;
  auto jobs = client.status();
  ASSERT_EQ(jobs.size(), 2u);
  EXPECT_EQ(wait_for_state(jobs[0].id, JobState::cleaned).reason, JobState::failed);
  auto fine = wait_for_state(jobs[1].id, JobState::cleaned);
  EXPECT_EQ(fine.name, "fine");
  EXPECT_EQ(fine.reason, JobState::ended);
}

TEST_F(Wardenctl, RunOfAMissingProgramSaysSoAndExits127) {
  auto r = ctl({"run", "--", "/no/such/program"});
  EXPECT_EQ(r.status, 127);
  EXPECT_NE(r.err.find("/no/such/program"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace warden
