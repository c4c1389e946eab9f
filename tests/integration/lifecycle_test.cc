// The job lifecycle against a real wardend: real process trees killed, stalled and ended.
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <optional>
#include <thread>

#include <gtest/gtest.h>

#include "tests/support/daemon_test.h"
#include "tests/support/expect_error.h"
#include "tests/support/processes.h"
#include "warden/client.h"

namespace warden {
namespace {

using namespace std::chrono_literals;
using testing::Behaviour;

class Lifecycle : public testing::DaemonTest {};

std::map<Outcome, int> count_outcomes(const CleanupReport& report, const std::string& role) {
  std::map<Outcome, int> counts;
  for (const auto& p : report.processes) {
    if (p.role == role) ++counts[p.outcome];
  }
  return counts;
}

TEST_F(Lifecycle, KilledJobsWorkersAllDieWithinGracePlusOneSecond) {
  std::vector<Behaviour> behaviours(7, Behaviour::sleep);
  behaviours.push_back(Behaviour::ignore_term);
  auto t = tree(behaviours);
  constexpr double kGraceS = 1.0;
  JobId id = client.register_job({.name = "killed", .pid = t.main, .grace_s = kGraceS});
  for (pid_t w : t.workers) client.add_process(id, w);
  auto worker_fds = pidfds(t.workers);
  std::vector<pid_t> obedient(t.workers.begin(), t.workers.end() - 1);
  auto obedient_fds = pidfds(obedient);

  auto killed_at = std::chrono::steady_clock::now();
  ::kill(t.main, SIGKILL);

  // The obedient seven go at SIGTERM; the job is then failed and still cleaning, waiting out the
  // grace period for the one that ignores SIGTERM.
  ASSERT_TRUE(testing::wait_exited(raw(obedient_fds), 1000ms));
  auto during = client.status(id).at(0);
  EXPECT_EQ(during.reason, JobState::failed);
  EXPECT_EQ(during.state, JobState::cleaning);

  ASSERT_TRUE(testing::wait_exited(raw(worker_fds), 2000ms)) << "grace + 1 s";
  EXPECT_LT(std::chrono::steady_clock::now() - killed_at, 2000ms);

  auto done = wait_for_state(id, JobState::cleaned);
  ASSERT_EQ(done.state, JobState::cleaned);
  EXPECT_EQ(done.reason, JobState::failed);
  ASSERT_TRUE(done.report);
  EXPECT_EQ(done.report->processes.size(), 9u);
  auto workers = count_outcomes(*done.report, "worker");
  EXPECT_EQ(workers[Outcome::terminated], 7);
  EXPECT_EQ(workers[Outcome::killed], 1);
  EXPECT_EQ(count_outcomes(*done.report, "main")[Outcome::already_gone], 1);
}

TEST_F(Lifecycle, JobThatStopsBeatingIsStalledAndItsWorkersTerminated) {
  auto t = tree({Behaviour::sleep, Behaviour::sleep});
  JobId id =
      client.register_job({.name = "hangs", .pid = t.main, .heartbeat_s = 0.5, .grace_s = 0.2});
  for (pid_t w : t.workers) client.add_process(id, w);
  auto worker_fds = pidfds(t.workers);
  for (int i = 0; i < 3; ++i) {
    auto left = client.heartbeat(id);
    ASSERT_TRUE(left);
    EXPECT_GT(*left, 0.4);
    std::this_thread::sleep_for(200ms);  // beating more often than the deadline keeps it alive
  }
  EXPECT_EQ(client.status(id).at(0).state, JobState::running);

  ASSERT_TRUE(testing::wait_exited(raw(worker_fds), 5000ms));
  auto done = wait_for_state(id, JobState::cleaned);
  EXPECT_EQ(done.reason, JobState::stalled);
  EXPECT_EQ(count_outcomes(*done.report, "worker")[Outcome::terminated], 2);
  EXPECT_FALSE(testing::is_gone(t.main)) << "the main process is spared unless the job asks";
}

TEST_F(Lifecycle, CleanEndWithExitedWorkersKillsNothing) {
  auto t = tree({Behaviour::sleep, Behaviour::sleep});
  JobId id = client.register_job({.name = "clean", .pid = t.main});
  for (pid_t w : t.workers) client.add_process(id, w);
  // The workers finish before the job ends, as DataLoader workers do at the end of an epoch.
  for (pid_t w : t.workers) {
    ::kill(w, SIGTERM);
    ASSERT_TRUE(testing::wait_exited(w, 5000ms));
  }

  client.end_job(id, true);
  auto done = wait_for_state(id, JobState::cleaned);
  EXPECT_EQ(done.reason, JobState::ended);
  ASSERT_EQ(done.report->processes.size(), 2u);
  for (const auto& p : done.report->processes) {
    EXPECT_EQ(p.outcome, Outcome::already_gone) << p.pid;
    EXPECT_FALSE(p.leftover);
  }
  EXPECT_FALSE(testing::is_gone(t.main)) << "a clean end never touches the main process";
}

TEST_F(Lifecycle, CleanEndSweepsWorkersStillRunningAsLeftovers) {
  auto t = tree({Behaviour::sleep});
  JobId id = client.register_job({.name = "forgetful", .pid = t.main, .grace_s = 1});
  client.add_process(id, t.workers[0]);
  client.end_job(id, true);
  ASSERT_TRUE(testing::wait_exited(t.workers[0], 5000ms));
  auto done = wait_for_state(id, JobState::cleaned);
  ASSERT_EQ(done.report->processes.size(), 1u);
  EXPECT_EQ(done.report->processes[0].outcome, Outcome::terminated);
  EXPECT_TRUE(done.report->processes[0].leftover);
}

TEST_F(Lifecycle, WorkerThatExitedIsReportedAlreadyGoneNotAnError) {
  auto t = tree({Behaviour::sleep, Behaviour::sleep});
  JobId id = client.register_job({.name = "one-gone", .pid = t.main, .grace_s = 1});
  for (pid_t w : t.workers) client.add_process(id, w);
  ::kill(t.workers[0], SIGKILL);
  ASSERT_TRUE(testing::wait_exited(t.workers[0], 5000ms));
  ::kill(t.main, SIGKILL);

  auto done = wait_for_state(id, JobState::cleaned);
  ASSERT_TRUE(done.report);
  std::map<pid_t, Outcome> outcome;
  for (const auto& p : done.report->processes) outcome[p.pid] = p.outcome;
  EXPECT_EQ(outcome.at(t.workers[0]), Outcome::already_gone);
  EXPECT_EQ(outcome.at(t.workers[1]), Outcome::terminated);
}

TEST_F(Lifecycle, StatusOfACleanedJobCountsWhatIsLeftNotWhatWasRegistered) {
  auto t = tree({Behaviour::sleep, Behaviour::sleep});
  JobId id = client.register_job({.name = "counted", .pid = t.main, .grace_s = 1});
  for (pid_t w : t.workers) client.add_process(id, w);
  const std::string dir = daemon.dir() + "/scratch";
  const std::string kept = daemon.dir() + "/model.pt";
  ASSERT_EQ(::mkdir(dir.c_str(), 0700), 0);
  ASSERT_TRUE(std::ofstream(kept) << "weights");
  client.add_path({.job = id, .kind = PathKind::dir, .path = dir});
  client.add_path({.job = id, .kind = PathKind::file, .path = kept, .policy = Policy::failure});
  auto running = client.status(id).at(0);
  EXPECT_EQ(running.live_processes, 3u);
  EXPECT_EQ(running.files, 2u);

  client.end_job(id, true);  // a clean end: workers swept, the scratch dir removed, model kept
  auto done = wait_for_state(id, JobState::cleaned);
  EXPECT_EQ(done.live_processes, 0u);
  EXPECT_EQ(done.files, 1u) << "only the file kept by policy is still there";
  ASSERT_EQ(done.workers.size(), 2u);
  for (const auto& w : done.workers) EXPECT_TRUE(w.exited) << w.pid;
  auto summary = client.status(std::nullopt, /*summary=*/true);
  EXPECT_EQ(summary.at(0).files, 1u);
  EXPECT_EQ(summary.at(0).live_processes, 0u);
}

TEST_F(Lifecycle, CoalescedBeatsStillAdvanceTheLastBeat) {
  // (wardend is this test's child: the job's main process is another.)
  pid_t main = track(testing::spawn(Behaviour::sleep));
  // A quarter of the deadline is 500 ms: beats within it are coalesced into one at its end.
  Job job(client, {.name = "beats", .pid = main, .heartbeat_s = 2});
  job.beat();  // the first is sent at once
  std::optional<std::int64_t> first;
  for (auto deadline = std::chrono::steady_clock::now() + 5s;
       !first && std::chrono::steady_clock::now() < deadline;) {
    first = client.status(job.id()).at(0).last_beat_unix_ms;
    if (!first) std::this_thread::sleep_for(5ms);
  }
  ASSERT_TRUE(first) << "the first beat was not sent";
  job.beat();  // within the quarter: coalesced, and sent when the quarter ends
  job.beat();
  // The coalesced beat comes a quarter (500 ms) after the first; wardend's wall-clock reading of
  // a beat may differ by a millisecond between two looks.
  std::optional<std::int64_t> last = first;
  for (auto deadline = std::chrono::steady_clock::now() + 5s;
       *last < *first + 100 && std::chrono::steady_clock::now() < deadline;) {
    std::this_thread::sleep_for(10ms);
    last = client.status(job.id()).at(0).last_beat_unix_ms;
  }
  EXPECT_GE(*last, *first + 100) << "the coalesced beats never reached wardend";
  job.end(true);
}

TEST_F(Lifecycle, EndedJobCannotBeEndedTwice) {
  auto t = tree({});
  JobId id = client.register_job({.name = "twice", .pid = t.main});
  client.end_job(id, false);
  EXPECT_EQ(testing::code_of([&] { client.end_job(id, true); }), ErrorCode::invalid_state);
}

TEST_F(Lifecycle, RegisteringAMissingProcessIsRefused) {
  pid_t gone = testing::spawn(Behaviour::exit_now);
  testing::kill_and_reap({gone});
  EXPECT_EQ(testing::code_of([&] { client.register_job({.name = "ghost", .pid = gone}); }),
            ErrorCode::no_such_process);
}

TEST_F(Lifecycle, UnprivilegedClientCannotRegisterAProcessItDoesNotOwn) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to run a client as another user";
  ASSERT_EQ(::chmod(daemon.dir().c_str(), 0755), 0);
  auto result = testing::run_command_as(65534, {WARDENCTL_PATH, "--socket", daemon.socket(),
                                                "register", "--pid", "1", "--name", "x"});
  EXPECT_EQ(result.status, 1);
  EXPECT_NE(result.err.find("permission_denied"), std::string::npos) << result.err;
  EXPECT_TRUE(client.status().empty()) << "nothing was registered";
}

TEST_F(Lifecycle, StoppingWardendLeavesRunningJobsAlone) {
  auto t = tree({Behaviour::sleep});
  JobId id = client.register_job({.name = "survivor", .pid = t.main});
  client.add_process(id, t.workers[0]);
  ::kill(daemon.pid(), SIGTERM);
  ASSERT_TRUE(testing::wait_exited(daemon.pid(), 10000ms));
  EXPECT_FALSE(testing::is_gone(t.main));
  EXPECT_FALSE(testing::is_gone(t.workers[0]));
}

// Grown later, with the loop's threads running, the kernel's descriptor table makes each doubling
// wait for an RCU grace period on the event loop (6-11 ms at a mass death, BENCHMARKS.md).
TEST_F(Lifecycle, TheDescriptorTableIsGrownOnceAtStart) {
  rlimit lim{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &lim), 0);  // wardend raises its own to this hard limit
  const long wanted = static_cast<long>(std::min<rlim_t>(lim.rlim_max, 65536));
  std::ifstream status("/proc/" + std::to_string(daemon.pid()) + "/status");
  long table = 0;
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("FDSize:", 0) == 0) table = std::stol(line.substr(7));
  }
  EXPECT_GE(table, wanted) << "no job has been registered, so only a reservation explains it";
}

}  // namespace
}  // namespace warden
