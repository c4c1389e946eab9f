// wardenctl against a real wardend: output for people and scripts, and one-line errors.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <optional>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "proto/messages.h"
#include "tests/support/daemon_test.h"
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

// The bash completion (client/wardenctl/wardenctl.bash, installed for bash-completion) offers the
// subcommands and options the CLI defines now, and the ids of the jobs wardend has.
TEST_F(Wardenctl, BashCompletionOffersSubcommandsOptionsAndJobIds) {
  pid_t main = spawned.emplace_back(testing::spawn(testing::Behaviour::sleep));
  auto reg = ctl({"register", "--pid", std::to_string(main), "--name", "completed"});
  ASSERT_EQ(reg.status, 0) << reg.err;
  std::string id = reg.out.substr(0, reg.out.find('\n'));
  auto complete = [&](const std::string& words) {
    std::string script = "source " WARDEN_SOURCE_DIR "/client/wardenctl/wardenctl.bash; "
                         "COMP_WORDS=(" + words + "); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); "
                         "_wardenctl; echo \"${COMPREPLY[*]}\"";
    std::string dir = std::filesystem::path(WARDENCTL_PATH).parent_path();
    auto r = run_command({"/bin/bash", "-c", script},
                         {"PATH=" + dir + ":/usr/bin:/bin", "WARDEN_SOCKET=" + daemon.socket()});
    EXPECT_EQ(r.status, 0) << r.err;
    return r.out;
  };
  EXPECT_EQ(complete("wardenctl st"), "status\n");
  EXPECT_NE(complete("wardenctl ''").find("cleanup"), std::string::npos);
  EXPECT_EQ(complete("wardenctl status --j"), "--json\n");
  EXPECT_EQ(complete("wardenctl add --keep"), "--keep-on-success\n");
  EXPECT_EQ(complete("wardenctl beat --job ''"), id + "\n");
  EXPECT_EQ(complete("wardenctl --socket " + daemon.socket() + " status ''"), id + "\n");
}

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
  const std::string tracking = client.server().tracking;  // cgroup where this machine allows it
  EXPECT_NE(table.out.find("TRACKING"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find("  " + tracking + "\n"), std::string::npos) << table.out;

  auto js = ctl({"status", "--json"});
  ASSERT_EQ(js.status, 0);
  auto jobs = json::parse(js.out);
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(jobs[0]["name"], "cli job");
  EXPECT_EQ(jobs[0]["main"]["pid"], main);
  EXPECT_EQ(jobs[0]["workers"][0]["pid"], worker);
  EXPECT_EQ(jobs[0]["heartbeat_s"], 60.0);
  EXPECT_EQ(jobs[0]["tracking"], tracking);
  EXPECT_NE(ctl({"status", id}).out.find("tracking   " + tracking), std::string::npos);

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
  auto ok = ctl({"run", "--name", "fine", "--", "/bin/sh", "-c",
                 "test -d \"$TMPDIR\" && test -n \"$WARDEN_JOB\""});
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

// Reads a child's output line by line as it comes.
class LineReader {
 public:
  explicit LineReader(int fd) : fd_(fd) {}
  std::optional<std::string> next(std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      if (auto nl = buffer_.find('\n'); nl != std::string::npos) {
        std::string line = buffer_.substr(0, nl);
        buffer_.erase(0, nl + 1);
        return line;
      }
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      pollfd p{.fd = fd_, .events = POLLIN};
      if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) != 1)
        return std::nullopt;
      char buf[4096];
      ssize_t n = ::read(fd_, buf, sizeof(buf));
      if (n <= 0) return std::nullopt;
      buffer_.append(buf, n);
    }
  }

 private:
  int fd_;
  std::string buffer_;
};

TEST_F(Wardenctl, EventsFollowPrintsStateChangesAsTheyHappen) {
  int out[2];
  ASSERT_EQ(::pipe2(out, O_CLOEXEC), 0);
  pid_t follower = ::fork();
  if (follower == 0) {
    ::dup2(out[1], 1);
    testing::exec_argv(
        {WARDENCTL_PATH, "--socket", daemon.socket(), "events", "--follow", "--json"});
  }
  track(follower);
  ::close(out[1]);
  LineReader lines(out[0]);
  // No waiting for it to subscribe: what happened before it did is in the history it prints
  // first, and each event is printed once either way.

  pid_t main = spawned.emplace_back(testing::spawn(testing::Behaviour::sleep));
  JobId id = client.register_job({.name = "followed", .pid = main, .group = "g1"});
  auto first = lines.next(std::chrono::seconds(5));
  ASSERT_TRUE(first) << "nothing printed after the registration";
  auto e = json::parse(*first);
  EXPECT_EQ(e["job"], id);
  EXPECT_EQ(e["state"], "running");
  // Nothing more until something happens.
  EXPECT_FALSE(lines.next(std::chrono::milliseconds(200)));

  ::kill(main, SIGKILL);
  std::vector<std::string> states;
  while (states.size() < 2) {
    auto line = lines.next(std::chrono::seconds(5));
    ASSERT_TRUE(line) << "after " << states.size() << " more events";
    states.push_back(json::parse(*line)["state"]);
  }
  EXPECT_EQ(states, (std::vector<std::string>{"cleaning", "cleaned"}));
  ::close(out[0]);
}

