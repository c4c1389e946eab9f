// warden's vocabulary: the jobs, requests, reports and replies of the protocol as plain C++ types
// (proto/PROTOCOL.md is the wire spec). Part of the installed C++ SDK: no JSON, no sockets here;
// proto/messages.h has their JSON forms.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace warden {

using JobId = std::uint64_t;

inline constexpr int kProtocolVersion = 1;
inline constexpr std::size_t kDefaultMaxFrame = 64 * 1024;

// --- vocabulary
// ------------------------------------------------------------------------------------

// running -> ended | failed | stalled -> cleaning -> cleaned. The first three name how the job
// ended; that name is kept as the job's `reason` once it moves on to cleaning and cleaned.
enum class JobState { running, ended, failed, stalled, cleaning, cleaned };

// When a resource is cleaned: always (default), or only when the job did not end cleanly (outputs
// a job wants to keep after success).
enum class Policy { always, failure };

enum class PathKind { file, dir, shm, shm_glob };

// A kind of path as the protocol knows it, from the one table of them (messages.cc): a new kind is
// its enum value, a line there, and how files.cc resolves and removes it. Daemon, C++ client and
// wardenctl read everything else from here.
struct PathKindInfo {
  PathKind kind;
  std::string_view name;   // its op is "add_" + name
  std::string_view field;  // the request's member that carries it
  std::string_view help;   // what it is and what cleanup does with it, for people
  bool shm = false;        // it lives in the shm dir (counted as shm, its bytes as shm bytes)
  // A pattern over names, not one object: no identity to check, the reply's member is "pattern".
  bool pattern = false;
};
std::span<const PathKindInfo> path_kinds();
const PathKindInfo& info_of(PathKind kind);

// What cleanup does with the segments and temp files a job held but never registered
// (PROTOCOL.md, "Discovery"): remove those certainly the job's, only list them, or not look.
enum class Discover { reclaim, report, off };

// What cleanup did to one resource. Each kind uses the values that fit it (PROTOCOL.md).
enum class Outcome {
  already_gone,  // it was gone before cleanup reached it
  terminated,    // a process that exited after SIGTERM, within the grace period
  killed,        // a process that needed SIGKILL
  unkillable,    // a process that survived SIGKILL past the bound (uninterruptible sleep)
  removed,       // a path that was removed
  refused,       // not touched because it is no longer what was registered (identity changed)
  succeeded,     // a hook that exited 0
  timed_out,     // a hook killed at its timeout
  failed,        // the step failed; `detail` says why
  kept,          // left alone by policy (a `failure`-only resource after a clean end)
};

std::string_view to_string(JobState s);
std::string_view to_string(Policy p);
std::string_view to_string(PathKind k);
std::string_view to_string(Outcome o);
std::optional<JobState> job_state_from_string(std::string_view s);
std::optional<Outcome> outcome_from_string(std::string_view s);
std::optional<Policy> policy_from_string(std::string_view s);
std::optional<PathKind> path_kind_from_string(std::string_view s);
std::string_view to_string(Discover d);
std::optional<Discover> discover_from_string(std::string_view s);

// What the node check found that makes a node unfit for the next job (PROTOCOL.md, "check").
enum class FindingKind {
  stray_gpu_holder,   // a process holding a GPU that belongs to no running job
  unheld_gpu_memory,  // device memory in use that no process holds (NVML)
  unkillable,         // a process that outlived its job's cleanup
  populated_cgroup,   // a cleaned job's tracking cgroup with processes still in it
  leftover_path,      // a file or segment a cleanup could not or would not remove, still there
  shm_full,           // /dev/shm fuller than the configured share of its size
};
std::string_view to_string(FindingKind k);
std::optional<FindingKind> finding_kind_from_string(std::string_view s);

// --- requests (client -> daemon)
// ---------------------------------------------------------------------

struct HelloRequest {
  int protocol = kProtocolVersion;
  std::string client;  // free text, e.g. "wardenctl/0.1.0", for the daemon's log
};

// A command run at cleanup (a hook) or at a stall (the diagnose command), as the job's user.
struct CommandSpec {
  std::vector<std::string> argv;  // argv[0] is an absolute path or found in the default PATH
  std::vector<std::pair<std::string, std::string>> env;  // added to a minimal clean environment
  std::string cwd;                                       // empty: the user's home, else "/"
  double timeout_s = 30;
  bool operator==(const CommandSpec&) const = default;
};

