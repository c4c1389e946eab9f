// wardend's event loop and worker pools: Asio execution contexts whose pending work can be
// destroyed when wardend stops, while what that work refers to still exists.
//
// Asio destroys the handlers still waiting in a context only in the context's destructor. The
// loop outlives the service, the journal and the server, and a pool is a member of the service
// that goes after every member declared below it; the handlers waiting there hold the coroutine
// frames of connections and cleanups, whose destruction uses those (a connection following events
// unsubscribes from the service: a crash at SIGTERM). So wardend drops them first (daemon/main.cc).
#pragma once

#include <cstddef>

#include <boost/asio/io_context.hpp>
#include <boost/asio/thread_pool.hpp>

namespace warden {

template <class Context>
class DroppableContext : public Context {
 public:
  using Context::Context;
  // Destroys the work queued and never run; nothing may be running it any more.
  void drop_pending() { this->shutdown(); }
};

// Once run() has returned, drop_pending().
using EventLoop = DroppableContext<boost::asio::io_context>;

class WorkerPool : public DroppableContext<boost::asio::thread_pool> {
 public:
  explicit WorkerPool(std::size_t threads) : DroppableContext(threads) {}
  // Stops the threads (each ends the work it is running, and starts none), waits for them, and
  // destroys the work that never ran.
  void stop_and_drop() {
    stop();
    join();
    drop_pending();
  }
};

}  // namespace warden
