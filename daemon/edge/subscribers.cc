#include "edge/subscribers.h"

namespace warden {

std::uint64_t Subscribers::subscribe(const Caller& caller, std::optional<JobId> job, Sink push) {
  std::uint64_t id = next_++;
  followers_.emplace(id, Follower{caller, job, std::move(push)});
  *followed_ = true;
  return id;
}

void Subscribers::unsubscribe(std::uint64_t id) {
  followers_.erase(id);
  *followed_ = !followers_.empty();
}

std::shared_ptr<const std::string> event_line(const Event& event) {
  return std::make_shared<const std::string>(
      json{{"event", to_json(event)}}.dump(-1, ' ', false, json::error_handler_t::replace) + "\n");
}

void Subscribers::publish(const Event& event, std::shared_ptr<const std::string> line) {
  if (followers_.empty()) return;
  if (!line) line = event_line(event);
  for (auto& [id, f] : followers_) {
    bool sees = f.caller.is_admin() || static_cast<uid_t>(event.uid) == f.caller.uid;
    if (sees && (!f.job || *f.job == event.job)) f.push(line);
  }
}

}  // namespace warden
