// The cleanup engine against a real wardend: whole process trees, files, shm, hooks and
// diagnostics, after a real SIGKILL or stall.
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "world/process_tree.h"
#include "tests/support/daemon_test.h"
#include "tests/support/temp_dir.h"

namespace warden {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using testing::Behaviour;

// Polls `ready` until it holds or 10 s pass (generous: CI machines are slow).
template <class Ready>
bool eventually(Ready ready) {
  for (auto until = std::chrono::steady_clock::now() + 10s; std::chrono::steady_clock::now() < until;
       std::this_thread::sleep_for(5ms)) {
    if (ready()) return true;
  }
  return false;
}

class CleanupEngine : public testing::DaemonTest {
 protected:
  explicit CleanupEngine(std::vector<std::string> flags = {},
                         std::vector<std::string> launcher = {})
      : DaemonTest(std::move(flags), std::move(launcher)) {}
  void SetUp() override { ::chmod(dir.c_str(), 0755); }
  void TearDown() override {
    DaemonTest::TearDown();
    ::unsetenv("WARDEN_JOB");
    ::unsetenv("WARDEN_SOCKET");
    ::unsetenv("WARDEN_INSTANCE");
    for (const auto& name : shm_names) ::shm_unlink(name.c_str());
  }

  // Registers a job for a fresh main process and exports its cookie, as a client would.
  std::pair<testing::ProcessTree, JobId> job(const std::vector<Behaviour>& workers = {},
                                             RegisterJobRequest request = {.grace_s = 0.5}) {
    auto t = tree(workers);
    request.name = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    request.pid = t.main;
    JobId id = client.register_job(request);
    for (pid_t w : t.workers) client.add_process(id, w);
    ::setenv("WARDEN_JOB", std::to_string(id).c_str(), 1);
    ::setenv("WARDEN_INSTANCE", client.server().instance.c_str(), 1);
    return {t, id};
  }

  std::string shm(const std::string& name) {
    int fd = ::shm_open(("/" + name).c_str(), O_CREAT | O_RDWR, 0600);
    EXPECT_GE(fd, 0);
    ::close(fd);
    shm_names.push_back("/" + name);
    return "/dev/shm/" + name;
  }

  // Every process on the machine still carrying this job's cookie.
  std::vector<pid_t> carriers(JobId id) const {
    std::vector<pid_t> out;
    auto cookie = job_cookie(id, client.server().instance);
    for (const auto& e : scan_processes(true)) {
      if (e.stat.state == 'Z') continue;
      auto env = read_environ(e.pid);
      if (env && env->find(cookie[0] + '\0') != std::string::npos &&
          env->find(cookie[1] + '\0') != std::string::npos) {
        out.push_back(e.pid);
      }
    }
    return out;
  }

  // A worker registered beside the main, leading a session of its own and without the job's
  // cookie, whose SIGTERM handler forks every 40 ms through a 2 s grace: plain children,
  // children that call setsid and double-forked orphans. SIGKILL of the main; nothing of the
  // worker may outlive "cleaned". (The setsid children are the hard ones: without a cookie only
  // their parentage names them, and a parent killed before the look orphans them.)
  void expect_forking_through_the_grace_leaves_nothing() {
    auto [t, id] = job({}, {.grace_s = 2});
    const std::string s = trap_sleep();
    pid_t worker = track(testing::spawn_exec(
        {"/usr/bin/env", "-i", "/usr/bin/setsid", "/bin/bash", "-c",
         "trap 'while :; do sleep " + s + "1 & setsid sleep " + s + "2 & (sleep " + s +
             "3 &); sleep 0.04; done' TERM; while :; do sleep 0.1; done"}));
    // Its trap is set once it runs its loop's first sleep.
    ASSERT_TRUE(eventually([&] { return !read_descendants(worker).empty(); }));
    client.add_process(id, worker);

    ::kill(t.main, SIGKILL);
    auto done = wait_for_state(id, JobState::cleaned);
    ASSERT_EQ(done.state, JobState::cleaned);
    std::vector<pid_t> left = forked_by_the_trap();
    for (pid_t p : left) track(p);
    EXPECT_EQ(left, std::vector<pid_t>{}) << "forked during the grace, alive after 'cleaned'";
    EXPECT_TRUE(testing::is_gone(worker));
    std::size_t descendants = 0;
    for (const auto& p : done.report->processes) descendants += p.role == "descendant";
    EXPECT_GT(descendants, 10u) << "2 s of forking every 40 ms, three ways";
  }

