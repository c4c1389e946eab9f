// The jobs' tracking cgroups (edge/job_cgroups.h) against the Cgroups seam in memory, with real
// processes: what is made, moved, given back and swept.
#include "edge/job_cgroups.h"

#include <boost/asio/io_context.hpp>
#include <gtest/gtest.h>

#include "tests/support/fake_cgroups.h"
#include "tests/support/processes.h"

namespace warden {
namespace {

constexpr const char* kPrefix = "warden-test-";

class JobCgroupsTest : public ::testing::Test {
 protected:
  ~JobCgroupsTest() override { testing::kill_and_reap(spawned); }

  pid_t spawn() {
    spawned.push_back(testing::spawn(testing::Behaviour::sleep));
    return spawned.back();
  }
  // A running job whose main process is `main`, in `cgroup` ("" for none).
  JobId job(pid_t main, const std::string& cgroup = "") {
    JobId id = core.register_job(Caller{.pid = main}, JobSpec{.name = "j"},
                                 open_process(main).identity, Clock::now());
    core.set_cgroup(id, cgroup);
    return id;
  }

  boost::asio::io_context io;
  testing::FakeCgroups fake{io.get_executor()};
  Supervisor core;
  JobCgroups cgroups{&fake, kPrefix, core};
  std::vector<pid_t> spawned;
};

TEST_F(JobCgroupsTest, AJobsLeafIsMadeBeneathItsMainsCgroupWithItsMainAndTheChildrenBesideIt) {
  testing::ProcessTree tree = testing::spawn_tree({testing::Behaviour::sleep});
  spawned = {tree.main, tree.workers[0]};
  fake.members_of["/slurm/step"] = {tree.main, tree.workers[0]};
  JobId id = job(tree.main);
  std::string leaf = cgroups.make_leaf(id, open_process(tree.main));
  EXPECT_EQ(leaf, "/slurm/step/warden-test-" + std::to_string(id));
  EXPECT_EQ(fake.cgroup_of(tree.main), leaf);
  EXPECT_EQ(fake.cgroup_of(tree.workers[0]), leaf) << "a child that shared its cgroup";
}

TEST_F(JobCgroupsTest, TheMainOfARunningTrackedJobGetsNoLeafNestedInItsOwn) {
  pid_t main = spawn();
  JobId first = job(main);
  core.set_cgroup(first, cgroups.make_leaf(first, open_process(main)));
  JobId again = job(main);
  EXPECT_EQ(cgroups.make_leaf(again, open_process(main)), "") << "tracked by scanning";
  EXPECT_EQ(fake.cgroup_of(main), core.find(first)->cgroup);
}

TEST_F(JobCgroupsTest, AWorkerBesideTheMainJoinsItsLeafAndOneElsewhereGetsALeafOfItsOwn) {
  pid_t main = spawn(), beside = spawn(), elsewhere = spawn();
  fake.members_of["/step"] = {main, beside};
  fake.members_of["/other"] = {elsewhere};
  JobId id = job(main);
  core.set_cgroup(id, cgroups.make_leaf(id, open_process(main)));
  const Job& j = *core.find(id);
  EXPECT_EQ(cgroups.adopt(j, open_process(beside)), "") << "no new leaf to record";
  EXPECT_EQ(fake.cgroup_of(beside), j.cgroup);
  std::string leaf = cgroups.adopt(j, open_process(elsewhere));
  EXPECT_EQ(leaf, "/other/warden-test-" + std::to_string(id));
  EXPECT_EQ(fake.cgroup_of(elsewhere), leaf);
  EXPECT_EQ(cgroups.tracking_of(j, elsewhere), "scan") << "until the job records the leaf";
  core.add_cgroup(id, leaf);
  EXPECT_EQ(cgroups.tracking_of(*core.find(id), elsewhere), "cgroup");
  EXPECT_EQ(cgroups.owner(leaf), core.find(id));
  pid_t also_elsewhere = spawn();
  fake.members_of["/other"].insert(also_elsewhere);
  EXPECT_EQ(cgroups.adopt(*core.find(id), open_process(also_elsewhere)), "")
      << "a leaf the job has already is not returned again";
  EXPECT_EQ(fake.cgroup_of(also_elsewhere), leaf);
}

TEST_F(JobCgroupsTest, AProcessInAnotherJobsLeafStaysThere) {
  pid_t main = spawn(), other_main = spawn();
  JobId id = job(main), other = job(other_main);
  core.set_cgroup(id, cgroups.make_leaf(id, open_process(main)));
  core.set_cgroup(other, cgroups.make_leaf(other, open_process(other_main)));
  EXPECT_EQ(cgroups.adopt(*core.find(id), open_process(other_main)), "");
  EXPECT_EQ(fake.cgroup_of(other_main), core.find(other)->cgroup);
  EXPECT_EQ(cgroups.tracking_of(*core.find(id), other_main), "scan");
}

TEST_F(JobCgroupsTest, TheSweepGivesBackWhatNoJobOwnsAndKeepsARunningJobsLeaf) {
  pid_t stray = spawn();
  fake.members_of["/warden-test-99"] = {stray};  // a job never recorded
  fake.members_of["/someone-else"] = {};
  pid_t running_main = spawn();
  JobId running = job(running_main);
  core.set_cgroup(running, cgroups.make_leaf(running, open_process(running_main)));
  cgroups.sweep();
  EXPECT_EQ(fake.cgroup_of(stray), "/") << "back to the cgroup above";
  EXPECT_TRUE(fake.called("remove /warden-test-99"));
  EXPECT_FALSE(fake.called("kill " + core.find(running)->cgroup)) << "a running job's is kept";
  EXPECT_TRUE(fake.members_of.contains("/someone-else")) << "not this wardend's";
}

TEST_F(JobCgroupsTest, WithoutCgroupsEveryJobIsTrackedByScanning) {
  JobCgroups none(nullptr, kPrefix, core);
  pid_t main = spawn();
  JobId id = job(main);
  EXPECT_EQ(none.make_leaf(id, open_process(main)), "");
  EXPECT_EQ(none.tracking_of(*core.find(id), main), "scan");
  none.sweep();  // nothing to do, nothing to crash on
}

}  // namespace
}  // namespace warden
