// wardenctl's --since: the times people type.
#include "wardenctl/events_view.h"

#include <ctime>

#include <gtest/gtest.h>

#include "wardenctl/status_view.h"

namespace warden {
namespace {

// Within a second of `expected` (the parse and the check read the clock apart).
void expect_near(std::optional<std::int64_t> got, std::int64_t expected) {
  ASSERT_TRUE(got);
  EXPECT_NEAR(static_cast<double>(*got), static_cast<double>(expected), 1000);
}

TEST(ParseSince, DurationsAreThatLongAgo) {
  expect_near(parse_since("90s"), now_unix_ms() - 90'000);
  expect_near(parse_since("15m"), now_unix_ms() - 15 * 60'000);
  expect_near(parse_since("2h"), now_unix_ms() - 2 * 3'600'000);
  expect_near(parse_since("3d"), now_unix_ms() - 3 * 86'400'000);
  expect_near(parse_since("1.5h"), now_unix_ms() - 5'400'000);
}

TEST(ParseSince, DatesAreLocalTime) {
  std::tm midnight{.tm_mday = 28, .tm_mon = 10, .tm_year = 126, .tm_isdst = -1};
  EXPECT_EQ(parse_since("2026-11-28"), std::mktime(&midnight) * 1000);
  std::tm afternoon{.tm_sec = 0,
                    .tm_min = 5,
                    .tm_hour = 14,
                    .tm_mday = 28,
                    .tm_mon = 10,
                    .tm_year = 126,
                    .tm_isdst = -1};
  EXPECT_EQ(parse_since("2026-11-28T14:05:00"), std::mktime(&afternoon) * 1000);
  EXPECT_EQ(parse_since("2026-11-28 14:05:00"), std::mktime(&afternoon) * 1000);
}

TEST(ParseSince, EpochSecondsAreSecondsSinceTheEpoch) {
  EXPECT_EQ(parse_since("1764300000"), 1'764'300'000'000);
  EXPECT_EQ(parse_since("0"), 0);
}

TEST(ParseSince, AnythingElseIsNoTime) {
  for (const char* bad : {"", "s", "-5m", "5x", "abc", "2026-13-45", "12:00", "5 m", "1e3s!"}) {
    EXPECT_FALSE(parse_since(bad)) << bad;
  }
}

}  // namespace
}  // namespace warden
