#include "proto/messages.h"

#include <array>
#include <climits>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <utility>

namespace warden {
namespace {

template <class E, std::size_t N>
using NameTable = std::array<std::pair<E, std::string_view>, N>;

constexpr NameTable<JobState, 6> kJobStates{{
    {JobState::running, "running"},
    {JobState::ended, "ended"},
    {JobState::failed, "failed"},
    {JobState::stalled, "stalled"},
    {JobState::cleaning, "cleaning"},
    {JobState::cleaned, "cleaned"},
}};

constexpr NameTable<Policy, 2> kPolicies{
    {{Policy::always, "always"}, {Policy::failure, "failure"}}};

constexpr std::array<PathKindInfo, 4> kPathKinds{{
    {.kind = PathKind::file, .name = "file", .field = "path", .help = "A file, removed at cleanup"},
    {.kind = PathKind::dir,
     .name = "dir",
     .field = "path",
     .help = "A directory tree, removed at cleanup"},
    {.kind = PathKind::shm,
     .name = "shm",
     .field = "name",
     .help = "A POSIX shm segment (or sem.NAME semaphore), unlinked at cleanup",
     .shm = true},
    {.kind = PathKind::shm_glob,
     .name = "shm_glob",
     .field = "pattern",
     .help = "A pattern over the job user's /dev/shm segments, e.g. 'torch_4312_*', each "
             "unlinked at cleanup",
     .shm = true,
     .pattern = true},
}};

constexpr NameTable<Outcome, 10> kOutcomes{{
    {Outcome::already_gone, "already_gone"},
    {Outcome::terminated, "terminated"},
    {Outcome::killed, "killed"},
    {Outcome::unkillable, "unkillable"},
    {Outcome::removed, "removed"},
    {Outcome::refused, "refused"},
    {Outcome::succeeded, "succeeded"},
    {Outcome::timed_out, "timed_out"},
    {Outcome::failed, "failed"},
    {Outcome::kept, "kept"},
}};

constexpr NameTable<Discover, 3> kDiscover{{
    {Discover::reclaim, "reclaim"},
    {Discover::report, "report"},
    {Discover::off, "off"},
}};

constexpr NameTable<FindingKind, 6> kFindingKinds{{
    {FindingKind::stray_gpu_holder, "stray_gpu_holder"},
    {FindingKind::unheld_gpu_memory, "unheld_gpu_memory"},
    {FindingKind::unkillable, "unkillable"},
    {FindingKind::populated_cgroup, "populated_cgroup"},
    {FindingKind::leftover_path, "leftover_path"},
    {FindingKind::shm_full, "shm_full"},
}};

template <class E, std::size_t N>
std::string_view name_of(const NameTable<E, N>& table, E value) {
  for (const auto& [v, name] : table) {
    if (v == value) return name;
  }
  return "unknown";
}

template <class E, std::size_t N>
std::optional<E> value_of(const NameTable<E, N>& table, std::string_view name) {
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

constexpr std::size_t kMaxNameBytes = 256;
constexpr std::size_t kMaxPathBytes = 4096;
constexpr std::size_t kMaxArgs = 256;
constexpr double kMaxHeartbeatS = 7 * 24 * 3600.0;
constexpr double kMinHeartbeatS = 0.01;
constexpr double kMaxUnsupervisedS = 365 * 24 * 3600.0;
constexpr double kMaxGraceS = 3600.0;
constexpr double kMaxCommandS = 3600.0;

void check_string(const json& v, std::string_view field, std::size_t max_len) {
  if (!v.is_string()) bad_field(field, "must be a string");
  const auto& s = v.get_ref<const std::string&>();
  if (s.empty()) bad_field(field, "must not be empty");
  if (s.size() > max_len) bad_field(field, "must be at most " + std::to_string(max_len) + " bytes");
  if (s.find('\0') != std::string::npos) bad_field(field, "must not contain NUL");
}

std::string string_field(const json& j, std::string_view field, std::size_t max_len) {
  const json* v = find(j, field);
  if (v == nullptr) bad_field(field, "is required");
  check_string(*v, field, max_len);
  return v->get<std::string>();
}

pid_t pid_field(const json& j, std::string_view field) {
  const json* v = find(j, field);
  if (v == nullptr) bad_field(field, "is required");
  if (!v->is_number_integer()) bad_field(field, "must be an integer pid");
  auto pid = v->get<std::int64_t>();
  if (v->is_number_unsigned() && v->get<std::uint64_t>() > INT_MAX) pid = -1;
  if (pid <= 0 || pid > INT_MAX) bad_field(field, "must be a positive pid");
  return static_cast<pid_t>(pid);
}

JobId job_field(const json& j, std::string_view field) {
  const json* v = find(j, field);
  if (v == nullptr) bad_field(field, "is required");
  bool negative = v->is_number_integer() && !v->is_number_unsigned() && v->get<std::int64_t>() < 0;
  if (!v->is_number_integer() || negative || v->get<std::uint64_t>() == 0) {
    bad_field(field, "must be a job id (a positive integer)");
  }
  return v->get<std::uint64_t>();
}

// A duration in seconds: finite, within [0, max].
double seconds_field(const json& j, std::string_view field, double fallback, double max) {
  const json* v = find(j, field);
  if (v == nullptr) return fallback;
  if (!v->is_number()) bad_field(field, "must be a number of seconds");
  double s = v->get<double>();
  if (!std::isfinite(s) || s < 0 || s > max) {
    bad_field(field,
              "must be between 0 and " + std::to_string(static_cast<long>(max)) + " seconds");
  }
  return s;
}

// A non-negative integer no larger than `max`.
std::int64_t count_field(const json& j, std::string_view field, std::int64_t fallback,
                         std::int64_t max) {
  const json* v = find(j, field);
  if (v == nullptr) return fallback;
  bool negative = v->is_number_integer() && !v->is_number_unsigned() && v->get<std::int64_t>() < 0;
  if (!v->is_number_integer() || negative ||
      v->get<std::uint64_t>() > static_cast<std::uint64_t>(max)) {
    bad_field(field, "must be an integer between 0 and " + std::to_string(max));
  }
  return v->get<std::int64_t>();
}

bool bool_field(const json& j, std::string_view field, bool fallback) {
  const json* v = find(j, field);
  if (v == nullptr) return fallback;
  if (!v->is_boolean()) bad_field(field, "must be true or false");
  return v->get<bool>();
}

Policy policy_field(const json& j) {
  const json* v = find(j, "policy");
  if (v == nullptr) return Policy::always;
  if (v->is_string()) {
    if (auto p = value_of(kPolicies, v->get_ref<const std::string&>())) return *p;
  }
  bad_field("policy", "must be \"always\" or \"failure\"");
}

CommandSpec command_field(const json& j, std::string_view field) {
  const json* v = find(j, field);
  if (v == nullptr) bad_field(field, "is required");
  const json* argv = v;
  CommandSpec spec;
  // Either an argv array, or an object with argv, env, cwd and timeout_s.
  if (v->is_object()) {
    argv = find(*v, "argv");
    if (argv == nullptr) bad_field(std::string(field) + ".argv", "is required");
    if (const json* env = find(*v, "env")) {
      if (!env->is_object()) bad_field(std::string(field) + ".env", "must be an object of strings");
      for (const auto& [k, val] : env->items()) {
        if (k.empty() || k.find('=') != std::string::npos || k.find('\0') != std::string::npos) {
          bad_field(std::string(field) + ".env", "has an invalid variable name");
        }
        check_string(val, std::string(field) + ".env." + k, kMaxPathBytes);
        spec.env.emplace_back(k, val.get<std::string>());
      }
    }
    if (const json* cwd = find(*v, "cwd")) {
      check_string(*cwd, std::string(field) + ".cwd", kMaxPathBytes);
      spec.cwd = cwd->get<std::string>();
      if (spec.cwd[0] != '/') bad_field(std::string(field) + ".cwd", "must be an absolute path");
    }
    spec.timeout_s = seconds_field(*v, "timeout_s", spec.timeout_s, kMaxCommandS);
  }
  if (!argv->is_array() || argv->empty() || argv->size() > kMaxArgs) {
    bad_field(field,
              "must be a non-empty array of at most " + std::to_string(kMaxArgs) + " strings");
  }
  for (const auto& a : *argv) {
    if (!a.is_string() || a.get_ref<const std::string&>().find('\0') != std::string::npos ||
        a.get_ref<const std::string&>().size() > kMaxPathBytes) {
      bad_field(field, "arguments must be strings without NUL");
    }
    spec.argv.push_back(a.get<std::string>());
  }
  if (spec.argv[0].empty()) bad_field(field, "must name a program");
  return spec;
}

}  // namespace

CommandSpec parse_command(const json& j) { return command_field(json{{"command", j}}, "command"); }

json to_json(const CommandSpec& c) {
  json env = json::object();
  for (const auto& [k, v] : c.env) env[k] = v;
  json j{{"argv", c.argv}, {"timeout_s", c.timeout_s}};
  if (!c.env.empty()) j["env"] = std::move(env);
  if (!c.cwd.empty()) j["cwd"] = c.cwd;
  return j;
}

std::string_view to_string(JobState s) { return name_of(kJobStates, s); }
std::string_view to_string(Policy p) { return name_of(kPolicies, p); }
std::string_view to_string(PathKind k) { return info_of(k).name; }
std::string_view to_string(Outcome o) { return name_of(kOutcomes, o); }
std::string_view to_string(FindingKind k) { return name_of(kFindingKinds, k); }
std::string_view to_string(Discover d) { return name_of(kDiscover, d); }
std::optional<Discover> discover_from_string(std::string_view s) { return value_of(kDiscover, s); }
std::optional<FindingKind> finding_kind_from_string(std::string_view s) {
  return value_of(kFindingKinds, s);
}
std::optional<JobState> job_state_from_string(std::string_view s) {
  return value_of(kJobStates, s);
}
std::optional<Outcome> outcome_from_string(std::string_view s) { return value_of(kOutcomes, s); }
std::optional<Policy> policy_from_string(std::string_view s) { return value_of(kPolicies, s); }
std::optional<PathKind> path_kind_from_string(std::string_view s) {
  for (const auto& info : kPathKinds) {
    if (info.name == s) return info.kind;
  }
  return std::nullopt;
}
std::span<const PathKindInfo> path_kinds() { return kPathKinds; }
const PathKindInfo& info_of(PathKind kind) {
  for (const auto& info : kPathKinds) {
    if (info.kind == kind) return info;
  }
  throw std::logic_error("a PathKind without its line in kPathKinds");
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
  // A deadline shorter than this cannot be kept by any beat (and under a nanosecond it would
  // round to "none").
  if (r.heartbeat_s != 0 && r.heartbeat_s < kMinHeartbeatS) {
    bad_field("heartbeat_s", "must be 0 (no deadline) or at least 0.01 seconds");
  }
  r.grace_s = seconds_field(j, "grace_s", r.grace_s, kMaxGraceS);
  r.kill_main_on_stall = bool_field(j, "kill_main_on_stall", false);
  if (find(j, "group") != nullptr) r.group = string_field(j, "group", kMaxNameBytes);
  if (find(j, "diagnose") != nullptr) r.diagnose = command_field(j, "diagnose");
  r.pidfd = bool_field(j, "pidfd", false);
  if (const json* d = find(j, "discover")) {
    r.discover = d->is_string() ? discover_from_string(d->get_ref<const std::string&>())
                                : std::nullopt;
    if (!r.discover) bad_field("discover", "must be \"reclaim\", \"report\" or \"off\"");
  }
  return r;
}

AddProcessRequest parse_add_process(const json& j) {
  return {.job = job_field(j, "job"),
          .pid = pid_field(j, "pid"),
          .policy = policy_field(j),
          .pidfd = bool_field(j, "pidfd", false)};
}

AddPathRequest parse_add_path(const json& j, PathKind kind) {
  return {.job = job_field(j, "job"),
          .kind = kind,
          .path = string_field(j, info_of(kind).field, kMaxPathBytes),
          .policy = policy_field(j)};
}

AddHookRequest parse_add_hook(const json& j) {
  return {.job = job_field(j, "job"), .hook = command_field(j, "hook"), .policy = policy_field(j)};
}

HeartbeatRequest parse_heartbeat(const json& j) {
  return {.job = job_field(j, "job"),
          .unsupervised_s = seconds_field(j, "unsupervised_s", 0, kMaxUnsupervisedS)};
}

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
  r.summary = bool_field(j, "summary", false);
  return r;
}

CleanupRequest parse_cleanup(const json& j) {
  CleanupRequest r;
  if (find(j, "job") != nullptr) r.job = job_field(j, "job");
  if (find(j, "group") != nullptr) r.group = string_field(j, "group", kMaxNameBytes);
  if (r.job.has_value() == !r.group.empty())
    bad_field("job", "or 'group' is required (exactly one)");
  return r;
}

EventsRequest parse_events(const json& j) {
  constexpr std::int64_t kMaxInt = std::numeric_limits<std::int64_t>::max();
  EventsRequest r;
  if (find(j, "job") != nullptr) r.job = job_field(j, "job");
  if (find(j, "since_unix_ms") != nullptr)
    r.since_unix_ms = count_field(j, "since_unix_ms", 0, kMaxInt);
  if (find(j, "after_seq") != nullptr) r.after_seq = count_field(j, "after_seq", 0, kMaxInt);
  r.limit = static_cast<std::size_t>(
      count_field(j, "limit", static_cast<std::int64_t>(r.limit), kMaxEventsPerReply));
  r.follow = bool_field(j, "follow", false);
  return r;
}

json to_json(const HelloRequest& r) {
  return {{"op", "hello"}, {"protocol", r.protocol}, {"client", r.client}};
}

json to_json(const RegisterJobRequest& r) {
  json j{{"op", "register_job"}, {"name", r.name},
         {"pid", r.pid},         {"heartbeat_s", r.heartbeat_s},
         {"grace_s", r.grace_s}, {"kill_main_on_stall", r.kill_main_on_stall}};
  if (r.diagnose) j["diagnose"] = to_json(*r.diagnose);
  if (!r.group.empty()) j["group"] = r.group;
  if (r.pidfd) j["pidfd"] = true;
  if (r.discover) j["discover"] = to_string(*r.discover);
  return j;
}

json to_json(const AddProcessRequest& r) {
  json j{{"op", "add_process"}, {"job", r.job}, {"pid", r.pid}, {"policy", to_string(r.policy)}};
  if (r.pidfd) j["pidfd"] = true;
  return j;
}

json to_json(const AddPathRequest& r) {
  return {{"op", "add_" + std::string(to_string(r.kind))},
          {"job", r.job},
          {info_of(r.kind).field, r.path},
          {"policy", to_string(r.policy)}};
}

json to_json(const AddHookRequest& r) {
  return {{"op", "add_hook"},
          {"job", r.job},
          {"hook", to_json(r.hook)},
          {"policy", to_string(r.policy)}};
}

json to_json(const HeartbeatRequest& r) {
  json j{{"op", "heartbeat"}, {"job", r.job}};
  if (r.unsupervised_s > 0) j["unsupervised_s"] = r.unsupervised_s;
  return j;
}

json to_json(const EndJobRequest& r) {
  return {{"op", "end_job"}, {"job", r.job}, {"outcome", r.ok ? "ok" : "failed"}};
}

json to_json(const StatusRequest& r) {
  json j{{"op", "status"}};
  if (r.job) j["job"] = *r.job;
  if (r.summary) j["summary"] = true;
  return j;
}

json to_json(const CleanupRequest& r) {
  json j{{"op", "cleanup"}};
  if (r.job) j["job"] = *r.job;
  if (!r.group.empty()) j["group"] = r.group;
  return j;
}

json to_json(const EventsRequest& r) {
  json j{{"op", "events"}, {"limit", r.limit}};
  if (r.job) j["job"] = *r.job;
  if (r.since_unix_ms) j["since_unix_ms"] = *r.since_unix_ms;
  if (r.after_seq) j["after_seq"] = *r.after_seq;
  if (r.follow) j["follow"] = true;
  return j;
}

// --- replies
// ---------------------------------------------------------------------------------------

json to_json(const HelloReply& r) {
  return {{"protocol", r.protocol},   {"server", r.server},     {"capabilities", r.capabilities},
          {"max_frame", r.max_frame}, {"tracking", r.tracking}, {"instance", r.instance},
          {"discover", r.discover},   {"discover_note", r.discover_note}};
}

HelloReply parse_hello_reply(const json& j) {
  HelloReply r;
  r.protocol = j.value("protocol", 0);
  r.server = j.value("server", "");
  r.capabilities = j.value("capabilities", std::vector<std::string>{});
  r.max_frame = j.value("max_frame", kDefaultMaxFrame);
  r.tracking = j.value("tracking", "scan");
  r.instance = j.value("instance", "");
  r.discover = j.value("discover", "off");
  r.discover_note = j.value("discover_note", "");
  return r;
}

namespace {

Outcome outcome_of(const json& j) {
  return outcome_from_string(j.value("outcome", "")).value_or(Outcome::failed);
}

template <class T>
void put_optional(json& j, const char* key, const std::optional<T>& value) {
  if (value) j[key] = *value;
}

template <class T>
std::optional<T> get_optional(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_number()) return std::nullopt;
  return it->get<T>();
}

json to_json(const GpuUse& g) {
  json j{{"device", g.device}};
  put_optional(j, "memory_bytes", g.memory_bytes);
  return j;
}

json to_json(const GpuHolder& h) {
  json j{{"pid", h.pid}, {"uid", h.uid}, {"command", h.command}};
  put_optional(j, "memory_bytes", h.memory_bytes);
  if (h.job) {
    j["job"] = *h.job;
    j["job_name"] = h.job_name;
  }
  return j;
}

GpuHolder parse_gpu_holder(const json& j) {
  return {.pid = j.value("pid", 0),
          .uid = j.value("uid", uid_t{0}),
          .command = j.value("command", ""),
          .memory_bytes = get_optional<std::uint64_t>(j, "memory_bytes"),
          .job = get_optional<JobId>(j, "job"),
          .job_name = j.value("job_name", "")};
}

}  // namespace

