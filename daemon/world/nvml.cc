#include "world/nvml.h"

#include <dlfcn.h>

#include <map>
#include <memory>
#include <type_traits>

#include <fmt/format.h>

namespace warden {
namespace {

// The parts of nvml.h that wardend uses, as NVIDIA documents them; the ABI is stable (functions
// that changed got a new versioned name, and the old names keep their old meaning).
using nvmlReturn_t = int;
using nvmlDevice_t = struct nvmlDevice_st*;
constexpr nvmlReturn_t NVML_SUCCESS = 0;
constexpr nvmlReturn_t NVML_ERROR_INSUFFICIENT_SIZE = 7;
constexpr unsigned long long NVML_VALUE_NOT_AVAILABLE = ~0ULL;
constexpr unsigned NVML_DEVICE_UUID_V2_BUFFER_SIZE = 96;

struct nvmlMemory_t {
  unsigned long long total;
  unsigned long long free;
  unsigned long long used;
};
// nvmlProcessInfo_t of the _v2 and _v3 process queries.
struct nvmlProcessInfo_t {
  unsigned int pid;
  unsigned long long usedGpuMemory;
  unsigned int gpuInstanceId;
  unsigned int computeInstanceId;
};
using ProcessQuery = nvmlReturn_t (*)(nvmlDevice_t, unsigned int*, nvmlProcessInfo_t*);

}  // namespace

struct Nvml::Api {
  nvmlReturn_t (*init)();
  nvmlReturn_t (*shutdown)();
  const char* (*error_string)(nvmlReturn_t);
  nvmlReturn_t (*count)(unsigned int*);
  nvmlReturn_t (*handle)(unsigned int, nvmlDevice_t*);
  nvmlReturn_t (*minor)(nvmlDevice_t, unsigned int*);
  nvmlReturn_t (*uuid)(nvmlDevice_t, char*, unsigned int);
  nvmlReturn_t (*memory)(nvmlDevice_t, nvmlMemory_t*);
  ProcessQuery compute = nullptr;
  ProcessQuery graphics = nullptr;

