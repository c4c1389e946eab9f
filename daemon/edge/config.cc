#include "edge/config.h"

#include <unistd.h>

#include <cstdlib>
#include <iostream>

#include <CLI/CLI.hpp>

#include "proto/socket_path.h"

namespace warden {
namespace {

std::string env_or(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::string(v) : fallback;
}

}  // namespace

std::string default_state_dir() {
  if (::geteuid() == 0) return "/var/lib/warden";
  return env_or("XDG_STATE_HOME", env_or("HOME", "/tmp") + "/.local/state") + "/warden";
}

namespace {

// Durations are seconds in flags and the file; Config holds them as Durations.
struct Seconds {
  double kill_timeout = 0;
  double idle_timeout = 0;
  double request_timeout = 0;
  double check_interval = 0;
};

// Where wardend listens and keeps its state, what it logs, how it knows jobs' processes.
void add_daemon_options(CLI::App& app, Config& c) {
  app.add_option("--socket", c.socket, "Unix socket to listen on")->capture_default_str();
  app.add_option("--state-dir", c.state_dir, "Directory for wardend's state")
      ->capture_default_str();
  app.add_flag("--durable,!--no-durable", c.durable,
               "Record jobs in STATE_DIR/warden.db, so that a restart forgets nothing "
               "(--no-durable: memory only, for tests and benchmarks)")
      ->capture_default_str();
  app.add_option("--events-max-age-days", c.events_max_age_days,
                 "Days the event history keeps a job's state changes and cleanup reports")
      ->check(CLI::Range(0.01, 3650.0))
      ->capture_default_str();
  app.add_option("--events-max-count", c.events_max_count,
                 "Events kept at most, oldest dropped first")
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{100'000'000}))
      ->capture_default_str();
  app.add_option("--metrics-listen", c.metrics_listen,
                 "Serve Prometheus metrics over HTTP at this loopback HOST:PORT, e.g. "
                 "127.0.0.1:9464 (default: none; `wardenctl metrics` always works)");
  app.add_option("--tracking", c.tracking,
                 "How a job's processes are known: auto (a tracking cgroup v2 per job, where the "
                 "hierarchy is writable, else a scan of /proc at cleanup) or scan")
      ->check(CLI::IsMember({"auto", "scan"}))
      ->capture_default_str();
  app.add_option("--log-level", c.log_level, "trace, debug, info, warn, error or off")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}))
      ->capture_default_str();
}

// What one connection, or all of them, may hold.
void add_connection_options(CLI::App& app, Config& c, Seconds& s) {
  app.add_option("--max-frame", c.max_frame, "Largest request line in bytes")
      ->check(CLI::Range(std::size_t{256}, std::size_t{16} << 20))
      ->capture_default_str();
  app.add_option("--max-connections", c.connections.max_connections,
                 "Connections wardend serves at once; more are refused")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--max-connections-per-user", c.connections.max_connections_per_user,
                 "Connections one user may hold at once")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--idle-timeout", s.idle_timeout,
                 "Seconds a connection may stay open with no request under way")
      ->check(CLI::Range(1.0, 7 * 86400.0))
      ->capture_default_str();
  app.add_option("--request-timeout", s.request_timeout,
                 "Seconds a client has to finish sending a request it began, and to take a reply")
      ->check(CLI::Range(0.1, 3600.0))
      ->capture_default_str();
  app.add_option("--max-pending-output", c.connections.max_pending_output,
                 "Reply bytes buffered for one connection before wardend waits for it to read")
      ->check(CLI::Range(std::size_t{4096}, std::size_t{1} << 30))
      ->capture_default_str();
}

// What one user's jobs may hold.
void add_job_options(CLI::App& app, Config& c) {
  app.add_option("--max-jobs-per-user", c.limits.max_jobs_per_user,
                 "Jobs one user may have at once (running or being cleaned)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--max-processes-per-job", c.limits.max_processes_per_job,
                 "Processes one job may register")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--max-path-bytes-per-user", c.limits.max_path_bytes_per_user,
                 "Bytes of path names one user's running jobs may register together")
      ->check(CLI::Range(std::size_t{4096}, std::size_t{1} << 32))
      ->capture_default_str();
  app.add_option("--finished-jobs-kept", c.limits.finished_jobs_kept,
                 "Cleaned jobs kept for status, oldest dropped first")
      ->capture_default_str();
}

