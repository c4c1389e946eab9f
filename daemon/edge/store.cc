#include "edge/store.h"

#include <sys/statvfs.h>

#include <algorithm>
#include <filesystem>

#include <SQLiteCpp/Statement.h>
#include <SQLiteCpp/Transaction.h>
#include <SQLiteCpp/VariadicBind.h>
#include <fmt/format.h>
#include <sqlite3.h>

#include "core/wall_clock.h"

namespace warden {
namespace {

// Bumped whenever the schema changes; a store from a newer wardend is refused, not guessed at.
constexpr int kSchemaVersion = 4;

constexpr const char* kSchema = R"sql(
CREATE TABLE meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL) STRICT;
CREATE TABLE jobs(
  id INTEGER PRIMARY KEY, uid INTEGER NOT NULL, gid INTEGER NOT NULL, spec TEXT NOT NULL,
  main_pid INTEGER NOT NULL, main_start INTEGER NOT NULL, main_uid INTEGER NOT NULL,
  main_pidfs_inode INTEGER NOT NULL,
  state TEXT NOT NULL, reason TEXT, reason_detail TEXT NOT NULL,
  cleanup_includes_main INTEGER NOT NULL, created_unix_ms INTEGER NOT NULL,
  finished_unix_ms INTEGER, report TEXT, cgroup TEXT NOT NULL DEFAULT '',
  more_cgroups TEXT NOT NULL DEFAULT '[]') STRICT;
CREATE TABLE processes(
  job INTEGER NOT NULL, pid INTEGER NOT NULL, start_time INTEGER NOT NULL, uid INTEGER NOT NULL,
  pidfs_inode INTEGER NOT NULL, policy TEXT NOT NULL, PRIMARY KEY(job, pid, start_time))
  STRICT, WITHOUT ROWID;
CREATE TABLE paths(
  job INTEGER NOT NULL, kind TEXT NOT NULL, path TEXT NOT NULL, dev INTEGER NOT NULL,
  ino INTEGER NOT NULL, uid INTEGER NOT NULL, type INTEGER NOT NULL, policy TEXT NOT NULL,
  PRIMARY KEY(job, kind, path)) STRICT, WITHOUT ROWID;
CREATE TABLE hooks(
  seq INTEGER PRIMARY KEY, job INTEGER NOT NULL, command TEXT NOT NULL, policy TEXT NOT NULL,
  run TEXT NOT NULL DEFAULT '') STRICT;
CREATE INDEX hooks_by_job ON hooks(job);
CREATE TABLE events(
  seq INTEGER PRIMARY KEY, unix_ms INTEGER NOT NULL, job INTEGER NOT NULL, uid INTEGER NOT NULL,
  body TEXT NOT NULL) STRICT;
CREATE INDEX events_by_job ON events(job);
)sql";

// What each schema version adds to the one before, applied in one transaction at start.
constexpr const char* kMigrations[] = {
    nullptr,  // version 1: the first
    // 2: a job's tracking cgroup ('' for jobs tracked by scanning).
    "ALTER TABLE jobs ADD COLUMN cgroup TEXT NOT NULL DEFAULT ''",
    // 3: its leaves beneath other cgroups, for registered processes outside the main's (JSON).
    "ALTER TABLE jobs ADD COLUMN more_cgroups TEXT NOT NULL DEFAULT '[]'",
    // 4: how far a cleanup got with each hook: '' not started, 'started', or its report (JSON).
    "ALTER TABLE hooks ADD COLUMN run TEXT NOT NULL DEFAULT ''",
};
static_assert(std::size(kMigrations) == kSchemaVersion);

// SQLite integers are signed 64-bit; pids, uids, inodes and start times all fit.
template <class T>
std::int64_t i64(T value) {
  return static_cast<std::int64_t>(value);
}

