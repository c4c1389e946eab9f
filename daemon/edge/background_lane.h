// The loop's background lane: work that may wait a little (a process's exit, a cleanup's steps)
// runs on the io_context's own thread, in slices between the loop's other handlers, so that a
// burst of it delays a request by one slice instead of by the whole burst.
//
// Asio runs ready handlers in the order they became ready: when 200 jobs die at once, the exits
// of their 1,800 processes and the steps of 200 cleanups queue ahead of a heartbeat that arrived
// a moment later, and with the exiting processes taking most of the CPU that backlog took up to
// 200 ms to drain. Handlers bound to the lane's executor (I/O objects made with it, coroutines
// spawned on it) instead wait in the lane's own queue, which one handler on the loop works
// through a slice at a time, going to the back of the loop's queue after each. Everything stays
// on one thread: what the lane runs needs no more locking than before.
#pragma once

#include <chrono>
#include <deque>
#include <memory>
#include <mutex>
#include <type_traits>
#include <utility>

#include <boost/asio/execution.hpp>
#include <boost/asio/io_context.hpp>

namespace warden {

class BackgroundLane {
  struct State;

 public:
  // `slice`: how long the lane runs before the loop's other handlers get their turn.
  explicit BackgroundLane(boost::asio::io_context& io,
                          std::chrono::microseconds slice = std::chrono::microseconds(500));
  BackgroundLane(const BackgroundLane&) = delete;
  BackgroundLane& operator=(const BackgroundLane&) = delete;

  class Executor {
   public:
    explicit Executor(std::shared_ptr<State> lane) noexcept : lane_(std::move(lane)) {}
    // Queued, never run inline; callable from any thread (a coroutine resumed from a worker
    // thread's offloaded step comes back through here).
    template <class Function>
    void execute(Function&& f) const {
      enqueue(lane_, std::make_unique<Work<std::decay_t<Function>>>(std::forward<Function>(f)));
    }
    boost::asio::io_context& query(boost::asio::execution::context_t) const noexcept {
      return lane_->io;
    }
    static constexpr boost::asio::execution::blocking_t query(
        boost::asio::execution::blocking_t) noexcept {
      return boost::asio::execution::blocking.never;
    }
    Executor require(boost::asio::execution::blocking_t::never_t) const noexcept { return *this; }
    bool operator==(const Executor&) const noexcept = default;

   private:
    std::shared_ptr<State> lane_;
  };

  ~BackgroundLane();
  Executor get_executor() noexcept { return Executor(state_); }
  // Destroys the work queued and not run, and what destroying it queues (at shutdown, once the
  // loop has stopped).
  void drop_queued();
  // Work queued and not yet run.
  std::size_t queued() const;

 private:
  struct Task {
    virtual ~Task() = default;
    virtual void run() = 0;
  };
  template <class Function>
  struct Work final : Task {
    explicit Work(Function f) : function(std::move(f)) {}
    void run() override { std::move(function)(); }
    Function function;
  };
  // Shared with what is posted to the loop, which may run after the lane is gone (and then finds
  // nothing to do).
  struct State {
    boost::asio::io_context& io;
    const std::chrono::microseconds slice;
    std::mutex mutex;
    std::deque<std::unique_ptr<Task>> queue;  // guarded by mutex
    bool scheduled = false;                  // a slice is posted to the loop; guarded by mutex
  };

  static void enqueue(const std::shared_ptr<State>& state, std::unique_ptr<Task> task);
  static void run_slice(const std::shared_ptr<State>& state);

  std::shared_ptr<State> state_;
};

}  // namespace warden
