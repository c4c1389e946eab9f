// Durable state: wardend SIGKILLed and restarted forgets nothing it acknowledged, resumes living
// jobs, cleans the ones that died meanwhile and finishes interrupted cleanups.
#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <random>
#include <thread>

#include "tests/support/daemon_test.h"
#include "tests/support/expect_error.h"
#include "tests/support/temp_dir.h"

namespace warden::testing {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

// What the report says became of process `pid`; nullopt where it does not list it.
std::optional<Outcome> outcome_of(const CleanupReport& report, pid_t pid) {
  for (const auto& p : report.processes) {
    if (p.pid == pid) return p.outcome;
  }
  return std::nullopt;
}

std::string make_file(const std::string& dir, const std::string& name) {
  std::string path = dir + "/" + name;
  std::ofstream(path) << "data\n";
  return path;
}

class Durability : public DaemonTest {
 protected:
  Durability() : DaemonTest({"--allowed-roots", "/tmp"}) {}

  testing::TempDir temp{"warden-durable"};
  const std::string scratch = temp.path();
};

TEST_F(Durability, LivingJobKeepsRunningAcrossARestartAndResumesBeating) {
  auto t = tree({Behaviour::sleep});
  JobId id = client.register_job({.name = "living", .pid = t.main, .heartbeat_s = 1.5});
  client.add_process(id, t.workers[0]);
  std::string file =
      client.add_path({.job = id, .kind = PathKind::file, .path = make_file(scratch, "keep")});

  daemon.restart();
  // Beating on through the restart, for longer than the heartbeat period: the client reconnects.
  auto until = std::chrono::steady_clock::now() + 3s;
  while (std::chrono::steady_clock::now() < until) {
    client.heartbeat(id);
    std::this_thread::sleep_for(200ms);
  }
  EXPECT_GE(client.reconnects(), 1u);
  auto s = client.status(id).at(0);
  EXPECT_EQ(s.state, JobState::running);
  ASSERT_EQ(s.workers.size(), 1u);
  EXPECT_FALSE(s.workers[0].exited);
  EXPECT_FALSE(is_gone(t.workers[0]));
  EXPECT_TRUE(fs::exists(file));

  client.end_job(id, /*ok=*/false);
  EXPECT_EQ(wait_for_state(id, JobState::cleaned).state, JobState::cleaned);
  EXPECT_TRUE(wait_exited(t.workers[0], 5s));
  EXPECT_FALSE(fs::exists(file));
}

TEST_F(Durability, JobWhoseMainDiedWhileWardendWasDownIsCleanedWithinASecondOfRestart) {
  auto t = tree({Behaviour::sleep, Behaviour::ignore_term});
  JobId id = client.register_job({.name = "orphaned", .pid = t.main, .grace_s = 0.2});
  for (pid_t w : t.workers) client.add_process(id, w);
  std::string file =
      client.add_path({.job = id, .kind = PathKind::file, .path = make_file(scratch, "gone")});

  daemon.crash();
  kill_and_reap({t.main});
  auto restarted = std::chrono::steady_clock::now();
  daemon.restart();
  auto s = wait_for_state(id, JobState::cleaned, 5s);
  auto took = std::chrono::steady_clock::now() - restarted;

  ASSERT_EQ(s.state, JobState::cleaned);
  EXPECT_LT(took, 1s) << "cleaned " << std::chrono::duration<double>(took).count()
                      << " s after the restart began";
  EXPECT_EQ(s.reason, JobState::failed);
  for (pid_t w : t.workers) EXPECT_TRUE(wait_exited(w, 2s)) << "worker " << w;
  EXPECT_FALSE(fs::exists(file));
}

TEST_F(Durability, CleanupInterruptedByACrashCompletesAfterRestart) {
  // A worker that ignores SIGTERM holds the cleanup in its grace period; wardend dies there,
  // before the worker was killed and before any path was removed.
  auto t = tree({Behaviour::ignore_term});
  JobId id = client.register_job({.name = "interrupted", .pid = t.main, .grace_s = 3});
  client.add_process(id, t.workers[0]);
  std::string file =
      client.add_path({.job = id, .kind = PathKind::file, .path = make_file(scratch, "half")});
  client.end_job(id, /*ok=*/false);
  ASSERT_EQ(client.status(id).at(0).state, JobState::cleaning);
  std::this_thread::sleep_for(300ms);

  daemon.crash();
  ASSERT_FALSE(is_gone(t.workers[0]));
  ASSERT_TRUE(fs::exists(file));

  daemon.restart();
  auto s = wait_for_state(id, JobState::cleaned);
  ASSERT_EQ(s.state, JobState::cleaned);
  EXPECT_EQ(s.reason, JobState::failed);
  EXPECT_TRUE(wait_exited(t.workers[0], 2s));
  EXPECT_FALSE(fs::exists(file));
  ASSERT_TRUE(s.report);
  ASSERT_EQ(s.report->paths.size(), 1u);
  EXPECT_EQ(s.report->paths[0].outcome, Outcome::removed);
}

// wardend dies after the cleanup ended the job's processes (a hook holds it there): the resumed
// cleanup finds them gone, and reports each with the outcome it had, not as already gone; a member
// of the job's cgroup that nothing registered, which only the first cleanup saw, is listed too.
TEST_F(Durability, ACleanupResumedAfterItsProcessesEndedKeepsTheirOutcomes) {
  auto t = tree({Behaviour::sleep, Behaviour::ignore_term});
  JobId id = client.register_job({.name = "resumed", .pid = t.main, .grace_s = 0.3});
  client.add_process(id, t.workers[0]);  // the second worker only its cgroup knows
  client.add_hook({.job = id, .hook = {.argv = {"/bin/sleep", "30"}, .timeout_s = 60}});
  std::string file =
      client.add_path({.job = id, .kind = PathKind::file, .path = make_file(scratch, "kept")});
  client.end_job(id, /*ok=*/false);
  ASSERT_TRUE(wait_exited(t.workers[0], 5s));
  ASSERT_TRUE(wait_exited(t.workers[1], 5s));
  std::this_thread::sleep_for(200ms);  // the hook starts

  daemon.crash();
  daemon.restart();
  auto s = wait_for_state(id, JobState::cleaned);
  ASSERT_EQ(s.state, JobState::cleaned);
  ASSERT_TRUE(s.report);
  EXPECT_EQ(outcome_of(*s.report, t.workers[0]), Outcome::terminated);
  EXPECT_EQ(outcome_of(*s.report, t.workers[1]), Outcome::killed)
      << "listed, though nothing registered it";
  ASSERT_EQ(s.report->hooks.size(), 1u);
  EXPECT_NE(s.report->hooks[0].detail.find("interrupted"), std::string::npos);
  ASSERT_EQ(s.report->paths.size(), 1u);
  EXPECT_EQ(s.report->paths[0].outcome, Outcome::removed);
  EXPECT_FALSE(fs::exists(file));
  // The hook outlived its wardend.
  [[maybe_unused]] int ended = ::system("pkill -x -f '/bin/sleep 30' 2>/dev/null; true");
}

TEST_F(Durability, ACleanupResumedInsideItsGracePeriodKeepsWhatEndedInIt) {
  auto t = tree({Behaviour::sleep, Behaviour::ignore_term});
  JobId id = client.register_job({.name = "in-grace", .pid = t.main, .grace_s = 3});
  client.add_process(id, t.workers[0]);  // the second worker only its cgroup knows
  client.end_job(id, /*ok=*/false);
  ASSERT_TRUE(wait_exited(t.workers[0], 5s)) << "SIGTERM ends the first worker";
  std::this_thread::sleep_for(300ms);  // the record of the SIGTERM is written meanwhile
  ASSERT_FALSE(wait_exited(t.workers[1], 0ms)) << "the second ignores it: the grace runs";

  daemon.crash();
  daemon.restart();
  auto s = wait_for_state(id, JobState::cleaned, 60s);
  ASSERT_EQ(s.state, JobState::cleaned);
  ASSERT_TRUE(s.report);
  EXPECT_EQ(outcome_of(*s.report, t.workers[0]), Outcome::terminated)
      << "it ended in the interrupted grace";
  EXPECT_EQ(outcome_of(*s.report, t.workers[1]), Outcome::killed) << "ended by the resumed cleanup";
  EXPECT_TRUE(wait_exited(t.workers[1], 0ms));
}

TEST_F(Durability, EventHistoryOutlivesRestartsAndRetirement) {
  auto t = tree({});
  JobId id = client.register_job({.name = "history", .pid = t.main});
  client.end_job(id, /*ok=*/true);
  // The event stream carries a change once it is on disk: the cleaned event arriving means a
  // restart now finds the whole history.
  ASSERT_EQ(wait_for_state(id, JobState::cleaned).state, JobState::cleaned);
  daemon.restart();

  auto events = client.events({.job = id});
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[0].state, JobState::running);
  EXPECT_EQ(events[1].state, JobState::cleaning);
  EXPECT_EQ(events[1].reason, JobState::ended);
  EXPECT_EQ(events[2].state, JobState::cleaned);
  EXPECT_TRUE(events[2].report);
  EXPECT_LT(events[0].seq, events[2].seq);

