#include "tests/support/gpu_node.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

namespace warden::testing {

GpuNode::GpuNode(dev_t rdev) : dir_("warden-gpu") {
  std::string path = node();
  if (::mknod(path.c_str(), S_IFCHR | 0666, rdev) != 0) return;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  ::close(fd);
  usable_ = true;
}

std::vector<std::string> GpuNode::flags(const std::string& library) const {
  return {"--gpu-devices", dir() + "/nvidia[0-9]*", "--nvml-library", library};
}

pid_t GpuNode::spawn_holder(bool ignore_term) const {
  int ready[2];
  if (::pipe2(ready, O_CLOEXEC) != 0) return -1;
  const std::string path = node();
  pid_t pid = ::fork();
  if (pid == 0) {
    if (ignore_term) ::signal(SIGTERM, SIG_IGN);
    char ok = ::open(path.c_str(), O_RDONLY) >= 0 ? 1 : 0;
    [[maybe_unused]] ssize_t told = ::write(ready[1], &ok, 1);  // a reader that left learns nothing
    for (;;) ::pause();
  }
  ::close(ready[1]);
  char ok = 0;
  EXPECT_EQ(::read(ready[0], &ok, 1), 1);
  ::close(ready[0]);
  EXPECT_EQ(ok, 1) << "the holder could not open " << path;
  return pid;
}

}  // namespace warden::testing
