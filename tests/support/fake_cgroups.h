// FakeCgroups: the Cgroups seam in memory, for unit tests of the cleanup engine. Its members are
// real processes (children of the test), so pidfds and signals are real; what the kernel would do
// (membership, cgroup.kill, forks while thawed) is the test's to arrange, and every call is
// recorded in order.
#pragma once

#include <signal.h>

#include <algorithm>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/steady_timer.hpp>

#include "world/cgroup.h"
#include "tests/support/processes.h"

namespace warden::testing {

class FakeCgroups final : public Cgroups {
 public:
  explicit FakeCgroups(boost::asio::any_io_executor executor) : executor_(std::move(executor)) {}

  // --- what the test arranges ---
  std::map<std::string, std::set<pid_t>> members_of;  // by cgroup; a pid in none is in "/"
  // A member nothing can end or even open (stuck in the kernel): the cgroup stays populated.
  bool never_empties = false;
  // Emptiness is never told, only found by a look (the kernel's notifications of cgroup.events
  // are rate-limited: one may come 10 ms late).
  bool silent = false;
  std::function<void()> on_thaw;  // runs when a cgroup is thawed (a fork during the grace)
  // --- what the engine did ---
  std::vector<std::string> calls;  // "freeze /job 1", "kill /job", "move 42 /", "remove /job"

  std::string create(const std::string& parent, const std::string& name) override {
    std::string cgroup = (parent == "/" ? "" : parent) + "/" + name;
    members_of[cgroup];
    return cgroup;
  }
  void move(pid_t pid, const std::string& cgroup) override {
    calls.push_back("move " + std::to_string(pid) + " " + cgroup);
    for (auto& [_, pids] : members_of) pids.erase(pid);
    if (cgroup != "/") members_of[cgroup].insert(pid);
  }
  std::optional<std::string> cgroup_of(pid_t pid) override {
    if (is_gone(pid)) return std::nullopt;
    for (const auto& [cgroup, pids] : members_of) {
      if (pids.contains(pid)) return cgroup;
    }
    return "/";
  }
  std::vector<pid_t> members(const std::string& cgroup) override {
    std::vector<pid_t> out;
    for (pid_t pid : members_of[cgroup]) {
      if (!is_gone(pid)) out.push_back(pid);
    }
    return out;
  }
  void freeze(const std::string& cgroup, bool frozen) override {
    calls.push_back("freeze " + cgroup + (frozen ? " 1" : " 0"));
    if (!frozen && on_thaw) on_thaw();
  }
  void kill(const std::string& cgroup) override {
    calls.push_back("kill " + cgroup);
    for (pid_t pid : members(cgroup)) ::kill(pid, SIGKILL);
  }
  bool populated(const std::string& cgroup) override {
    return never_empties || !members(cgroup).empty();
  }
  // Asks every 5 ms: a fake may poll; the real one is told by the kernel.
  void when_empty(const std::string& cgroup, std::function<void()> emptied) override {
    if (silent) return;
    auto timer = std::make_shared<boost::asio::steady_timer>(executor_);
    waits_[cgroup] = timer;
    poll(cgroup, timer, std::move(emptied));
  }
  void forget_empty(const std::string& cgroup) override {
    if (auto it = waits_.find(cgroup); it != waits_.end()) {
      it->second->cancel();
      waits_.erase(it);
    }
  }
  int remove(const std::string& cgroup) override {
    calls.push_back("remove " + cgroup);
    if (populated(cgroup)) return EBUSY;
    members_of.erase(cgroup);
    return 0;
  }
  std::vector<std::string> find(const std::string& prefix) override {
    std::vector<std::string> out;
    for (const auto& [cgroup, _] : members_of) {
      if (cgroup.rfind("/" + prefix, 0) == 0) out.push_back(cgroup);
    }
    return out;
  }

  bool called(const std::string& call) const {
    return std::find(calls.begin(), calls.end(), call) != calls.end();
  }
  // Where `call` stands in the calls, or -1.
  int order_of(const std::string& call) const {
    auto it = std::find(calls.begin(), calls.end(), call);
    return it == calls.end() ? -1 : static_cast<int>(it - calls.begin());
  }

 private:
  void poll(const std::string& cgroup, std::shared_ptr<boost::asio::steady_timer> timer,
            std::function<void()> emptied) {
    // A wait forgotten while its timer's completion was already queued ends here.
    auto waiting = waits_.find(cgroup);
    if (waiting == waits_.end() || waiting->second != timer) return;
    if (!populated(cgroup)) {
      waits_.erase(cgroup);
      emptied();
      return;
    }
    timer->expires_after(std::chrono::milliseconds(5));
    timer->async_wait(
        [this, cgroup, timer, emptied = std::move(emptied)](boost::system::error_code ec) mutable {
          if (!ec) poll(cgroup, timer, std::move(emptied));
        });
  }

  boost::asio::any_io_executor executor_;
  std::map<std::string, std::shared_ptr<boost::asio::steady_timer>> waits_;
};

}  // namespace warden::testing