struct RegisterJobRequest {
  std::string name;
  pid_t pid = 0;                    // the job's main process
  double heartbeat_s = 0;           // 0: no heartbeat deadline
  double grace_s = 5;               // SIGTERM -> SIGKILL
  bool kill_main_on_stall = false;  // on a stall, also terminate the main process
  // The cluster job this belongs to (Slurm job id, torchrun run id): `cleanup` by group ends all.
  std::string group;
  // Run at a stall before cleanup, e.g. {"py-spy", "dump", "--pid", "{pid}"}; "{pid}" in any
  // argument becomes the main process's pid. Empty: none.
  std::optional<CommandSpec> diagnose;
  // A pidfd of `pid` travels with this request line (SCM_RIGHTS). Not needed where `pid` is the
  // connecting process itself.
  bool pidfd = false;
  // What its cleanup does with what it held but never registered; nullopt: wardend's setting.
  std::optional<Discover> discover;
};

struct AddProcessRequest {
  JobId job = 0;
  pid_t pid = 0;
  Policy policy = Policy::always;
  // A pidfd of `pid` travels with this request line (SCM_RIGHTS): no pid race, and no question
  // of which PID namespace `pid` is numbered in.
  bool pidfd = false;
};

// add_file and add_dir ("path"), add_shm ("name": a segment of /dev/shm as given to shm_open, or
// "sem.NAME" for a named semaphore) and add_shm_glob ("pattern": an fnmatch(3) pattern over names
// in /dev/shm, e.g. "torch_4312_*").
struct AddPathRequest {
  JobId job = 0;
  PathKind kind = PathKind::file;
  std::string path;  // the path, name or pattern
  Policy policy = Policy::always;
};

struct AddHookRequest {
  JobId job = 0;
  CommandSpec hook;
  Policy policy = Policy::always;
};

struct HeartbeatRequest {
  JobId job = 0;
  // The first beat after the client could not reach wardend for this long (its own clock): the
  // job's history records that it ran unsupervised. 0: none.
  double unsupervised_s = 0;
};

// How a job says it ended: ok (its cleanup sweeps leftovers and reports them) or failed (its
// cleanup ends and removes everything).
enum class JobEnd { ok, failed };
std::string_view to_string(JobEnd e);
std::optional<JobEnd> job_end_from_string(std::string_view s);

struct EndJobRequest {
  JobId job = 0;
  JobEnd outcome = JobEnd::ok;
};

// Cleans a job (or every job of a group) now, as if it had failed: its main process is terminated
// too. Exactly one of the two.
struct CleanupRequest {
  std::optional<JobId> job;
  std::string group;
};

struct StatusRequest {
  std::optional<JobId> job;  // absent: every job the caller may see
  // Counts instead of the lists of workers and paths and the report: what a table of many jobs
  // needs, at a fraction of the size.
  bool summary = false;
};

inline constexpr std::int64_t kMaxEventsPerReply = 10'000;

// The event history (state changes of the caller's jobs, with cleanup reports). Without `since` or
// `after_seq`: the latest `limit` events; with either: the first `limit` from there on.
struct EventsRequest {
  std::optional<JobId> job;
  std::optional<std::int64_t> since_unix_ms;
  std::optional<std::int64_t> after_seq;
  std::size_t limit = 100;
  // After the reply, the connection carries each new event as it happens, as {"event": {...}}
  // lines, until the client closes it.
  bool follow = false;
};

// Is this node clean for the next job? With `reclaim` (root only): first end stray GPU holders
// (SIGTERM, `grace_s`, SIGKILL) and remove what is safe to remove, then judge.
struct CheckRequest {
  bool reclaim = false;
  double grace_s = 5;
};

// --- replies (daemon -> client)
// ----------------------------------------------------------------------

struct HelloReply {
  int protocol = kProtocolVersion;
  std::string server;
  std::vector<std::string> capabilities;
  std::size_t max_frame = kDefaultMaxFrame;
  // How new jobs' processes are known: "cgroup" (a tracking cgroup per job) or "scan" (/proc at
  // cleanup).
  std::string tracking = "scan";
  // This wardend's id, the same wherever its socket is mounted: a job exports it as
  // WARDEN_INSTANCE so that its escaped descendants are recognised (PROTOCOL.md, "Cookie").
  std::string instance;
  // Discovery: its default mode, and what it cannot see (PROTOCOL.md, "Discovery").
  std::string discover = "reclaim";
  std::string discover_note;
};