json spec_to_json(const JobSpec& spec) {
  json j{{"name", spec.name},
         {"heartbeat_s", to_seconds(spec.heartbeat)},
         {"grace_s", to_seconds(spec.grace)},
         {"kill_main_on_stall", spec.kill_main_on_stall},
         {"group", spec.group}};
  if (spec.diagnose) j["diagnose"] = to_json(*spec.diagnose);
  if (spec.discover) j["discover"] = to_string(*spec.discover);
  if (spec.home) {
    j["home"] = {{"pid_ns", spec.home->pid_ns},
                 {"mount_ns", spec.home->mount_ns},
                 {"root_dev", spec.home->root_dev},
                 {"root_ino", spec.home->root_ino}};
  }
  return j;
}

JobSpec spec_from_json(const json& j) {
  JobSpec spec{.name = j.at("name").get<std::string>(),
               .heartbeat = from_seconds(j.at("heartbeat_s").get<double>()),
               .grace = from_seconds(j.at("grace_s").get<double>()),
               .kill_main_on_stall = j.at("kill_main_on_stall").get<bool>(),
               .group = j.value("group", "")};
  if (j.contains("diagnose")) spec.diagnose = parse_command(j["diagnose"]);
  if (j.contains("discover")) spec.discover = discover_from_string(j.value("discover", ""));
  if (j.contains("home")) {
    const json& h = j["home"];
    spec.home = JobHome{.pid_ns = h.at("pid_ns").get<std::uint64_t>(),
                        .mount_ns = h.at("mount_ns").get<std::uint64_t>(),
                        .root_dev = h.at("root_dev").get<std::uint64_t>(),
                        .root_ino = h.at("root_ino").get<std::uint64_t>()};
  }
  return spec;
}

}  // namespace

namespace {

template <class T>
T enum_column(const SQLite::Column& column, std::optional<T> (*parse)(std::string_view),
              const char* what) {
  auto value = parse(column.getString());
  if (!value) throw StoreError(std::string("unknown ") + what + " '" + column.getString() + "'");
  return *value;
}

bool on_read_only_file_system(const std::string& path) {
  std::string dir = std::filesystem::path(path).parent_path();
  struct statvfs vfs {};
  return ::statvfs(dir.empty() ? "." : dir.c_str(), &vfs) == 0 && (vfs.f_flag & ST_RDONLY) != 0;
}

// Normally the file itself, read-write for the writer. On a read-only file system SQLite can
// neither lock the file nor keep its -shm there, so the file is opened as immutable; without a
// file there is nothing to read, and an empty store in memory stands in (every write is refused).
SQLite::Database open_database(const std::string& path, bool read_only, bool writer) {
  if (!read_only) {
    return SQLite::Database(
        path, (writer ? SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE : SQLite::OPEN_READONLY) |
                  SQLite::OPEN_NOFOLLOW);
  }
  if (!std::filesystem::exists(path)) {
    SQLite::Database empty(":memory:", SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE);
    empty.exec(kSchema);
    empty.exec("PRAGMA user_version=" + std::to_string(kSchemaVersion));
    return empty;
  }
  std::string uri = "file:";
  for (char c : path) {
    if (c == '%' || c == '?' || c == '#') {
      uri += fmt::format("%{:02X}", static_cast<unsigned char>(c));
    } else {
      uri += c;
    }
  }
  return SQLite::Database(uri + "?immutable=1", SQLite::OPEN_READONLY | SQLite::OPEN_URI);
}

std::string corrupt_message(const std::string& path, const std::string& what) {
  return "the state store " + path + " cannot be read (" + what +
         "). wardend will not start over jobs it cannot read: restore the file from a backup, "
         "or move it aside (mv " +
         path + " " + path + ".bad) to start with no jobs";
}

}  // namespace

JobRecord job_record(const Job& job) {
  JobRecord r{.id = job.id,
              .uid = job.uid,
              .gid = job.gid,
              .spec = job.spec,
              .main = job.main,
              .state = job.state,
              .reason = job.reason,
              .reason_detail = job.reason_detail,
              .cleanup_includes_main = job.cleanup_includes_main,
              .created_unix_ms = to_unix_ms(job.created),
              .report = job.state == JobState::cleaning ? job.progress : job.report,
              .cgroup = job.cgroup,
              .more_cgroups = job.more_cgroups};
  if (job.state == JobState::cleaned) r.finished_unix_ms = to_unix_ms(job.finished);
  return r;
}