// How cleanup goes: where paths may be, segments live, GPUs are, and how long SIGKILL may take.
void add_cleanup_options(CLI::App& app, Config& c, Seconds& s, std::string& discover) {
  app.add_option("--allowed-roots", c.cleanup.paths.allowed_roots,
                 "Directories beneath which jobs may register files and directories")
      ->delimiter(',')
      ->check([](const std::string& root) {
        return root.size() > 1 && root[0] == '/' ? std::string()
                                                 : root + " is not an absolute path";
      })
      ->capture_default_str();
  app.add_option("--shm-dir", c.cleanup.paths.shm_dir, "Where POSIX shm segments live")
      ->capture_default_str();
  app.add_option("--gpu-devices", c.cleanup.gpus.devices,
                 "Device nodes that count as GPUs (glob patterns): a process holds a GPU while it "
                 "has its node open; cleanup reports and `wardenctl gpus` name them")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--nvml-library", c.cleanup.gpus.nvml_library,
                 "NVIDIA's management library, loaded at run time for per-process GPU memory "
                 "figures (empty: never)")
      ->capture_default_str();
  app.add_option("--discover", discover,
                 "What cleanup does with the segments and temp files on the allowed roots that a "
                 "job's processes held open or mapped but it never registered: reclaim (remove "
                 "those certainly the job's), report (list them) or off; a job may choose its own")
      ->check(CLI::IsMember({"reclaim", "report", "off"}))
      ->capture_default_str();
  app.add_option("--kill-timeout", s.kill_timeout,
                 "Seconds a process may survive SIGKILL before it is reported unkillable")
      ->check(CLI::Range(0.1, 600.0))
      ->capture_default_str();
  app.add_option("--report-max-bytes", c.cleanup.max_report_bytes,
                 "Largest cleanup report (JSON bytes): past it, its lists name what fits, problems "
                 "first, and count the rest by outcome")
      ->check(CLI::Range(std::size_t{16 * 1024}, std::size_t{4 << 20}))
      ->capture_default_str();
}

// What makes `wardenctl check` call a node unclean, and how often wardend checks by itself.
void add_check_options(CLI::App& app, Config& c, Seconds& s, double& gpu_unheld_mib) {
  app.add_option("--check-shm-share", c.check.shm_max_share,
                 "The node check calls the shm directory full above this share of its size")
      ->check(CLI::Range(0.01, 1.0))
      ->capture_default_str();
  app.add_option("--check-gpu-unheld-mib", gpu_unheld_mib,
                 "MiB of a GPU's memory in use that no process holds before the node check calls "
                 "it a finding (NVML only)")
      ->check(CLI::Range(0.0, 1e7))
      ->capture_default_str();
  app.add_option("--check-interval", s.check_interval,
                 "Seconds between the node checks wardend makes by itself for the metrics "
                 "(warden_node_clean); 0: only when asked")
      ->check(CLI::Range(0.0, 86400.0))
      ->capture_default_str();
}

}  // namespace

std::optional<Config> parse_config(int argc, char** argv) {
  Config c;
  c.socket = daemon_socket_path();
  c.state_dir = default_state_dir();
  Seconds s{.kill_timeout = to_seconds(c.cleanup.kill_timeout),
            .idle_timeout = to_seconds(c.connections.idle_timeout),
            .request_timeout = to_seconds(c.connections.request_timeout),
            .check_interval = to_seconds(c.check.interval)};
  std::string discover(to_string(c.cleanup.discover));
  double gpu_unheld_mib = static_cast<double>(c.check.gpu_unheld_bytes >> 20);

  CLI::App app{
      "wardend: supervises the workers, files and shared memory of training jobs and cleans "
      "up after them however they end.",
      "wardend"};
  app.set_config("--config", "", "Read settings from this file (keys are the long flag names)");
  // A misspelt key must not silently fall back to a default.
  app.allow_config_extras(CLI::config_extras_mode::error);
  add_daemon_options(app, c);
  add_connection_options(app, c, s);
  add_job_options(app, c);
  add_cleanup_options(app, c, s, discover);
  add_check_options(app, c, s, gpu_unheld_mib);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    app.exit(e);
    return std::nullopt;
  } catch (const CLI::ConfigError& e) {
    throw std::runtime_error("config file: " + std::string(e.what()) +
                             " (keys are wardend's long flag names; see wardend --help)");
  } catch (const CLI::ParseError& e) {
    throw std::runtime_error(e.what() + std::string("; see wardend --help"));
  }
  c.cleanup.kill_timeout = from_seconds(s.kill_timeout);
  c.cleanup.discover = *discover_from_string(discover);
  c.connections.idle_timeout = from_seconds(s.idle_timeout);
  c.connections.request_timeout = from_seconds(s.request_timeout);
  c.check.interval = from_seconds(s.check_interval);
  c.check.gpu_unheld_bytes = static_cast<std::uint64_t>(gpu_unheld_mib * 1048576);
  return c;
}

}  // namespace warden
