// What watching the allowed roots costs (world/creations.h): a job that makes and removes files in
// /dev/shm as fast as it can, against another job's heartbeats and wardend's CPU, with a wardend
// that watches and one without the capability to (the same run).
#pragma once

#include "tests/bench/measure.h"

namespace warden::bench {

void creation_benchmarks(Report& report);

}  // namespace warden::bench
