// GPUs against a real wardend, on any machine: the GPU set is configured to a device node the test
// makes (the device number of /dev/full, which nothing holds open), and NVIDIA's management
// library is either absent or the test's stand-in (support/fake_nvml.cc). A job whose processes
// hold the "GPU" is SIGKILLed: its report names what each held, what was released and who still
// holds it; `gpus`, `wardenctl gpus` and the metrics show tracked and untracked holders.
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include <gtest/gtest.h>

#include "tests/support/daemon_test.h"
#include "tests/support/gpu_node.h"
#include "tests/support/temp_dir.h"

namespace warden {
namespace {

using namespace std::chrono_literals;
constexpr std::uint64_t GiB = 1ULL << 30;

// The test binary's stand-in GPU: the device number of /dev/full, which nothing holds open.
const testing::GpuNode& gpu() {
  static const testing::GpuNode node(::makedev(1, 7));
  return node;
}

std::string node() { return gpu().node(); }
std::string nvml_state() { return gpu().dir() + "/nvml-state"; }
std::vector<std::string> gpu_flags(const std::string& library) { return gpu().flags(library); }
pid_t spawn_holder(bool ignore_term = false) { return gpu().spawn_holder(ignore_term); }

const ProcessReport* find_process(const CleanupReport& r, pid_t pid) {
  auto it = std::find_if(r.processes.begin(), r.processes.end(),
                         [pid](const ProcessReport& p) { return p.pid == pid; });
  return it == r.processes.end() ? nullptr : &*it;
}

const GpuHolder* find_holder(const std::vector<GpuHolder>& holders, pid_t pid) {
  auto it = std::find_if(holders.begin(), holders.end(),
                         [pid](const GpuHolder& h) { return h.pid == pid; });
  return it == holders.end() ? nullptr : &*it;
}

class GpuTest : public testing::DaemonTest {
 protected:
  explicit GpuTest(std::vector<std::string> flags = gpu_flags("/nonexistent/libnvidia-ml.so.1"))
      : DaemonTest(std::move(flags)) {}

  void SetUp() override {
    if (!gpu().usable()) GTEST_SKIP() << "cannot make a device node under /tmp (root, no nodev)";
  }

