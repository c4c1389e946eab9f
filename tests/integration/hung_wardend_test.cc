// A hung wardend (SIGSTOPped: a stuck disk, a debugger) never stalls a C++ training loop.
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <iostream>
#include <thread>
#include <vector>

#include "tests/support/daemon_test.h"

namespace warden {
namespace {

using namespace std::chrono_literals;
using testing::Behaviour;

class HungWardend : public testing::DaemonTest {};

struct Timings {
  double max_ms = 0;
  double p99_ms = 0;
  std::size_t calls = 0;
};

// Calls job.beat() every 10 ms for `span`, timing each call.
Timings beat_for(Job& job, std::chrono::milliseconds span) {
  std::vector<double> took;
  auto end = std::chrono::steady_clock::now() + span;
  while (std::chrono::steady_clock::now() < end) {
    auto start = std::chrono::steady_clock::now();
    job.beat();
    took.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
            .count());
    std::this_thread::sleep_for(10ms);
  }
  std::sort(took.begin(), took.end());
  return {took.back(), took[took.size() * 99 / 100], took.size()};
}

TEST_F(HungWardend, BeatsTakeMicrosecondsWhileItIsStoppedAndTheJobIsKeptAfter) {
  pid_t main = track(testing::spawn(Behaviour::sleep));
  Job job(client, {.name = "cpp-beats", .pid = main, .heartbeat_s = 2, .grace_s = 0.5});
  Timings healthy = beat_for(job, 1s);
  ::kill(daemon.pid(), SIGSTOP);
  Timings stopped = beat_for(job, 5s);
  ::kill(daemon.pid(), SIGCONT);
  std::cout << "beat() with wardend healthy: max " << healthy.max_ms << " ms, p99 "
            << healthy.p99_ms << " ms over " << healthy.calls << " calls\n"
            << "beat() with wardend stopped 5 s: max " << stopped.max_ms << " ms, p99 "
            << stopped.p99_ms << " ms over " << stopped.calls << " calls\n";
  EXPECT_LT(stopped.max_ms, 5.0) << "a beat() call waited on the stopped wardend";

  // Beats get through again, and wardend's own pause was no stall of the job.
  beat_for(job, 3s);
  EXPECT_EQ(client.status(job.id()).at(0).state, JobState::running);
  bool told = false;
  for (const auto& e : client.events({.job = job.id()})) {
    told |= e.reason_detail.find("could not reach wardend") != std::string::npos;
  }
  EXPECT_TRUE(told) << "the job's history says it ran unsupervised";
  ::kill(main, SIGKILL);
  EXPECT_EQ(wait_for_state(job.id(), JobState::cleaned).reason, JobState::failed);
}

TEST_F(HungWardend, AJobFailsOpenWhenWardendDoesNotAnswerAndAStrictOneThrows) {
  pid_t main = track(testing::spawn(Behaviour::sleep));
  Client bounded(daemon.socket(), {.timeout = 500ms});
  ::kill(daemon.pid(), SIGSTOP);
  {
    Job job(bounded, {.name = "fail-open", .pid = main, .heartbeat_s = 1});
    EXPECT_EQ(job.id(), 0u) << "unsupervised";
    EXPECT_EQ(job.add_dir("/tmp/scratch"), "/tmp/scratch");
    job.beat();
  }
  EXPECT_THROW(Job(bounded, {.name = "strict", .pid = main}, {.strict = true}), Error);
  // (What the stopped wardend had read of the two registrations, it may carry out once it runs
  // again: the job then ends like any whose beats stop or whose main exits.)
  ::kill(daemon.pid(), SIGCONT);
}

TEST_F(HungWardend, WardenctlGivesUpWithAClearErrorInsteadOfHanging) {
  ::kill(daemon.pid(), SIGSTOP);
  auto started = std::chrono::steady_clock::now();
  auto r = testing::run_command(
      {WARDENCTL_PATH, "--socket", daemon.socket(), "--timeout", "1", "status"});
  auto took = std::chrono::steady_clock::now() - started;
  ::kill(daemon.pid(), SIGCONT);
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.err.find("did not answer within 1000 ms"), std::string::npos) << r.err;
  EXPECT_LT(took, 10s) << "bounded by its timeout, not by the daemon";
}

}  // namespace
}  // namespace warden