Event event_record(const Job& job) {
  return {.unix_ms = unix_ms_now(),
          .job = job.id,
          .uid = job.uid,
          .name = job.spec.name,
          .state = job.state,
          .reason = job.reason,
          .reason_detail = job.reason_detail,
          .report = job.state == JobState::cleaned ? job.report : std::nullopt};
}

Store::Store(StoreOptions options) try
    : options_(options),
      read_only_(on_read_only_file_system(options_.path)),
      writer_(open_database(options_.path, read_only_, /*writer=*/true)),
      reader_(open_database(options_.path, read_only_, /*writer=*/false)) {
  if (!read_only_) {
    // A write reports durable only once it is in the WAL on disk; readers never block the writer.
    writer_.exec("PRAGMA journal_mode=WAL");
    writer_.exec("PRAGMA synchronous=FULL");
    writer_.setBusyTimeout(5000);
    reader_.setBusyTimeout(5000);
  }

  int version = writer_.execAndGet("PRAGMA user_version").getInt();
  if (version == 0) {
    if (writer_.execAndGet("SELECT count(*) FROM sqlite_schema").getInt() != 0) {
      throw StoreError(corrupt_message(options_.path, "it holds tables that are not warden's"));
    }
    SQLite::Transaction create(writer_);
    writer_.exec(kSchema);
    writer_.exec("PRAGMA user_version=" + std::to_string(kSchemaVersion));
    create.commit();
  } else if (version < kSchemaVersion && !read_only_) {
    SQLite::Transaction migrate(writer_);
    for (int v = version + 1; v <= kSchemaVersion; ++v) writer_.exec(kMigrations[v - 1]);
    writer_.exec("PRAGMA user_version=" + std::to_string(kSchemaVersion));
    migrate.commit();
  } else if (version < kSchemaVersion) {
    throw StoreError(
        "the state store " + options_.path + " has schema version " + std::to_string(version) +
        " and lies on a read-only file system, so it "
        "cannot be upgraded to version " +
        std::to_string(kSchemaVersion) + "; start this wardend once with the directory writable");
  } else if (version != kSchemaVersion) {
    throw StoreError("the state store " + options_.path + " has schema version " +
                     std::to_string(version) + ", written by a newer wardend (this one knows " +
                     std::to_string(kSchemaVersion) +
                     "); run that version, or move the file aside");
  }
  std::string check = writer_.execAndGet("PRAGMA quick_check").getString();
  if (check != "ok") throw StoreError(corrupt_message(options_.path, check));
} catch (const SQLite::Exception& e) {
  throw StoreError(corrupt_message(options.path, e.what()));
}