  // What the trap's sleeps sleep, but for the last digit: this test process's own, so that a test
  // run beside it (ctest -j) forking the same way is not counted.
  static std::string trap_sleep() { return "7" + std::to_string(::getpid()); }

  // The sleeps the trap above forks, still alive.
  static std::vector<pid_t> forked_by_the_trap() {
    std::vector<pid_t> out;
    const std::string prefix = std::string("sleep") + '\0' + trap_sleep();
    for (const auto& e : scan_processes(false)) {
      if (e.stat.state == 'Z') continue;
      auto argv = read_proc_file(e.pid, "cmdline");
      if (argv && argv->starts_with(prefix)) out.push_back(e.pid);
    }
    return out;
  }

  testing::TempDir temp{"warden-engine"};
  const std::string dir = temp.path();
  std::vector<std::string> shm_names;
};

// Workers registered after they double-forked an escapee: the escapee left their tree before the
// registration, so no cgroup of the job's holds it, and the scan finds it by the job's cookie.
class ScanningCleanupEngine : public CleanupEngine {
 protected:
  ScanningCleanupEngine() : CleanupEngine({"--tracking", "scan"}) {}
};

TEST_F(ScanningCleanupEngine, DoubleForkedSetsidEscapeeDiesWithTheJob) {
  auto [t, id] = job();
  auto escape = testing::spawn_escape();
  track(escape.worker);
  track(escape.escapee);
  client.add_process(id, escape.worker);
  ASSERT_NE(read_proc_stat(escape.escapee)->ppid, escape.worker) << "the escapee was reparented";

  ::kill(t.main, SIGKILL);
  EXPECT_TRUE(testing::wait_exited(escape.escapee, 10s));
  auto done = wait_for_state(id, JobState::cleaned);
  ASSERT_TRUE(done.report);
  bool reported = false;
  for (const auto& p : done.report->processes) {
    if (p.pid == escape.escapee) {
      reported = true;
      EXPECT_EQ(p.role, "descendant");
      EXPECT_NE(p.detail.find("WARDEN_JOB"), std::string::npos) << p.detail;
    }
  }
  EXPECT_TRUE(reported);
}

TEST_F(ScanningCleanupEngine, DescendantsDieAtZeroGraceToo) {
  // Without a grace period the tree is frozen, scanned once to completion, then killed.
  auto [t, id] = job({}, {.grace_s = 0});
  auto escape = testing::spawn_escape();
  track(escape.worker);
  track(escape.escapee);
  client.add_process(id, escape.worker);
  pid_t child = track(testing::spawn_exec({"/bin/sh", "-c", "sleep 300 & wait"}));
  client.add_process(id, child);
  // Wait until the shell has started its sleep (generous deadline: CI machines are slow).
  auto has_child = [&] {
    for (const auto& e : scan_processes(true)) {
      if (e.stat.ppid == child) return true;
    }
    return false;
  };
  for (auto until = std::chrono::steady_clock::now() + 10s;
       !has_child() && std::chrono::steady_clock::now() < until;) {
    std::this_thread::sleep_for(1ms);
  }

  ::kill(t.main, SIGKILL);
  EXPECT_TRUE(testing::wait_exited(escape.escapee, 10s));
  auto done = wait_for_state(id, JobState::cleaned);
  ASSERT_EQ(done.state, JobState::cleaned);
  EXPECT_EQ(carriers(id), std::vector<pid_t>{});
  std::size_t descendants = 0;
  for (const auto& p : done.report->processes) {
    if (p.role == "descendant") {
      ++descendants;
      EXPECT_EQ(p.outcome, Outcome::killed) << p.pid;
    }
  }
  EXPECT_EQ(descendants, 2u) << "the escapee and the shell's sleep";
}


// Without cgroups, a main SIGKILLed while no registered worker lives still takes with it what only
// a scan can name: its session's members, orphaned by its death, and a setsid, double-forked carrier
// of the job's cookie.
TEST_F(ScanningCleanupEngine, AMainThatDiesFirstTakesItsSessionAndItsCookiesCarriersWithIt) {
  pid_t main = track(testing::spawn_exec(
      {"/usr/bin/setsid", "/bin/sh", "-c", "sleep 6001 & sleep 6001 & exec sleep 6000"}));
  ASSERT_TRUE(eventually([&] { return read_descendants(main).size() == 2; }));
  std::vector<pid_t> children = read_descendants(main);
  for (pid_t c : children) track(c);
  JobId id = client.register_job({.name = "main-first", .pid = main, .grace_s = 1});
  ::setenv("WARDEN_JOB", std::to_string(id).c_str(), 1);
  ::setenv("WARDEN_INSTANCE", client.server().instance.c_str(), 1);
  pid_t launcher = track(testing::spawn_exec({"/bin/sh", "-c", "setsid sleep 6002 &"}));
  ASSERT_TRUE(testing::wait_exited(launcher, 10s));
  // The carrier execs twice (sh, setsid, sleep); mid-exec its environment reads empty, so it is
  // taken once it is the sleep, from the same look that found it.
  pid_t carrier = 0;
  ASSERT_TRUE(eventually([&] {
    auto found = carriers(id);
    if (found.size() == 1 && read_command_line(found[0]) == "sleep 6002") carrier = found[0];
    return carrier != 0;
  }));
  track(carrier);

  ::kill(main, SIGKILL);
  auto done = wait_for_state(id, JobState::cleaned);
  ASSERT_EQ(done.state, JobState::cleaned);
  for (pid_t c : children) {
    EXPECT_TRUE(testing::is_gone(c)) << "the session's member " << c << " outlived 'cleaned'";
  }
  EXPECT_TRUE(testing::is_gone(carrier)) << "the cookie's carrier outlived 'cleaned'";
  std::size_t by_main = 0;  // its group's and session's members
  for (const auto& p : done.report->processes) {
    by_main += p.detail == "in process group of " + std::to_string(main) ||
               p.detail == "in session of " + std::to_string(main);
  }
  EXPECT_EQ(by_main, 2u);
}

TEST_F(ScanningCleanupEngine, ChildrenForkedDuringTheGraceDieWithTheJob) {
  expect_forking_through_the_grace_leaves_nothing();
}

// With tracking cgroups the worker beside the main has a leaf of the job's, which holds its forks.
TEST_F(CleanupEngine, ChildrenAWorkerBesideTheMainForksDuringTheGraceDieWithTheJob) {
  expect_forking_through_the_grace_leaves_nothing();
}

TEST_F(CleanupEngine, TreeThatKeepsForkingDuringCleanupIsFullyEnded) {
  auto [t, id] = job();
  // Ignores SIGTERM and forks a new sleeper every 10 ms, during the grace period too.
  pid_t forker = track(testing::spawn_exec(
      {"/bin/sh", "-c", "trap '' TERM; while :; do sleep 300 & sleep 0.01; done"}));
  client.add_process(id, forker);
  std::this_thread::sleep_for(200ms);  // let it build up a crowd of children
  ASSERT_GT(carriers(id).size(), 5u);

  ::kill(t.main, SIGKILL);
  auto done = wait_for_state(id, JobState::cleaned);
  ASSERT_EQ(done.state, JobState::cleaned);
  EXPECT_EQ(carriers(id), std::vector<pid_t>{}) << "nothing carrying the job's cookie survives";
  EXPECT_TRUE(testing::is_gone(forker));
  std::size_t descendants = 0;
  for (const auto& p : done.report->processes) descendants += p.role == "descendant";
  EXPECT_GT(descendants, 5u);
}

TEST_F(CleanupEngine, RemovesA10000FileDirectoryAndRefusesASwappedOne) {
  auto [t, id] = job();
  std::string big = dir + "/big";
  fs::create_directories(big + "/sub");
  for (int i = 0; i < 10000; ++i) {
    std::ofstream(big + (i % 2 ? "/sub/f" : "/f") + std::to_string(i)) << i;
  }
  std::string swapped = dir + "/swapped";
  std::string elsewhere = dir + "/elsewhere";
  fs::create_directory(swapped);
  fs::create_directory(elsewhere);
  std::ofstream(elsewhere + "/canary") << "alive";
  client.add_path({.job = id, .kind = PathKind::dir, .path = big});
  client.add_path({.job = id, .kind = PathKind::dir, .path = swapped});
  fs::remove(swapped);
  fs::create_directory_symlink(elsewhere, swapped);

  ::kill(t.main, SIGKILL);
  auto done = wait_for_state(id, JobState::cleaned, 60s);
  ASSERT_EQ(done.report->paths.size(), 2u);
  EXPECT_EQ(done.report->paths[0].outcome, Outcome::removed) << done.report->paths[0].detail;
  EXPECT_EQ(done.report->paths[0].removed, 10002u);
  EXPECT_FALSE(fs::exists(big));
  EXPECT_EQ(done.report->paths[1].outcome, Outcome::refused);
  EXPECT_TRUE(fs::exists(elsewhere + "/canary"));
}

TEST_F(CleanupEngine, ShmSegmentAndTorchGlobAreUnlinkedAfterSigkill) {
  auto [t, id] = job();
  std::string pid = std::to_string(t.main);
  std::string segment = shm("warden_test_" + pid);
  std::vector<std::string> torch{shm("torch_" + pid + "_1"), shm("torch_" + pid + "_2")};
  std::string other = shm("torch_" + pid + "0_1");  // another pid's prefix must survive
  client.add_path({.job = id, .kind = PathKind::shm, .path = "/warden_test_" + pid});
  client.add_path({.job = id, .kind = PathKind::shm_glob, .path = "torch_" + pid + "_*"});

  ::kill(t.main, SIGKILL);
  auto done = wait_for_state(id, JobState::cleaned);
  EXPECT_FALSE(fs::exists(segment));
  for (const auto& s : torch) EXPECT_FALSE(fs::exists(s)) << s;
  EXPECT_TRUE(fs::exists(other));
  ASSERT_EQ(done.report->paths.size(), 2u);
  EXPECT_EQ(done.report->paths[1].removed, 2u);
}

// With no grace period the job, frozen whole in its cgroup, never runs again: its paths go while
// it is looked at and killed. The report is whole all the same, and nothing is left.
TEST_F(CleanupEngine, WithoutGraceAFrozenJobsPathsGoBesideItsEndAndTheReportIsWhole) {
  auto [t, id] = job({Behaviour::sleep, Behaviour::ignore_term, Behaviour::sleep}, {.grace_s = 0});
  std::string files = dir + "/batches";
  fs::create_directory(files);
  for (int i = 0; i < 200; ++i) std::ofstream(files + "/b" + std::to_string(i)) << i;
  std::string segment = shm("warden_frozen_" + std::to_string(t.main));
  client.add_path({.job = id, .kind = PathKind::dir, .path = files});
  client.add_path({.job = id, .kind = PathKind::shm, .path = segment.substr(9)});
  ASSERT_EQ(client.status(id).at(0).tracking, "cgroup");

  ::kill(t.main, SIGKILL);
  auto done = wait_for_state(id, JobState::cleaned);
  ASSERT_TRUE(done.report.has_value());
  ASSERT_EQ(done.report->paths.size(), 2u);
  EXPECT_EQ(done.report->paths[0].outcome, Outcome::removed) << done.report->paths[0].detail;
  EXPECT_EQ(done.report->paths[0].removed, 201u);
  EXPECT_EQ(done.report->paths[1].outcome, Outcome::removed) << done.report->paths[1].detail;
  for (pid_t w : t.workers) {
    EXPECT_TRUE(testing::is_gone(w)) << w;
    auto& processes = done.report->processes;
    auto it = std::find_if(processes.begin(), processes.end(),
                           [w](const ProcessReport& p) { return p.pid == w; });
    ASSERT_NE(it, processes.end()) << w;
    EXPECT_EQ(it->outcome, Outcome::killed) << w;
  }
  EXPECT_FALSE(fs::exists(files));
  EXPECT_FALSE(fs::exists(segment));
}

// Each removal says what it freed (allocated blocks), the report adds them up by kind, and so do
// the metrics and `wardenctl status JOB`.
TEST_F(CleanupEngine, WhatRemovalsFreeIsCountedPerPathPerKindInMetricsAndStatus) {
  auto [t, id] = job();
  const std::string pid = std::to_string(t.main);
  const std::string file = dir + "/checkpoint.tmp", tree = dir + "/scratch";
  std::ofstream(file) << std::string(64 * 1024, 'x');
  fs::create_directories(tree + "/sub");
  std::ofstream(tree + "/a") << std::string(8 * 1024, 'a');
  std::ofstream(tree + "/sub/b") << std::string(8 * 1024, 'b');
  std::ofstream(shm("warden_freed_" + pid)) << std::string(1 << 20, 's');
  std::ofstream(shm("torch_" + pid + "_1")) << std::string(4096, 't');
  std::ofstream(shm("torch_" + pid + "_2")) << std::string(4096, 't');
  client.add_path({.job = id, .kind = PathKind::file, .path = file});
  client.add_path({.job = id, .kind = PathKind::dir, .path = tree});
  client.add_path({.job = id, .kind = PathKind::shm, .path = "/warden_freed_" + pid});
  client.add_path({.job = id, .kind = PathKind::shm_glob, .path = "torch_" + pid + "_*"});
  auto metric = [this](const std::string& kind) {
    std::string m = client.metrics();
    std::string line = "warden_reclaimed_bytes_total{kind=\"" + kind + "\"} ";
    auto at = m.find(line);
    return at == std::string::npos ? -1.0 : std::stod(m.substr(at + line.size()));
  };
  const double file_before = metric("file"), shm_before = metric("shm");

  ::kill(t.main, SIGKILL);
  auto done = wait_for_state(id, JobState::cleaned);
  ASSERT_TRUE(done.report);
  const auto& paths = done.report->paths;
  ASSERT_EQ(paths.size(), 4u);
  for (const auto& p : paths) {
    ASSERT_EQ(p.outcome, Outcome::removed) << p.path << ": " << p.detail;
    ASSERT_TRUE(p.bytes) << p.path;
  }
  EXPECT_GE(*paths[0].bytes, 64u * 1024);
  EXPECT_GE(*paths[1].bytes, 16u * 1024) << "the tree's files";
  EXPECT_GE(*paths[2].bytes, 1u << 20);
  EXPECT_GE(*paths[3].bytes, 8u * 1024) << "both matches";
  const Reclaimed& r = done.report->reclaimed;
  EXPECT_EQ(r.file_bytes, *paths[0].bytes + *paths[1].bytes);
  EXPECT_EQ(r.shm_bytes, *paths[2].bytes + *paths[3].bytes);
  EXPECT_EQ(metric("file") - file_before, static_cast<double>(r.file_bytes));
  EXPECT_EQ(metric("shm") - shm_before, static_cast<double>(r.shm_bytes));
  auto shown = testing::run_command({WARDENCTL_PATH, "--socket", daemon.socket(), "status",
                                     std::to_string(id)});
  EXPECT_NE(shown.out.find("freed"), std::string::npos) << shown.out;
}

// A process that made a segment before it was registered (or whose parent, the main, died before
// wardend read the event): no job could be named for it then; the cleanup that ends that very
// process takes the segment as the job's.
TEST_F(CleanupEngine, WhatAWorkerMadeBeforeItWasRegisteredGoesWithTheJob) {
  if (client.server().discover_note.find("fanotify") == std::string::npos) {
    GTEST_SKIP() << "this wardend does not watch the roots: " << client.server().discover_note;
  }
  auto [t, id] = job();
  pid_t worker = track(testing::spawn_exec(
      {"/bin/sh", "-c", "head -c 8192 /dev/zero > /dev/shm/warden-made-$$ && exec sleep 600"}));
  const std::string made = "/dev/shm/warden-made-" + std::to_string(worker);
  shm_names.push_back(made.substr(8));
  ASSERT_TRUE(eventually([&] { return fs::exists(made) && fs::file_size(made) == 8192; }));
  std::this_thread::sleep_for(100ms);  // wardend reads the event while the maker is nobody's
  client.add_process(id, worker);

  ::kill(t.main, SIGKILL);
  auto done = wait_for_state(id, JobState::cleaned);
  ASSERT_TRUE(done.report);
  EXPECT_FALSE(fs::exists(made));
  auto found = std::find_if(done.report->discovered.begin(), done.report->discovered.end(),
                            [&](const PathReport& p) { return p.path == made; });
  ASSERT_NE(found, done.report->discovered.end());
  EXPECT_EQ(found->outcome, Outcome::removed);
  EXPECT_GE(found->bytes.value_or(0), 8192u);
}

using testing::rss_kib;

// Two jobs of 2,000 registered files with 2.8 KB paths each: their reports, events and status
// replies stay bounded (what does not fit is counted), and wardend's memory with them.
TEST_F(CleanupEngine, JobsOfThousandsOfLongPathsMakeBoundedReportsEventsAndMemory) {
  std::string deep = dir;
  for (char c = 'a'; c < 'a' + 11; ++c) deep += "/" + std::string(250, c);
  fs::create_directories(deep);
  [[maybe_unused]] const std::size_t rss_before = rss_kib(daemon.pid());
  std::vector<JobId> ids;
  for (int j = 0; j < 2; ++j) {
    auto [t, id] = job();
    for (int i = 0; i < 2000; ++i) {
      std::string file = fmt::format("{}/job{}-file{:04}", deep, j, i);
      std::ofstream(file) << 'x';
      client.add_path({.job = id, .kind = PathKind::file, .path = file});
    }
    ASSERT_GT(deep.size() + 15, 2800u);
    ::kill(t.main, SIGKILL);
    ASSERT_EQ(wait_for_state(id, JobState::cleaned).state, JobState::cleaned);
    ids.push_back(id);
  }
  [[maybe_unused]] const std::size_t rss_after = rss_kib(daemon.pid());

  for (JobId id : ids) {
    JobStatus s = client.status(id).at(0);
    ASSERT_TRUE(s.report);
    EXPECT_LE(to_json(*s.report).dump().size(), 256u * 1024);
    ASSERT_TRUE(s.report->omitted.contains("paths"));
    EXPECT_EQ(s.report->paths.size() + s.report->omitted.at("paths").count, 2000u);
    EXPECT_EQ(s.report->omitted.at("paths").outcomes.at(Outcome::removed),
              s.report->omitted.at("paths").count);
    for (const auto& e : client.events({.job = id, .limit = kMaxEventsPerReply})) {
      EXPECT_LT(to_json(e).dump().size(), 1u << 20) << "event " << e.seq;
    }
  }
  EXPECT_FALSE(fs::exists(deep + "/job1-file1999"));
#ifndef __SANITIZE_ADDRESS__  // AddressSanitizer's quarantine and shadow memory are not wardend's
  EXPECT_LE(rss_after - std::min(rss_before, rss_after), 20u * 1024)
      << "wardend grew from " << rss_before << " to " << rss_after << " KiB";
#endif
}

TEST_F(CleanupEngine, KeepOnSuccessResourcesSurviveACleanEndAndLeftoversAreReported) {
  auto [t, id] = job();
  std::string output = dir + "/model.pt", scratch = dir + "/scratch";
  std::ofstream(output) << "weights";
  std::ofstream(scratch) << "tmp";
  client.add_path({.job = id, .kind = PathKind::file, .path = output, .policy = Policy::failure});
  client.add_path({.job = id, .kind = PathKind::file, .path = scratch});
  client.end_job(id, true);
  auto done = wait_for_state(id, JobState::cleaned);
  EXPECT_TRUE(fs::exists(output));
  EXPECT_FALSE(fs::exists(scratch));
  EXPECT_EQ(done.report->paths[0].outcome, Outcome::kept);
  EXPECT_EQ(done.report->paths[1].outcome, Outcome::removed);
  EXPECT_TRUE(done.report->paths[1].leftover);
}

TEST_F(CleanupEngine, HookRunsAsTheJobsUserAndAHangingOneIsKilledAtItsTimeout) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to act as an unprivileged user";
  ASSERT_EQ(::chmod(daemon.dir().c_str(), 0755), 0);
  constexpr uid_t kNobody = 65534;
  pid_t main = track(testing::spawn(Behaviour::sleep, kNobody));
  auto reg = testing::run_command_as(
      kNobody, {WARDENCTL_PATH, "--socket", daemon.socket(), "register", "--pid",
                std::to_string(main), "--name", "nobody's", "--grace", "0"});
  ASSERT_EQ(reg.status, 0) << reg.err;
  std::string id = reg.out.substr(0, reg.out.find('\n'));
  auto add = testing::run_command_as(
      kNobody, {WARDENCTL_PATH, "--socket", daemon.socket(), "add", "--job", id, "--hook",
                "echo uid=$(id -u) job=$WARDEN_JOB reason=$WARDEN_REASON", "--hook",
                "sleep 300 & echo $!; sleep 300", "--hook-timeout", "1"});
  ASSERT_EQ(add.status, 0) << add.err;

