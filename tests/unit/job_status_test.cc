#include "world/job_status.h"

#include <sys/syscall.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "tests/support/pid_namespace.h"
#include "world/namespaces.h"

namespace warden {
namespace {

Job running_job() {
  Job job{.id = 7,
          .uid = 1000,
          .spec = {.name = "train", .heartbeat = std::chrono::seconds(30), .group = "slurm-1"},
          .main = {.pid = 4000, .start_time = 11},
          .workers = {{.identity = {.pid = 4001, .start_time = 12}},
                      {.identity = {.pid = 4002, .start_time = 13},
                       .policy = Policy::failure,
                       .exited_at = TimePoint{}}},
          .paths = {{.kind = PathKind::file, .path = "/tmp/a"},
                    {.kind = PathKind::dir, .path = "/tmp/d"},
                    {.kind = PathKind::shm, .path = "/dev/shm/s"},
                    {.kind = PathKind::shm_glob, .path = "torch_*"}},
          .cgroup = "/warden/job-7"};
  return job;
}

const Caller kRoot{.uid = 0};

TEST(JobStatus, ARunningJobCountsWhatItRegisteredAndSaysHowItsWorkersAreTracked) {
  Job job = running_job();
  StatusShape shape{.discover = Discover::report, .tracking_of = [](const Job&, pid_t pid) {
                      return pid == 4001 ? std::string("cgroup") : std::string("scan");
                    }};
  JobStatus s = status_of(job, kRoot, shape);
  EXPECT_EQ(s.main_pid, 4000);
  EXPECT_EQ(s.live_processes, 2u);  // the main and the worker that has not exited
  EXPECT_EQ(s.files, 2u);
  EXPECT_EQ(s.shm, 2u);
  EXPECT_EQ(s.tracking, "cgroup");
  EXPECT_EQ(s.discover, Discover::report);  // the job said nothing: wardend's setting
  EXPECT_EQ(s.heartbeat_s, 30.0);
  ASSERT_EQ(s.workers.size(), 2u);
  EXPECT_EQ(s.workers[0].tracking, "cgroup");
  EXPECT_FALSE(s.workers[0].exited);
  EXPECT_TRUE(s.workers[1].exited);
  EXPECT_EQ(s.workers[1].tracking, "");  // an exited worker is tracked no more
  EXPECT_EQ(s.workers[1].policy, Policy::failure);
  ASSERT_EQ(s.paths.size(), 4u);
  EXPECT_EQ(s.paths[3].path, "torch_*");

  job.spec.discover = Discover::off;
  EXPECT_EQ(status_of(job, kRoot, shape).discover, Discover::off);
}

TEST(JobStatus, ASummaryHasTheCountsAndNothingListed) {
  Job job = running_job();
  JobStatus s = status_of(job, kRoot, {.summary = true});
  EXPECT_EQ(s.files, 2u);
  EXPECT_TRUE(s.workers.empty());
  EXPECT_TRUE(s.paths.empty());
  EXPECT_FALSE(s.report);
}

TEST(JobStatus, ACleanedJobCountsWhatItsCleanupLeftNotWhatItRegistered) {
  Job job = running_job();
  job.state = JobState::cleaned;
  job.reason = JobState::failed;
  job.report = CleanupReport{
      .processes = {{.pid = 4000, .role = "main", .outcome = Outcome::killed},
                    {.pid = 4001, .role = "worker", .outcome = Outcome::unkillable}},
      .paths = {{.kind = PathKind::file, .path = "/tmp/a", .outcome = Outcome::removed},
                {.kind = PathKind::dir, .path = "/tmp/d", .outcome = Outcome::failed},
                {.kind = PathKind::shm, .path = "/dev/shm/s", .outcome = Outcome::refused}}};
  JobStatus s = status_of(job, kRoot, {});
  EXPECT_EQ(s.live_processes, 1u);  // the unkillable worker
  EXPECT_EQ(s.files, 1u);
  EXPECT_EQ(s.shm, 1u);
  ASSERT_TRUE(s.report);
  ASSERT_EQ(s.workers.size(), 2u);
  EXPECT_FALSE(s.workers[0].exited);  // it outlived its cleanup
  EXPECT_TRUE(s.workers[1].exited);
}

TEST(JobStatus, PathsAreListedUpToTheByteBoundAndCountedInFull) {
  Job job = running_job();
  job.paths.clear();
  for (int i = 0; i < 100; ++i) {
    job.paths.push_back({.kind = PathKind::file, .path = "/tmp/" + std::string(95, 'x')});
  }
  JobStatus s = status_of(job, kRoot, {.max_listed_path_bytes = 1000});
  EXPECT_EQ(s.paths.size(), 10u);
  EXPECT_EQ(s.files, 100u);
}

// A caller in a container of its own, whose init is `inner`.
class JobStatusInContainer : public testing::InPidNamespace {};

TEST_F(JobStatusInContainer, PidsAreAsTheCallerNumbersThemAndOnesItCannotSeeAreZero) {
  UniqueFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, inner, 0)));
  Caller in_container{.pid = inner, .uid = 0, .view = View::of(inner, pidfd.get())};
  Job job = running_job();
  job.main = {.pid = inner, .start_time = 1};
  job.workers = {{.identity = {.pid = ::getpid(), .start_time = 1}}};  // outside its namespace
  JobStatus s = status_of(job, in_container, {});
  EXPECT_EQ(s.main_pid, 1);
  ASSERT_EQ(s.workers.size(), 1u);
  EXPECT_EQ(s.workers[0].pid, 0);
  // Wardend's view numbers them as wardend does.
  EXPECT_EQ(status_of(job, kRoot, {}).main_pid, inner);
  // Once the job is over, its main is not looked up: its number may be another process's now.
  job.state = JobState::cleaned;
  EXPECT_EQ(status_of(job, in_container, {}).main_pid, 0);
}

}  // namespace
}  // namespace warden
