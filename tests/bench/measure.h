// What the benchmarks share: percentiles, the report table, and raw request round trips on a Unix
// socket (no client library in the timed path).
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "proto/messages.h"
#include "proto/unique_fd.h"
#include "tests/support/processes.h"

namespace warden::bench {

using Clock = std::chrono::steady_clock;

double us(Clock::duration d);
double ms(Clock::duration d);

struct Stats {
  double p50 = 0, p99 = 0, max = 0;
  std::size_t n = 0;
};
Stats stats(std::vector<double> v);

// The Markdown table `make bench` writes: one row per figure, with its same-run baseline.
struct Report {
  std::vector<std::string> rows;
  void row(const std::string& what, const std::string& measured, const std::string& baseline,
           const std::string& ratio, const std::string& target) {
    rows.push_back(
        fmt::format("| {} | {} | {} | {} | {} |", what, measured, baseline, ratio, target));
  }
};

// The niceness of the event loop of a wardend the benchmark starts as it is (as root, at nice 0):
// the loop runs ten levels ahead of wardend's other threads (daemon/main.cc). The baseline servers
// it is compared with run there too.
constexpr int kLoopNice = -10;

// The baseline for request latency: a Unix-socket server that echoes each line back, in a thread
// of this process, answering the same bytes a heartbeat exchange moves. One connection. `nice`:
// the thread's niceness, that of the wardend loop it is compared with (a negative one needs
// root).
class EchoServer {
 public:
  explicit EchoServer(const std::string& path, int nice = kLoopNice);
  ~EchoServer();

 private:
  std::string path_;
  UniqueFd listen_;
  std::thread thread_;
};

// A process's CPU time so far (user + system), in seconds.
double cpu_seconds(pid_t pid);

// The baseline for throughput: a single-threaded epoll server, as wardend's event loop is one
// thread, answering each request line on any of its connections with `reply` (a line of the size
// wardend answers with). What a server on one thread costs per request at the least: a read and a
// write per request, the wakeups shared.
class EpollLineServer {
 public:
  EpollLineServer(const std::string& path, std::string reply, int nice = kLoopNice);
  ~EpollLineServer();
  // The CPU time its thread has used so far, seconds.
  double cpu_seconds() const;

 private:
  void serve();
  std::string path_;
  std::string reply_;
  UniqueFd listen_;
  UniqueFd epoll_;
  UniqueFd stop_;
  std::thread thread_;
};

UniqueFd connect_to(const std::string& path);
// Round trips of `request` (one line) against a line-answering server, each timed in µs; each
// begins `every` after the one before began (zero: back to back).
std::vector<double> round_trips(
    int fd, const std::string& request, int count,
    const std::function<bool()>& keep_going = [] { return true; },
    std::chrono::microseconds every = {});
std::string heartbeat_line(JobId job);
// A process's resident set (VmRSS), KiB.
using testing::rss_kib;
// "1.23×"
std::string ratio(double measured, double baseline);
// Idle processes that belong to no job, as on a GPU node running thousands: each waits forever.
std::vector<pid_t> crowd(int n);
// Milliseconds from SIGKILL of `main` until wardend's event stream says `job` is cleaned. A
// stream, not polling: asking `status` every fraction of a millisecond would cost wardend's one
// thread more than some of the cleanup being timed.
double kill_until_cleaned(const std::string& socket, JobId job, pid_t main);

// The floors' kill: SIGKILL through each pidfd (opened beforehand, as wardend holds them from
// registration on), then a wait until every one says its process exited.
void kill_and_wait(const std::vector<UniqueFd>& pidfds);

}  // namespace warden::bench
