// The node check and discovery: what a check costs on a quiet and on a crowded GPU node, what it
// does to another job's heartbeats, and what discovery adds to death to clean.
#pragma once

#include "tests/bench/measure.h"

namespace warden::bench {

void check_benchmarks(Report& report);

}  // namespace warden::bench
