#include "world/namespaces.h"

#include <sched.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "tests/support/expect_error.h"
#include "tests/support/pid_namespace.h"

namespace warden {
namespace {

using testing::InPidNamespace;

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
