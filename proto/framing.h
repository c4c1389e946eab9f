// Frame decoding for the NDJSON wire format: splits a byte stream into lines under a size limit.
#pragma once

#include <cstddef>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace warden {

// Accumulates bytes read from a stream and yields complete lines (without the '\n'). Blank lines
// are skipped. Once a line (complete or still partial) exceeds max_frame bytes the decoder is
// poisoned: overflowed() turns true and next() yields nothing more, because the stream can no
// longer be split reliably. Not thread-safe; one decoder per connection.
class FrameDecoder {
 public:
  explicit FrameDecoder(std::size_t max_frame);

  // Space for up to `n` more bytes; write into it, then commit() what was actually written.
  std::span<char> prepare(std::size_t n);
  void commit(std::size_t n);
  // Convenience for tests and fuzzing: prepare + copy + commit.
  void feed(std::string_view bytes);

  // The next complete line, valid until the following prepare()/feed().
  std::optional<std::string_view> next();

  bool overflowed() const { return overflowed_; }
  // Bytes of an unfinished line held back (a half-sent frame at end of stream).
  std::size_t pending() const { return size_ - start_; }

 private:
  void compact();

  std::size_t max_frame_;
  std::string buf_;
  std::size_t size_ = 0;   // bytes of buf_ holding data; the rest is space handed out by prepare()
  std::size_t start_ = 0;  // first byte not yet returned as part of a line
  std::size_t scan_ = 0;   // bytes before this offset are known to hold no '\n'
  bool overflowed_ = false;
};

}  // namespace warden
