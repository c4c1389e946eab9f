// SECURITY.md's promises, each shown with real users, real processes and real files: who may do
// what, PID reuse, connection limits and timeouts, descriptor exhaustion.
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "proto/socket_path.h"
#include "tests/support/daemon_test.h"
#include "tests/support/temp_dir.h"

namespace warden::testing {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

// A raw connection: connect, send, read one line (or nothing before a timeout).
UniqueFd connect_raw(const std::string& path) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{.sun_family = AF_UNIX};
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) return {};
  return fd;
}

std::string read_line(int fd, std::chrono::milliseconds timeout) {
  std::string line;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  char c;
  while (line.empty() || line.back() != '\n') {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    pollfd p{.fd = fd, .events = POLLIN};
    if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) != 1) break;
    if (::read(fd, &c, 1) != 1) break;
    line += c;
  }
  return line;
}

class Security : public DaemonTest {
 protected:
  explicit Security(std::vector<std::string> args = {"--allowed-roots", "/tmp"})
      : DaemonTest(std::move(args)) {}
  void SetUp() override {
    alice = test_user("warden-test-a");
    bob = test_user("warden-test-b");
    ::chmod(daemon.dir().c_str(), 0755);
  }
  CommandResult ctl_as(uid_t uid, std::vector<std::string> args) {
    args.insert(args.begin(), {WARDENCTL_PATH, "--socket", daemon.socket()});
    return run_command_as(uid, args);
  }
  uid_t alice = 0, bob = 0;
};

TEST_F(Security, UsersActOnlyOnTheirOwnProcessesFilesAndJobsAndRootOnAll) {
  pid_t alices = track(spawn(Behaviour::sleep, alice));
  pid_t bobs = track(spawn(Behaviour::sleep, bob));
  pid_t roots = track(spawn(Behaviour::sleep));

  auto reg = ctl_as(alice, {"register", "--pid", std::to_string(alices), "--name", "alice's"});
  ASSERT_EQ(reg.status, 0) << reg.err;
  std::string job = reg.out.substr(0, reg.out.find('\n'));

  // Not root's process, not Bob's, as main or as worker.
  for (pid_t other : {roots, bobs}) {
    auto r = ctl_as(alice, {"register", "--pid", std::to_string(other), "--name", "theft"});
    EXPECT_NE(r.status, 0);
    EXPECT_NE(r.err.find("permission_denied"), std::string::npos) << r.err;
    auto a = ctl_as(alice, {"add", "--job", job, "--pid", std::to_string(other)});
    EXPECT_NE(a.err.find("permission_denied"), std::string::npos) << a.err;
  }
  // Not root's file, not Bob's.
  testing::TempDir temp("warden-sec");
  const std::string& dir = temp.path();
  ::chmod(dir.c_str(), 0755);
  std::string root_file = dir + "/root", bob_file = dir + "/bob";
  std::ofstream(root_file) << "x";
  std::ofstream(bob_file) << "x";
  ASSERT_EQ(::chown(bob_file.c_str(), bob, bob), 0);
  for (const auto& f : {root_file, bob_file}) {
    auto r = ctl_as(alice, {"add", "--job", job, "--file", f});
    EXPECT_NE(r.err.find("permission_denied"), std::string::npos) << f << ": " << r.err;
  }

  // Bob neither sees nor ends nor cleans Alice's job.
  auto list = ctl_as(bob, {"status", "--json"});
  ASSERT_EQ(list.status, 0) << list.err;
  EXPECT_EQ(json::parse(list.out).size(), 0u) << list.out;
  for (std::vector<std::string> op : {std::vector<std::string>{"status", job},
                                      {"end", "--job", job},
                                      {"cleanup", job},
                                      {"beat", "--job", job}}) {
    auto r = ctl_as(bob, op);
    EXPECT_NE(r.err.find("not_found"), std::string::npos) << op[0] << ": " << r.err;
  }
  EXPECT_FALSE(is_gone(alices));

  // Root sees it and may end it.
  EXPECT_EQ(client.status().size(), 1u);
  client.cleanup({.job = std::stoull(job)});
  EXPECT_TRUE(wait_exited(alices, 10s));
  EXPECT_TRUE(fs::exists(root_file) && fs::exists(bob_file));
  fs::remove_all(dir);
}

