// Runs a job's command (a cleanup hook, a stall's diagnose command) as the job's user, with a
// clean environment, a timeout and bounded output. The one place that includes Boost.Process.
#pragma once

#include <sys/types.h>

#include <string>
#include <utility>
#include <vector>

#include <boost/asio/awaitable.hpp>

#include "proto/messages.h"

namespace warden {

struct RunAs {
  uid_t uid = 0;
  gid_t gid = 0;
};

// Where a command runs: where wardend is (the defaults), or where a containerised job is, so that
// its program and files (and, with pid_ns, its pids) are the job's.
struct Place {
  // The job's "/" (View::root()), made the command's root: a directory of another mount namespace
  // is looked up through that namespace's mounts, so chroot() alone (no setns(), which the unit's
  // sandbox forbids) shows the command the job's file tree.
  int root = -1;
  int pid_ns = -1;  // joined; the command is forked once more so that it is a member
};

// Starts the command in its own process group as `user` (never gaining privileges: a daemon that
// is not root runs commands only for its own uid) with only a minimal environment (PATH, HOME,
// USER, LOGNAME) plus `extra_env` and the command's own variables. Output (stdout and stderr
// interleaved) is kept up to kMaxCommandOutput bytes. At the timeout the whole process group is
// SIGKILLed; when the command exits, whatever it left in its group is SIGKILLed too.
// The caller keeps the arguments alive while it awaits the result.
boost::asio::awaitable<CommandReport> run_command(
    const CommandSpec& spec, RunAs user,
    const std::vector<std::pair<std::string, std::string>>& extra_env, Place place = {});

}  // namespace warden
