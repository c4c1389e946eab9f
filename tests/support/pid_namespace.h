// A fixture with a process that is PID 1 of a PID namespace of its own (a container's view of the
// node, with root).
#pragma once

#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

namespace warden::testing {

// A process that is PID 1 of a PID namespace of its own (made by a helper, so that this test
// process's later children stay in its namespace), alive until the fixture ends.
class InPidNamespace : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "a PID namespace needs root";
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    helper = ::fork();
    if (helper == 0) {
      if (::unshare(CLONE_NEWPID) != 0) ::_exit(1);
      pid_t inner = ::fork();
      if (inner == 0) {
        ::pause();
        ::_exit(0);
      }
      [[maybe_unused]] ssize_t told = ::write(fds[1], &inner, sizeof(inner));  // a pipe: whole
      ::waitpid(inner, nullptr, 0);
      ::_exit(0);
    }
    ::close(fds[1]);
    ASSERT_EQ(::read(fds[0], &inner, sizeof(inner)), static_cast<ssize_t>(sizeof(inner)));
    ::close(fds[0]);
  }
  void TearDown() override {
    if (inner > 0) ::kill(inner, SIGKILL);
    if (helper > 0) ::waitpid(helper, nullptr, 0);
  }
  pid_t helper = 0;
  pid_t inner = 0;  // in this process's numbering
};

}  // namespace warden::testing
