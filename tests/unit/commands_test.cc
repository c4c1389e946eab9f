// dispatch(): one request line in, one reply line out, whatever the line holds; and the change a
// request staged, for the server to wait on.
#include "edge/commands.h"

#include <unistd.h>

#include <algorithm>
#include <regex>

#include <boost/asio/io_context.hpp>
#include <gtest/gtest.h>

#include "proto/plain_heartbeat.h"
#include "tests/support/processes.h"
#include "tests/support/temp_dir.h"

namespace warden {
namespace {

class Dispatch : public ::testing::Test {
 protected:
  ~Dispatch() override { testing::kill_and_reap(children); }

  Reply send(const std::string& line) {
    RequestContext context{.service = service, .caller = caller, .journal = &journal};
    return dispatch(context, line);
  }
  static json parsed(const Reply& r) { return json::parse(r.line); }
  static std::string code(const Reply& r) {
    return parsed(r).at("error").at("code").get<std::string>();
  }
  static std::string message(const Reply& r) {
    return parsed(r).at("error").at("message").get<std::string>();
  }

  testing::TempDir temp{"warden-dispatch"};
  boost::asio::io_context io;
  // A durable journal, whose changes are written by its thread (the replies wait for that).
  Journal journal{io, std::make_unique<Store>(StoreOptions{.path = temp / "warden.db"})};
  Service service{io, {}, journal};
  Caller caller{.pid = ::getpid(), .uid = 0, .gid = 0};
  std::vector<pid_t> children;
};

TEST_F(Dispatch, MalformedLinesGetBadRequestAndKeepTheIdTheyCan) {
  Reply garbage = send("not json");
  EXPECT_FALSE(garbage.ok);
  EXPECT_EQ(code(garbage), "bad_request");
  EXPECT_TRUE(parsed(garbage).at("id").is_null());

  EXPECT_EQ(message(send("[1, 2]")), "request must be a JSON object");
  EXPECT_EQ(message(send(R"({"id": [1], "op": "hello"})")),
            "field 'id' must be a number or a string");

  Reply no_op = send(R"({"id": 5})");
  EXPECT_EQ(code(no_op), "bad_request");
  EXPECT_EQ(parsed(no_op).at("id"), 5);

  Reply unknown = send(R"({"id": "x", "op": "frobnicate"})");
  EXPECT_EQ(code(unknown), "unknown_op");
  EXPECT_EQ(parsed(unknown).at("id"), "x");
  EXPECT_NE(message(unknown).find("frobnicate"), std::string::npos);
}

TEST_F(Dispatch, HelloListsEveryCommandAndRefusesAnotherProtocol) {
  Reply hello = send(R"({"id": 1, "op": "hello", "protocol": 1})");
  ASSERT_TRUE(hello.ok) << hello.line;
  auto capabilities = parsed(hello).at("capabilities").get<std::vector<std::string>>();
  for (const auto& c : commands()) {
    EXPECT_NE(std::find(capabilities.begin(), capabilities.end(), "cmd-" + std::string(c.name)),
              capabilities.end())
        << c.name;
  }
  EXPECT_EQ(code(send(R"({"id": 2, "op": "hello", "protocol": 99})")), "unsupported_protocol");
}

TEST_F(Dispatch, EveryKindOfPathHasItsOpAndAMissingMemberIsNamed) {
  for (const auto& kind : path_kinds()) {
    std::string op = "add_" + std::string(kind.name);
    EXPECT_TRUE(std::any_of(commands().begin(), commands().end(),
                            [&](const Command& c) { return c.name == op; }))
        << op;
    Reply refused = send(R"({"id": 1, "op": ")" + op + R"(", "job": 1})");
    EXPECT_EQ(code(refused), "bad_request") << refused.line;
    EXPECT_NE(message(refused).find("'" + std::string(kind.field) + "'"), std::string::npos)
        << refused.line;
  }
}

TEST_F(Dispatch, ARequestThatChangesStateSaysWhichJournalChangeItStaged) {
  pid_t main = children.emplace_back(testing::spawn(testing::Behaviour::sleep));
  Reply registered =
      send(R"({"id": 1, "op": "register_job", "name": "t", "pid": )" + std::to_string(main) + "}");
  ASSERT_TRUE(registered.ok) << registered.line;
  ASSERT_TRUE(registered.change);
  EXPECT_EQ(*registered.change, journal.last_staged());

  Reply status = send(R"({"id": 2, "op": "status"})");
  ASSERT_TRUE(status.ok);
  EXPECT_FALSE(status.change) << "a question changes nothing";

  Reply refused = send(R"({"id": 3, "op": "heartbeat", "job": 999})");
  EXPECT_EQ(code(refused), "not_found");
  EXPECT_FALSE(refused.change);
}

// A heartbeat in its plain form is answered without a JSON document (proto/plain_heartbeat.h): its
// reply is the full path's, byte for byte but the deadline's own figure, and so is a refusal.
TEST_F(Dispatch, APlainHeartbeatGetsTheFullPathsReply) {
  auto register_job = [&](const std::string& heartbeat) {
    pid_t main = children.emplace_back(testing::spawn(testing::Behaviour::sleep));
    Reply r = send(R"({"op": "register_job", "name": "t", "pid": )" + std::to_string(main) +
                   heartbeat + "}");
    EXPECT_TRUE(r.ok) << r.line;
    return std::to_string(parsed(r).at("job").get<JobId>());
  };
  const std::string beating = register_job(R"(, "heartbeat_s": 30)");
  const std::string unbeating = register_job("");
  auto masked = [](const std::string& line) {
    static const std::regex deadline(R"("deadline_in_s":[-+.0-9eE]+)");
    return std::regex_replace(line, deadline, R"("deadline_in_s":N)");
  };
  for (const std::string& job : {beating, unbeating, std::string("999")}) {
    for (const std::string id : {R"("id":7,)", ""}) {
      const std::string plain = "{" + id + R"("op":"heartbeat","job":)" + job + "}";
      // An escaped key is beyond the plain form, so this one goes the full way.
      const std::string full = "{" + id + R"("op":"heartbeat","\u006aob":)" + job + "}";
      auto beat = plain_heartbeat(plain);
      ASSERT_TRUE(beat);
      ASSERT_FALSE(plain_heartbeat(full));
      RequestContext context{.service = service, .caller = caller, .journal = &journal};
      const bool refused = job == "999";
      EXPECT_EQ(bool(answer_plain(context, *beat)), !refused) << "only a refusal goes the full way";
      Reply fast = send(plain);
      Reply slow = send(full);
      EXPECT_EQ(masked(fast.line), masked(slow.line));
      EXPECT_EQ(fast.ok, !refused) << fast.line;
      EXPECT_EQ(fast.ok, slow.ok) << fast.line;
      EXPECT_EQ(fast.id, slow.id) << fast.line;
      EXPECT_EQ(fast.refused, slow.refused) << fast.line;
      EXPECT_FALSE(fast.change) << "a heartbeat is not written";
      if (job == beating) {
        const double left = parsed(fast).at("deadline_in_s").get<double>();
        EXPECT_GT(left, 29);
        EXPECT_LE(left, 30);
      }
    }
  }
  EXPECT_EQ(code(send(R"({"op":"heartbeat","job":999})")), "not_found");
}

TEST_F(Dispatch, AMissingOrMistypedFieldIsNamed) {
  EXPECT_NE(message(send(R"({"op": "add_file", "path": "/tmp/x"})")).find("'job'"),
            std::string::npos);
  EXPECT_NE(message(send(R"({"op": "register_job", "name": "t", "pid": "12"})")).find("'pid'"),
            std::string::npos);
}

}  // namespace
}  // namespace warden