struct ProcessStatus {
  pid_t pid = 0;
  std::uint64_t start_time = 0;  // clock ticks after boot, from /proc/PID/stat field 22
  bool exited = false;           // exited on its own while the job ran; no longer tracked
  Policy policy = Policy::always;
  // While it runs: "cgroup" (kept by the kernel in a cgroup of the job's, with all it forks) or
  // "scan" (outside them: found by scanning /proc at cleanup); "" in a summary or once it ended.
  std::string tracking;
};

struct PathStatus {
  PathKind kind = PathKind::file;
  std::string path;  // for shm_glob: the pattern
  Policy policy = Policy::always;
};

// A GPU a process held when cleanup found it (a device node of the GPU set open).
struct GpuUse {
  std::string device;                         // the node, e.g. /dev/nvidia0
  std::optional<std::uint64_t> memory_bytes;  // device memory it held there (NVML only)
};

struct ProcessReport {
  pid_t pid = 0;  // in wardend's numbering
  // A container job's: the number its own PID namespace gave it, read while cleanup found it alive.
  std::optional<pid_t> local_pid;
  std::uint64_t start_time = 0;  // with pid, its identity (0: not known)
  std::string role;  // "main" | "worker" | "descendant" (found at cleanup, see `detail`)
  Outcome outcome = Outcome::already_gone;
  bool leftover = false;  // still running after a clean end: the job forgot it
  std::string detail;
  std::string command;    // its command line when cleanup found it alive (at most 256 bytes)
  double elapsed_ms = 0;  // from cleanup start until the process was seen gone
  std::vector<GpuUse> gpus;
};

struct PathReport {
  PathKind kind = PathKind::file;
  std::string path;  // for shm_glob: the pattern
  Outcome outcome = Outcome::removed;
  bool leftover = false;    // still present after a clean end
  std::size_t removed = 0;  // entries removed (a directory's tree, a glob's matches)
  std::string detail;
  double elapsed_ms = 0;
  std::optional<std::uint64_t> bytes;  // the space it took; of what was removed, what that freed
};

struct CommandReport {
  std::vector<std::string> argv;
  Outcome outcome = Outcome::succeeded;  // succeeded | failed | timed_out | kept
  std::optional<int> exit_code;
  std::optional<int> signal;
  std::string output;  // stdout and stderr interleaved, at most kMaxCommandOutput bytes
  bool truncated = false;
  std::string detail;
  double elapsed_ms = 0;
};

inline constexpr std::size_t kMaxCommandOutput = 64 * 1024;

// What a stalled job's processes were doing, captured before cleanup.
struct ProcessSnapshot {
  pid_t pid = 0;
  std::string role;
  char state = '?';    // from /proc/PID/stat: R, S, D, Z, T, ...
  std::string wchan;   // the kernel function it waits in, if any
  std::string stack;   // /proc/PID/stack where readable (root)
  std::string detail;  // why something could not be read
};

struct Diagnostics {
  std::vector<ProcessSnapshot> processes;
  std::optional<CommandReport> command;
};

// A process that holds a GPU.
struct GpuHolder {
  pid_t pid = 0;
  uid_t uid = 0;
  std::string command;
  std::optional<std::uint64_t> memory_bytes;  // NVML only
  std::optional<JobId> job;  // the job it belongs to; absent: "untracked", no job of this wardend
  std::string job_name;
};

// What a job's cleanup did for one GPU its processes held.
struct GpuReport {
  std::string device;
  std::string uuid;                             // NVML only
  std::optional<std::uint64_t> held_bytes;      // by the job's processes as cleanup began (NVML)
  std::optional<std::uint64_t> released_bytes;  // of that, no longer held once they were gone
  std::vector<GpuHolder> still_held_by;         // processes outside the job holding it afterwards
};

// Entries of a report's list left out to keep the report within its bound, counted.
struct Omitted {
  std::size_t count = 0;
  std::map<Outcome, std::size_t> outcomes;
};

// Bytes a cleanup gave back, by kind: files and directories removed (registered or discovered),
// shared-memory segments unlinked, GPU memory released (NVML only).
struct Reclaimed {
  std::uint64_t file_bytes = 0;
  std::uint64_t shm_bytes = 0;
  std::uint64_t gpu_bytes = 0;

  std::uint64_t total() const { return file_bytes + shm_bytes + gpu_bytes; }
};