  // Ids continue after a restart instead of starting again at 1.
  auto t2 = tree({});
  EXPECT_GT(client.register_job({.name = "next", .pid = t2.main}), id);
  // Another user sees none of it.
  ASSERT_EQ(::chmod(daemon.dir().c_str(), 0755), 0);
  auto other =
      run_command_as(65534, {WARDENCTL_PATH, "--socket", daemon.socket(), "events", "--json"});
  EXPECT_EQ(other.status, 0) << other.err;
  EXPECT_EQ(json::parse(other.out).size(), 0u) << other.out;
}

// Done-when 1: under registration load, wardend SIGKILLed at random moments and restarted 20
// times; afterwards every job acknowledged before a crash is known, and killing their main
// processes cleans every resource they registered.
TEST_F(Durability, CrashLoopUnderLoadLosesNothingAcknowledged) {
  struct Acknowledged {
    JobId id;
    pid_t main;
    std::string file;
  };
  std::mutex mu;
  std::vector<Acknowledged> acknowledged;
  std::vector<pid_t> mains;
  std::atomic<bool> stop{false};
  std::atomic<int> refused{0};

  // Paced so that the jobs stay well under the per-user limit over the ~5 s of crashes.
  auto load = [&](int n) {
    Client c(daemon.socket());
    for (int i = 0; !stop; ++i) {
      std::this_thread::sleep_for(40ms);
      pid_t main = spawn(Behaviour::sleep);
      {
        std::lock_guard lock(mu);
        mains.push_back(main);
      }
      std::string file = make_file(scratch, "f" + std::to_string(n) + "_" + std::to_string(i));
      try {
        JobId id = c.register_job({.name = "load", .pid = main});
        c.add_path({.job = id, .kind = PathKind::file, .path = file});
        std::lock_guard lock(mu);
        acknowledged.push_back({id, main, file});
      } catch (const Error& e) {
        // The connection broke mid-request: not acknowledged, so nothing is promised for it.
        EXPECT_EQ(e.code(), ErrorCode::unavailable) << e.what();
        ++refused;
      }
    }
  };
  std::vector<std::thread> clients;
  for (int n = 0; n < 4; ++n) clients.emplace_back(load, n);

  std::mt19937 rng(12345);
  for (int round = 0; round < 20; ++round) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50 + rng() % 250));
    daemon.restart();
  }
  std::this_thread::sleep_for(200ms);
  stop = true;
  for (auto& c : clients) c.join();
  for (pid_t m : mains) track(m);

  ASSERT_GT(acknowledged.size(), 20u) << "too little load to mean anything";
  daemon.restart();
  Client checker(daemon.socket());
  std::map<JobId, JobStatus> known;
  for (auto& s : checker.status()) known[s.id] = s;
  for (const auto& a : acknowledged) {
    ASSERT_TRUE(known.contains(a.id)) << "acknowledged job " << a.id << " is missing";
    EXPECT_EQ(known[a.id].main_pid, a.main);
    ASSERT_EQ(known[a.id].paths.size(), 1u) << "job " << a.id;
    EXPECT_EQ(known[a.id].paths[0].path, a.file);
  }

  kill_and_reap(mains);
  auto deadline = std::chrono::steady_clock::now() + 60s;
  auto all_cleaned = [&] {
    for (const auto& s : checker.status()) {
      if (s.state != JobState::cleaned) return false;
    }
    return true;
  };
  while (!all_cleaned() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(50ms);
  }
  for (const auto& a : acknowledged) {
    EXPECT_EQ(checker.status(a.id).at(0).state, JobState::cleaned) << "job " << a.id;
    EXPECT_FALSE(fs::exists(a.file)) << a.file << " of job " << a.id;
  }
  std::cout << "acknowledged " << acknowledged.size() << " jobs across 20 crashes; " << refused
            << " requests broken by a crash\n";
}

