// The protocol's messages as C++ types, and their JSON forms (see PROTOCOL.md for the wire spec).
//
// Requests are validated strictly when parsed (a wrong type or a missing field is a bad_request with
// a message naming the field); replies are parsed leniently by clients so that a newer daemon may add
// fields.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "proto/errors.h"

namespace warden {

using json = nlohmann::json;
using JobId = std::uint64_t;

inline constexpr int kProtocolVersion = 1;
inline constexpr std::size_t kDefaultMaxFrame = 64 * 1024;

// --- vocabulary ------------------------------------------------------------------------------------

// running -> ended | failed | stalled -> cleaning -> cleaned. The first three name how the job
// ended; that name is kept as the job's `reason` once it moves on to cleaning and cleaned.
enum class JobState { running, ended, failed, stalled, cleaning, cleaned };

// What cleanup did to one registered process.
enum class ProcessOutcome {
  already_gone,  // it had exited before cleanup reached it
  terminated,    // it exited after SIGTERM, within the grace period
  killed,        // it needed SIGKILL
  unkillable,    // it survived SIGKILL past the bound (usually stuck in uninterruptible sleep)
  failed,        // signalling it failed; `detail` has the errno text
};

std::string_view to_string(JobState s);
std::string_view to_string(ProcessOutcome o);
std::optional<JobState> job_state_from_string(std::string_view s);
std::optional<ProcessOutcome> process_outcome_from_string(std::string_view s);

// --- requests (client -> daemon) ---------------------------------------------------------------------

struct HelloRequest {
  int protocol = kProtocolVersion;
  std::string client;  // free text, e.g. "wardenctl/0.1.0", for the daemon's log
};

struct RegisterJobRequest {
  std::string name;
  pid_t pid = 0;                    // the job's main process
  double heartbeat_s = 0;           // 0: no heartbeat deadline
  double grace_s = 5;               // SIGTERM -> SIGKILL
  bool kill_main_on_stall = false;  // on a stall, also terminate the main process
};

struct AddProcessRequest {
  JobId job = 0;
  pid_t pid = 0;
};

struct HeartbeatRequest {
  JobId job = 0;
};

struct EndJobRequest {
  JobId job = 0;
  bool ok = true;  // wire: "outcome": "ok" | "failed"
};

struct StatusRequest {
  std::optional<JobId> job;  // absent: every job the caller may see
};

// Request parsing: throws Error{bad_request} naming the offending field.
HelloRequest parse_hello(const json& j);
RegisterJobRequest parse_register_job(const json& j);
AddProcessRequest parse_add_process(const json& j);
HeartbeatRequest parse_heartbeat(const json& j);
EndJobRequest parse_end_job(const json& j);
StatusRequest parse_status(const json& j);

// Request building for clients: the body without "id".
json to_json(const HelloRequest& r);
json to_json(const RegisterJobRequest& r);
json to_json(const AddProcessRequest& r);
json to_json(const HeartbeatRequest& r);
json to_json(const EndJobRequest& r);
json to_json(const StatusRequest& r);

// --- replies (daemon -> client) ----------------------------------------------------------------------

struct HelloReply {
  int protocol = kProtocolVersion;
  std::string server;
  std::vector<std::string> capabilities;
  std::size_t max_frame = kDefaultMaxFrame;
};

struct ProcessStatus {
  pid_t pid = 0;
  std::uint64_t start_time = 0;  // clock ticks after boot, from /proc/PID/stat field 22
  bool exited = false;           // exited on its own while the job ran; no longer tracked
};

struct ProcessReport {
  pid_t pid = 0;
  std::string role;  // "main" | "worker"
  ProcessOutcome outcome = ProcessOutcome::already_gone;
  bool leftover = false;  // still running after a clean end: the job forgot it
  std::string detail;
  double elapsed_ms = 0;  // from cleanup start until the process was seen gone
};

struct CleanupReport {
  JobState reason = JobState::failed;  // ended | failed | stalled
  std::int64_t started_unix_ms = 0;
  double duration_ms = 0;
  std::vector<ProcessReport> processes;
};

struct JobStatus {
  JobId id = 0;
  std::string name;
  uid_t uid = 0;
  JobState state = JobState::running;
  std::optional<JobState> reason;  // set once the job ended: ended | failed | stalled
  std::string reason_detail;
  pid_t main_pid = 0;
  std::uint64_t main_start_time = 0;
  double heartbeat_s = 0;
  double grace_s = 0;
  std::int64_t created_unix_ms = 0;
  std::optional<std::int64_t> last_beat_unix_ms;
  std::vector<ProcessStatus> workers;
  std::optional<CleanupReport> report;
};

json to_json(const HelloReply& r);
json to_json(const JobStatus& s);
HelloReply parse_hello_reply(const json& j);
JobStatus parse_job_status(const json& j);

}  // namespace warden
