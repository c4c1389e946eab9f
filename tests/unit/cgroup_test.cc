#include "world/cgroup.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <gtest/gtest.h>

#include "tests/support/processes.h"
#include "tests/support/temp_dir.h"

namespace warden {
namespace {

using testing::Behaviour;

TEST(CgroupPaths, FindsTheV2MountOnAHybridAndAUnifiedHost) {
  const char* hybrid =
      "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
      "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
      "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
  EXPECT_EQ(find_cgroup2_mount(hybrid), "/sys/fs/cgroup/unified");
  const char* unified =
      "26 22 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 "
      "rw,nsdelegate,memory_recursiveprot\n";
  EXPECT_EQ(find_cgroup2_mount(unified), "/sys/fs/cgroup");
  EXPECT_EQ(find_cgroup2_mount("35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw\n"),
            std::nullopt);
}

TEST(CgroupPaths, ReadsTheV2LineOfProcPidCgroup) {
  EXPECT_EQ(parse_cgroup2_path("4:memory:/x\n0::/user.slice/a.scope\n"), "/user.slice/a.scope");
  EXPECT_EQ(parse_cgroup2_path("0::/\n"), "/");
  EXPECT_EQ(parse_cgroup2_path("4:memory:/x\n"), std::nullopt) << "v1 only";
  EXPECT_EQ(parse_cgroup2_path("0::/../../other.slice\n"), std::nullopt)
      << "outside the reader's cgroup namespace";
}

TEST(CgroupPaths, ParentOfACgroup) {
  EXPECT_EQ(parent_cgroup("/a/b/warden-1-2"), "/a/b");
  EXPECT_EQ(parent_cgroup("/warden-1-2"), "/");
}

TEST(CgroupPaths, WithinMeansTheSameOrBeneathNotAPrefixOfTheName) {
  EXPECT_TRUE(cgroup_within("/a/warden-1-2", "/a/warden-1-2"));
  EXPECT_TRUE(cgroup_within("/a/warden-1-2/warden-1-9", "/a/warden-1-2"));
  EXPECT_FALSE(cgroup_within("/a/warden-1-23", "/a/warden-1-2"));
  EXPECT_FALSE(cgroup_within("/a", "/a/warden-1-2"));
  EXPECT_FALSE(cgroup_within(std::nullopt, "/a/warden-1-2"));
}

TEST(CgroupPrefix, IsMadeOnceAndKeptInTheStateDirectory) {
  testing::TempDir dir_a("warden-prefix"), dir_b("warden-prefix");
  const std::string& dir = dir_a.path();
  std::string first = cgroup_prefix(dir);
  EXPECT_EQ(first.size(), std::string("warden-").size() + 16 + 1);
  EXPECT_EQ(cgroup_prefix(dir), first) << "a restart finds its cgroups again";
  EXPECT_NE(cgroup_prefix(dir_b.path()), first) << "two wardends never share names";
}

// The real cgroupfs, where this machine lets the test write it (root, cgroup v2 mounted).
class KernelCgroupsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    cgroups = KernelCgroups::open(io.get_executor(), why);
    if (!cgroups || ::geteuid() != 0) GTEST_SKIP() << "no writable cgroup v2 here: " << why;
  }
  void TearDown() override {
    testing::kill_and_reap(children);
    if (!made.empty() && cgroups) cgroups->remove(made);
  }
  pid_t spawn(Behaviour b) { return children.emplace_back(testing::spawn(b)); }

  boost::asio::io_context io;
  std::unique_ptr<KernelCgroups> cgroups;
  std::vector<pid_t> children;
  std::string made;
};

TEST_F(KernelCgroupsTest, ACgroupBeneathAProcessHoldsItAndItsForksAndIsKilledAndEmptiedAsOne) {
  pid_t p = spawn(Behaviour::ignore_term);
  auto home = cgroups->cgroup_of(p);
  ASSERT_TRUE(home);
  made = cgroups->create(*home, "warden-unittest-" + std::to_string(::getpid()));
  EXPECT_EQ(parent_cgroup(made), *home) << "beneath the process's own cgroup";
  cgroups->move(p, made);
  EXPECT_EQ(cgroups->cgroup_of(p), made);
  EXPECT_EQ(cgroups->members(made), std::vector<pid_t>{p});
  EXPECT_TRUE(cgroups->populated(made));

  bool emptied = false;
  cgroups->when_empty(made, [&] { emptied = true; });
  cgroups->kill(made);
  boost::asio::steady_timer bound(io, std::chrono::seconds(10));
  bound.async_wait([&](boost::system::error_code) { io.stop(); });
  while (!emptied && !io.stopped()) io.run_one();
  EXPECT_TRUE(emptied) << "cgroup.events told the event loop";
  EXPECT_TRUE(testing::wait_exited(p, std::chrono::seconds(5)));
  EXPECT_EQ(cgroups->remove(made), 0);
  EXPECT_FALSE(std::filesystem::exists(cgroups->mount() + made));
  made.clear();
}

TEST_F(KernelCgroupsTest, APopulatedCgroupIsNotRemoved) {
  pid_t p = spawn(Behaviour::sleep);
  made =
      cgroups->create(*cgroups->cgroup_of(p), "warden-unittest-busy-" + std::to_string(::getpid()));
  cgroups->move(p, made);
  EXPECT_EQ(cgroups->remove(made), EBUSY);
  cgroups->move(p, parent_cgroup(made));
  EXPECT_EQ(cgroups->remove(made), 0);
  made.clear();
}

// A job inside the job: its cgroups beneath the leaf are listed and removed with it (the leaf
// itself takes the shortcut of a directory without subdirectories, child_cgroups).
TEST_F(KernelCgroupsTest, MembersAndRemovalReachTheCgroupsNestedBeneath) {
  pid_t outer = spawn(Behaviour::sleep);
  pid_t inner = spawn(Behaviour::sleep);
  made = cgroups->create(*cgroups->cgroup_of(outer),
                         "warden-unittest-nested-" + std::to_string(::getpid()));
  std::string deeper = cgroups->create(cgroups->create(made, "inner"), "deeper");
  cgroups->move(outer, made);
  cgroups->move(inner, deeper);
  auto all = cgroups->members(made);
  std::sort(all.begin(), all.end());
  EXPECT_EQ(all, (std::vector<pid_t>{std::min(outer, inner), std::max(outer, inner)}));
  EXPECT_EQ(cgroups->members(deeper), std::vector<pid_t>{inner});
  cgroups->kill(made);
  EXPECT_TRUE(testing::wait_exited(outer, std::chrono::seconds(5)));
  EXPECT_TRUE(testing::wait_exited(inner, std::chrono::seconds(5)));
  EXPECT_EQ(cgroups->remove(made), 0);
  EXPECT_FALSE(std::filesystem::exists(cgroups->mount() + made));
  made.clear();
}

}  // namespace
}  // namespace warden
