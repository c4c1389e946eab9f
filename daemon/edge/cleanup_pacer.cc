#include "edge/cleanup_pacer.h"

#include <boost/asio/post.hpp>

namespace warden {

CleanupPacer::CleanupPacer(boost::asio::io_context& io, Launch launch)
    : io_(io), launch_(std::move(launch)) {}

void CleanupPacer::start(CleanupPlan plan) {
  ++running_;
  waiting_.push_back(std::move(plan));
  if (waiting_.size() == 1) launch_next();
}

void CleanupPacer::launch_next() {
  boost::asio::post(io_, [this, alive = std::weak_ptr<bool>(alive_)] {
    if (!alive.lock() || waiting_.empty()) return;
    CleanupPlan plan = std::move(waiting_.front());
    waiting_.pop_front();
    launch_(std::move(plan));
    if (!waiting_.empty()) launch_next();
  });
}

}  // namespace warden