// Without XDG_RUNTIME_DIR a user's wardend listens on /tmp/warden-UID/warden.sock. Bob makes
// alice's directory first and listens there: alice's wardend refuses to start in it, and alice's
// clients refuse to talk to bob's process.
TEST_F(Security, ASquattedPerUserSocketIsRefusedByWardendAndByClients) {
  if (fs::exists(kSystemSocketPath)) GTEST_SKIP() << "a system wardend runs here; clients use it";
  const std::string dir = "/tmp/warden-" + std::to_string(alice);
  const std::string path = dir + "/warden.sock";
  fs::remove_all(dir);
  pid_t impostor = track(::fork());
  if (impostor == 0) {
    if (::setgroups(0, nullptr) != 0 || ::setgid(bob) != 0 || ::setuid(bob) != 0) ::_exit(1);
    ::mkdir(dir.c_str(), 0755);
    int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{.sun_family = AF_UNIX};
    std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) ::_exit(1);
    ::chmod(path.c_str(), 0666);
    ::listen(fd, 16);
    for (;;) ::pause();
  }
  for (int i = 0; i < 500 && !fs::exists(path); ++i) std::this_thread::sleep_for(10ms);
  ASSERT_TRUE(fs::exists(path));

  std::string state = daemon.dir() + "/alice-state";
  fs::create_directory(state);
  ASSERT_EQ(::chown(state.c_str(), alice, alice), 0);
  auto wardend = run_command_as(alice, {"/usr/bin/env", "-u", "XDG_RUNTIME_DIR", WARDEND_PATH,
                                        "--state-dir", state, "--no-durable"});
  EXPECT_NE(wardend.status, 0);
  EXPECT_NE(
      wardend.err.find(dir + " (the socket's directory) belongs to uid " + std::to_string(bob)),
      std::string::npos)
      << wardend.err;

  auto ctl = run_command_as(alice, {"/usr/bin/env", "-u", "XDG_RUNTIME_DIR", "-u", "WARDEN_SOCKET",
                                    WARDENCTL_PATH, "status"});
  EXPECT_NE(ctl.status, 0);
  EXPECT_NE(ctl.err.find("runs as uid " + std::to_string(bob) + ", neither root nor you"),
            std::string::npos)
      << ctl.err;
  auto python =
      run_command_as(alice, {"/usr/bin/env", "-u", "XDG_RUNTIME_DIR", "-u", "WARDEN_SOCKET",
                             "PYTHONPATH=" WARDEN_SOURCE_DIR "/client/python", "/usr/bin/python3",
                             "-c", "import warden; warden.Client()"});
  EXPECT_NE(python.status, 0);
  EXPECT_NE(python.err.find("neither root nor you"), std::string::npos) << python.err;
  ::kill(impostor, SIGKILL);
  fs::remove_all(dir);
}

TEST_F(Security, IdentityComesFromTheConnectionNotTheRequest) {
  // SO_PEERPIDFD (Linux 6.5+) gives wardend a pidfd of the connecting process itself.
  utsname u{};
  ::uname(&u);
  int major = 0, minor = 0;
  std::sscanf(u.release, "%d.%d", &major, &minor);
  if (major < 6 || (major == 6 && minor < 5)) GTEST_SKIP() << "SO_PEERPIDFD needs Linux 6.5";
  // A child registers itself (this test process, wardend's parent, may not be a job's).
  int ids[2];
  ASSERT_EQ(::pipe(ids), 0);
  pid_t self = track(::fork());
  if (self == 0) {
    Client own(daemon.socket());
    JobId id = own.register_job({.name = "self", .pid = ::getpid()});
    if (::write(ids[1], &id, sizeof(id)) != sizeof(id)) ::_exit(1);
    ::pause();
    ::_exit(0);
  }
  JobId id = 0;
  ASSERT_EQ(::read(ids[0], &id, sizeof(id)), static_cast<ssize_t>(sizeof(id)));
  EXPECT_NE(daemon.log().find("peer_pidfd=yes"), std::string::npos);
  EXPECT_EQ(client.status(id).at(0).main_pid, self);
  client.end_job(id, true);
  // A request cannot claim another uid: there is no field for it, and extra fields are ignored.
  auto r = ctl_as(alice, {"status", "--json"});
  EXPECT_EQ(json::parse(r.out).size(), 0u);
}

// Sends one request line with a descriptor attached (SCM_RIGHTS) and returns the reply line.
std::string send_with_fd(int socket, const std::string& line, int fd) {
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  iovec iov{.iov_base = const_cast<char*>(line.data()), .iov_len = line.size()};
  msghdr msg{.msg_iov = &iov,
             .msg_iovlen = 1,
             .msg_control = control,
             .msg_controllen = fd >= 0 ? sizeof(control) : 0};
  if (fd >= 0) {
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &fd, sizeof(int));
  }
  if (::sendmsg(socket, &msg, MSG_NOSIGNAL) != static_cast<ssize_t>(line.size())) return {};
  return read_line(socket, 5s);
}

