#include "world/command_runner.h"

#include <fcntl.h>
#include <grp.h>
#include <linux/close_range.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/connect_pipe.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/readable_pipe.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/writable_pipe.hpp>
#include <boost/process/v2/environment.hpp>
#include <boost/process/v2/process.hpp>
#include <boost/process/v2/stdio.hpp>
#include <fmt/format.h>
// Boost 1.81's header-only mode forgets the out-of-line process_environment members; this is the
// only translation unit that includes Boost.Process, so including them here is safe.
#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <memory>
#include <vector>

#include <boost/process/v2/impl/environment.ipp>
#include <boost/process/v2/start_dir.hpp>

#include "world/files.h"
#include "core/supervisor.h"
#include "proto/unique_fd.h"

namespace warden {
namespace asio = boost::asio;
namespace bp = boost::process::v2;
using namespace asio::experimental::awaitable_operators;

namespace {

constexpr const char* kSearchPath = "/usr/local/bin:/usr/bin:/bin";

struct Account {
  std::string name;
  std::string home;
  std::vector<gid_t> groups;
};

Account account_of(RunAs user) {
  Account a{.name = std::to_string(user.uid), .home = "/"};
  passwd pw{};
  passwd* found = nullptr;
  std::vector<char> buf(16384);
  if (::getpwuid_r(user.uid, &pw, buf.data(), buf.size(), &found) == 0 && found != nullptr) {
    a.name = pw.pw_name;
    a.home = pw.pw_dir;
    int n = 64;
    a.groups.resize(n);
    if (::getgrouplist(pw.pw_name, user.gid, a.groups.data(), &n) < 0) {
      a.groups.resize(n);
      ::getgrouplist(pw.pw_name, user.gid, a.groups.data(), &n);
    }
    a.groups.resize(n);
  }
  if (a.groups.empty()) a.groups.push_back(user.gid);
  return a;
}

// Whether `path` names a directory (or an executable file) as the command will see it: beneath
// `place`'s root, its symlinks resolved there.
bool exists_at(const Place& place, const std::string& path, bool directory) {
  if (place.root < 0) {
    return directory ? std::filesystem::is_directory(path) : ::access(path.c_str(), X_OK) == 0;
  }
  UniqueFd fd = open_in_root(place.root, path, O_PATH | (directory ? O_DIRECTORY : 0));
  // Without openat2 (a seccomp filter that does not know it) it cannot be looked at from here:
  // the command's own chdir() and exec say whether it is there.
  if (!fd) return errno == ENOSYS;
  struct stat st {};
  return ::fstat(fd.get(), &st) == 0 &&
         (directory ? S_ISDIR(st.st_mode) : S_ISREG(st.st_mode) && (st.st_mode & 0111) != 0);
}

std::string find_program(const std::string& name, const Place& place) {
  if (name.find('/') != std::string::npos) return name;
  std::string dirs = kSearchPath;
  std::size_t pos = 0;
  while (pos <= dirs.size()) {
    std::size_t end = dirs.find(':', pos);
    if (end == std::string::npos) end = dirs.size();
    std::string candidate = dirs.substr(pos, end - pos) + "/" + name;
    if (exists_at(place, candidate, false)) return candidate;
    pos = end + 1;
  }
  return {};
}

// In the child: takes the job's root and joins its PID namespace. With a PID namespace it forks
// once more; the process outside (the one the launcher knows) waits and passes the command's
// status on, so a timeout's SIGKILL of the process group reaches both.
int enter(const Place& place) {
  if (place.root >= 0 && (::fchdir(place.root) != 0 || ::chroot(".") != 0)) return errno;
  if (place.pid_ns < 0) return 0;
  if (::setns(place.pid_ns, CLONE_NEWPID) != 0) return errno;
  pid_t command = ::fork();
  if (command < 0) return errno;
  if (command == 0) return 0;
  // Closing the launcher's exec-error pipe here leaves the command's copy to report its exec.
  ::close_range(3, ~0U, 0);
  int status = 0;
  while (::waitpid(command, &status, 0) < 0 && errno == EINTR) {
  }
  ::_exit(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
}

// In the child: closes every descriptor wardend holds (its listening socket, clients'
// connections, pidfds, the store) but the launcher's own (`keep`: the command's stdio, the
// exec-error pipe; the job's root and namespaces are closed on exec). Boost.Process 1.81 means
// to, but its Linux close_all() closes only above the highest descriptor kept: a hook that
// outlived a crashed wardend held its listening socket, and the next wardend refused to start.
void close_inherited(std::vector<int> keep) {
  std::sort(keep.begin(), keep.end());
  unsigned from = 3;
  for (int fd : keep) {
    if (fd < 3) continue;
    if (static_cast<unsigned>(fd) > from) ::close_range(from, fd - 1, CLOSE_RANGE_CLOEXEC);
    from = static_cast<unsigned>(fd) + 1;
  }
  ::close_range(from, ~0U, CLOSE_RANGE_CLOEXEC);
}

// Runs in the child between fork and exec: its own process group, the job's namespaces, then the
// job's identity.
struct BecomeUser {
  RunAs user;
  std::vector<gid_t> groups;
  bool switch_user;
  Place place;

  bp::error_code on_exec_setup(bp::posix::default_launcher& launcher, const bp::filesystem::path&,
                               const char* const*) const {
    auto fail = [] { return bp::error_code(errno, bp::system_category()); };
    close_inherited(launcher.fd_whitelist);
    if (::setpgid(0, 0) != 0) return fail();
    // wardend's unit runs it ahead of the jobs (Nice=-10); their hooks run at the default
    // priority. (Lowering a priority needs no privilege; where wardend runs at a lower one
    // itself, this fails and the hook keeps that.)
    ::setpriority(PRIO_PROCESS, 0, 0);
    if (int err = enter(place); err != 0) return bp::error_code(err, bp::system_category());
    if (!switch_user) return {};
    if (::setgroups(groups.size(), groups.data()) != 0) return fail();
    if (::setgid(user.gid) != 0) return fail();
    if (::setuid(user.uid) != 0) return fail();
    return {};
  }
};

// Shared with the timer's handler, which may outlive the coroutine's wait.
struct Watchdog {
  explicit Watchdog(const asio::any_io_executor& ex) : timer(ex) {}
  asio::steady_timer timer;
  pid_t group = 0;
  bool fired = false;
};

asio::awaitable<void> read_bounded(asio::readable_pipe& pipe, CommandReport& report) {
  char buf[4096];
  for (;;) {
    auto [ec, n] =
        co_await pipe.async_read_some(asio::buffer(buf), asio::as_tuple(asio::use_awaitable));
    if (ec) co_return;
    std::size_t room = kMaxCommandOutput - std::min(kMaxCommandOutput, report.output.size());
    report.output.append(buf, std::min(room, n));
    if (n > room) report.truncated = true;
  }
}

// The command's whole environment: a fixed PATH and the user's account, then wardend's
// variables, then the command's own.
std::vector<std::string> environment_for(
    const Account& account, const std::vector<std::pair<std::string, std::string>>& extra_env,
    const CommandSpec& spec) {
  std::vector<std::string> env{std::string("PATH=") + kSearchPath, "HOME=" + account.home,
                               "USER=" + account.name, "LOGNAME=" + account.name};
  for (const auto& [k, v] : extra_env) env.push_back(k + "=" + v);
  for (const auto& [k, v] : spec.env) env.push_back(k + "=" + v);
  return env;
}

// How a command that ran ended, from its wait status, or the watchdog's kill at its timeout.
std::pair<Outcome, std::string> judge(int status, bool timed_out, const CommandSpec& spec,
                                      CommandReport& report) {
  if (timed_out) {
    report.signal = SIGKILL;
    return {Outcome::timed_out, fmt::format("killed at its timeout of {:g} s", spec.timeout_s)};
  }
  if (WIFSIGNALED(status)) {
    report.signal = WTERMSIG(status);
    return {Outcome::failed, std::string("killed by ") + ::strsignal(WTERMSIG(status))};
  }
  report.exit_code = WEXITSTATUS(status);
  if (report.exit_code == 0) return {Outcome::succeeded, ""};
  return {Outcome::failed, "exited with status " + std::to_string(*report.exit_code)};
}

}  // namespace

asio::awaitable<CommandReport> run_command(
    const CommandSpec& spec, RunAs user,
    const std::vector<std::pair<std::string, std::string>>& extra_env, Place place) {
  auto ex = co_await asio::this_coro::executor;
  CommandReport report{.argv = spec.argv};
  auto start = std::chrono::steady_clock::now();
  auto finish = [&](Outcome outcome, std::string detail) {
    report.outcome = outcome;
    if (!detail.empty()) report.detail = std::move(detail);
    report.elapsed_ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    return report;
  };

  const bool switch_user = ::geteuid() == 0 && user.uid != 0;
  if (::geteuid() != 0 && user.uid != ::geteuid()) {
    co_return finish(Outcome::failed, "wardend is not root, so it cannot run commands as uid " +
                                          std::to_string(user.uid));
  }
  Account account = account_of(user);
  std::string program = find_program(spec.argv[0], place);
  if (program.empty()) {
    co_return finish(Outcome::failed, spec.argv[0] + ": not found in " + kSearchPath);
  }

  std::vector<std::string> env = environment_for(account, extra_env, spec);
  std::string cwd = !spec.cwd.empty() ? spec.cwd : account.home;
  if (!exists_at(place, cwd, true)) cwd = "/";

  asio::readable_pipe out(ex);
  asio::writable_pipe out_writer(ex);
  asio::connect_pipe(out, out_writer);

  std::vector<std::string> args(spec.argv.begin() + 1, spec.argv.end());
  bp::error_code ec;
  // Initializers run in order in the child: become the user first, so that even changing into
  // the working directory is done with the user's permissions.
  bp::process proc = bp::default_process_launcher()(
      ex, ec, program, args,
      BecomeUser{
          .user = user, .groups = account.groups, .switch_user = switch_user, .place = place},
      bp::process_stdio{nullptr, out_writer, out_writer}, bp::process_environment{env},
      bp::process_start_dir{cwd});
  out_writer.close();
  if (ec) co_return finish(Outcome::failed, "start " + program + ": " + ec.message());

  auto dog = std::make_shared<Watchdog>(ex);
  dog->group = proc.id();
  dog->timer.expires_after(from_seconds(spec.timeout_s));
  dog->timer.async_wait([dog](boost::system::error_code e) {
    if (e) return;
    dog->fired = true;
    ::kill(-dog->group, SIGKILL);
  });

  auto wait_exit = [&]() -> asio::awaitable<void> {
    co_await proc.async_wait(asio::as_tuple(asio::use_awaitable));
    // Nothing the command started may outlive it: end whatever remains in its process group, which
    // also closes the output pipe they may hold.
    ::kill(-dog->group, SIGKILL);
  };
  auto both = read_bounded(out, report) && wait_exit();
  co_await std::move(both);
  dog->timer.cancel();

  auto [outcome, detail] = judge(proc.native_exit_code(), dog->fired, spec, report);
  co_return finish(outcome, std::move(detail));
}

}  // namespace warden
