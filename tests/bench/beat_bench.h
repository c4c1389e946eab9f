// The cost of Job::beat() in the calling thread, C++ and Python, with wardend healthy and stopped.
#pragma once

#include "tests/bench/measure.h"

namespace warden::bench {

void beat_cost(Report& report);

}  // namespace warden::bench