json to_json(const ProcessReport& p) {
  json j{{"pid", p.pid},
         {"role", p.role},
         {"outcome", to_string(p.outcome)},
         {"elapsed_ms", p.elapsed_ms}};
  if (p.start_time != 0) j["start_time"] = p.start_time;
  put_optional(j, "local_pid", p.local_pid);
  if (p.leftover) j["leftover"] = true;
  if (!p.detail.empty()) j["detail"] = p.detail;
  if (!p.command.empty()) j["command"] = p.command;
  if (!p.gpus.empty()) {
    j["gpus"] = json::array();
    for (const auto& g : p.gpus) j["gpus"].push_back(to_json(g));
  }
  return j;
}

ProcessReport parse_process_report(const json& j) {
  ProcessReport p{.pid = j.value("pid", 0),
                  .local_pid = get_optional<pid_t>(j, "local_pid"),
                  .start_time = j.value("start_time", std::uint64_t{0}),
                  .role = j.value("role", ""),
                  .outcome = outcome_of(j),
                  .leftover = j.value("leftover", false),
                  .detail = j.value("detail", ""),
                  .command = j.value("command", ""),
                  .elapsed_ms = j.value("elapsed_ms", 0.0)};
  for (const auto& g : j.value("gpus", json::array())) {
    p.gpus.push_back({.device = g.value("device", ""),
                      .memory_bytes = get_optional<std::uint64_t>(g, "memory_bytes")});
  }
  return p;
}

