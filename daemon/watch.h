// ProcessWatch: one pidfd per tracked process, waited on by the event loop; reports each exit once.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <utility>

#include "daemon/process.h"
#include "proto/messages.h"

namespace warden {

// Owns the pidfds of every tracked process. A process belongs to one job; the same pid may be
// tracked under two jobs, each with its own pidfd. Lives on the io_context's thread; destroying it
// cancels every wait (the handlers then do nothing).
class ProcessWatch {
 public:
  using ExitHandler = std::function<void(JobId, pid_t)>;

  ProcessWatch(boost::asio::any_io_executor executor, ExitHandler on_exit);
  ProcessWatch(const ProcessWatch&) = delete;
  ProcessWatch& operator=(const ProcessWatch&) = delete;

  // Starts watching; a process already watched under this job keeps its first handle.
  void watch(JobId job, ProcessHandle process);
  void forget(JobId job, pid_t pid);
  void forget_job(JobId job);
  // The pidfd of a watched process, or -1.
  int pidfd(JobId job, pid_t pid) const;
  std::size_t size() const { return entries_.size(); }

 private:
  using Key = std::pair<JobId, pid_t>;
  using Descriptor = boost::asio::posix::stream_descriptor;

  void arm(Key key, Descriptor& fd);

  boost::asio::any_io_executor executor_;
  ExitHandler on_exit_;
  std::map<Key, std::unique_ptr<Descriptor>> entries_;
};

}  // namespace warden
