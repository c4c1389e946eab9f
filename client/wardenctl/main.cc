// wardenctl: the command line for wardend. Each subcommand is one request (see PROTOCOL.md).
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <iostream>

#include "proto/socket_path.h"
#include "warden/client.h"
#include "wardenctl/status_view.h"

namespace {

struct Options {
  std::string socket;
  bool json = false;
  std::optional<warden::JobId> job;
  pid_t pid = 0;
  warden::RegisterJobRequest registration;
  bool failed = false;
};

int run_status(warden::Client& client, const Options& o) {
  auto jobs = client.status(o.job);
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

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"wardenctl: register training jobs with wardend and inspect them", "wardenctl"};
  app.set_version_flag("--version", "wardenctl " WARDEN_VERSION);
  app.require_subcommand(1);
  Options o;
  app.add_option("--socket", o.socket, "wardend's socket (default: $WARDEN_SOCKET, then " +
                                           std::string(warden::kSystemSocketPath) + ")");

  auto* status = app.add_subcommand("status", "Show jobs, or one job with its cleanup report");
  status->add_flag("--json", o.json, "Print JSON instead of a table");
  status->add_option("JOB", o.job, "A job id");

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

  auto* add = app.add_subcommand("add", "Track a worker process of a job");
  add->add_option("--job", o.job, "The job id")->required();
  add->add_option("--pid", o.pid, "The worker's pid")->required();

  auto* beat = app.add_subcommand("beat", "Send a job's heartbeat");
  beat->add_option("--job", o.job, "The job id")->required();

  auto* end = app.add_subcommand("end", "End a job and clean what it registered");
  end->add_option("--job", o.job, "The job id")->required();
  end->add_flag("--failed", o.failed, "The job failed: terminate and remove everything");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  try {
    warden::Client client(o.socket);
    if (status->parsed()) return run_status(client, o);
    if (reg->parsed()) {
      std::cout << client.register_job(o.registration) << "\n";
    } else if (add->parsed()) {
      client.add_process(*o.job, o.pid);
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