json to_json(const GpuReport& g) {
  json holders = json::array();
  for (const auto& h : g.still_held_by) holders.push_back(to_json(h));
  json j{{"device", g.device}, {"still_held_by", std::move(holders)}};
  if (!g.uuid.empty()) j["uuid"] = g.uuid;
  put_optional(j, "held_bytes", g.held_bytes);
  put_optional(j, "released_bytes", g.released_bytes);
  return j;
}

GpuReport parse_gpu_report(const json& j) {
  GpuReport g{.device = j.value("device", ""),
              .uuid = j.value("uuid", ""),
              .held_bytes = get_optional<std::uint64_t>(j, "held_bytes"),
              .released_bytes = get_optional<std::uint64_t>(j, "released_bytes")};
  for (const auto& h : j.value("still_held_by", json::array())) {
    g.still_held_by.push_back(parse_gpu_holder(h));
  }
  return g;
}

json to_json(const PathReport& p) {
  json j{{"kind", to_string(p.kind)},
         {"path", p.path},
         {"outcome", to_string(p.outcome)},
         {"removed", p.removed},
         {"elapsed_ms", p.elapsed_ms}};
  if (p.leftover) j["leftover"] = true;
  if (!p.detail.empty()) j["detail"] = p.detail;
  put_optional(j, "bytes", p.bytes);
  return j;
}

