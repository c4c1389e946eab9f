#include "core/supervisor.h"

#include <gtest/gtest.h>

#include "tests/support/expect_error.h"

namespace warden {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

const Caller kAlice{.pid = 100, .uid = 1000, .gid = 1000};
const Caller kBob{.pid = 200, .uid = 1001, .gid = 1001};
const Caller kRoot{.pid = 1, .uid = 0, .gid = 0};

ProcessIdentity proc(pid_t pid, uid_t uid = 1000) {
  return {.pid = pid, .start_time = static_cast<std::uint64_t>(pid) * 10, .uid = uid};
}

JobSpec spec(Duration heartbeat = {}, Duration grace = seconds(2)) {
  return {.name = "train", .heartbeat = heartbeat, .grace = grace};
}

using testing::code_of;

class SupervisorTest : public ::testing::Test {
 protected:
  TimePoint t0 = TimePoint{} + seconds(1000);
  Supervisor core;
};

TEST_F(SupervisorTest, RegisteredJobRunsAndIsVisibleToItsOwner) {
  JobId id = core.register_job(kAlice, spec(), proc(10), t0);
  const Job& job = core.visible_job(kAlice, id);
  EXPECT_EQ(job.state, JobState::running);
  EXPECT_EQ(job.uid, 1000u);
  EXPECT_EQ(job.main, proc(10));
  EXPECT_EQ(core.visible_jobs(kAlice).size(), 1u);
}

TEST_F(SupervisorTest, NonRootCannotRegisterAnotherUsersProcess) {
  EXPECT_EQ(code_of([&] { core.register_job(kAlice, spec(), proc(10, 0), t0); }),
            ErrorCode::permission_denied);
  JobId id = core.register_job(kAlice, spec(), proc(10), t0);
  EXPECT_EQ(code_of([&] { core.add_process(kAlice, id, proc(11, 1001)); }),
            ErrorCode::permission_denied);
  EXPECT_NO_THROW(core.register_job(kRoot, spec(), proc(20, 1001), t0));
}

TEST_F(SupervisorTest, UsersSeeOnlyTheirOwnJobsAndRootSeesAll) {
  JobId a = core.register_job(kAlice, spec(), proc(10), t0);
  JobId b = core.register_job(kBob, spec(), proc(20, 1001), t0);
  EXPECT_EQ(core.visible_jobs(kAlice).size(), 1u);
  EXPECT_EQ(code_of([&] { core.visible_job(kAlice, b); }), ErrorCode::not_found);
  EXPECT_EQ(code_of([&] { core.heartbeat(kBob, a, t0); }), ErrorCode::not_found);
  EXPECT_EQ(code_of([&] { core.end_job(kBob, a, false); }), ErrorCode::not_found);
  EXPECT_EQ(core.visible_jobs(kRoot).size(), 2u);
}

TEST_F(SupervisorTest, StalledJobIsCleanedAtItsDeadlineAndNotBefore) {
  JobId id = core.register_job(kAlice, spec(seconds(5)), proc(10), t0);
  core.add_process(kAlice, id, proc(11));
  EXPECT_EQ(core.next_deadline(), t0 + seconds(5));

  EXPECT_TRUE(core.expire(t0 + seconds(5) - milliseconds(1)).empty());
  auto plans = core.expire(t0 + seconds(5));
  ASSERT_EQ(plans.size(), 1u);
  EXPECT_EQ(plans[0].reason, JobState::stalled);
  ASSERT_EQ(plans[0].targets.size(), 1u) << "the main process is spared by default";
  EXPECT_EQ(plans[0].targets[0].identity, proc(11));
  EXPECT_EQ(core.visible_job(kAlice, id).state, JobState::cleaning);
  EXPECT_EQ(core.visible_job(kAlice, id).reason, JobState::stalled);
  EXPECT_FALSE(core.next_deadline());
}

TEST_F(SupervisorTest, HeartbeatPushesTheDeadline) {
  JobId id = core.register_job(kAlice, spec(seconds(5)), proc(10), t0);
  EXPECT_EQ(core.heartbeat(kAlice, id, t0 + seconds(4)), t0 + seconds(9));
  EXPECT_TRUE(core.expire(t0 + seconds(8)).empty());
  EXPECT_EQ(core.expire(t0 + seconds(9)).size(), 1u);
}

TEST_F(SupervisorTest, TimeWardendLostIsAddedToEveryDeadline) {
  JobId a = core.register_job(kAlice, spec(seconds(5)), proc(10), t0);
  JobId b = core.register_job(kBob, spec(seconds(2)), proc(20, 1001), t0);
  core.postpone_deadlines(seconds(30));
  EXPECT_EQ(core.next_deadline(), t0 + seconds(32));
  EXPECT_TRUE(core.expire(t0 + seconds(31)).empty());
  EXPECT_EQ(core.heartbeat(kAlice, a, t0 + seconds(31)), t0 + seconds(36))
      << "a beat still sets the deadline from now";
  auto plans = core.expire(t0 + seconds(32));
  ASSERT_EQ(plans.size(), 1u);
  EXPECT_EQ(plans[0].job, b);
}

TEST_F(SupervisorTest, StallPolicyMayIncludeTheMainProcess) {
  auto s = spec(seconds(1));
  s.kill_main_on_stall = true;
  core.register_job(kAlice, s, proc(10), t0);
  auto plans = core.expire(t0 + seconds(1));
  ASSERT_EQ(plans.size(), 1u);
  ASSERT_EQ(plans[0].targets.size(), 1u);
  EXPECT_EQ(plans[0].targets[0].role, "main");
  EXPECT_FALSE(plans[0].targets[0].exited);
}

TEST_F(SupervisorTest, JobWithoutHeartbeatNeverStalls) {
  core.register_job(kAlice, spec(), proc(10), t0);
  EXPECT_FALSE(core.next_deadline());
  EXPECT_TRUE(core.expire(t0 + std::chrono::hours(1000)).empty());
}

TEST_F(SupervisorTest, MainExitWithoutEndFailsTheJob) {
  JobId id = core.register_job(kAlice, spec(seconds(5)), proc(10), t0);
  core.add_process(kAlice, id, proc(11));
  core.add_process(kAlice, id, proc(12));
  auto effect = core.process_exited(id, 10, t0 + seconds(1));
  ASSERT_TRUE(effect.cleanup);
  EXPECT_EQ(effect.cleanup->reason, JobState::failed);
  EXPECT_EQ(effect.cleanup->grace, seconds(2));
  ASSERT_EQ(effect.cleanup->targets.size(), 3u);
  EXPECT_EQ(effect.cleanup->targets[0].role, "main");
  EXPECT_TRUE(effect.cleanup->targets[0].exited);
  EXPECT_FALSE(effect.cleanup->targets[1].exited);
  EXPECT_EQ(core.visible_job(kAlice, id).reason, JobState::failed);
  EXPECT_FALSE(core.next_deadline()) << "a failed job no longer has a heartbeat deadline";
}

TEST_F(SupervisorTest, WorkerExitingOnItsOwnIsDroppedButRemembered) {
  JobId id = core.register_job(kAlice, spec(), proc(10), t0);
  core.add_process(kAlice, id, proc(11));
  auto effect = core.process_exited(id, 11, t0 + seconds(1));
  EXPECT_TRUE(effect.untrack);
  EXPECT_FALSE(effect.cleanup);
  EXPECT_EQ(core.visible_job(kAlice, id).state, JobState::running);
  EXPECT_EQ(core.visible_job(kAlice, id).live_workers(), 0u);

  auto plan = core.end_job(kAlice, id, true);
  ASSERT_EQ(plan.targets.size(), 1u);
  EXPECT_TRUE(plan.targets[0].exited);
  EXPECT_FALSE(plan.targets[0].leftover);
}

TEST_F(SupervisorTest, CleanEndSweepsLiveWorkersAsLeftovers) {
  JobId id = core.register_job(kAlice, spec(), proc(10), t0);
  core.add_process(kAlice, id, proc(11));
  auto plan = core.end_job(kAlice, id, true);
  EXPECT_EQ(plan.reason, JobState::ended);
  ASSERT_EQ(plan.targets.size(), 1u);
  EXPECT_TRUE(plan.targets[0].leftover);
  EXPECT_EQ(core.visible_job(kAlice, id).reason, JobState::ended);
}

TEST_F(SupervisorTest, EndedJobRefusesFurtherRequests) {
  JobId id = core.register_job(kAlice, spec(), proc(10), t0);
  core.end_job(kAlice, id, false);
  EXPECT_EQ(code_of([&] { core.end_job(kAlice, id, true); }), ErrorCode::invalid_state);
  EXPECT_EQ(code_of([&] { core.heartbeat(kAlice, id, t0); }), ErrorCode::invalid_state);
  EXPECT_EQ(code_of([&] { core.add_process(kAlice, id, proc(11)); }), ErrorCode::invalid_state);
  EXPECT_EQ(code_of([&] { core.heartbeat(kAlice, 999, t0); }), ErrorCode::not_found);
}

TEST_F(SupervisorTest, ExitsDuringCleanupAreLeftToTheEngine) {
  JobId id = core.register_job(kAlice, spec(), proc(10), t0);
  core.add_process(kAlice, id, proc(11));
  core.end_job(kAlice, id, false);
  auto effect = core.process_exited(id, 11, t0);
  EXPECT_FALSE(effect.untrack);
  EXPECT_FALSE(effect.cleanup);
  EXPECT_FALSE(core.process_exited(id, 10, t0).cleanup);
}

TEST_F(SupervisorTest, AResumedCleanupRunsNoHookAgain) {
  JobId id = core.register_job(kAlice, spec(), proc(10), t0);
  for (const char* argv0 : {"/bin/a", "/bin/b", "/bin/c"}) {
    core.add_hook(kAlice, id, {.command = {.argv = {argv0}}});
  }
  CleanupPlan first = core.end_job(kAlice, id, false);
  ASSERT_EQ(first.hooks.size(), 3u);
  EXPECT_FALSE(first.hooks[0].finished || first.hooks[0].interrupted);
  CommandReport ran{.argv = {"/bin/a"}, .output = "ok\n"};
  core.hook_started(id, 0);
  core.hook_finished(id, 0, ran);
  core.hook_started(id, 1);  // and then wardend stops

  CleanupPlan resumed = core.resume_cleanup(id);
  ASSERT_EQ(resumed.hooks.size(), 3u);
  ASSERT_TRUE(resumed.hooks[0].finished);
  EXPECT_EQ(resumed.hooks[0].finished->output, "ok\n");
  EXPECT_TRUE(resumed.hooks[1].interrupted);
  EXPECT_FALSE(resumed.hooks[2].finished || resumed.hooks[2].interrupted);

  core.cleanup_finished(id, {.hooks = {ran}}, t0 + seconds(1));
  EXPECT_FALSE(core.find(id)->hooks[0].finished) << "a cleaned job's report holds what it did";
  EXPECT_TRUE(core.find(id)->hooks[0].started);
}

TEST_F(SupervisorTest, FinishedCleanupRecordsTheReport) {
  JobId id = core.register_job(kAlice, spec(), proc(10), t0);
  core.end_job(kAlice, id, false);
  CleanupReport report{.reason = JobState::failed, .duration_ms = 3};
  core.cleanup_finished(id, report, t0 + seconds(1));
  const Job& job = core.visible_job(kAlice, id);
  EXPECT_EQ(job.state, JobState::cleaned);
  EXPECT_EQ(job.reason, JobState::failed);
  ASSERT_TRUE(job.report);
  EXPECT_EQ(job.report->duration_ms, 3);
}

TEST_F(SupervisorTest, DuplicateRegistrationOfAProcessIsHarmless) {
  JobId id = core.register_job(kAlice, spec(), proc(10), t0);
  core.add_process(kAlice, id, proc(11));
  core.add_process(kAlice, id, proc(11));
  core.add_process(kAlice, id, proc(10));
  EXPECT_EQ(core.visible_job(kAlice, id).workers.size(), 1u);
}

TEST(Supervisor, JobsPerUserAreLimitedUntilOneIsCleaned) {
  Supervisor core({.max_jobs_per_user = 2});
  TimePoint t0{};
  JobId first = core.register_job(kAlice, spec(), proc(10), t0);
  core.register_job(kAlice, spec(), proc(11), t0);
  EXPECT_EQ(code_of([&] { core.register_job(kAlice, spec(), proc(12), t0); }),
            ErrorCode::limit_exceeded);
  EXPECT_NO_THROW(core.register_job(kBob, spec(), proc(20, 1001), t0));
  core.end_job(kAlice, first, true);
  core.cleanup_finished(first, {}, t0);
  EXPECT_NO_THROW(core.register_job(kAlice, spec(), proc(12), t0));
}

TEST(Supervisor, ProcessesPerJobAreLimitedButExitedRecordsMakeRoom) {
  Supervisor core({.max_processes_per_job = 2});
  TimePoint t0{};
  JobId id = core.register_job(kAlice, spec(), proc(10), t0);
  core.add_process(kAlice, id, proc(11));
  core.add_process(kAlice, id, proc(12));
  EXPECT_EQ(code_of([&] { core.add_process(kAlice, id, proc(13)); }), ErrorCode::limit_exceeded);
  core.process_exited(id, 11, t0);
  EXPECT_NO_THROW(core.add_process(kAlice, id, proc(13)));
  EXPECT_EQ(core.visible_job(kAlice, id).workers.size(), 2u);
}

TEST(Supervisor, OldestFinishedJobsAreRetired) {
  Supervisor core({.finished_jobs_kept = 1});
  TimePoint t0{};
  JobId a = core.register_job(kAlice, spec(), proc(10), t0);
  JobId b = core.register_job(kAlice, spec(), proc(11), t0);
  core.end_job(kAlice, a, true);
  core.cleanup_finished(a, {}, t0);
  core.end_job(kAlice, b, true);
  core.cleanup_finished(b, {}, t0);
  EXPECT_EQ(core.find(a), nullptr);
  EXPECT_NE(core.find(b), nullptr);
}

TEST(Supervisor, CleanupFinishedNamesTheJobsItRetired) {
  Supervisor core({.finished_jobs_kept = 1});
  TimePoint t0{};
  JobId a = core.register_job(kAlice, spec(), proc(10), t0);
  JobId b = core.register_job(kAlice, spec(), proc(11), t0);
  core.end_job(kAlice, a, true);
  EXPECT_TRUE(core.cleanup_finished(a, {}, t0).empty());
  core.end_job(kAlice, b, true);
  EXPECT_EQ(core.cleanup_finished(b, {}, t0), std::vector<JobId>{a});
}

TEST_F(SupervisorTest, RestoredJobsKeepTheirStateDeadlinesAndIdsContinue) {
  Job running{.id = 5, .uid = 1000, .spec = spec(seconds(10)), .main = proc(10)};
  // Its deadline passed while wardend was down: the restart counts as a beat.
  running.deadline = t0 - seconds(60);
  running.last_beat = t0 - seconds(70);
  Job cleaning{.id = 9, .uid = 1000, .spec = spec(), .main = proc(20)};
  cleaning.state = JobState::cleaning;
  cleaning.reason = JobState::failed;
  cleaning.cleanup_includes_main = true;
  cleaning.workers.push_back({.identity = proc(21)});
  core.restore(std::move(running), 7, t0);
  core.restore(std::move(cleaning), 7, t0);

  EXPECT_EQ(core.next_deadline(), t0 + seconds(10));
  EXPECT_FALSE(core.find(5)->last_beat) << "no beat since the restart";
  EXPECT_EQ(core.expire(t0 + seconds(10)).size(), 1u) << "the restored deadline is armed";
  CleanupPlan plan = core.resume_cleanup(9);
  EXPECT_EQ(plan.reason, JobState::failed);
  EXPECT_FALSE(plan.main_spared);
  EXPECT_EQ(plan.targets.size(), 2u);
  EXPECT_EQ(core.register_job(kAlice, spec(), proc(30), t0), 10u) << "ids continue after 9";
}

TEST_F(SupervisorTest, ARestoredCleanedJobsWorkersExitedWhenItFinished) {
  Job cleaned{.id = 4, .uid = 1000, .spec = spec(), .main = proc(10)};
  cleaned.state = JobState::cleaned;
  cleaned.reason = JobState::ended;
  cleaned.finished = t0 - seconds(5);
  cleaned.workers.push_back({.identity = proc(11)});
  core.restore(std::move(cleaned), 5, t0);
  const Job* back = core.find(4);
  ASSERT_NE(back, nullptr);
  ASSERT_EQ(back->workers.size(), 1u);
  EXPECT_EQ(back->workers[0].exited_at, t0 - seconds(5));
  EXPECT_FALSE(core.next_deadline());
}

// Path names cost wardend memory: a user's running jobs register at most so many bytes of them,
// given back when a job is cleaned, taken back or a registration undone.
TEST_F(SupervisorTest, AUsersRunningJobsRegisterPathsUpToTheirByteBound) {
  core.set_limits({.max_path_bytes_per_user = 10'000});
  auto path = [](int i) {
    return TrackedPath{.kind = PathKind::file,
                       .path = "/tmp/" + std::string(2800, 'p') + std::to_string(i),
                       .identity = {.ino = static_cast<ino_t>(i), .uid = 1000}};
  };
  JobId a = core.register_job(kAlice, spec(), proc(10), t0);
  JobId b = core.register_job(kAlice, spec(), proc(20), t0);
  core.add_path(kAlice, a, path(1));
  core.add_path(kAlice, a, path(2));
  core.add_path(kAlice, b, path(3));
  EXPECT_EQ(code_of([&] { core.add_path(kAlice, b, path(4)); }), ErrorCode::limit_exceeded)
      << "the bound is the user's, over all its jobs";
  JobId other = core.register_job(kBob, spec(), proc(30, 1001), t0);
  TrackedPath bobs = path(5);
  bobs.identity.uid = 1001;
  EXPECT_FALSE(core.add_path(kBob, other, bobs)) << "another user has a bound of its own";

  core.discard_path(b, PathKind::file, path(3).path, std::nullopt);
  EXPECT_FALSE(core.add_path(kAlice, b, path(4))) << "an undone registration gives its bytes back";
  core.end_job(kAlice, a, false);
  core.cleanup_finished(a, CleanupReport{}, t0);
  EXPECT_FALSE(core.add_path(kAlice, b, path(6))) << "a cleaned job's are given back";
  EXPECT_FALSE(core.add_path(kAlice, b, path(7)));
  EXPECT_EQ(code_of([&] { core.add_path(kAlice, b, path(8)); }), ErrorCode::limit_exceeded);
}

TEST_F(SupervisorTest, UndoTakesBackExactlyTheChange) {
  JobId id = core.register_job(kAlice, spec(seconds(5)), proc(10), t0);
  EXPECT_TRUE(core.add_process(kAlice, id, proc(11)));
  EXPECT_FALSE(core.add_process(kAlice, id, proc(11))) << "already tracked";
  core.discard_process(id, proc(11));
  EXPECT_TRUE(core.find(id)->workers.empty());

  TrackedPath first{.kind = PathKind::file, .path = "/tmp/f", .identity = {.ino = 1, .uid = 1000}};
  TrackedPath second = first;
  second.identity.ino = 2;
  EXPECT_FALSE(core.add_path(kAlice, id, first));
  auto previous = core.add_path(kAlice, id, second);
  ASSERT_TRUE(previous);
  core.discard_path(id, PathKind::file, "/tmp/f", previous);
  EXPECT_EQ(core.find(id)->paths.at(0).identity.ino, 1u) << "the earlier registration is back";

  TrackedHook a{.command = {.argv = {"/bin/a"}}}, b{.command = {.argv = {"/bin/b"}}};
  core.add_hook(kAlice, id, a);
  core.add_hook(kAlice, id, b);
  core.discard_hook(id, a);
  ASSERT_EQ(core.find(id)->hooks.size(), 1u);
  EXPECT_EQ(core.find(id)->hooks[0], b);

  EXPECT_TRUE(core.discard_job(id));
  EXPECT_EQ(core.find(id), nullptr);
  EXPECT_FALSE(core.next_deadline()) << "its deadline went with it";
  // The user's job count went back down too.
  Supervisor limited({.max_jobs_per_user = 1});
  JobId only = limited.register_job(kAlice, spec(), proc(10), t0);
  limited.discard_job(only);
  EXPECT_NO_THROW(limited.register_job(kAlice, spec(), proc(11), t0));
}

}  // namespace
}  // namespace warden
