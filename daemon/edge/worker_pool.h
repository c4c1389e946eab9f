// A thread pool whose queued work can be destroyed once its threads have ended, while what that
// work refers to still exists.
//
// Asio keeps the work still queued in a joined pool until the pool itself is destroyed, and a
// pool that is a member of the service goes after every member declared below it. The work queued
// in wardend's pools may hold a cleanup's coroutine frame (an off-loop step not yet begun), whose
// destruction may use the service; so wardend drops it at shutdown, before the service goes.
#pragma once

#include <cstddef>

#include <boost/asio/thread_pool.hpp>

namespace warden {

class WorkerPool : public boost::asio::thread_pool {
 public:
  explicit WorkerPool(std::size_t threads) : thread_pool(threads) {}
  // Stops the threads (each ends the work it is running, and starts none), waits for them, and
  // destroys the work that never ran.
  void stop_and_drop() {
    stop();
    join();
    shutdown();
  }
};

}  // namespace warden
