// The cleanup engine's escalation against the fake kernel (support/fake_kernel.h), where processes
// do what real ones only do by accident: SIGTERM ignored, SIGKILL survived, children forked in the
// middle of a cleanup. What the engine signals, in what order, and what it reports.
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <gtest/gtest.h>

#include "world/cleanup.h"
#include "world/files.h"
#include "world/namespaces.h"
#include "tests/support/fake_kernel.h"
#include "tests/support/temp_dir.h"

namespace warden {
namespace {

using namespace std::chrono_literals;
using Fate = testing::FakeKernel::Fate;

class Escalation : public ::testing::Test {
 protected:
  // Ends the plan's targets (a failed job whose main process is long gone) through the fake.
  // `meanwhile` runs on the same loop as the cleanup, until the cleanup ends.
  CleanupReport clean(Duration grace, Duration kill_timeout = 5s,
                      const std::function<void()>& meanwhile = {}) {
    plan.grace = grace;
    plan.main = {.pid = 999, .start_time = 999};
    plan.main_spared = false;
    boost::asio::io_context io;
    boost::asio::thread_pool blocking(1);
    boost::asio::thread_pool removals(1);
    CleanupContext context{.options = {.kill_timeout = kill_timeout},
                           .blocking = blocking.get_executor(),
                           .removals = removals.get_executor(),
                           .self = ::getpid(),
                           .kernel = &kernel,
                           .home = home};
    CleanupReport report;
    bool done = false;
    boost::asio::steady_timer tick(io);
    std::function<void()> again = [&] {
      if (done) return;
      meanwhile();
      tick.expires_after(2ms);
      tick.async_wait([&](boost::system::error_code) { again(); });
    };
    if (meanwhile) again();
    boost::asio::co_spawn(io, run_cleanup(plan, std::move(pidfds), context),
                          [&](std::exception_ptr e, CleanupReport r) {
                            done = true;
                            tick.cancel();
                            if (e) std::rethrow_exception(e);
                            report = std::move(r);
                          });
    io.run();
    return report;
  }

  pid_t target(Fate fate) {
    pid_t pid = kernel.add(fate);
    auto handle = kernel.open(pid);
    plan.targets.push_back({.identity = handle.identity, .role = "worker"});
    pidfds.push_back(std::move(handle.pidfd));
    return pid;
  }

  static const ProcessReport& of(const CleanupReport& r, pid_t pid) {
    for (const auto& p : r.processes) {
      if (p.pid == pid) return p;
    }
    throw std::runtime_error("no report for pid " + std::to_string(pid));
  }

  // A file of the job's, registered.
  std::string registered_file() {
    std::string path = dir.path() + "/batch.bin";
    std::ofstream(path) << "data";
    plan.paths.push_back({.path = resolve_path(rules, AT_FDCWD, PathKind::file, path)});
    return path;
  }

