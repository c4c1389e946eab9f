// DaemonTest: a GoogleTest fixture with a real wardend, a client, and the processes a test spawned
// (killed and reaped afterwards, whatever happened).
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <iostream>
#include <thread>
#include <vector>

#include "tests/support/daemon_fixture.h"
#include "tests/support/processes.h"
#include "proto/messages.h"
#include "warden/client.h"

namespace warden::testing {

class DaemonTest : public ::testing::Test {
 protected:
  explicit DaemonTest(std::vector<std::string> daemon_args = {})
      : daemon(std::move(daemon_args)), client(daemon.socket()) {}

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

  // wardend has no event subscription yet, so wait for a state by asking; the deadline is
  // generous because CI machines are shared and slow.
  JobStatus wait_for_state(JobId id, JobState state,
                           std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      auto s = client.status(id).at(0);
      if (s.state == state || std::chrono::steady_clock::now() > deadline) return s;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }

  Daemon daemon;
  Client client;
  std::vector<pid_t> spawned;
};

}  // namespace warden::testing