PathReport parse_path_report(const json& j) {
  return {.kind = path_kind_from_string(j.value("kind", "")).value_or(PathKind::file),
          .path = j.value("path", ""),
          .outcome = outcome_of(j),
          .leftover = j.value("leftover", false),
          .removed = j.value("removed", std::size_t{0}),
          .detail = j.value("detail", ""),
          .elapsed_ms = j.value("elapsed_ms", 0.0),
          .bytes = get_optional<std::uint64_t>(j, "bytes")};
}

json to_json(const CommandReport& c) {
  json j{{"argv", c.argv},
         {"outcome", to_string(c.outcome)},
         {"output", c.output},
         {"elapsed_ms", c.elapsed_ms}};
  if (c.exit_code) j["exit_code"] = *c.exit_code;
  if (c.signal) j["signal"] = *c.signal;
  if (c.truncated) j["truncated"] = true;
  if (!c.detail.empty()) j["detail"] = c.detail;
  return j;
}

CommandReport parse_command_report(const json& j) {
  CommandReport c{.argv = j.value("argv", std::vector<std::string>{}),
                  .outcome = outcome_of(j),
                  .output = j.value("output", ""),
                  .truncated = j.value("truncated", false),
                  .detail = j.value("detail", ""),
                  .elapsed_ms = j.value("elapsed_ms", 0.0)};
  if (j.contains("exit_code")) c.exit_code = j.value("exit_code", 0);
  if (j.contains("signal")) c.signal = j.value("signal", 0);
  return c;
}

