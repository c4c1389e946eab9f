#include "world/namespaces.h"

#include <sched.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "tests/support/expect_error.h"

namespace warden {
namespace {

UniqueFd pidfd_of(pid_t pid) {
  return UniqueFd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
}

TEST(View, AProcessWhereWardendIsSharesItsView) {
  UniqueFd self = pidfd_of(::getpid());
  auto view = View::of(::getpid(), self.get());
  EXPECT_TRUE(view->is_wardends());
  EXPECT_EQ(view, View::wardends());
  EXPECT_EQ(view->local_pid(4242), 4242);
  EXPECT_EQ(view->host_pid(4242), 4242);
}

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

TEST_F(InPidNamespace, ItsPidsAreItsOwnAndNoneOfWardendsAreVisible) {
  UniqueFd fd = pidfd_of(inner);
  auto view = View::of(inner, fd.get());
  EXPECT_FALSE(view->shares_pids());
  EXPECT_TRUE(view->shares_paths()) << "only the PID namespace is its own";
  ASSERT_TRUE(view->home());
  EXPECT_NE(view->home()->pid_ns, 0u);
  EXPECT_EQ(view->local_pid(inner), 1) << "it is PID 1 of its namespace";
  EXPECT_EQ(view->host_pid(1), inner);
  EXPECT_EQ(view->local_pid(::getpid()), std::nullopt) << "wardend's processes are not in it";
  EXPECT_EQ(view->host_pid(2), std::nullopt) << "it has no process 2";
}

TEST_F(InPidNamespace, AnExitedProcessHasNoView) {
  UniqueFd fd = pidfd_of(inner);
  ::kill(inner, SIGKILL);
  ::waitpid(helper, nullptr, 0);
  helper = 0;
  EXPECT_EQ(testing::code_of([&] { View::of(inner, fd.get()); }), ErrorCode::no_such_process);
  inner = 0;
}

}  // namespace
}  // namespace warden
