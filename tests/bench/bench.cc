// warden_bench: measures a real wardend against baselines measured in the same run and prints a
// Markdown report (make bench writes it to BENCHMARKS.md). Figures are ratios where a baseline
// exists, because the machines here are shared and noisy.
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <set>
#include <thread>

#include <fmt/format.h>

#include "proto/unique_fd.h"
#include "tests/bench/beat_bench.h"
#include "tests/bench/check_bench.h"
#include "tests/bench/cleanup_bench.h"
#include "tests/bench/creations_bench.h"
#include "tests/bench/measure.h"
#include "tests/support/daemon_fixture.h"
#include "tests/support/processes.h"
#include "warden/client.h"

namespace warden::bench {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using testing::Behaviour;

// Heartbeat round trip against a raw Unix-socket echo of the same size.
void heartbeat_latency(testing::Daemon& daemon, JobId job, Report& report) {
  constexpr int kCount = 20000;
  std::string line = heartbeat_line(job);
  std::string echo_path = daemon.dir() + "/echo.sock";
  std::vector<double> echo, beat;
  {
    EchoServer server(echo_path);
    UniqueFd fd = connect_to(echo_path);
    // The echo answers with the request itself; pad it to the size of wardend's reply.
    std::string padded = line;
    padded.insert(padded.size() - 1, 24, ' ');
    round_trips(fd.get(), padded, 1000);  // warm up
    echo = round_trips(fd.get(), padded, kCount);
  }
  UniqueFd fd = connect_to(daemon.socket());
  round_trips(fd.get(), line, 1000);
  beat = round_trips(fd.get(), line, kCount);
  auto e = stats(echo), b = stats(beat);
  report.row("heartbeat round trip p50", fmt::format("{:.1f} µs", b.p50),
             fmt::format("echo {:.1f} µs", e.p50), fmt::format("{:.2f}×", b.p50 / e.p50), "≤ 2.0×");
  report.row("heartbeat round trip p99", fmt::format("{:.1f} µs", b.p99),
             fmt::format("echo {:.1f} µs", e.p99), fmt::format("{:.2f}×", b.p99 / e.p99), "");
}

// Heartbeat latency of one job while wardend removes another job's 100,000-file directory.
void heartbeat_during_removal(testing::Daemon& daemon, Client& client, JobId beating,
                              Report& report) {
  constexpr int kFiles = 100000;
  std::string tree = daemon.dir() + "/big";
  fs::create_directories(tree);
  for (int d = 0; d < 100; ++d) {
    std::string sub = tree + "/d" + std::to_string(d);
    fs::create_directory(sub);
    for (int f = 0; f < kFiles / 100; ++f) {
      UniqueFd fd(
          ::open((sub + "/f" + std::to_string(f)).c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600));
    }
  }
  UniqueFd fd = connect_to(daemon.socket());
  std::string line = heartbeat_line(beating);
  round_trips(fd.get(), line, 1000);
  auto idle = stats(round_trips(fd.get(), line, 5000));

  pid_t victim = testing::spawn(Behaviour::sleep);
  JobId job = client.register_job({.name = "big-tree", .pid = victim, .grace_s = 0});
  client.add_path({.job = job, .kind = PathKind::dir, .path = tree});
  auto start = Clock::now();
  ::kill(victim, SIGKILL);
  // Beat until the tree is gone (checking its top directory costs one stat per 200 beats).
  int i = 0;
  auto busy =
      round_trips(fd.get(), line, 10'000'000, [&] { return ++i % 200 != 0 || fs::exists(tree); });
  double removal_s = std::chrono::duration<double>(Clock::now() - start).count();
  testing::kill_and_reap({victim});
  auto b = stats(busy);
  report.row(fmt::format("heartbeat p50 while removing {} files ({:.1f} s, {} beats)", kFiles,
                         removal_s, b.n),
             fmt::format("{:.1f} µs", b.p50), fmt::format("idle {:.1f} µs", idle.p50),
             fmt::format("{:.2f}×", b.p50 / idle.p50), "stays on time");
  report.row("heartbeat p99 while removing", fmt::format("{:.1f} µs", b.p99),
             fmt::format("idle {:.1f} µs", idle.p99), fmt::format("{:.2f}×", b.p99 / idle.p99), "");
}

// Requests answered at `socket` by 64 clients, each with its own connection and one `line` in
// flight, for `duration`; `cpu` says how much CPU the server has used so far, in seconds.
struct Answered {
  std::uint64_t total = 0;
  double seconds = 0;
  double cpu_seconds = 0;  // the server's
  Answered& operator+=(const Answered& more) {
    total += more.total;
    seconds += more.seconds;
    cpu_seconds += more.cpu_seconds;
    return *this;
  }
  double per_s() const { return seconds > 0 ? total / seconds : 0; }
  double cpu_us_each() const { return total > 0 ? 1e6 * cpu_seconds / total : 0; }
};
Answered answered(const std::string& socket, const std::string& line,
                  const std::function<double()>& cpu, std::chrono::milliseconds duration) {
  constexpr int kClients = 64;
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> total{0};
  std::vector<std::thread> clients;
  std::vector<UniqueFd> connections;
  for (int c = 0; c < kClients; ++c) connections.push_back(connect_to(socket));
  const double cpu_before = cpu();
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, fd = connections[c].get()] {
      total += round_trips(fd, line, 100'000'000, [&] { return !stop.load(); }).size();
    });
  }
  std::this_thread::sleep_for(duration);
  stop = true;
  for (auto& t : clients) t.join();
  return {.total = total,
          .seconds = std::chrono::duration<double>(duration).count(),
          .cpu_seconds = cpu() - cpu_before};
}