json to_json(const Diagnostics& d) {
  json procs = json::array();
  for (const auto& p : d.processes) {
    json e{{"pid", p.pid},
           {"role", p.role},
           {"state", std::string(1, p.state)},
           {"wchan", p.wchan},
           {"stack", p.stack}};
    if (!p.detail.empty()) e["detail"] = p.detail;
    procs.push_back(std::move(e));
  }
  json j{{"processes", std::move(procs)}};
  if (d.command) j["command"] = to_json(*d.command);
  return j;
}

Diagnostics parse_diagnostics(const json& j) {
  Diagnostics d;
  for (const auto& p : j.value("processes", json::array())) {
    std::string state = p.value("state", "?");
    d.processes.push_back({.pid = p.value("pid", 0),
                           .role = p.value("role", ""),
                           .state = state.empty() ? '?' : state[0],
                           .wchan = p.value("wchan", ""),
                           .stack = p.value("stack", ""),
                           .detail = p.value("detail", "")});
  }
  if (j.contains("command")) d.command = parse_command_report(j["command"]);
  return d;
}

namespace {

template <class T, class Fn>
json array_of(const std::vector<T>& items, Fn&& fn) {
  json a = json::array();
  for (const auto& i : items) a.push_back(fn(i));
  return a;
}

}  // namespace

