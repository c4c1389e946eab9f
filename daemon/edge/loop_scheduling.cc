#include "edge/loop_scheduling.h"

#include <sched.h>

#include <cerrno>
#include <cstring>

namespace warden {

std::string schedule_loop(const std::string& how) {
  if (how != "realtime") return "normal (loop-scheduling = " + how + ")";
  sched_param param{.sched_priority = 1};
  // On Linux the policy of pid 0 is the calling thread's, not the process's.
  if (::sched_setscheduler(0, SCHED_RR | SCHED_RESET_ON_FORK, &param) == 0) {
    return "realtime (SCHED_RR 1, the loop thread only)";
  }
  return std::string("normal: the loop cannot be made real-time (") + std::strerror(errno) +
         "); a unit needs LimitRTPRIO=1 and no RestrictRealtime=, a user's wardend a "
         "`ulimit -r` of 1, else loop-scheduling = normal says this is meant";
}

}  // namespace warden
