#include "proto/socket_path.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>

namespace warden {

std::string user_socket_path() {
  const char* runtime = std::getenv("XDG_RUNTIME_DIR");
  if (runtime != nullptr && *runtime != '\0') return std::string(runtime) + "/warden/warden.sock";
  return "/tmp/warden-" + std::to_string(::getuid()) + "/warden.sock";
}

std::string daemon_socket_path() {
  return ::geteuid() == 0 ? kSystemSocketPath : user_socket_path();
}

std::string client_socket_path() {
  const char* env = std::getenv("WARDEN_SOCKET");
  if (env != nullptr && *env != '\0') return env;
  struct stat st {};
  if (::stat(kSystemSocketPath, &st) == 0 && S_ISSOCK(st.st_mode)) return kSystemSocketPath;
  return user_socket_path();
}

}  // namespace warden
