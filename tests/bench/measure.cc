#include "tests/bench/measure.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <signal.h>

#include <algorithm>
#include <cstdio>
#include <atomic>
#include <fstream>
#include <stdexcept>
#include <thread>

#include "tests/support/processes.h"
#include "warden/client.h"

namespace warden::bench {

std::string ratio(double measured, double baseline) {
  return fmt::format("{:.2f}×", measured / baseline);
}

std::vector<pid_t> crowd(int n) {
  std::vector<pid_t> pids;
  for (int i = 0; i < n; ++i) pids.push_back(testing::spawn(testing::Behaviour::sleep));
  return pids;
}

double kill_until_cleaned(const std::string& socket, JobId job, pid_t main) {
  std::atomic<bool> following = false;
  Clock::time_point cleaned_at;
  std::thread follower([&] {
    Client events(socket);
    events.follow_events({.job = job, .follow = true}, [&](const Event& event) {
      following = true;  // the history's first event: the subscription is in place
      if (event.state != JobState::cleaned) return true;
      cleaned_at = Clock::now();
      return false;
    });
  });
  while (!following) std::this_thread::sleep_for(std::chrono::microseconds(100));
  auto start = Clock::now();
  ::kill(main, SIGKILL);
  follower.join();
  return ms(cleaned_at - start);
}

double us(Clock::duration d) { return std::chrono::duration<double, std::micro>(d).count(); }
double ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

Stats stats(std::vector<double> v) {
  if (v.empty()) return {};
  std::sort(v.begin(), v.end());
  auto at = [&](double q) {
    return v[std::min(v.size() - 1, static_cast<std::size_t>(q * v.size()))];
  };
  return {.p50 = at(0.50), .p99 = at(0.99), .max = v.back(), .n = v.size()};
}

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
                                const std::function<bool()>& keep_going) {
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

EchoServer::EchoServer(const std::string& path) : path_(path) {
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

EchoServer::~EchoServer() {
  thread_.join();
  ::unlink(path_.c_str());
}

std::string heartbeat_line(JobId job) {
  return json{{"id", 1}, {"op", "heartbeat"}, {"job", job}}.dump() + "\n";
}

}  // namespace warden::bench
