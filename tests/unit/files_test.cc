#include "world/files.h"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "tests/support/expect_error.h"
#include "tests/support/temp_dir.h"

namespace warden {
namespace {

namespace fs = std::filesystem;
using testing::code_of;

class Files : public ::testing::Test {
 protected:
  void SetUp() override {
    dir = temp.path();
    outside = dir + "-outside";
    fs::create_directory(outside);
    rules.allowed_roots = {dir + "/root"};
    fs::create_directory(dir + "/root");
    root = dir + "/root";
  }
  void TearDown() override {
    ::umount2((root + "/tree/mnt").c_str(), MNT_DETACH);
    fs::remove_all(outside);
  }

  static void write(const std::string& path, const std::string& text = "x") {
    std::ofstream(path) << text;
  }

  PathReport remove(const TrackedPath& p) { return remove_path(rules, AT_FDCWD, p, ::getuid()); }

  testing::TempDir temp{"warden-files"};
  std::string dir, root, outside;
  PathRules rules;
};

TEST_F(Files, RegistersAFileBeneathAnAllowedRoot) {
  write(root + "/a");
  auto p = resolve_path(rules, AT_FDCWD, PathKind::file, root + "//a");
  EXPECT_EQ(p.path, root + "/a");
  EXPECT_EQ(p.identity.uid, ::getuid());
  EXPECT_EQ(p.identity.type, S_IFREG);
}

TEST_F(Files, RefusesBadPathsAtRegistration) {
  write(root + "/a");
  fs::create_directory(root + "/d");
  fs::create_symlink(root + "/a", root + "/link");
  fs::create_directory_symlink(outside, root + "/dirlink");
  write(outside + "/victim");
  auto code = [&](PathKind kind, const std::string& path) {
    return code_of([&] { resolve_path(rules, AT_FDCWD, kind, path); });
  };
  EXPECT_EQ(code(PathKind::file, "a"), ErrorCode::bad_request) << "relative";
  EXPECT_EQ(code(PathKind::file, root + "/d/../a"), ErrorCode::bad_request) << "..";
  EXPECT_EQ(code(PathKind::file, outside + "/victim"), ErrorCode::bad_request) << "outside roots";
  EXPECT_EQ(code(PathKind::dir, root), ErrorCode::bad_request) << "the root itself";
  EXPECT_EQ(code(PathKind::file, root + "/link"), ErrorCode::bad_request) << "a symlink";
  EXPECT_EQ(code(PathKind::file, root + "/dirlink/victim"), ErrorCode::bad_request)
      << "a symlink on the way";
  EXPECT_EQ(code(PathKind::file, root + "/d"), ErrorCode::bad_request) << "a directory as a file";
  EXPECT_EQ(code(PathKind::dir, root + "/a"), ErrorCode::bad_request) << "a file as a directory";
  EXPECT_EQ(code(PathKind::file, root + "/missing"), ErrorCode::not_found);
  EXPECT_EQ(code(PathKind::shm, "a/b"), ErrorCode::bad_request);
  EXPECT_EQ(code(PathKind::shm_glob, "torch_*/x"), ErrorCode::bad_request);
}

TEST_F(Files, RefusesDevices) {
  if (::geteuid() != 0) GTEST_SKIP() << "mknod needs root";
  ASSERT_EQ(::mknod((root + "/null").c_str(), S_IFCHR | 0666, ::makedev(1, 3)), 0);
  EXPECT_EQ(code_of([&] { resolve_path(rules, AT_FDCWD, PathKind::file, root + "/null"); }),
            ErrorCode::bad_request);
}

TEST_F(Files, RemovesAFileAndReportsOneAlreadyGone) {
  write(root + "/a");
  auto p = resolve_path(rules, AT_FDCWD, PathKind::file, root + "/a");
  EXPECT_EQ(remove(p).outcome, Outcome::removed);
  EXPECT_FALSE(fs::exists(root + "/a"));
  EXPECT_EQ(remove(p).outcome, Outcome::already_gone);
}

TEST_F(Files, FileSwappedForASymlinkIsRefusedAndTheTargetSurvives) {
  write(root + "/a");
  write(outside + "/canary", "alive");
  auto p = resolve_path(rules, AT_FDCWD, PathKind::file, root + "/a");
  fs::remove(root + "/a");
  fs::create_symlink(outside + "/canary", root + "/a");
  auto r = remove(p);
  EXPECT_EQ(r.outcome, Outcome::refused);
  EXPECT_TRUE(fs::exists(outside + "/canary"));
}

TEST_F(Files, FileSwappedForAnotherFileIsRefused) {
  write(root + "/a");
  auto p = resolve_path(rules, AT_FDCWD, PathKind::file, root + "/a");
  write(root + "/b");
  fs::rename(root + "/b", root + "/a");
  EXPECT_EQ(remove(p).outcome, Outcome::refused);
  EXPECT_TRUE(fs::exists(root + "/a"));
}

TEST_F(Files, RemovesADirectoryTree) {
  fs::create_directories(root + "/tree/x/y");
  write(root + "/tree/f");
  write(root + "/tree/x/y/g");
  fs::create_symlink(outside, root + "/tree/x/escape");
  write(outside + "/canary");
  auto p = resolve_path(rules, AT_FDCWD, PathKind::dir, root + "/tree");
  auto r = remove(p);
  EXPECT_EQ(r.outcome, Outcome::removed) << r.detail;
  EXPECT_EQ(r.removed, 6u);  // f, x, y, g, escape, and tree itself
  EXPECT_FALSE(fs::exists(root + "/tree"));
  EXPECT_TRUE(fs::exists(outside + "/canary")) << "a symlink inside is removed, not followed";
}

TEST_F(Files, DirectorySwappedForASymlinkIsRefusedAndItsTargetSurvives) {
  fs::create_directory(root + "/tree");
  write(outside + "/canary");
  auto p = resolve_path(rules, AT_FDCWD, PathKind::dir, root + "/tree");
  fs::remove(root + "/tree");
  fs::create_directory_symlink(outside, root + "/tree");
  EXPECT_EQ(remove(p).outcome, Outcome::refused);
  EXPECT_TRUE(fs::exists(outside + "/canary"));
}

TEST_F(Files, ParentSwappedForASymlinkIsRefusedAndTheCanarySurvives) {
  fs::create_directory(root + "/parent");
  write(root + "/parent/a");
  write(outside + "/a", "canary");
  auto p = resolve_path(rules, AT_FDCWD, PathKind::file, root + "/parent/a");
  fs::rename(root + "/parent", root + "/old");
  fs::create_directory_symlink(outside, root + "/parent");
  EXPECT_EQ(remove(p).outcome, Outcome::refused);
  EXPECT_TRUE(fs::exists(outside + "/a"));
}

TEST_F(Files, DoesNotCrossIntoAMountInsideATree) {
  if (::geteuid() != 0) GTEST_SKIP() << "mounting needs root";
  fs::create_directories(root + "/tree/mnt");
  if (::mount("tmpfs", (root + "/tree/mnt").c_str(), "tmpfs", 0, nullptr) != 0) {
    GTEST_SKIP() << "cannot mount tmpfs here";
  }
  write(root + "/tree/mnt/inside");
  auto r = remove(resolve_path(rules, AT_FDCWD, PathKind::dir, root + "/tree"));
  EXPECT_EQ(r.outcome, Outcome::failed);
  EXPECT_NE(r.detail.find("mount point"), std::string::npos) << r.detail;
  EXPECT_TRUE(fs::exists(root + "/tree/mnt/inside"));
}

TEST_F(Files, ShmSegmentsAndGlobsLiveInTheShmDirectory) {
  rules.shm_dir = root;
  write(root + "/seg");
  write(root + "/torch_42_a");
  write(root + "/torch_42_b");
  write(root + "/torch_43_a");
  auto seg = resolve_path(rules, AT_FDCWD, PathKind::shm, "/seg");
  EXPECT_EQ(seg.path, root + "/seg");
  EXPECT_EQ(remove(seg).outcome, Outcome::removed);

  auto glob = resolve_path(rules, AT_FDCWD, PathKind::shm_glob, "torch_42_*");
  auto r = remove(glob);
  EXPECT_EQ(r.outcome, Outcome::removed);
  EXPECT_EQ(r.removed, 2u);
  EXPECT_TRUE(fs::exists(root + "/torch_43_a"));
  EXPECT_EQ(remove(glob).outcome, Outcome::already_gone);
}

TEST_F(Files, GlobSparesOtherUsersSegments) {
  if (::geteuid() != 0) GTEST_SKIP() << "chown needs root";
  rules.shm_dir = root;
  write(root + "/torch_1_a");
  ASSERT_EQ(::chown((root + "/torch_1_a").c_str(), 65534, 65534), 0);
  auto r = remove(resolve_path(rules, AT_FDCWD, PathKind::shm_glob, "torch_1_*"));
  EXPECT_EQ(r.outcome, Outcome::already_gone);
  EXPECT_TRUE(fs::exists(root + "/torch_1_a"));
}

// A container's file tree, as a job in it names its paths: "/tmp/x" means the container's /tmp,
// and a symlink in it (an absolute /tmp -> /scratch, common in images) resolves within it.
TEST_F(Files, PathsOfAJobWithAnotherRootAreFoundAndRemovedBeneathThatRoot) {
  const std::string container = dir + "/container";
  fs::create_directories(container + "/scratch");
  fs::create_directory_symlink("/scratch", container + "/tmp");
  fs::create_directories(container + "/dev/shm");
  write(container + "/scratch/x");
  write(container + "/dev/shm/seg");
  PathRules in_container{.allowed_roots = {"/tmp", "/dev/shm"}, .shm_dir = "/dev/shm"};
  UniqueFd container_root(::open(container.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  ASSERT_TRUE(container_root);

  auto file = resolve_path(in_container, container_root.get(), PathKind::file, "/tmp/x");
  EXPECT_EQ(file.path, "/tmp/x") << "named as the job wrote it";
  auto seg = resolve_path(in_container, container_root.get(), PathKind::shm, "seg");
  EXPECT_EQ(code_of([&] {
              resolve_path(in_container, container_root.get(), PathKind::file, "/tmp/missing");
            }),
            ErrorCode::not_found);

  EXPECT_EQ(remove_path(in_container, container_root.get(), file, ::getuid()).outcome,
            Outcome::removed);
  EXPECT_EQ(remove_path(in_container, container_root.get(), seg, ::getuid()).outcome,
            Outcome::removed);
  EXPECT_FALSE(fs::exists(container + "/scratch/x"));
  EXPECT_FALSE(fs::exists(container + "/dev/shm/seg"));
}

}  // namespace
}  // namespace warden
