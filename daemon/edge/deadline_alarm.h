// One timer for every heartbeat deadline, armed at the earliest. A timer armed earlier than the
// new earliest is kept: it finds nothing due when it fires, and the owner arms it again. It says
// how late it fired, since a wardend that did not run (SIGSTOP, a stuck disk, a suspended
// machine) must not judge jobs by its own pause.
#pragma once

#include <functional>
#include <optional>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/steady_timer.hpp>

#include "core/supervisor.h"

namespace warden {

class DeadlineAlarm {
 public:
  // Called on the executor once the armed time has passed: the time now, and how long after the
  // armed time that is.
  using Due = std::function<void(TimePoint now, Duration late_by)>;

  DeadlineAlarm(const boost::asio::any_io_executor& ex, Due due);
  // Waits for `next`, or for nothing (nullopt).
  void arm(std::optional<TimePoint> next);

 private:
  boost::asio::steady_timer timer_;
  std::optional<TimePoint> armed_;
  Due due_;
};

}  // namespace warden
