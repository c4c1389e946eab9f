#include "proto/plain_heartbeat.h"

#include <charconv>

namespace warden {
namespace {

// Reads the few tokens a plain heartbeat has. A failed read ends the recognition, so none puts
// the position back.
class Scanner {
 public:
  explicit Scanner(std::string_view text) : text_(text) {}

  bool take(char c) {
    skip_space();
    if (pos_ == text_.size() || text_[pos_] != c) return false;
    ++pos_;
    return true;
  }

  // A string without escapes or control characters (the only ones a plain heartbeat has).
  std::optional<std::string_view> plain_string() {
    if (!take('"')) return std::nullopt;
    const std::size_t start = pos_;
    for (; pos_ < text_.size() && text_[pos_] != '"'; ++pos_) {
      if (text_[pos_] == '\\' || static_cast<unsigned char>(text_[pos_]) < 0x20) {
        return std::nullopt;
      }
    }
    if (pos_ == text_.size()) return std::nullopt;
    return text_.substr(start, pos_++ - start);
  }

  // An unsigned integer as JSON writes it (no leading zero, no fraction or exponent), of at most
  // 19 digits, so that it fits 64 bits.
  std::optional<std::string_view> integer() {
    skip_space();
    const std::size_t start = pos_;
    while (pos_ < text_.size() && text_[pos_] >= '0' && text_[pos_] <= '9') ++pos_;
    const std::size_t length = pos_ - start;
    if (length == 0 || length > 19 || (length > 1 && text_[start] == '0')) return std::nullopt;
    if (pos_ < text_.size() && (text_[pos_] == '.' || text_[pos_] == 'e' || text_[pos_] == 'E')) {
      return std::nullopt;
    }
    return text_.substr(start, length);
  }

  bool at_end() {
    skip_space();
    return pos_ == text_.size();
  }

 private:
  void skip_space() {
    while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\t' ||
                                   text_[pos_] == '\n' || text_[pos_] == '\r')) {
      ++pos_;
    }
  }

  std::string_view text_;
  std::size_t pos_ = 0;
};

}  // namespace

std::optional<PlainHeartbeat> plain_heartbeat(std::string_view line) {
  Scanner scan(line);
  if (!scan.take('{')) return std::nullopt;
  std::optional<std::string_view> id, job;
  bool op = false;
  do {
    auto key = scan.plain_string();
    if (!key || !scan.take(':')) return std::nullopt;
    if (*key == "op" && !op) {
      auto value = scan.plain_string();
      if (!value || *value != "heartbeat") return std::nullopt;
      op = true;
    } else if (*key == "job" && !job) {
      if (!(job = scan.integer())) return std::nullopt;
    } else if (*key == "id" && !id) {
      if (!(id = scan.integer())) return std::nullopt;
    } else {
      return std::nullopt;  // another member, or one given twice
    }
  } while (scan.take(','));
  if (!scan.take('}') || !scan.at_end() || !op || !job) return std::nullopt;
  PlainHeartbeat beat;
  std::from_chars(job->data(), job->data() + job->size(), beat.job);
  if (beat.job == 0) return std::nullopt;  // no job's id: the full way says so
  if (id) std::from_chars(id->data(), id->data() + id->size(), beat.id.emplace());
  return beat;
}

}  // namespace warden
