#include "world/process.h"

#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "tests/support/expect_error.h"
#include "tests/support/processes.h"

namespace warden {
namespace {

using testing::code_of;

TEST(ProcStat, ParsesFieldsAfterACommandNameWithParenthesesAndSpaces) {
  std::string text =
      "4312 (evil) (name) S 1 4312 4300 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 12345 67 "
      "18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";
  auto st = parse_proc_stat(text);
  ASSERT_TRUE(st);
  EXPECT_EQ(st->state, 'S');
  EXPECT_EQ(st->ppid, 1);
  EXPECT_EQ(st->pgrp, 4312);
  EXPECT_EQ(st->session, 4300);
  EXPECT_EQ(st->start_time, 987654u);
}

TEST(ProcStat, KernelThreadsAreKnownByTheirFlagNotTheirNumber) {
  // kthreadd on the host (flags 0x208040), and an ordinary process that is pid 2 of a PID
  // namespace, child of that namespace's init (flags 0x400100).
  auto kthreadd = parse_proc_stat(
      "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 3 0 0 18446744073709551615\n");
  auto in_namespace = parse_proc_stat(
      "2 (python3) S 1 2 1 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 777 0 0 18446744073709551615\n");
  ASSERT_TRUE(kthreadd && in_namespace);
  EXPECT_EQ(kthreadd->flags, 2129984u);
  EXPECT_TRUE(is_kernel_thread(*kthreadd));
  EXPECT_FALSE(is_kernel_thread(*in_namespace));
  auto self = read_proc_stat(::getpid());
  ASSERT_TRUE(self);
  EXPECT_FALSE(is_kernel_thread(*self));
}

TEST(ProcStat, RejectsTruncatedText) {
  EXPECT_FALSE(parse_proc_stat("12 (x) S 1 2"));
  EXPECT_FALSE(parse_proc_stat("garbage"));
  EXPECT_FALSE(parse_proc_stat(""));
}

TEST(OpenProcess, IdentifiesALiveProcess) {
  pid_t child = testing::spawn(testing::Behaviour::sleep);
  auto handle = open_process(child);
  EXPECT_EQ(handle.identity.pid, child);
  EXPECT_EQ(handle.identity.uid, ::getuid());
  EXPECT_EQ(handle.identity.start_time, read_proc_stat(child)->start_time);
  EXPECT_FALSE(pidfd_exited(handle.pidfd.get()));
  testing::kill_and_reap({child});
  EXPECT_TRUE(pidfd_exited(handle.pidfd.get()));
  EXPECT_EQ(pidfd_signal(handle.pidfd.get(), SIGTERM), ESRCH)
      << "a pidfd never signals whatever reuses the pid";
}

TEST(OpenProcess, RefusesAZombieAndAMissingPid) {
  pid_t child = testing::spawn(testing::Behaviour::exit_now);
  ASSERT_TRUE(testing::wait_exited(child, std::chrono::seconds(10)));
  EXPECT_EQ(code_of([&] { open_process(child); }), ErrorCode::no_such_process);
  ::waitpid(child, nullptr, 0);
  EXPECT_EQ(code_of([&] { open_process(child); }), ErrorCode::no_such_process);
}

TEST(OpenProcess, RunningOutOfDescriptorsIsALimitNotAnInternalError) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "the sanitizer runtimes need descriptors of their own and misreport without them";
#endif
  pid_t target = testing::spawn(testing::Behaviour::sleep);
  // The starved attempt runs in a child, so that whatever happens there the target is reaped.
  pid_t checker = ::fork();
  if (checker == 0) {
    int next = ::dup(0);  // the lowest free descriptor: the next one handed out
    ::close(next);
    rlimit tight{.rlim_cur = static_cast<rlim_t>(next), .rlim_max = static_cast<rlim_t>(next)};
    if (::setrlimit(RLIMIT_NOFILE, &tight) != 0) ::_exit(3);
    try {
      open_process(target);
    } catch (const Error& e) {
      ::_exit(e.code() == ErrorCode::limit_exceeded ? 0 : 1);
    }
    ::_exit(2);
  }
  int status = 0;
  ::waitpid(checker, &status, 0);
  testing::kill_and_reap({target});
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "1: another code, 2: no error, 3: setrlimit failed";
}

}  // namespace
}  // namespace warden
