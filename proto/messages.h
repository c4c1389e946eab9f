// The protocol's messages in their JSON forms (see PROTOCOL.md for the wire spec); the types
// themselves are in warden/types.h.
//
// Requests are validated strictly when parsed (a wrong type or a missing field is a bad_request
// with a message naming the field); replies are parsed leniently by clients so that a newer daemon
// may add fields.
#pragma once

#include <nlohmann/json.hpp>

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
json to_json(const JobStatus& s);
json to_json(const GpusReply& r);
HelloReply parse_hello_reply(const json& j);
GpusReply parse_gpus_reply(const json& j);
JobStatus parse_job_status(const json& j);
CleanupReport parse_cleanup_report(const json& j);
json to_json(const Event& e);
Event parse_event(const json& j);

}  // namespace warden
