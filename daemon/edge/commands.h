// The command table and the one dispatch point that turns a request line into a reply line.
#pragma once

#include <deque>
#include <functional>
#include <span>
#include <string>
#include <string_view>

#include "edge/service.h"
#include "proto/plain_heartbeat.h"

namespace warden {

class Journal;

// An `events` request with follow: the session turns into a live event stream after the reply.
struct Follow {
  std::optional<JobId> job;
};

// A reply computed off the event loop (on Service::views()): the handler sets it and returns an
// empty object; the session runs it there and sends what it returns, or the error it throws.
using Later = std::function<json()>;

// What a handler may use besides the request itself.
struct RequestContext {
  Service& service;
  const Caller& caller;  // from the connection's peer credentials
  std::size_t max_frame = kDefaultMaxFrame;
  std::optional<Follow>* follow = nullptr;     // set by `events` with follow
  std::deque<UniqueFd>* passed_fds = nullptr;  // received over SCM_RIGHTS, oldest first
  const Journal* journal = nullptr;            // where a request's change is staged (Reply::change)
  Later* later = nullptr;                      // set by a handler whose answer is computed later
};

struct Command {
  std::string name;
  std::function<json(const RequestContext& context, const json& request)> handler;
};

// Every operation wardend serves, in the order PROTOCOL.md lists them. `hello` advertises
// "cmd-<name>" for each entry, so the capability list cannot drift from what is served.
std::span<const Command> commands();

struct Reply {
  std::string line;  // without the trailing newline
  json id;           // the request's id, for a reply that must be replaced by an error
  bool ok = false;
  // The journal sequence of the change the request staged: its reply goes out once that is
  // written. nullopt: it changed nothing.
  std::optional<std::uint64_t> change;
  // Set where the answer is computed off the event loop: it returns the reply line (an error
  // reply where the computation throws), and `line` is empty until then.
  std::function<std::string()> later;
  std::optional<ErrorCode> refused;  // the code of an error reply the handler chose
};

// Handles one request line and returns its reply (with the change it staged, where the context
// has the journal). Never throws: a refusal becomes an error reply
// with its code, anything unexpected becomes `internal` and is logged.
Reply dispatch(const RequestContext& context, std::string_view line);

// The reply to a heartbeat in its plain form (proto/plain_heartbeat.h), written as dispatch()
// writes it (the members in its order, the number as json prints it), without a JSON document;
// nullopt where the beat is refused, so that dispatch() says why, with its code, and counts it.
std::optional<Reply> answer_plain(const RequestContext& context, const PlainHeartbeat& beat);

// An error reply for a request that could not be dispatched at all (framing errors).
std::string error_reply(const json& id, ErrorCode code, std::string_view message);

}  // namespace warden
