// Cleanups launched one per turn of the event loop (edge/cleanup_pacer.h).
#include "edge/cleanup_pacer.h"

#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <gtest/gtest.h>

namespace warden {
namespace {

TEST(CleanupPacer, LaunchesOnePerTurnInOrderSoThatOtherWorkRunsBetween) {
  boost::asio::io_context io;
  std::vector<std::string> ran;
  CleanupPacer pacer(io,
                     [&](CleanupPlan plan) { ran.push_back("job " + std::to_string(plan.job)); });
  for (JobId job : {1, 2, 3}) pacer.start({.job = job});
  boost::asio::post(io, [&] { ran.push_back("a request"); });
  EXPECT_TRUE(ran.empty()) << "nothing is launched in the turn that queues it";
  EXPECT_EQ(pacer.running(), 3u);
  io.run();
  EXPECT_EQ(ran, (std::vector<std::string>{"job 1", "a request", "job 2", "job 3"}));
}

TEST(CleanupPacer, CountsWhatIsLaunchedOrWaitingUntilItFinishes) {
  boost::asio::io_context io;
  CleanupPacer pacer(io, [](CleanupPlan) {});
  pacer.start({.job = 1});
  pacer.start({.job = 2});
  io.run();
  EXPECT_EQ(pacer.running(), 2u);
  pacer.finished();
  EXPECT_EQ(pacer.running(), 1u);
}

TEST(CleanupPacer, WhatIsQueuedWhenItGoesIsNotLaunched) {
  boost::asio::io_context io;
  int launched = 0;
  {
    CleanupPacer pacer(io, [&](CleanupPlan) { ++launched; });
    pacer.start({.job = 1});
  }
  io.run();
  EXPECT_EQ(launched, 0);
}

}  // namespace
}  // namespace warden
