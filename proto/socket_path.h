// Where wardend listens and where clients look for it (PROTOCOL.md, "Connecting").
#pragma once

#include <string>

namespace warden {

// The system service's socket.
inline constexpr const char* kSystemSocketPath = "/run/warden/warden.sock";

// A per-user instance's socket: $XDG_RUNTIME_DIR/warden/warden.sock (/tmp/warden-UID/... without
// one).
std::string user_socket_path();

// The daemon's default: the system socket for root, else the per-user one.
std::string daemon_socket_path();

// The client's choice: $WARDEN_SOCKET, else the system socket if it exists, else the per-user one.
std::string client_socket_path();

}  // namespace warden
