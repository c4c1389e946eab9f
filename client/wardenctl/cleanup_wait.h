// `wardenctl cleanup --wait`: cleans a job or a group and returns once it is done (a scheduler's
// epilog hands the node on only then).
#pragma once

#include <chrono>
#include <ostream>

#include "warden/client.h"

namespace warden {

// Starts the cleanup, then waits until every job of it is cleaned and no process that outlived
// its cleanup still holds a GPU, or `bound` passes. Prints one line per job to `out` (what its
// cleanup did, or what it is still waiting for). Returns 0 when all is done, 1 otherwise.
int cleanup_and_wait(Client& client, const CleanupRequest& request,
                     std::chrono::milliseconds bound, std::ostream& out);

}  // namespace warden
