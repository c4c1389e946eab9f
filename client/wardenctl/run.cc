#include "wardenctl/run.h"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <iostream>

namespace warden {
namespace {

constexpr int kForwarded[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};

volatile sig_atomic_t child_pid = 0;

void forward(int sig) {
  if (child_pid > 0) ::kill(child_pid, sig);
}

// In the forked child: waits for the job id on `go`, then execs the command inside the job, with
// the job's environment and TMPDIR. Exits 127 if registration failed or the exec does.
[[noreturn]] void exec_when_told(int go, const Client& client, const RunOptions& options,
                                 const std::string& tmpdir) {
  char id[32] = {};
  if (::read(go, id, sizeof(id) - 1) <= 0) ::_exit(127);  // registration failed
  ::setenv("WARDEN_JOB", id, 1);
  ::setenv("WARDEN_SOCKET", client.socket_path().c_str(), 1);
  ::setenv("WARDEN_INSTANCE", client.server().instance.c_str(), 1);
  ::setenv("TMPDIR", tmpdir.c_str(), 1);
  std::vector<char*> argv;
  for (const auto& a : options.command) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  ::execvp(argv[0], argv.data());
  std::cerr << "wardenctl: " << options.command[0] << ": " << std::strerror(errno) << "\n";
  ::_exit(127);
}

}  // namespace

int run_job(Client& client, const RunOptions& options) {
  char tmpl[] = "/tmp/warden-run-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) {
    throw Error(ErrorCode::internal, std::string("mkdtemp: ") + std::strerror(errno));
  }
  std::string tmpdir = tmpl;

  // The child waits for the job id before it execs, so CMD starts already inside the job.
  int go[2];
  if (::pipe2(go, O_CLOEXEC) != 0) throw Error(ErrorCode::internal, "pipe failed");
  pid_t child = ::fork();
  if (child < 0) throw Error(ErrorCode::internal, std::string("fork: ") + std::strerror(errno));
  if (child == 0) {
    ::close(go[1]);
    exec_when_told(go[0], client, options, tmpdir);
  }
  ::close(go[0]);

  JobId id = 0;
  try {
    RegisterJobRequest request{.name = options.name,
                               .pid = ::getpid(),
                               .heartbeat_s = options.heartbeat_s,
                               .grace_s = options.grace_s,
                               .group = options.group};
    id = client.register_job(request);
    client.add_process(id, child);
    client.add_path({.job = id,
                     .kind = PathKind::dir,
                     .path = tmpdir,
                     .policy = options.keep_tmp ? Policy::failure : Policy::always});
  } catch (...) {
    ::close(go[1]);
    ::waitpid(child, nullptr, 0);
    std::filesystem::remove_all(tmpdir);
    throw;
  }
  std::string id_text = std::to_string(id);
  child_pid = child;
  for (int sig : kForwarded) ::signal(sig, forward);
  if (::write(go[1], id_text.data(), id_text.size()) < 0) {
    std::cerr << "wardenctl: cannot start " << options.command[0] << "\n";
  }
  ::close(go[1]);

  int status = 0;
  while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
  try {
    client.end_job(id, ok);
  } catch (const Error& e) {
    // wardend may already be cleaning (a heartbeat deadline passed); nothing more to say.
    if (e.code() != ErrorCode::invalid_state) throw;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace warden
