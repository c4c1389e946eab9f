#include "edge/background_lane.h"

#include <boost/asio/post.hpp>

namespace warden {

BackgroundLane::BackgroundLane(boost::asio::io_context& io, std::chrono::microseconds slice)
    : state_(std::make_shared<State>(io, slice)) {}

BackgroundLane::~BackgroundLane() { drop_queued(); }

void BackgroundLane::drop_queued() {
  // Dropping a task may queue another (a coroutine abandoned there posts the destruction of its
  // frames to its executor): drop until none is left, or the tasks and the state they share keep
  // each other alive.
  for (;;) {
    std::deque<std::unique_ptr<Task>> dropped;
    {
      std::lock_guard lock(state_->mutex);
      if (state_->queue.empty()) return;
      dropped.swap(state_->queue);
    }
  }  // each round's tasks go without the lock: their destruction may queue more
}

std::size_t BackgroundLane::queued() const {
  std::lock_guard lock(state_->mutex);
  return state_->queue.size();
}

void BackgroundLane::enqueue(const std::shared_ptr<State>& state, std::unique_ptr<Task> task) {
  {
    std::lock_guard lock(state->mutex);
    state->queue.push_back(std::move(task));
    if (state->scheduled) return;
    state->scheduled = true;
  }
  boost::asio::post(state->io, [state] { run_slice(state); });
}

void BackgroundLane::run_slice(const std::shared_ptr<State>& state) {
  const auto until = std::chrono::steady_clock::now() + state->slice;
  for (;;) {
    std::unique_ptr<Task> task;
    {
      std::lock_guard lock(state->mutex);
      if (state->queue.empty()) {
        state->scheduled = false;
        return;
      }
      task = std::move(state->queue.front());
      state->queue.pop_front();
    }
    task->run();
    if (std::chrono::steady_clock::now() >= until) break;
  }
  // Behind whatever became ready meanwhile (the reactor's next look included).
  boost::asio::post(state->io, [state] { run_slice(state); });
}

}  // namespace warden
