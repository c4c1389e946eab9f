// The messages' JSON forms, pinned: clients in other languages read these members (PROTOCOL.md),
// so a change to how a message is described must not move one.
#include <gtest/gtest.h>

#include "proto/messages.h"
#include "tests/support/expect_error.h"

namespace warden {
namespace {

CleanupReport full_report() {
  CommandReport hook{.argv = {"/bin/sh", "-c", "rm -rf x"},
                     .outcome = Outcome::failed,
                     .exit_code = 2,
                     .signal = 9,
                     .output = "no",
                     .truncated = true,
                     .detail = "why",
                     .elapsed_ms = 1.5};
  GpuHolder holder{.pid = 9,
                   .uid = 1000,
                   .command = "python",
                   .memory_bytes = 1024,
                   .job = 4,
                   .job_name = "other"};
  return {.reason = JobState::stalled,
          .started_unix_ms = 1'700'000'000'000,
          .duration_ms = 12.5,
          .diagnostics = Diagnostics{.processes = {{.pid = 5,
                                                    .role = "main",
                                                    .state = 'D',
                                                    .wchan = "nccl_wait",
                                                    .stack = "[<0>] x",
                                                    .detail = "d"}},
                                     .command = hook},
          .processes = {{.pid = 5,
                         .local_pid = 1,
                         .start_time = 77,
                         .role = "main",
                         .outcome = Outcome::killed,
                         .leftover = true,
                         .detail = "d",
                         .command = "python train.py",
                         .elapsed_ms = 3.25,
                         .gpus = {{.device = "/dev/nvidia0", .memory_bytes = 2048},
                                  {.device = "/dev/nvidia1"}}}},
          .hooks = {hook},
          .paths = {{.kind = PathKind::shm_glob,
                     .path = "torch_*",
                     .outcome = Outcome::removed,
                     .leftover = true,
                     .removed = 3,
                     .detail = "d",
                     .elapsed_ms = 0.5,
                     .bytes = 4096}},
          .discovered = {{.kind = PathKind::file, .path = "/tmp/f", .outcome = Outcome::kept}},
          .gpus = {{.device = "/dev/nvidia0",
                    .uuid = "GPU-1",
                    .held_bytes = 100,
                    .released_bytes = 90,
                    .still_held_by = {holder}}},
          .gpu_note = "note",
          .reclaimed = {.file_bytes = 1, .shm_bytes = 2, .gpu_bytes = 3},
          .omitted = {
              {"paths", {.count = 7, .outcomes = {{Outcome::removed, 6}, {Outcome::failed, 1}}}}}};
}

JobStatus full_status() {
  return {.id = 3,
          .name = "train",
          .group = "g",
          .uid = 1000,
          .state = JobState::cleaned,
          .reason = JobState::failed,
          .reason_detail = "main exited 1",
          .main_pid = 5,
          .main_start_time = 77,
          .heartbeat_s = 30,
          .grace_s = 5,
          .created_unix_ms = 1'700'000'000'000,
          .last_beat_unix_ms = 1'700'000'000'500,
          .workers = {{.pid = 6, .start_time = 78, .exited = true, .policy = Policy::failure},
                      {.pid = 7, .start_time = 79, .tracking = "cgroup"}},
          .paths = {{.kind = PathKind::dir, .path = "/tmp/d", .policy = Policy::failure}},
          .hooks = 1,
          .tracking = "cgroup",
          .cgroup = "/warden/job-3",
          .discover = Discover::report,
          .report = full_report(),
          .live_processes = 2,
          .files = 1,
          .shm = 0};
}

Event full_event() {
  return {.seq = 12,
          .unix_ms = 1'700'000'000'000,
          .job = 3,
          .uid = 1000,
          .name = "train",
          .state = JobState::cleaned,
          .reason = JobState::ended,
          .reason_detail = "ok",
          .report = full_report()};
}

GpusReply full_gpus() {
  return {.gpus = {{.device = "/dev/nvidia0",
                    .uuid = "GPU-1",
                    .memory_total_bytes = 80,
                    .memory_used_bytes = 8,
                    .holders = {{.pid = 9, .uid = 0, .command = "python"}}},
                   {.device = "/dev/nvidia1"}},
          .note = "no NVML"};
}

HelloReply full_hello() {
  return {.server = "wardend/1",
          .capabilities = {"cmd-hello"},
          .max_frame = 100,
          .tracking = "cgroup",
          .instance = "abc",
          .discover = "report",
          .discover_note = "n"};
}

// Each message as it travels, member by member: it is written from its description and read back
// from it, and these are the forms PROTOCOL.md gives and other languages' clients index.
template <class T>
void expect_wire_form(const T& value, std::string_view expected) {
  json written = to_json(value);
  EXPECT_EQ(written, json::parse(expected)) << written.dump();
  EXPECT_EQ(to_json(from_json(written, T{})), written) << "it reads back as it was";
}

TEST(WireForms, FullReport) {
  expect_wire_form(
      full_report(),
      R"({"diagnostics":{"command":{"argv":["/bin/sh","-c","rm -rf x"],"detail":"why","elapsed_ms)"
      R"(":1.5,"exit_code":2,"outcome":"failed","output":"no","signal":9,"truncated":true},"proce)"
      R"(sses":[{"detail":"d","pid":5,"role":"main","stack":"[<0>] x","state":"D","wchan":"nccl_w)"
      R"(ait"}]},"discovered":[{"elapsed_ms":0.0,"kind":"file","outcome":"kept","path":"/tmp/f",")"
      R"(removed":0}],"duration_ms":12.5,"gpu_note":"note","gpus":[{"device":"/dev/nvidia0","held)"
      R"(_bytes":100,"released_bytes":90,"still_held_by":[{"command":"python","job":4,"job_name":)"
      R"("other","memory_bytes":1024,"pid":9,"uid":1000}],"uuid":"GPU-1"}],"hooks":[{"argv":["/bi)"
      R"(n/sh","-c","rm -rf x"],"detail":"why","elapsed_ms":1.5,"exit_code":2,"outcome":"failed",)"
      R"("output":"no","signal":9,"truncated":true}],"omitted":{"paths":{"count":7,"outcomes":{"f)"
      R"(ailed":1,"removed":6}}},"paths":[{"bytes":4096,"detail":"d","elapsed_ms":0.5,"kind":"shm)"
      R"(_glob","leftover":true,"outcome":"removed","path":"torch_*","removed":3}],"processes":[{)"
      R"("command":"python train.py","detail":"d","elapsed_ms":3.25,"gpus":[{"device":"/dev/nvidi)"
      R"(a0","memory_bytes":2048},{"device":"/dev/nvidia1"}],"leftover":true,"local_pid":1,"outco)"
      R"(me":"killed","pid":5,"role":"main","start_time":77}],"reason":"stalled","reclaimed_bytes)"
      R"(":{"file":1,"gpu":3,"shm":2},"started_unix_ms":1700000000000})");
}

