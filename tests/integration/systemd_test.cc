// wardend as systemd runs it, with systemd played by the test: a notification socket that reads
// READY, STATUS, WATCHDOG, STOPPING and the pidfds wardend keeps in the descriptor store, and a
// listening socket passed the way socket activation passes it.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>

#include "tests/support/daemon_fixture.h"
#include "tests/support/processes.h"
#include "tests/support/temp_dir.h"
#include "warden/client.h"

namespace warden::testing {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

struct Notification {
  std::string text;
  std::vector<UniqueFd> fds;
  bool has(const std::string& line) const {
    std::istringstream in(text);
    for (std::string l; std::getline(in, l);) {
      if (l == line) return true;
    }
    return false;
  }
  std::string value(const std::string& key) const {
    std::istringstream in(text);
    for (std::string l; std::getline(in, l);) {
      if (l.starts_with(key + "=")) return l.substr(key.size() + 1);
    }
    return {};
  }
};

// The test's stand-in for systemd: its notification socket and the wardend it starts.
class FakeSystemd : public ::testing::Test {
 protected:
  void SetUp() override {
    notify_path = dir + "/notify";
    notify.reset(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{.sun_family = AF_UNIX};
    std::strcpy(addr.sun_path, notify_path.c_str());
    ASSERT_EQ(::bind(notify.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    int on = 1;
    ::setsockopt(notify.get(), SOL_SOCKET, SO_PASSCRED, &on, sizeof(on));
  }
  void TearDown() override {
    if (HasFailure()) {
      std::ifstream log(dir + "/wardend.log");
      std::cerr << "---- wardend log ----\n" << log.rdbuf() << "----\n";
    }
    stop(SIGKILL);
    kill_and_reap(spawned);
    testing::release_cgroups(dir + "/state");
  }

  // Starts wardend as systemd would: NOTIFY_SOCKET, WATCHDOG_USEC, and `fds` as descriptors 3...
  // with their LISTEN_FDNAMES.
  void start(std::vector<std::pair<int, std::string>> fds = {}, bool watchdog = false) {
    socket_path = dir + "/warden.sock";
    std::vector<std::string> argv{WARDEND_PATH,   "--socket",    socket_path, "--state-dir",
                                  dir + "/state", "--log-level", "debug"};
    wardend = ::fork();
    if (wardend == 0) {
      int log = ::open((dir + "/wardend.log").c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      ::dup2(log, 1);
      ::dup2(log, 2);
      // Moved above the range first, so that dup2 into 3.. cannot clobber a later source.
      std::vector<int> high;
      for (auto& [fd, name] : fds) high.push_back(::fcntl(fd, F_DUPFD, 100));
      std::string names;
      for (std::size_t i = 0; i < high.size(); ++i) {
        ::dup2(high[i], 3 + static_cast<int>(i));
        names += (i ? ":" : "") + fds[i].second;
      }
      ::setenv("NOTIFY_SOCKET", notify_path.c_str(), 1);
      if (watchdog) ::setenv("WATCHDOG_USEC", "200000", 1);
      if (!fds.empty()) {
        ::setenv("LISTEN_FDS", std::to_string(fds.size()).c_str(), 1);
        ::setenv("LISTEN_PID", std::to_string(::getpid()).c_str(), 1);
        ::setenv("LISTEN_FDNAMES", names.c_str(), 1);
      }
      ::unsetenv("WARDEN_JOB");
      ::unsetenv("WARDEN_SOCKET");
      exec_argv(argv);
    }
  }

  void stop(int sig) {
    if (wardend <= 0) return;
    ::kill(wardend, sig);
    ::waitpid(wardend, nullptr, 0);
    wardend = -1;
  }

  // The next notification, or nullopt after `timeout`.
  std::optional<Notification> receive(std::chrono::milliseconds timeout = 5s) {
    pollfd p{.fd = notify.get(), .events = POLLIN};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) != 1) return std::nullopt;
    char buf[4096];
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 16) + CMSG_SPACE(sizeof(ucred))];
    iovec iov{.iov_base = buf, .iov_len = sizeof(buf)};
    msghdr msg{.msg_iov = &iov,
               .msg_iovlen = 1,
               .msg_control = control,
               .msg_controllen = sizeof(control)};
    ssize_t n = ::recvmsg(notify.get(), &msg, MSG_CMSG_CLOEXEC);
    if (n < 0) return std::nullopt;
    Notification note{.text = std::string(buf, n)};
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
        int count = static_cast<int>((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        for (int i = 0; i < count; ++i) {
          int fd;
          std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
          note.fds.emplace_back(fd);
        }
      }
    }
    return note;
  }

