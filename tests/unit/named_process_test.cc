#include "world/named_process.h"

#include <unistd.h>

#include <gtest/gtest.h>

#include "tests/support/expect_error.h"
#include "tests/support/pid_namespace.h"
#include "tests/support/processes.h"
#include "world/namespaces.h"

namespace warden {
namespace {

using testing::code_of;

class ProcessNamerTest : public ::testing::Test {
 protected:
  ~ProcessNamerTest() override { testing::kill_and_reap(spawned); }
  pid_t spawn() { return spawned.emplace_back(testing::spawn(testing::Behaviour::sleep)); }

  ProcessNamer namer;
  Caller caller{.pid = ::getpid(), .uid = 0};
  std::vector<pid_t> spawned;
};

TEST_F(ProcessNamerTest, ABarePidIsHeldByAPidfdOfThatProcess) {
  pid_t child = spawn();
  ProcessHandle held = namer.job_process(caller, child, {});
  EXPECT_EQ(held.identity.pid, child);
  EXPECT_EQ(held.identity.start_time, read_proc_stat(child)->start_time);
  EXPECT_EQ(pidfd_pid(held.pidfd.get()), child);
}

TEST_F(ProcessNamerTest, APidfdSentAlongIsKeptAndMustBeOfThePidNamed) {
  pid_t child = spawn();
  pid_t other = spawn();
  UniqueFd sent = testing::open_pidfd(child);
  int fd = sent.get();
  ProcessHandle held = namer.job_process(caller, child, std::move(sent));
  EXPECT_EQ(held.pidfd.get(), fd);
  EXPECT_EQ(held.identity.pid, child);
  EXPECT_EQ(code_of([&] { namer.job_process(caller, other, testing::open_pidfd(child)); }),
            ErrorCode::bad_request);
}

TEST_F(ProcessNamerTest, ACallerNamingItselfIsHeldByItsConnectionsPidfd) {
  pid_t child = spawn();
  UniqueFd connection = testing::open_pidfd(child);
  Caller itself{.pid = child, .uid = 0, .pidfd = connection.get()};
  ProcessHandle held = namer.job_process(itself, child, {});
  EXPECT_EQ(held.identity.pid, child);
  EXPECT_NE(held.pidfd.get(), connection.get());  // a copy: the connection keeps its own
  EXPECT_EQ(pidfd_pid(held.pidfd.get()), child);
}

TEST_F(ProcessNamerTest, AProcessThatIsGoneIsNoSuchProcess) {
  pid_t child = spawn();
  testing::kill_and_reap({child});
  spawned.clear();
  EXPECT_EQ(code_of([&] { namer.job_process(caller, child, {}); }), ErrorCode::no_such_process);
}

TEST_F(ProcessNamerTest, WardendItsInitAndItsAncestorsAreRefused) {
  EXPECT_EQ(code_of([&] { namer.job_process(caller, ::getpid(), {}); }),
            ErrorCode::permission_denied);
  EXPECT_EQ(code_of([&] { namer.job_process(caller, 1, {}); }), ErrorCode::permission_denied);
  // The test's own parent is an ancestor, as read at start.
  EXPECT_EQ(code_of([&] { namer.job_process(caller, ::getppid(), {}); }),
            ErrorCode::permission_denied);
  // An ancestor is known by its identity: a process it was not is taken.
  pid_t child = spawn();
  ProcessNamer with_child_as_ancestor({{.pid = child, .start_time = 1}});
  EXPECT_NO_THROW(with_child_as_ancestor.job_process(caller, child, {}));
  ProcessNamer with_child_itself({{.pid = child, .start_time = read_proc_stat(child)->start_time}});
  EXPECT_EQ(code_of([&] { with_child_itself.job_process(caller, child, {}); }),
            ErrorCode::permission_denied);
}

TEST_F(ProcessNamerTest, AKernelThreadIsRefused) {
  auto kthreadd = read_proc_stat(2);
  if (!kthreadd || !is_kernel_thread(*kthreadd)) {
    GTEST_SKIP() << "pid 2 is no kernel thread here (a PID namespace)";
  }
  EXPECT_EQ(code_of([&] { namer.job_process(caller, 2, {}); }), ErrorCode::permission_denied);
}

// A caller in a container of its own, whose init is `inner`.
class ProcessNamerInContainer : public testing::InPidNamespace {
 protected:
  ProcessNamer namer;
};

TEST_F(ProcessNamerInContainer, ItsPidsAreItsOwnItsInitIsAJobsAndWardendsAreOutOfReach) {
  UniqueFd pidfd = testing::open_pidfd(inner);
  Caller in_container{.pid = inner, .uid = 0, .view = View::of(inner, pidfd.get())};
  // Its pid 1 is its own init, not wardend's: a job may hold it.
  ProcessHandle init = namer.job_process(in_container, 1, {});
  EXPECT_EQ(init.identity.pid, inner);
  EXPECT_EQ(code_of([&] { namer.job_process(in_container, 2, {}); }), ErrorCode::no_such_process);
  // A pidfd of a process outside its namespace names nothing of its own.
  pid_t outside = testing::spawn(testing::Behaviour::sleep);
  EXPECT_EQ(code_of([&] { namer.job_process(in_container, 1, testing::open_pidfd(outside)); }),
            ErrorCode::permission_denied);
  testing::kill_and_reap({outside});
}

}  // namespace
}  // namespace warden
