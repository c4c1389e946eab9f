// Cleanups in flight. A cleanup's first steps (its cgroup frozen and listed, its processes
// signalled) cost a millisecond or more of the kernel's time while many processes exit at once:
// when hundreds of jobs die together, one is launched per turn of the loop, and its steps then
// run in the background lane (background_lane.h), so that requests are answered between them
// rather than after them all. Counts the cleanups launched or waiting to be, until each has
// finished.
#pragma once

#include <deque>
#include <functional>
#include <memory>

#include <boost/asio/io_context.hpp>

#include "core/supervisor.h"

namespace warden {

class CleanupPacer {
 public:
  using Launch = std::function<void(CleanupPlan plan)>;

  CleanupPacer(boost::asio::io_context& io, Launch launch);
  CleanupPacer(const CleanupPacer&) = delete;
  CleanupPacer& operator=(const CleanupPacer&) = delete;

  // Queues the plan; it is launched in a later turn of the loop, after those queued before it.
  void start(CleanupPlan plan);
  // A launched cleanup has finished.
  void finished() { --running_; }
  std::size_t running() const { return running_; }

 private:
  void launch_next();

  boost::asio::io_context& io_;
  Launch launch_;
  std::deque<CleanupPlan> waiting_;
  std::size_t running_ = 0;  // launched or waiting to be
  // What is posted to the loop runs only while the pacer lives.
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace warden
