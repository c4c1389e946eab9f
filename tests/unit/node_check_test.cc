// The node check's look and reclaim against the seams: made-up processes that will not die
// (FakeKernel), cgroups whose members are real children (FakeCgroups), real files.
#include "world/node_check.h"

#include <signal.h>
#include <sys/stat.h>

#include <fstream>

#include <boost/asio/io_context.hpp>
#include <gtest/gtest.h>

#include "tests/support/fake_cgroups.h"
#include "tests/support/fake_kernel.h"
#include "tests/support/processes.h"
#include "tests/support/temp_dir.h"

namespace warden {
namespace {

using namespace std::chrono_literals;
using Fate = testing::FakeKernel::Fate;

// A cleaned job whose cleanup reported `unkillable` as outliving SIGKILL.
CheckedJob cleaned_with(std::vector<pid_t> unkillable) {
  CheckedJob job{.id = 7, .name = "train", .uid = 1000, .finished_unix_ms = 1'000};
  for (pid_t pid : unkillable) {
    job.unkillable.push_back({.pid = pid,
                              .start_time = static_cast<std::uint64_t>(pid),
                              .role = "worker",
                              .outcome = Outcome::unkillable});
  }
  return job;
}

CleanupOptions quick() {
  CleanupOptions options;
  options.kill_timeout = 50ms;
  return options;
}

TEST(NodeCheck, AProcessThatOutlivedItsCleanupIsAnUnkillableFindingWithItsWaitChannel) {
  testing::FakeKernel kernel;
  pid_t stuck = kernel.add(Fate::never_dies);
  NodeCheckContext context{.kernel = kernel};
  NodeLook look = look_at_node({cleaned_with({stuck})}, {}, quick(), context);
  ASSERT_EQ(look.found.size(), 1u);
  const Finding& f = look.found[0].finding;
  EXPECT_EQ(f.kind, FindingKind::unkillable);
  EXPECT_EQ(f.pid, stuck);
  EXPECT_EQ(f.job, 7u);
  EXPECT_EQ(f.job_name, "train");
  EXPECT_EQ(f.uid, 1000u);
  EXPECT_EQ(f.since_unix_ms, 1'000);
  EXPECT_NE(f.detail.find("state D"), std::string::npos) << f.detail;
  EXPECT_NE(f.detail.find("fake_driver_wait"), std::string::npos) << f.detail;
  EXPECT_FALSE(f.action.empty());
}

TEST(NodeCheck, AnUnkillableThatDiedAtLastOrWhosePidWasReusedIsNoFinding) {
  testing::FakeKernel kernel;
  pid_t died = kernel.add(Fate::obeys);
  pid_t reused = kernel.add(Fate::never_dies);
  {
    auto handle = kernel.open(died);
    kernel.signal(handle.pidfd.get(), SIGTERM);
  }
  CheckedJob job = cleaned_with({died, reused});
  job.unkillable[1].start_time = 1;  // the process the cleanup saw started at another time
  NodeCheckContext context{.kernel = kernel};
  EXPECT_TRUE(look_at_node({job}, {}, quick(), context).found.empty());
}

TEST(NodeCheck, TheReclaimSendsSigkillAgainAndSaysWhatStillWillNotDie) {
  testing::FakeKernel kernel;
  pid_t stuck = kernel.add(Fate::never_dies);
  pid_t late = kernel.add(Fate::ignores_term);  // SIGKILL that did not land in time before
  NodeCheckContext context{.kernel = kernel};
  NodeLook look = look_at_node({cleaned_with({stuck, late})}, {}, quick(), context);
  ASSERT_EQ(look.found.size(), 2u);

  auto acts = reclaim_node(look.found, 0s, quick(), context);
  ASSERT_EQ(acts.size(), 2u);
  EXPECT_EQ(acts[0].outcome, Outcome::unkillable);
  EXPECT_EQ(acts[1].outcome, Outcome::killed);
  EXPECT_EQ(kernel.signals,
            (std::vector<std::string>{"KILL " + std::to_string(stuck),
                                      "KILL " + std::to_string(late)}));
  EXPECT_EQ(look_at_node({cleaned_with({stuck, late})}, {}, quick(), context).found.size(), 1u);
}

TEST(NodeCheck, ACleanedJobsCgroupStillPopulatedIsAFindingAndTheReclaimEmptiesIt) {
  boost::asio::io_context io;
  testing::FakeCgroups cgroups(io.get_executor());
  pid_t member = testing::spawn(testing::Behaviour::sleep);
  cgroups.members_of["/slurm/warden-x-7"] = {member};
  ScanCache scans;
  RealKernel kernel(scans);
  CheckedJob job = cleaned_with({});
  job.cgroups = {"/slurm/warden-x-7"};
  NodeCheckContext context{.kernel = kernel, .cgroups = &cgroups};

  NodeLook look = look_at_node({job}, {}, quick(), context);
  ASSERT_EQ(look.found.size(), 1u);
  EXPECT_EQ(look.found[0].finding.kind, FindingKind::populated_cgroup);
  EXPECT_NE(look.found[0].finding.detail.find(std::to_string(member)), std::string::npos);

  auto acts = reclaim_node(look.found, 0s, quick(), context);
  ASSERT_EQ(acts.size(), 1u);
  EXPECT_EQ(acts[0].outcome, Outcome::removed) << acts[0].detail;
  EXPECT_TRUE(cgroups.called("kill /slurm/warden-x-7"));
  EXPECT_TRUE(look_at_node({job}, {}, quick(), context).found.empty());
  testing::kill_and_reap({member});
}

TEST(NodeCheck, ALeftoverWhoseRemovalFailedIsRetriedAndOneReplacedSinceIsLeftAlone) {
  testing::TempDir dir("warden-check");
  auto registered = [&](const std::string& name) {
    std::string path = dir / name;
    std::ofstream(path) << "x";
    struct stat st{};
    ::lstat(path.c_str(), &st);
    return TrackedPath{.kind = PathKind::file,
                       .path = path,
                       .identity = {st.st_dev, st.st_ino, st.st_uid, st.st_mode & S_IFMT}};
  };
  CheckedJob job = cleaned_with({});
  job.uid = ::getuid();
  job.left.push_back({registered("failed"), Outcome::failed, "Device or resource busy"});
  job.left.push_back({registered("replaced"), Outcome::failed, "Device or resource busy"});
  // Replaced the way programs do, by renaming a new file over it (a new inode, surely).
  std::ofstream(dir / "new") << "someone else's";
  ::rename((dir / "new").c_str(), (dir / "replaced").c_str());
  testing::FakeKernel kernel;
  NodeCheckContext context{.kernel = kernel};
  CleanupOptions options = quick();
  options.paths.allowed_roots = {dir.path()};

  NodeLook look = look_at_node({job}, {}, options, context);
  ASSERT_EQ(look.found.size(), 2u);
  EXPECT_TRUE(look.found[0].removable);
  EXPECT_FALSE(look.found[1].removable);
  EXPECT_NE(look.found[1].finding.action.find("no longer what the job registered"),
            std::string::npos);

  auto acts = reclaim_node(look.found, 0s, options, context);
  ASSERT_EQ(acts.size(), 1u);
  EXPECT_EQ(acts[0].outcome, Outcome::removed) << acts[0].detail;
  struct stat st{};
  EXPECT_NE(::lstat((dir / "failed").c_str(), &st), 0);
  EXPECT_EQ(::lstat((dir / "replaced").c_str(), &st), 0);
}

}  // namespace
}  // namespace warden
