#include "proto/framing.h"

#include <algorithm>
#include <cstring>

namespace warden {

FrameDecoder::FrameDecoder(std::size_t max_frame) : max_frame_(max_frame) {}

void FrameDecoder::compact() {
  if (start_ == 0) return;
  std::memmove(buf_.data(), buf_.data() + start_, size_ - start_);
  size_ -= start_;
  scan_ -= start_;
  start_ = 0;
}

std::span<char> FrameDecoder::prepare(std::size_t n) {
  // Reclaim consumed bytes before growing, so a long-lived connection keeps a small buffer.
  if (start_ > 0 && (start_ >= size_ / 2 || size_ + n > buf_.size())) compact();
  // A buffer grown for one large line is given back once that line is consumed.
  constexpr std::size_t kUsual = 64 * 1024;
  if (buf_.size() > 4 * kUsual && size_ - start_ + n <= kUsual) {
    compact();
    std::string(buf_, 0, kUsual).swap(buf_);
  }
  if (buf_.size() < size_ + n) buf_.resize(size_ + n);
  return {buf_.data() + size_, n};
}

void FrameDecoder::commit(std::size_t n) { size_ = std::min(size_ + n, buf_.size()); }

void FrameDecoder::feed(std::string_view bytes) {
  auto space = prepare(bytes.size());
  std::memcpy(space.data(), bytes.data(), bytes.size());
  commit(bytes.size());
}

std::optional<std::string_view> FrameDecoder::next() {
  while (!overflowed_) {
    const char* begin = buf_.data();
    const void* nl = std::memchr(begin + scan_, '\n', size_ - scan_);
    if (nl == nullptr) {
      scan_ = size_;
      if (size_ - start_ > max_frame_) overflowed_ = true;
      return std::nullopt;
    }
    std::size_t end = static_cast<const char*>(nl) - begin;
    std::size_t line_start = start_;
    start_ = scan_ = end + 1;
    if (end - line_start > max_frame_) {
      overflowed_ = true;
      return std::nullopt;
    }
    std::string_view line(begin + line_start, end - line_start);
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;  // blank line
    return line;
  }
  return std::nullopt;
}

}  // namespace warden
