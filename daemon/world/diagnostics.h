// Stall diagnostics: what a hung job's processes are doing, read from /proc before cleanup.
#pragma once

#include <string>

#include "proto/messages.h"

namespace warden {

// State, wait channel and kernel stack of one process (the stack needs root; without it `detail`
// says so). A process that is gone yields state '?' and a detail.
ProcessSnapshot snapshot_process(pid_t pid, const std::string& role);

}  // namespace warden
