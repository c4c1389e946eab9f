#include "edge/commands.h"

#include <charconv>
#include <chrono>
#include <string_view>
#include <vector>

#include <spdlog/spdlog.h>

namespace warden {
namespace {

json hello(const RequestContext& context, const json& request);

// The descriptor that came with a request whose field 'pidfd' is true.
UniqueFd passed_pidfd(const RequestContext& c, bool announced) {
  if (!announced) return {};
  if (c.passed_fds == nullptr || c.passed_fds->empty()) {
    throw Error(ErrorCode::bad_request,
                "field 'pidfd' is true but no descriptor came with the request (send it with "
                "SCM_RIGHTS along with the request line)");
  }
  UniqueFd pidfd = std::move(c.passed_fds->front());
  c.passed_fds->pop_front();
  return pidfd;
}

json register_job(const RequestContext& c, const json& request) {
  RegisterJobRequest r = from_json<RegisterJobRequest>(request);
  auto job = c.service.register_job(c.caller, r, passed_pidfd(c, r.pidfd));
  return {{"job", job.id}, {"tracking", job.cgroup.empty() ? "scan" : "cgroup"}};
}

json add_process(const RequestContext& c, const json& request) {
  AddProcessRequest r = from_json<AddProcessRequest>(request);
  auto identity = c.service.add_process(c.caller, r, passed_pidfd(c, r.pidfd));
  // The pid as the caller numbers it (the one it named), which in a container is not wardend's.
  return {{"pid", r.pid}, {"start_time", identity.start_time}};
}

// add_file, add_dir, add_shm, add_shm_glob: one for each kind of path (path_kinds()).
json add_path(const RequestContext& c, const json& request, PathKind kind) {
  std::string added =
      c.service.add_path(c.caller, from_json(request, AddPathRequest{.kind = kind}));
  return {{info_of(kind).pattern ? "pattern" : "path", std::move(added)}};
}

json add_hook(const RequestContext& c, const json& request) {
  c.service.add_hook(c.caller, from_json<AddHookRequest>(request));
  return json::object();
}

json heartbeat(const RequestContext& c, const json& request) {
  auto left = c.service.heartbeat(c.caller, from_json<HeartbeatRequest>(request));
  if (!left) return json::object();
  return {{"deadline_in_s", to_seconds(*left)}};
}

json end_job(const RequestContext& c, const json& request) {
  c.service.end_job(c.caller, from_json<EndJobRequest>(request));
  return json::object();
}

json cleanup(const RequestContext& c, const json& request) {
  return {{"jobs", c.service.cleanup(c.caller, from_json<CleanupRequest>(request))}};
}

// Aggregates only (no user's jobs), so every caller may read them.
json metrics(const RequestContext& c, const json&) {
  *c.later = [text = c.service.metrics_text()] { return json{{"text", text()}}; };
  return json::object();
}

json status(const RequestContext& c, const json& request) {
  StatusRequest r = from_json<StatusRequest>(request);
  json jobs = json::array();
  for (const auto& s : c.service.status(c.caller, r)) jobs.push_back(to_json(s));
  json reply{{"jobs", std::move(jobs)}};
  // The node's full view (not one job's, nor the counts a table polls for) shows its GPUs too,
  // where it has any: a look at every process's descriptors, so not for a summary.
  if (!r.job && !r.summary) {
    *c.later = [reply = std::move(reply), look = c.service.gpus(c.caller)]() mutable {
      json gpus = to_json(look());
      if (!gpus["gpus"].empty()) reply["gpus"] = std::move(gpus["gpus"]);
      return std::move(reply);
    };
    return json::object();
  }
  return reply;
}

json gpus(const RequestContext& c, const json&) {
  *c.later = [look = c.service.gpus(c.caller)] { return to_json(look()); };
  return json::object();
}

json events(const RequestContext& c, const json& request) {
  EventsRequest r = from_json<EventsRequest>(request);
  if (r.follow) {
    // Its history is read here, so that nothing written after it comes before it: the stream
    // begins with what is written next. Without a store there is no history, but live events
    // still flow.
    json events = json::array();
    if (c.service.has_history()) {
      for (auto& e : c.service.events(c.caller, r)) events.push_back(std::move(e));
    }
    *c.follow = Follow{r.job};
    return {{"events", std::move(events)}};
  }
  *c.later = [&service = c.service, caller = c.caller, r] {
    json events = json::array();
    for (auto& e : service.events(caller, r)) events.push_back(std::move(e));
    return json{{"events", std::move(events)}};
  };
  return json::object();
}

json check(const RequestContext& c, const json& request) {
  auto look = c.service.check(c.caller, from_json<CheckRequest>(request));
  *c.later = [look = std::move(look)] { return to_json(look()); };
  return json::object();
}

std::vector<Command> make_commands() {
  std::vector<Command> table{
      {"hello", hello}, {"register_job", register_job}, {"add_process", add_process}};
  for (const auto& info : path_kinds()) {
    table.push_back({"add_" + std::string(info.name),
                     [kind = info.kind](const RequestContext& c, const json& request) {
                       return add_path(c, request, kind);
                     }});
  }
  table.insert(table.end(), {{"add_hook", add_hook},
                             {"heartbeat", heartbeat},
                             {"end_job", end_job},
                             {"cleanup", cleanup},
                             {"status", status},
                             {"events", events},
                             {"gpus", gpus},
                             {"metrics", metrics},
                             {"check", check}});
  return table;
}

const std::vector<Command> kCommands = make_commands();

json hello(const RequestContext& c, const json& request) {
  auto r = from_json<HelloRequest>(request);
  if (r.protocol != kProtocolVersion) {
    throw Error(ErrorCode::unsupported_protocol,
                "this wardend speaks protocol " + std::to_string(kProtocolVersion) + ", not " +
                    std::to_string(r.protocol) + "; upgrade the older side");
  }
  HelloReply reply{.server = "wardend/" WARDEN_VERSION};
  for (const auto& c : kCommands) reply.capabilities.push_back("cmd-" + std::string(c.name));
  reply.max_frame = c.max_frame;
  reply.tracking = c.service.tracking();
  reply.instance = c.service.instance();
  reply.discover = to_string(c.service.discover());
  reply.discover_note = c.service.discover_note();
  return to_json(reply);
}

const Command* find_command(std::string_view op) {
  for (const auto& c : kCommands) {
    if (c.name == op) return &c;
  }
  return nullptr;
}

}  // namespace

std::span<const Command> commands() { return kCommands; }

std::string error_reply(const json& id, ErrorCode code, std::string_view message) {
  json reply{
      {"id", id}, {"ok", false}, {"error", {{"code", to_string(code)}, {"message", message}}}};
  return reply.dump(-1, ' ', false, json::error_handler_t::replace);
}

namespace {

// What a handler returned as a reply line, or what it threw as an error reply: a refusal with its
// code (Reply::refused), anything else as `internal`, logged.
Reply run_handler(std::string_view op, uid_t uid, const json& id,
                  const std::function<json()>& handle) {
  try {
    json reply = handle();
    reply["id"] = id;
    reply["ok"] = true;
    return {reply.dump(-1, ' ', false, json::error_handler_t::replace), id, true};
  } catch (const Error& e) {
    spdlog::debug("op={} uid={} refused code={} message={:?}", op, uid, to_string(e.code()),
                  e.what());
    Reply r{error_reply(id, e.code(), e.what()), id};
    r.refused = e.code();
    return r;
  } catch (const std::exception& e) {
    spdlog::error("op={} uid={} internal error: {}", op, uid, e.what());
    return {error_reply(id, ErrorCode::internal, std::string("internal error: ") + e.what()), id};
  }
}

// The reply to one request line, without its change (dispatch() adds that).
Reply answer(const RequestContext& context, std::string_view line) {
  if (auto beat = plain_heartbeat(line)) {
    if (auto reply = answer_plain(context, *beat)) return std::move(*reply);
  }
  json request = json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (request.is_discarded()) {
    return {error_reply(nullptr, ErrorCode::bad_request, "request is not valid JSON")};
  }
  if (!request.is_object()) {
    return {error_reply(nullptr, ErrorCode::bad_request, "request must be a JSON object")};
  }
  json id = request.contains("id") ? request["id"] : json(nullptr);
  if (!id.is_null() && !id.is_number() && !id.is_string()) {
    return {
        error_reply(nullptr, ErrorCode::bad_request, "field 'id' must be a number or a string")};
  }
  auto op = request.find("op");
  if (op == request.end() || !op->is_string()) {
    return {error_reply(id, ErrorCode::bad_request, "field 'op' is required and must be a string"),
            id};
  }
  const Command* command = find_command(op->get_ref<const std::string&>());
  if (command == nullptr) {
    return {
        error_reply(id, ErrorCode::unknown_op,
                    "unknown op '" + op->get<std::string>() + "'; hello lists the supported ones"),
        id};
  }

  Later later;
  RequestContext with_later = context;
  with_later.later = &later;
  Reply reply = run_handler(command->name, context.caller.uid, id,
                            [&] { return command->handler(with_later, request); });
  if (reply.refused) context.service.count_refusal(*reply.refused);
  if (reply.ok && later) {
    // Runs on the views thread: it holds copies of what it needs, nothing of this frame.
    reply.later = [name = command->name, uid = context.caller.uid, id, later = std::move(later)] {
      return run_handler(name, uid, id, later).line;
    };
    reply.line.clear();
  }
  return reply;
}

}  // namespace

std::optional<Reply> answer_plain(const RequestContext& context, const PlainHeartbeat& beat) {
  std::optional<Duration> left;
  try {
    left = context.service.heartbeat(context.caller, HeartbeatRequest{.job = beat.job});
  } catch (const std::exception&) {
    return std::nullopt;
  }
  std::string line = "{";
  if (left) {
    // The shortest figure that reads back the same, as the full path's JSON writes it, without
    // building a document for it.
    char figure[32];
    auto written = std::to_chars(figure, figure + sizeof(figure), to_seconds(*left));
    const std::string_view seconds(figure, written.ptr - figure);
    line += R"("deadline_in_s":)";
    line += seconds;
    if (seconds.find_first_of(".e") == std::string_view::npos) line += ".0";
    line += ',';
  }
  line += R"("id":)";
  line += beat.id ? std::to_string(*beat.id) : "null";
  line += R"(,"ok":true})";
  return Reply{std::move(line), beat.id ? json(*beat.id) : json(nullptr), true};
}

Reply dispatch(const RequestContext& context, std::string_view line) {
  const std::uint64_t staged = context.journal ? context.journal->last_staged() : 0;
  Reply reply = answer(context, line);
  if (context.journal && context.journal->last_staged() != staged) {
    reply.change = context.journal->last_staged();
  }
  return reply;
}

}  // namespace warden
