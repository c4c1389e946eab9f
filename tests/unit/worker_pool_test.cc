// The service's worker pools (edge/execution_contexts.h): at shutdown the work that never ran is
// destroyed when asked, not when the pool goes.
#include "edge/execution_contexts.h"

#include <memory>

#include <boost/asio/post.hpp>
#include <gtest/gtest.h>

namespace warden {
namespace {

TEST(WorkerPool, StoppingAndDroppingDestroysTheWorkThatNeverRan) {
  WorkerPool pool(1);
  auto payload = std::make_shared<int>(0);
  std::weak_ptr<int> watched = payload;
  bool ran = false;
  // The first task stops the pool, so the second is still queued when its thread ends.
  boost::asio::post(pool, [&pool] { pool.stop(); });
  boost::asio::post(pool, [&ran, payload = std::move(payload)] { ran = true; });
  pool.stop_and_drop();
  EXPECT_FALSE(ran);
  EXPECT_TRUE(watched.expired()) << "the queued work is still alive after stop_and_drop()";
}

}  // namespace
}  // namespace warden