TEST_F(Wardenctl, CleanupOfAGroupEndsEveryJobOfItAndNoOther) {
  std::vector<pid_t> mains;
  for (int i = 0; i < 3; ++i)
    mains.push_back(spawned.emplace_back(testing::spawn(testing::Behaviour::sleep)));
  // Two jobs of Slurm job 4242 (the group comes from the environment), one of another.
  for (int i = 0; i < 2; ++i) {
    auto r = run_command({WARDENCTL_PATH, "--socket", daemon.socket(), "register", "--pid",
                          std::to_string(mains[i]), "--name", "rank" + std::to_string(i)},
                         {"SLURM_JOB_ID=4242"});
    ASSERT_EQ(r.status, 0) << r.err;
  }
  ASSERT_EQ(ctl({"register", "--pid", std::to_string(mains[2]), "--name", "other", "--group", "7"})
                .status,
            0);
  auto table = ctl({"status"});
  EXPECT_NE(table.out.find("GROUP"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find("4242"), std::string::npos) << table.out;

  auto r = ctl({"cleanup", "--group", "4242"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("cleaning 2 jobs"), std::string::npos) << r.out;
  EXPECT_TRUE(testing::wait_exited(mains[0], std::chrono::seconds(10)));
  EXPECT_TRUE(testing::wait_exited(mains[1], std::chrono::seconds(10)));
  EXPECT_FALSE(testing::is_gone(mains[2]));
  EXPECT_EQ(wait_for_state(3, JobState::running).state, JobState::running);
  EXPECT_EQ(wait_for_state(1, JobState::cleaned).reason_detail,
            "cleanup requested by uid 0 for group 4242");

  // One job by id, as its owner.
  ASSERT_EQ(ctl({"cleanup", "3"}).status, 0);
  EXPECT_TRUE(testing::wait_exited(mains[2], std::chrono::seconds(10)));
  EXPECT_NE(ctl({"cleanup"}).status, 0) << "a JOB or --group is required";
}

TEST_F(Wardenctl, SlurmEpilogCleansTheFinishedSlurmJobsGroupOnly) {
  pid_t rank = spawned.emplace_back(testing::spawn(testing::Behaviour::sleep));
  pid_t other = spawned.emplace_back(testing::spawn(testing::Behaviour::sleep));
  auto reg = run_command({WARDENCTL_PATH, "--socket", daemon.socket(), "register", "--pid",
                          std::to_string(rank), "--name", "rank0"},
                         {"SLURM_JOB_ID=5150"});
  ASSERT_EQ(reg.status, 0) << reg.err;
  ASSERT_EQ(
      ctl({"register", "--pid", std::to_string(other), "--name", "next", "--group", "5151"}).status,
      0);

  const std::string epilog = WARDEN_EPILOG_PATH;
  auto r = run_command({epilog}, {"SLURM_JOB_ID=5150", "WARDEN_SOCKET=" + daemon.socket(),
                                  std::string("WARDENCTL=") + WARDENCTL_PATH});
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(testing::is_gone(rank)) << "the epilog returns once the group is cleaned";
  EXPECT_FALSE(testing::is_gone(other));
  EXPECT_EQ(wait_for_state(1, JobState::cleaned).state, JobState::cleaned);

  // Without a daemon it logs and still succeeds: an epilog must not drain the node.
  auto down = run_command({epilog}, {"SLURM_JOB_ID=5150", "WARDEN_SOCKET=/nonexistent/warden.sock",
                                     std::string("WARDENCTL=") + WARDENCTL_PATH});
  EXPECT_EQ(down.status, 0);
  EXPECT_NE(down.err.find("slurm job 5150: wardenctl: unavailable"), std::string::npos) << down.err;
}

}  // namespace
}  // namespace warden