  // Notifications until one has `line`; fails the test if none comes in time.
  Notification receive_until(const std::string& line, std::chrono::milliseconds timeout = 10s) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      auto note = receive(std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now()));
      if (!note) break;
      if (note->has(line)) return std::move(*note);
    }
    ADD_FAILURE() << "no notification with " << line;
    return {};
  }

  Client connect() {
    for (int i = 0; i < 500; ++i) {
      try {
        return Client(socket_path);
      } catch (const Error&) {
        std::this_thread::sleep_for(10ms);
      }
    }
    return Client(socket_path);
  }

  testing::TempDir temp{"warden-systemd"};
  const std::string dir = temp.path();
  std::string notify_path, socket_path;
  UniqueFd notify;
  pid_t wardend = -1;
  std::vector<pid_t> spawned;
};

TEST_F(FakeSystemd, NotifiesReadyStatusWatchdogAndStopping) {
  start({}, /*watchdog=*/true);
  Notification ready = receive_until("READY=1");
  EXPECT_NE(ready.value("STATUS").find("0 jobs active"), std::string::npos) << ready.text;
  // Pinged at half of WATCHDOG_USEC (0.2 s), from the event loop.
  receive_until("WATCHDOG=1", 1s);
  receive_until("WATCHDOG=1", 1s);

  Client client = connect();
  pid_t main = spawned.emplace_back(spawn(Behaviour::sleep));
  client.register_job({.name = "j", .pid = main});
  Notification status =
      receive_until("STATUS=1 jobs active, 1 processes tracked, 0 cleanups running", 5s);

  stop(SIGTERM);
  receive_until("STOPPING=1", 2s);
}

TEST_F(FakeSystemd, KeepsEachTrackedPidfdInTheDescriptorStoreUntilItIsDone) {
  start();
  receive_until("READY=1");
  Client client = connect();
  pid_t main = spawned.emplace_back(spawn(Behaviour::sleep));
  JobId id = client.register_job({.name = "stored", .pid = main});
  Notification stored = receive_until("FDSTORE=1");
  ASSERT_EQ(stored.fds.size(), 1u);
  std::string name = stored.value("FDNAME");
  EXPECT_TRUE(name.starts_with("pidfd-" + std::to_string(id) + "-" + std::to_string(main) + "-"))
      << name;
  EXPECT_EQ(fs::read_symlink("/proc/self/fd/" + std::to_string(stored.fds[0].get())),
            "anon_inode:[pidfd]");

  client.end_job(id, /*ok=*/true);
  Notification removed = receive_until("FDSTOREREMOVE=1");
  EXPECT_EQ(removed.value("FDNAME"), name);
}

TEST_F(FakeSystemd, ARestartGetsItsPidfdsBackFromTheStore) {
  start();
  receive_until("READY=1");
  Client client = connect();
  auto tree = spawn_tree({Behaviour::sleep});
  spawned.push_back(tree.main);
  spawned.insert(spawned.end(), tree.workers.begin(), tree.workers.end());
  JobId id = client.register_job({.name = "kept", .pid = tree.main, .heartbeat_s = 60});
  client.add_process(id, tree.workers[0]);
  std::vector<Notification> stored;
  stored.push_back(receive_until("FDSTORE=1"));
  stored.push_back(receive_until("FDSTORE=1"));

  stop(SIGKILL);  // as the watchdog would
  std::vector<std::pair<int, std::string>> fds;
  for (auto& n : stored) fds.emplace_back(n.fds.at(0).get(), n.value("FDNAME"));
  start(fds);
  // Before it is ready, the new wardend takes both out of the store and stores them again.
  std::vector<std::string> before_ready;
  for (auto note = receive(); note && !note->has("READY=1"); note = receive()) {
    before_ready.push_back(note->text);
  }
  for (const auto& [fd, name] : fds) {
    EXPECT_NE(
        std::find(before_ready.begin(), before_ready.end(), "FDSTOREREMOVE=1\nFDNAME=" + name),
        before_ready.end())
        << name;
    EXPECT_NE(std::find(before_ready.begin(), before_ready.end(), "FDSTORE=1\nFDNAME=" + name),
              before_ready.end())
        << name;
  }

  Client again = connect();
  auto s = again.status(id).at(0);
  EXPECT_EQ(s.state, JobState::running);
  std::ifstream log(dir + "/wardend.log");
  std::string text((std::istreambuf_iterator<char>(log)), {});
  EXPECT_NE(text.find("pidfds_from_systemd=2"), std::string::npos);
}

TEST_F(FakeSystemd, ServesTheListeningSocketItIsGivenAndLeavesItInPlace) {
  socket_path = dir + "/activated.sock";
  UniqueFd listener(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{.sun_family = AF_UNIX};
  std::strcpy(addr.sun_path, socket_path.c_str());
  ASSERT_EQ(::bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::listen(listener.get(), 16), 0);
  std::string own = socket_path;
  start({{listener.get(), "warden.socket"}});
  socket_path = own;
  receive_until("READY=1");
  Client client(own);
  EXPECT_FALSE(client.server().server.empty());
  EXPECT_TRUE(client.status().empty());

  stop(SIGTERM);
  EXPECT_TRUE(fs::exists(own)) << "the socket is systemd's: wardend must not remove it";
}

}  // namespace
}  // namespace warden::testing