TEST(WireForms, EmptyReport) {
  expect_wire_form(
      CleanupReport{},
      R"({"duration_ms":0.0,"hooks":[],"paths":[],"processes":[],"reason":"failed","reclaimed_byt)"
      R"(es":{"file":0,"gpu":0,"shm":0},"started_unix_ms":0})");
}

TEST(WireForms, FullStatus) {
  expect_wire_form(
      full_status(),
      R"({"cgroup":"/warden/job-3","counts":{"files":1,"processes":2,"shm":0},"created_unix_ms":1)"
      R"(700000000000,"discover":"report","grace_s":5.0,"group":"g","heartbeat_s":30.0,"hooks":1,)"
      R"("id":3,"last_beat_unix_ms":1700000000500,"main":{"pid":5,"start_time":77},"name":"train")"
      R"(,"paths":[{"kind":"dir","path":"/tmp/d","policy":"failure"}],"reason":"failed","reason_d)"
      R"(etail":"main exited 1","report":{"diagnostics":{"command":{"argv":["/bin/sh","-c","rm -r)"
      R"(f x"],"detail":"why","elapsed_ms":1.5,"exit_code":2,"outcome":"failed","output":"no","si)"
      R"(gnal":9,"truncated":true},"processes":[{"detail":"d","pid":5,"role":"main","stack":"[<0>)"
      R"(] x","state":"D","wchan":"nccl_wait"}]},"discovered":[{"elapsed_ms":0.0,"kind":"file","o)"
      R"(utcome":"kept","path":"/tmp/f","removed":0}],"duration_ms":12.5,"gpu_note":"note","gpus")"
      R"(:[{"device":"/dev/nvidia0","held_bytes":100,"released_bytes":90,"still_held_by":[{"comma)"
      R"(nd":"python","job":4,"job_name":"other","memory_bytes":1024,"pid":9,"uid":1000}],"uuid":)"
      R"("GPU-1"}],"hooks":[{"argv":["/bin/sh","-c","rm -rf x"],"detail":"why","elapsed_ms":1.5,")"
      R"(exit_code":2,"outcome":"failed","output":"no","signal":9,"truncated":true}],"omitted":{")"
      R"(paths":{"count":7,"outcomes":{"failed":1,"removed":6}}},"paths":[{"bytes":4096,"detail":)"
      R"("d","elapsed_ms":0.5,"kind":"shm_glob","leftover":true,"outcome":"removed","path":"torch)"
      R"(_*","removed":3}],"processes":[{"command":"python train.py","detail":"d","elapsed_ms":3.)"
      R"(25,"gpus":[{"device":"/dev/nvidia0","memory_bytes":2048},{"device":"/dev/nvidia1"}],"lef)"
      R"(tover":true,"local_pid":1,"outcome":"killed","pid":5,"role":"main","start_time":77}],"re)"
      R"(ason":"stalled","reclaimed_bytes":{"file":1,"gpu":3,"shm":2},"started_unix_ms":170000000)"
      R"(0000},"state":"cleaned","tracking":"cgroup","uid":1000,"workers":[{"exited":true,"pid":6)"
      R"(,"policy":"failure","start_time":78},{"exited":false,"pid":7,"policy":"always","start_ti)"
      R"(me":79,"tracking":"cgroup"}]})");
}