json to_json(const CleanupReport& r) {
  json j{{"reason", to_string(r.reason)},
         {"started_unix_ms", r.started_unix_ms},
         {"duration_ms", r.duration_ms},
         {"processes", array_of(r.processes, [](const auto& p) { return to_json(p); })},
         {"hooks", array_of(r.hooks, [](const auto& h) { return to_json(h); })},
         {"paths", array_of(r.paths, [](const auto& p) { return to_json(p); })}};
  if (r.diagnostics) j["diagnostics"] = to_json(*r.diagnostics);
  if (!r.discovered.empty()) {
    j["discovered"] = array_of(r.discovered, [](const auto& p) { return to_json(p); });
  }
  if (!r.gpus.empty()) j["gpus"] = array_of(r.gpus, [](const auto& g) { return to_json(g); });
  if (!r.gpu_note.empty()) j["gpu_note"] = r.gpu_note;
  j["reclaimed_bytes"] = {{"file", r.reclaimed.file_bytes},
                          {"shm", r.reclaimed.shm_bytes},
                          {"gpu", r.reclaimed.gpu_bytes}};
  for (const auto& [list, omitted] : r.omitted) {
    json outcomes = json::object();
    for (const auto& [outcome, n] : omitted.outcomes) outcomes[std::string(to_string(outcome))] = n;
    j["omitted"][list] = {{"count", omitted.count}, {"outcomes", std::move(outcomes)}};
  }
  return j;
}

