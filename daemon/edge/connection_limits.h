// What one client, or all of them, may hold of wardend: the server enforces these, the config sets
// them (a header of its own, so that the config need not know the server).
#pragma once

#include <chrono>
#include <cstddef>

#include "core/supervisor.h"

namespace warden {

// Each refusal is a limit_exceeded error line before the connection is closed.
struct ConnectionLimits {
  std::size_t max_connections = 4096;
  std::size_t max_connections_per_user = 256;
  Duration idle_timeout = std::chrono::hours(1);        // no request under way
  Duration request_timeout = std::chrono::seconds(10);  // to finish a begun line, or take a reply
  std::size_t max_pending_output = 4 << 20;             // reply bytes buffered before writing
};

}  // namespace warden
