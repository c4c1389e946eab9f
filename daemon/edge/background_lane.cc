#include "edge/background_lane.h"

#include <boost/asio/post.hpp>

namespace warden {

BackgroundLane::BackgroundLane(boost::asio::io_context& io, std::chrono::microseconds slice)
    : state_(std::make_shared<State>(io, slice)) {}

BackgroundLane::~BackgroundLane() {
  std::deque<std::unique_ptr<Task>> dropped;
  std::lock_guard lock(state_->mutex);
  dropped.swap(state_->queue);
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
