// Cleanup benchmarks: death to clean on a quiet and on a crowded node against a floor measured
// without a daemon, and many jobs dying at once, with tracking cgroups and with the scan.
#pragma once

#include "tests/bench/measure.h"

namespace warden::bench {

// Runs each benchmark against wardends of its own and adds its rows to `report`.
void cleanup_benchmarks(Report& report);
// Many jobs dying at once: how long until all are cleaned, and the longest another job's heartbeat
// waits meanwhile against an echo server's in the same window.
void mass_death_benchmarks(Report& report);

}  // namespace warden::bench