  ::kill(main, SIGKILL);
  auto done = wait_for_state(std::stoull(id), JobState::cleaned);
  ASSERT_TRUE(done.report);
  ASSERT_EQ(done.report->hooks.size(), 2u);
  const auto& who = done.report->hooks[0];
  EXPECT_EQ(who.outcome, Outcome::succeeded) << who.detail;
  EXPECT_EQ(who.output, "uid=65534 job=" + id + " reason=failed\n");
  const auto& hang = done.report->hooks[1];
  EXPECT_EQ(hang.outcome, Outcome::timed_out);
  EXPECT_LT(hang.elapsed_ms, 10000);
  EXPECT_TRUE(testing::wait_exited(std::stoi(hang.output), 5s)) << "the hook's child died too";
}

// A hook holds none of wardend's descriptors (its socket, clients, pidfds, the store): one that
// outlives a crashed wardend would keep its socket from the next.
TEST_F(CleanupEngine, AHookInheritsNoneOfWardendsDescriptors) {
  auto [t, id] = job({}, {.grace_s = 0});
  client.add_hook({.job = id, .hook = {.argv = {"/bin/sh", "-c", "ls /proc/$$/fd"}}});
  ::kill(t.main, SIGKILL);
  auto done = wait_for_state(id, JobState::cleaned);
  ASSERT_TRUE(done.report);
  ASSERT_EQ(done.report->hooks.size(), 1u);
  EXPECT_EQ(done.report->hooks[0].output, "0\n1\n2\n");
}