CleanupReport parse_cleanup_report(const json& j) {
  CleanupReport r;
  r.reason = job_state_from_string(j.value("reason", "")).value_or(JobState::failed);
  r.started_unix_ms = j.value("started_unix_ms", std::int64_t{0});
  r.duration_ms = j.value("duration_ms", 0.0);
  for (const auto& p : j.value("processes", json::array()))
    r.processes.push_back(parse_process_report(p));
  for (const auto& h : j.value("hooks", json::array())) r.hooks.push_back(parse_command_report(h));
  for (const auto& p : j.value("paths", json::array())) r.paths.push_back(parse_path_report(p));
  for (const auto& p : j.value("discovered", json::array())) {
    r.discovered.push_back(parse_path_report(p));
  }
  if (j.contains("diagnostics")) r.diagnostics = parse_diagnostics(j["diagnostics"]);
  for (const auto& g : j.value("gpus", json::array())) r.gpus.push_back(parse_gpu_report(g));
  r.gpu_note = j.value("gpu_note", "");
  const json reclaimed = j.value("reclaimed_bytes", json::object());
  r.reclaimed = {.file_bytes = reclaimed.value("file", std::uint64_t{0}),
                 .shm_bytes = reclaimed.value("shm", std::uint64_t{0}),
                 .gpu_bytes = reclaimed.value("gpu", std::uint64_t{0})};
  // Named: items() of a temporary would outlive it.
  const json omitted = j.value("omitted", json::object());
  for (const auto& [list, entry] : omitted.items()) {
    Omitted o{.count = entry.value("count", std::size_t{0})};
    const json outcomes = entry.value("outcomes", json::object());
    for (const auto& [outcome, n] : outcomes.items()) {
      if (auto known = outcome_from_string(outcome)) o.outcomes[*known] = n.get<std::size_t>();
    }
    r.omitted[list] = std::move(o);
  }
  return r;
}

json to_json(const GpusReply& r) {
  json gpus = json::array();
  for (const auto& g : r.gpus) {
    json e{{"device", g.device},
           {"holders", array_of(g.holders, [](const auto& h) { return to_json(h); })}};
    if (!g.uuid.empty()) e["uuid"] = g.uuid;
    put_optional(e, "memory_total_bytes", g.memory_total_bytes);
    put_optional(e, "memory_used_bytes", g.memory_used_bytes);
    gpus.push_back(std::move(e));
  }
  json j{{"gpus", std::move(gpus)}};
  if (!r.note.empty()) j["note"] = r.note;
  return j;
}

GpusReply parse_gpus_reply(const json& j) {
  GpusReply r{.note = j.value("note", "")};
  for (const auto& e : j.value("gpus", json::array())) {
    GpuStatus g{.device = e.value("device", ""),
                .uuid = e.value("uuid", ""),
                .memory_total_bytes = get_optional<std::uint64_t>(e, "memory_total_bytes"),
                .memory_used_bytes = get_optional<std::uint64_t>(e, "memory_used_bytes")};
    for (const auto& h : e.value("holders", json::array()))
      g.holders.push_back(parse_gpu_holder(h));
    r.gpus.push_back(std::move(g));
  }
  return r;
}

