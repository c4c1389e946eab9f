// Converting the steady clock that deadlines use to and from wall-clock time, which people, other
// machines and the durable store understand.
#pragma once

#include <chrono>
#include <cstdint>

#include "core/supervisor.h"

namespace warden {

inline std::int64_t unix_ms_now() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

inline std::int64_t to_unix_ms(TimePoint t) {
  return unix_ms_now() -
         std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t).count();
}

// A wall-clock instant recorded earlier (possibly by an earlier wardend) on the steady clock.
inline TimePoint from_unix_ms(std::int64_t ms) {
  return Clock::now() - std::chrono::milliseconds(unix_ms_now() - ms);
}

}  // namespace warden
