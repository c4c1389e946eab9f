// What wardend gets from and tells systemd (libsystemd's sd-daemon): the activated listening
// socket, readiness and status, watchdog pings, and the file-descriptor store that keeps every
// tracked process's pidfd across a restart. Outside systemd every call does nothing.
#pragma once

#include <chrono>
#include <map>
#include <optional>
#include <string>

#include "world/process.h"
#include "proto/messages.h"
#include "proto/unique_fd.h"

namespace warden {

class Systemd {
 public:
  // Takes the descriptors systemd passed to this process (LISTEN_FDS, cleared from the
  // environment).
  Systemd();
  Systemd(const Systemd&) = delete;
  Systemd& operator=(const Systemd&) = delete;

  // Started by systemd with a notification socket (Type=notify).
  bool supervised() const { return supervised_; }
  // The listening Unix socket of warden.socket, if socket-activated.
  std::optional<UniqueFd> take_listener();
  // Pidfds a previous wardend kept in the store, by name (see pidfd_name()). They are removed from
  // the store here; the processes still tracked are stored again as they are watched.
  std::map<std::string, UniqueFd> take_stored_pidfds();

  void ready(const std::string& status);
  void status(const std::string& status);
  void reloading();
  void stopping();
  // The interval systemd expects WATCHDOG=1 within (WatchdogSec=), if it expects one.
  std::optional<std::chrono::microseconds> watchdog_interval() const { return watchdog_; }
  void watchdog();

  void store_pidfd(const std::string& name, int fd);
  void remove_pidfd(const std::string& name);
  static std::string pidfd_name(JobId job, const ProcessIdentity& process);

 private:
  void notify(const std::string& state);

  bool supervised_ = false;
  std::optional<std::chrono::microseconds> watchdog_;
  std::optional<UniqueFd> listener_;
  std::map<std::string, UniqueFd> stored_;
};

}  // namespace warden