struct CleanupReport {
  JobState reason = JobState::failed;  // ended | failed | stalled
  std::int64_t started_unix_ms = 0;
  double duration_ms = 0;
  std::optional<Diagnostics> diagnostics;  // for a stalled job
  std::vector<ProcessReport> processes;
  std::vector<CommandReport> hooks;
  std::vector<PathReport> paths;
  // What its processes held open or mapped but it never registered, each removed or kept with why.
  std::vector<PathReport> discovered;
  std::vector<GpuReport> gpus;  // each GPU a process of the job held
  std::string gpu_note;         // why `gpus` has no memory figures, where it has none
  Reclaimed reclaimed;          // what the cleanup gave back, registered and discovered together
  // What a report over wardend's size bound does not list, per list ("processes", "hooks",
  // "paths", "discovered"): counted by outcome instead. Problems are listed first.
  std::map<std::string, Omitted> omitted;
};

// One GPU of the node and who holds it now (the `gpus` op).
struct GpuStatus {
  std::string device;
  std::string uuid;  // NVML only
  std::optional<std::uint64_t> memory_total_bytes;
  std::optional<std::uint64_t> memory_used_bytes;
  std::vector<GpuHolder> holders;
};

struct GpusReply {
  std::vector<GpuStatus> gpus;  // empty: no device node of the GPU set exists on this node
  std::string note;             // why there are no memory figures ("" with NVML)
};

// One reason the node is not clean, with what to do about it.
struct Finding {
  FindingKind kind = FindingKind::stray_gpu_holder;
  std::string what;    // the process, path, cgroup or device, for a person
  std::string action;  // what to do next
  std::string detail;  // state and wait channel, why a path was kept, the largest owners, ...
  std::optional<std::int64_t> since_unix_ms;  // when it began (a process's start, a cleanup's end)
  std::optional<JobId> job;                   // the job it came from, where known
  std::string job_name;
  std::optional<pid_t> pid;  // in the asker's numbering
  std::optional<uid_t> uid;
  std::string command;
  std::string path;                    // a path, a cgroup or a device node
  std::optional<std::uint64_t> bytes;  // memory or space it holds
};

// What `check --reclaim` did about one finding.
struct ReclaimAct {
  FindingKind kind = FindingKind::stray_gpu_holder;
  std::string what;
  Outcome outcome = Outcome::failed;  // terminated | killed | unkillable | removed | failed
  std::string detail;
};

struct CheckReply {
  bool clean = true;
  std::vector<Finding> findings;      // those the asker may see: all for root, else its own
  std::vector<ReclaimAct> reclaimed;  // with reclaim
  double elapsed_ms = 0;
  std::string note;  // what the check could not look at (no NVML, no cgroups)
};

struct JobStatus {
  JobId id = 0;
  std::string name;
  std::string group;
  uid_t uid = 0;
  JobState state = JobState::running;
  std::optional<JobState> reason;  // set once the job ended: ended | failed | stalled
  std::string reason_detail;
  pid_t main_pid = 0;
  std::uint64_t main_start_time = 0;
  double heartbeat_s = 0;
  double grace_s = 0;
  std::int64_t created_unix_ms = 0;
  std::optional<std::int64_t> last_beat_unix_ms;
  std::vector<ProcessStatus> workers;
  std::vector<PathStatus> paths;
  std::size_t hooks = 0;
  std::string tracking = "scan";          // "cgroup": the kernel keeps its processes in `cgroup`
  std::string cgroup;                     // its tracking cgroup, as /proc/PID/cgroup names it
  Discover discover = Discover::reclaim;  // what its cleanup does with what it never registered
  std::optional<CleanupReport> report;
  // Always present, also in a summary.
  // Until the job is cleaned, what it registered; once cleaned, what its cleanup left (processes
  // that outlived it or were kept, paths still there).
  std::size_t live_processes = 0;  // the main process (while running) and workers not exited
  std::size_t files = 0;           // files and directories
  std::size_t shm = 0;             // shm segments and globs
};

// One entry of the event history (`events`): a state change of a job, with the cleanup report
// once it is cleaned.
struct Event {
  std::int64_t seq = 0;  // increases; pass the last one seen as EventsRequest::after_seq
  std::int64_t unix_ms = 0;
  JobId job = 0;
  uid_t uid = 0;
  std::string name;
  JobState state = JobState::running;  // running (registered), cleaning or cleaned
  std::optional<JobState> reason;      // how it ended: ended | failed | stalled
  std::string reason_detail;
  std::optional<CleanupReport> report;  // once cleaned
};

}  // namespace warden
