#include "edge/store.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "core/wall_clock.h"
#include "tests/support/temp_dir.h"

namespace warden {
namespace {

namespace fs = std::filesystem;
using std::chrono::seconds;

void write(Store& store, std::vector<Record> records) { store.write(records); }

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir = temp.path();
    path = temp / "warden.db";
  }

  Job sample_job() {
    Job job;
    job.id = 7;
    job.uid = 1000;
    job.gid = 1001;
    job.spec = {
        .name = "train",
        .heartbeat = seconds(30),
        .grace = std::chrono::milliseconds(1500),
        .kill_main_on_stall = true,
        .diagnose = CommandSpec{.argv = {"py-spy", "dump", "--pid", "{pid}"}, .timeout_s = 5},
        .home = JobHome{.pid_ns = 4026532001,
                        .mount_ns = 4026532002,
                        .root_dev = 64769,
                        .root_ino = 1ULL << 40}};
    job.main = {.pid = 4242, .start_time = 123456789, .uid = 1000};
    job.cgroup = "/user.slice/warden-0123456789abcdef-7";
    job.created = Clock::now() - seconds(60);
    return job;
  }

  testing::TempDir temp{"warden-store"};
  std::string dir, path;
};

TEST_F(StoreTest, WhatIsWrittenIsLoadedBackAfterReopening) {
  Job job = sample_job();
  TrackedPath file{.kind = PathKind::dir,
                   .path = "/tmp/x",
                   .identity = {.dev = 64769, .ino = 1ULL << 40, .uid = 1000, .type = 0040000},
                   .policy = Policy::failure};
  TrackedHook hook{
      .command = {.argv = {"/bin/true"}, .env = {{"A", "b"}}, .cwd = "/", .timeout_s = 2}};
  {
    Store store({.path = path});
    write(store, {job_record(job), event_record(job), NextJobId{8},
                  ProcessRecord{7, {.identity = {.pid = 4243, .start_time = 99, .uid = 1000}}},
                  PathRecord{7, file}, HookRecord{7, hook}});
  }
  Store store({.path = path});
  StoredState state = store.load();
  EXPECT_EQ(state.next_id, 8u);
  ASSERT_EQ(state.jobs.size(), 1u);
  const Job& j = state.jobs[0];
  EXPECT_EQ(j.id, 7u);
  EXPECT_EQ(j.uid, 1000u);
  EXPECT_EQ(j.gid, 1001u);
  EXPECT_EQ(j.spec.name, "train");
  EXPECT_EQ(j.spec.heartbeat, seconds(30));
  EXPECT_EQ(j.spec.grace, std::chrono::milliseconds(1500));
  EXPECT_TRUE(j.spec.kill_main_on_stall);
  ASSERT_TRUE(j.spec.diagnose);
  EXPECT_EQ(*j.spec.diagnose, *job.spec.diagnose);
  EXPECT_EQ(j.spec.home, job.spec.home) << "a container job's namespaces, to be found again";
  EXPECT_EQ(j.main, job.main);
  EXPECT_EQ(j.cgroup, job.cgroup);
  EXPECT_EQ(j.state, JobState::running);
  EXPECT_NEAR(to_seconds(j.created - job.created), 0, 0.01);
  ASSERT_EQ(j.workers.size(), 1u);
  EXPECT_EQ(j.workers[0].identity.pid, 4243);
  ASSERT_EQ(j.paths.size(), 1u);
  EXPECT_EQ(j.paths[0].identity, file.identity);
  EXPECT_EQ(j.paths[0].policy, Policy::failure);
  ASSERT_EQ(j.hooks.size(), 1u);
  EXPECT_EQ(j.hooks[0], hook);
}

TEST_F(StoreTest, HowFarEachHookGotIsLoadedBack) {
  Job job = sample_job();
  auto hook = [](const char* name) { return TrackedHook{.command = {.argv = {name}}}; };
  CommandReport ended{.argv = {"/bin/a"}, .exit_code = 0, .output = "ok\n", .elapsed_ms = 3};
  {
    Store store({.path = path});
    write(store, {job_record(job), HookRecord{7, hook("/bin/a")}, HookRecord{7, hook("/bin/b")},
                  HookRecord{7, hook("/bin/c")}});
    write(store, {HookRun{.job = 7, .index = 0}, HookRun{.job = 7, .index = 0, .report = ended},
                  HookRun{.job = 7, .index = 1}});
  }
  Store store({.path = path});
  StoredState state = store.load();
  const auto& hooks = state.jobs.at(0).hooks;
  ASSERT_EQ(hooks.size(), 3u);
  EXPECT_TRUE(hooks[0].started);
  ASSERT_TRUE(hooks[0].finished);
  EXPECT_EQ(hooks[0].finished->output, "ok\n");
  EXPECT_EQ(hooks[0].finished->exit_code, 0);
  EXPECT_TRUE(hooks[1].started) << "running when wardend stopped";
  EXPECT_FALSE(hooks[1].finished);
  EXPECT_FALSE(hooks[2].started);
}