TEST(WireForms, EmptyStatus) {
  expect_wire_form(
      JobStatus{},
      R"({"counts":{"files":0,"processes":0,"shm":0},"created_unix_ms":0,"discover":"reclaim","gr)"
      R"(ace_s":0.0,"group":"","heartbeat_s":0.0,"hooks":0,"id":0,"main":{"pid":0,"start_time":0})"
      R"(,"name":"","paths":[],"reason_detail":"","state":"running","tracking":"scan","uid":0,"wo)"
      R"(rkers":[]})");
}

TEST(WireForms, FullEvent) {
  expect_wire_form(
      full_event(),
      R"({"job":3,"name":"train","reason":"ended","reason_detail":"ok","report":{"diagnostics":{")"
      R"(command":{"argv":["/bin/sh","-c","rm -rf x"],"detail":"why","elapsed_ms":1.5,"exit_code")"
      R"(:2,"outcome":"failed","output":"no","signal":9,"truncated":true},"processes":[{"detail":)"
      R"("d","pid":5,"role":"main","stack":"[<0>] x","state":"D","wchan":"nccl_wait"}]},"discover)"
      R"(ed":[{"elapsed_ms":0.0,"kind":"file","outcome":"kept","path":"/tmp/f","removed":0}],"dur)"
      R"(ation_ms":12.5,"gpu_note":"note","gpus":[{"device":"/dev/nvidia0","held_bytes":100,"rele)"
      R"(ased_bytes":90,"still_held_by":[{"command":"python","job":4,"job_name":"other","memory_b)"
      R"(ytes":1024,"pid":9,"uid":1000}],"uuid":"GPU-1"}],"hooks":[{"argv":["/bin/sh","-c","rm -r)"
      R"(f x"],"detail":"why","elapsed_ms":1.5,"exit_code":2,"outcome":"failed","output":"no","si)"
      R"(gnal":9,"truncated":true}],"omitted":{"paths":{"count":7,"outcomes":{"failed":1,"removed)"
      R"(":6}}},"paths":[{"bytes":4096,"detail":"d","elapsed_ms":0.5,"kind":"shm_glob","leftover")"
      R"(:true,"outcome":"removed","path":"torch_*","removed":3}],"processes":[{"command":"python)"
      R"( train.py","detail":"d","elapsed_ms":3.25,"gpus":[{"device":"/dev/nvidia0","memory_bytes)"
      R"(":2048},{"device":"/dev/nvidia1"}],"leftover":true,"local_pid":1,"outcome":"killed","pid)"
      R"(":5,"role":"main","start_time":77}],"reason":"stalled","reclaimed_bytes":{"file":1,"gpu")"
      R"(:3,"shm":2},"started_unix_ms":1700000000000},"seq":12,"state":"cleaned","uid":1000,"unix)"
      R"(_ms":1700000000000})");
}

TEST(WireForms, EmptyEvent) {
  expect_wire_form(
      Event{}, R"({"job":0,"name":"","reason_detail":"","state":"running","uid":0,"unix_ms":0})");
}

TEST(WireForms, FullGpus) {
  expect_wire_form(
      full_gpus(),
      R"({"gpus":[{"device":"/dev/nvidia0","holders":[{"command":"python","pid":9,"uid":0}],"memo)"
      R"(ry_total_bytes":80,"memory_used_bytes":8,"uuid":"GPU-1"},{"device":"/dev/nvidia1","holde)"
      R"(rs":[]}],"note":"no NVML"})");
}

TEST(WireForms, EmptyGpus) { expect_wire_form(GpusReply{}, R"({"gpus":[]})"); }