TEST(DurabilityStart, CorruptStoreIsReportedAndWardendRefusesToStartEmpty) {
  testing::TempDir temp("warden-corrupt");
  const std::string& dir = temp.path();
  fs::create_directories(dir + "/state");
  std::ofstream(dir + "/state/warden.db") << std::string(8192, 'x');
  auto r = run_command({WARDEND_PATH, "--socket", dir + "/s.sock", "--state-dir", dir + "/state"});
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find(dir + "/state/warden.db cannot be read"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("move it aside"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir + "/s.sock")) << "it must not serve";
  EXPECT_EQ(fs::file_size(dir + "/state/warden.db"), 8192u) << "the file must be left as it was";
}

// A small tmpfs as the state directory: filled up, or read-only.
class FullDisk : public ::testing::Test {
 protected:
  void SetUp() override {
    state = dir + "/state";
    fs::create_directories(state);
    if (::mount("tmpfs", state.c_str(), "tmpfs", 0, "size=2m") != 0) {
      GTEST_SKIP() << "cannot mount a tmpfs here (" << std::strerror(errno)
                   << "); the full-disk test needs root with CAP_SYS_ADMIN";
    }
    mounted = true;
    daemon.emplace(std::vector<std::string>{"--state-dir", state, "--allowed-roots", "/tmp"});
  }
  void TearDown() override {
    if (HasFailure() && daemon) std::cerr << "---- wardend log ----\n" << daemon->log() << "----\n";
    daemon.reset();
    kill_and_reap(spawned);
    if (mounted) ::umount2(state.c_str(), MNT_DETACH);
  }