TEST_F(Security, ClientsMayPassPidfdsAndWardendChecksWhoseTheyAre) {
  pid_t main = track(spawn(Behaviour::sleep));
  pid_t worker = track(spawn(Behaviour::sleep));
  pid_t stranger = track(spawn(Behaviour::sleep));
  JobId id = client.register_job({.name = "passed", .pid = main});
  // The C++ client passes a pidfd for its own children.
  client.add_process(id, worker);
  EXPECT_NE(daemon.log().find("pid=" + std::to_string(worker)), std::string::npos);
  EXPECT_NE(daemon.log().find("pidfd=passed by the client"), std::string::npos) << daemon.log();

  UniqueFd raw = connect_raw(daemon.socket());
  auto request = [&](pid_t pid) {
    return json{{"op", "add_process"}, {"job", id}, {"pid", pid}, {"pidfd", true}}.dump() + "\n";
  };
  // A pidfd of another process than the one named is refused.
  UniqueFd strangers = open_pidfd(stranger);
  std::string reply = send_with_fd(raw.get(), request(worker), strangers.get());
  EXPECT_NE(reply.find("bad_request"), std::string::npos) << reply;
  EXPECT_NE(reply.find("is of process " + std::to_string(stranger)), std::string::npos) << reply;
  // So is any other descriptor, and none at all.
  UniqueFd file(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  reply = send_with_fd(raw.get(), request(stranger), file.get());
  EXPECT_NE(reply.find("not a pidfd"), std::string::npos) << reply;
  reply = send_with_fd(raw.get(), request(stranger), -1);
  EXPECT_NE(reply.find("no descriptor came with the request"), std::string::npos) << reply;
  // The right one is taken.
  reply = send_with_fd(raw.get(), request(stranger), strangers.get());
  EXPECT_NE(reply.find("\"ok\":true"), std::string::npos) << reply;
  EXPECT_EQ(client.status(id).at(0).workers.size(), 2u);
}

class ConnectionLimitsTest : public Security {
 protected:
  ConnectionLimitsTest()
      : Security({"--max-connections-per-user", "100", "--request-timeout", "1", "--idle-timeout",
                  "2"}) {}
};

TEST_F(ConnectionLimitsTest, PastThePerUserLimitConnectionsAreRefusedWhileAnotherUserIsServed) {
  // Alice opens 1,000 connections (in a child that is Alice) and asks hello on each.
  int report[2];
  ASSERT_EQ(::pipe(report), 0);
  pid_t child = ::fork();
  if (child == 0) {
    rlimit files{20000, 20000};
    ::setrlimit(RLIMIT_NOFILE, &files);
    if (::setgid(alice) != 0 || ::setuid(alice) != 0) ::_exit(2);
    std::vector<UniqueFd> fds;
    for (int i = 0; i < 1000; ++i) fds.push_back(connect_raw(daemon.socket()));
    int served = 0, refused = 0, other = 0;
    std::string sample;
    for (auto& fd : fds) {
      std::string hello = R"({"op":"hello"})"
                          "\n";
      ::send(fd.get(), hello.data(), hello.size(), MSG_NOSIGNAL);
      std::string line = read_line(fd.get(), 5s);
      if (line.find("\"ok\":true") != std::string::npos) {
        ++served;
      } else if (line.find("limit_exceeded") != std::string::npos) {
        ++refused;
        sample = line;
      } else {
        ++other;
      }
    }
    std::string out = std::to_string(served) + " " + std::to_string(refused) + " " +
                      std::to_string(other) + "\n" + sample;
    (void)!::write(report[1], out.data(), out.size());
    // Hold the connections until the parent, having checked that others are served, kills it.
    for (;;) ::pause();
  }
  track(child);
  ::close(report[1]);
  std::string result = read_line(report[0], 60s);
  std::string sample = read_line(report[0], 1s);
  int served = 0, refused = 0, other = 0;
  ASSERT_EQ(std::sscanf(result.c_str(), "%d %d %d", &served, &refused, &other), 3) << result;
  EXPECT_EQ(served, 100) << result;
  EXPECT_EQ(refused, 900);
  EXPECT_EQ(other, 0);
  EXPECT_NE(sample.find("already has 100 connections to wardend (the limit)"), std::string::npos)
      << sample;
  // Root is still served meanwhile, on a new connection.
  Client root(daemon.socket());
  EXPECT_NO_THROW(root.status());
  ::kill(child, SIGKILL);
}

TEST_F(ConnectionLimitsTest, AClientSendingOneByteASecondIsDroppedAtItsTimeout) {
  UniqueFd fd = connect_raw(daemon.socket());
  auto start = std::chrono::steady_clock::now();
  std::string request = R"({"op":"status","padding":"xxxxxxxxxxxxxxxxxxxxxxxx"})";
  std::string reply;
  for (char c : request) {
    if (::send(fd.get(), &c, 1, MSG_NOSIGNAL) != 1) break;
    reply = read_line(fd.get(), 300ms);
    if (!reply.empty()) break;
  }
  auto took = std::chrono::steady_clock::now() - start;
  EXPECT_NE(reply.find("limit_exceeded"), std::string::npos) << reply;
  EXPECT_NE(reply.find("request not completed within 1 s"), std::string::npos) << reply;
  EXPECT_GE(took, 900ms);
  EXPECT_LT(took, 3s);
  char c;
  EXPECT_EQ(::read(fd.get(), &c, 1), 0) << "the connection is closed";
}

TEST_F(ConnectionLimitsTest, AClientThatReadsNoAnswersIsDroppedAndTheDropIsLoggedWithItsUser) {
  // Requests pipelined without reading a byte, until wardend's answers fill the socket.
  UniqueFd fd = connect_raw(daemon.socket());
  std::string burst;
  for (int i = 0; i < 2000; ++i)
    burst += R"({"op":"status","id":1})"
             "\n";
  // Until wardend, blocked on answers nobody reads, reads no more requests either.
  timeval bound{.tv_sec = 3, .tv_usec = 0};
  ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &bound, sizeof(bound));
  for (int i = 0; i < 400; ++i) {
    if (::send(fd.get(), burst.data(), burst.size(), MSG_NOSIGNAL) < 0) break;
  }
  std::string expected = "dropping connection uid=0: it read none of wardend's answers";
  for (int i = 0; i < 100 && daemon.log().find(expected) == std::string::npos; ++i) {
    std::this_thread::sleep_for(50ms);
  }
  EXPECT_NE(daemon.log().find(" info " + expected), std::string::npos) << "logged at info";
  EXPECT_NO_THROW(client.status()) << "wardend serves on";
}

