// The journal's group commit (edge/journal.h): what the loop is handed once a change is written.
#include "edge/journal.h"

#include <thread>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <gtest/gtest.h>

#include "edge/subscribers.h"
#include "tests/support/temp_dir.h"

namespace warden {
namespace {

using Line = std::shared_ptr<const std::string>;

struct Handed {
  Event event;
  Line line;
};

class JournalEvents : public ::testing::Test {
 protected:
  // Stages `event` and runs the loop until the journal has handed it over.
  std::vector<Handed> write(Event event) {
    std::vector<Handed> handed;
    journal.on_event_written(
        [&](const Event& e, const Line& line) {
          handed.push_back({e, line});
        },
        make_line);
    // The writer's thread hands the change back to a loop that has nothing else to do.
    auto busy = boost::asio::make_work_guard(io);
    std::uint64_t seq = journal.stage({std::move(event)});
    journal.when_written(seq, [this](const Written& w) {
      EXPECT_EQ(w.error, "");
      io.stop();
    });
    io.run();
    return handed;
  }

  testing::TempDir temp{"warden-journal"};
  boost::asio::io_context io;
  Journal journal{io, std::make_unique<Store>(StoreOptions{.path = temp / "warden.db"})};
  Journal::LineMaker make_line;
  std::thread::id made_on;
};

TEST_F(JournalEvents, TheFollowersLineIsMadeOffTheLoopWithTheEventsSequenceNumber) {
  make_line = [this](const Event& e) {
    made_on = std::this_thread::get_id();
    return event_line(e);
  };
  auto handed = write({.job = 7, .uid = 0, .name = "train", .state = JobState::cleaned});
  ASSERT_EQ(handed.size(), 1u);
  EXPECT_GT(handed[0].event.seq, 0) << "the store numbered it before the line was made";
  ASSERT_NE(handed[0].line, nullptr);
  EXPECT_EQ(*handed[0].line, *event_line(handed[0].event)) << "the line the loop would make";
  EXPECT_NE(made_on, std::this_thread::get_id()) << "made on the writer's thread, not the loop's";
}

TEST_F(JournalEvents, WithoutALineTheLoopIsHandedNone) {
  make_line = [](const Event&) { return Line(); };  // nobody follows
  auto handed = write({.job = 7, .uid = 0, .name = "train"});
  ASSERT_EQ(handed.size(), 1u);
  EXPECT_EQ(handed[0].line, nullptr);
}

}  // namespace
}  // namespace warden
