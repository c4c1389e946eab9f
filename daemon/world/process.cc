#include "world/process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <system_error>

#include "warden/errors.h"

namespace warden {
std::optional<std::string> read_proc_file(pid_t pid, const char* name, std::size_t limit) {
  std::string path = "/proc/" + std::to_string(pid) + "/" + name;
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return std::nullopt;
  std::string out;
  char buf[4096];
  ssize_t n = 0;
  while (out.size() < limit && (n = ::read(fd.get(), buf, sizeof(buf))) > 0) out.append(buf, n);
  if (n < 0) return std::nullopt;
  return out;
}

std::optional<ProcStat> parse_proc_stat(const std::string& text) {
  auto close = text.rfind(')');
  if (close == std::string::npos || close + 2 >= text.size()) return std::nullopt;
  std::istringstream in(text.substr(close + 2));
  // Fields after the command name start with field 3 (state); start time is field 22.
  ProcStat st;
  std::string skip;
  if (!(in >> st.state >> st.ppid >> st.pgrp >> st.session)) return std::nullopt;
  // Fields 7 (tty) and 8 (tpgid), then 9: flags.
  if (!(in >> skip >> skip >> st.flags)) return std::nullopt;
  for (int field = 10; field < 22; ++field) {
    if (!(in >> skip)) return std::nullopt;
  }
  if (!(in >> st.start_time)) return std::nullopt;
  for (int field = 23; field < 48; ++field) {
    if (!(in >> skip)) return st;
  }
  in >> st.env_start;
  return st;
}

std::optional<ProcStat> read_proc_stat(pid_t pid) {
  auto text = read_proc_file(pid, "stat");
  if (!text) return std::nullopt;
  return parse_proc_stat(*text);
}

std::string read_command_line(pid_t pid) {
  constexpr std::size_t kMax = 256;
  std::string line = read_proc_file(pid, "cmdline", kMax).value_or("");
  if (line.size() > kMax) line.resize(kMax);
  while (!line.empty() && line.back() == '\0') line.pop_back();
  for (char& c : line) {
    if (c == '\0') c = ' ';
  }
  return line;
}

bool any_ancestor(pid_t pid, const std::function<bool(pid_t, std::uint64_t)>& is_it) {
  constexpr int kMaxAncestry = 64;
  for (int depth = 0; depth < kMaxAncestry && pid > 1; ++depth) {
    auto stat = read_proc_stat(pid);
    if (!stat) return false;
    if (is_it(pid, stat->start_time)) return true;
    pid = stat->ppid;
  }
  return false;
}

std::optional<uid_t> read_proc_real_uid(pid_t pid) {
  auto text = read_proc_file(pid, "status");
  if (!text) return std::nullopt;
  std::istringstream in(*text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("Uid:", 0) == 0) {
      std::istringstream fields(line.substr(4));
      uid_t real = 0;
      if (fields >> real) return real;
      return std::nullopt;
    }
  }
  return std::nullopt;
}

ProcessHandle open_process(pid_t pid) {
  int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (fd < 0) {
    int err = errno;
    if (err == ESRCH) {
      throw Error(ErrorCode::no_such_process, "no process with pid " + std::to_string(pid));
    }
    if (err == EMFILE || err == ENFILE) {
      throw Error(ErrorCode::limit_exceeded,
                  "wardend has no file descriptor left to track process " + std::to_string(pid) +
                      " (each tracked process holds one); the operator must raise its "
                      "RLIMIT_NOFILE (LimitNOFILE= in its unit)");
    }
    throw Error(ErrorCode::internal,
                "pidfd_open " + std::to_string(pid) + ": " + std::strerror(err));
  }
  return identify(pid, UniqueFd(fd));
}

std::optional<ProcessHandle> reopen(const ProcessIdentity& identity) {
  try {
    ProcessHandle handle = open_process(identity.pid);
    if (handle.identity == identity) return handle;
  } catch (const Error&) {
  }
  return std::nullopt;
}

pid_t pidfd_pid(int fd) {
  std::ifstream in("/proc/self/fdinfo/" + std::to_string(fd));
  std::optional<long> pid;
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("Pid:", 0) == 0) pid = std::strtol(line.c_str() + 4, nullptr, 10);
  }
  if (!pid) {
    throw Error(ErrorCode::bad_request, "the descriptor passed with the request is not a pidfd");
  }
  if (*pid <= 0) {
    throw Error(ErrorCode::no_such_process, "the pidfd passed is of a process that has exited");
  }
  return static_cast<pid_t>(*pid);
}

ProcessHandle identify(pid_t pid, UniqueFd pidfd) {
  int fd = pidfd.get();
  ProcessHandle handle{.identity = {.pid = pid}, .pidfd = std::move(pidfd)};
  constexpr long kPidfsMagic = 0x50494446;  // "PIDF"
  struct statfs fs {};
  struct stat st {};
  if (::fstatfs(fd, &fs) == 0 && fs.f_type == kPidfsMagic && ::fstat(fd, &st) == 0) {
    handle.identity.pidfs_inode = st.st_ino;
  }
  auto stat = read_proc_stat(pid);
  auto uid = read_proc_real_uid(pid);
  // Only if the pidfd's process is still alive now do the /proc reads above describe it.
  if (!stat || !uid || pidfd_exited(fd) || stat->state == 'Z') {
    throw Error(ErrorCode::no_such_process, "process " + std::to_string(pid) + " has exited");
  }
  handle.identity.start_time = stat->start_time;
  handle.kernel_thread = is_kernel_thread(*stat);
  handle.identity.uid = *uid;
  return handle;
}

int pidfd_signal(int pidfd, int sig) {
  if (::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0) == 0) return 0;
  return errno;
}

bool pidfd_exited(int pidfd) {
  pollfd p{.fd = pidfd, .events = POLLIN, .revents = 0};
  return ::poll(&p, 1, 0) > 0 && (p.revents & (POLLIN | POLLHUP)) != 0;
}

UniqueFd dup_fd(int fd) {
  int copy = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (copy < 0) throw std::system_error(errno, std::generic_category(), "dup pidfd");
  return UniqueFd(copy);
}

}  // namespace warden
