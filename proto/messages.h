// The protocol's messages in their JSON forms (see PROTOCOL.md for the wire spec); the types
// themselves are in warden/types.h.
//
// Requests are validated strictly when parsed (a wrong type or a missing field is a bad_request
// with a message naming the field). Replies are read by their descriptions (describe.h): a member
// they do not name is ignored, so that a newer daemon may add some; one of the wrong type is an
// error.
#pragma once

#include <nlohmann/json.hpp>

#include "proto/describe.h"
#include "warden/errors.h"
#include "warden/types.h"

namespace warden {

using json = nlohmann::json;

// Every message is described once, below, for both directions: to_json(message) writes it (a
// request with its "op") and from_json<Message>(j) reads it, throwing Error{bad_request} that names
// the offending field (describe.h). add_path's requests are read knowing their kind:
// from_json(j, AddPathRequest{.kind = kind}).

// A command (a hook, a diagnose command) has two wire forms: an argv array, or an object with
// argv, env, cwd and timeout_s. Read as a request field is.
CommandSpec parse_command(const json& j, std::string_view field = "command");
json to_json(const CommandSpec& c);

inline constexpr std::size_t kMaxNameBytes = 256;
inline constexpr std::size_t kMaxPathBytes = 4096;
inline constexpr std::size_t kMaxArgs = 256;
inline constexpr double kMaxHeartbeatS = 7 * 24 * 3600.0;
inline constexpr double kMinHeartbeatS = 0.01;
inline constexpr double kMaxUnsupervisedS = 365 * 24 * 3600.0;
inline constexpr double kMaxGraceS = 3600.0;
inline constexpr double kMaxCommandS = 3600.0;

}  // namespace warden

// --- described once (describe.h): each field named in one place for both directions
// ---------------

