#include "tests/bench/beat_bench.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/support/daemon_fixture.h"
#include "tests/support/processes.h"
#include "warden/client.h"

namespace warden::bench {
namespace {

using namespace std::chrono_literals;

// 20,000 beat() calls 100 µs apart, each timed (ns); with a heartbeat of 0.4 s one call in a
// thousand hands a beat to the sending thread.
Stats time_beats(Job& job) {
  std::vector<double> took;
  took.reserve(20000);
  for (int i = 0; i < 20000; ++i) {
    auto start = Clock::now();
    job.beat();
    took.push_back(std::chrono::duration<double, std::nano>(Clock::now() - start).count());
    std::this_thread::sleep_for(100us);
  }
  return stats(std::move(took));
}

// tests/bench/python_beat.py, which measures once, waits for a line, and measures again.
class PythonBeats {
 public:
  explicit PythonBeats(const std::string& socket) {
    int to_child[2], from_child[2];
    if (::pipe(to_child) != 0 || ::pipe(from_child) != 0) throw std::runtime_error("pipe");
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(to_child[0], 0);
      ::dup2(from_child[1], 1);
      ::setenv("WARDEN_SOCKET", socket.c_str(), 1);
      testing::exec_argv({"/usr/bin/python3", WARDEN_SOURCE_DIR "/tests/bench/python_beat.py"});
    }
    ::close(to_child[0]);
    ::close(from_child[1]);
    in_ = ::fdopen(to_child[1], "w");
    out_ = ::fdopen(from_child[0], "r");
  }
  ~PythonBeats() {
    std::fclose(in_);
    std::fclose(out_);
    ::waitpid(pid_, nullptr, 0);
  }
  Stats next() {
    char line[512] = {};
    if (std::fgets(line, sizeof(line), out_) == nullptr)
      throw std::runtime_error("python_beat.py died");
    auto j = nlohmann::json::parse(line);
    return {.p50 = j["p50_ns"].get<double>(),
            .p99 = j["p99_ns"].get<double>(),
            .max = j["max_ns"].get<double>()};
  }
  void go_on() {
    std::fputs("go\n", in_);
    std::fflush(in_);
  }

 private:
  pid_t pid_ = -1;
  FILE* in_ = nullptr;
  FILE* out_ = nullptr;
};

void rows(Report& report, const std::string& who, const Stats& healthy, const Stats& stopped) {
  report.row(who + " beat() p50 / p99, wardend healthy",
             fmt::format("{:.0f} / {:.0f} ns", healthy.p50, healthy.p99), "", "", "");
  report.row(who + " beat() p50 / p99, wardend stopped",
             fmt::format("{:.0f} / {:.0f} ns (max {:.1f} µs)", stopped.p50, stopped.p99,
                         stopped.max / 1000),
             fmt::format("healthy {:.0f} / {:.0f} ns", healthy.p50, healthy.p99),
             fmt::format("{:.2f}× / {:.2f}×", stopped.p50 / healthy.p50, stopped.p99 / healthy.p99),
             "never waits (max ≤ 5 ms)");
}

}  // namespace

void beat_cost(Report& report) {
  testing::Daemon daemon({"--log-level", "warn"});
  pid_t main_pid = testing::spawn(testing::Behaviour::sleep);
  {
    Client client(daemon.socket());
    Job job(client, {.name = "beat-bench", .pid = main_pid, .heartbeat_s = 0.4});
    Stats healthy = time_beats(job);
    ::kill(daemon.pid(), SIGSTOP);
    Stats stopped = time_beats(job);
    ::kill(daemon.pid(), SIGCONT);
    rows(report, "C++", healthy, stopped);
    job.end(true);
  }
  {
    PythonBeats python(daemon.socket());
    Stats healthy = python.next();
    ::kill(daemon.pid(), SIGSTOP);
    python.go_on();
    Stats stopped = python.next();
    ::kill(daemon.pid(), SIGCONT);
    rows(report, "Python", healthy, stopped);
  }
  testing::kill_and_reap({main_pid});
}

}  // namespace warden::bench
