#include "world/process_tree.h"

#include <unistd.h>

#include <gtest/gtest.h>

namespace warden {
namespace {

constexpr uid_t kUser = 1000;

ProcEntry proc_entry(pid_t pid, pid_t ppid, pid_t pgrp = 0, pid_t session = 0, uid_t uid = kUser,
               std::uint64_t start_time = 0) {
  return {
      .pid = pid,
      .stat = {.state = 'S',
               .ppid = ppid,
               .pgrp = pgrp == 0 ? pid : pgrp,
               .session = session == 0 ? 500 : session,
               .start_time = start_time == 0 ? static_cast<std::uint64_t>(pid) * 10 : start_time},
      .uid = uid};
}

std::map<pid_t, std::string> found(const std::vector<ProcEntry>& scan, const DiscoveryQuery& q,
                                   std::map<pid_t, std::string> environs = {}) {
  std::map<pid_t, std::string> out;
  auto env = [&](pid_t pid) -> std::optional<std::string> {
    auto it = environs.find(pid);
    if (it == environs.end()) return std::string("PATH=/bin");
    return it->second;
  };
  CookieMemo memo;
  for (const auto& d : discover(scan, q, env, memo)) out[d.pid] = d.found_by;
  return out;
}

DiscoveryQuery query(std::initializer_list<pid_t> members) {
  DiscoveryQuery q{.owner = kUser, .cookie = job_cookie(7, "/s"), .self = 99};
  for (pid_t m : members) q.members[m] = static_cast<std::uint64_t>(m) * 10;
  return q;
}

TEST(Discover, FindsDescendantsAtAnyDepth) {
  std::vector<ProcEntry> scan{proc_entry(1, 0), proc_entry(10, 1), proc_entry(11, 10), proc_entry(12, 11), proc_entry(13, 1)};
  auto f = found(scan, query({10}));
  EXPECT_EQ(f.size(), 2u);
  EXPECT_EQ(f.at(11), "child of 10");
  EXPECT_EQ(f.at(12), "child of 11");
}

TEST(Discover, FindsMembersOfGroupsAndSessionsAMemberLeads) {
  // 20 called setsid (session 20); its child 21 double-forked 22, now reparented to init.
  std::vector<ProcEntry> scan{proc_entry(1, 0), proc_entry(20, 1, 20, 20), proc_entry(22, 1, 21, 20),
                              proc_entry(30, 1, 20, 600), proc_entry(40, 1, 40, 600)};
  auto f = found(scan, query({20}));
  EXPECT_EQ(f.at(22), "in session of 20");
  EXPECT_EQ(f.at(30), "in process group of 20");
  EXPECT_FALSE(f.contains(40));
}

TEST(Discover, FindsCookieCarriersOfTheOwnerOnly) {
  std::vector<ProcEntry> scan{proc_entry(1, 0), proc_entry(10, 1), proc_entry(50, 1), proc_entry(60, 1, 0, 0, 1001)};
  auto f = found(scan, query({10}),
                 {{50, std::string("A=1\0WARDEN_JOB=7\0WARDEN_INSTANCE=/s\0", 36)},
                  {60, std::string("WARDEN_JOB=7\0WARDEN_INSTANCE=/s\0", 32)}});
  EXPECT_EQ(f.at(50), "carries WARDEN_JOB=7");
  EXPECT_FALSE(f.contains(60)) << "another user's process is never taken";
}

TEST(Discover, CookieMustMatchExactlyAndNameThisDaemon) {
  std::vector<ProcEntry> scan{proc_entry(1, 0), proc_entry(50, 1), proc_entry(51, 1), proc_entry(52, 1)};
  auto f = found(scan, query({}),
                 {{50, std::string("WARDEN_JOB=70\0WARDEN_INSTANCE=/s\0", 33)},
                  {51, std::string("XWARDEN_JOB=7\0WARDEN_INSTANCE=/s\0", 33)},
                  {52, std::string("WARDEN_JOB=7\0WARDEN_INSTANCE=/other\0", 36)}});
  EXPECT_TRUE(f.empty());
}

TEST(Discover, ARecycledPidIsNeitherParentNorLeader) {
  // Member 10 started at 100; the process now holding pid 10 started later: another process.
  std::vector<ProcEntry> scan{proc_entry(1, 0), proc_entry(10, 1, 10, 10, kUser, 999), proc_entry(11, 10, 10, 10)};
  auto f = found(scan, query({10}));
  EXPECT_TRUE(f.empty());
}

TEST(Discover, AnExitedLeaderStillNamesItsGroup) {
  // 20 led a session and exited; the kernel keeps its id while 22 remains in that session.
  std::vector<ProcEntry> scan{proc_entry(1, 0), proc_entry(22, 1, 22, 20)};
  DiscoveryQuery q = query({});
  q.leaders[20] = 200;
  EXPECT_EQ(found(scan, q).at(22), "in session of 20");
}

TEST(Discover, NeverTakesInitWardendOrTheSparedMainProcess) {
  // Main 5 is alive and spared (a clean end); 6 is its other child carrying the cookie.
  std::vector<ProcEntry> scan{proc_entry(1, 0), proc_entry(99, 1), proc_entry(5, 1),
                              proc_entry(6, 5), proc_entry(10, 5), proc_entry(11, 10)};
  DiscoveryQuery q = query({10});
  q.spared = 5;
  std::string cookie("WARDEN_JOB=7\0WARDEN_INSTANCE=/s\0", 30);
  auto f = found(scan, q, {{1, cookie}, {99, cookie}, {5, cookie}, {6, cookie}});
  EXPECT_EQ(f.size(), 1u);
  EXPECT_TRUE(f.contains(11));
}

TEST(Discover, RootJobsMayTakeAnyUsersDescendants) {
  std::vector<ProcEntry> scan{proc_entry(1, 0), proc_entry(10, 1, 0, 0, 0), proc_entry(11, 10, 0, 0, 65534)};
  DiscoveryQuery q = query({10});
  q.owner = 0;
  EXPECT_TRUE(found(scan, q).contains(11));
  q.owner = kUser;
  EXPECT_FALSE(found(scan, q).contains(11)) << "a user's job never takes another user's process";
}

TEST(Discover, EachProcessesEnvironmentIsReadOnceAcrossTheScansOfACleanup) {
  std::vector<ProcEntry> scan{proc_entry(10, 1), proc_entry(11, 1), proc_entry(12, 1)};
  DiscoveryQuery q = query({10});
  std::map<pid_t, int> reads;
  auto env = [&](pid_t pid) -> std::optional<std::string> {
    ++reads[pid];
    using namespace std::string_literals;
    return pid == 12 ? "WARDEN_JOB=7\0WARDEN_INSTANCE=/s\0"s : "X=1"s;
  };
  CookieMemo memo;
  EXPECT_EQ(discover(scan, q, env, memo).size(), 1u);
  EXPECT_EQ(discover(scan, q, env, memo).size(), 1u);
  EXPECT_EQ(reads[11], 1);
  // A recycled pid (another start time) is read again.
  scan[1] = proc_entry(11, 1, 0, 0, kUser, 777);
  discover(scan, q, env, memo);
  EXPECT_EQ(reads[11], 2);
}

TEST(Discover, AProcessThatExecsIsAskedAgainForItsNewEnvironment) {
  // Read between its fork and its exec, an escapee's environment is its parent's original one,
  // without the cookie; its exec (a new environment block) brings the cookie.
  std::vector<ProcEntry> scan{proc_entry(10, 1), proc_entry(12, 1)};
  scan[1].stat.env_start = 0x7ffc1000;
  DiscoveryQuery q = query({10});
  bool execd = false;
  auto env = [&](pid_t) -> std::optional<std::string> {
    using namespace std::string_literals;
    return execd ? "WARDEN_JOB=7\0WARDEN_INSTANCE=/s\0"s : "PATH=/bin\0"s;
  };
  CookieMemo memo;
  EXPECT_TRUE(discover(scan, q, env, memo).empty());
  execd = true;
  scan[1].stat.env_start = 0x7ffd2000;
  EXPECT_EQ(discover(scan, q, env, memo).size(), 1u);
}

TEST(ProcStatParse, ReadsTheEnvironmentBlocksAddress) {
  auto st = read_proc_stat(::getpid());
  ASSERT_TRUE(st);
  EXPECT_NE(st->env_start, 0u);
}

TEST(Discover, AnEnvironmentThatCouldNotBeReadIsAskedAgainInTheNextScan) {
  std::vector<ProcEntry> scan{proc_entry(10, 1), proc_entry(12, 1)};
  DiscoveryQuery q = query({10});
  bool readable = false;
  auto env = [&](pid_t) -> std::optional<std::string> {
    using namespace std::string_literals;
    if (!readable) return std::nullopt;
    return "WARDEN_JOB=7\0WARDEN_INSTANCE=/s\0"s;
  };
  CookieMemo memo;
  EXPECT_TRUE(discover(scan, q, env, memo).empty());
  readable = true;
  EXPECT_EQ(discover(scan, q, env, memo).size(), 1u);
}

TEST(Discover, ScanOfThisMachineIncludesThisProcessAndNoKernelThread) {
  auto scan = scan_processes(true);
  bool self = false;
  for (const auto& e : scan) {
    self |= e.pid == ::getpid();
    EXPECT_FALSE(is_kernel_thread(e.stat)) << e.pid;
  }
  EXPECT_TRUE(self);
  // Where this test runs on a host, kthreadd is pid 2 and must be absent.
  if (auto kthreadd = read_proc_stat(2); kthreadd && is_kernel_thread(*kthreadd)) {
    for (const auto& e : scan) EXPECT_NE(e.pid, 2);
  }
}

}  // namespace
}  // namespace warden
