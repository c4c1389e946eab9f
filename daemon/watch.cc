#include "daemon/watch.h"

namespace warden {

ProcessWatch::ProcessWatch(boost::asio::any_io_executor executor, ExitHandler on_exit)
    : executor_(std::move(executor)), on_exit_(std::move(on_exit)) {}

void ProcessWatch::watch(JobId job, ProcessHandle process) {
  Key key{job, process.identity.pid};
  if (entries_.contains(key)) return;
  auto [it, _] = entries_.emplace(
      key, std::make_unique<Descriptor>(executor_, process.pidfd.release()));
  arm(key, *it->second);
}

// A pidfd turns readable when its process exits. The exit is confirmed before it is reported:
// a readiness wakeup without an exit would otherwise fail a living job.
void ProcessWatch::arm(Key key, Descriptor& fd) {
  fd.async_wait(Descriptor::wait_read, [this, key](boost::system::error_code ec) {
    if (ec) return;  // cancelled: the entry was forgotten or the watch destroyed
    // Looked up again: the entry may have been forgotten after this wait completed.
    auto it = entries_.find(key);
    if (it == entries_.end()) return;
    if (!pidfd_exited(it->second->native_handle())) {
      arm(key, *it->second);
      return;
    }
    on_exit_(key.first, key.second);
  });
}

void ProcessWatch::forget(JobId job, pid_t pid) { entries_.erase({job, pid}); }

void ProcessWatch::forget_job(JobId job) {
  entries_.erase(entries_.lower_bound({job, 0}), entries_.upper_bound({job, std::numeric_limits<pid_t>::max()}));
}

int ProcessWatch::pidfd(JobId job, pid_t pid) const {
  auto it = entries_.find({job, pid});
  return it == entries_.end() ? -1 : it->second->native_handle();
}

}  // namespace warden
