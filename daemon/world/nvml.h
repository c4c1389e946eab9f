// NVIDIA's management library (NVML), loaded at run time with dlopen: wardend has no build
// dependency on it and loses nothing but memory figures where it is absent.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace warden {

class Nvml {
 public:
  struct Process {
    pid_t pid = 0;  // in wardend's PID namespace (NVML reports the caller's numbering)
    std::optional<std::uint64_t> memory_bytes;  // nullopt where the driver does not say
  };
  struct Device {
    unsigned minor = 0;  // of its device node: /dev/nvidia<minor>
    std::string uuid;
    std::uint64_t memory_total = 0;
    std::uint64_t memory_used = 0;
    std::vector<Process> processes;  // compute and graphics contexts, one entry per process
  };

  // `library`: what to dlopen ("libnvidia-ml.so.1"); empty: NVML is not used. Nothing is loaded
  // until the first devices().
  explicit Nvml(std::string library);
  Nvml(const Nvml&) = delete;
  Nvml& operator=(const Nvml&) = delete;
  ~Nvml();

  // Every GPU NVML knows, read now; nullopt where NVML cannot be used, and note() says why.
  // Thread-safe.
  std::optional<std::vector<Device>> devices();
  // Why there are no memory figures ("" while NVML works).
  std::string note();

 private:
  struct Api;
  // Loads and initialises the library once; false (note_ set) where it cannot.
  bool load();

  const std::string library_;
  std::mutex mutex_;
  bool tried_ = false;
  void* handle_ = nullptr;
  Api* api_ = nullptr;
  std::string note_;
};

}  // namespace warden
