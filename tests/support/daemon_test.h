// DaemonTest: a GoogleTest fixture with a real wardend, a client, and the processes a test spawned
// (killed and reaped afterwards, whatever happened).
#pragma once

#include <chrono>
#include <iostream>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "proto/messages.h"
#include "tests/support/daemon_fixture.h"
#include "tests/support/processes.h"
#include "warden/client.h"

namespace warden::testing {

class DaemonTest : public ::testing::Test {
 protected:
  // `launcher`: what wardend is started under (e.g. nice, prlimit), as Daemon takes it.
  explicit DaemonTest(std::vector<std::string> daemon_args = {},
                      std::vector<std::string> launcher = {})
      : daemon(std::move(daemon_args), std::move(launcher)), client(daemon.socket()) {}

  void TearDown() override {
    if (HasFailure()) std::cerr << "---- wardend log ----\n" << daemon.log() << "----\n";
    kill_and_reap(spawned);
  }

  ProcessTree tree(const std::vector<Behaviour>& workers) {
    auto t = spawn_tree(workers);
    spawned.push_back(t.main);
    spawned.insert(spawned.end(), t.workers.begin(), t.workers.end());
    return t;
  }

  pid_t track(pid_t pid) { return spawned.emplace_back(pid); }

  static std::vector<int> raw(const std::vector<UniqueFd>& fds) {
    std::vector<int> out;
    for (const auto& f : fds) out.push_back(f.get());
    return out;
  }

  static std::vector<UniqueFd> pidfds(const std::vector<pid_t>& pids) {
    std::vector<UniqueFd> fds;
    for (pid_t p : pids) fds.push_back(open_pidfd(p));
    return fds;
  }

  // Waits until the job is in `state`, from its event stream (its history, then each change as
  // wardend writes it), and returns its status then. Gives up after `timeout` (generous: CI
  // machines are shared and slow) and returns the status as it is.
  JobStatus wait_for_state(JobId id, JobState state,
                           std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
    Client follower(daemon.socket());
    follower.follow_events(
        {.job = id, .limit = kMaxEventsPerReply},
        [state](const Event& e) { return e.state != state; }, timeout);
    return client.status(id).at(0);
  }

  Daemon daemon;
  Client client;
  std::vector<pid_t> spawned;
};

}  // namespace warden::testing
