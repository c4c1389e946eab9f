#include "world/diagnostics.h"

#include <cerrno>
#include <cstring>

#include "world/process.h"

namespace warden {
namespace {

constexpr std::size_t kMaxStackBytes = 8 * 1024;

}  // namespace

ProcessSnapshot snapshot_process(pid_t pid, const std::string& role) {
  ProcessSnapshot s{.pid = pid, .role = role};
  auto stat = read_proc_stat(pid);
  if (!stat) {
    s.detail = "process is gone";
    return s;
  }
  s.state = stat->state;
  if (auto wchan = read_proc_file(pid, "wchan"); wchan && *wchan != "0") s.wchan = *wchan;
  if (auto stack = read_proc_file(pid, "stack", kMaxStackBytes)) {
    s.stack = *stack;
  } else {
    s.detail = std::string("kernel stack unreadable: ") + std::strerror(errno);
  }
  return s;
}

}  // namespace warden
