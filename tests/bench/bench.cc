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
#include <fmt/format.h>
#include <fstream>
#include <iostream>
#include <thread>

#include "daemon/unique_fd.h"
#include "tests/support/daemon_fixture.h"
#include "tests/support/processes.h"
#include "warden/client.h"

namespace warden::bench {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using testing::Behaviour;

double us(Clock::duration d) { return std::chrono::duration<double, std::micro>(d).count(); }

struct Stats {
  double p50 = 0, p99 = 0;
  std::size_t n = 0;
};

Stats stats(std::vector<double> v) {
  if (v.empty()) return {};
  std::sort(v.begin(), v.end());
  auto at = [&](double q) { return v[std::min(v.size() - 1, static_cast<std::size_t>(q * v.size()))]; };
  return {.p50 = at(0.50), .p99 = at(0.99), .n = v.size()};
}

// The baseline for request latency: a Unix-socket server that echoes each line back, in a thread
// of this process, answering the same bytes a heartbeat exchange moves.
class EchoServer {
 public:
  explicit EchoServer(const std::string& path) : path_(path) {
    listen_ = UniqueFd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{.sun_family = AF_UNIX};
    std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path.c_str());
    if (::bind(listen_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
        ::listen(listen_.get(), 16) != 0) {
      throw std::runtime_error("echo server: bind " + path);
    }
    thread_ = std::thread([this] {
      UniqueFd conn(::accept(listen_.get(), nullptr, nullptr));
      char buf[4096];
      ssize_t n;
      while ((n = ::read(conn.get(), buf, sizeof(buf))) > 0) {
        if (::write(conn.get(), buf, n) != n) break;
      }
    });
  }
  ~EchoServer() {
    thread_.join();
    ::unlink(path_.c_str());
  }

 private:
  std::string path_;
  UniqueFd listen_;
  std::thread thread_;
};

UniqueFd connect_to(const std::string& path) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{.sun_family = AF_UNIX};
  std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path.c_str());
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    throw std::runtime_error("connect " + path);
  }
  return fd;
}

// Round trips of `request` (one line) against a line-answering server, each timed.
std::vector<double> round_trips(int fd, const std::string& request, int count,
                                const std::function<bool()>& keep_going = [] { return true; }) {
  std::vector<double> out;
  out.reserve(count);
  char buf[4096];
  for (int i = 0; i < count && keep_going(); ++i) {
    auto start = Clock::now();
    if (::write(fd, request.data(), request.size()) != static_cast<ssize_t>(request.size())) break;
    std::size_t got = 0;
    while (got == 0 || buf[got - 1] != '\n') {
      ssize_t n = ::read(fd, buf + got, sizeof(buf) - got);
      if (n <= 0) return out;
      got += n;
    }
    out.push_back(us(Clock::now() - start));
  }
  return out;
}

std::string heartbeat_line(JobId job) {
  return json{{"id", 1}, {"op", "heartbeat"}, {"job", job}}.dump() + "\n";
}

struct Report {
  std::vector<std::string> rows;
  void row(const std::string& what, const std::string& measured, const std::string& baseline,
           const std::string& ratio, const std::string& target) {
    rows.push_back(fmt::format("| {} | {} | {} | {} | {} |", what, measured, baseline, ratio, target));
  }
};

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
      UniqueFd fd(::open((sub + "/f" + std::to_string(f)).c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600));
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
  auto busy = round_trips(fd.get(), line, 10'000'000, [&] { return ++i % 200 != 0 || fs::exists(tree); });
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

// Main process SIGKILLed -> its 64 workers dead, 1,000 files and 64 shm segments removed (grace 0),
// timed until the job reads `cleaned`.
void death_to_clean(testing::Daemon& daemon, Client& client, Report& report) {
  constexpr int kTrials = 20;
  std::vector<double> ms;
  for (int trial = 0; trial < kTrials; ++trial) {
    auto tree = testing::spawn_tree(std::vector<Behaviour>(64, Behaviour::sleep));
    JobId job = client.register_job({.name = "death", .pid = tree.main, .grace_s = 0});
    for (pid_t w : tree.workers) client.add_process(job, w);
    std::string dir = daemon.dir() + "/files" + std::to_string(trial);
    fs::create_directory(dir);
    for (int f = 0; f < 1000; ++f) std::ofstream(dir + "/f" + std::to_string(f)) << f;
    client.add_path({.job = job, .kind = PathKind::dir, .path = dir});
    for (int s = 0; s < 64; ++s) {
      std::string name = fmt::format("warden_bench_{}_{}", tree.main, s);
      UniqueFd fd(::shm_open(("/" + name).c_str(), O_CREAT | O_RDWR, 0600));
      client.add_path({.job = job, .kind = PathKind::shm, .path = name});
    }
    auto start = Clock::now();
    ::kill(tree.main, SIGKILL);
    while (client.status(job).at(0).state != JobState::cleaned) {
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    ms.push_back(us(Clock::now() - start) / 1000);
    std::vector<pid_t> all = tree.workers;
    all.push_back(tree.main);
    testing::kill_and_reap(all);
  }
  auto s = stats(ms);
  report.row(fmt::format("death to clean p50 ({} trials: 64 workers, 1,000 files, 64 shm)", kTrials),
             fmt::format("{:.1f} ms", s.p50), "-", "-", "≤ 20 ms");
  report.row("death to clean p99", fmt::format("{:.1f} ms", s.p99), "-", "-", "≤ 50 ms");
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
  return fmt::format("{}, {} cores, Linux {}", model, std::thread::hardware_concurrency(), u.release);
}

}  // namespace
}  // namespace warden::bench

int main() {
  using namespace warden;
  using namespace warden::bench;
  ::prctl(PR_SET_CHILD_SUBREAPER, 1);
  testing::Daemon daemon({"--log-level", "warn"});
  Client client(daemon.socket());
  pid_t main_pid = testing::spawn(Behaviour::sleep);
  JobId beating = client.register_job({.name = "beating", .pid = main_pid, .heartbeat_s = 3600});

  Report report;
  heartbeat_latency(daemon, beating, report);
  heartbeat_during_removal(daemon, client, beating, report);
  death_to_clean(daemon, client, report);
  testing::kill_and_reap({main_pid});

  std::cout << "Machine: " << machine() << "\n\n";
  std::cout << "| what | measured | baseline (same run) | ratio | target |\n|---|---|---|---|---|\n";
  for (const auto& r : report.rows) std::cout << r << "\n";
  return 0;
}
