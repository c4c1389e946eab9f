// The protocol's error codes: the stable, machine-readable half of every error reply.
#pragma once

#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

namespace warden {

// Wire names are the snake_case spelling of each enumerator (see PROTOCOL.md). Never renumber or
// rename: clients match on them.
enum class ErrorCode {
  bad_request,           // malformed JSON, a missing or ill-typed field, a value out of range
  unknown_op,            // "op" names no operation this daemon has
  frame_too_large,       // a line longer than the negotiated maximum frame
  unsupported_protocol,  // hello asked for a protocol version this daemon does not speak
  not_found,             // no such job (or not one the caller may see)
  permission_denied,     // the caller may not act on this process, file or job
  no_such_process,       // the pid does not exist (or exited before it could be tracked)
  invalid_state,         // the job is not in a state that allows the operation
  limit_exceeded,        // a configured limit (connections, jobs, resources) was reached
  unavailable,           // the daemon cannot serve the request now (shutting down, store offline)
  internal,              // a bug in wardend; the message says what failed
};

std::string_view to_string(ErrorCode code);
std::optional<ErrorCode> error_code_from_string(std::string_view name);

// Thrown by request handlers and by the client library; carries the wire code and a message for a
// person that says what to do next.
class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, std::string message)
      : std::runtime_error(std::move(message)), code_(code) {}
  ErrorCode code() const { return code_; }

 private:
  ErrorCode code_;
};

}  // namespace warden
