#include "tests/bench/creations_bench.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <sstream>
#include <thread>

#include "tests/support/daemon_fixture.h"
#include "tests/support/processes.h"
#include "warden/client.h"

namespace warden::bench {
namespace {

using testing::Behaviour;
constexpr auto kChurn = std::chrono::seconds(3);

// A worker of `job` that makes, closes and unlinks a 4 KiB segment in /dev/shm until killed,
// counting its rounds in `rounds` (shared memory).
pid_t spawn_churner(std::atomic<long>* rounds) {
  pid_t pid = ::fork();
  if (pid != 0) return pid;
  std::string name = "/dev/shm/warden-churn-" + std::to_string(::getpid());
  for (;;) {
    int fd = ::open(name.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0) {
      if (::ftruncate(fd, 4096) != 0) ::_exit(1);
      ::close(fd);
    }
    ::unlink(name.c_str());
    rounds->fetch_add(1, std::memory_order_relaxed);
  }
}

struct Churn {
  double rounds_per_s = 0;
  double cpu_us_per_event = 0;
  Stats beats;  // another job's, µs
};

Churn churn(const testing::Daemon& daemon) {
  Client client(daemon.socket());
  pid_t main = testing::spawn(Behaviour::sleep);
  pid_t beating_main = testing::spawn(Behaviour::sleep);
  JobId job = client.register_job({.name = "churn", .pid = main, .grace_s = 0});
  JobId beating = client.register_job({.name = "beats", .pid = beating_main, .heartbeat_s = 3600});
  auto* rounds = static_cast<std::atomic<long>*>(
      ::mmap(nullptr, sizeof(std::atomic<long>), PROT_READ | PROT_WRITE,
             MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  new (rounds) std::atomic<long>(0);
  pid_t churner = spawn_churner(rounds);
  client.add_process(job, churner);

  std::atomic<bool> done = false;
  std::vector<double> beats;
  std::thread beater([&] {
    UniqueFd fd = connect_to(daemon.socket());
    beats = round_trips(fd.get(), heartbeat_line(beating), 1 << 30, [&] { return !done.load(); });
  });
  double cpu_before = cpu_seconds(daemon.pid());
  long rounds_before = rounds->load();
  auto start = Clock::now();
  std::this_thread::sleep_for(kChurn);
  long made = rounds->load() - rounds_before;
  double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  double cpu = cpu_seconds(daemon.pid()) - cpu_before;
  done = true;
  beater.join();
  testing::kill_and_reap({churner, main, beating_main});
  ::munmap(rounds, sizeof(std::atomic<long>));

  // Both wardends answer the same heartbeats, so the difference is the events' cost.
  return {.rounds_per_s = made / seconds,
          .cpu_us_per_event = 1e6 * cpu / (2.0 * made),
          .beats = stats(beats)};
}

}  // namespace

void creation_benchmarks(Report& report) {
  testing::Daemon watching({"--log-level", "warn"});
  testing::Daemon blind({"--log-level", "warn"},
                        {"/usr/bin/setpriv", "--inh-caps", "-sys_admin", "--bounding-set",
                         "-sys_admin", "--"});
  auto watches = [](const testing::Daemon& d) {
    return Client(d.socket()).server().discover_note.find("is not seen") == std::string::npos;
  };
  if (watches(blind) || !watches(watching)) {
    report.row("creation watch", "skipped: cannot run one wardend with fanotify and one without",
               "-", "-", "-");
    return;
  }
  Churn off = churn(blind);
  Churn on = churn(watching);
  report.row(fmt::format("another job's heartbeat p99 / max while a job's worker makes and removes "
                         "a /dev/shm segment as fast as it can ({:.0f} / {:.0f} a second): roots "
                         "watched vs not (no CAP_SYS_ADMIN)",
                         on.rounds_per_s, off.rounds_per_s),
             fmt::format("{:.2f} / {:.2f} ms", on.beats.p99 / 1000, on.beats.max / 1000),
             fmt::format("{:.2f} / {:.2f} ms", off.beats.p99 / 1000, off.beats.max / 1000),
             ratio(on.beats.p99, off.beats.p99), "(the watch's cost)");
  report.row("wardend's CPU per event seen (a make or a removal) during that churn, heartbeats "
             "included: watched vs not",
             fmt::format("{:.1f} µs", on.cpu_us_per_event),
             fmt::format("{:.1f} µs", off.cpu_us_per_event),
             ratio(on.cpu_us_per_event, off.cpu_us_per_event), "(the watch's cost)");
}

}  // namespace warden::bench
