// Bad input against a real wardend: every kind gets an error reply or a closed connection, and the
// daemon goes on serving the next client. And a client that asks much before reading anything.
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <fstream>
#include <iostream>
#include <thread>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "proto/unique_fd.h"
#include "tests/support/daemon_test.h"
#include "tests/support/temp_dir.h"
#include "warden/client.h"

namespace warden {
namespace {

// A raw connection that sends arbitrary bytes and reads reply lines.
class RawConnection {
 public:
  explicit RawConnection(const std::string& path) {
    fd_ = UniqueFd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{.sun_family = AF_UNIX};
    std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path.c_str());
    if (::connect(fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      throw std::runtime_error("connect failed");
    }
    // Generous: a reply that never comes must fail the test, not hang it.
    timeval tv{.tv_sec = 10, .tv_usec = 0};
    ::setsockopt(fd_.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  }

  void send(std::string_view bytes) {
    ASSERT_EQ(::send(fd_.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(bytes.size()));
  }
  void shutdown_write() { ::shutdown(fd_.get(), SHUT_WR); }

  // The next reply line, or nullopt at end of stream.
  std::optional<json> reply() {
    for (;;) {
      if (auto nl = buf_.find('\n'); nl != std::string::npos) {
        std::string line = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        return json::parse(line);
      }
      char chunk[4096];
      ssize_t n = ::recv(fd_.get(), chunk, sizeof(chunk), 0);
      if (n <= 0) return std::nullopt;
      buf_.append(chunk, n);
    }
  }

 private:
  UniqueFd fd_;
  std::string buf_;
};

std::string code(const json& reply) { return reply.at("error").at("code").get<std::string>(); }

class BadInput : public testing::DaemonTest {
 protected:
  BadInput() : DaemonTest({"--max-frame", "1024"}) {}
  void TearDown() override {
    // Whatever came before, the daemon is alive and serves a new client.
    Client after(daemon.socket());
    EXPECT_NO_THROW(after.status());
    DaemonTest::TearDown();
  }
};

TEST_F(BadInput, GarbageGetsBadRequestAndTheConnectionStaysUsable) {
  RawConnection c(daemon.socket());
  c.send("this is not json\n");
  auto r = c.reply();
  ASSERT_TRUE(r);
  EXPECT_FALSE(r->at("ok").get<bool>());
  EXPECT_EQ(code(*r), "bad_request");
  EXPECT_TRUE(r->at("id").is_null());

  c.send(R"({"id":7,"op":"hello"})"
         "\n");
  r = c.reply();
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->at("ok").get<bool>());
  EXPECT_EQ(r->at("id"), 7);
}

TEST_F(BadInput, UnknownOpEchoesTheId) {
  RawConnection c(daemon.socket());
  c.send(R"({"id":"abc","op":"format_disk"})"
         "\n");
  auto r = c.reply();
  ASSERT_TRUE(r);
  EXPECT_EQ(code(*r), "unknown_op");
  EXPECT_EQ(r->at("id"), "abc");
}

TEST_F(BadInput, MalformedRequestsEachGetTheirOwnErrorInOrder) {
  RawConnection c(daemon.socket());
  c.send(
      "[1,2,3]\n"
      R"({"id":1})"
      "\n"
      R"({"id":2,"op":7})"
      "\n"
      R"({"id":{"x":1},"op":"hello"})"
      "\n"
      R"({"id":3,"op":"register_job","name":"x"})"
      "\n"
      R"({"id":4,"op":"register_job","name":"x","pid":"1"})"
      "\n"
      R"({"id":5,"op":"heartbeat","job":-1})"
      "\n"
      R"({"id":6,"op":"heartbeat","job":424242})"
      "\n"
      R"({"id":7,"op":"hello","protocol":99})"
      "\n"
      R"({"id":8,"op":"status","job":1e400})"
      "\n");
  std::vector<std::pair<json, std::string>> expected{
      {nullptr, "bad_request"}, {1, "bad_request"}, {2, "bad_request"},
      {nullptr, "bad_request"}, {3, "bad_request"}, {4, "bad_request"},
      {5, "bad_request"},       {6, "not_found"},   {7, "unsupported_protocol"},
      {nullptr, "bad_request"}};
  for (const auto& [id, expected_code] : expected) {
    auto r = c.reply();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->at("id"), id) << r->dump();
    EXPECT_EQ(code(*r), expected_code) << r->dump();
    EXPECT_FALSE(r->at("error").at("message").get<std::string>().empty());
  }
}

TEST_F(BadInput, FrameOverTheLimitIsAnsweredThenClosed) {
  RawConnection c(daemon.socket());
  c.send(std::string(4000, 'x'));
  auto r = c.reply();
  ASSERT_TRUE(r);
  EXPECT_EQ(code(*r), "frame_too_large");
  EXPECT_FALSE(c.reply()) << "the connection is closed after a frame error";
}

TEST_F(BadInput, HalfSentLineThenShutdownGetsAnError) {
  RawConnection c(daemon.socket());
  c.send(R"({"id":1,"op":"sta)");
  c.shutdown_write();
  auto r = c.reply();
  ASSERT_TRUE(r);
  EXPECT_EQ(code(*r), "bad_request");
  EXPECT_FALSE(c.reply());
}

TEST_F(BadInput, HalfSentLineThenCloseLeavesTheDaemonServing) {
  {
    RawConnection c(daemon.socket());
    c.send(R"({"id":1,"op":"register_jo)");
  }
  Client next(daemon.socket());
  EXPECT_EQ(next.server().protocol, kProtocolVersion);
}

TEST_F(BadInput, HelloAdvertisesEveryCommandAndTheFrameLimit) {
  const auto& caps = client.server().capabilities;
  for (const char* op : {"hello", "register_job", "add_process", "add_file", "add_dir", "add_shm",
                         "add_shm_glob", "add_hook", "heartbeat", "end_job", "status"}) {
    EXPECT_NE(std::find(caps.begin(), caps.end(), std::string("cmd-") + op), caps.end()) << op;
  }
  EXPECT_EQ(client.server().max_frame, 1024u);
}

// A job's processes are ended at cleanup: wardend, its parent (this test), the init of its PID
// namespace and kernel threads can be none of them.
TEST_F(BadInput, WardendItsAncestorsInitAndKernelThreadsCannotBeAJobsProcesses) {
  pid_t kthreadd = 2;  // pid 2 is kthreadd in the initial PID namespace, where these tests run
  for (pid_t pid : {daemon.pid(), ::getpid(), pid_t{1}, kthreadd}) {
    try {
      client.register_job({.name = "untouchable", .pid = pid});
      ADD_FAILURE() << "process " << pid << " was accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::permission_denied) << pid;
      EXPECT_NE(std::string(e.what()).find("cannot be one"), std::string::npos) << e.what();
    }
  }
  pid_t main = track(testing::spawn(testing::Behaviour::sleep));
  JobId job = client.register_job({.name = "job", .pid = main});
  for (pid_t pid : {daemon.pid(), pid_t{1}}) {
    try {
      client.add_process(job, pid);
      ADD_FAILURE() << "process " << pid << " was accepted as a worker";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::permission_denied) << pid;
    }
  }
  // The cleanup that once SIGSTOPped wardend itself: it still answers.
  client.cleanup({.job = job});
  EXPECT_EQ(wait_for_state(job, JobState::cleaned).state, JobState::cleaned);
}

// With the frame limit raised, one 10 MB request: answered, and its memory given back.
class LargeFrames : public testing::DaemonTest {
 protected:
  LargeFrames() : DaemonTest({"--max-frame", "16777216"}) {}
};

using testing::rss_kib;

TEST_F(LargeFrames, ATenMegabyteRequestLeavesNoLastingMemoryBehind) {
  std::size_t before = rss_kib(daemon.pid());
  {
    RawConnection c(daemon.socket());
    c.send(R"({"id":1,"op":"hello","client":")" + std::string(10 << 20, 'x') + "\"}\n");
    auto r = c.reply();
    ASSERT_TRUE(r);
    EXPECT_TRUE(r->value("ok", false)) << *r;
    c.send(R"({"id":2,"op":"hello"})"
           "\n");
    ASSERT_TRUE(c.reply()) << "the same connection serves on";
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  std::size_t after = rss_kib(daemon.pid());
  std::cout << "wardend RSS " << before << " KiB before the 10 MB request, " << after
            << " KiB after\n";
#if !defined(__SANITIZE_ADDRESS__)  // ASan keeps freed memory in quarantine on purpose
  EXPECT_LT(after, before + 8 * 1024) << "the request's buffers were given back";
#endif
}

TEST_F(BadInput, ResourceRequestsAreValidatedWithClearCodes) {
  auto t = tree({});
  JobId id = client.register_job({.name = "validated", .pid = t.main});
  RawConnection c(daemon.socket());
  std::string job = std::to_string(id);
  c.send(R"({"id":1,"op":"add_file","job":)" + job +
         R"(,"path":"relative/x"})"
         "\n" +
         R"({"id":2,"op":"add_file","job":)" + job +
         R"(,"path":"/etc/passwd"})"
         "\n" +
         R"({"id":3,"op":"add_dir","job":)" + job +
         R"(,"path":"/tmp/../etc"})"
         "\n" +
         R"({"id":4,"op":"add_file","job":)" + job +
         R"(,"path":"/tmp/no-such-file-here"})"
         "\n" +
         R"({"id":5,"op":"add_shm","job":)" + job +
         R"(,"name":"a/b"})"
         "\n" +
         R"({"id":6,"op":"add_hook","job":)" + job +
         R"(,"hook":[]})"
         "\n" +
         R"({"id":7,"op":"add_hook","job":)" + job +
         R"(,"hook":{"argv":["x"],"timeout_s":-1}})"
         "\n" +
         R"({"id":8,"op":"add_file","job":)" + job +
         R"(,"path":"/tmp/x","policy":"sometimes"})"
         "\n" +
         R"({"id":9,"op":"add_hook","job":)" + job +
         R"(,"hook":{"argv":["x"],"env":{"A=B":"c"}}})"
         "\n");
  std::vector<std::string> expected{"bad_request", "bad_request", "bad_request",
                                    "not_found",   "bad_request", "bad_request",
                                    "bad_request", "bad_request", "bad_request"};
  for (std::size_t i = 0; i < expected.size(); ++i) {
    auto r = c.reply();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->at("id"), i + 1);
    EXPECT_EQ(code(*r), expected[i]) << r->dump();
  }
  EXPECT_TRUE(client.status(id).at(0).paths.empty());
}

