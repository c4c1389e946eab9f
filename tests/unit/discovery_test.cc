// What a job's processes hold and map, read from a real process: through PROCMAP_QUERY where the
// kernel has it, and from the text of /proc/PID/maps as older kernels give it, with one answer.
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <mutex>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "world/discovery.h"

namespace warden {
namespace {

// A child that holds one segment open and maps another whose descriptor it closed, as a
// DataLoader worker does with its batches, and maps a third privately (a copy).
class Holder {
 public:
  Holder() {
    int ready[2];
    if (::pipe(ready) != 0) throw std::runtime_error("pipe");
    pid_ = ::fork();
    if (pid_ == 0) {
      ::close(ready[0]);
      int held = ::shm_open(name("held").c_str(), O_CREAT | O_RDWR, 0600);
      int mapped = ::shm_open(name("mapped").c_str(), O_CREAT | O_RDWR, 0600);
      int copied = ::shm_open(name("copied").c_str(), O_CREAT | O_RDWR, 0600);
      if (held < 0 || mapped < 0 || copied < 0 || ::ftruncate(mapped, 4096) != 0 ||
          ::ftruncate(copied, 4096) != 0) {
        ::_exit(1);
      }
      if (::mmap(nullptr, 4096, PROT_READ, MAP_SHARED, mapped, 0) == MAP_FAILED ||
          ::mmap(nullptr, 4096, PROT_READ, MAP_PRIVATE, copied, 0) == MAP_FAILED) {
        ::_exit(1);
      }
      ::close(mapped);
      ::close(copied);
      char one = 1;
      if (::write(ready[1], &one, 1) != 1) ::_exit(1);
      for (;;) ::pause();
    }
    ::close(ready[1]);
    char one = 0;
    bool up = ::read(ready[0], &one, 1) == 1;
    ::close(ready[0]);
    if (!up) throw std::runtime_error("the holder did not start");
  }
  ~Holder() {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    ::shm_unlink(name("held").c_str());
    ::shm_unlink(name("mapped").c_str());
    ::shm_unlink(name("copied").c_str());
  }
  pid_t pid() const { return pid_; }
  // The segment's shm_open name; its path is /dev/shm + that.
  std::string name(const std::string& what) const {
    return "/warden-discovery-" + std::to_string(pid_ == 0 ? ::getpid() : pid_) + "-" + what;
  }

 private:
  pid_t pid_ = 0;
};

std::vector<std::string> paths(const std::vector<HeldObject>& held) {
  std::vector<std::string> out;
  for (const auto& h : held) out.push_back(h.path);
  std::sort(out.begin(), out.end());
  return out;
}

TEST(ReadHeldObjects, FindsWhatIsHeldOpenAndWhatIsOnlyMappedSharedBeneathTheRoots) {
  Holder holder;
  auto held = read_held_objects({holder.pid()}, {"/dev/shm"});
  // Not the copy.
  EXPECT_EQ(paths(held), (std::vector<std::string>{"/dev/shm" + holder.name("held"),
                                                   "/dev/shm" + holder.name("mapped")}));
  for (const auto& h : held) {
    struct stat st{};
    ASSERT_EQ(::stat(h.path.c_str(), &st), 0) << h.path;
    EXPECT_EQ(h.dev, st.st_dev) << h.path;
    EXPECT_EQ(h.ino, st.st_ino) << h.path;
  }
}

TEST(ReadHeldObjects, TheTextOfMapsGivesWhatTheQueryGives) {
  Holder holder;
  // And every file beneath "/" (what the test itself holds too).
  for (const auto& roots : {std::vector<std::string>{"/dev/shm"}, std::vector<std::string>{""}}) {
    auto best = read_held_objects({holder.pid(), ::getpid()}, roots);
    auto text = read_held_objects({holder.pid(), ::getpid()}, roots, MapsReader::text);
    EXPECT_EQ(paths(best), paths(text));
    EXPECT_GE(best.size(), 2U);
  }
}

TEST(ReadHeldObjects, EachProcessIsHandedOnOnceItHasBeenRead) {
  Holder first, second;
  std::mutex lock;
  std::vector<std::size_t> handed;
  auto held = read_held_objects({first.pid(), second.pid()}, {"/dev/shm"}, MapsReader::best,
                                [&](std::size_t i) {
                                  std::lock_guard hold(lock);
                                  handed.push_back(i);
                                });
  std::sort(handed.begin(), handed.end());
  EXPECT_EQ(handed, (std::vector<std::size_t>{0, 1}));
  EXPECT_EQ(held.size(), 4U);
}

TEST(ReadHeldObjects, AnUnlinkedSegmentIsNotListed) {
  Holder holder;
  ::shm_unlink(holder.name("mapped").c_str());
  EXPECT_EQ(paths(read_held_objects({holder.pid()}, {"/dev/shm"})),
            (std::vector<std::string>{"/dev/shm" + holder.name("held")}));
}

}  // namespace
}  // namespace warden
