// The protocol's messages in their JSON forms (see PROTOCOL.md for the wire spec); the types
// themselves are in warden/types.h.
//
// Requests are validated strictly when parsed (a wrong type or a missing field is a bad_request
// with a message naming the field); replies are parsed leniently by clients so that a newer daemon
// may add fields.
#pragma once

#include <nlohmann/json.hpp>

#include "proto/describe.h"
#include "warden/errors.h"
#include "warden/types.h"

namespace warden {

using json = nlohmann::json;

// Request parsing: throws Error{bad_request} naming the offending field.
HelloRequest parse_hello(const json& j);
RegisterJobRequest parse_register_job(const json& j);
AddProcessRequest parse_add_process(const json& j);
AddPathRequest parse_add_path(const json& j, PathKind kind);
AddHookRequest parse_add_hook(const json& j);
HeartbeatRequest parse_heartbeat(const json& j);
EndJobRequest parse_end_job(const json& j);
StatusRequest parse_status(const json& j);
CleanupRequest parse_cleanup(const json& j);
EventsRequest parse_events(const json& j);
// A command (hook or diagnose) in either wire form, validated as a request field is.
CommandSpec parse_command(const json& j);

// Request building for clients: the body without "id".
json to_json(const HelloRequest& r);
json to_json(const RegisterJobRequest& r);
json to_json(const AddProcessRequest& r);
json to_json(const AddPathRequest& r);
json to_json(const AddHookRequest& r);
json to_json(const HeartbeatRequest& r);
json to_json(const EndJobRequest& r);
json to_json(const StatusRequest& r);
json to_json(const CleanupRequest& r);
json to_json(const EventsRequest& r);
json to_json(const CommandSpec& c);

// Replies: built by wardend, parsed by clients.
json to_json(const HelloReply& r);
json to_json(const CleanupReport& r);
// A report's entries, as its lists carry them.
json to_json(const ProcessReport& p);
json to_json(const PathReport& p);
json to_json(const CommandReport& c);
json to_json(const JobStatus& s);
json to_json(const GpusReply& r);
HelloReply parse_hello_reply(const json& j);
GpusReply parse_gpus_reply(const json& j);
JobStatus parse_job_status(const json& j);
CleanupReport parse_cleanup_report(const json& j);
CommandReport parse_command_report(const json& j);
json to_json(const Event& e);
Event parse_event(const json& j);

}  // namespace warden

// --- described once (describe.h): each field named in one place for both directions ---------------

namespace warden {

constexpr double kMaxCheckGraceS = 3600.0;

template <>
struct Fields<CheckRequest> {
  template <class V, class Self>
  static void each(V& v, Self& r) {
    v("reclaim", r.reclaim);
    v("grace_s", r.grace_s, Bounds{0, kMaxCheckGraceS});
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

}  // namespace warden
