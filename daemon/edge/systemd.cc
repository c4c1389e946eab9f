#include "edge/systemd.h"

#include <sys/socket.h>

#include <cstdlib>
#include <cstring>

#include <spdlog/spdlog.h>
#include <systemd/sd-daemon.h>

namespace warden {
namespace {

constexpr std::string_view kPidfdPrefix = "pidfd-";

}  // namespace

Systemd::Systemd() {
  supervised_ = std::getenv("NOTIFY_SOCKET") != nullptr;
  std::uint64_t usec = 0;
  if (sd_watchdog_enabled(/*unset_environment=*/1, &usec) > 0) {
    watchdog_ = std::chrono::microseconds(usec);
  }
  char** names = nullptr;
  int n = sd_listen_fds_with_names(/*unset_environment=*/1, &names);
  for (int i = 0; i < n; ++i) {
    int fd = SD_LISTEN_FDS_START + i;
    std::string name = names != nullptr && names[i] != nullptr ? names[i] : "";
    if (name.starts_with(kPidfdPrefix)) {
      stored_.emplace(name, UniqueFd(fd));
    } else if (!listener_ && sd_is_socket_unix(fd, SOCK_STREAM, /*listening=*/1, nullptr, 0) > 0) {
      listener_.emplace(fd);
    } else {
      spdlog::warn("closing descriptor {} ({:?}) passed by systemd: not a listening Unix socket",
                   fd, name);
      UniqueFd close_it(fd);
    }
  }
  if (names != nullptr) {
    for (int i = 0; i < n; ++i) std::free(names[i]);
    std::free(names);
  }
  // What is stored now belongs to the previous wardend; recovery stores again what it still tracks.
  // (NOTIFY_SOCKET stays set: hooks and diagnose commands get a clean environment anyway.)
  for (const auto& [name, fd] : stored_) remove_pidfd(name);
}

std::optional<UniqueFd> Systemd::take_listener() { return std::exchange(listener_, std::nullopt); }

std::map<std::string, UniqueFd> Systemd::take_stored_pidfds() { return std::move(stored_); }

void Systemd::ready(const std::string& status) { notify("READY=1\nSTATUS=" + status); }
void Systemd::status(const std::string& status) { notify("STATUS=" + status); }
void Systemd::reloading() { notify("RELOADING=1"); }
void Systemd::stopping() { notify("STOPPING=1"); }
void Systemd::watchdog() { notify("WATCHDOG=1"); }

void Systemd::store_pidfd(const std::string& name, int fd) {
  if (!supervised_) return;
  int r = sd_pid_notify_with_fds(0, 0, ("FDSTORE=1\nFDNAME=" + name).c_str(), &fd, 1);
  if (r <= 0)
    spdlog::debug("could not keep {} in systemd's descriptor store: {}", name, std::strerror(-r));
}

void Systemd::remove_pidfd(const std::string& name) {
  if (supervised_) notify("FDSTOREREMOVE=1\nFDNAME=" + name);
}

std::string Systemd::pidfd_name(JobId job, const ProcessIdentity& process) {
  return std::string(kPidfdPrefix) + std::to_string(job) + "-" + std::to_string(process.pid) + "-" +
         std::to_string(process.start_time);
}

void Systemd::notify(const std::string& state) {
  if (supervised_) sd_notify(0, state.c_str());
}

}  // namespace warden
