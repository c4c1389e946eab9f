// Which processes hold a GPU, from the kernel's own record: a process holds a GPU while it has the
// GPU's device node open (/proc/PID/fd), whichever container it opened it in. Where NVIDIA's
// management library is installed, also how much device memory each holds (nvml.h).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "world/nvml.h"
#include "proto/messages.h"

namespace warden {

struct GpuOptions {
  // Device nodes that count as GPUs, as glob(7) patterns: NVIDIA's, and AMD's compute and render
  // nodes. A process holds the GPU whose node (by device number) it has open.
  std::vector<std::string> devices{"/dev/nvidia[0-9]*", "/dev/kfd", "/dev/dri/renderD*"};
  std::string nvml_library = "libnvidia-ml.so.1";  // "": never load NVML
  bool operator==(const GpuOptions&) const = default;
};

struct GpuDevice {
  std::string path;
  dev_t rdev = 0;
  std::string uuid;  // from NVML; "" without it
  std::optional<std::uint64_t> memory_total;
  std::optional<std::uint64_t> memory_used;
};

// One look at the node's GPUs: the devices, and with NVML each process's device memory on each.
struct GpuSnapshot {
  std::vector<GpuDevice> devices;
  // (device index, pid) -> bytes; empty without NVML.
  std::map<std::pair<std::size_t, pid_t>, std::uint64_t> memory;
  std::string note;  // why there are no memory figures ("" with NVML)
  bool has_memory() const { return note.empty(); }
  std::optional<std::uint64_t> memory_of(std::size_t device, pid_t pid) const;
};

// The GPUs a process holds, by index into GpuSnapshot::devices.
using GpuHoldings = std::vector<std::size_t>;

class Gpus {
 public:
  explicit Gpus(GpuOptions options);

  // The devices now (matched anew each time: a driver may load after wardend started), with
  // NVML's figures where it is used. Empty devices: this node has no GPU, and nothing else here
  // needs doing. Thread-safe.
  GpuSnapshot look();
  // Whether any device node of the set exists now: a glob or three, cheap enough for the event
  // loop, so that a node without GPUs pays nothing more.
  bool any() const;
  // Which of the snapshot's devices `pid` has open; empty if none (or it is gone).
  static GpuHoldings held_by(pid_t pid, const GpuSnapshot& snapshot);
  // Every process of the node that holds one of the devices `wanted` (all where empty).
  // Thread-safe. A process found holding none is walked again only when its descriptor table
  // looks different (see FdTable): a node of thousands of processes costs a stat each.
  std::map<pid_t, GpuHoldings> holders(const GpuSnapshot& snapshot,
                                       const std::vector<std::size_t>& wanted = {});

 private:
  // What stat(2) says of /proc/PID/fd: its inode is another for another process behind the pid
  // (and whenever the kernel instantiates it anew), and since Linux 6.2 its size is the number of
  // open descriptors. A process whose table still looks the same still holds no device, except
  // one that closed exactly as many descriptors as it opened meanwhile: a GPU is opened through
  // several nodes at once (nvidiactl, nvidia-uvm, nvidiaN), so that blind spot is narrow.
  struct FdTable {
    ino_t ino = 0;
    off_t count = 0;
    bool operator==(const FdTable&) const = default;
  };

  const std::vector<std::string> patterns_;
  Nvml nvml_;
  std::mutex holds_none_mutex_;
  std::vector<dev_t> holds_none_of_;        // the devices holds_none_ was found for
  std::map<pid_t, FdTable> holds_none_;     // processes that held none of them, as they looked
};

// A cleanup's account of the job's GPUs, taken while its processes are stopped and before any is
// ended: which GPUs each held, with NVML's figures.
struct GpuAccount {
  GpuSnapshot before;
  std::map<pid_t, GpuHoldings> held;  // only the processes that held one
};
GpuAccount account_gpus(Gpus& gpus, const std::vector<pid_t>& pids);
// What `pid` held, for its process report.
std::vector<GpuUse> gpu_uses(const GpuAccount& account, pid_t pid);
// Once the job's processes are gone (but `alive`, which outlived SIGKILL): for each GPU they held,
// the memory released and the processes outside the job that still hold it (their `job` is not
// filled in: the cleanup does not know other jobs).
std::vector<GpuReport> settle_gpus(Gpus& gpus, const GpuAccount& account,
                                   const std::vector<pid_t>& alive);

}  // namespace warden
