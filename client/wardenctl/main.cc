// wardenctl: the command line for wardend. Each subcommand is one request (see PROTOCOL.md).
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <filesystem>
#include <iostream>

#include "proto/socket_path.h"
#include "warden/client.h"
#include "wardenctl/events_view.h"
#include "wardenctl/run.h"
#include "wardenctl/status_view.h"

namespace {

struct Options {
  std::string socket;
  double timeout_s = 5;
  bool json = false;
  std::optional<warden::JobId> job;
  warden::RegisterJobRequest registration;
  std::string diagnose;
  double diagnose_timeout_s = 30;
  bool failed = false;
  // add
  std::vector<pid_t> pids;
  std::vector<std::string> files, dirs, shms, shm_globs, hooks;
  double hook_timeout_s = 30;
  bool keep_on_success = false;
  std::string group;
  // events
  std::string since;
  std::size_t limit = 100;
  bool follow = false;
  // run
  warden::RunOptions run;
};

// Commands given as one string run through /bin/sh, as a person types them.
warden::CommandSpec shell_command(const std::string& command, double timeout_s) {
  return {.argv = {"/bin/sh", "-c", command}, .timeout_s = timeout_s};
}

int run_add(warden::Client& client, const Options& o) {
  auto policy = o.keep_on_success ? warden::Policy::failure : warden::Policy::always;
  warden::JobId job = *o.job;
  for (pid_t pid : o.pids) client.add_process(job, pid, policy);
  auto add_paths = [&](const std::vector<std::string>& paths, warden::PathKind kind) {
    for (const auto& p : paths) client.add_path({.job = job, .kind = kind, .path = p, .policy = policy});
  };
  add_paths(o.files, warden::PathKind::file);
  add_paths(o.dirs, warden::PathKind::dir);
  add_paths(o.shms, warden::PathKind::shm);
  add_paths(o.shm_globs, warden::PathKind::shm_glob);
  for (const auto& h : o.hooks) {
    client.add_hook({.job = job, .hook = shell_command(h, o.hook_timeout_s), .policy = policy});
  }
  return 0;
}

int run_status(warden::Client& client, const Options& o) {
  // The table needs counts only; a detail (or --json) gets everything.
  auto jobs = client.status(o.job, /*summary=*/!o.job && !o.json);
  if (o.json) {
    warden::json out = warden::json::array();
    for (const auto& j : jobs) out.push_back(warden::to_json(j));
    std::cout << (o.job ? out.at(0) : out).dump(2) << "\n";
  } else if (o.job) {
    warden::print_job_detail(std::cout, jobs.at(0));
  } else {
    warden::print_job_table(std::cout, jobs);
  }
  return 0;
}

int run_events(warden::Client& client, const Options& o) {
  warden::EventsRequest request{.job = o.job, .limit = o.limit};
  if (!o.since.empty()) {
    request.since_unix_ms = warden::parse_since(o.since);
    if (!request.since_unix_ms) {
      std::cerr << "wardenctl: --since " << o.since
                << ": give a duration ago (90s, 15m, 2h, 3d), a date (2026-11-28 or "
                   "2026-11-28T14:05:00) or seconds since the epoch\n";
      return 2;
    }
  }
  if (o.follow) {
    // One line per event, as it happens; JSON lines with --json.
    client.follow_events(request, [&](const warden::json& e) {
      if (o.json) {
        std::cout << e.dump() << std::endl;
      } else {
        warden::print_event(std::cout, e);
        std::cout.flush();
      }
      return true;
    });
    return 0;
  }
  auto events = client.events(request);
  if (o.json) {
    std::cout << warden::json(events).dump(2) << "\n";
  } else if (events.empty()) {
    std::cout << "no events\n";
  } else {
    for (const auto& e : events) warden::print_event(std::cout, e);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"wardenctl: register training jobs with wardend and inspect them", "wardenctl"};
  app.set_version_flag("--version", "wardenctl " WARDEN_VERSION);
  app.require_subcommand(1);
  Options o;
  app.add_option("--socket", o.socket, "wardend's socket (default: $WARDEN_SOCKET, then " +
                                           std::string(warden::kSystemSocketPath) + ")");
  app.add_option("--timeout", o.timeout_s,
                 "Seconds to wait for wardend (to connect, and for each answer) before giving up")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();

  auto* status = app.add_subcommand("status", "Show jobs, or one job with its cleanup report");
  status->add_flag("--json", o.json, "Print JSON instead of a table");
  status->add_option("JOB", o.job, "A job id");

  auto* events = app.add_subcommand(
      "events", "Show the history of your jobs: state changes and cleanup reports");
  events->add_option("--job", o.job, "Only this job");
  events->add_option("--since", o.since,
                     "From this time on: 90s, 15m, 2h, 3d ago, a date, or epoch seconds "
                     "(default: the latest events)");
  events->add_option("--limit", o.limit, "At most this many events")
      ->check(CLI::Range(std::size_t{1}, static_cast<std::size_t>(warden::kMaxEventsPerReply)))
      ->capture_default_str();
  events->add_flag("--json", o.json, "Print JSON (with --follow: one JSON object per line)");
  events->add_flag("--follow,-f", o.follow, "Keep printing new events as they happen");

  auto* metrics = app.add_subcommand("metrics", "Print wardend's metrics (Prometheus text format)");

  auto* reg = app.add_subcommand("register", "Register a job; prints its id");
  reg->add_option("--pid", o.registration.pid, "The job's main process")->required();
  reg->add_option("--name", o.registration.name, "A name for people")->required();
  reg->add_option("--heartbeat", o.registration.heartbeat_s,
                  "Seconds without a heartbeat before the job counts as stalled (0: never)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  reg->add_option("--grace", o.registration.grace_s, "Seconds between SIGTERM and SIGKILL")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  reg->add_flag("--kill-main-on-stall", o.registration.kill_main_on_stall,
                "On a stall, terminate the main process too");
  reg->add_option("--diagnose", o.diagnose,
                  "Shell command run at a stall before cleanup; {pid} is the main process, e.g. "
                  "'py-spy dump --pid {pid}'");
  reg->add_option("--diagnose-timeout", o.diagnose_timeout_s, "Seconds the diagnose command may run")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();

  reg->add_option("--group", o.group,
                  "The cluster job it belongs to (default: $SLURM_JOB_ID, else $TORCHELASTIC_RUN_ID)");

  auto* cleanup = app.add_subcommand(
      "cleanup", "Clean a job, or every job of a group, now: as if it failed, main process included");
  cleanup->add_option("JOB", o.job, "A job id");
  cleanup->add_option("--group", o.group, "Every job of this group (e.g. a Slurm job id)");
  cleanup->callback([&] {
    if (o.job.has_value() == !o.group.empty()) {
      throw CLI::ValidationError("cleanup", "give a JOB or --group, not both");
    }
  });

  auto* add = app.add_subcommand("add", "Register what a job must not leave behind");
  add->add_option("--job", o.job, "The job id")->required();
  add->add_option("--pid", o.pids, "A worker process (its descendants come with it)");
  add->add_option("--file", o.files, "A file to remove");
  add->add_option("--dir", o.dirs, "A directory tree to remove");
  add->add_option("--shm", o.shms, "A POSIX shm segment (or sem.NAME semaphore) to unlink");
  add->add_option("--shm-glob", o.shm_globs,
                  "A pattern over your /dev/shm segments to unlink, e.g. 'torch_4312_*'");
  add->add_option("--hook", o.hooks, "A shell command to run as you at cleanup");
  add->add_option("--hook-timeout", o.hook_timeout_s, "Seconds a hook may run")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  add->add_flag("--keep-on-success", o.keep_on_success,
                "Clean these only if the job fails (keep them after a clean end)");
  add->callback([&] {
    if (o.pids.empty() && o.files.empty() && o.dirs.empty() && o.shms.empty() &&
        o.shm_globs.empty() && o.hooks.empty()) {
      throw CLI::ValidationError("add", "give at least one of --pid, --file, --dir, --shm, "
                                        "--shm-glob or --hook");
    }
  });

  auto* beat = app.add_subcommand("beat", "Send a job's heartbeat");
  beat->add_option("--job", o.job, "The job id")->required();

  auto* end = app.add_subcommand("end", "End a job and clean what it registered");
  end->add_option("--job", o.job, "The job id")->required();
  end->add_flag("--failed", o.failed, "The job failed: terminate and remove everything");

  auto* run = app.add_subcommand(
      "run", "Run a command as a job: its process tree and TMPDIR are cleaned however it ends");
  run->add_option("--name", o.run.name, "A name for people (default: the command)");
  run->add_option("--heartbeat", o.run.heartbeat_s,
                  "Seconds without a heartbeat (wardenctl beat) before the job counts as stalled")
      ->check(CLI::NonNegativeNumber);
  run->add_option("--grace", o.run.grace_s, "Seconds between SIGTERM and SIGKILL")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  run->add_flag("--keep-tmp", o.run.keep_tmp, "Keep TMPDIR after a clean exit");
  run->add_option("--group", o.group,
                  "The cluster job it belongs to (default: $SLURM_JOB_ID, else $TORCHELASTIC_RUN_ID)");
  run->add_option("command", o.run.command, "The command and its arguments, after --")->required();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  try {
    warden::Client client(
        o.socket, {.timeout = std::chrono::milliseconds(static_cast<long>(o.timeout_s * 1000))});
    if (status->parsed()) return run_status(client, o);
    if (cleanup->parsed()) {
      std::size_t n = client.cleanup({.job = o.job, .group = o.group});
      if (!o.job) std::cout << "cleaning " << n << " jobs of group " << o.group << "\n";
      return 0;
    }
    if (events->parsed()) return run_events(client, o);
    if (metrics->parsed()) {
      std::cout << client.call({{"op", "metrics"}}).value("text", "");
      return 0;
    }
    if (run->parsed()) {
      if (o.run.name.empty()) o.run.name = std::filesystem::path(o.run.command[0]).filename();
      o.run.group = o.group;
      return warden::run_job(client, o.run);
    }
    if (reg->parsed()) {
      o.registration.group = o.group;
      if (!o.diagnose.empty()) {
        o.registration.diagnose = shell_command(o.diagnose, o.diagnose_timeout_s);
      }
      std::cout << client.register_job(o.registration) << "\n";
    } else if (add->parsed()) {
      return run_add(client, o);
    } else if (beat->parsed()) {
      client.heartbeat(*o.job);
    } else if (end->parsed()) {
      client.end_job(*o.job, !o.failed);
    }
    return 0;
  } catch (const warden::Error& e) {
    std::cerr << "wardenctl: " << warden::to_string(e.code()) << ": " << e.what() << "\n";
    return 1;
  }
}