TEST_F(StoreTest, LaterJobRowsReplaceEarlierOnesAndForgottenJobsLeaveNoRows) {
  Job job = sample_job();
  Store store({.path = path});
  write(store, {job_record(job), ProcessRecord{7, {.identity = {.pid = 1, .start_time = 2}}}});
  job.state = JobState::cleaned;
  job.reason = JobState::stalled;
  job.reason_detail = "no heartbeat for 30.0 s";
  job.report = CleanupReport{.reason = JobState::stalled, .duration_ms = 12.5};
  job.finished = Clock::now();
  write(store, {job_record(job)});
  auto loaded = store.load().jobs.at(0);
  EXPECT_EQ(loaded.state, JobState::cleaned);
  EXPECT_EQ(loaded.reason, JobState::stalled);
  EXPECT_EQ(loaded.reason_detail, "no heartbeat for 30.0 s");
  ASSERT_TRUE(loaded.report);
  EXPECT_EQ(loaded.report->duration_ms, 12.5);

  write(store, {JobForgotten{7}});
  EXPECT_TRUE(store.load().jobs.empty());
}

TEST_F(StoreTest, EventsAreServedPerUserAndTrimmedToTheirBound) {
  Store store({.path = path, .events_max_count = 5});
  Job job = sample_job();
  for (int i = 0; i < 8; ++i) {
    job.id = 100 + i;
    job.uid = i % 2 == 0 ? 1000 : 2000;
    write(store, {event_record(job)});
  }
  auto all = store.events({});
  ASSERT_EQ(all.size(), 5u) << "only the newest 5 are kept";
  EXPECT_EQ(all.front()["job"], 103);
  EXPECT_EQ(all.back()["job"], 107);
  auto mine = store.events({.uid = 1000});
  for (const auto& e : mine) EXPECT_EQ(e["uid"], 1000);
  EXPECT_EQ(mine.size(), 2u);
  auto after = store.events({.after_seq = all[2]["seq"].get<std::int64_t>(), .limit = 1});
  ASSERT_EQ(after.size(), 1u);
  EXPECT_EQ(after[0]["job"], 106);
  auto latest = store.events({.limit = 2});
  ASSERT_EQ(latest.size(), 2u);
  EXPECT_EQ(latest[0]["job"], 106) << "the latest, oldest first";
}

TEST_F(StoreTest, OldEventsAgeOut) {
  std::int64_t now = 1'000'000;
  Store store({.path = path, .events_max_age_ms = 1000, .now_unix_ms = [&now] { return now; }});
  Event old = event_record(sample_job());
  old.unix_ms = now;
  write(store, {old});
  now += 1000;
  EXPECT_EQ(store.events({}).size(), 1u) << "as old as the limit: kept";
  now += 1;
  EXPECT_TRUE(store.events({}).empty()) << "older: no longer shown, even before it is trimmed";
  Event recent = old;
  recent.unix_ms = now;
  write(store, {recent});
  now -= 1;  // were the old one still in the store, it would show again
  auto left = store.events({});
  ASSERT_EQ(left.size(), 1u) << "writing trimmed the old one";
  EXPECT_EQ(left[0]["unix_ms"], recent.unix_ms);
}

TEST_F(StoreTest, GarbageIsRefusedWithAMessageThatSaysWhatToDo) {
  std::ofstream(path) << std::string(4096, 'x');
  try {
    Store store({.path = path});
    FAIL() << "opened a file that is not a database";
  } catch (const StoreError& e) {
    EXPECT_NE(std::string(e.what()).find(path + " cannot be read"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("mv " + path), std::string::npos) << e.what();
  }
}

TEST_F(StoreTest, AStoreFromANewerWardendIsRefused) {
  { Store store({.path = path}); }
  {
    SQLite::Database db(path, SQLite::OPEN_READWRITE);
    db.exec("PRAGMA user_version=99");
  }
  EXPECT_THROW(Store({.path = path}), StoreError);
}

TEST_F(StoreTest, AStoreOfSchema1IsUpgradedInPlaceAndKeepsItsJobs) {
  // A store as the wardend before tracking cgroups left it: no cgroup columns, user_version 1.
  Job job = sample_job();
  {
    Store store({.path = path});
    write(store, {job_record(job)});
  }
  {
    SQLite::Database db(path, SQLite::OPEN_READWRITE);
    db.exec("ALTER TABLE jobs DROP COLUMN cgroup");
    db.exec("ALTER TABLE jobs DROP COLUMN more_cgroups");
    db.exec("ALTER TABLE hooks DROP COLUMN run");
    db.exec("PRAGMA user_version=1");
  }
  {
    Store store({.path = path});
    StoredState state = store.load();
    ASSERT_EQ(state.jobs.size(), 1u);
    EXPECT_EQ(state.jobs[0].spec.name, "train");
    EXPECT_EQ(state.jobs[0].cgroup, "") << "tracked by scanning, as it was";
    write(store, {job_record(job)});
  }
  Store store({.path = path});
  EXPECT_EQ(store.load().jobs.at(0).cgroup, job.cgroup) << "the new column is written and read";
  SQLite::Database db(path, SQLite::OPEN_READONLY);
  EXPECT_EQ(db.execAndGet("PRAGMA user_version").getInt(), 4);
}

TEST_F(StoreTest, ARowThatDoesNotParseIsReportedNotSkipped) {
  {
    Store store({.path = path});
    write(store, {job_record(sample_job())});
  }
  {
    SQLite::Database db(path, SQLite::OPEN_READWRITE);
    db.exec("UPDATE jobs SET spec = 'not json'");
  }
  Store store({.path = path});
  EXPECT_THROW(store.load(), StoreError);
}

}  // namespace
}  // namespace warden
