// The followers of the event stream (`events` with follow): who each is, which job it follows,
// and where its lines go. Each event is made into a line once for all of them, and each gets
// only what its caller may see.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "core/supervisor.h"
#include "proto/messages.h"

namespace warden {

// The line a follower is sent for `event`: {"event": ...} and a newline.
std::shared_ptr<const std::string> event_line(const Event& event);

class Subscribers {
 public:
  // Gets each line ({"event": ...} and a newline) as it is published; it must only queue it (not
  // unsubscribe).
  using Sink = std::function<void(const std::shared_ptr<const std::string>& line)>;

  // `job`: only that job's events. Returns the id that unsubscribe() takes.
  std::uint64_t subscribe(const Caller& caller, std::optional<JobId> job, Sink push);
  void unsubscribe(std::uint64_t id);
  // Sends the event to each follower whose caller may see it: root every job's, another user
  // its own jobs'. `line`: event_line(event), where it was made already.
  void publish(const Event& event, std::shared_ptr<const std::string> line = nullptr);
  std::size_t size() const { return followers_.size(); }
  // Whether anyone follows, for other threads: the journal's writer asks before it makes the
  // lines of what it wrote, and may still be writing when these Subscribers are gone.
  std::shared_ptr<const std::atomic<bool>> followed() const { return followed_; }

 private:
  struct Follower {
    Caller caller;
    std::optional<JobId> job;
    Sink push;
  };
  std::map<std::uint64_t, Follower> followers_;
  std::uint64_t next_ = 1;
  // !followers_.empty()
  const std::shared_ptr<std::atomic<bool>> followed_ = std::make_shared<std::atomic<bool>>(false);
};

}  // namespace warden
