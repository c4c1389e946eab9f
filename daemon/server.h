// Server: the listening Unix socket and one session per connection, speaking NDJSON.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "daemon/commands.h"
#include "daemon/journal.h"
#include "daemon/service.h"
#include "daemon/unique_fd.h"

namespace warden {

struct ServerOptions {
  std::string socket_path;
  std::size_t max_frame = kDefaultMaxFrame;
};

// Accepts connections and runs their sessions on the io_context's one thread. Each connection's
// caller is fixed at accept time from SO_PEERCRED. Requests on a connection are answered in order;
// replies to a batch of pipelined requests go out in one write.
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
  using Socket = boost::asio::local::stream_protocol::socket;

  // A reply whose request staged a change: it goes out once the change is written.
  struct Unwritten {
    std::size_t reply = 0;
    std::uint64_t seq = 0;
  };

  boost::asio::awaitable<void> accept_loop();
  boost::asio::awaitable<void> session(Socket socket);
  // After `events` with follow: writes each new event until the client closes the connection.
  boost::asio::awaitable<void> follow_events(Socket& socket, const Caller& caller,
                                             std::optional<JobId> job);
  // Waits until each change is written or has failed; a failed one's reply becomes an error.
  boost::asio::awaitable<void> written(const std::vector<Unwritten>& unwritten,
                                       std::vector<Reply>& replies);

  // Constant after construction.
  boost::asio::io_context& io_;
  Service& service_;
  Journal& journal_;
  const ServerOptions options_;

  // Mutable state.
  boost::asio::local::stream_protocol::acceptor acceptor_;
  // Open connections, so stop() can close them. Shared with the sessions because their coroutine
  // frames may be destroyed after the server (when the io_context is).
  std::shared_ptr<std::list<Socket*>> sessions_ = std::make_shared<std::list<Socket*>>();
  bool stopped_ = false;
  bool activated_ = false;  // the socket is systemd's: not ours to remove
};

}  // namespace warden
