#include "proto/messages.h"

#include <array>
#include <climits>
#include <cmath>
#include <utility>

namespace warden {
namespace {

constexpr std::array<std::pair<JobState, std::string_view>, 6> kJobStates{{
    {JobState::running, "running"},
    {JobState::ended, "ended"},
    {JobState::failed, "failed"},
    {JobState::stalled, "stalled"},
    {JobState::cleaning, "cleaning"},
    {JobState::cleaned, "cleaned"},
}};

constexpr std::array<std::pair<ProcessOutcome, std::string_view>, 5> kOutcomes{{
    {ProcessOutcome::already_gone, "already_gone"},
    {ProcessOutcome::terminated, "terminated"},
    {ProcessOutcome::killed, "killed"},
    {ProcessOutcome::unkillable, "unkillable"},
    {ProcessOutcome::failed, "failed"},
}};

template <class E, std::size_t N>
std::string_view name_of(const std::array<std::pair<E, std::string_view>, N>& table, E value) {
  for (const auto& [v, name] : table) {
    if (v == value) return name;
  }
  return "unknown";
}

template <class E, std::size_t N>
std::optional<E> value_of(const std::array<std::pair<E, std::string_view>, N>& table,
                          std::string_view name) {
  for (const auto& [v, n] : table) {
    if (n == name) return v;
  }
  return std::nullopt;
}

[[noreturn]] void bad_field(std::string_view field, std::string_view what) {
  throw Error(ErrorCode::bad_request, "field '" + std::string(field) + "' " + std::string(what));
}

const json* find(const json& j, std::string_view field) {
  auto it = j.find(field);
  return it == j.end() ? nullptr : &*it;
}

std::string string_field(const json& j, std::string_view field, std::size_t max_len) {
  const json* v = find(j, field);
  if (v == nullptr) bad_field(field, "is required");
  if (!v->is_string()) bad_field(field, "must be a string");
  const auto& s = v->get_ref<const std::string&>();
  if (s.empty()) bad_field(field, "must not be empty");
  if (s.size() > max_len) bad_field(field, "must be at most " + std::to_string(max_len) + " bytes");
  return s;
}

pid_t pid_field(const json& j, std::string_view field) {
  const json* v = find(j, field);
  if (v == nullptr) bad_field(field, "is required");
  if (!v->is_number_integer()) bad_field(field, "must be an integer pid");
  auto pid = v->get<std::int64_t>();
  if (pid <= 0 || pid > INT_MAX) bad_field(field, "must be a positive pid");
  return static_cast<pid_t>(pid);
}

JobId job_field(const json& j, std::string_view field) {
  const json* v = find(j, field);
  if (v == nullptr) bad_field(field, "is required");
  if (!v->is_number_integer() || (v->is_number_integer() && !v->is_number_unsigned() &&
                                  v->get<std::int64_t>() < 0)) {
    bad_field(field, "must be a job id (a positive integer)");
  }
  auto id = v->get<std::uint64_t>();
  if (id == 0) bad_field(field, "must be a job id (a positive integer)");
  return id;
}

// A duration in seconds: finite, within [0, max].
double seconds_field(const json& j, std::string_view field, double fallback, double max) {
  const json* v = find(j, field);
  if (v == nullptr) return fallback;
  if (!v->is_number()) bad_field(field, "must be a number of seconds");
  double s = v->get<double>();
  if (!std::isfinite(s) || s < 0 || s > max) {
    bad_field(field, "must be between 0 and " + std::to_string(static_cast<long>(max)) + " seconds");
  }
  return s;
}

bool bool_field(const json& j, std::string_view field, bool fallback) {
  const json* v = find(j, field);
  if (v == nullptr) return fallback;
  if (!v->is_boolean()) bad_field(field, "must be true or false");
  return v->get<bool>();
}

constexpr std::size_t kMaxNameBytes = 256;
constexpr double kMaxHeartbeatS = 7 * 24 * 3600.0;
constexpr double kMaxGraceS = 3600.0;

}  // namespace

std::string_view to_string(JobState s) { return name_of(kJobStates, s); }
std::string_view to_string(ProcessOutcome o) { return name_of(kOutcomes, o); }
std::optional<JobState> job_state_from_string(std::string_view s) { return value_of(kJobStates, s); }
std::optional<ProcessOutcome> process_outcome_from_string(std::string_view s) {
  return value_of(kOutcomes, s);
}

// --- requests ------------------------------------------------------------------------------------

HelloRequest parse_hello(const json& j) {
  HelloRequest r;
  if (const json* v = find(j, "protocol")) {
    if (!v->is_number_integer()) bad_field("protocol", "must be an integer");
    r.protocol = v->get<int>();
  }
  if (const json* v = find(j, "client"); v != nullptr && v->is_string()) {
    r.client = v->get<std::string>().substr(0, kMaxNameBytes);
  }
  return r;
}

RegisterJobRequest parse_register_job(const json& j) {
  RegisterJobRequest r;
  r.name = string_field(j, "name", kMaxNameBytes);
  r.pid = pid_field(j, "pid");
  r.heartbeat_s = seconds_field(j, "heartbeat_s", 0, kMaxHeartbeatS);
  r.grace_s = seconds_field(j, "grace_s", r.grace_s, kMaxGraceS);
  r.kill_main_on_stall = bool_field(j, "kill_main_on_stall", false);
  return r;
}

AddProcessRequest parse_add_process(const json& j) {
  return {.job = job_field(j, "job"), .pid = pid_field(j, "pid")};
}

HeartbeatRequest parse_heartbeat(const json& j) { return {.job = job_field(j, "job")}; }

EndJobRequest parse_end_job(const json& j) {
  EndJobRequest r{.job = job_field(j, "job")};
  if (const json* v = find(j, "outcome")) {
    if (*v == "ok") {
      r.ok = true;
    } else if (*v == "failed") {
      r.ok = false;
    } else {
      bad_field("outcome", "must be \"ok\" or \"failed\"");
    }
  }
  return r;
}

StatusRequest parse_status(const json& j) {
  StatusRequest r;
  if (find(j, "job") != nullptr) r.job = job_field(j, "job");
  return r;
}

json to_json(const HelloRequest& r) {
  return {{"op", "hello"}, {"protocol", r.protocol}, {"client", r.client}};
}

json to_json(const RegisterJobRequest& r) {
  return {{"op", "register_job"},     {"name", r.name},
          {"pid", r.pid},             {"heartbeat_s", r.heartbeat_s},
          {"grace_s", r.grace_s},     {"kill_main_on_stall", r.kill_main_on_stall}};
}

json to_json(const AddProcessRequest& r) {
  return {{"op", "add_process"}, {"job", r.job}, {"pid", r.pid}};
}

json to_json(const HeartbeatRequest& r) { return {{"op", "heartbeat"}, {"job", r.job}}; }

json to_json(const EndJobRequest& r) {
  return {{"op", "end_job"}, {"job", r.job}, {"outcome", r.ok ? "ok" : "failed"}};
}

json to_json(const StatusRequest& r) {
  json j{{"op", "status"}};
  if (r.job) j["job"] = *r.job;
  return j;
}

// --- replies ---------------------------------------------------------------------------------------

json to_json(const HelloReply& r) {
  return {{"protocol", r.protocol},
          {"server", r.server},
          {"capabilities", r.capabilities},
          {"max_frame", r.max_frame}};
}

HelloReply parse_hello_reply(const json& j) {
  HelloReply r;
  r.protocol = j.value("protocol", 0);
  r.server = j.value("server", "");
  r.capabilities = j.value("capabilities", std::vector<std::string>{});
  r.max_frame = j.value("max_frame", kDefaultMaxFrame);
  return r;
}

namespace {

json to_json(const ProcessReport& p) {
  json j{{"pid", p.pid},
         {"role", p.role},
         {"outcome", to_string(p.outcome)},
         {"elapsed_ms", p.elapsed_ms}};
  if (p.leftover) j["leftover"] = true;
  if (!p.detail.empty()) j["detail"] = p.detail;
  return j;
}

json to_json(const CleanupReport& r) {
  json procs = json::array();
  for (const auto& p : r.processes) procs.push_back(to_json(p));
  return {{"reason", to_string(r.reason)},
          {"started_unix_ms", r.started_unix_ms},
          {"duration_ms", r.duration_ms},
          {"processes", std::move(procs)}};
}

ProcessReport parse_process_report(const json& j) {
  ProcessReport p;
  p.pid = j.value("pid", 0);
  p.role = j.value("role", "");
  p.outcome = process_outcome_from_string(j.value("outcome", ""))
                  .value_or(ProcessOutcome::failed);
  p.leftover = j.value("leftover", false);
  p.detail = j.value("detail", "");
  p.elapsed_ms = j.value("elapsed_ms", 0.0);
  return p;
}

CleanupReport parse_cleanup_report(const json& j) {
  CleanupReport r;
  r.reason = job_state_from_string(j.value("reason", "")).value_or(JobState::failed);
  r.started_unix_ms = j.value("started_unix_ms", std::int64_t{0});
  r.duration_ms = j.value("duration_ms", 0.0);
  for (const auto& p : j.value("processes", json::array())) {
    r.processes.push_back(parse_process_report(p));
  }
  return r;
}

}  // namespace

json to_json(const JobStatus& s) {
  json workers = json::array();
  for (const auto& w : s.workers) {
    workers.push_back({{"pid", w.pid}, {"start_time", w.start_time}, {"exited", w.exited}});
  }
  json j{{"id", s.id},
         {"name", s.name},
         {"uid", s.uid},
         {"state", to_string(s.state)},
         {"main", {{"pid", s.main_pid}, {"start_time", s.main_start_time}}},
         {"heartbeat_s", s.heartbeat_s},
         {"grace_s", s.grace_s},
         {"created_unix_ms", s.created_unix_ms},
         {"workers", std::move(workers)}};
  if (s.reason) {
    j["reason"] = to_string(*s.reason);
    j["reason_detail"] = s.reason_detail;
  }
  if (s.last_beat_unix_ms) j["last_beat_unix_ms"] = *s.last_beat_unix_ms;
  if (s.report) j["report"] = to_json(*s.report);
  return j;
}

JobStatus parse_job_status(const json& j) {
  JobStatus s;
  s.id = j.value("id", JobId{0});
  s.name = j.value("name", "");
  s.uid = j.value("uid", uid_t{0});
  s.state = job_state_from_string(j.value("state", "")).value_or(JobState::running);
  if (j.contains("reason")) {
    s.reason = job_state_from_string(j.value("reason", ""));
    s.reason_detail = j.value("reason_detail", "");
  }
  const json main = j.value("main", json::object());
  s.main_pid = main.value("pid", 0);
  s.main_start_time = main.value("start_time", std::uint64_t{0});
  s.heartbeat_s = j.value("heartbeat_s", 0.0);
  s.grace_s = j.value("grace_s", 0.0);
  s.created_unix_ms = j.value("created_unix_ms", std::int64_t{0});
  if (j.contains("last_beat_unix_ms")) s.last_beat_unix_ms = j.value("last_beat_unix_ms", std::int64_t{0});
  for (const auto& w : j.value("workers", json::array())) {
    s.workers.push_back({.pid = w.value("pid", 0),
                         .start_time = w.value("start_time", std::uint64_t{0}),
                         .exited = w.value("exited", false)});
  }
  if (j.contains("report")) s.report = parse_cleanup_report(j["report"]);
  return s;
}

}  // namespace warden
