// Who makes what on the allowed roots. fanotify names the process behind every entry made in (or
// renamed into) a watched directory, and reports every entry removed from it; the service maps each
// maker to its job, and a job's cleanup then also looks at what it created and closed before it
// died (no descriptor, no mapping left: discovery.h alone cannot see it). Costs CAP_SYS_ADMIN
// (fanotify_init) and one event per entry made or removed in a root; without the capability the
// watch is off and says why.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>

#include "core/identity.h"
#include "core/supervisor.h"
#include "world/discovery.h"
#include "proto/unique_fd.h"

namespace warden {

// One entry made or removed in a watched root.
struct RootChange {
  bool created = true;  // a regular file made or renamed in; else an entry unlinked or renamed away
  HeldObject object;    // its path (the root's, "/", the name); a created one's identity too
  pid_t pid = 0;        // the process that made the change (fanotify's event pid)
};

// One fanotify group for all the roots (one descriptor), read on the event loop; each event names
// its directory by file handle, matched against the roots'. Only entries directly in a root are
// seen: shm segments, tempfile's files; what a job makes in a directory of its own is found through
// that directory, registered or held.
class CreationWatch {
 public:
  using Handler = std::function<void(const std::vector<RootChange>&)>;

  // Watches each of `roots` that exists; `handler` gets each read's changes, in order.
  CreationWatch(const boost::asio::any_io_executor& executor, const std::vector<std::string>& roots,
                Handler handler);
  CreationWatch(const CreationWatch&) = delete;
  CreationWatch& operator=(const CreationWatch&) = delete;
  ~CreationWatch();

  // "" while at least one root is watched; else why none is, for people.
  const std::string& unavailable() const { return unavailable_; }
  // The roots watched.
  std::vector<std::string> roots() const;
  // Hands over what the kernel has queued now, at once. The kernel queues an event as the entry is
  // made, so a job's cleanup that drains first sees everything its processes made before they
  // died.
  void drain();

 private:
  struct Group;
  std::unique_ptr<Group> group_;
  std::string unavailable_;
};

// An object made on a root by a process no active job could be named for when the event was read
// (its parent, the job's main, had just died; it was not registered yet): the cleanup that ends
// that very process (pid and start time) takes it as the job's.
struct MadeObject {
  HeldObject object;
  ProcessIdentity maker;
};

// What each job made on the roots and has not removed, by path, bounded per job; and what was made
// by processes of no job yet, the oldest forgotten first past its bound. Bookkeeping on the event
// loop; the identities come from a stat when the creation is seen, so that a name made again by
// someone else later is not taken for the job's.
class Creations {
 public:
  static constexpr std::size_t kMaxPerJob = 65'536;
  static constexpr std::size_t kMaxUnclaimed = 65'536;

  // Records that `job` made `object`; false where the job is at its bound (the object is then
  // not seen, as without the watch).
  bool add(JobId job, HeldObject object);
  // Records what a process of no job (yet) made.
  void add_unclaimed(MadeObject made);
  // An entry removed (or renamed away) from a root: whoever made it, it is no longer there.
  void remove(const std::string& path);
  // The job's objects, forgotten here (its cleanup takes them).
  std::vector<HeldObject> take(JobId job);
  void forget(JobId job) { take(job); }
  // What these processes made while they were of no job, forgotten here (the cleanup that ended
  // them takes it). A lookup per maker: a mass death of many cleanups costs no copy of the rest.
  std::vector<HeldObject> claim(const std::vector<ProcessIdentity>& makers);
  std::size_t size() const { return by_path_.size() + unclaimed_.size(); }

 private:
  std::map<JobId, std::map<std::string, HeldObject>> by_job_;
  std::map<std::string, JobId> by_path_;
  struct Unclaimed {
    MadeObject made;
    std::uint64_t order = 0;
  };
  std::map<std::string, Unclaimed> unclaimed_;
  std::map<std::uint64_t, std::string> unclaimed_order_;  // oldest first
  std::multimap<std::pair<pid_t, std::uint64_t>, std::string> unclaimed_by_maker_;
  std::uint64_t next_order_ = 0;
};

}  // namespace warden
