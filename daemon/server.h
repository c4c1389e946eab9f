// Server: the listening Unix socket and one session per connection, speaking NDJSON.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "daemon/commands.h"
#include "daemon/connection_limits.h"
#include "daemon/journal.h"
#include "daemon/service.h"
#include "proto/framing.h"
#include "proto/unique_fd.h"

namespace warden {

struct ServerOptions {
  std::string socket_path;
  std::size_t max_frame = kDefaultMaxFrame;
  ConnectionLimits limits;
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

  struct ReadDeadline;
  boost::asio::awaitable<void> watch_deadline(std::shared_ptr<ReadDeadline> deadline,
                                              Socket& socket);
  boost::asio::awaitable<void> accept_loop();
  boost::asio::awaitable<void> shed_connection();
  // Writes all of `data`; false if the peer is gone or does not read it within request_timeout.
  // False if the peer is gone, or read nothing for the request timeout (logged, with `uid`).
  boost::asio::awaitable<bool> write_all(Socket& socket, const std::string& data, uid_t uid);
  boost::asio::awaitable<void> session(Socket socket);
  // Answers every complete line the decoder holds; false if the client is gone or stopped reading.
  boost::asio::awaitable<bool> answer_lines(Socket& socket, FrameDecoder& decoder,
                                            const RequestContext& context);
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
  UniqueFd reserve_;        // freed to accept (and refuse) a connection when out of descriptors
  std::size_t shed_ = 0;
  std::size_t connections_ = 0;
  std::map<uid_t, std::size_t> connections_per_user_;
};

}  // namespace warden
