// One client connection, from accept to close: who it is (peer credentials, its pidfd and
// namespaces), whether it may stay (connection limits), its requests answered in order with each
// change on disk before its reply, and the live event stream after `events` with follow.
// A Session lives in the coroutine that runs it (serve()); its guards give back what it holds.
#pragma once

#include <deque>
#include <exception>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/local/stream_protocol.hpp>

#include "edge/commands.h"
#include "edge/connection_limits.h"
#include "edge/journal.h"
#include "edge/service.h"
#include "proto/framing.h"
#include "proto/unique_fd.h"

namespace warden {

using Socket = boost::asio::local::stream_protocol::socket;

// The connections a server has open: their sockets (so that stop() can close them) and counts.
// Shared with the sessions, whose coroutine frames may outlive the server (they are destroyed
// with the io_context).
struct Connections {
  std::list<Socket*> open;
  std::size_t total = 0;
  std::map<uid_t, std::size_t> per_user;
};

// What every session of one server uses.
struct SessionSettings {
  Service& service;
  Journal& journal;
  std::size_t max_frame = kDefaultMaxFrame;
  ConnectionLimits limits;
};

// A co_spawn completion that logs an exception that ended the coroutine (a bug: each reports its
// own errors), where `detached` would let it vanish.
std::function<void(std::exception_ptr)> log_if_thrown(std::string what);

// Serves one accepted connection until it closes.
boost::asio::awaitable<void> serve(Socket socket, SessionSettings settings,
                                   std::shared_ptr<Connections> connections);

}  // namespace warden
