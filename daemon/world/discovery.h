// Discovery: the segments and temp files a job never registered (NCCL's, multiprocessing's
// shared_memory, torch's file_system strategy, tempfile), found from the kernel rather than from
// what the job said. While the job's processes are stopped, what they hold open (/proc/PID/fd) or
// map (/proc/PID/maps) on its roots is read; once they are gone, each object is removed only if it
// is certainly the job's, and kept with the reason otherwise. Both steps block: run them off the
// event loop.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/supervisor.h"
#include "world/files.h"
#include "proto/messages.h"

namespace warden {

// An object a process of the job held, by its path as that process saw it (in its own mount
// namespace) and by identity (which is the same from any namespace).
struct HeldObject {
  std::string path;
  dev_t dev = 0;
  ino_t ino = 0;
};

// How a process's mappings are read: through PROCMAP_QUERY where the kernel has it (Linux 6.11:
// each mapping's identity, and a path only for a file not seen yet), else from the text of
// /proc/PID/maps, whose making is most of what a look at a process costs. `text` reads the text
// everywhere, as older kernels do.
enum class MapsReader { best, text };

// What `pids` hold open or map shared beneath `roots` (e.g. /dev/shm, /tmp), each object once.
// A private mapping is a copy of its file that keeps nothing of the job's (libraries, programs,
// copy-on-write views), and is not looked at. Objects already unlinked ("(deleted)") are not
// listed: nothing is left to remove. The processes are read by as many threads as there are cores
// for; `read(i)`, where given, runs on the reading thread once pids[i] has been read (a cleanup
// ends each there, so that its exit overlaps the reading of the rest).
std::vector<HeldObject> read_held_objects(const std::vector<pid_t>& pids,
                                          const std::vector<std::string>& roots,
                                          MapsReader maps = MapsReader::best,
                                          const std::function<void(std::size_t)>& read = {});

struct DiscoveryRules {
  Discover mode = Discover::reclaim;
  uid_t owner = 0;                   // only the job's user's objects may be removed
  std::int64_t created_unix_ms = 0;  // only objects born after the job registered
  // The job's own registrations, handled as registered (kept by policy, say): files and segments
  // by identity, directories (what lies beneath one is its) and shm globs (names they match).
  std::vector<PathIdentity> registered;
  std::vector<std::string> dirs;
  std::vector<std::string> globs;
  pid_t self = 0;  // wardend, which holds nothing of a job's
};

// Once every process of the job is gone: for each object, whether it is certainly the job's
// (owned by its user, born after it registered, held by no process left on the node, not a
// registration of its own), then removed (mode reclaim) or listed (mode report). `root` is the
// job's "/" (View::root()). One report per object still there, with its size in `bytes`; the
// reason in `detail` for one kept: "existed before the job", "held by pid N (command)", "owned by
// uid U", "discover = report".
std::vector<PathReport> settle_discovered(const std::vector<HeldObject>& held,
                                          const DiscoveryRules& rules, const PathRules& paths,
                                          int root);

}  // namespace warden
