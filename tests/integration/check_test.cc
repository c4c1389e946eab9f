// The node check against a real wardend: a stand-in GPU node (tests/support/gpu_node.h), real
// processes holding it, real segments in /dev/shm, and `wardenctl check` as an operator and Slurm
// run it. Its exit status is the contract (0 clean, 1 not, 2 cannot tell).
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <future>

#include <gtest/gtest.h>

#include "tests/support/daemon_test.h"
#include "tests/support/gpu_node.h"
#include "tests/support/temp_dir.h"

namespace warden {
namespace {

using namespace std::chrono_literals;

// The device number of /dev/random: apart from the GPU tests' (/dev/full), so that their holders,
// running at once, are not this test's strays.
const testing::GpuNode& gpu() {
  static const testing::GpuNode node(::makedev(1, 8));
  return node;
}

std::vector<std::string> check_flags() {
  auto flags = gpu().flags("/nonexistent/libnvidia-ml.so.1");
  // What the machine's own /dev/shm holds is not this test's to judge.
  flags.insert(flags.end(), {"--check-shm-share", "1"});
  return flags;
}

const Finding* find_kind(const CheckReply& r, FindingKind kind) {
  auto it = std::find_if(r.findings.begin(), r.findings.end(),
                         [kind](const Finding& f) { return f.kind == kind; });
  return it == r.findings.end() ? nullptr : &*it;
}

class CheckTest : public testing::DaemonTest {
 protected:
  explicit CheckTest(std::vector<std::string> flags = check_flags())
      : DaemonTest(std::move(flags)) {}

  void SetUp() override {
    if (!gpu().usable()) GTEST_SKIP() << "cannot make a device node under /tmp (root, no nodev)";
  }

  testing::CommandResult wardenctl(std::vector<std::string> args) {
    args.insert(args.begin(), {WARDENCTL_PATH, "--socket", daemon.socket()});
    return testing::run_command(args);
  }
};

TEST_F(CheckTest, ANodeWhoseGpuHolderIsARunningJobsWorkerIsClean) {
  pid_t main = track(testing::spawn(testing::Behaviour::sleep));
  pid_t worker = track(gpu().spawn_holder());
  JobId job = client.register_job({.name = "train", .pid = main});
  client.add_process(job, worker);

  CheckReply reply = client.check();
  EXPECT_TRUE(reply.clean);
  EXPECT_TRUE(reply.findings.empty()) << to_json(reply).dump();
  auto run = wardenctl({"check"});
  EXPECT_EQ(run.status, 0) << run.out << run.err;
  EXPECT_NE(run.out.find("clean"), std::string::npos) << run.out;
}

TEST_F(CheckTest, AGpuHolderOfNoJobMakesTheNodeUncleanUntilReclaimed) {
  pid_t stray = track(gpu().spawn_holder());
  pid_t stubborn = track(gpu().spawn_holder(/*ignore_term=*/true));

  auto run = wardenctl({"check"});
  EXPECT_EQ(run.status, 1) << run.out << run.err;
  for (pid_t pid : {stray, stubborn}) {
    EXPECT_NE(run.out.find("stray_gpu_holder: pid " + std::to_string(pid)), std::string::npos)
        << run.out;
  }
  EXPECT_NE(run.out.find("do: "), std::string::npos) << "each finding says what to do";
  CheckReply reply = client.check();
  EXPECT_FALSE(reply.clean);
  const Finding* f = find_kind(reply, FindingKind::stray_gpu_holder);
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->path, gpu().node());
  EXPECT_EQ(f->uid, ::getuid());
  EXPECT_TRUE(f->since_unix_ms);
  EXPECT_FALSE(f->job);
  EXPECT_NE(client.metrics().find("warden_node_findings{kind=\"stray_gpu_holder\"} 2"),
            std::string::npos);