namespace warden {

constexpr double kMaxCheckGraceS = 3600.0;

template <>
struct Custom<CommandSpec> {
  static json write(const CommandSpec& c) { return to_json(c); }
  static CommandSpec read(const json& j, std::string_view field) { return parse_command(j, field); }
};

template <>
inline std::string_view known_values<Policy>() {
  return R"("always" or "failure")";
}
template <>
inline std::string_view known_values<Discover>() {
  return R"("reclaim", "report" or "off")";
}
template <>
inline std::string_view known_values<JobEnd>() {
  return R"("ok" or "failed")";
}

// A job id, a pid (in the caller's numbering) and a name as requests give them.
inline constexpr Rules kJobId{.required = true, .min = 1};
inline constexpr Rules kPid{.required = true, .min = 1, .max = 2147483647};
inline constexpr Rules kName{.max_bytes = kMaxNameBytes};

// --- requests
// --------------------------------------------------------------------------------------

template <>
struct Fields<HelloRequest> {
  template <class V, class Self>
  static void each(V& v, Self& r) {
    v.op("hello");
    v("protocol", r.protocol);
    v("client", r.client, {.presence = Presence::always});
  }
};

template <>
struct Fields<RegisterJobRequest> {
  template <class V, class Self>
  static void each(V& v, Self& r) {
    v.op("register_job");
    v("name", r.name, {.presence = Presence::always, .required = true, .max_bytes = kMaxNameBytes});
    v("pid", r.pid, kPid);
    v("heartbeat_s", r.heartbeat_s, {.min = 0, .max = kMaxHeartbeatS});
    v("grace_s", r.grace_s, {.min = 0, .max = kMaxGraceS});
    v("kill_main_on_stall", r.kill_main_on_stall);
    v("group", r.group, kName);
    v("diagnose", r.diagnose);
    v("pidfd", r.pidfd, {.presence = Presence::if_not_default});
    v("discover", r.discover);
  }
  static void check(const RegisterJobRequest& r) {
    // A deadline shorter than this cannot be kept by any beat (and under a nanosecond it would
    // round to "none").
    if (r.heartbeat_s != 0 && r.heartbeat_s < kMinHeartbeatS) {
      throw Error(ErrorCode::bad_request,
                  "field 'heartbeat_s' must be 0 (no deadline) or at least 0.01 seconds");
    }
  }
};

template <>
struct Fields<AddProcessRequest> {
  template <class V, class Self>
  static void each(V& v, Self& r) {
    v.op("add_process");
    v("job", r.job, kJobId);
    v("pid", r.pid, kPid);
    v("policy", r.policy);
    v("pidfd", r.pidfd, {.presence = Presence::if_not_default});
  }
};

// The member that carries the path is the kind's (info_of(kind).field): read one knowing its kind.
template <>
struct Fields<AddPathRequest> {
  template <class V, class Self>
  static void each(V& v, Self& r) {
    const PathKindInfo& kind = info_of(r.kind);
    v.op("add_" + std::string(kind.name));
    v("job", r.job, kJobId);
    v(kind.field, r.path, {.required = true, .max_bytes = kMaxPathBytes});
    v("policy", r.policy);
  }
};

template <>
struct Fields<AddHookRequest> {
  template <class V, class Self>
  static void each(V& v, Self& r) {
    v.op("add_hook");
    v("job", r.job, kJobId);
    v("hook", r.hook, {.required = true});
    v("policy", r.policy);
  }
};

template <>
struct Fields<HeartbeatRequest> {
  template <class V, class Self>
  static void each(V& v, Self& r) {
    v.op("heartbeat");
    v("job", r.job, kJobId);
    v("unsupervised_s", r.unsupervised_s,
      {.presence = Presence::if_not_default, .min = 0, .max = kMaxUnsupervisedS});
  }
};

template <>
struct Fields<EndJobRequest> {
  template <class V, class Self>
  static void each(V& v, Self& r) {
    v.op("end_job");
    v("job", r.job, kJobId);
    v("outcome", r.outcome);
  }
};

template <>
struct Fields<StatusRequest> {
  template <class V, class Self>
  static void each(V& v, Self& r) {
    v.op("status");
    v("job", r.job, {.min = 1});
    v("summary", r.summary, {.presence = Presence::if_not_default});
  }
};

template <>
struct Fields<CleanupRequest> {
  template <class V, class Self>
  static void each(V& v, Self& r) {
    v.op("cleanup");
    v("job", r.job, {.min = 1});
    v("group", r.group, kName);
  }
  static void check(const CleanupRequest& r) {
    if (r.job.has_value() == !r.group.empty()) {
      throw Error(ErrorCode::bad_request, "field 'job' or 'group' is required (exactly one)");
    }
  }
};

template <>
struct Fields<EventsRequest> {
  template <class V, class Self>
  static void each(V& v, Self& r) {
    v.op("events");
    v("job", r.job, {.min = 1});
    v("since_unix_ms", r.since_unix_ms, {.min = 0});
    v("after_seq", r.after_seq, {.min = 0});
    v("limit", r.limit, {.min = 0, .max = static_cast<double>(kMaxEventsPerReply)});
    v("follow", r.follow, {.presence = Presence::if_not_default});
  }
};

template <>
struct Fields<CheckRequest> {
  template <class V, class Self>
  static void each(V& v, Self& r) {
    v("reclaim", r.reclaim);
    v("grace_s", r.grace_s, {.min = 0, .max = kMaxCheckGraceS});
  }
};

template <>
struct Fields<Finding> {
  template <class V, class Self>
  static void each(V& v, Self& f) {
    v("kind", f.kind);
    v("what", f.what);
    v("action", f.action);
    v("detail", f.detail);
    v("since_unix_ms", f.since_unix_ms);
    v("job", f.job);
    v("job_name", f.job_name);
    v("pid", f.pid);
    v("uid", f.uid);
    v("command", f.command);
    v("path", f.path);
    v("bytes", f.bytes);
  }
};

template <>
struct Fields<ReclaimAct> {
  template <class V, class Self>
  static void each(V& v, Self& a) {
    v("kind", a.kind);
    v("what", a.what);
    v("outcome", a.outcome);
    v("detail", a.detail);
  }
};

template <>
struct Fields<CheckReply> {
  template <class V, class Self>
  static void each(V& v, Self& r) {
    v("clean", r.clean);
    v("findings", r.findings);
    v("reclaimed", r.reclaimed);
    v("elapsed_ms", r.elapsed_ms);
    v("note", r.note);
  }
};

// --- replies
// ---------------------------------------------------------------------------------------

template <>
struct Fields<HelloReply> {
  template <class V, class Self>
  static void each(V& v, Self& r) {
    v("protocol", r.protocol);
    v("server", r.server, {.presence = Presence::always});
    v("capabilities", r.capabilities, {.presence = Presence::always});
    v("max_frame", r.max_frame);
    v("tracking", r.tracking, {.presence = Presence::always});
    v("instance", r.instance, {.presence = Presence::always});
    v("discover", r.discover, {.presence = Presence::always});
    v("discover_note", r.discover_note, {.presence = Presence::always});
  }
};

template <>
struct Fields<GpuUse> {
  template <class V, class Self>
  static void each(V& v, Self& g) {
    v("device", g.device, {.presence = Presence::always});
    v("memory_bytes", g.memory_bytes);
  }
};

template <>
struct Fields<ProcessReport> {
  template <class V, class Self>
  static void each(V& v, Self& p) {
    v("pid", p.pid);
    v("local_pid", p.local_pid);
    v("start_time", p.start_time, {.presence = Presence::if_not_default});
    v("role", p.role, {.presence = Presence::always});
    v("outcome", p.outcome);
    v("leftover", p.leftover, {.presence = Presence::if_not_default});
    v("detail", p.detail);
    v("command", p.command);
    v("elapsed_ms", p.elapsed_ms);
    v("gpus", p.gpus);
  }
};

template <>
struct Fields<PathReport> {
  template <class V, class Self>
  static void each(V& v, Self& p) {
    v("kind", p.kind);
    v("path", p.path, {.presence = Presence::always});
    v("outcome", p.outcome);
    v("leftover", p.leftover, {.presence = Presence::if_not_default});
    v("removed", p.removed);
    v("detail", p.detail);
    v("elapsed_ms", p.elapsed_ms);
    v("bytes", p.bytes);
  }
};

template <>
struct Fields<CommandReport> {
  template <class V, class Self>
  static void each(V& v, Self& c) {
    v("argv", c.argv, {.presence = Presence::always});
    v("outcome", c.outcome);
    v("exit_code", c.exit_code);
    v("signal", c.signal);
    v("output", c.output, {.presence = Presence::always});
    v("truncated", c.truncated, {.presence = Presence::if_not_default});
    v("detail", c.detail);
    v("elapsed_ms", c.elapsed_ms);
  }
};

template <>
struct Fields<ProcessSnapshot> {
  template <class V, class Self>
  static void each(V& v, Self& p) {
    v("pid", p.pid);
    v("role", p.role, {.presence = Presence::always});
    v("state", p.state);
    v("wchan", p.wchan, {.presence = Presence::always});
    v("stack", p.stack, {.presence = Presence::always});
    v("detail", p.detail);
  }
};

template <>
struct Fields<Diagnostics> {
  template <class V, class Self>
  static void each(V& v, Self& d) {
    v("processes", d.processes, {.presence = Presence::always});
    v("command", d.command);
  }
};

template <>
struct Fields<GpuHolder> {
  template <class V, class Self>
  static void each(V& v, Self& h) {
    v("pid", h.pid);
    v("uid", h.uid);
    v("command", h.command, {.presence = Presence::always});
    v("memory_bytes", h.memory_bytes);
    v("job", h.job);
    v("job_name", h.job_name);
  }
};

template <>
struct Fields<GpuReport> {
  template <class V, class Self>
  static void each(V& v, Self& g) {
    v("device", g.device, {.presence = Presence::always});
    v("uuid", g.uuid);
    v("held_bytes", g.held_bytes);
    v("released_bytes", g.released_bytes);
    v("still_held_by", g.still_held_by, {.presence = Presence::always});
  }
};

template <>
struct Fields<Omitted> {
  template <class V, class Self>
  static void each(V& v, Self& o) {
    v("count", o.count);
    v("outcomes", o.outcomes, {.presence = Presence::always});
  }
};

template <>
struct Fields<Reclaimed> {
  template <class V, class Self>
  static void each(V& v, Self& r) {
    v("file", r.file_bytes);
    v("shm", r.shm_bytes);
    v("gpu", r.gpu_bytes);
  }
};

template <>
struct Fields<CleanupReport> {
  template <class V, class Self>
  static void each(V& v, Self& r) {
    v("reason", r.reason);
    v("started_unix_ms", r.started_unix_ms);
    v("duration_ms", r.duration_ms);
    v("diagnostics", r.diagnostics);
    v("processes", r.processes, {.presence = Presence::always});
    v("hooks", r.hooks, {.presence = Presence::always});
    v("paths", r.paths, {.presence = Presence::always});
    v("discovered", r.discovered);
    v("gpus", r.gpus);
    v("gpu_note", r.gpu_note);
    v("reclaimed_bytes", r.reclaimed);
    v("omitted", r.omitted);
  }
};

template <>
struct Fields<GpuStatus> {
  template <class V, class Self>
  static void each(V& v, Self& g) {
    v("device", g.device, {.presence = Presence::always});
    v("uuid", g.uuid);
    v("memory_total_bytes", g.memory_total_bytes);
    v("memory_used_bytes", g.memory_used_bytes);
    v("holders", g.holders, {.presence = Presence::always});
  }
};

template <>
struct Fields<GpusReply> {
  template <class V, class Self>
  static void each(V& v, Self& r) {
    v("gpus", r.gpus, {.presence = Presence::always});
    v("note", r.note);
  }
};

template <>
struct Fields<ProcessStatus> {
  template <class V, class Self>
  static void each(V& v, Self& p) {
    v("pid", p.pid);
    v("start_time", p.start_time);
    v("exited", p.exited);
    v("policy", p.policy);
    v("tracking", p.tracking);
  }
};

template <>
struct Fields<PathStatus> {
  template <class V, class Self>
  static void each(V& v, Self& p) {
    v("kind", p.kind);
    v("path", p.path, {.presence = Presence::always});
    v("policy", p.policy);
  }
};

template <>
struct Fields<JobStatus> {
  template <class V, class Self>
  static void each(V& v, Self& s) {
    v("id", s.id);
    v("name", s.name, {.presence = Presence::always});
    v("group", s.group, {.presence = Presence::always});
    v("uid", s.uid);
    v("state", s.state);
    v("reason", s.reason);
    v("reason_detail", s.reason_detail, {.presence = Presence::always});
    v.object("main", [&s](auto& main) {
      main("pid", s.main_pid);
      main("start_time", s.main_start_time);
    });
    v("heartbeat_s", s.heartbeat_s);
    v("grace_s", s.grace_s);
    v("created_unix_ms", s.created_unix_ms);
    v("last_beat_unix_ms", s.last_beat_unix_ms);
    v("workers", s.workers, {.presence = Presence::always});
    v("paths", s.paths, {.presence = Presence::always});
    v("hooks", s.hooks);
    v("tracking", s.tracking, {.presence = Presence::always});
    v("cgroup", s.cgroup);
    v("discover", s.discover);
    v("report", s.report);
    v.object("counts", [&s](auto& counts) {
      counts("processes", s.live_processes);
      counts("files", s.files);
      counts("shm", s.shm);
    });
  }
};

template <>
struct Fields<Event> {
  template <class V, class Self>
  static void each(V& v, Self& e) {
    v("seq", e.seq, {.presence = Presence::if_not_default});
    v("unix_ms", e.unix_ms);
    v("job", e.job);
    v("uid", e.uid);
    v("name", e.name, {.presence = Presence::always});
    v("state", e.state);
    v("reason", e.reason);
    v("reason_detail", e.reason_detail, {.presence = Presence::always});
    v("report", e.report);
  }
};

}  // namespace warden
