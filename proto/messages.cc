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

constexpr NameTable<JobEnd, 2> kJobEnds{{{JobEnd::ok, "ok"}, {JobEnd::failed, "failed"}}};

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

using describe_detail::bad_field;
using describe_detail::read;

}  // namespace

CommandSpec parse_command(const json& v, std::string_view field) {
  const json* argv = &v;
  CommandSpec spec;
  // Either an argv array, or an object with argv, env, cwd and timeout_s.
  if (v.is_object()) {
    std::string prefix = std::string(field) + ".";
    auto it = v.find("argv");
    if (it == v.end()) bad_field(prefix + "argv", "is required");
    argv = &*it;
    if (auto env = v.find("env"); env != v.end()) {
      if (!env->is_object()) bad_field(prefix + "env", "must be an object of strings");
      for (const auto& [k, val] : env->items()) {
        if (k.empty() || k.find('=') != std::string::npos || k.find('\0') != std::string::npos) {
          bad_field(prefix + "env", "has an invalid variable name");
        }
        read(val, prefix + "env." + k, spec.env.emplace_back(k, "").second,
             Rules{.max_bytes = kMaxPathBytes});
      }
    }
    if (auto cwd = v.find("cwd"); cwd != v.end()) {
      read(*cwd, prefix + "cwd", spec.cwd, Rules{.max_bytes = kMaxPathBytes});
      if (spec.cwd[0] != '/') bad_field(prefix + "cwd", "must be an absolute path");
    }
    if (auto timeout = v.find("timeout_s"); timeout != v.end()) {
      read(*timeout, prefix + "timeout_s", spec.timeout_s, Rules{.min = 0, .max = kMaxCommandS});
    }
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
std::string_view to_string(JobEnd e) { return name_of(kJobEnds, e); }
std::optional<JobEnd> job_end_from_string(std::string_view s) { return value_of(kJobEnds, s); }
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

}  // namespace warden