// A client that sends 30,000 requests before it reads a reply: heartbeats answered at once, changes
// acknowledged once written, and replies that fill the socket while nobody reads them. Every
// request gets its reply, once, in order.
class DemandingClient : public testing::DaemonTest {};

TEST_F(DemandingClient, PipelinedRequestsReadLateAreEachAnsweredOnceInOrder) {
  pid_t main = track(testing::spawn(testing::Behaviour::sleep));
  const JobId job = client.register_job({.name = "pipelined", .pid = main, .heartbeat_s = 3600});
  testing::TempDir files{"warden-pipelined"};
  constexpr int kRequests = 30'000;
  for (int id = 999; id < kRequests; id += 1000) {
    std::ofstream(files.path() + "/f" + std::to_string(id));
  }
  RawConnection c(daemon.socket());
  // Joined however the test ends: wardend drops a connection that reads nothing, so it ends.
  std::jthread sender([&] {
    std::string burst;
    for (int id = 0; id < kRequests; ++id) {
      burst += id % 1000 == 999
                   ? fmt::format(R"({{"id":{},"op":"add_file","job":{},"path":"{}/f{}"}})", id, job,
                                 files.path(), id)
                   : fmt::format(R"({{"id":{},"op":"heartbeat","job":{}}})", id, job);
      burst += '\n';
    }
    c.send(burst);
  });
  // wardend's replies fill the socket meanwhile.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  for (int id = 0; id < kRequests; ++id) {
    auto r = c.reply();
    ASSERT_TRUE(r) << "no reply to request " << id;
    ASSERT_EQ(r->at("id"), id) << r->dump();
    ASSERT_TRUE(r->at("ok").get<bool>()) << r->dump();
  }
  EXPECT_EQ(client.status(job).at(0).paths.size(), kRequests / 1000u);
}

}  // namespace
}  // namespace warden
