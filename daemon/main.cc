// wardend: parses the configuration and wires the parts together; nothing else.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <functional>
#include <iostream>
#include <memory>
#include <optional>

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <spdlog/spdlog.h>

#include "world/cgroup.h"
#include "edge/config.h"
#include "edge/execution_contexts.h"
#include "edge/metrics_http.h"
#include "edge/server.h"
#include "edge/service.h"
#include "edge/store.h"
#include "edge/systemd.h"
#include "proto/unique_fd.h"

namespace {

// One wardend per state directory: two would clean the same jobs twice.
warden::UniqueFd lock_state_dir(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw std::runtime_error("create state directory " + dir + ": " + ec.message());
  ::chmod(dir.c_str(), 0700);
  std::string path = dir + "/wardend.lock";
  warden::UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!fd && errno == EROFS) {
    // A read-only state directory: wardend serves and cleans, but records nothing (registrations
    // are refused); the lock is still taken if a wardend once left its file there.
    spdlog::warn("state directory {} is read-only: jobs can be seen and cleaned, not registered",
                 dir);
    fd = warden::UniqueFd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) return fd;
    if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
      throw std::runtime_error("another wardend is using state directory " + dir);
    }
    return fd;
  }
  if (!fd) throw std::runtime_error("open " + path + ": " + std::strerror(errno));
  if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    throw std::runtime_error("another wardend is using state directory " + dir + " (it holds " +
                             path + ")");
  }
  std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd.get(), 0) != 0 || ::write(fd.get(), pid.data(), pid.size()) < 0) {
    throw std::runtime_error("write " + path + ": " + std::strerror(errno));
  }
  return fd;
}

// Each tracked process holds a pidfd, so the descriptor limit bounds how much can be supervised.
void raise_fd_limit() {
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &lim);
  }
}

// Grows the kernel's descriptor table once, while wardend has a single thread. The kernel grows
// it by doubling when a descriptor past its end is opened, and in a process of several threads
// each growth waits for an RCU grace period: 6-11 ms on the event loop, at the very moment a
// mass death's cleanups take their handles. 65,536 entries cost about 0.5 MiB of kernel memory.
void reserve_descriptor_table() {
  constexpr rlim_t kReserved = 65536;
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) != 0 || lim.rlim_cur < 2) return;
  const int top = static_cast<int>(std::min(lim.rlim_cur, kReserved) - 1);
  warden::UniqueFd null(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (!null) return;
  warden::UniqueFd at_the_top(::fcntl(null.get(), F_DUPFD_CLOEXEC, top));
}

// Puts the event loop's thread ten nice levels ahead of wardend's other threads (-20 under the
// unit's Nice=-10). When hundreds of jobs die at once the scheduler (EEVDF) weighs the loop
// against every process woken to exit: at the other threads' weight it waited up to 20 ms for a
// CPU after a millisecond of its own work, and a heartbeat waited with it (BENCHMARKS.md). A
// weight, not a real-time class: the loop still gets no more than its fair share, and the work
// it hands to the other threads competes as before. A wardend that may not raise a priority (a
// user's own) keeps its loop where it is.
void run_loop_ahead() {
  constexpr int kAhead = 10;
  const pid_t loop = ::gettid();
  errno = 0;
  const int nice = ::getpriority(PRIO_PROCESS, loop);  // on Linux, the thread's own
  if (errno != 0) return;
  const int wanted = std::max(-20, nice - kAhead);
  if (wanted == nice) return;
  if (::setpriority(PRIO_PROCESS, loop, wanted) == 0) {
    spdlog::info("event loop at nice {}, wardend's other threads at {}", wanted, nice);
  } else {
    spdlog::info("event loop at nice {}: {} was refused ({}); CAP_SYS_NICE allows it", nice,
                 wanted, std::strerror(errno));
  }
}

// Pings systemd's watchdog from the event loop at half its interval: a loop that hangs stops the
// pings, and systemd kills and restarts wardend.
void feed_watchdog(boost::asio::steady_timer& timer, warden::Systemd& systemd,
                   std::chrono::microseconds interval) {
  systemd.watchdog();
  timer.expires_after(interval / 2);
  timer.async_wait([&timer, &systemd, interval](boost::system::error_code ec) {
    if (!ec) feed_watchdog(timer, systemd, interval);
  });
}

// SIGHUP: reads the command line and config file again and applies what can change while jobs
// run (limits, cleanup settings, log level); the rest needs a restart and is reported.
void reload(int argc, char** argv, const warden::Config& running, warden::Service& service,
            warden::Systemd& systemd) {
  systemd.reloading();
  try {
    auto config = warden::parse_config(argc, argv);
    if (config) {
      spdlog::set_level(spdlog::level::from_str(config->log_level));
      service.reconfigure(config->limits, config->cleanup, config->check);
      if (config->socket != running.socket || config->state_dir != running.state_dir ||
          config->durable != running.durable || config->max_frame != running.max_frame) {
        spdlog::warn("reload: socket, state-dir, durable and max-frame change only at a restart");
      }
      spdlog::info("reload: configuration applied; jobs kept");
    }
  } catch (const std::exception& e) {
    spdlog::error("reload: {}; keeping the running configuration", e.what());
  }
  systemd.ready(service.summary());
}

