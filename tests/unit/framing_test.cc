#include "proto/framing.h"

#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace warden {
namespace {

std::vector<std::string> drain(FrameDecoder& d) {
  std::vector<std::string> lines;
  while (auto line = d.next()) lines.emplace_back(*line);
  return lines;
}

TEST(FrameDecoder, SplitsCompleteLinesAndKeepsThePartialOne) {
  FrameDecoder d(100);
  d.feed("{\"a\":1}\n{\"b\":2}\n{\"c\"");
  EXPECT_EQ(drain(d), (std::vector<std::string>{"{\"a\":1}", "{\"b\":2}"}));
  EXPECT_EQ(d.pending(), 4u);
  d.feed(":3}\n");
  EXPECT_EQ(drain(d), (std::vector<std::string>{"{\"c\":3}"}));
  EXPECT_EQ(d.pending(), 0u);
}

TEST(FrameDecoder, SkipsBlankLines) {
  FrameDecoder d(100);
  d.feed("\n  \r\n{}\n\n");
  EXPECT_EQ(drain(d), (std::vector<std::string>{"{}"}));
}

TEST(FrameDecoder, ByteByByteFeedingYieldsTheSameLines) {
  FrameDecoder d(100);
  std::string input = "one\ntwo\nthree\n";
  std::vector<std::string> lines;
  for (char c : input) {
    d.feed(std::string(1, c));
    for (auto& l : drain(d)) lines.push_back(l);
  }
  EXPECT_EQ(lines, (std::vector<std::string>{"one", "two", "three"}));
}

TEST(FrameDecoder, PartialLineOverTheLimitPoisonsTheDecoder) {
  FrameDecoder d(8);
  d.feed("123456789");
  EXPECT_FALSE(d.next());
  EXPECT_TRUE(d.overflowed());
  d.feed("\nok\n");
  EXPECT_FALSE(d.next()) << "no line is trusted after an overflow";
}

TEST(FrameDecoder, CompleteLineOverTheLimitIsRefused) {
  FrameDecoder d(8);
  d.feed("ok\n123456789\nlater\n");
  EXPECT_EQ(d.next(), "ok");
  EXPECT_FALSE(d.next());
  EXPECT_TRUE(d.overflowed());
}

TEST(FrameDecoder, LineExactlyAtTheLimitIsAccepted) {
  FrameDecoder d(8);
  d.feed("12345678\n");
  EXPECT_EQ(d.next(), "12345678");
  EXPECT_FALSE(d.overflowed());
}

TEST(FrameDecoder, PrepareAndCommitAcceptShortReads) {
  FrameDecoder d(100);
  auto space = d.prepare(64);
  std::string chunk = "abc\nde";
  std::copy(chunk.begin(), chunk.end(), space.begin());
  d.commit(chunk.size());
  EXPECT_EQ(d.next(), "abc");
  EXPECT_FALSE(d.next());
  EXPECT_EQ(d.pending(), 2u);
}

TEST(FrameDecoder, LongStreamKeepsTheBufferSmall) {
  FrameDecoder d(100);
  for (int i = 0; i < 100000; ++i) {
    d.feed("{\"op\":\"heartbeat\"}\n");
    ASSERT_EQ(d.next(), "{\"op\":\"heartbeat\"}");
  }
  auto space = d.prepare(16);
  EXPECT_NE(space.data(), nullptr);
  EXPECT_EQ(d.pending(), 0u);
}

}  // namespace
}  // namespace warden
