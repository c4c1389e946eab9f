// The optional loopback HTTP listener (--metrics-listen 127.0.0.1:PORT) that Prometheus scrapes:
// GET /metrics answers the same text as the `metrics` op. Boost.Beast, on wardend's event loop.
#pragma once

#include <string>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include "edge/service.h"

namespace warden {

class MetricsListener {
 public:
  // `address` is HOST:PORT with a loopback HOST (127.0.0.1, ::1, localhost): the metrics carry
  // no secrets, but nothing off the node should reach a root daemon. Throws std::runtime_error.
  MetricsListener(boost::asio::io_context& io, Service& service, const std::string& address);
  void start();
  void stop();
  unsigned short port() const { return acceptor_.local_endpoint().port(); }

 private:
  boost::asio::awaitable<void> accept_loop();
  boost::asio::awaitable<void> serve(boost::asio::ip::tcp::socket socket);
  // The metrics text, made off the event loop.
  boost::asio::awaitable<std::string> rendered();

  boost::asio::io_context& io_;
  Service& service_;
  boost::asio::ip::tcp::acceptor acceptor_;
};

}  // namespace warden