TEST(WireForms, FullHello) {
  expect_wire_form(
      full_hello(),
      R"({"capabilities":["cmd-hello"],"discover":"report","discover_note":"n","instance":"abc",")"
      R"(max_frame":100,"protocol":1,"server":"wardend/1","tracking":"cgroup"})");
}

TEST(WireForms, EmptyHello) {
  expect_wire_form(
      HelloReply{},
      R"({"capabilities":[],"discover":"reclaim","discover_note":"","instance":"","max_frame":655)"
      R"(36,"protocol":1,"server":"","tracking":"scan"})");
}

TEST(WireForms, EmptyProcess) {
  expect_wire_form(ProcessReport{},
                   R"({"elapsed_ms":0.0,"outcome":"already_gone","pid":0,"role":""})");
}

TEST(WireForms, EmptyPath) {
  expect_wire_form(PathReport{},
                   R"({"elapsed_ms":0.0,"kind":"file","outcome":"removed","path":"","removed":0})");
}

TEST(WireForms, EmptyCommand) {
  expect_wire_form(CommandReport{},
                   R"({"argv":[],"elapsed_ms":0.0,"outcome":"succeeded","output":""})");
}

// Requests as clients send them: each with its op, what is at its default left out.
TEST(WireForms, Requests) {
  expect_wire_form(HelloRequest{.client = "c"}, R"({"op":"hello","protocol":1,"client":"c"})");
  expect_wire_form(RegisterJobRequest{.name = "t", .pid = 7},
                   R"({"op":"register_job","name":"t","pid":7,"heartbeat_s":0.0,"grace_s":5.0,)"
                   R"("kill_main_on_stall":false})");
  expect_wire_form(RegisterJobRequest{.name = "t",
                                      .pid = 7,
                                      .heartbeat_s = 30,
                                      .group = "g",
                                      .diagnose = CommandSpec{.argv = {"/bin/true"}},
                                      .pidfd = true,
                                      .discover = Discover::off},
                   R"({"op":"register_job","name":"t","pid":7,"heartbeat_s":30.0,"grace_s":5.0,)"
                   R"("kill_main_on_stall":false,"group":"g","diagnose":{"argv":["/bin/true"],)"
                   R"("timeout_s":30.0},"pidfd":true,"discover":"off"})");
  expect_wire_form(AddProcessRequest{.job = 1, .pid = 7},
                   R"({"op":"add_process","job":1,"pid":7,"policy":"always"})");
  expect_wire_form(AddHookRequest{.job = 1, .hook = {.argv = {"/bin/true"}, .cwd = "/"}},
                   R"({"op":"add_hook","job":1,"policy":"always",)"
                   R"("hook":{"argv":["/bin/true"],"cwd":"/","timeout_s":30.0}})");
  expect_wire_form(HeartbeatRequest{.job = 1}, R"({"op":"heartbeat","job":1})");
  expect_wire_form(HeartbeatRequest{.job = 1, .unsupervised_s = 2.5},
                   R"({"op":"heartbeat","job":1,"unsupervised_s":2.5})");
  expect_wire_form(EndJobRequest{.job = 1, .outcome = JobEnd::failed},
                   R"({"op":"end_job","job":1,"outcome":"failed"})");
  expect_wire_form(StatusRequest{}, R"({"op":"status"})");
  expect_wire_form(StatusRequest{.job = 2, .summary = true},
                   R"({"op":"status","job":2,"summary":true})");
  expect_wire_form(CleanupRequest{.group = "g"}, R"({"op":"cleanup","group":"g"})");
  expect_wire_form(EventsRequest{}, R"({"op":"events","limit":100})");
  expect_wire_form(EventsRequest{.job = 2, .since_unix_ms = 5, .after_seq = 6, .follow = true},
                   R"({"op":"events","limit":100,"job":2,"since_unix_ms":5,"after_seq":6,)"
                   R"("follow":true})");
}

TEST(WireForms, AReplyOfAWrongShapeIsABadRequest) {
  json status = to_json(full_status());
  status["main"] = 5;
  EXPECT_EQ(testing::code_of([&] { from_json<JobStatus>(status); }), ErrorCode::bad_request);
  json report = to_json(full_report());
  report["omitted"]["paths"]["outcomes"]["vanished"] = 1;
  EXPECT_EQ(testing::code_of([&] { from_json<CleanupReport>(report); }), ErrorCode::bad_request);
  json snapshot = to_json(full_report());
  snapshot["diagnostics"]["processes"][0]["state"] = "DS";
  EXPECT_EQ(testing::code_of([&] { from_json<CleanupReport>(snapshot); }), ErrorCode::bad_request);
}

}  // namespace
}  // namespace warden
