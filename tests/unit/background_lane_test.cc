// The loop's background lane (edge/background_lane.h): its work runs on the loop's thread, in
// order, in slices between the loop's other handlers.
#include "edge/background_lane.h"

#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <gtest/gtest.h>

namespace warden {
namespace {

namespace asio = boost::asio;
using std::chrono::microseconds;
using std::chrono::milliseconds;

void spin(microseconds how_long) {
  auto until = std::chrono::steady_clock::now() + how_long;
  while (std::chrono::steady_clock::now() < until) {
  }
}

TEST(BackgroundLane, RunsItsWorkInOrderOnTheLoopsThread) {
  asio::io_context io;
  BackgroundLane lane(io);
  std::vector<int> ran;
  std::thread::id where;
  for (int i = 0; i < 3; ++i) {
    asio::post(lane.get_executor(), [&, i] {
      ran.push_back(i);
      where = std::this_thread::get_id();
    });
  }
  EXPECT_TRUE(ran.empty()) << "posting runs nothing inline";
  EXPECT_EQ(lane.queued(), 3u);
  io.run();
  EXPECT_EQ(ran, (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(where, std::this_thread::get_id());
  EXPECT_EQ(lane.queued(), 0u);
}

TEST(BackgroundLane, ABurstLetsTheLoopsOtherHandlersRunBetweenItsSlices) {
  asio::io_context io;
  BackgroundLane lane(io, milliseconds(1));
  std::vector<std::string> ran;
  for (int i = 0; i < 20; ++i) {
    asio::post(lane.get_executor(), [&] {
      spin(microseconds(400));  // 8 ms in all, three of these to a slice
      ran.push_back("lane");
    });
  }
  asio::post(io, [&] { ran.push_back("request"); });
  io.run();
  ASSERT_EQ(ran.size(), 21u);
  auto request = std::find(ran.begin(), ran.end(), "request") - ran.begin();
  EXPECT_GE(request, 1);
  EXPECT_LE(request, 3) << "a request waits for one slice of the burst, not for all of it";
}

TEST(BackgroundLane, WorkFromAnotherThreadRunsOnTheLoop) {
  asio::io_context io;
  BackgroundLane lane(io);
  auto guard = asio::make_work_guard(io);
  std::thread::id where;
  std::thread other([&] {
    asio::post(lane.get_executor(), [&] {
      where = std::this_thread::get_id();
      guard.reset();
    });
  });
  io.run();
  other.join();
  EXPECT_EQ(where, std::this_thread::get_id());
}

// What the cleanups do on it: I/O objects made with its executor and coroutines spawned on it
// complete through the lane, behind the lane's work queued before (a plain handler of the loop
// would run between two slices of it).
asio::awaitable<void> wait_for_readable_then_timer(int fd, std::vector<std::string>* ran) {
  auto executor = co_await asio::this_coro::executor;
  EXPECT_NE(executor.target<BackgroundLane::Executor>(), nullptr);
  asio::posix::stream_descriptor descriptor(executor, ::dup(fd));
  auto readable = descriptor.async_wait(asio::posix::descriptor_base::wait_read,
                                        asio::use_awaitable);
  co_await std::move(readable);
  ran->push_back("readable");
  asio::steady_timer timer(executor, milliseconds(1));
  auto expired = timer.async_wait(asio::use_awaitable);
  co_await std::move(expired);
  ran->push_back("timer");
}

TEST(BackgroundLane, IoObjectsAndCoroutinesOnItsExecutorCompleteThroughIt) {
  asio::io_context io;
  BackgroundLane lane(io, milliseconds(1));
  int pair[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
  ASSERT_EQ(::write(pair[1], "x", 1), 1);  // readable from the start
  std::vector<std::string> ran;
  asio::any_io_executor executor = lane.get_executor();
  asio::co_spawn(executor, wait_for_readable_then_timer(pair[0], &ran), asio::detached);
  for (int i = 0; i < 12; ++i) {  // four slices
    asio::post(lane.get_executor(), [&] {
      spin(microseconds(400));
      ran.push_back("lane");
    });
  }
  io.run();
  std::vector<std::string> expected(12, "lane");
  expected.insert(expected.end(), {"readable", "timer"});
  EXPECT_EQ(ran, expected);
  ::close(pair[0]);
  ::close(pair[1]);
}

TEST(BackgroundLane, WorkLeftWhenItGoesIsDroppedNotRun) {
  asio::io_context io;
  bool ran = false;
  {
    BackgroundLane lane(io);
    asio::post(lane.get_executor(), [&] { ran = true; });
  }
  io.run();
  EXPECT_FALSE(ran);
}

// What a dropped task holds may queue more work as it goes (a coroutine abandoned at shutdown posts
// the destruction of its frames to its executor): that is dropped too, not left in a queue which
// the work itself keeps alive.
TEST(BackgroundLane, WhatDroppingWorkQueuesIsDroppedToo) {
  asio::io_context io;
  auto payload = std::make_shared<int>(0);
  std::weak_ptr<int> left = payload;
  // Queues `then` on the lane when it is destroyed.
  struct QueuesOnDestruction {
    BackgroundLane::Executor lane;
    std::shared_ptr<int> then;
    ~QueuesOnDestruction() {
      if (then) asio::post(lane, [held = std::move(then)] {});
    }
  };
  {
    BackgroundLane lane(io);
    auto queues = std::make_shared<QueuesOnDestruction>(lane.get_executor(), std::move(payload));
    asio::post(lane.get_executor(), [queues = std::move(queues)] {});
    lane.drop_queued();
    EXPECT_TRUE(left.expired());
    EXPECT_EQ(lane.queued(), 0u);
  }
}

}  // namespace
}  // namespace warden
