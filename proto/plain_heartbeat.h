// Heartbeats read without a JSON document.
//
// A heartbeat is nearly every request wardend answers, and reading it into a JSON document (a map
// node and a string per member), then writing the reply through another, took about a third of
// the CPU its answer cost (BENCHMARKS.md). The plain form every client sends is recognised here,
// and wardend answers it directly (answer_plain, daemon/edge/commands.h); anything else (another
// key, an escape, a string id, a fraction) goes the full way, which alone decides what a request
// means and how it is refused. The fuzzer checks that both read the same job and id.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

#include "warden/types.h"

namespace warden {

struct PlainHeartbeat {
  std::optional<std::uint64_t> id;  // nullopt: the request has none
  JobId job = 0;
};

// The heartbeat `line` holds if it is exactly a JSON object of "op": "heartbeat", "job" (an
// integer from 1) and optionally "id" (an unsigned integer), in any order, with any JSON
// whitespace; nullopt for anything else.
std::optional<PlainHeartbeat> plain_heartbeat(std::string_view line);

}  // namespace warden