// A restart in the middle of a cleanup runs no hook twice: one that ended before keeps its report,
// one that was running then is reported interrupted and not run again, one not yet started runs.
TEST_F(CleanupEngine, HooksRunAtMostOnceAcrossACrashInTheMiddleOfThem) {
  const std::string ran = dir + "/ran";
  auto [t, id] = job({}, {.grace_s = 0});
  auto hook = [&](const std::string& script) {
    client.add_hook({.job = id, .hook = {.argv = {"/bin/sh", "-c", script}, .timeout_s = 60}});
  };
  hook("echo first >> " + ran + "; echo done");
  hook("echo second >> " + ran + "; exec sleep 30");
  hook("echo third >> " + ran);
  auto lines = [&] {
    std::ifstream in(ran);
    std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    return all;
  };
  ::kill(t.main, SIGKILL);
  ASSERT_TRUE(eventually([&] { return lines() == "first\nsecond\n"; })) << lines();
  daemon.crash();  // while the second hook runs
  daemon.restart();
  auto done = wait_for_state(id, JobState::cleaned);
  ASSERT_TRUE(done.report);
  EXPECT_EQ(lines(), "first\nsecond\nthird\n") << "each hook started once";
  ASSERT_EQ(done.report->hooks.size(), 3u);
  EXPECT_EQ(done.report->hooks[0].outcome, Outcome::succeeded);
  EXPECT_EQ(done.report->hooks[0].output, "done\n") << "its report from before the crash";
  EXPECT_EQ(done.report->hooks[1].outcome, Outcome::failed);
  EXPECT_NE(done.report->hooks[1].detail.find("interrupted"), std::string::npos)
      << done.report->hooks[1].detail;
  EXPECT_EQ(done.report->hooks[2].outcome, Outcome::succeeded);
  // The second hook's sleep outlived the wardend that started it.
  // pkill -f also matches the shell that runs it, which it may end first: no status to check.
  [[maybe_unused]] int ended = ::system("pkill -f 'exec sleep 30' 2>/dev/null; true");
}