  // A job whose main process holds nothing and whose two workers hold the GPU, the second ignoring
  // SIGTERM; plus a process of no job holding it too.
  struct Scene {
    JobId job = 0;
    pid_t main = 0, worker = 0, stubborn = 0, outsider = 0;
  };
  Scene scene(const std::string& group = "") {
    Scene s{.main = track(testing::spawn(testing::Behaviour::sleep)),
            .worker = track(spawn_holder()),
            .stubborn = track(spawn_holder(/*ignore_term=*/true)),
            .outsider = track(spawn_holder())};
    s.job = client.register_job({.name = "gpujob", .pid = s.main, .grace_s = 0.5, .group = group});
    client.add_process(s.job, s.worker);
    client.add_process(s.job, s.stubborn);
    return s;
  }
};

TEST_F(GpuTest, ReportOfAKilledJobNamesEachWorkersGpuAndWhoStillHoldsIt) {
  Scene s = scene();
  ASSERT_EQ(::kill(s.main, SIGKILL), 0);
  JobStatus status = wait_for_state(s.job, JobState::cleaned);
  ASSERT_EQ(status.state, JobState::cleaned);
  const CleanupReport& r = *status.report;

  for (pid_t pid : {s.worker, s.stubborn}) {
    const ProcessReport* p = find_process(r, pid);
    ASSERT_NE(p, nullptr) << pid;
    ASSERT_EQ(p->gpus.size(), 1u) << pid;
    EXPECT_EQ(p->gpus[0].device, node());
    EXPECT_FALSE(p->gpus[0].memory_bytes);  // no NVML
  }
  EXPECT_EQ(find_process(r, s.worker)->outcome, Outcome::terminated);
  EXPECT_EQ(find_process(r, s.stubborn)->outcome, Outcome::killed);
  EXPECT_TRUE(find_process(r, s.main)->gpus.empty());

  ASSERT_EQ(r.gpus.size(), 1u);
  EXPECT_EQ(r.gpus[0].device, node());
  EXPECT_FALSE(r.gpus[0].held_bytes);
  // (Other GPU tests running at once hold a node of the same device number: theirs are listed too.)
  const GpuHolder* outsider = find_holder(r.gpus[0].still_held_by, s.outsider);
  ASSERT_NE(outsider, nullptr);
  EXPECT_EQ(outsider->uid, ::getuid());
  EXPECT_NE(outsider->command, "");
  for (pid_t pid : {s.worker, s.stubborn}) {
    EXPECT_EQ(find_holder(r.gpus[0].still_held_by, pid), nullptr) << "the job's own " << pid;
  }
  EXPECT_NE(r.gpu_note.find("not installed"), std::string::npos) << r.gpu_note;

  auto detail = testing::run_command(
      {WARDENCTL_PATH, "--socket", daemon.socket(), "status", std::to_string(s.job)});
  EXPECT_NE(detail.out.find("gpu " + node()), std::string::npos) << detail.out;
  EXPECT_NE(detail.out.find("still held by pid " + std::to_string(s.outsider)), std::string::npos)
      << detail.out;
}

// wardend walks again only the descriptor tables that look different from its last look: a
// process seen holding nothing that then opens the GPU is a holder at the next look, and one that
// closes it again is not.
TEST_F(GpuTest, AProcessThatOpensTheGpuAfterALookIsAHolderAtTheNext) {
  int go[2], said[2];
  ASSERT_EQ(::pipe2(go, O_CLOEXEC), 0);
  ASSERT_EQ(::pipe2(said, O_CLOEXEC), 0);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::dup2(go[0], 0);
    ::dup2(said[1], 1);
    ::execl("/bin/sh", "sh", "-c",
            "read a; exec 7<\"$0\"; echo opened; read b; exec 7<&-; echo closed; read c",
            node().c_str(), nullptr);
    ::_exit(127);
  }
  track(pid);
  ::close(go[0]);
  ::close(said[1]);
  UniqueFd to_shell(go[1]), from_shell(said[0]);
  auto step = [&](const std::string& expected) {
    ASSERT_EQ(::write(to_shell.get(), "\n", 1), 1);
    char line[16] = {};
    ASSERT_GT(::read(from_shell.get(), line, sizeof line - 1), 0);
    ASSERT_EQ(std::string(line), expected + "\n");
  };
  auto holds = [&] { return find_holder(client.gpus().gpus.at(0).holders, pid) != nullptr; };