  // Registers jobs until one is refused (the WAL reuses space it already has, so the first few
  // may still fit). Returns the refusal.
  std::optional<Error> register_until_refused(Client& c) {
    for (int i = 0; i < 500; ++i) {
      pid_t main = spawned.emplace_back(spawn(Behaviour::sleep));
      try {
        c.register_job({.name = "filler", .pid = main});
      } catch (const Error& e) {
        return e;
      }
    }
    return std::nullopt;
  }

  testing::TempDir temp{"warden-full"};  // removed after TearDown() has unmounted the tmpfs
  const std::string dir = temp.path();
  std::string state;
  bool mounted = false;
  std::optional<Daemon> daemon;
  std::vector<pid_t> spawned;
};

TEST_F(FullDisk, RegistrationsFailClearlyWhileStatusAndCleaningGoOn) {
  Client c(daemon->socket());
  pid_t main = spawned.emplace_back(spawn(Behaviour::sleep));
  pid_t worker = spawned.emplace_back(spawn(Behaviour::sleep));
  JobId id = c.register_job({.name = "before", .pid = main, .grace_s = 0.2});
  c.add_process(id, worker);
  std::string file = make_file(dir, "victim");
  c.add_path({.job = id, .kind = PathKind::file, .path = file});

  {
    std::ofstream filler(state + "/filler");
    std::string block(64 * 1024, 'f');
    while (filler.write(block.data(), block.size())) {
    }
  }
  auto refusal = register_until_refused(c);
  ASSERT_TRUE(refusal) << "no registration failed on a full disk";
  EXPECT_EQ(refusal->code(), ErrorCode::unavailable);
  EXPECT_NE(std::string(refusal->what()).find("nothing was changed"), std::string::npos)
      << refusal->what();

  // Status still answers, and shows no trace of the refused registration.
  auto jobs = c.status();
  EXPECT_TRUE(std::all_of(jobs.begin(), jobs.end(),
                          [](const JobStatus& s) { return s.state == JobState::running; }));
  // Cleaning goes on: the job's main dies, its worker and file go.
  ::kill(main, SIGKILL);
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (c.status(id).at(0).state != JobState::cleaned &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(c.status(id).at(0).state, JobState::cleaned);
  EXPECT_TRUE(wait_exited(worker, 2s));
  EXPECT_FALSE(fs::exists(file));

  // Space again: registrations work again, and the kept state changes reach the disk.
  fs::remove(state + "/filler");
  pid_t after = spawned.emplace_back(spawn(Behaviour::sleep));
  JobId later = c.register_job({.name = "after", .pid = after});
  EXPECT_GT(later, id);

  // After a restart, the job that was cleaned while the disk was full is known as cleaned.
  daemon->restart();
  Client again(daemon->socket());
  EXPECT_EQ(again.status(id).at(0).state, JobState::cleaned);
}

TEST_F(FullDisk, ReadOnlyStateDirectoryServesAndCleansButRefusesRegistrations) {
  pid_t main = spawned.emplace_back(spawn(Behaviour::sleep));
  std::string file = make_file(dir, "kept");
  JobId id = 0;
  {
    Client c(daemon->socket());
    id = c.register_job({.name = "before", .pid = main, .grace_s = 0.2});
    c.add_path({.job = id, .kind = PathKind::file, .path = file});
  }
  daemon.reset();  // a clean stop: nothing of the store is open any more
  ASSERT_EQ(::mount(nullptr, state.c_str(), nullptr, MS_REMOUNT | MS_RDONLY, nullptr), 0)
      << std::strerror(errno);
  daemon.emplace(std::vector<std::string>{"--state-dir", state, "--allowed-roots", "/tmp"});

  Client c(daemon->socket());
  EXPECT_EQ(c.status(id).at(0).state, JobState::running) << "what the store held is served";
  pid_t other = spawned.emplace_back(spawn(Behaviour::sleep));
  try {
    c.register_job({.name = "after", .pid = other});
    ADD_FAILURE() << "a registration was acknowledged that could not be recorded";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::unavailable);
    EXPECT_NE(std::string(e.what()).find("read-only"), std::string::npos) << e.what();
  }
  ::kill(main, SIGKILL);
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (c.status(id).at(0).state != JobState::cleaned &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(c.status(id).at(0).state, JobState::cleaned) << "cleaning goes on";
  EXPECT_FALSE(fs::exists(file));
  daemon.reset();
  ::mount(nullptr, state.c_str(), nullptr, MS_REMOUNT, nullptr);
}

}  // namespace
}  // namespace warden::testing
