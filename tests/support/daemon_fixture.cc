#include "tests/support/daemon_fixture.h"

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>
#include <thread>

#include <boost/asio/io_context.hpp>
#include <gtest/gtest.h>

#include "world/cgroup.h"
#include "tests/support/processes.h"
#include "warden/client.h"

namespace warden::testing {
namespace {

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

Daemon::Daemon(std::vector<std::string> extra_args, std::vector<std::string> launcher) {
  char tmpl[] = "/tmp/warden-test-XXXXXX";
  dir_ = ::mkdtemp(tmpl);
  socket_ = dir_ + "/warden.sock";
  argv_ = {WARDEND_PATH, "--socket", socket_};
  if (std::find(extra_args.begin(), extra_args.end(), "--state-dir") == extra_args.end()) {
    extra_args.insert(extra_args.end(), {"--state-dir", dir_ + "/state"});
  }
  // Tests want every decision in the log they print on failure, unless they say otherwise.
  if (std::find(extra_args.begin(), extra_args.end(), "--log-level") == extra_args.end()) {
    extra_args.insert(extra_args.end(), {"--log-level", "debug"});
  }
  argv_.insert(argv_.end(), extra_args.begin(), extra_args.end());
  state_dir_ = *std::next(std::find(extra_args.begin(), extra_args.end(), "--state-dir"));
  argv_.insert(argv_.begin(), launcher.begin(), launcher.end());
  start(false);
}

void Daemon::crash() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  ::waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

void Daemon::restart() {
  crash();
  start(true);
}

void Daemon::start(bool append_log) {
  std::string log = dir_ + "/wardend.log";
  const pid_t test = ::getpid();
  pid_ = ::fork();
  if (pid_ == 0) {
    // A test that crashes takes its wardend with it, rather than leave it serving for good.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != test) ::_exit(1);
    int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | (append_log ? O_APPEND : O_TRUNC), 0644);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    ::unsetenv("WARDEN_JOB");  // a test's job cookie must not mark the daemon itself
    ::unsetenv("WARDEN_SOCKET");
    exec_argv(argv_);
  }
  // Generous: a loaded CI machine may take a while to start the process.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  for (;;) {
    try {
      Client probe(socket_);
      return;
    } catch (const Error&) {
      if (::waitpid(pid_, nullptr, WNOHANG) == pid_) {
        pid_ = -1;
        throw std::runtime_error("wardend exited at start:\n" + this->log());
      }
      if (std::chrono::steady_clock::now() > deadline) {
        throw std::runtime_error("wardend did not answer within 10 s:\n" + this->log());
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
}

namespace {

// Where each thread of a process waits, for a report: its state, wait channel and kernel stack.
std::string where_threads_wait(pid_t pid) {
  std::ostringstream out;
  std::error_code ec;
  const std::string task = "/proc/" + std::to_string(pid) + "/task";
  for (const auto& entry : std::filesystem::directory_iterator(task, ec)) {
    auto read = [&](const char* file) {
      std::ifstream in(entry.path() / file);
      return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    };
    out << "thread " << entry.path().filename().string() << " (" << read("comm").substr(0, 15)
        << "): " << read("stat").substr(0, 80) << "\n  wchan " << read("wchan") << "\n"
        << read("stack");
  }
  return out.str();
}

}  // namespace

Daemon::~Daemon() {
  if (pid_ > 0) {
    // wardend stops at SIGTERM at once; one that does not fails the test that ran it, saying where
    // it waits, rather than hanging it until ctest's timeout says nothing.
    ::kill(pid_, SIGTERM);
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    int status = 0;
    pid_t reaped;
    while ((reaped = ::waitpid(pid_, &status, WNOHANG)) == 0) {
      if (std::chrono::steady_clock::now() > until) {
        ADD_FAILURE() << "wardend (pid " << pid_ << ") did not stop within 20 s of SIGTERM:\n"
                      << where_threads_wait(pid_) << "---- wardend log ----\n" << log();
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, nullptr, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    // SIGTERM ends wardend with status 0; a test that killed it (SIGKILL) meant to. Anything else
    // is a crash, however well the test went until then.
    const bool killed = WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
    if (reaped == pid_ && !killed && !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
      ADD_FAILURE() << "wardend (pid " << pid_ << ") did not end cleanly at SIGTERM: "
                    << (WIFSIGNALED(status) ? "signal " + std::to_string(WTERMSIG(status))
                                            : "status " + std::to_string(WEXITSTATUS(status)))
                    << "\n---- wardend log ----\n" << log();
    }
  }
  release_cgroups(state_dir_);
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

void release_cgroups(const std::string& state_dir) {
  if (!std::filesystem::exists(state_dir + "/instance")) return;
  boost::asio::io_context io;
  std::string why;
  auto cgroups = KernelCgroups::open(io.get_executor(), why);
  if (!cgroups) return;
  for (const auto& cgroup : cgroups->find(cgroup_prefix(state_dir))) {
    for (pid_t pid : cgroups->members(cgroup)) {
      try {
        cgroups->move(pid, parent_cgroup(cgroup));
      } catch (const std::system_error&) {
        // exited meanwhile
      }
    }
    cgroups->remove(cgroup);
  }
}

std::string Daemon::log() const { return slurp(dir_ + "/wardend.log"); }

namespace {

CommandResult run(const std::vector<std::string>& argv, const std::vector<std::string>& env,
                  std::optional<uid_t> uid) {
  char tmpl[] = "/tmp/warden-cmd-XXXXXX";
  std::string dir = ::mkdtemp(tmpl);
  std::string out = dir + "/out", err = dir + "/err";
  pid_t pid = ::fork();
  if (pid == 0) {
    int o = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int e = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(o, 1);
    ::dup2(e, 2);
    for (const auto& kv : env) ::putenv(const_cast<char*>(kv.c_str()));
    if (uid && (::setgroups(0, nullptr) != 0 || ::setgid(*uid) != 0 || ::setuid(*uid) != 0)) {
      ::_exit(126);
    }
    exec_argv(argv);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  CommandResult r{.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status),
                  .out = slurp(out),
                  .err = slurp(err)};
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return r;
}

}  // namespace

CommandResult run_command(const std::vector<std::string>& argv,
                          const std::vector<std::string>& env) {
  return run(argv, env, std::nullopt);
}

CommandResult run_command_as(uid_t uid, const std::vector<std::string>& argv) {
  return run(argv, {}, uid);
}

uid_t test_user(const std::string& name) {
  if (passwd* pw = ::getpwnam(name.c_str())) return pw->pw_uid;
  auto r = run(
      {"/usr/sbin/useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name},
      {}, std::nullopt);
  passwd* pw = ::getpwnam(name.c_str());
  if (pw == nullptr) throw std::runtime_error("cannot create test user " + name + ": " + r.err);
  return pw->pw_uid;
}

}  // namespace warden::testing