  EXPECT_FALSE(holds());
  EXPECT_FALSE(holds()) << "a look that changed nothing";
  step("opened");
  EXPECT_TRUE(holds());
  step("closed");
  EXPECT_FALSE(holds());
}

TEST_F(GpuTest, GpusShowsTrackedAndUntrackedHoldersEverywhere) {
  Scene s = scene();
  GpusReply reply = client.gpus();
  ASSERT_EQ(reply.gpus.size(), 1u);
  EXPECT_EQ(reply.gpus[0].device, node());
  EXPECT_NE(reply.note.find("not installed"), std::string::npos) << reply.note;
  const auto& holders = reply.gpus[0].holders;
  for (pid_t pid : {s.worker, s.stubborn}) {
    const GpuHolder* h = find_holder(holders, pid);
    ASSERT_NE(h, nullptr) << pid;
    EXPECT_EQ(h->job, s.job);
    EXPECT_EQ(h->job_name, "gpujob");
  }
  const GpuHolder* outsider = find_holder(holders, s.outsider);
  ASSERT_NE(outsider, nullptr);
  EXPECT_FALSE(outsider->job);
  EXPECT_EQ(find_holder(holders, s.main), nullptr);

  // status of the node carries the same view (the C++ client's status() returns the jobs only).
  UniqueFd raw(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{.sun_family = AF_UNIX};
  std::strncpy(addr.sun_path, daemon.socket().c_str(), sizeof(addr.sun_path) - 1);
  ASSERT_EQ(::connect(raw.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  const std::string request = R"({"id":1,"op":"status"})"
                              "\n";
  ASSERT_EQ(::write(raw.get(), request.data(), request.size()),
            static_cast<ssize_t>(request.size()));
  std::string line;
  for (char c; line.find('\n') == std::string::npos && ::read(raw.get(), &c, 1) == 1;) line += c;
  json status = json::parse(line);
  ASSERT_TRUE(status.contains("gpus")) << status.dump();
  EXPECT_EQ(status["gpus"][0]["device"], node());

  auto table = testing::run_command({WARDENCTL_PATH, "--socket", daemon.socket(), "gpus"});
  ASSERT_EQ(table.status, 0) << table.err;
  EXPECT_NE(table.out.find(std::to_string(s.job) + " gpujob"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find("untracked"), std::string::npos) << table.out;

  std::string metrics = client.metrics();
  EXPECT_NE(metrics.find("warden_gpu_holders{device=\"" + node() + "\",job=\"" +
                         std::to_string(s.job) + "\"} 2"),
            std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find("warden_gpu_holders{device=\"" + node() + "\",job=\"untracked\"}"),
            std::string::npos);
  EXPECT_EQ(metrics.find("warden_gpu_held_bytes"), std::string::npos);  // no NVML, no figures
}

TEST_F(GpuTest, CleanupWaitReturnsOnceTheGroupsProcessesAreGone) {
  Scene s = scene("slurm-4242");
  auto r = testing::run_command({WARDENCTL_PATH, "--socket", daemon.socket(), "cleanup", "--group",
                                 "slurm-4242", "--wait", "--timeout", "30"});
  EXPECT_EQ(r.status, 0) << r.out << r.err;
  // Returned only once the worker that ignores SIGTERM was killed.
  EXPECT_TRUE(testing::is_gone(s.stubborn));
  EXPECT_TRUE(testing::is_gone(s.worker));
  EXPECT_NE(r.out.find("job " + std::to_string(s.job) + " gpujob: cleaned"), std::string::npos)
      << r.out;
}

// With NVIDIA's management library (the stand-in): memory per process, per GPU, and released.
class GpuNvmlTest : public GpuTest {
 protected:
  GpuNvmlTest() : GpuTest(flags()) {}
  static std::vector<std::string> flags() {
    ::setenv("FAKE_NVML_STATE", nvml_state().c_str(), 1);  // wardend inherits it
    return gpu_flags(FAKE_NVML_PATH);
  }
  void held(const std::vector<std::pair<pid_t, std::uint64_t>>& processes) {
    std::ofstream out(nvml_state());
    out << "0 GPU-fake-0 " << 80 * GiB << "\n";
    for (auto [pid, bytes] : processes) out << "0 " << pid << " " << bytes << "\n";
  }
};

TEST_F(GpuNvmlTest, ReportSaysHowMuchMemoryEachHeldAndWhatWasReleased) {
  Scene s = scene();
  held({{s.worker, 1 * GiB}, {s.stubborn, 2 * GiB}, {s.outsider, GiB / 2}});

  GpusReply reply = client.gpus();
  EXPECT_EQ(reply.note, "");
  ASSERT_EQ(reply.gpus.size(), 1u);
  EXPECT_EQ(reply.gpus[0].uuid, "GPU-fake-0");
  EXPECT_EQ(reply.gpus[0].memory_total_bytes, 80 * GiB);
  EXPECT_EQ(reply.gpus[0].memory_used_bytes, 3 * GiB + GiB / 2);
  EXPECT_EQ(find_holder(reply.gpus[0].holders, s.stubborn)->memory_bytes, 2 * GiB);
  std::string metrics = client.metrics();
  EXPECT_NE(metrics.find("warden_gpu_held_bytes{device=\"" + node() + "\",job=\"" +
                         std::to_string(s.job) + "\"} " + std::to_string(3 * GiB)),
            std::string::npos)
      << metrics;

  ASSERT_EQ(::kill(s.main, SIGKILL), 0);
  JobStatus status = wait_for_state(s.job, JobState::cleaned);
  ASSERT_EQ(status.state, JobState::cleaned);
  const CleanupReport& r = *status.report;
  EXPECT_EQ(find_process(r, s.worker)->gpus.at(0).memory_bytes, 1 * GiB);
  EXPECT_EQ(find_process(r, s.stubborn)->gpus.at(0).memory_bytes, 2 * GiB);
  ASSERT_EQ(r.gpus.size(), 1u);
  EXPECT_EQ(r.gpus[0].uuid, "GPU-fake-0");
  EXPECT_EQ(r.gpus[0].held_bytes, 3 * GiB);
  EXPECT_EQ(r.gpus[0].released_bytes, 3 * GiB);
  const GpuHolder* outsider = find_holder(r.gpus[0].still_held_by, s.outsider);
  ASSERT_NE(outsider, nullptr);
  EXPECT_EQ(outsider->memory_bytes, GiB / 2);
  EXPECT_EQ(r.gpu_note, "");
}

}  // namespace
}  // namespace warden
