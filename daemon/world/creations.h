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

// One fanotify group per root (so an event's root needs no file-handle lookup), read on the event
// loop. Only entries directly in a root are seen: shm segments, tempfile's files; what a job makes
// in a directory of its own is found through that directory, registered or held.
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
  // How many times the kernel dropped events (its queue overflowed): creations then go unseen.
  std::uint64_t overflows() const { return *overflows_; }

 private:
  struct Root;
  std::shared_ptr<Handler> handler_;  // shared by the roots
  std::vector<std::unique_ptr<Root>> roots_;
  std::string unavailable_;
  std::shared_ptr<std::uint64_t> overflows_ = std::make_shared<std::uint64_t>(0);
};

// What each job made on the roots and has not removed, by path, bounded per job. Bookkeeping on
// the event loop; the identities come from a stat when the creation is seen, so that a name made
// again by someone else later is not taken for the job's.
class Creations {
 public:
  static constexpr std::size_t kMaxPerJob = 65'536;

  // Records that `job` made `object`; false where the job is at its bound (the object is then
  // not seen, as without the watch).
  bool add(JobId job, HeldObject object);
  // An entry removed (or renamed away) from a root: whoever made it, it is no longer there.
  void remove(const std::string& path);
  // The job's objects, forgotten here (its cleanup takes them).
  std::vector<HeldObject> take(JobId job);
  void forget(JobId job) { take(job); }
  std::size_t size() const { return by_path_.size(); }

 private:
  std::map<JobId, std::map<std::string, HeldObject>> by_job_;
  std::map<std::string, JobId> by_path_;
};

}  // namespace warden
