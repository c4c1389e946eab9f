// wardend: parses the configuration and wires the parts together; nothing else.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <memory>
#include <optional>
#include <spdlog/spdlog.h>

#include "daemon/config.h"
#include "daemon/server.h"
#include "daemon/service.h"
#include "daemon/store.h"
#include "daemon/unique_fd.h"

namespace {

// One wardend per state directory: two would clean the same jobs twice.
warden::UniqueFd lock_state_dir(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw std::runtime_error("create state directory " + dir + ": " + ec.message());
  ::chmod(dir.c_str(), 0700);
  std::string path = dir + "/wardend.lock";
  warden::UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!fd) throw std::runtime_error("open " + path + ": " + std::strerror(errno));
  if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    throw std::runtime_error("another wardend is using state directory " + dir +
                             " (it holds " + path + ")");
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

}  // namespace

int main(int argc, char** argv) {
  try {
    auto config = warden::parse_config(argc, argv);
    if (!config) return 0;
    spdlog::set_level(spdlog::level::from_str(config->log_level));
    spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
    raise_fd_limit();
    auto lock = lock_state_dir(config->state_dir);

    boost::asio::io_context io(1);
    std::unique_ptr<warden::Store> store;
    std::optional<warden::StoredState> stored;
    if (config->durable) {
      store = std::make_unique<warden::Store>(warden::StoreOptions{
          .path = config->state_dir + "/warden.db",
          .events_max_age_ms = static_cast<std::int64_t>(config->events_max_age_days * 86'400'000),
          .events_max_count = config->events_max_count});
      stored = store->load();
    } else {
      spdlog::warn("--no-durable: jobs are kept in memory only and a restart forgets them");
    }
    warden::Journal journal(io, std::move(store));
    warden::Service service(
        io, {.limits = config->limits, .cleanup = config->cleanup, .socket = config->socket},
        journal);
    if (stored) service.recover(std::move(*stored));
    warden::Server server(io, service, journal,
                          {.socket_path = config->socket, .max_frame = config->max_frame});

    // Stopping wardend leaves running jobs alone: it stops serving, it does not clean.
    boost::asio::signal_set signals(io, SIGINT, SIGTERM);
    signals.async_wait([&](boost::system::error_code ec, int sig) {
      if (ec) return;
      spdlog::info("signal={} stopping; running jobs are left untouched", strsignal(sig));
      server.stop();
      io.stop();
    });
    ::signal(SIGPIPE, SIG_IGN);

    server.start();
    spdlog::info("wardend {} listening socket={} state_dir={} pid={}", WARDEN_VERSION,
                 config->socket, config->state_dir, ::getpid());
    io.run();
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "wardend: " << e.what() << "\n";
    return 1;
  }
}