namespace {

// The jobs table, by id, without their processes, paths and hooks.
std::map<JobId, Job> load_jobs(SQLite::Database& db) {
  std::map<JobId, Job> jobs;
  SQLite::Statement rows(
      db,
      "SELECT id, uid, gid, spec, main_pid, main_start, main_uid, state, reason, "
      "reason_detail, cleanup_includes_main, created_unix_ms, finished_unix_ms, "
      "report, main_pidfs_inode, cgroup, more_cgroups FROM jobs ORDER BY id");
  while (rows.executeStep()) {
    Job job;
    job.id = static_cast<JobId>(rows.getColumn(0).getInt64());
    job.uid = static_cast<uid_t>(rows.getColumn(1).getInt64());
    job.gid = static_cast<gid_t>(rows.getColumn(2).getInt64());
    job.spec = spec_from_json(json::parse(rows.getColumn(3).getString()));
    job.main = {.pid = rows.getColumn(4).getInt(),
                .start_time = static_cast<std::uint64_t>(rows.getColumn(5).getInt64()),
                .uid = static_cast<uid_t>(rows.getColumn(6).getInt64()),
                .pidfs_inode = static_cast<std::uint64_t>(rows.getColumn(14).getInt64())};
    job.state = enum_column(rows.getColumn(7), job_state_from_string, "job state");
    if (!rows.getColumn(8).isNull()) {
      job.reason = enum_column(rows.getColumn(8), job_state_from_string, "job state");
    }
    job.reason_detail = rows.getColumn(9).getString();
    job.cleanup_includes_main = rows.getColumn(10).getInt() != 0;
    job.created = from_unix_ms(rows.getColumn(11).getInt64());
    if (!rows.getColumn(12).isNull()) job.finished = from_unix_ms(rows.getColumn(12).getInt64());
    if (!rows.getColumn(13).isNull()) {
      // A cleaning job's row holds what its cleanup had done when it was last written.
      (job.state == JobState::cleaning ? job.progress : job.report) =
          from_json<CleanupReport>(json::parse(rows.getColumn(13).getString()));
    }
    job.cgroup = rows.getColumn(15).getString();
    job.more_cgroups = json::parse(rows.getColumn(16).getString()).get<std::vector<std::string>>();
    jobs.emplace(job.id, std::move(job));
  }
  return jobs;
}

void load_processes(SQLite::Database& db, std::map<JobId, Job>& jobs) {
  // Processes and paths come back in key order, not registration order; nothing depends on it.
  SQLite::Statement processes(
      db, "SELECT job, pid, start_time, uid, policy, pidfs_inode FROM processes");
  while (processes.executeStep()) {
    auto it = jobs.find(static_cast<JobId>(processes.getColumn(0).getInt64()));
    if (it == jobs.end()) continue;  // a forgotten job's rows, removed with it
    it->second.workers.push_back(
        {.identity = {.pid = processes.getColumn(1).getInt(),
                      .start_time = static_cast<std::uint64_t>(processes.getColumn(2).getInt64()),
                      .uid = static_cast<uid_t>(processes.getColumn(3).getInt64()),
                      .pidfs_inode = static_cast<std::uint64_t>(processes.getColumn(5).getInt64())},
         .policy = enum_column(processes.getColumn(4), policy_from_string, "policy")});
  }
}

void load_paths(SQLite::Database& db, std::map<JobId, Job>& jobs) {
  SQLite::Statement paths(db, "SELECT job, kind, path, dev, ino, uid, type, policy FROM paths");
  while (paths.executeStep()) {
    auto it = jobs.find(static_cast<JobId>(paths.getColumn(0).getInt64()));
    if (it == jobs.end()) continue;
    it->second.paths.push_back(
        {.kind = enum_column(paths.getColumn(1), path_kind_from_string, "path kind"),
         .path = paths.getColumn(2).getString(),
         .identity = {.dev = static_cast<dev_t>(paths.getColumn(3).getInt64()),
                      .ino = static_cast<ino_t>(paths.getColumn(4).getInt64()),
                      .uid = static_cast<uid_t>(paths.getColumn(5).getInt64()),
                      .type = static_cast<mode_t>(paths.getColumn(6).getInt64())},
         .policy = enum_column(paths.getColumn(7), policy_from_string, "policy")});
  }
}

void load_hooks(SQLite::Database& db, std::map<JobId, Job>& jobs) {
  SQLite::Statement hooks(db, "SELECT job, command, policy, run FROM hooks ORDER BY seq");
  while (hooks.executeStep()) {
    auto it = jobs.find(static_cast<JobId>(hooks.getColumn(0).getInt64()));
    if (it == jobs.end()) continue;
    TrackedHook& hook = it->second.hooks.emplace_back(
        TrackedHook{.command = parse_command(json::parse(hooks.getColumn(1).getString())),
                    .policy = enum_column(hooks.getColumn(2), policy_from_string, "policy")});
    std::string run = hooks.getColumn(3).getString();
    hook.started = !run.empty();
    if (run.starts_with('{')) hook.finished = from_json<CommandReport>(json::parse(run));
  }
}

}  // namespace