json to_json(const JobStatus& s) {
  json j{{"id", s.id},
         {"name", s.name},
         {"group", s.group},
         {"uid", s.uid},
         {"state", to_string(s.state)},
         {"main", {{"pid", s.main_pid}, {"start_time", s.main_start_time}}},
         {"heartbeat_s", s.heartbeat_s},
         {"grace_s", s.grace_s},
         {"created_unix_ms", s.created_unix_ms},
         {"counts", {{"processes", s.live_processes}, {"files", s.files}, {"shm", s.shm}}},
         {"workers", array_of(s.workers,
                              [](const ProcessStatus& w) {
                                json j{{"pid", w.pid},
                                       {"start_time", w.start_time},
                                       {"exited", w.exited},
                                       {"policy", to_string(w.policy)}};
                                if (!w.tracking.empty()) j["tracking"] = w.tracking;
                                return j;
                              })},
         {"paths", array_of(s.paths,
                            [](const PathStatus& p) {
                              return json{{"kind", to_string(p.kind)},
                                          {"path", p.path},
                                          {"policy", to_string(p.policy)}};
                            })},
         {"hooks", s.hooks},
         {"tracking", s.tracking},
         {"discover", to_string(s.discover)}};
  if (!s.cgroup.empty()) j["cgroup"] = s.cgroup;
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
  s.group = j.value("group", "");
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
  if (j.contains("last_beat_unix_ms")) {
    s.last_beat_unix_ms = j.value("last_beat_unix_ms", std::int64_t{0});
  }
  for (const auto& w : j.value("workers", json::array())) {
    s.workers.push_back(
        {.pid = w.value("pid", 0),
         .start_time = w.value("start_time", std::uint64_t{0}),
         .exited = w.value("exited", false),
         .policy = value_of(kPolicies, w.value("policy", "")).value_or(Policy::always),
         .tracking = w.value("tracking", "")});
  }
  for (const auto& p : j.value("paths", json::array())) {
    s.paths.push_back(
        {.kind = path_kind_from_string(p.value("kind", "")).value_or(PathKind::file),
         .path = p.value("path", ""),
         .policy = value_of(kPolicies, p.value("policy", "")).value_or(Policy::always)});
  }
  s.hooks = j.value("hooks", std::size_t{0});
  s.tracking = j.value("tracking", "scan");
  s.cgroup = j.value("cgroup", "");
  s.discover = discover_from_string(j.value("discover", "")).value_or(Discover::reclaim);
  if (j.contains("report")) s.report = parse_cleanup_report(j["report"]);
  const json counts = j.value("counts", json::object());
  s.live_processes = counts.value("processes", std::size_t{0});
  s.files = counts.value("files", std::size_t{0});
  s.shm = counts.value("shm", std::size_t{0});
  return s;
}

json to_json(const Event& e) {
  json j{{"unix_ms", e.unix_ms},
         {"job", e.job},
         {"uid", e.uid},
         {"name", e.name},
         {"state", to_string(e.state)}};
  if (e.seq != 0) j["seq"] = e.seq;
  if (e.reason) j["reason"] = to_string(*e.reason);
  if (e.reason || !e.reason_detail.empty()) j["reason_detail"] = e.reason_detail;
  if (e.report) j["report"] = to_json(*e.report);
  return j;
}

Event parse_event(const json& j) {
  Event e{.seq = j.value("seq", std::int64_t{0}),
          .unix_ms = j.value("unix_ms", std::int64_t{0}),
          .job = j.value("job", JobId{0}),
          .uid = j.value("uid", uid_t{0}),
          .name = j.value("name", ""),
          .state = job_state_from_string(j.value("state", "")).value_or(JobState::running),
          .reason_detail = j.value("reason_detail", "")};
  if (j.contains("reason")) e.reason = job_state_from_string(j.value("reason", ""));
  if (j.contains("report")) e.report = parse_cleanup_report(j["report"]);
  return e;
}

}  // namespace warden