TEST_F(ConnectionLimitsTest, AnIdleConnectionIsClosedAndClientsReconnectByThemselves) {
  UniqueFd idle = connect_raw(daemon.socket());
  std::string line = read_line(idle.get(), 5s);
  EXPECT_NE(line.find("connection idle for 2 s"), std::string::npos) << line;
  // The fixture's client was idle as long: its next call reconnects.
  EXPECT_NO_THROW(client.status());
  EXPECT_GE(client.reconnects(), 1u);
}

TEST_F(ConnectionLimitsTest, WardenctlPastThePerUserLimitSaysWhyNotBrokenPipe) {
  std::vector<UniqueFd> held;
  for (int i = 0; i < 100; ++i) {
    UniqueFd fd = connect_raw(daemon.socket());
    ::send(fd.get(), "{\"op\":\"hello\"}\n", 15, MSG_NOSIGNAL);
    if (read_line(fd.get(), 5s).find("\"ok\":true") == std::string::npos) break;
    held.push_back(std::move(fd));
  }
  auto r = run_command({WARDENCTL_PATH, "--socket", daemon.socket(), "status"});
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.err.find("(the limit)"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("Broken pipe"), std::string::npos) << r.err;
}

TEST_F(ConnectionLimitsTest, BlankLinesDoNotKeepAnIdleConnectionOpen) {
  UniqueFd idle = connect_raw(daemon.socket());
  auto start = std::chrono::steady_clock::now();
  std::string line;
  // A read may end mid-line at its half second: the pieces are joined until the line is whole.
  for (int i = 0; i < 8 && line.find('\n') == std::string::npos; ++i) {
    ::send(idle.get(), "\n", 1, MSG_NOSIGNAL);  // one a half second: no request
    line += read_line(idle.get(), 500ms);
  }
  EXPECT_NE(line.find("connection idle for 2 s"), std::string::npos) << line;
  EXPECT_LT(std::chrono::steady_clock::now() - start, 3500ms) << "blank lines kept it open";
}

// wardend limited to 41 descriptors (about 30 for connections once its own are open: the store,
// its pools, the fanotify group): connections past what it can hold are refused with a line
// saying so, and once some close, new ones are served again.
class DescriptorExhaustion : public ::testing::Test {
 protected:
  Daemon daemon{{"--log-level", "info"}, {"/usr/bin/prlimit", "--nofile=41:41", "--"}};
};