  std::string error(nvmlReturn_t r) const {
    const char* s = error_string != nullptr ? error_string(r) : nullptr;
    return s != nullptr ? s : fmt::format("NVML error {}", r);
  }
};

Nvml::Nvml(std::string library) : library_(std::move(library)) {}

Nvml::~Nvml() {
  if (api_ != nullptr) api_->shutdown();
  delete api_;
  if (handle_ != nullptr) ::dlclose(handle_);
}

bool Nvml::load() {
  if (tried_) return api_ != nullptr;
  tried_ = true;
  if (library_.empty()) {
    note_ = "NVML is turned off (nvml-library = \"\"): no memory figures";
    return false;
  }
  handle_ = ::dlopen(library_.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle_ == nullptr) {
    note_ = fmt::format(
        "NVIDIA's management library is not installed here ({}): no memory "
        "figures; GPU holders are still found by their open device nodes",
        ::dlerror());
    return false;
  }
  auto api = std::make_unique<Api>();
  std::string missing;
  auto bind = [&](auto& fn, const char* name) {
    fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(::dlsym(handle_, name));
    if (fn == nullptr) missing += std::string(missing.empty() ? "" : ", ") + name;
  };
  bind(api->init, "nvmlInit_v2");
  bind(api->shutdown, "nvmlShutdown");
  bind(api->error_string, "nvmlErrorString");
  bind(api->count, "nvmlDeviceGetCount_v2");
  bind(api->handle, "nvmlDeviceGetHandleByIndex_v2");
  bind(api->minor, "nvmlDeviceGetMinorNumber");
  bind(api->uuid, "nvmlDeviceGetUUID");
  bind(api->memory, "nvmlDeviceGetMemoryInfo");
  // The process queries by their newest name this code knows the layout of (r470+ has _v2).
  auto newest = [this](const char* v3, const char* v2) {
    void* fn = ::dlsym(handle_, v3);
    return reinterpret_cast<ProcessQuery>(fn != nullptr ? fn : ::dlsym(handle_, v2));
  };
  api->compute =
      newest("nvmlDeviceGetComputeRunningProcesses_v3", "nvmlDeviceGetComputeRunningProcesses_v2");
  api->graphics = newest("nvmlDeviceGetGraphicsRunningProcesses_v3",
                         "nvmlDeviceGetGraphicsRunningProcesses_v2");
  if (api->compute == nullptr) {
    missing += std::string(missing.empty() ? "" : ", ") + "nvmlDeviceGetComputeRunningProcesses_v2";
  }
  if (!missing.empty()) {
    note_ = fmt::format("{} lacks {} (a driver older than r470?): no memory figures", library_,
                        missing);
    return false;
  }
  if (nvmlReturn_t r = api->init(); r != NVML_SUCCESS) {
    note_ = fmt::format("NVML did not start ({}): no memory figures", api->error(r));
    return false;
  }
  api_ = api.release();
  return true;
}

namespace {

// Adds what one of the process queries reports, summing a process that has several contexts. A
// query that fails leaves the figures out rather than failing the whole look at the GPU.
void add_processes(ProcessQuery query, nvmlDevice_t device,
                   std::map<pid_t, std::optional<std::uint64_t>>& memory) {
  std::vector<nvmlProcessInfo_t> infos(16);
  for (;;) {
    unsigned int count = infos.size();
    nvmlReturn_t r = query(device, &count, infos.data());
    if (r == NVML_ERROR_INSUFFICIENT_SIZE) {
      infos.resize(count + 16);  // more may start meanwhile
      continue;
    }
    if (r != NVML_SUCCESS) return;
    for (unsigned i = 0; i < count; ++i) {
      auto& slot = memory[static_cast<pid_t>(infos[i].pid)];
      if (infos[i].usedGpuMemory != NVML_VALUE_NOT_AVAILABLE) {
        slot = slot.value_or(0) + infos[i].usedGpuMemory;
      }
    }
    return;
  }
}

}  // namespace

std::optional<std::vector<Nvml::Device>> Nvml::devices() {
  std::lock_guard lock(mutex_);
  if (!load()) return std::nullopt;
  unsigned int count = 0;
  if (nvmlReturn_t r = api_->count(&count); r != NVML_SUCCESS) {
    note_ = fmt::format("NVML cannot count the GPUs ({}): no memory figures", api_->error(r));
    return std::nullopt;
  }
  note_.clear();
  std::vector<Device> devices;
  for (unsigned i = 0; i < count; ++i) {
    nvmlDevice_t handle = nullptr;
    Device d;
    // A GPU that fell off the bus answers nothing; the others are still worth reporting.
    if (api_->handle(i, &handle) != NVML_SUCCESS || api_->minor(handle, &d.minor) != NVML_SUCCESS) {
      continue;
    }
    char uuid[NVML_DEVICE_UUID_V2_BUFFER_SIZE] = {};
    if (api_->uuid(handle, uuid, sizeof uuid) == NVML_SUCCESS) d.uuid = uuid;
    nvmlMemory_t memory{};
    if (api_->memory(handle, &memory) == NVML_SUCCESS) {
      d.memory_total = memory.total;
      d.memory_used = memory.used;
    }
    std::map<pid_t, std::optional<std::uint64_t>> by_pid;
    add_processes(api_->compute, handle, by_pid);
    if (api_->graphics != nullptr) add_processes(api_->graphics, handle, by_pid);
    for (auto& [pid, bytes] : by_pid) d.processes.push_back({.pid = pid, .memory_bytes = bytes});
    devices.push_back(std::move(d));
  }
  return devices;
}

std::string Nvml::note() {
  std::lock_guard lock(mutex_);
  load();
  return note_;
}

}  // namespace warden
