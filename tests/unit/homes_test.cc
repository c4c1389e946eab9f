// Where each job's paths and hooks live (edge/homes.h): wardend's own for a host job, the
// container's view for a contained one, found again after a restart through a process still in
// it, or none.
#include "edge/homes.h"

#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "world/process.h"

namespace warden {
namespace {

// A process in a mount namespace of its own (a container as wardend tells one), until destroyed.
struct Contained {
  pid_t pid = -1;
  Contained() {
    pid = ::fork();
    if (pid == 0) {
      ::execl("/usr/bin/unshare", "unshare", "--mount", "/bin/sleep", "30", nullptr);
      ::_exit(127);
    }
  }
  ~Contained() {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
  }
  // Its view, once unshare has exec'd sleep in the new namespace.
  std::shared_ptr<const View> view() const {
    for (int i = 0; i < 200; ++i) {
      ProcessHandle handle = open_process(pid);
      auto v = View::of(pid, handle.pidfd.get());
      if (v->home()) return v;
      ::usleep(10'000);
    }
    return nullptr;
  }
};

Job job_at(std::optional<JobHome> home, ProcessIdentity main) {
  Job job;
  job.id = 7;
  job.spec.home = home;
  job.main = main;
  return job;
}

TEST(Homes, AHostJobLivesWhereWardendDoes) {
  Homes homes;
  EXPECT_EQ(homes.of(job_at(std::nullopt, {})), View::wardends());
  EXPECT_TRUE(homes.find_again(job_at(std::nullopt, {})));
}

TEST(Homes, AContainedJobHasItsViewUntilItIsForgotten) {
  if (::geteuid() != 0) GTEST_SKIP() << "a mount namespace needs root";
  Contained c;
  auto view = c.view();
  ASSERT_NE(view, nullptr);
  Job job = job_at(view->home(), open_process(c.pid).identity);
  Homes homes;
  homes.keep(job.id, view);
  EXPECT_EQ(homes.of(job), view);
  homes.forget(job.id);
  EXPECT_EQ(homes.of(job), nullptr) << "a contained job has no home but its container's";
}

TEST(Homes, AfterARestartAContainedJobsViewIsFoundAgainOnlyThroughAProcessStillInIt) {
  if (::geteuid() != 0) GTEST_SKIP() << "a mount namespace needs root";
  Job job;
  {
    Contained c;
    auto view = c.view();
    ASSERT_NE(view, nullptr);
    job = job_at(view->home(), open_process(c.pid).identity);
    Homes restarted;  // knows nothing but the stored job
    ASSERT_TRUE(restarted.find_again(job));
    ASSERT_NE(restarted.of(job), nullptr);
    EXPECT_EQ(restarted.of(job)->home(), job.spec.home);
  }
  Homes later;  // the container's last process is gone
  EXPECT_FALSE(later.find_again(job));
  EXPECT_EQ(later.of(job), nullptr);
}

}  // namespace
}  // namespace warden
