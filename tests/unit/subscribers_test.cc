// The event stream's followers (edge/subscribers.h): who gets which event, and one line for all.
#include "edge/subscribers.h"

#include <gtest/gtest.h>

namespace warden {
namespace {

using Line = std::shared_ptr<const std::string>;

struct Follower {
  std::vector<Line> lines;
  Subscribers::Sink sink() {
    return [this](const Line& line) { lines.push_back(line); };
  }
};

Event event_of(JobId job, uid_t uid) {
  return {.seq = static_cast<std::int64_t>(job), .job = job, .uid = uid, .name = "train"};
}

TEST(Subscribers, EachFollowerGetsWhatItsCallerMaySeeOfTheJobItFollows) {
  Subscribers subscribers;
  Follower root, alice, alices_job_7, bob;
  subscribers.subscribe({.pid = 1, .uid = 0}, std::nullopt, root.sink());
  subscribers.subscribe({.pid = 2, .uid = 1000}, std::nullopt, alice.sink());
  subscribers.subscribe({.pid = 3, .uid = 1000}, JobId{7}, alices_job_7.sink());
  subscribers.subscribe({.pid = 4, .uid = 1001}, std::nullopt, bob.sink());

  subscribers.publish(event_of(7, 1000));
  subscribers.publish(event_of(8, 1000));
  subscribers.publish(event_of(9, 0));

  EXPECT_EQ(root.lines.size(), 3u) << "root sees every job's";
  EXPECT_EQ(alice.lines.size(), 2u) << "a user sees her own jobs'";
  ASSERT_EQ(alices_job_7.lines.size(), 1u) << "a follower of one job sees only its";
  EXPECT_TRUE(bob.lines.empty()) << "nobody sees another user's";
  EXPECT_EQ(root.lines[0], alice.lines[0]) << "one line is made for every follower";
  auto sent = json::parse(*alices_job_7.lines[0]);
  EXPECT_EQ(sent["event"]["job"], 7);
  EXPECT_EQ(alices_job_7.lines[0]->back(), '\n');
}

TEST(Subscribers, AnUnsubscribedFollowerGetsNothingMore) {
  Subscribers subscribers;
  Follower a, b;
  std::uint64_t first = subscribers.subscribe({.uid = 0}, std::nullopt, a.sink());
  subscribers.subscribe({.uid = 0}, std::nullopt, b.sink());
  subscribers.publish(event_of(1, 0));
  subscribers.unsubscribe(first);
  subscribers.publish(event_of(2, 0));
  EXPECT_EQ(a.lines.size(), 1u);
  EXPECT_EQ(b.lines.size(), 2u);
  EXPECT_EQ(subscribers.size(), 1u);
}

TEST(Subscribers, SaysToOtherThreadsWhetherAnyoneFollows) {
  Subscribers subscribers;
  Follower a;
  auto followed = subscribers.followed();
  EXPECT_FALSE(*followed);
  std::uint64_t id = subscribers.subscribe({.uid = 0}, std::nullopt, a.sink());
  EXPECT_TRUE(*followed);
  subscribers.unsubscribe(id);
  EXPECT_FALSE(*followed);
}

TEST(Subscribers, ALineMadeAlreadyIsSentAsItIs) {
  Subscribers subscribers;
  Follower a;
  subscribers.subscribe({.uid = 0}, std::nullopt, a.sink());
  Line made = event_line(event_of(1, 0));
  subscribers.publish(event_of(1, 0), made);
  subscribers.publish(event_of(2, 0));
  ASSERT_EQ(a.lines.size(), 2u);
  EXPECT_EQ(a.lines[0], made) << "not made again";
  EXPECT_EQ(*a.lines[1], *event_line(event_of(2, 0))) << "made here where none was given";
}

}  // namespace
}  // namespace warden
