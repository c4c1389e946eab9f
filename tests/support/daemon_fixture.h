// A real wardend for integration tests and benchmarks: started on a temporary socket and state
// directory, stopped and removed afterwards.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace warden::testing {

class Daemon {
 public:
  // Starts build/bin/wardend with `extra_args` and waits (up to 10 s) until it answers hello.
  // `launcher` runs it, e.g. {"/usr/bin/prlimit", "--nofile=64", "--"}.
  explicit Daemon(std::vector<std::string> extra_args = {}, std::vector<std::string> launcher = {});
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;
  // Stops it with SIGTERM and removes its directory.
  ~Daemon();

  // SIGKILLs wardend (and reaps it), as a crash or the OOM killer would.
  void crash();
  // Starts it again on the same socket and state directory, with the same arguments; returns
  // once it answers hello.
  void restart();

  const std::string& socket() const { return socket_; }
  const std::string& dir() const { return dir_; }
  const std::string& state_dir() const { return state_dir_; }
  pid_t pid() const { return pid_; }
  std::string log() const;

 private:
  void start(bool append_log);

  std::string dir_;
  std::string socket_;
  std::string state_dir_;
  std::vector<std::string> argv_;
  pid_t pid_ = -1;
};

// Gives the processes in the tracking cgroups of the wardend with this state directory back to
// the cgroups above and removes those cgroups: a test's wardend stops with jobs running, and their
// cgroups would outlive the test.
void release_cgroups(const std::string& state_dir);

// Runs a command (argv, no shell) and returns its exit status and standard output.
struct CommandResult {
  int status = -1;
  std::string out;
  std::string err;
};
CommandResult run_command(const std::vector<std::string>& argv,
                          const std::vector<std::string>& env = {});
// The same, as another user (the caller must be root).
CommandResult run_command_as(uid_t uid, const std::vector<std::string>& argv);

// The uid of a real unprivileged system user for tests, created (useradd) if it does not exist
// yet. The caller must be root.
uid_t test_user(const std::string& name);

}  // namespace warden::testing
