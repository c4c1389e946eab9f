// The event loop's place in the CPU scheduler. A heartbeat is answered once the loop runs; when
// hundreds of jobs die at once, thousands of exiting processes are runnable beside it and a loop
// of the normal policy, even at Nice=-10, waited tens of milliseconds for a CPU (BENCHMARKS.md,
// the mass death). The loop thread alone takes the lowest real-time priority, round robin, as
// corosync's heartbeat does: it runs whenever it has work, and its work comes in slices (the
// background lane). Threads and processes it starts go back to the normal policy
// (SCHED_RESET_ON_FORK): the worker threads' removals and the hooks never run real-time.
#pragma once

#include <string>

namespace warden {

// Puts the calling thread in SCHED_RR at priority 1 where `how` is "realtime" and the kernel
// allows it (root, or RLIMIT_RTPRIO of at least 1: LimitRTPRIO= in the unit). Returns what the
// loop runs at, for the log, or why it stays at the normal policy.
std::string schedule_loop(const std::string& how);

}  // namespace warden
