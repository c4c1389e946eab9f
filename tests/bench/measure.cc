#include "tests/bench/measure.h"

#include <poll.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <pthread.h>
#include <signal.h>
#include <time.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <atomic>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "tests/support/processes.h"
#include "warden/client.h"

namespace warden::bench {

std::string ratio(double measured, double baseline) {
  return fmt::format("{:.2f}×", measured / baseline);
}

double cpu_seconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::istringstream fields(text.substr(text.rfind(')') + 2));
  std::string skip;
  for (int i = 3; i < 14; ++i) fields >> skip;
  long utime = 0, stime = 0;
  fields >> utime >> stime;
  return static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
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

void kill_and_wait(const std::vector<UniqueFd>& pidfds) {
  for (const auto& fd : pidfds) ::syscall(SYS_pidfd_send_signal, fd.get(), SIGKILL, nullptr, 0);
  for (const auto& fd : pidfds) {
    pollfd p{.fd = fd.get(), .events = POLLIN, .revents = 0};
    ::poll(&p, 1, -1);
  }
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
                                const std::function<bool()>& keep_going,
                                std::chrono::microseconds every) {
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
    if (every > std::chrono::microseconds::zero()) std::this_thread::sleep_until(start + every);
  }
  return out;
}

namespace {

// Puts the calling thread at `nice`, as a baseline server's.
void run_at(int nice, const char* server) {
  if (nice != 0 && ::setpriority(PRIO_PROCESS, ::gettid(), nice) != 0) {
    std::fprintf(stderr, "%s: setpriority %d: %s\n", server, nice, std::strerror(errno));
  }
}

}  // namespace

EchoServer::EchoServer(const std::string& path, int nice) : path_(path) {
  listen_ = UniqueFd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{.sun_family = AF_UNIX};
  std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path.c_str());
  if (::bind(listen_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::listen(listen_.get(), 16) != 0) {
    throw std::runtime_error("echo server: bind " + path);
  }
  thread_ = std::thread([this, nice] {
    run_at(nice, "echo server");
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

EpollLineServer::EpollLineServer(const std::string& path, std::string reply, int nice)
    : path_(path), reply_(std::move(reply)) {
  listen_ = UniqueFd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  sockaddr_un addr{.sun_family = AF_UNIX};
  std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path.c_str());
  if (::bind(listen_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::listen(listen_.get(), 256) != 0) {
    throw std::runtime_error("epoll server: bind " + path);
  }
  epoll_ = UniqueFd(::epoll_create1(EPOLL_CLOEXEC));
  stop_ = UniqueFd(::eventfd(0, EFD_CLOEXEC));
  for (int fd : {listen_.get(), stop_.get()}) {
    epoll_event ev{.events = EPOLLIN, .data = {.fd = fd}};
    ::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev);
  }
  thread_ = std::thread([this, nice] {
    run_at(nice, "epoll server");
    serve();
  });
}

void EpollLineServer::serve() {
  std::vector<UniqueFd> connections;
  epoll_event events[64];
  char buf[4096];
  std::string out;
  for (;;) {
    int n = ::epoll_wait(epoll_.get(), events, 64, -1);
    for (int i = 0; i < n; ++i) {
      int fd = events[i].data.fd;
      if (fd == stop_.get()) return;
      if (fd == listen_.get()) {
        UniqueFd conn(::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
        if (!conn) continue;
        epoll_event ev{.events = EPOLLIN, .data = {.fd = conn.get()}};
        ::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, conn.get(), &ev);
        connections.push_back(std::move(conn));
        continue;
      }
      ssize_t got = ::read(fd, buf, sizeof(buf));
      if (got <= 0) {
        ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr);
        continue;  // closed with the server
      }
      out.clear();
      for (ssize_t b = 0; b < got; ++b) {
        if (buf[b] == '\n') out += reply_;
      }
      if (!out.empty() && ::write(fd, out.data(), out.size()) < 0) {
        ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr);
      }
    }
  }
}

double EpollLineServer::cpu_seconds() const {
  clockid_t clock;
  timespec t{};
  if (::pthread_getcpuclockid(const_cast<std::thread&>(thread_).native_handle(), &clock) != 0 ||
      ::clock_gettime(clock, &t) != 0) {
    return 0;
  }
  return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_nsec) / 1e9;
}

EpollLineServer::~EpollLineServer() {
  std::uint64_t one = 1;
  if (::write(stop_.get(), &one, sizeof(one)) != sizeof(one)) std::terminate();
  thread_.join();
  ::unlink(path_.c_str());
}

std::string heartbeat_line(JobId job) {
  return json{{"id", 1}, {"op", "heartbeat"}, {"job", job}}.dump() + "\n";
}

}  // namespace warden::bench