// Heartbeats per second from 64 clients against a single-threaded epoll server answering the same
// clients with a reply of the same size, in the same run; and the CPU each answer costs the
// server, read to reply. The two take turns, half a second each, six times: the machine's pace
// drifts over seconds, and turns share it out evenly.
void heartbeat_throughput(testing::Daemon& daemon, JobId job, Report& report) {
  constexpr int kTurns = 6;
  constexpr auto kTurn = std::chrono::milliseconds(500);
  const std::string line = heartbeat_line(job);
  std::string reply;
  {
    UniqueFd fd = connect_to(daemon.socket());
    char buf[512];
    if (::write(fd.get(), line.data(), line.size()) != static_cast<ssize_t>(line.size())) return;
    ssize_t n = ::read(fd.get(), buf, sizeof(buf));
    reply.assign(buf, n > 0 ? n : 0);
  }
  const std::string path = daemon.dir() + "/epoll.sock";
  EpollLineServer server(path, reply);
  Answered beats, echo;
  for (int turn = 0; turn < kTurns; ++turn) {
    beats += answered(daemon.socket(), line, [&] { return cpu_seconds(daemon.pid()); }, kTurn);
    echo += answered(path, line, [&] { return server.cpu_seconds(); }, kTurn);
  }
  report.row("heartbeats/s, 64 clients, one in flight each, vs a one-threaded epoll server's "
             "answers of the same size (clients and server share the 2 cores; 6 turns of 0.5 s "
             "each)",
             fmt::format("{:.0f}/s", beats.per_s()), fmt::format("epoll {:.0f}/s", echo.per_s()),
             ratio(beats.per_s(), echo.per_s()), "≥ 0.85×");
  report.row("server CPU per heartbeat, read to reply (wardend, all its threads) vs per epoll "
             "answer, in those runs",
             fmt::format("{:.1f} µs", beats.cpu_us_each()),
             fmt::format("epoll {:.1f} µs", echo.cpu_us_each()),
             ratio(beats.cpu_us_each(), echo.cpu_us_each()), "");
}

// Registrations per second from 32 clients on a fresh wardend, durable (each acknowledged only once
// fsynced, group commit) and in memory. A fixed number, since each job holds a pidfd.
double registrations_per_s(bool durable) {
  constexpr int kClients = 32;
  constexpr int kPerClient = 400;
  std::vector<std::string> args{"--log-level", "warn", "--max-jobs-per-user", "1000000"};
  if (!durable) args.push_back("--no-durable");
  pid_t main = testing::spawn(Behaviour::sleep);
  // The daemon goes before its jobs' main process does: killing it first would start 12,800
  // cleanups that would still be running into the next benchmark.
  struct KillAfter {
    pid_t pid;
    ~KillAfter() { testing::kill_and_reap({pid}); }
  } kill_after{main};
  testing::Daemon daemon(args);
  std::string line =
      json{{"id", 1}, {"op", "register_job"}, {"name", "bench"}, {"pid", main}}.dump() + "\n";
  std::vector<std::thread> clients;
  std::vector<UniqueFd> fds;
  for (int c = 0; c < kClients; ++c) fds.push_back(connect_to(daemon.socket()));
  std::atomic<int> done{0};
  auto start = Clock::now();
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] {
      done += round_trips(fds[c].get(), line, kPerClient, [] { return true; }).size();
    });
  }
  for (auto& t : clients) t.join();
  double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  // Every reply must have been a registration, not a refusal.
  std::size_t jobs = Client(daemon.socket()).status().size();
  if (jobs != static_cast<std::size_t>(kClients * kPerClient)) {
    throw std::runtime_error(
        fmt::format("{} of {} registrations succeeded", jobs, kClients * kPerClient));
  }
  return done / seconds;
}

