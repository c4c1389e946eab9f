// The heartbeat deadlines' one timer (edge/deadline_alarm.h), on a real io_context.
#include "edge/deadline_alarm.h"

#include <thread>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <gtest/gtest.h>

namespace warden {
namespace {

using namespace std::chrono_literals;

struct Fired {
  TimePoint at;
  Duration late_by;
};

struct AlarmTest : ::testing::Test {
  boost::asio::io_context io;
  std::vector<Fired> fired;
  DeadlineAlarm alarm{io.get_executor(),
                      [this](TimePoint now, Duration late_by) { fired.push_back({now, late_by}); }};
};

TEST_F(AlarmTest, FiresOnceAtTheEarliestArmed) {
  const TimePoint start = Clock::now();
  alarm.arm(start + 200ms);
  alarm.arm(start + 20ms);  // earlier: taken
  alarm.arm(start + 100ms);  // later: the earlier one is kept
  io.run_for(300ms);
  ASSERT_EQ(fired.size(), 1u);
  EXPECT_GE(fired[0].at, start + 20ms);
  EXPECT_LT(fired[0].at, start + 100ms) << "the later deadline did not replace the earlier";
}

TEST_F(AlarmTest, ArmedForNothingItNeverFires) {
  alarm.arm(Clock::now() + 10ms);
  alarm.arm(std::nullopt);
  io.run_for(50ms);
  EXPECT_TRUE(fired.empty());
}

TEST_F(AlarmTest, SaysHowLateItFiredWhenTheLoopDidNotRun) {
  alarm.arm(Clock::now() + 10ms);
  std::this_thread::sleep_for(1200ms);  // wardend stopped: nothing ran the loop
  io.run_for(50ms);
  ASSERT_EQ(fired.size(), 1u);
  EXPECT_GE(fired[0].late_by, 1100ms);
}

TEST_F(AlarmTest, ArmedAgainFromItsAnswerItFiresAgain) {
  int rounds = 0;
  DeadlineAlarm again{io.get_executor(), [&](TimePoint now, Duration) {
                        if (++rounds < 3) again.arm(now + 5ms);
                      }};
  again.arm(Clock::now() + 5ms);
  io.run_for(200ms);
  EXPECT_EQ(rounds, 3);
}

}  // namespace
}  // namespace warden