TEST_F(DescriptorExhaustion, AcceptSurvivesEmfileAndRecovers) {
  std::vector<UniqueFd> held;
  int served = 0, refused = 0;
  for (int i = 0; i < 80; ++i) {
    UniqueFd fd = connect_raw(daemon.socket());
    ASSERT_TRUE(fd) << "the listen backlog refused connection " << i;
    std::string hello = R"({"op":"hello"})"
                        "\n";
    ::send(fd.get(), hello.data(), hello.size(), MSG_NOSIGNAL);
    std::string line = read_line(fd.get(), 5s);
    if (line.find("\"ok\":true") != std::string::npos) ++served;
    if (line.find("out of file descriptors") != std::string::npos) ++refused;
    held.push_back(std::move(fd));
  }
  EXPECT_GT(served, 10);
  EXPECT_GT(refused, 10);
  EXPECT_EQ(served + refused, 80);
  held.clear();
  std::this_thread::sleep_for(200ms);
  Client after(daemon.socket());
  EXPECT_NO_THROW(after.status());
  EXPECT_NE(daemon.log().find("out of file descriptors"), std::string::npos);
}

}  // namespace
}  // namespace warden::testing

namespace warden::testing {
namespace {

// Forks a process with exactly `pid` in this (fresh) PID namespace, through ns_last_pid.
pid_t spawn_at(pid_t pid) {
  std::ofstream("/proc/sys/kernel/ns_last_pid") << pid - 1;
  return spawn(Behaviour::sleep);
}

// The scenario, run as init of a new PID namespace (so no other process takes the pids): a job's
// main process and worker die while wardend is down and their pids go to newcomers; the restarted
// wardend must clean the job without touching either newcomer. Returns a process exit status.
int recycled_pids_scenario() {
  Daemon daemon;
  Client client(daemon.socket());
  pid_t main = spawn(Behaviour::sleep);
  pid_t worker = spawn(Behaviour::sleep);
  JobId id = client.register_job({.name = "recycled", .pid = main, .grace_s = 0.2});
  client.add_process(id, worker);

  daemon.crash();
  kill_and_reap({main, worker});
  pid_t new_worker = spawn_at(worker);
  pid_t new_main = spawn_at(main);
  if (new_worker != worker || new_main != main) {
    std::cerr << "could not recycle the pids: got " << new_worker << " and " << new_main << "\n";
    return 3;
  }
  daemon.restart();
  Client again(daemon.socket());
  auto deadline = std::chrono::steady_clock::now() + 10s;
  JobStatus s;
  while ((s = again.status(id).at(0)).state != JobState::cleaned &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(10ms);
  }
  int failures = 0;
  auto check = [&](bool ok, const std::string& what) {
    if (!ok) {
      std::cerr << "FAILED: " << what << "\n";
      ++failures;
    }
  };
  check(s.state == JobState::cleaned, "the job is cleaned");
  check(!is_gone(new_main), "the process that got the main's pid survives");
  check(!is_gone(new_worker), "the process that got the worker's pid survives");
  if (s.report) {
    for (const auto& p : s.report->processes) {
      check(p.outcome == Outcome::already_gone, "pid " + std::to_string(p.pid) + " (" + p.role +
                                                    ") is already_gone, not " +
                                                    std::string(to_string(p.outcome)));
    }
  }
  if (failures != 0) std::cerr << daemon.log();
  kill_and_reap({new_main, new_worker});
  return failures == 0 ? 0 : 1;
}

TEST(PidReuse, ARecycledPidIsNeverSignalledAcrossARestart) {
  pid_t outer = ::fork();
  if (outer == 0) {
    if (::unshare(CLONE_NEWPID | CLONE_NEWNS) != 0) ::_exit(77);
    pid_t init = ::fork();
    if (init == 0) {
      // pid 1 of the new namespace, with a /proc of its own (wardend reads it).
      if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
          ::mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) != 0) {
        ::_exit(77);
      }
      int status = 1;
      try {
        status = recycled_pids_scenario();
      } catch (const std::exception& e) {
        std::cerr << "scenario failed: " << e.what() << "\n";
      }
      ::_exit(status);
    }
    int status = 0;
    ::waitpid(init, &status, 0);
    ::_exit(WIFEXITED(status) ? WEXITSTATUS(status) : 100 + WTERMSIG(status));
  }
  int status = 0;
  ::waitpid(outer, &status, 0);
  int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  if (code == 77)
    GTEST_SKIP() << "cannot create a PID namespace here (needs root with CAP_SYS_ADMIN)";
  EXPECT_EQ(code, 0) << "see the scenario's messages above";
}

}  // namespace
}  // namespace warden::testing