// As its unit runs it (Nice=-10), ahead of the jobs; a job's hooks run at the default priority.
class NicedCleanupEngine : public CleanupEngine {
 protected:
  NicedCleanupEngine() : CleanupEngine({}, {"/usr/bin/nice", "-n", "-10"}) {}
};

// The nice value of one thread of a process (field 19 of /proc/PID/task/TID/stat).
int nice_of(pid_t pid, pid_t tid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/task/" + std::to_string(tid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::istringstream fields(stat.substr(stat.rfind(')') + 2));
  std::string field;
  for (int i = 3; i <= 19; ++i) fields >> field;
  return std::stoi(field);
}

std::vector<pid_t> threads_of(pid_t pid) {
  std::vector<pid_t> tids;
  for (const auto& task : fs::directory_iterator("/proc/" + std::to_string(pid) + "/task")) {
    tids.push_back(std::stoi(task.path().filename()));
  }
  return tids;
}

// The event loop's thread (wardend's main thread) runs ten levels ahead of the others, which keep
// the priority wardend was started at (main.cc, run_loop_ahead).
TEST_F(NicedCleanupEngine, TheLoopRunsTenNiceLevelsAheadOfWardendsOtherThreads) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to raise wardend's priority";
  std::vector<pid_t> tids = threads_of(daemon.pid());
  ASSERT_GT(tids.size(), 1u);
  for (pid_t tid : tids) {
    EXPECT_EQ(nice_of(daemon.pid(), tid), tid == daemon.pid() ? -20 : -10) << "thread " << tid;
  }
}

