// What jobs make on the roots: the bookkeeping (Creations), and the fanotify watch against a real
// directory, with real processes making and removing files in it.
#include "world/creations.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>

#include <boost/asio/io_context.hpp>
#include <gtest/gtest.h>

#include "tests/support/temp_dir.h"

namespace warden {
namespace {

using namespace std::chrono_literals;

HeldObject object(const std::string& path, ino_t ino) {
  return {.path = path, .dev = 1, .ino = ino};
}

TEST(Creations, AJobTakesWhatItMadeAndHasNotRemovedOnce) {
  Creations c;
  EXPECT_TRUE(c.add(7, object("/dev/shm/a", 1)));
  EXPECT_TRUE(c.add(7, object("/dev/shm/b", 2)));
  EXPECT_TRUE(c.add(8, object("/dev/shm/c", 3)));
  c.remove("/dev/shm/b");
  auto taken = c.take(7);
  ASSERT_EQ(taken.size(), 1u);
  EXPECT_EQ(taken[0].path, "/dev/shm/a");
  EXPECT_TRUE(c.take(7).empty()) << "taken once";
  EXPECT_EQ(c.size(), 1u) << "job 8's is still there";
}

TEST(Creations, ANameMadeAgainByAnotherJobIsThatJobsOnly) {
  Creations c;
  c.add(7, object("/dev/shm/x", 1));
  c.remove("/dev/shm/x");
  c.add(8, object("/dev/shm/x", 2));  // unlinked by 7, made again by 8
  EXPECT_TRUE(c.take(7).empty());
  auto taken = c.take(8);
  ASSERT_EQ(taken.size(), 1u);
  EXPECT_EQ(taken[0].ino, 2u);

  c.add(7, object("/dev/shm/y", 3));
  c.add(8, object("/dev/shm/y", 4));  // the removal went unseen: the latest maker has it
  EXPECT_TRUE(c.take(7).empty());
  EXPECT_EQ(c.take(8).size(), 1u);
}

TEST(Creations, AJobIsBoundedAndTheRestGoesUnrecorded) {
  Creations c;
  for (std::size_t i = 0; i < Creations::kMaxPerJob; ++i) {
    ASSERT_TRUE(c.add(7, object("/tmp/f" + std::to_string(i), i + 1)));
  }
  EXPECT_FALSE(c.add(7, object("/tmp/one-more", 1'000'000)));
  EXPECT_TRUE(c.add(8, object("/tmp/another-jobs", 1'000'001))) << "the bound is per job";
  EXPECT_EQ(c.take(7).size(), Creations::kMaxPerJob);
}

TEST(Creations, WhatNoJobMadeIsClaimedByItsMakerOnceUnlessRemovedOrMadeAgain) {
  Creations c;
  const ProcessIdentity maker{.pid = 42, .start_time = 9};
  c.add_unclaimed({.object = object("/dev/shm/u", 1), .maker = maker});
  c.add_unclaimed({.object = object("/dev/shm/v", 2), .maker = maker});
  c.add_unclaimed({.object = object("/dev/shm/w", 3), .maker = {.pid = 43, .start_time = 9}});
  c.remove("/dev/shm/v");
  EXPECT_TRUE(c.claim({{.pid = 42, .start_time = 10}}).empty()) << "another process by that pid";
  auto claimed = c.claim({maker});
  ASSERT_EQ(claimed.size(), 1u);
  EXPECT_EQ(claimed[0].path, "/dev/shm/u");
  EXPECT_TRUE(c.claim({maker}).empty()) << "claimed once";
  c.add(7, object("/dev/shm/w", 4));  // made again, by a job's process
  EXPECT_TRUE(c.claim({{.pid = 43, .start_time = 9}}).empty());
  EXPECT_EQ(c.take(7).size(), 1u);
  EXPECT_EQ(c.size(), 0u);
}

TEST(Creations, TheOldestUnclaimedGoFirstPastTheBound) {
  Creations c;
  for (std::size_t i = 0; i <= Creations::kMaxUnclaimed; ++i) {
    c.add_unclaimed({.object = object("/tmp/u" + std::to_string(i), i + 1),
                     .maker = {.pid = 42, .start_time = 9}});
  }
  EXPECT_EQ(c.size(), Creations::kMaxUnclaimed);
  auto claimed = c.claim({{.pid = 42, .start_time = 9}});
  EXPECT_EQ(claimed.size(), Creations::kMaxUnclaimed);
  EXPECT_TRUE(std::none_of(claimed.begin(), claimed.end(),
                           [](const HeldObject& h) { return h.path == "/tmp/u0"; }))
      << "the oldest went first";
}

class Watch : public ::testing::Test {
 protected:
  // Runs the loop until `changes` holds `count` changes or 5 s pass.
  void wait_for(std::size_t count) {
    for (auto until = std::chrono::steady_clock::now() + 5s;
         changes.size() < count && std::chrono::steady_clock::now() < until;) {
      io.run_for(10ms);
    }
  }

