#include "tests/support/processes.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <stdexcept>
#include <string>

#include "world/process.h"

namespace warden::testing {
namespace {

// A spawned process writes nowhere the test runner reads. One left alive by a test that crashed
// would hold ctest's pipe open until the test's timeout: the crash would read as a hang, minutes
// later, with its output lost.
void leave_the_runners_output() {
  int null = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
  if (null < 0) return;
  ::dup2(null, STDOUT_FILENO);
  ::dup2(null, STDERR_FILENO);
  ::close(null);
}

// A segment in use (written, so not sparse), open 1,000 times.
void hold_segment() {
  constexpr std::size_t kBytes = 64 * 1024;
  constexpr int kDescriptors = 1000;
  std::string path = "/dev/shm/warden-held-" + std::to_string(::getpid());
  int fd = ::open(path.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  if (fd < 0 || ::ftruncate(fd, kBytes) != 0) ::_exit(1);
  std::string bytes(kBytes, '\1');
  if (::pwrite(fd, bytes.data(), bytes.size(), 0) != static_cast<ssize_t>(bytes.size())) ::_exit(1);
  for (int i = 1; i < kDescriptors; ++i) {
    if (::dup(fd) < 0) ::_exit(1);
  }
}

// Sets up the behaviour, then tells `ready` (if any) so that the parent never signals a child
// that has not yet started ignoring SIGTERM.
[[noreturn]] void behave(Behaviour behaviour, int ready = -1) {
  if (behaviour == Behaviour::ignore_term) ::signal(SIGTERM, SIG_IGN);
  if (behaviour == Behaviour::hold_segment) hold_segment();
  if (ready >= 0) {
    char c = 1;
    if (::write(ready, &c, 1) != 1) ::_exit(1);
    ::close(ready);
  }
  if (behaviour == Behaviour::exit_now) ::_exit(0);
  for (;;) ::pause();
}

// Forks a child that runs `body(ready_fd)`; returns once the child said it is ready.
template <class Body>
pid_t fork_ready(Body body) {
  int fds[2];
  if (::pipe(fds) != 0) throw std::runtime_error("pipe failed");
  pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    ::close(fds[0]);
    leave_the_runners_output();
    body(fds[1]);
  }
  ::close(fds[1]);
  char c = 0;
  ssize_t n = ::read(fds[0], &c, 1);
  ::close(fds[0]);
  if (n != 1) throw std::runtime_error("child failed to start");
  return pid;
}

}  // namespace

pid_t spawn(Behaviour behaviour, std::optional<uid_t> uid) {
  return fork_ready([&](int ready) {
    if (uid && (::setgid(*uid) != 0 || ::setuid(*uid) != 0)) ::_exit(126);
    behave(behaviour, ready);
  });
}

void exec_argv(const std::vector<std::string>& argv) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  ::execv(args[0], args.data());
  ::_exit(127);
}

pid_t spawn_exec(const std::vector<std::string>& argv) {
  pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    leave_the_runners_output();
    exec_argv(argv);
  }
  return pid;
}

Escape spawn_escape() {
  int fds[2];
  if (::pipe(fds) != 0) throw std::runtime_error("pipe failed");
  pid_t worker = ::fork();
  if (worker == 0) {
    ::close(fds[0]);
    leave_the_runners_output();
    pid_t middle = ::fork();
    if (middle == 0) {
      ::setsid();
      pid_t escapee = ::fork();
      if (escapee == 0) {
        ::close(fds[1]);
        ::execl("/bin/sleep", "sleep", "300", static_cast<char*>(nullptr));
        ::_exit(127);
      }
      if (::write(fds[1], &escapee, sizeof(escapee)) != sizeof(escapee)) ::_exit(1);
      ::_exit(0);
    }
    ::waitpid(middle, nullptr, 0);
    // Only now is the escapee cut off from the worker: its parent and group leader are gone.
    behave(Behaviour::sleep, fds[1]);
  }
  ::close(fds[1]);
  Escape e{.worker = worker};
  char ready = 0;
  if (::read(fds[0], &e.escapee, sizeof(e.escapee)) != sizeof(e.escapee) ||
      ::read(fds[0], &ready, 1) != 1) {
    throw std::runtime_error("escape spawn failed");
  }
  ::close(fds[0]);
  return e;
}

ProcessTree spawn_tree(const std::vector<Behaviour>& workers) {
  ::prctl(PR_SET_CHILD_SUBREAPER, 1);
  int fds[2];
  if (::pipe(fds) != 0) throw std::runtime_error("pipe failed");
  pid_t main = ::fork();
  if (main < 0) throw std::runtime_error("fork failed");
  if (main == 0) {
    ::close(fds[0]);
    leave_the_runners_output();
    for (auto b : workers) {
      pid_t w = fork_ready([&](int ready) { behave(b, ready); });
      if (::write(fds[1], &w, sizeof(w)) != sizeof(w)) ::_exit(1);
    }
    ::close(fds[1]);
    behave(Behaviour::sleep);
  }
  ::close(fds[1]);
  ProcessTree tree{.main = main};
  for (std::size_t i = 0; i < workers.size(); ++i) {
    pid_t w = 0;
    if (::read(fds[0], &w, sizeof(w)) != sizeof(w)) throw std::runtime_error("tree spawn failed");
    tree.workers.push_back(w);
  }
  ::close(fds[0]);
  return tree;
}

UniqueFd open_pidfd(pid_t pid) {
  int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (fd < 0) throw std::runtime_error("pidfd_open " + std::to_string(pid) + " failed");
  return UniqueFd(fd);
}

bool wait_exited(const std::vector<int>& pidfds, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  std::vector<int> pending = pidfds;
  while (!pending.empty()) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    std::vector<pollfd> polls;
    for (int fd : pending) polls.push_back({.fd = fd, .events = POLLIN, .revents = 0});
    int n = ::poll(polls.data(), polls.size(), static_cast<int>(left.count()));
    if (n < 0 && errno != EINTR) return false;
    pending.clear();
    for (const auto& p : polls) {
      if ((p.revents & POLLIN) == 0) pending.push_back(p.fd);
    }
  }
  return true;
}

bool wait_exited(pid_t pid, std::chrono::milliseconds timeout) {
  if (is_gone(pid)) return true;
  UniqueFd fd = open_pidfd(pid);
  return wait_exited(std::vector<int>{fd.get()}, timeout);
}

bool is_gone(pid_t pid) {
  auto stat = read_proc_stat(pid);
  return !stat || stat->state == 'Z' || stat->state == 'X';
}

void kill_and_reap(const std::vector<pid_t>& pids) {
  for (pid_t p : pids) {
    if (p > 0) ::kill(p, SIGKILL);
  }
  // Blocking waits are safe: each pid was just SIGKILLed. ECHILD (not ours) is fine.
  for (pid_t p : pids) {
    if (p > 0) ::waitpid(p, nullptr, 0);
  }
}

std::size_t rss_kib(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoul(line.substr(6));
  }
  return 0;
}

}  // namespace warden::testing
