#include "edge/deadline_alarm.h"

namespace warden {

DeadlineAlarm::DeadlineAlarm(const boost::asio::any_io_executor& ex, Due due)
    : timer_(ex), due_(std::move(due)) {}

void DeadlineAlarm::arm(std::optional<TimePoint> next) {
  if (!next) {
    if (armed_) timer_.cancel();
    armed_.reset();
    return;
  }
  if (armed_ && *armed_ <= *next) return;
  armed_ = next;
  timer_.expires_at(*next);  // a wait for a later time ends as cancelled
  timer_.async_wait([this](boost::system::error_code ec) {
    if (ec || !armed_) return;
    const TimePoint now = Clock::now();
    const Duration late_by = now - *armed_;
    armed_.reset();
    due_(now, late_by);
  });
}

}  // namespace warden
