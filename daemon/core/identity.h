// Who a process is, as the supervisor core records it: a plain value (reading it from /proc, and
// holding the process by a pidfd, are process.h's business).
#pragma once

#include <sys/types.h>

#include <cstdint>

namespace warden {

// A process is its pid plus its start time (clock ticks after boot, /proc/PID/stat field 22): a pid
// that was recycled has a different start time, unless it was recycled within the same tick (a PID
// namespace can make that happen at will). On Linux 6.9+ the pidfd's inode number in pidfs is
// unique for the boot and settles even that; 0 where the kernel has no pidfs.
struct ProcessIdentity {
  pid_t pid = 0;
  std::uint64_t start_time = 0;
  uid_t uid = 0;  // real uid, from /proc/PID/status
  std::uint64_t pidfs_inode = 0;
  bool operator==(const ProcessIdentity&) const = default;
};

}  // namespace warden