TEST_F(NicedCleanupEngine, HooksRunAtTheDefaultPriorityNotWardends) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to raise wardend's priority";
  ASSERT_EQ(nice_of(daemon.pid(), daemon.pid()), -20) << "the loop was not raised";
  auto [t, id] = job({}, {.grace_s = 0});
  client.add_hook({.job = id,
                   .hook = {.argv = {"/bin/sh", "-c", "cut -d' ' -f19 /proc/self/stat"}}});
  ::kill(t.main, SIGKILL);
  auto done = wait_for_state(id, JobState::cleaned);
  ASSERT_TRUE(done.report);
  ASSERT_EQ(done.report->hooks.size(), 1u);
  EXPECT_EQ(done.report->hooks[0].output, "0\n") << done.report->hooks[0].detail;
}

TEST_F(CleanupEngine, StalledJobsReportHoldsDiagnosticsForEachProcess) {
  auto [t, id] = job({Behaviour::sleep, Behaviour::sleep},
                     {.heartbeat_s = 0.3,
                      .grace_s = 0.2,
                      .diagnose = CommandSpec{.argv = {"/bin/sh", "-c", "echo diagnosing {pid}"}}});
  auto done = wait_for_state(id, JobState::cleaned);
  ASSERT_TRUE(done.report);
  ASSERT_TRUE(done.report->diagnostics);
  const auto& d = *done.report->diagnostics;
  ASSERT_EQ(d.processes.size(), 3u);
  EXPECT_EQ(d.processes[0].pid, t.main);
  EXPECT_EQ(d.processes[0].role, "main");
  for (const auto& p : d.processes) {
    EXPECT_EQ(p.state, 'S') << p.pid;
    EXPECT_FALSE(p.wchan.empty()) << p.pid;
    if (::geteuid() == 0) {
      EXPECT_FALSE(p.stack.empty()) << p.pid << " " << p.detail;
    }
  }
  ASSERT_TRUE(d.command);
  EXPECT_EQ(d.command->output, "diagnosing " + std::to_string(t.main) + "\n");
}

}  // namespace
}  // namespace warden
