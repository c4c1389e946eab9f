// A stand-in GPU for tests on any machine: a device node in a directory of the test's, with the
// device number of a kernel device that nothing else holds open, so that a process "holds the
// GPU" exactly while it has that node open. Tests that run at once use different device numbers
// (GPUs are told apart by device number), so none sees another's holders.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "tests/support/temp_dir.h"

namespace warden::testing {

class GpuNode {
 public:
  // `rdev`: e.g. makedev(1, 7) (/dev/full). The node is named nvidia0, as NVML expects.
  explicit GpuNode(dev_t rdev);

  // False where nodes cannot be made here (not root, a nodev /tmp): the test should skip.
  bool usable() const { return usable_; }
  const std::string& dir() const { return dir_.path(); }
  std::string node() const { return dir_ / "nvidia0"; }
  // wardend's flags: this GPU set, and NVML from `library`.
  std::vector<std::string> flags(const std::string& library) const;
  // A process that holds the node open, as a process with a CUDA context holds its GPU's, until
  // it is killed; with `ignore_term`, SIGTERM does not end it. Returns once the node is open.
  pid_t spawn_holder(bool ignore_term = false) const;

 private:
  TempDir dir_;
  bool usable_ = false;
};

}  // namespace warden::testing
