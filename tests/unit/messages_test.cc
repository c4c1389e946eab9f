#include "proto/messages.h"

#include <gtest/gtest.h>

#include "tests/support/expect_error.h"

namespace warden {
namespace {

using testing::code_of;

std::string message_of(auto&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// describe.h: one description of a message serves both directions.
TEST(Described, ACheckReplyRoundTripsWithItsOptionalFieldsAbsentOrSet) {
  CheckReply reply{.clean = false,
                   .findings = {{.kind = FindingKind::unkillable,
                                 .what = "pid 7 (python)",
                                 .action = "reboot",
                                 .since_unix_ms = 1'000,
                                 .job = 3,
                                 .pid = 7,
                                 .bytes = 1ULL << 40},
                                {.kind = FindingKind::shm_full, .what = "/dev/shm"}},
                   .reclaimed = {{.kind = FindingKind::unkillable,
                                  .what = "pid 7",
                                  .outcome = Outcome::unkillable}},
                   .elapsed_ms = 2.5};
  json j = to_json(reply);
  EXPECT_FALSE(j["findings"][1].contains("pid")) << "an absent optional is left out";
  EXPECT_FALSE(j.contains("note")) << "so is an empty string";
  CheckReply back = from_json<CheckReply>(j);
  ASSERT_EQ(back.findings.size(), 2u);
  EXPECT_FALSE(back.clean);
  EXPECT_EQ(back.findings[0].kind, FindingKind::unkillable);
  EXPECT_EQ(back.findings[0].job, 3u);
  EXPECT_EQ(back.findings[0].bytes, 1ULL << 40);
  EXPECT_EQ(back.findings[0].since_unix_ms, 1'000);
  EXPECT_FALSE(back.findings[1].pid);
  EXPECT_EQ(back.reclaimed.at(0).outcome, Outcome::unkillable);
  EXPECT_EQ(back.elapsed_ms, 2.5);
}

TEST(Described, AWrongTypeOrValueIsABadRequestNamingTheField) {
  auto parse = [](json j) { return from_json<CheckRequest>(j); };
  EXPECT_EQ(parse(json::object()).grace_s, 5) << "a missing field keeps its default";
  EXPECT_EQ(code_of([&] { parse({{"reclaim", "yes"}}); }), ErrorCode::bad_request);
  EXPECT_NE(message_of([&] { parse({{"reclaim", 1}}); }).find("'reclaim'"), std::string::npos);
  EXPECT_NE(message_of([&] {
              parse({{"grace_s", 7200}});
            }).find("'grace_s' must be between"),
            std::string::npos);
  EXPECT_EQ(code_of([&] { parse({{"grace_s", -1}}); }), ErrorCode::bad_request);
  EXPECT_EQ(code_of([&] { parse(json::array()); }), ErrorCode::bad_request);
  EXPECT_EQ(code_of([&] { from_json<Finding>({{"kind", "bogus"}}); }), ErrorCode::bad_request);
}

TEST(Messages, RegisterJobRoundTrips) {
  RegisterJobRequest r{
      .name = "train", .pid = 42, .heartbeat_s = 30, .grace_s = 2, .kill_main_on_stall = true};
  auto parsed = from_json<RegisterJobRequest>(to_json(r));
  EXPECT_EQ(parsed.name, "train");
  EXPECT_EQ(parsed.pid, 42);
  EXPECT_EQ(parsed.heartbeat_s, 30);
  EXPECT_EQ(parsed.grace_s, 2);
  EXPECT_TRUE(parsed.kill_main_on_stall);
}

TEST(Messages, RegisterJobDefaults) {
  auto r = from_json<RegisterJobRequest>(json::parse(R"({"name":"x","pid":7})"));
  EXPECT_EQ(r.heartbeat_s, 0);
  EXPECT_EQ(r.grace_s, 5);
  EXPECT_FALSE(r.kill_main_on_stall);
}

TEST(Messages, BadFieldsAreBadRequestsNamingTheField) {
  auto parse = [](const char* text) {
    return [=] { from_json<RegisterJobRequest>(json::parse(text)); };
  };
  EXPECT_EQ(code_of(parse(R"({"pid":7})")), ErrorCode::bad_request);
  EXPECT_NE(message_of(parse(R"({"pid":7})")).find("'name'"), std::string::npos);
  EXPECT_NE(message_of(parse(R"({"name":"x","pid":"7"})")).find("'pid'"), std::string::npos);
  EXPECT_NE(message_of(parse(R"({"name":"x","pid":-3})")).find("'pid'"), std::string::npos);
  EXPECT_NE(message_of(parse(R"({"name":"x","pid":99999999999})")).find("'pid'"),
            std::string::npos);
  EXPECT_NE(message_of(parse(R"({"name":"x","pid":7,"grace_s":-1})")).find("'grace_s'"),
            std::string::npos);
  EXPECT_NE(message_of(parse(R"({"name":"x","pid":7,"heartbeat_s":"soon"})")).find("'heartbeat_s'"),
            std::string::npos);
  // Under a nanosecond a heartbeat once became "none"; nothing can beat that often anyway.
  for (const char* tiny : {R"({"name":"x","pid":7,"heartbeat_s":1e-10})",
                           R"({"name":"x","pid":7,"heartbeat_s":0.009})"}) {
    EXPECT_NE(message_of(parse(tiny)).find("at least 0.01 seconds"), std::string::npos) << tiny;
  }
  EXPECT_NO_THROW(parse(R"({"name":"x","pid":7,"heartbeat_s":0.01})")());
  EXPECT_NE(message_of(parse(R"({"name":"","pid":7})")).find("'name'"), std::string::npos);
  EXPECT_NE(message_of(parse(R"({"name":"x","pid":7,"kill_main_on_stall":1})"))
                .find("'kill_main_on_stall'"),
            std::string::npos);
}

TEST(Messages, EveryKindOfPathTravelsInItsOwnMemberAndComesBackTheSame) {
  for (const auto& kind : path_kinds()) {
    AddPathRequest request{.job = 3, .kind = kind.kind, .path = "x", .policy = Policy::failure};
    json j = to_json(request);
    EXPECT_EQ(j.at("op"), "add_" + std::string(kind.name));
    EXPECT_EQ(j.at(std::string(kind.field)), "x") << kind.name;
    AddPathRequest back = from_json(j, AddPathRequest{.kind = kind.kind});
    EXPECT_EQ(back.kind, kind.kind);
    EXPECT_EQ(back.path, "x");
    EXPECT_EQ(back.policy, Policy::failure);
    EXPECT_EQ(path_kind_from_string(kind.name), kind.kind);
    EXPECT_EQ(&info_of(kind.kind), &kind);
  }
  EXPECT_EQ(path_kind_from_string("fifo"), std::nullopt);
}

TEST(Messages, ACommandsMembersAreCheckedAsARequestsFieldsAreAndNamedInFull) {
  auto refusal = [](const char* text) {
    return message_of([=] { parse_command(json::parse(text), "hook"); });
  };
  EXPECT_NE(refusal(R"({"argv":["/bin/true"],"timeout_s":3601})").find("'hook.timeout_s'"),
            std::string::npos);
  EXPECT_NE(refusal(R"({"argv":["/bin/true"],"timeout_s":"soon"})").find("'hook.timeout_s'"),
            std::string::npos);
  EXPECT_NE(refusal(R"({"argv":["/bin/true"],"cwd":""})").find("'hook.cwd' must not be empty"),
            std::string::npos);
  EXPECT_NE(refusal(R"({"argv":["/bin/true"],"cwd":"tmp"})").find("absolute"), std::string::npos);
  EXPECT_NE(refusal(R"({"argv":["/bin/true"],"env":{"A":7}})").find("'hook.env.A'"),
            std::string::npos);
  EXPECT_NE(refusal(R"({"env":{}})").find("'hook.argv' is required"), std::string::npos);
  CommandSpec ok = parse_command(
      json::parse(R"({"argv":["/bin/true"],"env":{"A":"1"},"cwd":"/tmp","timeout_s":5})"), "hook");
  EXPECT_EQ(ok.env, (std::vector<std::pair<std::string, std::string>>{{"A", "1"}}));
  EXPECT_EQ(ok.cwd, "/tmp");
  EXPECT_EQ(ok.timeout_s, 5);
}

TEST(Messages, JobIdsMustBePositiveIntegers) {
  for (const char* text :
       {R"({})", R"({"job":0})", R"({"job":-1})", R"({"job":1.5})", R"({"job":"1"})"}) {
    EXPECT_EQ(code_of([&] { from_json<HeartbeatRequest>(json::parse(text)); }),
              ErrorCode::bad_request)
        << text;
  }
  EXPECT_EQ(from_json<HeartbeatRequest>(json::parse(R"({"job":18446744073709551615})")).job,
            18446744073709551615ull);
}

TEST(Messages, EndJobOutcomeIsOkOrFailed) {
  EXPECT_EQ(from_json<EndJobRequest>(json::parse(R"({"job":1})")).outcome, JobEnd::ok);
  EXPECT_EQ(from_json<EndJobRequest>(json::parse(R"({"job":1,"outcome":"ok"})")).outcome,
            JobEnd::ok);
  EXPECT_EQ(from_json<EndJobRequest>(json::parse(R"({"job":1,"outcome":"failed"})")).outcome,
            JobEnd::failed);
  EXPECT_EQ(code_of([] { from_json<EndJobRequest>(json::parse(R"({"job":1,"outcome":"meh"})")); }),
            ErrorCode::bad_request);
}

TEST(Messages, JobStatusRoundTrips) {
  JobStatus s{.id = 9,
              .name = "n",
              .uid = 1000,
              .state = JobState::cleaned,
              .reason = JobState::stalled,
              .reason_detail = "no heartbeat",
              .main_pid = 10,
              .main_start_time = 123,
              .heartbeat_s = 5,
              .grace_s = 1,
              .created_unix_ms = 77,
              .last_beat_unix_ms = 88};
  s.workers.push_back({.pid = 11, .start_time = 124, .exited = true});
  s.report = CleanupReport{.reason = JobState::stalled, .started_unix_ms = 99, .duration_ms = 1.5};
  s.report->reclaimed = {.file_bytes = 4096, .shm_bytes = 1 << 20, .gpu_bytes = 3};
  s.report->paths.push_back({.kind = PathKind::dir, .path = "/tmp/d", .removed = 2, .bytes = 4096});
  s.report->processes.push_back({.pid = 11,
                                 .local_pid = 2,
                                 .role = "worker",
                                 .outcome = Outcome::killed,
                                 .leftover = true,
                                 .detail = "d",
                                 .elapsed_ms = 3});
  auto back = from_json<JobStatus>(to_json(s));
  EXPECT_EQ(to_json(back), to_json(s));
}

TEST(Messages, ErrorCodeNamesRoundTrip) {
  for (auto code :
       {ErrorCode::bad_request, ErrorCode::unknown_op, ErrorCode::frame_too_large,
        ErrorCode::unsupported_protocol, ErrorCode::not_found, ErrorCode::permission_denied,
        ErrorCode::no_such_process, ErrorCode::invalid_state, ErrorCode::limit_exceeded,
        ErrorCode::unavailable, ErrorCode::internal}) {
    EXPECT_EQ(error_code_from_string(to_string(code)), code);
  }
  EXPECT_FALSE(error_code_from_string("nonsense"));
}

}  // namespace
}  // namespace warden
