#include "daemon/diagnostics.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "daemon/process.h"

namespace warden {
namespace {

constexpr std::size_t kMaxStackBytes = 8 * 1024;

// Reads a small /proc file; on failure returns nullopt and leaves errno set.
std::optional<std::string> read_proc(pid_t pid, const char* name) {
  std::string path = "/proc/" + std::to_string(pid) + "/" + name;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  std::string out;
  char buf[4096];
  ssize_t n = 0;
  while (out.size() < kMaxStackBytes && (n = ::read(fd, buf, sizeof(buf))) > 0) out.append(buf, n);
  int err = errno;
  ::close(fd);
  if (n < 0) {
    errno = err;
    return std::nullopt;
  }
  return out;
}

}  // namespace

ProcessSnapshot snapshot_process(pid_t pid, const std::string& role) {
  ProcessSnapshot s{.pid = pid, .role = role};
  auto stat = read_proc_stat(pid);
  if (!stat) {
    s.detail = "process is gone";
    return s;
  }
  s.state = stat->state;
  if (auto wchan = read_proc(pid, "wchan"); wchan && *wchan != "0") s.wchan = *wchan;
  if (auto stack = read_proc(pid, "stack")) {
    s.stack = *stack;
  } else {
    s.detail = std::string("kernel stack unreadable: ") + std::strerror(errno);
  }
  return s;
}

}  // namespace warden
