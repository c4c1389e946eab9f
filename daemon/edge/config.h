// wardend's configuration: every setting is both a command-line flag and a key of the config file.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "world/cleanup.h"
#include "world/node_check.h"
#include "edge/connection_limits.h"
#include "core/supervisor.h"

namespace warden {

struct Config {
  std::string socket;     // where to listen
  std::string state_dir;  // where wardend keeps its state (and its lock)
  bool durable = true;    // record jobs in STATE_DIR/warden.db and recover them at start
  double events_max_age_days = 7;
  std::int64_t events_max_count = 100'000;
  std::string log_level = "info";
  std::size_t max_frame = kDefaultMaxFrame;
  std::string metrics_listen;  // HOST:PORT on loopback for Prometheus; empty: none
  // "auto": a tracking cgroup per job where cgroup v2 is writable, else scanning /proc at cleanup;
  // "scan": always scanning.
  std::string tracking = "auto";
  SupervisorLimits limits;
  ConnectionLimits connections;
  CleanupOptions cleanup;
  NodeCheckOptions check;
};

// The state directory when none is given: /var/lib/warden for root, else under XDG_STATE_HOME.
std::string default_state_dir();

// Parses wardend's command line (and the file named by --config, whose keys are the long flag
// names: `max-frame = 65536`). Returns nullopt after printing --help; throws std::runtime_error
// with a message for the user on a bad flag, value or file.
std::optional<Config> parse_config(int argc, char** argv);

}  // namespace warden