  testing::FakeKernel kernel;
  CleanupPlan plan;
  std::vector<UniqueFd> pidfds;
  std::shared_ptr<const View> home;  // the job's paths' home: none unless a test registers paths
  testing::TempDir dir;
  PathRules rules{.allowed_roots = {"/tmp"}};
};

std::string n(pid_t pid) { return std::to_string(pid); }

TEST_F(Escalation, ProcessIgnoringSigtermIsKilledOnceTheGraceIsOver) {
  pid_t obeys = target(Fate::obeys);
  pid_t stubborn = target(Fate::ignores_term);
  auto r = clean(100ms);

  // Stopped (no forking while the tree is looked at), asked to end, let run, stopped again for
  // the look at what it forked meanwhile, then killed.
  EXPECT_EQ(kernel.signals,
            (std::vector<std::string>{"STOP " + n(obeys), "STOP " + n(stubborn), "TERM " + n(obeys),
                                      "TERM " + n(stubborn), "CONT " + n(stubborn),
                                      "STOP " + n(stubborn), "KILL " + n(stubborn)}));
  EXPECT_EQ(of(r, obeys).outcome, Outcome::terminated);
  EXPECT_EQ(of(r, stubborn).outcome, Outcome::killed);
  EXPECT_GE(of(r, stubborn).elapsed_ms, 100) << "killed before the grace period was over";
  EXPECT_EQ(of(r, stubborn).command, "fake " + n(stubborn));
}

TEST_F(Escalation, ProcessThatSurvivesSigkillIsReportedUnkillableAtTheBound) {
  pid_t stuck = target(Fate::never_dies);
  pid_t obeys = target(Fate::obeys);
  auto r = clean(0ms, /*kill_timeout=*/200ms);

  EXPECT_EQ(of(r, obeys).outcome, Outcome::killed);
  EXPECT_EQ(of(r, stuck).outcome, Outcome::unkillable);
  EXPECT_NE(of(r, stuck).detail.find("still alive"), std::string::npos) << of(r, stuck).detail;
  EXPECT_TRUE(kernel.alive(stuck));
  EXPECT_GE(r.duration_ms, 200) << "gave up before the kill bound";
  EXPECT_LT(r.duration_ms, 5000) << "held the cleanup past the kill bound";
}

TEST_F(Escalation, RescansFindWhatTheJobForksAndEndItToo) {
  pid_t stubborn = target(Fate::ignores_term);  // alive through the grace: it may have forked
  pid_t early = kernel.add(Fate::obeys);        // forked before the freeze: found by its scan
  pid_t late = kernel.add(Fate::ignores_term);  // forked during the grace: found after it
  pid_t later = kernel.add(Fate::obeys);        // forked by `late` meanwhile: found by the next
  kernel.appear_on_scan = {{early}, {}, {late}, {later}};
  auto r = clean(50ms);

  EXPECT_EQ(of(r, stubborn).outcome, Outcome::killed);
  EXPECT_EQ(of(r, early).outcome, Outcome::terminated);
  EXPECT_EQ(of(r, early).role, "descendant");
  EXPECT_EQ(of(r, early).detail, "forked during the cleanup");
  EXPECT_EQ(of(r, late).outcome, Outcome::killed);
  EXPECT_EQ(of(r, later).outcome, Outcome::killed);
  EXPECT_FALSE(kernel.alive(late));
  EXPECT_FALSE(kernel.alive(later));
  // The freeze scanned until a scan found nothing new; after the grace, again, before any SIGKILL.
  EXPECT_EQ(kernel.scans, 5);
}

TEST_F(Escalation, AfterTheGraceEverythingIsStoppedAndRescannedBeforeAnythingIsKilled) {
  pid_t parent = target(Fate::ignores_term);
  pid_t child = kernel.add(Fate::ignores_term);  // forked by `parent` during the grace
  kernel.appear_on_scan = {{}, {child}};
  auto r = clean(50ms);

  // Killed first, the parent would orphan the child before the look that names it as its child.
  EXPECT_EQ(kernel.signals,
            (std::vector<std::string>{"STOP " + n(parent), "TERM " + n(parent),
                                      "CONT " + n(parent), "STOP " + n(parent),
                                      "STOP " + n(child), "KILL " + n(parent),
                                      "KILL " + n(child)}));
  EXPECT_EQ(of(r, child).outcome, Outcome::killed);
  EXPECT_EQ(kernel.scans, 3) << "the freeze's, and after the grace until one found nothing";
}

TEST_F(Escalation, OnceEverythingHasExitedInTheGraceNoRescanFollows) {
  // The cost of a mass death in scan tracking: one more look per cleanup was a tenfold slowdown.
  pid_t worker = target(Fate::obeys);
  auto r = clean(50ms);
  EXPECT_EQ(of(r, worker).outcome, Outcome::terminated);
  EXPECT_EQ(kernel.scans, 1) << "only the freeze's";
}

TEST_F(Escalation, WithoutCgroupsAMainThatDiedFirstStillHasItsJobLookedFor) {
  // Nothing registered is alive: the main died first. Its session's members, which it forked and
  // which no registration names, are the scan's to find.
  pid_t session_member = kernel.add(Fate::obeys);
  kernel.appear_on_scan = {{session_member}};
  auto r = clean(50ms);

  EXPECT_EQ(of(r, session_member).outcome, Outcome::terminated);
  EXPECT_FALSE(kernel.alive(session_member));
  EXPECT_GE(kernel.scans, 2) << "found by the freeze's scan, confirmed by the next";
}

TEST_F(Escalation, WithoutGraceTheFrozenTreeIsKilledAtOnceWithoutARescan) {
  pid_t worker = target(Fate::ignores_term);
  auto r = clean(0ms);

  EXPECT_EQ(kernel.signals, (std::vector<std::string>{"STOP " + n(worker), "KILL " + n(worker)}));
  EXPECT_EQ(of(r, worker).outcome, Outcome::killed);
  EXPECT_EQ(kernel.scans, 1) << "nothing ran since the freeze's scan confirmed the tree";
}

// Once every process has been sent SIGKILL none runs again, so nothing waits for the kernel to
// finish them: the paths go meanwhile. Here one process takes as long as the removal does to die.
TEST_F(Escalation, WithoutHooksThePathsGoWhileTheKilledProcessesAreStillDying) {
  home = View::wardends();
  std::string file = registered_file();
  pid_t slow = target(Fate::never_dies);
  auto r = clean(0ms, /*kill_timeout=*/30s, [&] {
    if (!std::filesystem::exists(file) && kernel.alive(slow)) kernel.finish(slow);
  });

  EXPECT_EQ(of(r, slow).outcome, Outcome::killed) << "its file was never removed while it died";
  ASSERT_EQ(r.paths.size(), 1U);
  EXPECT_EQ(r.paths[0].outcome, Outcome::removed);
  EXPECT_LT(r.duration_ms, 10'000);
}

// A hook may want the job's files (its logs, say): they stay until the processes are gone and the
// hooks have run.
TEST_F(Escalation, WithHooksThePathsWaitForTheProcessesAndTheHooks) {
  home = View::wardends();
  plan.uid = ::getuid();
  plan.gid = ::getgid();
  std::string file = registered_file();
  plan.hooks.push_back({.command = {.argv = {"/bin/test", "-e", file}}});
  pid_t slow = target(Fate::never_dies);
  const auto start = Clock::now();
  bool removed_while_waiting = false;  // before the kill bound, while `slow` was waited for
  auto r = clean(0ms, /*kill_timeout=*/200ms, [&] {
    if (Clock::now() - start < 200ms && !std::filesystem::exists(file)) {
      removed_while_waiting = true;
    }
  });

  EXPECT_FALSE(removed_while_waiting);
  EXPECT_EQ(of(r, slow).outcome, Outcome::unkillable);
  ASSERT_EQ(r.hooks.size(), 1U);
  EXPECT_EQ(r.hooks[0].outcome, Outcome::succeeded) << "the hook did not find the file";
  ASSERT_EQ(r.paths.size(), 1U);
  EXPECT_EQ(r.paths[0].outcome, Outcome::removed);
}

}  // namespace
}  // namespace warden
