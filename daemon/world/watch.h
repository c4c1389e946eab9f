// ProcessWatch: one pidfd per tracked process, waited on by the event loop; reports each exit once.
#pragma once

#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <utility>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>

#include "world/process.h"
#include "proto/messages.h"

namespace warden {

// Owns the pidfds of every tracked process. A process belongs to one job; the same pid may be
// tracked under two jobs, each with its own pidfd. Lives on the io_context's thread; destroying it
// cancels every wait (the handlers then do nothing). A copy of each pidfd may be kept elsewhere
// while it is watched (under systemd, the service's descriptor store); the owner says how.
class ProcessWatch {
 public:
  using ExitHandler = std::function<void(JobId, pid_t)>;
  // Keeps a copy of a watched pidfd, returning the name it is kept under ("": not kept), and
  // lets go of one by that name once it is no longer watched.
  struct Keeper {
    std::function<std::string(JobId, const ProcessIdentity&, int pidfd)> keep;
    std::function<void(const std::string& name)> release;
  };

  ProcessWatch(boost::asio::any_io_executor executor, ExitHandler on_exit, Keeper keeper = {});
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
  struct Entry {
    std::unique_ptr<Descriptor> pidfd;
    std::string kept_as;  // its name where the keeper keeps a copy; "" if none
  };

  void arm(Key key, Descriptor& fd);
  void erase(std::map<Key, Entry>::iterator first, std::map<Key, Entry>::iterator last);

  boost::asio::any_io_executor executor_;
  ExitHandler on_exit_;
  Keeper keeper_;
  std::map<Key, Entry> entries_;
};

}  // namespace warden
