#include "world/watch.h"

namespace warden {

ProcessWatch::ProcessWatch(boost::asio::any_io_executor executor, ExitHandler on_exit,
                           Keeper keeper)
    : executor_(std::move(executor)), on_exit_(std::move(on_exit)), keeper_(std::move(keeper)) {}

void ProcessWatch::watch(JobId job, ProcessHandle process) {
  Key key{job, process.identity.pid};
  if (entries_.contains(key)) return;
  Entry entry{.pidfd = std::make_unique<Descriptor>(executor_, process.pidfd.release())};
  if (keeper_.keep)
    entry.kept_as = keeper_.keep(job, process.identity, entry.pidfd->native_handle());
  auto [it, _] = entries_.emplace(key, std::move(entry));
  arm(key, *it->second.pidfd);
}

// A pidfd turns readable when its process exits. The exit is confirmed before it is reported:
// a readiness wakeup without an exit would otherwise fail a living job.
void ProcessWatch::arm(Key key, Descriptor& fd) {
  fd.async_wait(Descriptor::wait_read, [this, key](boost::system::error_code ec) {
    if (ec) return;  // cancelled: the entry was forgotten or the watch destroyed
    // Looked up again: the entry may have been forgotten after this wait completed.
    auto it = entries_.find(key);
    if (it == entries_.end()) return;
    if (!pidfd_exited(it->second.pidfd->native_handle())) {
      arm(key, *it->second.pidfd);
      return;
    }
    on_exit_(key.first, key.second);
  });
}

void ProcessWatch::forget(JobId job, pid_t pid) {
  auto it = entries_.find({job, pid});
  if (it != entries_.end()) erase(it, std::next(it));
}

void ProcessWatch::forget_job(JobId job) {
  erase(entries_.lower_bound({job, 0}),
        entries_.upper_bound({job, std::numeric_limits<pid_t>::max()}));
}

void ProcessWatch::erase(std::map<Key, Entry>::iterator first,
                         std::map<Key, Entry>::iterator last) {
  for (auto it = first; it != last; ++it) {
    if (!it->second.kept_as.empty()) keeper_.release(it->second.kept_as);
  }
  entries_.erase(first, last);
}

int ProcessWatch::pidfd(JobId job, pid_t pid) const {
  auto it = entries_.find({job, pid});
  return it == entries_.end() ? -1 : it->second.pidfd->native_handle();
}

}  // namespace warden
