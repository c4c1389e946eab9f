// Server: the listening Unix socket and one session per connection, speaking NDJSON.
#pragma once

#include <list>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>

#include "edge/commands.h"
#include "edge/connection_limits.h"
#include "edge/journal.h"
#include "edge/service.h"
#include "edge/session.h"
#include "proto/framing.h"
#include "proto/unique_fd.h"

namespace warden {

struct ServerOptions {
  std::string socket_path;
  std::size_t max_frame = kDefaultMaxFrame;
  ConnectionLimits limits;
};

// Accepts connections and runs a session for each (session.h) on the io_context's one thread.
class Server {
 public:
  // Binds the socket (creating its directory, replacing a stale socket file, refusing to steal one
  // a live daemon listens on) and makes it connectable by every local user: authorisation is per
  // request, from peer credentials. With `listener` (socket activation) it serves that instead,
  // which systemd owns. Throws std::runtime_error with a message for the operator.
  Server(boost::asio::io_context& io, Service& service, Journal& journal, ServerOptions options,
         std::optional<UniqueFd> listener = std::nullopt);
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;
  ~Server();

  void start();
  // Stops accepting and closes every connection; removes the socket file.
  void stop();

 private:
  boost::asio::awaitable<void> accept_loop();
  boost::asio::awaitable<void> shed_connection();

  // Constant after construction.
  boost::asio::io_context& io_;
  Service& service_;
  Journal& journal_;
  const ServerOptions options_;

  // Mutable state.
  boost::asio::local::stream_protocol::acceptor acceptor_;
  std::shared_ptr<Connections> connections_ = std::make_shared<Connections>();
  bool stopped_ = false;
  bool activated_ = false;  // the socket is systemd's: not ours to remove
  UniqueFd reserve_;        // freed to accept (and refuse) a connection when out of descriptors
  std::size_t shed_ = 0;
};

}  // namespace warden