void registration_throughput(Report& report) {
  double memory = registrations_per_s(false);
  double durable = registrations_per_s(true);
  report.row("registrations/s, 32 clients, durable (fsync per batch)",
             fmt::format("{:.0f}/s", durable), fmt::format("{:.0f}/s in memory", memory),
             fmt::format("{:.2f}×", durable / memory), "≥ 20,000/s");
}

// How late cleanup starts after a missed heartbeat deadline (never early), over 50 jobs.
void stall_precision(testing::Daemon& daemon, Client& client, Report& report) {
  pid_t main = testing::spawn(Behaviour::sleep);
  std::vector<JobId> jobs;
  for (int i = 0; i < 50; ++i) {
    jobs.push_back(
        client.register_job({.name = "stall", .pid = main, .heartbeat_s = 0.2 + 0.01 * i}));
  }
  std::vector<double> late_ms;
  for (JobId id : jobs) {
    JobStatus s;
    do {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      s = client.status(id).at(0);
    } while (!s.report);
    // Both times are wall-clock milliseconds: the figure is good to about ±1 ms.
    double deadline = s.created_unix_ms + s.heartbeat_s * 1000;
    late_ms.push_back(s.report->started_unix_ms - deadline);
  }
  testing::kill_and_reap({main});
  auto st = stats(late_ms);
  double earliest = *std::min_element(late_ms.begin(), late_ms.end());
  report.row(
      "stall: cleanup start minus deadline, p99 (50 jobs)",
      fmt::format("{:.0f} ms (p50 {:.0f} ms, earliest {:+.0f} ms)", st.p99, st.p50, earliest), "-",
      "-", "≤ 10 ms, never early");
  (void)daemon;
}

std::size_t voluntary_switches(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("voluntary_ctxt_switches:", 0) == 0) return std::stoul(line.substr(24));
  }
  return 0;
}

