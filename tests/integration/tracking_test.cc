// Tracking cgroups against a real wardend: every process a job forks is the job's, whatever it
// does to hide (setsid, double fork, a scrubbed environment, forking all the time); the cgroup sits
// beneath the job's own; a restart in the middle of the job or of its cleanup loses nothing; and
// where tracking cgroups are off, the scan still cleans and status says which a job has.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include <boost/asio/io_context.hpp>
#include <gtest/gtest.h>

#include "world/cgroup.h"
#include "tests/support/daemon_test.h"

namespace warden {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using testing::Behaviour;

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::optional<std::string> mount() { return find_cgroup2_mount(slurp("/proc/self/mountinfo")); }

// A job's main process that, once told (a byte on `go`), starts what a /proc scan cannot find:
// an escapee that drops its whole environment (as `env -i` does), calls setsid() and
// double-forks into `sleep`, and a process that forks a child every 10 ms.
struct Hider {
  pid_t main = 0;
  UniqueFd go;
  UniqueFd escapee_pid;  // written by the escapee itself
  UniqueFd forker_pid;   // written by the main

  void start() {
    char byte = 1;
    ASSERT_EQ(::write(go.get(), &byte, 1), 1);
  }
  static pid_t read_pid(const UniqueFd& fd) {
    pid_t pid = 0;
    EXPECT_EQ(::read(fd.get(), &pid, sizeof(pid)), static_cast<ssize_t>(sizeof(pid)));
    return pid;
  }
  pid_t escapee() { return read_pid(escapee_pid); }
  pid_t forker() { return read_pid(forker_pid); }
};

Hider spawn_hider() {
  int go[2], out[2], forker_out[2];
  if (::pipe2(go, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0 ||
      ::pipe2(forker_out, O_CLOEXEC) != 0) {
    std::abort();
  }
  pid_t main = ::fork();
  if (main == 0) {
    char byte;
    if (::read(go[0], &byte, 1) != 1) ::_exit(1);
    pid_t middle = ::fork();
    if (middle == 0) {
      ::setsid();
      if (::fork() == 0) {
        pid_t self = ::getpid();
        if (::write(out[1], &self, sizeof(self)) < 0) ::_exit(1);
        const char* argv[] = {"sleep", "1000", nullptr};
        const char* envp[] = {nullptr};
        ::execve("/bin/sleep", const_cast<char**>(argv), const_cast<char**>(envp));
        ::_exit(127);
      }
      ::_exit(0);
    }
    ::waitpid(middle, nullptr, 0);
    pid_t forker = ::fork();
    if (forker == 0) {
      for (;;) {
        if (::fork() == 0) {
          ::pause();
          ::_exit(0);
        }
        ::usleep(10'000);
      }
    }
    if (::write(forker_out[1], &forker, sizeof(forker)) < 0) ::_exit(1);
    for (;;) ::pause();
  }
  ::close(go[0]);
  ::close(out[1]);
  ::close(forker_out[1]);
  return {.main = main,
          .go = UniqueFd(go[1]),
          .escapee_pid = UniqueFd(out[0]),
          .forker_pid = UniqueFd(forker_out[0])};
}

class TrackedJob : public testing::DaemonTest {
 protected:
  void SetUp() override {
    if (client.server().tracking != "cgroup") {
      GTEST_SKIP() << "this machine gives wardend no writable cgroup v2";
    }
  }
  void TearDown() override {
    DaemonTest::TearDown();
    if (!parent.empty()) {
      testing::release_cgroups(daemon.dir() + "/state");
      fs::remove(*mount() + parent);
    }
  }

  std::vector<pid_t> members(const std::string& cgroup) {
    std::vector<pid_t> out;
    std::istringstream in(slurp(*mount() + cgroup + "/cgroup.procs"));
    for (pid_t pid = 0; in >> pid;) out.push_back(pid);
    return out;
  }

  static const ProcessReport* report_of(const JobStatus& s, pid_t pid) {
    for (const auto& p : s.report->processes) {
      if (p.pid == pid) return &p;
    }
    return nullptr;
  }

  // A job whose worker a launcher started beside the main, in a cgroup of its own (`parent`,
  // standing for another Slurm step's or a sidecar's), registered by pid with no cookie.
  struct Launched {
    pid_t main = 0;
    Hider worker;
    JobId id = 0;
  };
  Launched launched() {
    parent = "/warden-test-launcher-" + std::to_string(::getpid());
    EXPECT_TRUE(fs::create_directory(*mount() + parent));
    Launched l{.main = track(testing::spawn(Behaviour::sleep)), .worker = spawn_hider()};
    track(l.worker.main);
    std::ofstream(*mount() + parent + "/cgroup.procs") << l.worker.main;
    l.id = client.register_job({.name = "launched", .pid = l.main, .grace_s = 0.5});
    client.add_process(l.id, l.worker.main);
    return l;
  }

  std::string parent;  // a cgroup the test made, standing for a Slurm step or a pod
};

TEST_F(TrackedJob, EscapeeWithoutEnvironmentAndAProcessForkingEvery10msAreBothGone) {
  Hider hider = spawn_hider();
  track(hider.main);
  JobId id = client.register_job({.name = "hiders", .pid = hider.main, .grace_s = 0.5});
  JobStatus running = client.status(id).at(0);
  ASSERT_EQ(running.tracking, "cgroup");
  hider.start();
  pid_t escapee = track(hider.escapee());
  pid_t forker = track(hider.forker());
  std::this_thread::sleep_for(200ms);  // let the forker fork a few times
  std::vector<pid_t> before = members(running.cgroup);
  EXPECT_GT(before.size(), 5u) << "main, escapee, forker and the forker's children";
  EXPECT_NE(std::find(before.begin(), before.end(), escapee), before.end());

  auto killed = std::chrono::steady_clock::now();
  ::kill(hider.main, SIGKILL);
  std::vector<UniqueFd> fds;
  for (pid_t p : before) {
    if (p != hider.main && !testing::is_gone(p)) fds.push_back(testing::open_pidfd(p));
  }
  EXPECT_TRUE(testing::wait_exited(raw(fds), 1500ms)) << "all gone within grace + 1 s";
  auto took = std::chrono::steady_clock::now() - killed;
  EXPECT_LT(took, 1500ms);

  JobStatus s = wait_for_state(id, JobState::cleaned);
  ASSERT_EQ(s.state, JobState::cleaned);
  ASSERT_NE(report_of(s, escapee), nullptr) << "the report names the escapee";
  EXPECT_EQ(report_of(s, escapee)->command, "sleep 1000");
  EXPECT_EQ(report_of(s, escapee)->outcome, Outcome::terminated);
  ASSERT_NE(report_of(s, forker), nullptr);
  EXPECT_FALSE(fs::exists(*mount() + running.cgroup)) << "the cgroup is removed once empty";
}

TEST_F(TrackedJob, CgroupSitsBeneathTheMainsOwnCgroupWhichStillCoversIt) {
  parent = "/warden-test-step-" + std::to_string(::getpid());
  ASSERT_TRUE(fs::create_directory(*mount() + parent));
  auto t = tree({Behaviour::sleep});
  for (pid_t p : {t.main, t.workers[0]}) {
    std::ofstream(*mount() + parent + "/cgroup.procs") << p;
  }
  JobId id = client.register_job({.name = "in-a-step", .pid = t.main, .grace_s = 0.5});
  JobStatus s = client.status(id).at(0);
  EXPECT_EQ(parent_cgroup(s.cgroup), parent);
  EXPECT_EQ(slurp("/proc/" + std::to_string(t.main) + "/cgroup").find("0::" + s.cgroup + "\n") !=
                std::string::npos,
            true);
  // The worker forked before the registration shares the main's cgroup, so it moved in too.
  EXPECT_EQ(members(s.cgroup).size(), 2u);
  // The step still holds both: its cgroup.events counts what is beneath it.
  EXPECT_NE(slurp(*mount() + parent + "/cgroup.events").find("populated 1"), std::string::npos);
  EXPECT_NE(slurp(*mount() + parent + "/cgroup.stat").find("nr_descendants 1"), std::string::npos);

  ::kill(t.main, SIGKILL);
  EXPECT_TRUE(testing::wait_exited(t.workers[0], 1500ms)) << "the unregistered worker too";
  ASSERT_EQ(wait_for_state(id, JobState::cleaned).state, JobState::cleaned);
  EXPECT_FALSE(fs::exists(*mount() + s.cgroup));
  EXPECT_TRUE(fs::exists(*mount() + parent)) << "the step's own cgroup is not wardend's";
}

// A worker a launcher started beside the main (registered by pid, no cookie, in a cgroup of its
// own, standing for another Slurm step's or a sidecar's): it moves into a second leaf of the job
// beneath its own cgroup, so that what it forks after registration (a setsid escapee that drops its
// whole environment) is the kernel's to keep, and the cleanup ends both without a /proc scan.
TEST_F(TrackedJob, AWorkerBesideTheMainGetsALeafOfTheJobAndItsEscapeeDiesWithoutAScan) {
  auto [main, worker, id] = launched();
  JobStatus s = client.status(id).at(0);
  ASSERT_EQ(s.workers.size(), 1u);
  EXPECT_EQ(s.workers[0].tracking, "cgroup") << "status says the kernel keeps it";
  const std::string leaf = parent + "/" + fs::path(s.cgroup).filename().string();
  EXPECT_EQ(members(leaf), std::vector<pid_t>{worker.main}) << "its own leaf, beneath its cgroup";
  worker.start();
  pid_t escapee = track(worker.escapee());
  pid_t forker = track(worker.forker());
  auto scans_before = [this] {
    std::string m = client.metrics();
    auto at = m.find("warden_proc_scans_total ");
    return m.substr(at, m.find('\n', at) - at);
  };
  const std::string before = scans_before();

  ::kill(main, SIGKILL);
  EXPECT_TRUE(testing::wait_exited(escapee, 1500ms)) << "within grace + 1 s";
  EXPECT_TRUE(testing::wait_exited(forker, 1500ms));
  EXPECT_TRUE(testing::wait_exited(worker.main, 1500ms));
  JobStatus done = wait_for_state(id, JobState::cleaned);
  ASSERT_EQ(done.state, JobState::cleaned);
  ASSERT_NE(report_of(done, escapee), nullptr) << "the report names the escapee";
  EXPECT_NE(report_of(done, escapee)->detail.find(leaf), std::string::npos);
  EXPECT_EQ(scans_before(), before) << "no /proc scan for a job its cgroups keep";
  EXPECT_FALSE(fs::exists(*mount() + leaf)) << "the second leaf is removed once empty";
}

TEST_F(TrackedJob, AWorkersLeafBesideTheMainOutlivesARestartOfWardend) {
  auto [main, worker, id] = launched();
  daemon.crash();
  daemon.restart();
  Client again(daemon.socket());
  EXPECT_EQ(again.status(id).at(0).workers.at(0).tracking, "cgroup") << "its leaf, recorded";
  worker.start();  // forks only now, while the restarted wardend watches
  pid_t escapee = track(worker.escapee());
  ::kill(main, SIGKILL);
  EXPECT_TRUE(testing::wait_exited(escapee, 1500ms));
  EXPECT_EQ(wait_for_state(id, JobState::cleaned).state, JobState::cleaned);
}

// A worker beside the main in the same parent cgroup joins the main's own leaf.
TEST_F(TrackedJob, AWorkerBesideTheMainInTheSameCgroupJoinsTheMainsLeaf) {
  pid_t main = track(testing::spawn(Behaviour::sleep));
  pid_t worker = track(testing::spawn(Behaviour::sleep));
  JobId id = client.register_job({.name = "siblings", .pid = main, .grace_s = 0.5});
  client.add_process(id, worker);
  JobStatus s = client.status(id).at(0);
  EXPECT_EQ(s.workers.at(0).tracking, "cgroup");
  auto in_leaf = members(s.cgroup);
  EXPECT_NE(std::find(in_leaf.begin(), in_leaf.end(), worker), in_leaf.end());
  ::kill(main, SIGKILL);
  EXPECT_TRUE(testing::wait_exited(worker, 1500ms));
}

TEST_F(TrackedJob, CleanEndSparesTheMainAndSweepsTheRestAsLeftovers) {
  auto t = tree({Behaviour::sleep});
  JobId id = client.register_job({.name = "clean", .pid = t.main, .grace_s = 0.5});
  std::string cgroup = client.status(id).at(0).cgroup;
  client.end_job(id, true);
  JobStatus s = wait_for_state(id, JobState::cleaned);
  ASSERT_EQ(s.state, JobState::cleaned);
  EXPECT_FALSE(testing::is_gone(t.main)) << "a clean end never touches the main process";
  EXPECT_TRUE(testing::is_gone(t.workers[0]));
  ASSERT_NE(report_of(s, t.workers[0]), nullptr);
  EXPECT_TRUE(report_of(s, t.workers[0])->leftover);
  EXPECT_FALSE(fs::exists(*mount() + cgroup));
  EXPECT_EQ(slurp("/proc/" + std::to_string(t.main) + "/cgroup").find(cgroup), std::string::npos)
      << "the main process went back to the cgroup above";
}

TEST_F(TrackedJob, RestartInTheMiddleOfTheJobKeepsItsCgroupAndWhatItForksLater) {
  Hider hider = spawn_hider();
  track(hider.main);
  JobId id = client.register_job({.name = "restarted", .pid = hider.main, .grace_s = 0.5});
  std::string cgroup = client.status(id).at(0).cgroup;
  daemon.crash();
  daemon.restart();
  Client again(daemon.socket());
  EXPECT_EQ(again.status(id).at(0).cgroup, cgroup) << "kept with the job";
  hider.start();  // forks only now, while the restarted wardend watches
  pid_t escapee = track(hider.escapee());
  pid_t forker = track(hider.forker());
  ::kill(hider.main, SIGKILL);
  EXPECT_TRUE(testing::wait_exited(escapee, 1500ms));
  EXPECT_TRUE(testing::wait_exited(forker, 1500ms));
  EXPECT_EQ(wait_for_state(id, JobState::cleaned).state, JobState::cleaned);
}

TEST_F(TrackedJob, RestartInTheMiddleOfTheCleanupFinishesItThroughTheCgroup) {
  // The worker ignores SIGTERM and was never registered: only the cgroup knows it.
  auto t = tree({Behaviour::ignore_term});
  JobId id = client.register_job({.name = "interrupted", .pid = t.main, .grace_s = 2});
  std::string cgroup = client.status(id).at(0).cgroup;
  ::kill(t.main, SIGKILL);
  ASSERT_EQ(wait_for_state(id, JobState::cleaning).state, JobState::cleaning);
  daemon.crash();  // inside the grace period: the worker is alive, SIGTERM ignored
  ASSERT_FALSE(testing::is_gone(t.workers[0]));
  daemon.restart();
  EXPECT_TRUE(testing::wait_exited(t.workers[0], 10s)) << "the resumed cleanup killed it";
  JobStatus s = wait_for_state(id, JobState::cleaned);
  ASSERT_EQ(s.state, JobState::cleaned);
  ASSERT_NE(report_of(s, t.workers[0]), nullptr);
  EXPECT_EQ(report_of(s, t.workers[0])->outcome, Outcome::killed);
  EXPECT_FALSE(fs::exists(*mount() + cgroup));
}

TEST_F(TrackedJob, AMainRegisteredAgainGetsNoNestedCgroupButAJobInsideAJobDoes) {
  auto t = tree({Behaviour::sleep});
  JobId first = client.register_job({.name = "first", .pid = t.main});
  JobId again = client.register_job({.name = "again", .pid = t.main});
  std::string outer = client.status(first).at(0).cgroup;
  EXPECT_EQ(client.status(first).at(0).tracking, "cgroup");
  EXPECT_EQ(client.status(again).at(0).tracking, "scan") << "no cgroup nested per registration";
  // The worker, a process of the first job, starts a job of its own: that one nests.
  JobId inner = client.register_job({.name = "inner", .pid = t.workers[0]});
  JobStatus s = client.status(inner).at(0);
  EXPECT_EQ(s.tracking, "cgroup");
  EXPECT_EQ(parent_cgroup(s.cgroup), outer);
}

TEST_F(TrackedJob, RestartSweepsItsCgroupsThatNoRecordedJobOwnsAndSparesTheirProcesses) {
  // As a crash between making a job's cgroup and recording the job would leave it: a cgroup with
  // this wardend's name for a job it never acknowledged, holding a process.
  std::ifstream instance(daemon.dir() + "/state/instance");
  std::string id;
  instance >> id;
  std::string orphan = "/warden-" + id + "-999";
  ASSERT_TRUE(fs::create_directory(*mount() + orphan));
  pid_t p = track(testing::spawn(Behaviour::sleep));
  std::ofstream(*mount() + orphan + "/cgroup.procs") << p;
  ASSERT_EQ(members(orphan), std::vector<pid_t>{p});

  daemon.crash();
  daemon.restart();
  EXPECT_FALSE(fs::exists(*mount() + orphan)) << "removed at start";
  EXPECT_FALSE(testing::is_gone(p)) << "never acknowledged, so never killed: it went back up";
  EXPECT_EQ(slurp("/proc/" + std::to_string(p) + "/cgroup").find(orphan), std::string::npos);
}

class ScanTracking : public testing::DaemonTest {
 protected:
  ScanTracking() : DaemonTest({"--tracking", "scan"}) {}
};

TEST_F(ScanTracking, HelloAndStatusSayScanAndTheTreeIsStillCleaned) {
  EXPECT_EQ(client.server().tracking, "scan");
  auto t = tree({Behaviour::sleep, Behaviour::ignore_term});
  JobId id = client.register_job({.name = "scanned", .pid = t.main, .grace_s = 0.5});
  // Without a cgroup, workers orphaned by their main's death are known only if registered (the
  // Python client's fork hook does it); what they fork is found by the scan.
  for (pid_t w : t.workers) client.add_process(id, w);
  JobStatus running = client.status(id).at(0);
  EXPECT_EQ(running.tracking, "scan");
  EXPECT_TRUE(running.cgroup.empty());
  ::kill(t.main, SIGKILL);
  EXPECT_TRUE(testing::wait_exited(raw(pidfds(t.workers)), 1500ms));
  EXPECT_EQ(wait_for_state(id, JobState::cleaned).state, JobState::cleaned);
}

}  // namespace
}  // namespace warden
