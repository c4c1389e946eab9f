// A program as a user writes it against the installed SDK: it starts a worker, registers itself
// as a job with the worker and a scratch file, beats, ends cleanly, and prints the job's id.
// wardend then sweeps the worker it left running and the file (both reported as leftovers).
#include <signal.h>
#include <unistd.h>
#include <warden/client.h>

#include <cstdio>
#include <fstream>
#include <string>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: supervised SCRATCH_FILE\n");
    return 2;
  }
  pid_t worker = ::fork();
  if (worker == 0) {
    ::pause();
    return 0;
  }
  std::ofstream(argv[1]) << "scratch";
  try {
    warden::Client client;  // $WARDEN_SOCKET
    warden::JobId id = 0;
    {
      warden::Job job(client, {.name = "sdk-user", .pid = ::getpid(), .heartbeat_s = 30},
                      {.strict = true});
      id = job.id();
      job.add_process(worker);
      job.add_file(argv[1]);
      job.beat();
      warden::GpusReply gpus = client.gpus();  // a typed call of every kind
      std::string metrics = client.metrics();
      if (metrics.find("warden_jobs") == std::string::npos) return 1;
      (void)gpus;
    }  // leaves the scope normally: ends the job ok
    std::printf("%llu\n", static_cast<unsigned long long>(id));
  } catch (const warden::Error& e) {
    std::fprintf(stderr, "supervised: %s: %s\n", std::string(warden::to_string(e.code())).c_str(),
                 e.what());
    ::kill(worker, SIGKILL);
    return 1;
  }
  return 0;
}
