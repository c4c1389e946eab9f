// Heartbeats read and answered without a JSON document.
//
// A heartbeat is nearly every request wardend answers, and reading it into a JSON document (a map
// node and a string per member), then writing the reply through another, took about a third of
// the CPU its answer cost (BENCHMARKS.md). The plain form every client sends is recognised here
// and answered directly; anything else (another key, an escape, a string id, a fraction, a
// refusal) goes the full way, which alone decides what a request means and how it is refused.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

#include "edge/commands.h"
#include "warden/types.h"

namespace warden {

struct PlainHeartbeat {
  std::optional<std::uint64_t> id;  // nullopt: the request has none
  JobId job = 0;
};

// The heartbeat `line` holds if it is exactly a JSON object of "op": "heartbeat", "job" and
// optionally "id", both unsigned integers, in any order, with any JSON whitespace; nullopt for
// anything else.
std::optional<PlainHeartbeat> plain_heartbeat(std::string_view line);

// The reply to `beat`, written as the full path writes it (the members in its order, the number
// as json prints it); nullopt where the beat is refused, so that the full path says why, with its
// code, and counts the refusal.
std::optional<Reply> answer_plain(const RequestContext& context, const PlainHeartbeat& beat);

}  // namespace warden
