// Heartbeats read without a JSON document (proto/plain_heartbeat.h): the plain form is recognised
// however a client writes it, and anything else is left to the full parser.
#include "proto/plain_heartbeat.h"

#include <string>

#include <gtest/gtest.h>

namespace warden {
namespace {

TEST(PlainHeartbeat, RecognisesThePlainFormHoweverItIsWritten) {
  // As the C++ client writes it (json's sorted keys), as Python's json.dumps does, and others.
  for (const std::string line :
       {R"({"id":7,"job":42,"op":"heartbeat"})", R"({"op": "heartbeat", "job": 42, "id": 7})",
        " {\t\"job\" :42 ,\"op\":\"heartbeat\",\r\n\"id\": 7 } "}) {
    auto beat = plain_heartbeat(line);
    ASSERT_TRUE(beat) << line;
    EXPECT_EQ(beat->job, 42u) << line;
    EXPECT_EQ(beat->id, 7u) << line;
  }
  auto without_id = plain_heartbeat(R"({"op":"heartbeat","job":1})");
  ASSERT_TRUE(without_id);
  EXPECT_FALSE(without_id->id);
  auto largest = plain_heartbeat(R"({"op":"heartbeat","job":9999999999999999999,"id":0})");
  ASSERT_TRUE(largest);
  EXPECT_EQ(largest->job, 9999999999999999999u);
  EXPECT_EQ(largest->id, 0u);
}

TEST(PlainHeartbeat, LeavesEverythingElseToTheFullParser) {
  for (const std::string line : {
           R"({"op":"heartbeat","job":1,"unsupervised_s":3})",  // another member
           R"({"op":"heartbeat","job":1,"job":2})",             // one given twice
           R"({"op":"heartbeat","op":"heartbeat","job":1})",
           R"({"op":"heartbeat","job":1,"id":"a"})",  // a string id
           R"({"op":"heartbeat","job":0})",           // no job's id
           R"({"op":"heartbeat","job":-1})",          // not an unsigned integer
           R"({"op":"heartbeat","job":1.5})",
           R"({"op":"heartbeat","job":1e3})",
           R"({"op":"heartbeat","job":01})",
           R"({"op":"heartbeat","job":"1"})",
           R"({"op":"heartbeat","job":12345678901234567890})",  // over 19 digits
           R"({"op":"heartbeat","\u006aob":1})",                // an escape
           R"({"op":"heartbeat"})",                             // no job
           R"({"job":1})",                                      // no op
           R"({"op":"status","job":1})",
           R"({"op":"heartbeat","job":1} x)",  // more after the object
           R"({"op":"heartbeat","job":1,})",
           R"({"op":"heartbeat","job":1)",
           R"({"op":"heartbeat" "job":1})",
           R"({"op":"heart)",
           "{}",
           "[1]",
           "",
       }) {
    EXPECT_FALSE(plain_heartbeat(line)) << line;
  }
}

}  // namespace
}  // namespace warden
