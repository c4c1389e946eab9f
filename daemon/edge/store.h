// The durable store: jobs, their resources and the event history, in SQLite (WAL mode, synchronous
// FULL) at STATE_DIR/warden.db.
//
// The event loop turns the core's state into Records (snapshots, so the writer never reads the
// core); the journal (journal.h) writes them in batches on its own thread through write(). What is
// not written: heartbeats (deadlines are re-derived at start) and workers' exits (re-checked by
// pid and start time at start).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <variant>
#include <vector>

#include <SQLiteCpp/Database.h>
#include <SQLiteCpp/Statement.h>

#include "core/supervisor.h"
#include "core/wall_clock.h"

namespace warden {

// A job's header: everything but its processes, paths and hooks. Later rows replace earlier ones.
struct JobRecord {
  JobId id = 0;
  std::int64_t uid = 0;
  std::int64_t gid = 0;
  JobSpec spec;
  ProcessIdentity main;
  JobState state = JobState::running;
  std::optional<JobState> reason;
  std::string reason_detail;
  bool cleanup_includes_main = false;
  std::int64_t created_unix_ms = 0;
  std::optional<std::int64_t> finished_unix_ms;
  std::optional<CleanupReport> report;  // once cleaned; while cleaning, what is done (progress)
  std::string cgroup;                   // its tracking cgroup; empty: tracked by scanning
  std::vector<std::string> more_cgroups;  // its leaves beneath other cgroups
};

struct JobForgotten {  // retired from `status`; its history stays in the events
  JobId id = 0;
};

struct ProcessRecord {
  JobId job = 0;
  TrackedProcess process;
};

struct PathRecord {
  JobId job = 0;
  TrackedPath path;
};

struct HookRecord {  // hooks run in the order they were recorded
  JobId job = 0;
  TrackedHook hook;
};

// How far a cleaning job's hook `index` (in the order its hooks were recorded) got: started
// (no report yet) or ended (its report). Written before the hook starts, so that a restart never
// runs it again.
struct HookRun {
  JobId job = 0;
  std::size_t index = 0;
  std::optional<CommandReport> report;
};

struct NextJobId {
  JobId value = 1;
};

using Record =
    std::variant<JobRecord, JobForgotten, ProcessRecord, PathRecord, HookRecord, HookRun, Event,
                 NextJobId>;

// Snapshots of a job's header and of its latest state change, taken on the event loop.
JobRecord job_record(const Job& job);
Event event_record(const Job& job);
// An event as the `events` op serves it.

// The store cannot be opened or read: corrupt, from a newer wardend, unreadable. The message says
// what to do; wardend refuses to start rather than start empty over jobs it could not read.
class StoreError : public std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct StoreOptions {
  std::string path;  // STATE_DIR/warden.db
  std::int64_t events_max_age_ms = 7LL * 24 * 3600 * 1000;
  std::int64_t events_max_count = 100'000;
  // The wall clock events age by, in milliseconds since the epoch (a test's own, to age them
  // without waiting).
  std::function<std::int64_t()> now_unix_ms = unix_ms_now;
};

struct StoredState {
  JobId next_id = 1;
  std::vector<Job> jobs;  // by id; times on the steady clock; workers' exits not yet re-checked
};

struct EventQuery {
  std::optional<std::int64_t> uid;  // only this user's jobs (a non-admin caller)
  std::optional<JobId> job;
  std::optional<std::int64_t> since_unix_ms;  // the first `limit` from then on, else the latest
  std::optional<std::int64_t> after_seq;      // the first `limit` after this one
  std::size_t limit = 1000;
};

class Store {
 public:
  // Opens STATE_DIR/warden.db, creating it if absent, and checks it. Throws StoreError. On a
  // read-only file system it is read as it is (or is empty, if absent) and every write fails.
  explicit Store(StoreOptions options);
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // Everything recorded. Throws StoreError if a row cannot be read back.
  StoredState load();
  // Writes the records in one transaction, durable when this returns, and numbers the events.
  // Throws SQLite::Exception (disk full, read-only, I/O error) having written none of them. Called
  // by one thread at a time.
  void write(std::vector<Record>& records);
  // Events in seq order, each as the `events` op serves it. Safe to call from any thread: it has
  // a connection of its own, used by one caller at a time.
  std::vector<json> events(const EventQuery& query);

 private:
  void apply(Record& record);
  // One record each, in the writer's transaction.
  void write(const JobRecord& r);
  void write(const JobForgotten& r);
  void write(const ProcessRecord& r);
  void write(const PathRecord& r);
  void write(const HookRecord& r);
  void write(const HookRun& r);
  void write(Event& r);
  void write(const NextJobId& r);
  // The writer's statement for `sql` (a string literal), prepared once and reset for reuse.
  SQLite::Statement& prepared(const char* sql);
  // Runs it once with `args` bound in order.
  template <class... Args>
  void execute(const char* sql, const Args&... args);
  void trim_events(std::int64_t now_ms);

  // Constant after construction.
  const StoreOptions options_;
  const bool read_only_;  // on a read-only file system: served, never written

  // Mutable state: writer_ belongs to whichever thread calls write(), reader_ to events().
  SQLite::Database writer_;
  std::mutex reader_mutex_;
  SQLite::Database reader_;
  std::map<const char*, std::unique_ptr<SQLite::Statement>> statements_;  // the writer's
};

}  // namespace warden
