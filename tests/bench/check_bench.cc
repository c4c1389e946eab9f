#include "tests/bench/check_bench.h"

#include <sys/sysmacros.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <thread>

#include "tests/support/daemon_fixture.h"
#include "tests/support/gpu_node.h"
#include "tests/support/processes.h"
#include "warden/client.h"

namespace warden::bench {
namespace {

using testing::Behaviour;

constexpr int kChecks = 50;
constexpr int kTrials = 10;
constexpr int kWorkers = 64;

Stats time_calls(const std::function<void()>& call) {
  std::vector<double> v;
  for (int i = 0; i < kChecks; ++i) {
    auto start = Clock::now();
    call();
    v.push_back(ms(Clock::now() - start));
  }
  return stats(v);
}

// Another job's heartbeats, back to back on their own connection, while `load` runs (µs).
Stats beats_while(const testing::Daemon& daemon, JobId job, const std::function<void()>& load) {
  std::atomic<bool> done = false;
  std::vector<double> beats;
  std::thread beater([&] {
    UniqueFd fd = connect_to(daemon.socket());
    beats = round_trips(fd.get(), heartbeat_line(job), 1 << 30, [&] { return !done.load(); });
  });
  load();
  done = true;
  beater.join();
  return stats(beats);
}

void check_rows(Report& report) {
  testing::GpuNode gpu(::makedev(1, 7));
  if (!gpu.usable()) {
    report.row("node check", "skipped: cannot make a device node here", "-", "-", "-");
    return;
  }
  auto flags = gpu.flags("");
  flags.insert(flags.end(), {"--log-level", "warn", "--check-interval", "0"});
  testing::Daemon daemon(flags);
  Client client(daemon.socket());
  // A running job whose 8 workers hold the GPU, and one process of no job holding it.
  auto tree = testing::spawn_tree(std::vector<Behaviour>(8, Behaviour::sleep));
  JobId job = client.register_job({.name = "train", .pid = tree.main, .heartbeat_s = 3600});
  std::vector<pid_t> holders;
  for (pid_t w : tree.workers) client.add_process(job, w);
  for (int i = 0; i < 8; ++i) holders.push_back(gpu.spawn_holder());
  for (int i = 0; i < 8; ++i) client.add_process(job, holders[i]);
  holders.push_back(gpu.spawn_holder());  // the stray

  auto check = [&] { client.check(); };
  auto scrape = [&] { client.metrics(); };
  Stats quiet = time_calls(check);
  Stats quiet_scrape = time_calls(scrape);
  std::vector<pid_t> idle = crowd(3000);
  Stats crowded = time_calls(check);
  Stats crowded_scrape = time_calls(scrape);
  // The same call back to back on its own connection for 3 s.
  auto back_to_back = [&](auto call) {
    return [&daemon, call] {
      Client caller(daemon.socket());
      for (auto until = Clock::now() + std::chrono::seconds(3); Clock::now() < until;) {
        call(caller);
      }
    };
  };
  Stats idle_beats = beats_while(daemon, job, [] { std::this_thread::sleep_for(std::chrono::seconds(3)); });
  Stats busy_beats = beats_while(daemon, job, back_to_back([](Client& c) { c.check(); }));
  Stats scrape_beats = beats_while(daemon, job, back_to_back([](Client& c) { c.metrics(); }));
  testing::kill_and_reap(idle);

  // A view's time, crowded vs quiet, and another job's heartbeats while it is asked back to back.
  auto view_rows = [&](const std::string& what, const std::string& asked, const Stats& crowded,
                       const Stats& quiet, const std::string& target, const Stats& beats) {
    report.row(what + ", 3,000 idle processes vs a quiet node",
               fmt::format("{:.1f} ms", crowded.p50), fmt::format("{:.1f} ms", quiet.p50),
               ratio(crowded.p50, quiet.p50), target);
    report.row("another job's heartbeat p99 / max during back-to-back " + asked +
                   " (3,000 processes, a GPU node) vs idle",
               fmt::format("{:.2f} / {:.2f} ms", beats.p99 / 1000, beats.max / 1000),
               fmt::format("{:.2f} / {:.2f} ms", idle_beats.p99 / 1000, idle_beats.max / 1000),
               ratio(beats.p99, idle_beats.p99), "p99 ≤ 10 ms and ≤ 2× idle");
  };
  view_rows("node check p50 (a job's 16 processes and a stray hold a GPU node)", "checks", crowded,
            quiet, "(what the node costs)", busy_beats);
  view_rows("metrics scrape p50 (`metrics`: the GPU view's holders with their jobs)", "scrapes",
            crowded_scrape, quiet_scrape, "≤ 50 ms", scrape_beats);
  std::vector<pid_t> all = tree.workers;
  all.push_back(tree.main);
  all.insert(all.end(), holders.begin(), holders.end());
  testing::kill_and_reap(all);
}

// A main whose 64 workers each hold 1,000 descriptors of a 64 KiB segment they never registered.
double discovery_trial(const testing::Daemon& daemon, Client& client) {
  auto tree = testing::spawn_tree(std::vector<Behaviour>(kWorkers, Behaviour::hold_segment));
  JobId job = client.register_job({.name = "held", .pid = tree.main, .grace_s = 0});
  for (pid_t w : tree.workers) client.add_process(job, w);
  double took = kill_until_cleaned(daemon.socket(), job, tree.main);
  std::vector<pid_t> all = tree.workers;
  all.push_back(tree.main);
  testing::kill_and_reap(all);
  for (pid_t w : tree.workers) {
    std::filesystem::remove("/dev/shm/warden-held-" + std::to_string(w));  // discover = off's
  }
  return took;
}

Stats discovery_trials(const testing::Daemon& daemon) {
  Client client(daemon.socket());
  std::vector<double> v;
  for (int trial = 0; trial < kTrials; ++trial) v.push_back(discovery_trial(daemon, client));
  return stats(v);
}

void discovery_rows(Report& report) {
  testing::Daemon reclaiming({"--log-level", "warn"});
  testing::Daemon blind({"--log-level", "warn", "--discover", "off"});
  Stats off = discovery_trials(blind);
  Stats on = discovery_trials(reclaiming);
  std::vector<pid_t> idle = crowd(3000);
  Stats crowded_off = discovery_trials(blind);
  Stats crowded_on = discovery_trials(reclaiming);
  testing::kill_and_reap(idle);
  report.row(fmt::format("death to clean p50, 64 workers each holding 1,000 descriptors of an "
                         "unregistered 64 KiB segment ({} trials): discover = reclaim (64 "
                         "segments found and removed) vs off",
                         kTrials),
             fmt::format("{:.1f} ms", on.p50), fmt::format("{:.1f} ms", off.p50),
             ratio(on.p50, off.p50), "(discovery's cost)");
  report.row("the same with 3,000 idle processes on the node (the look for outside holders walks "
             "every process)",
             fmt::format("{:.1f} ms", crowded_on.p50), fmt::format("{:.1f} ms", crowded_off.p50),
             ratio(crowded_on.p50, crowded_off.p50), "(discovery's cost)");
}

// A main and 64 workers a launcher (the benchmark) started beside it, registered by pid: each
// moves into the job's leaf, so that the crowded node costs the cleanup nothing more.
double siblings_trial(const testing::Daemon& daemon, Client& client) {
  pid_t main = testing::spawn(Behaviour::sleep);
  std::vector<pid_t> workers;
  for (int i = 0; i < kWorkers; ++i) workers.push_back(testing::spawn(Behaviour::sleep));
  JobId job = client.register_job({.name = "siblings", .pid = main, .grace_s = 0});
  for (pid_t w : workers) client.add_process(job, w);
  double took = kill_until_cleaned(daemon.socket(), job, main);
  workers.push_back(main);
  testing::kill_and_reap(workers);
  return took;
}

// The floor of that shape: the same 65 processes, SIGKILL through pidfds opened beforehand and a
// wait until each says it exited.
double siblings_floor_trial() {
  std::vector<pid_t> all;
  for (int i = 0; i <= kWorkers; ++i) all.push_back(testing::spawn(Behaviour::sleep));
  std::vector<UniqueFd> fds;
  for (pid_t p : all) fds.push_back(testing::open_pidfd(p));
  auto start = Clock::now();
  kill_and_wait(fds);
  double took = ms(Clock::now() - start);
  testing::kill_and_reap(all);
  return took;
}

void siblings_rows(Report& report) {
  testing::Daemon daemon({"--log-level", "warn"});
  Client client(daemon.socket());
  auto trials = [&] {
    std::vector<double> v;
    for (int trial = 0; trial < kTrials; ++trial) v.push_back(siblings_trial(daemon, client));
    return stats(v);
  };
  std::vector<double> floors;
  for (int trial = 0; trial < kTrials; ++trial) floors.push_back(siblings_floor_trial());
  Stats floor = stats(floors);
  Stats quiet = trials();
  std::vector<pid_t> idle = crowd(3000);
  Stats crowded = trials();
  testing::kill_and_reap(idle);
  report.row(fmt::format("death to clean p50, 64 workers registered beside the main (siblings, "
                         "{} trials), 3,000 idle processes vs a quiet node",
                         kTrials),
             fmt::format("{:.1f} ms", crowded.p50), fmt::format("{:.1f} ms", quiet.p50),
             ratio(crowded.p50, quiet.p50), "≤ 1.2×");
  report.row("the same, quiet, vs the floor (the same kills and waits, no daemon)",
             fmt::format("{:.1f} ms", quiet.p50), fmt::format("{:.1f} ms", floor.p50),
             ratio(quiet.p50, floor.p50), "≤ 1.3×");
}

}  // namespace

void check_benchmarks(Report& report) {
  check_rows(report);
  discovery_rows(report);
  siblings_rows(report);
}

}  // namespace warden::bench