  testing::TempDir root{"warden-creations"};
  boost::asio::io_context io;
  std::vector<RootChange> changes;
};

TEST_F(Watch, NamesTheProcessThatMadeAFileAndSeesItRemoved) {
  CreationWatch watch(io.get_executor(), {root.path(), "/no/such/root"},
                      [this](const std::vector<RootChange>& c) {
                        changes.insert(changes.end(), c.begin(), c.end());
                      });
  if (!watch.unavailable().empty()) GTEST_SKIP() << watch.unavailable();
  EXPECT_EQ(watch.roots(), std::vector<std::string>{root.path()}) << "a missing root is skipped";

  const std::string path = root / "made-and-closed";
  pid_t maker = ::fork();
  if (maker == 0) {
    int fd = ::open(path.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    ::_exit(fd >= 0 && ::write(fd, "x", 1) == 1 && ::close(fd) == 0 ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(maker, &status, 0), maker);
  ASSERT_EQ(status, 0);
  ::mkdir((root / "a-directory").c_str(), 0700);  // not a file: not recorded as made

  wait_for(1);
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_TRUE(changes[0].created);
  EXPECT_EQ(changes[0].pid, maker);
  EXPECT_EQ(changes[0].object.path, path);
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(changes[0].object.ino, st.st_ino);
  EXPECT_EQ(changes[0].object.dev, st.st_dev);

  ::unlink(path.c_str());
  wait_for(2);
  ASSERT_EQ(changes.size(), 2u);
  EXPECT_FALSE(changes[1].created);
  EXPECT_EQ(changes[1].object.path, path);
  EXPECT_EQ(changes[1].pid, ::getpid());
}

TEST_F(Watch, ARenameIntoTheRootIsAMakingAndOutOfItARemoval) {
  CreationWatch watch(io.get_executor(), {root.path()}, [this](const std::vector<RootChange>& c) {
    changes.insert(changes.end(), c.begin(), c.end());
  });
  if (!watch.unavailable().empty()) GTEST_SKIP() << watch.unavailable();
  ASSERT_EQ(::mkdir((root / "sub").c_str(), 0700), 0);
  int fd = ::open((root / "sub/tmp").c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0);
  ::close(fd);
  ASSERT_EQ(::rename((root / "sub/tmp").c_str(), (root / "final").c_str()), 0);
  wait_for(1);
  ASSERT_EQ(changes.size(), 1u) << "the subdirectory's own entries are not watched";
  EXPECT_TRUE(changes[0].created);
  EXPECT_EQ(changes[0].object.path, root / "final");

  ASSERT_EQ(::rename((root / "final").c_str(), (root / "sub/back").c_str()), 0);
  wait_for(2);
  ASSERT_EQ(changes.size(), 2u);
  EXPECT_FALSE(changes[1].created);
  EXPECT_EQ(changes[1].object.path, root / "final");
}

}  // namespace
}  // namespace warden