StoredState Store::load() try {
  StoredState state;
  SQLite::Statement next(writer_, "SELECT value FROM meta WHERE key = 'next_job_id'");
  if (next.executeStep()) state.next_id = static_cast<JobId>(next.getColumn(0).getInt64());
  std::map<JobId, Job> jobs = load_jobs(writer_);
  load_processes(writer_, jobs);
  load_paths(writer_, jobs);
  load_hooks(writer_, jobs);
  for (auto& [id, job] : jobs) state.jobs.push_back(std::move(job));
  return state;
} catch (const StoreError& e) {
  throw StoreError(corrupt_message(options_.path, e.what()));
} catch (const std::exception& e) {
  // SQLite errors, JSON that does not parse, a command that no longer validates.
  throw StoreError(corrupt_message(options_.path, e.what()));
}

void Store::write(std::vector<Record>& records) {
  if (read_only_) {
    throw std::runtime_error("the state directory of " + options_.path +
                             " is on a read-only file system");
  }
  SQLite::Transaction transaction(writer_);
  bool events = false;
  for (auto& record : records) {
    apply(record);
    events = events || std::holds_alternative<Event>(record);
  }
  if (events) trim_events(options_.now_unix_ms());
  transaction.commit();
}

void Store::apply(Record& record) {
  std::visit([this](auto& r) { write(r); }, record);
}