// The state store, with what it held at the last stop in `stored`; none with --no-durable.
std::unique_ptr<warden::Store> open_store(const warden::Config& config,
                                          std::optional<warden::StoredState>& stored) {
  if (!config.durable) {
    spdlog::warn("--no-durable: jobs are kept in memory only and a restart forgets them");
    return nullptr;
  }
  auto store = std::make_unique<warden::Store>(warden::StoreOptions{
      .path = config.state_dir + "/warden.db",
      .events_max_age_ms = static_cast<std::int64_t>(config.events_max_age_days * 86'400'000),
      .events_max_count = config.events_max_count});
  stored = store->load();
  return store;
}

// Tracking cgroups where they are wanted and cgroup v2 lets wardend make them; else none, and
// jobs' processes are found by scanning /proc.
std::unique_ptr<warden::KernelCgroups> open_cgroups(const warden::Config& config,
                                                    boost::asio::io_context& io) {
  if (config.tracking != "auto") return nullptr;
  std::string why;
  auto cgroups = warden::KernelCgroups::open(io.get_executor(), why);
  if (!cgroups) spdlog::warn("tracking=scan: {}; jobs' processes are found by scanning /proc", why);
  return cgroups;
}

// Runs `reload` at each SIGHUP.
void reload_on(boost::asio::signal_set& signal, std::function<void()> reload) {
  signal.async_wait([&signal, reload](boost::system::error_code ec, int) {
    if (ec) return;
    reload();
    reload_on(signal, reload);
  });
}

}  // namespace

int main(int argc, char** argv) {
  try {
    auto config = warden::parse_config(argc, argv);
    if (!config) return 0;
    spdlog::set_level(spdlog::level::from_str(config->log_level));
    spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
    raise_fd_limit();
    reserve_descriptor_table();
    auto lock = lock_state_dir(config->state_dir);

    warden::EventLoop io(1);
    warden::Systemd systemd;
    std::optional<warden::StoredState> stored;
    warden::Journal journal(io, open_store(*config, stored));
    auto cgroups = open_cgroups(*config, io);
    warden::Service service(io,
                            {.limits = config->limits,
                             .cleanup = config->cleanup,
                             .check = config->check,
                             .instance = warden::instance_id(config->state_dir),
                             .systemd = &systemd,
                             .cgroups = cgroups.get(),
                             .cgroup_prefix = warden::cgroup_prefix(config->state_dir)},
                            journal);
    if (stored) service.recover(std::move(*stored), systemd.take_stored_pidfds());
    warden::Server server(io, service, journal,
                          {.socket_path = config->socket,
                           .max_frame = config->max_frame,
                           .limits = config->connections},
                          systemd.take_listener());

    std::optional<warden::MetricsListener> metrics;
    if (!config->metrics_listen.empty()) metrics.emplace(io, service, config->metrics_listen);

    // Stopping wardend leaves running jobs alone: it stops serving, it does not clean.
    boost::asio::signal_set stop_signals(io, SIGINT, SIGTERM);
    stop_signals.async_wait([&](boost::system::error_code ec, int sig) {
      if (ec) return;
      spdlog::info("signal={} stopping; running jobs are left untouched", strsignal(sig));
      systemd.stopping();
      server.stop();
      if (metrics) metrics->stop();
      io.stop();
    });
    boost::asio::signal_set reload_signal(io, SIGHUP);
    reload_on(reload_signal, [&] { reload(argc, argv, *config, service, systemd); });
    ::signal(SIGPIPE, SIG_IGN);

    server.start();
    if (metrics) {
      metrics->start();
      spdlog::info("metrics on http://localhost:{}/metrics", metrics->port());
    }
    boost::asio::steady_timer watchdog(io);
    if (auto interval = systemd.watchdog_interval()) feed_watchdog(watchdog, systemd, *interval);
    systemd.ready(service.summary());
    spdlog::info("wardend {} listening socket={} state_dir={} pid={}{}", WARDEN_VERSION,
                 config->socket, config->state_dir, ::getpid(),
                 systemd.supervised() ? " (systemd)" : "");
    // Last, from the loop's own thread: the threads started before keep the process's priority.
    run_loop_ahead();
    io.run();
    // What still waits is destroyed while what it refers to exists: the work off the loop ends
    // first, then the loop's handlers go, then what their destruction queued in the lane.
    service.stop_threads();
    io.drop_pending();
    service.drop_background();
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "wardend: " << e.what() << "\n";
    return 1;
  }
}
