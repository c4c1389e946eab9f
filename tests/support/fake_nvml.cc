// A stand-in for NVIDIA's libnvidia-ml.so.1 where no GPU is (tests only): the functions wardend
// loads, with the documented signatures, answering from a file instead of a driver.
//
// $FAKE_NVML_STATE names the file; each line is "MINOR UUID TOTAL_BYTES", one per GPU, or
// "MINOR PID BYTES", a process holding BYTES of device memory on GPU MINOR, or "MINOR driver BYTES",
// memory in use that no process holds (a context the driver never tore down). As a driver does,
// a process that has exited (or is a zombie) holds nothing.
#include <cstdio>
#include <cstdlib>
#include <cstring>

extern "C" {

using nvmlReturn_t = int;
using nvmlDevice_t = struct nvmlDevice_st*;
typedef struct {
  unsigned long long total, free, used;
} nvmlMemory_t;
typedef struct {
  unsigned int pid;
  unsigned long long usedGpuMemory;
  unsigned int gpuInstanceId, computeInstanceId;
} nvmlProcessInfo_t;

enum { kSuccess = 0, kInvalidArgument = 2, kInsufficientSize = 7, kMaxGpus = 8, kMaxProcs = 64 };

struct gpu {
  unsigned minor;
  char uuid[96];
  unsigned long long total;
  unsigned nprocs;
  nvmlProcessInfo_t procs[kMaxProcs];
  unsigned long long unheld;  // in use, held by no process
};
static struct gpu gpus[kMaxGpus];
static unsigned ngpus;

static int alive(unsigned pid) {
  char path[64], text[512];
  snprintf(path, sizeof path, "/proc/%u/stat", pid);
  FILE* f = fopen(path, "r");
  if (f == nullptr) return 0;
  size_t n = fread(text, 1, sizeof text - 1, f);
  fclose(f);
  text[n] = '\0';
  const char* close = std::strrchr(text, ')');
  return close != nullptr && close[1] == ' ' && close[2] != 'Z';
}

// Reads the file anew on every call: the test changes it while wardend runs.
static void load(void) {
  ngpus = 0;
  const char* path = getenv("FAKE_NVML_STATE");
  FILE* f = path != nullptr ? fopen(path, "r") : nullptr;
  if (f == nullptr) return;
  char line[256];
  while (fgets(line, sizeof line, f) != nullptr) {
    unsigned minor;
    char second[96];
    unsigned long long bytes;
    if (sscanf(line, "%u %95s %llu", &minor, second, &bytes) != 3) continue;
    if (strncmp(second, "GPU-", 4) == 0 && ngpus < kMaxGpus) {
      struct gpu* g = &gpus[ngpus++];
      memset(g, 0, sizeof *g);
      g->minor = minor;
      strcpy(g->uuid, second);
      g->total = bytes;
      continue;
    }
    if (strcmp(second, "driver") == 0) {
      for (unsigned i = 0; i < ngpus; ++i) {
        if (gpus[i].minor == minor) gpus[i].unheld += bytes;
      }
      continue;
    }
    for (unsigned i = 0; i < ngpus; ++i) {
      unsigned pid = static_cast<unsigned>(std::strtoul(second, nullptr, 10));
      if (gpus[i].minor == minor && gpus[i].nprocs < kMaxProcs && alive(pid)) {
        nvmlProcessInfo_t* p = &gpus[i].procs[gpus[i].nprocs++];
        memset(p, 0, sizeof *p);
        p->pid = pid;
        p->usedGpuMemory = bytes;
      }
    }
  }
  fclose(f);
}

nvmlReturn_t nvmlInit_v2(void) { return kSuccess; }
nvmlReturn_t nvmlShutdown(void) { return kSuccess; }
const char* nvmlErrorString(nvmlReturn_t r) { return r == kSuccess ? "Success" : "Fake error"; }

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int* count) {
  load();
  *count = ngpus;
  return kSuccess;
}

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t* device) {
  if (index >= ngpus) return kInvalidArgument;
  *device = reinterpret_cast<nvmlDevice_t>(&gpus[index]);
  return kSuccess;
}

nvmlReturn_t nvmlDeviceGetMinorNumber(nvmlDevice_t device, unsigned int* minor) {
  *minor = reinterpret_cast<gpu*>(device)->minor;
  return kSuccess;
}

nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char* uuid, unsigned int length) {
  snprintf(uuid, length, "%s", reinterpret_cast<gpu*>(device)->uuid);
  return kSuccess;
}

nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t* memory) {
  struct gpu* g = reinterpret_cast<gpu*>(device);
  memory->total = g->total;
  memory->used = g->unheld;
  for (unsigned i = 0; i < g->nprocs; ++i) memory->used += g->procs[i].usedGpuMemory;
  memory->free = g->total - memory->used;
  return kSuccess;
}

nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t device, unsigned int* count,
                                                     nvmlProcessInfo_t* infos) {
  struct gpu* g = reinterpret_cast<gpu*>(device);
  if (*count < g->nprocs) {
    *count = g->nprocs;
    return kInsufficientSize;
  }
  *count = g->nprocs;
  memcpy(infos, g->procs, g->nprocs * sizeof *infos);
  return kSuccess;
}

}  // extern "C"