void Store::write(const JobRecord& r) {
  SQLite::Statement& s = prepared(
      "INSERT OR REPLACE INTO jobs(id, uid, gid, spec, main_pid, main_start, main_uid, "
      "main_pidfs_inode, state, reason, reason_detail, cleanup_includes_main, "
      "created_unix_ms, finished_unix_ms, report, cgroup, more_cgroups) "
      "VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
  s.bind(1, i64(r.id));
  s.bind(2, r.uid);
  s.bind(3, r.gid);
  s.bind(4, spec_to_json(r.spec).dump());
  s.bind(5, i64(r.main.pid));
  s.bind(6, i64(r.main.start_time));
  s.bind(7, i64(r.main.uid));
  s.bind(8, i64(r.main.pidfs_inode));
  s.bind(9, std::string(to_string(r.state)));
  if (r.reason) s.bind(10, std::string(to_string(*r.reason)));
  s.bind(11, r.reason_detail);
  s.bind(12, r.cleanup_includes_main ? 1 : 0);
  s.bind(13, r.created_unix_ms);
  if (r.finished_unix_ms) s.bind(14, *r.finished_unix_ms);
  if (r.report) s.bind(15, to_json(*r.report).dump(-1, ' ', false, json::error_handler_t::replace));
  s.bind(16, r.cgroup);
  s.bind(17, json(r.more_cgroups).dump());
  s.exec();
}

void Store::write(const JobForgotten& r) {
  for (const char* sql : {"DELETE FROM jobs WHERE id = ?", "DELETE FROM processes WHERE job = ?",
                          "DELETE FROM paths WHERE job = ?", "DELETE FROM hooks WHERE job = ?"}) {
    execute(sql, i64(r.id));
  }
}

void Store::write(const ProcessRecord& r) {
  const ProcessIdentity& p = r.process.identity;
  execute(
      "INSERT OR REPLACE INTO processes(job, pid, start_time, uid, pidfs_inode, policy) "
      "VALUES(?, ?, ?, ?, ?, ?)",
      i64(r.job), i64(p.pid), i64(p.start_time), i64(p.uid), i64(p.pidfs_inode),
      std::string(to_string(r.process.policy)));
}

void Store::write(const PathRecord& r) {
  const PathIdentity& id = r.path.identity;
  execute(
      "INSERT OR REPLACE INTO paths(job, kind, path, dev, ino, uid, type, policy) "
      "VALUES(?, ?, ?, ?, ?, ?, ?, ?)",
      i64(r.job), std::string(to_string(r.path.kind)), r.path.path, i64(id.dev), i64(id.ino),
      i64(id.uid), i64(id.type), std::string(to_string(r.path.policy)));
}

void Store::write(const HookRecord& r) {
  execute("INSERT INTO hooks(job, command, policy) VALUES(?, ?, ?)", i64(r.job),
          to_json(r.hook.command).dump(), std::string(to_string(r.hook.policy)));
}

void Store::write(const HookRun& r) {
  execute(
      "UPDATE hooks SET run = ? WHERE seq = (SELECT seq FROM hooks WHERE job = ? ORDER BY "
      "seq LIMIT 1 OFFSET ?)",
      r.report ? to_json(*r.report).dump(-1, ' ', false, json::error_handler_t::replace)
               : std::string("started"),
      i64(r.job), i64(r.index));
}

// The event's sequence number is the row's: it is given back in `r`.
void Store::write(Event& r) {
  execute("INSERT INTO events(unix_ms, job, uid, body) VALUES(?, ?, ?, ?)", r.unix_ms, i64(r.job),
          r.uid, to_json(r).dump(-1, ' ', false, json::error_handler_t::replace));
  r.seq = writer_.getLastInsertRowid();
}

void Store::write(const NextJobId& r) {
  execute("INSERT OR REPLACE INTO meta VALUES('next_job_id', ?)", i64(r.value));
}

template <class... Args>
void Store::execute(const char* sql, const Args&... args) {
  SQLite::Statement& s = prepared(sql);
  SQLite::bind(s, args...);
  s.exec();
}

SQLite::Statement& Store::prepared(const char* sql) {
  auto& statement = statements_[sql];
  if (!statement) {
    statement = std::make_unique<SQLite::Statement>(writer_, sql);
  } else {
    statement->reset();
    statement->clearBindings();
  }
  return *statement;
}

void Store::trim_events(std::int64_t now_ms) {
  // Both bounds delete from the oldest end, which seq order reaches first.
  SQLite::Statement& by_count =
      prepared("DELETE FROM events WHERE seq <= (SELECT max(seq) FROM events) - ?");
  by_count.bind(1, options_.events_max_count);
  by_count.exec();
  SQLite::Statement& by_age = prepared(
      "DELETE FROM events WHERE seq < (SELECT seq FROM events WHERE unix_ms >= ? ORDER BY seq "
      "LIMIT 1)");
  by_age.bind(1, now_ms - options_.events_max_age_ms);
  by_age.exec();
}

std::vector<json> Store::events(const EventQuery& q) {
  std::lock_guard lock(reader_mutex_);
  // Without a starting point, the latest `limit` events (newest first here, reversed below).
  bool latest = !q.since_unix_ms && !q.after_seq;
  std::string sql =
      "SELECT seq, body FROM events WHERE (?1 IS NULL OR uid = ?1) AND (?2 IS NULL OR job = ?2) "
      "AND unix_ms >= ?3 AND seq > ?4 ORDER BY seq " +
      std::string(latest ? "DESC" : "ASC") + " LIMIT ?5";
  SQLite::Statement s(reader_, sql);
  if (q.uid) s.bind(1, *q.uid);
  if (q.job) s.bind(2, i64(*q.job));
  s.bind(3, std::max(q.since_unix_ms.value_or(0),
                     options_.now_unix_ms() - options_.events_max_age_ms));
  s.bind(4, q.after_seq.value_or(0));
  s.bind(5, i64(q.limit));
  std::vector<json> out;
  while (s.executeStep()) {
    json event = json::parse(s.getColumn(1).getString(), nullptr, /*allow_exceptions=*/false);
    if (event.is_discarded()) continue;
    event["seq"] = s.getColumn(0).getInt64();
    out.push_back(std::move(event));
  }
  if (latest) std::reverse(out.begin(), out.end());
  return out;
}

}  // namespace warden