  auto reclaim = wardenctl({"check", "--reclaim", "--grace", "0.5"});
  EXPECT_EQ(reclaim.status, 0) << reclaim.out << reclaim.err;
  EXPECT_NE(reclaim.out.find("pid " + std::to_string(stray)), std::string::npos) << reclaim.out;
  EXPECT_NE(reclaim.out.find(": terminated"), std::string::npos) << reclaim.out;
  EXPECT_NE(reclaim.out.find(": killed"), std::string::npos) << "the one ignoring SIGTERM";
  EXPECT_TRUE(testing::wait_exited(stray, 1s));
  EXPECT_TRUE(testing::wait_exited(stubborn, 1s));
  EXPECT_TRUE(client.check().clean);
  EXPECT_NE(client.metrics().find("warden_node_clean 1"), std::string::npos);
}

TEST_F(CheckTest, AnotherUserSeesOnlyItsOwnFindingsAndMayNotReclaim) {
  track(gpu().spawn_holder());  // root's
  ASSERT_EQ(::chmod(daemon.dir().c_str(), 0755), 0);  // the socket's folder, for another user
  auto mine = testing::run_command_as(
      65534, {WARDENCTL_PATH, "--socket", daemon.socket(), "check", "--json"});
  EXPECT_EQ(mine.status, 0) << mine.out << mine.err;
  EXPECT_EQ(mine.out.find("stray_gpu_holder"), std::string::npos) << "root's process, not theirs";
  auto reclaim = testing::run_command_as(
      65534, {WARDENCTL_PATH, "--socket", daemon.socket(), "check", "--reclaim"});
  EXPECT_EQ(reclaim.status, 2) << reclaim.out;
  EXPECT_NE(reclaim.err.find("permission_denied"), std::string::npos) << reclaim.err;
  EXPECT_FALSE(client.check().clean) << "root still sees it";
}

TEST_F(CheckTest, AStrayThatExitsByItselfLeavesTheNodeClean) {
  pid_t stray = track(gpu().spawn_holder());
  EXPECT_FALSE(client.check().clean);
  ::kill(stray, SIGKILL);
  ASSERT_TRUE(testing::wait_exited(stray, 5s));
  EXPECT_TRUE(client.check().clean);
}

// A segment the job registered that someone replaced before cleanup: the cleanup refuses it (it is
// no longer what was registered), and the check reports it as long as it is there.
TEST_F(CheckTest, ASegmentTheCleanupRefusedIsALeftoverInTheJson) {
  const std::string name = "warden-check-" + std::to_string(::getpid());
  const std::string path = "/dev/shm/" + name;
  std::ofstream(path) << "registered";
  pid_t main = track(testing::spawn(testing::Behaviour::sleep));
  JobId job = client.register_job({.name = "refused", .pid = main, .grace_s = 0});
  client.add_path({.job = job, .kind = PathKind::shm, .path = name});
  std::ofstream(path + ".new") << "someone else's";
  ::rename((path + ".new").c_str(), path.c_str());  // a new inode: not what was registered
  ::kill(main, SIGKILL);
  JobStatus status = wait_for_state(job, JobState::cleaned);
  ASSERT_EQ(status.report->paths.at(0).outcome, Outcome::refused);

  auto run = wardenctl({"check", "--json"});
  EXPECT_EQ(run.status, 1) << run.out << run.err;
  CheckReply reply = from_json<CheckReply>(json::parse(run.out));
  const Finding* f = find_kind(reply, FindingKind::leftover_path);
  ASSERT_NE(f, nullptr) << run.out;
  EXPECT_EQ(f->path, path);
  EXPECT_EQ(f->job, job);
  EXPECT_EQ(f->job_name, "refused");
  EXPECT_NE(f->detail.find("refused"), std::string::npos) << f->detail;

  // --reclaim removes only what is safe: this one is not the job's any more.
  auto reclaim = wardenctl({"check", "--reclaim"});
  EXPECT_EQ(reclaim.status, 1) << reclaim.out;
  struct stat st{};
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << "a refused path is never reclaimed";
  ::unlink(path.c_str());
  EXPECT_TRUE(client.check().clean);
}

// The look and the reclaim run off the event loop: a reclaim waiting out its grace on a process
// that ignores SIGTERM does not keep another job's heartbeat waiting.
TEST_F(CheckTest, AReclaimInItsGraceDoesNotDelayHeartbeats) {
  track(gpu().spawn_holder(/*ignore_term=*/true));
  pid_t main = track(testing::spawn(testing::Behaviour::sleep));
  JobId job = client.register_job({.name = "beating", .pid = main, .heartbeat_s = 60});
  auto reclaim = std::async(std::launch::async,
                            [this] { return wardenctl({"check", "--reclaim", "--grace", "2"}); });
  std::this_thread::sleep_for(300ms);  // the reclaim has sent SIGTERM and is in its grace
  auto before = std::chrono::steady_clock::now();
  client.heartbeat(job);
  auto took = std::chrono::steady_clock::now() - before;
  EXPECT_LT(took, 500ms) << "a heartbeat waited on the reclaim";
  EXPECT_EQ(reclaim.get().status, 0);
}

TEST_F(CheckTest, WithoutWardendTheCheckCannotTell) {
  auto run = testing::run_command({WARDENCTL_PATH, "--socket", "/nonexistent/warden.sock", "check"});
  EXPECT_EQ(run.status, 2);
  EXPECT_NE(run.err.find("cannot connect"), std::string::npos) << run.err;
}

// With NVIDIA's management library (the stand-in, support/fake_nvml.cc): GPU memory in use that
// no process holds is a finding; what a running job's process holds is not.
class CheckNvmlTest : public CheckTest {
 protected:
  CheckNvmlTest() : CheckTest(flags()) {}
  static std::string state() { return gpu().dir() + "/nvml-state"; }
  static std::vector<std::string> flags() {
    ::setenv("FAKE_NVML_STATE", state().c_str(), 1);  // wardend inherits it
    auto flags = gpu().flags(FAKE_NVML_PATH);
    flags.insert(flags.end(), {"--check-shm-share", "1", "--check-gpu-unheld-mib", "1024"});
    return flags;
  }
};

TEST_F(CheckNvmlTest, MemoryNoProcessHoldsIsAFindingAndAJobsIsNot) {
  constexpr std::uint64_t GiB = 1ULL << 30;
  pid_t main = track(testing::spawn(testing::Behaviour::sleep));
  pid_t worker = track(gpu().spawn_holder());
  JobId job = client.register_job({.name = "train", .pid = main});
  client.add_process(job, worker);
  {
    std::ofstream out(state());
    out << "0 GPU-fake-0 " << 80 * GiB << "\n0 " << worker << " " << 30 * GiB << "\n";
  }
  CheckReply held = client.check();
  EXPECT_TRUE(held.clean) << to_json(held).dump();
  EXPECT_TRUE(held.note.empty()) << held.note;
  std::ofstream(state(), std::ios::app) << "0 driver " << 12 * GiB << "\n";
  CheckReply unheld = client.check();
  const Finding* f = find_kind(unheld, FindingKind::unheld_gpu_memory);
  ASSERT_NE(f, nullptr) << to_json(unheld).dump();
  EXPECT_EQ(f->bytes, 12 * GiB);
  EXPECT_EQ(f->path, gpu().node());
  EXPECT_EQ(f->detail, "GPU-fake-0");
}

// A full shm directory is a finding naming its largest owners: a 1 MiB tmpfs of the test's own,
// filled past the share allowed.
class ShmCheckTest : public testing::DaemonTest {
 protected:
  ShmCheckTest()
      : DaemonTest({"--shm-dir", mounted(), "--check-shm-share", "0.5", "--allowed-roots",
                    "/tmp," + mounted()}) {}
  ~ShmCheckTest() override { ::umount2(mounted().c_str(), MNT_DETACH); }

  static const std::string& mounted() {
    static const testing::TempDir dir("warden-shm");
    return dir.path();
  }
  void SetUp() override {
    if (::mount("tmpfs", mounted().c_str(), "tmpfs", 0, "size=1m") != 0) {
      GTEST_SKIP() << "cannot mount a tmpfs (not root)";
    }
  }
};

TEST_F(ShmCheckTest, AFullShmDirectoryIsAFindingWithItsLargestOwners) {
  EXPECT_TRUE(client.check().clean);
  std::ofstream(mounted() + "/psm_big") << std::string(700 * 1024, 'x');
  CheckReply reply = client.check();
  const Finding* f = find_kind(reply, FindingKind::shm_full);
  ASSERT_NE(f, nullptr);
  EXPECT_NE(f->detail.find("uid " + std::to_string(::getuid())), std::string::npos) << f->detail;
  EXPECT_GE(f->bytes.value_or(0), 700u * 1024);
}

}  // namespace
}  // namespace warden
