// wardenctl: the command line for wardend. Each subcommand is one request (see PROTOCOL.md).
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <iostream>
#include <map>

#include <CLI/CLI.hpp>

#include "proto/messages.h"
#include "proto/socket_path.h"
#include "warden/client.h"
#include "wardenctl/check_view.h"
#include "wardenctl/cleanup_wait.h"
#include "wardenctl/events_view.h"
#include "wardenctl/gpu_view.h"
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
  std::map<warden::PathKind, std::vector<std::string>> paths;  // --file, --dir, ...
  std::vector<std::string> hooks;
  double hook_timeout_s = 30;
  bool keep_on_success = false;
  std::string group;
  // cleanup
  bool wait = false;
  double wait_timeout_s = 120;
  // events
  std::string since;
  std::size_t limit = 100;
  bool follow = false;
  // run
  warden::RunOptions run;
  // check
  warden::CheckRequest check;
};

// Commands given as one string run through /bin/sh, as a person types them.
warden::CommandSpec shell_command(const std::string& command, double timeout_s) {
  return {.argv = {"/bin/sh", "-c", command}, .timeout_s = timeout_s};
}

int run_add(warden::Client& client, const Options& o) {
  auto policy = o.keep_on_success ? warden::Policy::failure : warden::Policy::always;
  warden::JobId job = *o.job;
  for (pid_t pid : o.pids) client.add_process(job, pid, policy);
  for (const auto& [kind, paths] : o.paths) {
    for (const auto& p : paths)
      client.add_path({.job = job, .kind = kind, .path = p, .policy = policy});
  }
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
    client.follow_events(request, [&](const warden::Event& e) {
      if (o.json) {
        std::cout << warden::to_json(e).dump() << std::endl;
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
    warden::json out = warden::json::array();
    for (const auto& e : events) out.push_back(warden::to_json(e));
    std::cout << out.dump(2) << "\n";
  } else if (events.empty()) {
    std::cout << "no events\n";
  } else {
    for (const auto& e : events) warden::print_event(std::cout, e);
  }
  return 0;
}

int run_gpus(warden::Client& client, const Options& o) {
  warden::GpusReply gpus = client.gpus();
  if (o.json) {
    std::cout << warden::to_json(gpus).dump(2) << "\n";
  } else {
    warden::print_gpus(std::cout, gpus);
  }
  return 0;
}

int run_cleanup(warden::Client& client, const Options& o) {
  warden::CleanupRequest request{.job = o.job, .group = o.group};
  if (o.wait) {
    auto bound = std::chrono::milliseconds(static_cast<long>(o.wait_timeout_s * 1000));
    return warden::cleanup_and_wait(client, request, bound, std::cout);
  }
  std::size_t n = client.cleanup(request);
  if (!o.job) std::cout << "cleaning " << n << " jobs of group " << o.group << "\n";
  return 0;
}

// Where nothing else says (no --socket, no $WARDEN_SOCKET), the socket and timeout come from this
// file: slurmd runs the epilog with no environment but SLURM_*. Keys are the global flags' names.
std::string defaults_file() {
  const char* path = std::getenv("WARDENCTL_CONFIG");
  return path != nullptr && *path != '\0' ? path : "/etc/warden/wardenctl.conf";
}

void read_defaults(const std::string& path, Options& o) {
  CLI::App file;
  file.set_config("--config", path, "", /*config_required=*/false);
  file.allow_config_extras(CLI::config_extras_mode::error);
  std::string socket;
  double timeout_s = o.timeout_s;
  file.add_option("--socket", socket);
  file.add_option("--timeout", timeout_s)->check(CLI::PositiveNumber);
  try {
    file.parse(std::vector<std::string>{});
  } catch (const CLI::ParseError& e) {
    throw std::runtime_error(path + ": " + e.what() + " (keys: socket, timeout)");
  }
  const char* env = std::getenv("WARDEN_SOCKET");
  if (o.socket.empty() && (env == nullptr || *env == '\0')) o.socket = socket;
  o.timeout_s = timeout_s;
}

// Each subcommand with what it does, declared by one add_NAME() below; exactly one is given.
struct Subcommands {
  using Action = int (*)(warden::Client&, Options&);
  struct Entry {
    CLI::App* sub;
    Action action;
    int failed = 1;  // the exit status where wardend cannot answer or refuses
  };
  CLI::App& app;
  Options& options;
  std::vector<Entry> actions;

  CLI::App* add(const char* name, const char* help, Action action, int failed = 1) {
    CLI::App* sub = app.add_subcommand(name, help);
    actions.push_back({sub, action, failed});
    return sub;
  }
};

void add_status(Subcommands& table) {
  Options& o = table.options;
  auto* status = table.add("status", "Show jobs, or one job with its cleanup report",
                           [](warden::Client& c, Options& o) { return run_status(c, o); });
  status->add_flag("--json", o.json, "Print JSON instead of a table");
  status->add_option("JOB", o.job, "A job id");
}

void add_events(Subcommands& table) {
  Options& o = table.options;
  auto* events =
      table.add("events", "Show the history of your jobs: state changes and cleanup reports",
                [](warden::Client& c, Options& o) { return run_events(c, o); });
  events->add_option("--job", o.job, "Only this job");
  events->add_option("--since", o.since,
                     "From this time on: 90s, 15m, 2h, 3d ago, a date, or epoch seconds "
                     "(default: the latest events)");
  events->add_option("--limit", o.limit, "At most this many events")
      ->check(CLI::Range(std::size_t{1}, static_cast<std::size_t>(warden::kMaxEventsPerReply)))
      ->capture_default_str();
  events->add_flag("--json", o.json, "Print JSON (with --follow: one JSON object per line)");
  events->add_flag("--follow,-f", o.follow, "Keep printing new events as they happen");
}

void add_gpus(Subcommands& table) {
  Options& o = table.options;
  auto* gpus = table.add(
      "gpus", "Show the node's GPUs and every process holding one, by job (untracked: no job's)",
      [](warden::Client& c, Options& o) { return run_gpus(c, o); });
  gpus->add_flag("--json", o.json, "Print JSON instead of a table");
}

int run_check(warden::Client& client, const Options& o) {
  warden::CheckReply reply = client.check(o.check);
  if (o.json) {
    std::cout << warden::to_json(reply).dump(2) << "\n";
    return reply.clean ? warden::kCheckClean : warden::kCheckDirty;
  }
  return warden::print_check(std::cout, reply);
}

void add_check(Subcommands& table) {
  Options& o = table.options;
  auto* check = table.add(
      "check",
      "Is this node clean for the next job? Exit 0: clean; 1: not (one line per finding, with "
      "what to do); 2: cannot tell (wardend unreachable, and why)",
      [](warden::Client& c, Options& o) { return run_check(c, o); }, warden::kCheckUnknown);
  check->add_flag("--json", o.json, "Print the findings as JSON");
  check->add_flag("--reclaim", o.check.reclaim,
                  "First end stray GPU holders (SIGTERM, --grace, SIGKILL) and remove what is safe "
                  "to remove (root); what cannot be reclaimed keeps exit status 1");
  check->add_option("--grace", o.check.grace_s, "With --reclaim: seconds between SIGTERM and SIGKILL")
      ->check(CLI::Range(0.0, warden::kMaxCheckGraceS))
      ->capture_default_str();
}

void add_metrics(Subcommands& table) {
  table.add("metrics", "Print wardend's metrics (Prometheus text format)",
            [](warden::Client& c, Options&) {
              std::cout << c.metrics();
              return 0;
            });
}

void add_register(Subcommands& table) {
  Options& o = table.options;
  auto* reg =
      table.add("register", "Register a job; prints its id", [](warden::Client& c, Options& o) {
        o.registration.group = o.group;
        if (!o.diagnose.empty()) {
          o.registration.diagnose = shell_command(o.diagnose, o.diagnose_timeout_s);
        }
        std::cout << c.register_job(o.registration) << "\n";
        return 0;
      });
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
  reg->add_option("--diagnose-timeout", o.diagnose_timeout_s,
                  "Seconds the diagnose command may run")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  reg->add_option(
      "--group", o.group,
      "The cluster job it belongs to (default: $SLURM_JOB_ID, else $TORCHELASTIC_RUN_ID)");
}

void add_cleanup(Subcommands& table) {
  Options& o = table.options;
  auto* cleanup =
      table.add("cleanup",
                "Clean a job, or every job of a group, now: as if it failed, main process included",
                [](warden::Client& c, Options& o) { return run_cleanup(c, o); });
  cleanup->add_option("JOB", o.job, "A job id");
  cleanup->add_option("--group", o.group, "Every job of this group (e.g. a Slurm job id)");
  cleanup->add_flag("--wait", o.wait,
                    "Return once every job is cleaned and no process of it that outlived SIGKILL "
                    "holds a GPU; exit status 3 (and which) if that did not happen in time");
  cleanup
      ->add_option("--timeout", o.wait_timeout_s,
                   "With --wait: seconds to wait at most (wardenctl's own --timeout, given "
                   "before `cleanup`, bounds each answer from wardend)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cleanup->callback([&o] {
    if (o.job.has_value() == !o.group.empty()) {
      throw CLI::ValidationError("cleanup", "give a JOB or --group, not both");
    }
  });
}

void add_add(Subcommands& table) {
  Options& o = table.options;
  auto* add = table.add("add", "Register what a job must not leave behind",
                        [](warden::Client& c, Options& o) { return run_add(c, o); });
  add->add_option("--job", o.job, "The job id")->required();
  add->add_option("--pid", o.pids, "A worker process (its descendants come with it)");
  std::string given = "--pid";
  for (const auto& kind : warden::path_kinds()) {
    std::string flag = "--" + std::string(kind.name);
    std::replace(flag.begin(), flag.end(), '_', '-');
    add->add_option(flag, o.paths[kind.kind], std::string(kind.help));
    given += ", " + flag;
  }
  add->add_option("--hook", o.hooks, "A shell command to run as you at cleanup");
  add->add_option("--hook-timeout", o.hook_timeout_s, "Seconds a hook may run")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  add->add_flag("--keep-on-success", o.keep_on_success,
                "Clean these only if the job fails (keep them after a clean end)");
  add->callback([&o, given] {
    bool no_path = std::all_of(o.paths.begin(), o.paths.end(),
                               [](const auto& kind) { return kind.second.empty(); });
    if (o.pids.empty() && no_path && o.hooks.empty()) {
      throw CLI::ValidationError("add", "give at least one of " + given + " or --hook");
    }
  });
}

void add_beat(Subcommands& table) {
  Options& o = table.options;
  auto* beat = table.add("beat", "Send a job's heartbeat", [](warden::Client& c, Options& o) {
    c.heartbeat(*o.job);
    return 0;
  });
  beat->add_option("--job", o.job, "The job id")->required();
}

void add_end(Subcommands& table) {
  Options& o = table.options;
  auto* end =
      table.add("end", "End a job and clean what it registered", [](warden::Client& c, Options& o) {
        c.end_job(*o.job, !o.failed);
        return 0;
      });
  end->add_option("--job", o.job, "The job id")->required();
  end->add_flag("--failed", o.failed, "The job failed: terminate and remove everything");
}

void add_run(Subcommands& table) {
  Options& o = table.options;
  auto* run = table.add(
      "run", "Run a command as a job: its process tree and TMPDIR are cleaned however it ends",
      [](warden::Client& c, Options& o) {
        if (o.run.name.empty()) o.run.name = std::filesystem::path(o.run.command[0]).filename();
        o.run.group = o.group;
        return warden::run_job(c, o.run);
      });
  run->add_option("--name", o.run.name, "A name for people (default: the command)");
  run->add_option("--heartbeat", o.run.heartbeat_s,
                  "Seconds without a heartbeat (wardenctl beat) before the job counts as stalled")
      ->check(CLI::NonNegativeNumber);
  run->add_option("--grace", o.run.grace_s, "Seconds between SIGTERM and SIGKILL")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  run->add_flag("--keep-tmp", o.run.keep_tmp, "Keep TMPDIR after a clean exit");
  run->add_option(
      "--group", o.group,
      "The cluster job it belongs to (default: $SLURM_JOB_ID, else $TORCHELASTIC_RUN_ID)");
  run->add_option("command", o.run.command, "The command and its arguments, after --")->required();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"wardenctl: register training jobs with wardend and inspect them", "wardenctl"};
  app.set_version_flag("--version", "wardenctl " WARDEN_VERSION);
  app.require_subcommand(1);
  app.footer("Defaults for --socket and --timeout: " + defaults_file() +
             " (WARDENCTL_CONFIG names another), e.g. socket = \"/run/warden/warden.sock\"");
  Options o;
  app.add_option("--socket", o.socket,
                 "wardend's socket (default: $WARDEN_SOCKET, then " +
                     std::string(warden::kSystemSocketPath) + ")");
  CLI::Option* timeout_flag =
      app.add_option(
             "--timeout", o.timeout_s,
             "Seconds to wait for wardend (to connect, and for each answer) before giving up")
          ->check(CLI::PositiveNumber)
          ->capture_default_str();

  Subcommands table{app, o};
  add_status(table);
  add_events(table);
  add_gpus(table);
  add_metrics(table);
  add_check(table);
  add_register(table);
  add_cleanup(table);
  add_add(table);
  add_beat(table);
  add_end(table);
  add_run(table);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  try {
    Options from_file = o;
    read_defaults(defaults_file(), from_file);
    o.socket = from_file.socket;
    if (timeout_flag->count() == 0) o.timeout_s = from_file.timeout_s;
  } catch (const std::exception& e) {
    std::cerr << "wardenctl: " << e.what() << "\n";
    return 2;
  }

  // A reclaim's answer comes after its grace and, for what ignores SIGTERM, SIGKILL's wait.
  constexpr double kKillAllowanceS = 15;
  if (o.check.reclaim) o.timeout_s += o.check.grace_s + kKillAllowanceS;
  const Subcommands::Entry* chosen = nullptr;
  for (const auto& entry : table.actions) {
    if (entry.sub->parsed()) chosen = &entry;
  }
  try {
    warden::Client client(
        o.socket, {.timeout = std::chrono::milliseconds(static_cast<long>(o.timeout_s * 1000))});
    return chosen->action(client, o);
  } catch (const warden::Error& e) {
    std::cerr << "wardenctl: " << warden::to_string(e.code()) << ": " << e.what() << "\n";
    return chosen->failed;
  }
}
