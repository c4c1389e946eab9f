// `wardenctl run -- CMD ARGS...`: runs a command as a supervised job, without changing its code.
#pragma once

#include <string>
#include <vector>

#include "warden/client.h"

namespace warden {

struct RunOptions {
  std::vector<std::string> command;
  std::string name;  // default: the command's basename
  double heartbeat_s = 0;
  double grace_s = 5;
  bool keep_tmp = false;
  std::string group;  // keep TMPDIR after a clean end (it is removed after a failure anyway)
};

// wardenctl itself is the job's main process and CMD its registered worker, so that a clean exit
// of CMD is reported as such before wardend could mistake it for a death; if wardenctl is killed,
// wardend cleans the job. CMD runs with WARDEN_JOB, WARDEN_SOCKET and a per-job TMPDIR; SIGINT,
// SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 are forwarded to it. Returns CMD's exit status
// (128+N for a signal, as shells do).
int run_job(Client& client, const RunOptions& options);

}  // namespace warden
