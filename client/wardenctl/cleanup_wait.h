// `wardenctl cleanup --wait`: cleans a job or a group and returns once it is done (a scheduler's
// epilog hands the node on only then).
#pragma once

#include <chrono>
#include <ostream>

#include "warden/client.h"

namespace warden {

// The exit status of `cleanup --wait` when a job was not cleaned in time or a process of it
// survived SIGKILL holding a GPU (1 stays wardenctl's "could not ask wardend").
inline constexpr int kNotAllCleaned = 3;

// Starts the cleanup, then waits until every job of it is cleaned and no process that outlived
// its cleanup still holds a GPU, or `bound` passes. Prints one line per job to `out` (what its
// cleanup did, or what it is still waiting for). Returns 0 when all is done, else kNotAllCleaned.
int cleanup_and_wait(Client& client, const CleanupRequest& request, std::chrono::milliseconds bound,
                     std::ostream& out);

}  // namespace warden