// Wakeups of an idle wardend holding 1,000 jobs (with heartbeat deadlines far away).
void idle_cost(Report& report) {
  testing::Daemon daemon({"--log-level", "warn"});
  Client client(daemon.socket());
  pid_t main = testing::spawn(Behaviour::sleep);
  for (int i = 0; i < 1000; ++i) {
    client.register_job({.name = "idle", .pid = main, .heartbeat_s = 3600});
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  auto before = voluntary_switches(daemon.pid());
  std::this_thread::sleep_for(std::chrono::seconds(10));
  auto after = voluntary_switches(daemon.pid());
  testing::kill_and_reap({main});
  report.row("idle wakeups, 1,000 jobs, 10 s without traffic",
             fmt::format("{:.1f}/s", (after - before) / 10.0), "-", "-", "≤ 1/s");
}

// 10,000 jobs of 10 processes each (the same 10 sleeping processes in every job: each
// registration is still its own record and pidfd in wardend), or as many as the descriptor limit
// wardend inherits allows.
void scale(Report& report) {
  constexpr int kProcs = 10;
  rlimit files{};
  ::getrlimit(RLIMIT_NOFILE, &files);
  const int kJobs = static_cast<int>(std::min<rlim_t>(10000, (files.rlim_cur - 1000) / kProcs));
  testing::Daemon daemon({"--log-level", "warn", "--max-jobs-per-user", "20000"});
  Client client(daemon.socket());
  std::vector<pid_t> procs;
  for (int i = 0; i < kProcs; ++i) procs.push_back(testing::spawn(Behaviour::sleep));
  JobId first = client.register_job({.name = "scale", .pid = procs[0], .heartbeat_s = 3600});
  UniqueFd fd = connect_to(daemon.socket());
  std::string line = heartbeat_line(first);
  round_trips(fd.get(), line, 1000);
  auto one = stats(round_trips(fd.get(), line, 10000));
  std::size_t rss_before = rss_kib(daemon.pid());

  for (int j = 1; j < kJobs; ++j) {
    JobId id = client.register_job({.name = "scale", .pid = procs[0], .heartbeat_s = 3600});
    for (int p = 1; p < kProcs; ++p) client.add_process(id, procs[p]);
  }
  std::size_t resources = static_cast<std::size_t>(kJobs - 1) * kProcs;
  std::size_t rss_after = rss_kib(daemon.pid());
  auto start = Clock::now();
  auto all = client.status(std::nullopt, /*summary=*/true);
  double status_ms = us(Clock::now() - start) / 1000;
  start = Clock::now();
  client.status();
  double full_status_ms = us(Clock::now() - start) / 1000;
  auto many = stats(round_trips(fd.get(), line, 10000));
  testing::kill_and_reap(procs);

  report.row(fmt::format("scale: RSS per tracked process ({} jobs × {})", kJobs, kProcs),
             fmt::format("{:.2f} KiB", double(rss_after - rss_before) / resources), "-", "-",
             "≤ 1 KiB");
  report.row(
      fmt::format("scale: status of all {} jobs (summary, as `wardenctl status` asks)", all.size()),
      fmt::format("{:.0f} ms", status_ms),
      fmt::format("{:.0f} ms with every process listed", full_status_ms), "-", "≤ 100 ms");
  report.row(fmt::format("scale: heartbeat p50 with {} jobs", kJobs),
             fmt::format("{:.1f} µs", many.p50), fmt::format("1 job {:.1f} µs", one.p50),
             fmt::format("{:.2f}×", many.p50 / one.p50), "≤ 1.2×");
}

std::string machine() {
  utsname u{};
  ::uname(&u);
  std::ifstream cpu("/proc/cpuinfo");
  std::string line, model = "unknown CPU";
  while (std::getline(cpu, line)) {
    if (line.rfind("model name", 0) == 0) {
      model = line.substr(line.find(':') + 2);
      break;
    }
  }
  return fmt::format("{}, {} cores, Linux {}", model, std::thread::hardware_concurrency(),
                     u.release);
}

}  // namespace
}  // namespace warden::bench

// `warden_bench [GROUP...]`: only those groups (heartbeat, cleanup, mass, check, creations, removal, stall, idle,
// scale, registration); none: every one, as `make bench` runs it.
int main(int argc, char** argv) {
  using namespace warden;
  using namespace warden::bench;
  const std::set<std::string> only(argv + 1, argv + argc);
  auto wanted = [&only](const char* group) { return only.empty() || only.contains(group); };
  ::prctl(PR_SET_CHILD_SUBREAPER, 1);
  // Every tracked process holds a pidfd in wardend, which inherits this limit.
  rlimit files{};
  ::getrlimit(RLIMIT_NOFILE, &files);
  files.rlim_cur = files.rlim_max;
  ::setrlimit(RLIMIT_NOFILE, &files);
  testing::Daemon daemon({"--log-level", "warn"});
  Client client(daemon.socket());
  pid_t main_pid = testing::spawn(Behaviour::sleep);
  JobId beating = client.register_job({.name = "beating", .pid = main_pid, .heartbeat_s = 3600});

  Report report;
  if (wanted("heartbeat")) {
    heartbeat_latency(daemon, beating, report);
    heartbeat_throughput(daemon, beating, report);
    beat_cost(report);
  }
  // Before the 100,000-file removal and the registration benchmark: the file system's writeback of
  // what they delete slows file removal for a while after each.
  if (wanted("cleanup")) cleanup_benchmarks(report);
  if (wanted("mass")) mass_death_benchmarks(report);
  if (wanted("check")) check_benchmarks(report);
  if (wanted("creations")) creation_benchmarks(report);
  if (wanted("removal")) heartbeat_during_removal(daemon, client, beating, report);
  if (wanted("stall")) stall_precision(daemon, client, report);
  testing::kill_and_reap({main_pid});
  if (wanted("idle")) idle_cost(report);
  if (wanted("scale")) scale(report);
  if (wanted("registration")) registration_throughput(report);

  std::cout << "Machine: " << machine() << "\n\n";
  std::cout
      << "| what | measured | baseline (same run) | ratio | target |\n|---|---|---|---|---|\n";
  for (const auto& r : report.rows) std::cout << r << "\n";
  return 0;
}
