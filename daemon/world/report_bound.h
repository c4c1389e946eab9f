// A cleanup report within a size bound: a job that registered thousands of long paths must not
// make a report (and with it an event, a stored row, a reply to every follower) of megabytes.
#pragma once

#include <cstddef>

#include "proto/messages.h"

namespace warden {

// Leaves out of the report's lists (processes, hooks, paths, discovered) what does not fit in
// `max_bytes` of JSON, counting what was left out by outcome in `omitted`. Problems (a failure, a
// refusal, a survivor, a leftover) are listed before what went well; each list keeps its order
// otherwise. A report within the bound is left as it is.
void bound_report(CleanupReport& report, std::size_t max_bytes);

}  // namespace warden
