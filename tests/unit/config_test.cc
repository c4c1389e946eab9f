// wardend's settings: flags, the config file, their defaults, and clear errors for bad ones.
#include "edge/config.h"

#include <fstream>

#include <gtest/gtest.h>

#include "tests/support/temp_dir.h"

namespace warden {
namespace {

using namespace std::chrono_literals;

std::optional<Config> parse(std::vector<std::string> args) {
  args.insert(args.begin(), "wardend");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  return parse_config(static_cast<int>(argv.size()), argv.data());
}

// The message parse() throws for `args`; "" if it does not throw.
std::string refusal(std::vector<std::string> args) {
  try {
    parse(std::move(args));
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

class ConfigTest : public ::testing::Test {
 protected:
  std::string file(const std::string& text) {
    std::string path = temp / "wardend.conf";
    std::ofstream(path) << text;
    return path;
  }
  testing::TempDir temp{"warden-config"};
};

TEST_F(ConfigTest, DefaultsAreTheShippedConfigs) {
  auto c = parse({});
  ASSERT_TRUE(c);
  EXPECT_TRUE(c->durable);
  EXPECT_EQ(c->tracking, "auto");
  EXPECT_EQ(c->max_frame, kDefaultMaxFrame);
  EXPECT_EQ(c->cleanup.kill_timeout, 5s);
  EXPECT_EQ(c->connections.idle_timeout, 3600s);
  EXPECT_EQ(c->cleanup.gpus.nvml_library, "libnvidia-ml.so.1");
  // The shipped file says the same as the built-in defaults.
  auto shipped = parse({"--config", WARDEN_SOURCE_DIR "/daemon/wardend.conf"});
  ASSERT_TRUE(shipped);
  EXPECT_EQ(shipped->cleanup.gpus, c->cleanup.gpus);
  EXPECT_EQ(shipped->cleanup.kill_timeout, c->cleanup.kill_timeout);
  EXPECT_EQ(shipped->connections.max_connections, c->connections.max_connections);
  EXPECT_EQ(shipped->limits.max_processes_per_job, c->limits.max_processes_per_job);
}

TEST_F(ConfigTest, FileKeysAreTheFlagsAndAFlagWins) {
  std::string path = file(
      "kill-timeout = 2.5\n"
      "idle-timeout = 60\n"
      "max-jobs-per-user = 7\n"
      "gpu-devices = [\"/dev/nvidia[0-9]*\", \"/dev/fake0\"]\n"
      "allowed-roots = [\"/scratch\", \"/tmp\"]\n"
      "durable = false\n");
  auto c = parse({"--config", path, "--max-jobs-per-user", "9"});
  ASSERT_TRUE(c);
  EXPECT_EQ(c->cleanup.kill_timeout, 2500ms);
  EXPECT_EQ(c->connections.idle_timeout, 60s);
  EXPECT_EQ(c->limits.max_jobs_per_user, 9u);
  EXPECT_EQ(c->cleanup.gpus.devices, (std::vector<std::string>{"/dev/nvidia[0-9]*", "/dev/fake0"}));
  EXPECT_EQ(c->cleanup.paths.allowed_roots, (std::vector<std::string>{"/scratch", "/tmp"}));
  EXPECT_FALSE(c->durable);
}

TEST_F(ConfigTest, ListFlagsTakeCommas) {
  auto c = parse({"--gpu-devices", "/dev/a,/dev/b", "--allowed-roots", "/x,/y"});
  ASSERT_TRUE(c);
  EXPECT_EQ(c->cleanup.gpus.devices, (std::vector<std::string>{"/dev/a", "/dev/b"}));
  EXPECT_EQ(c->cleanup.paths.allowed_roots, (std::vector<std::string>{"/x", "/y"}));
}

TEST_F(ConfigTest, BadSettingsAreRefusedWithWhatToDo) {
  std::string misspelt = refusal({"--config", file("kil-timeout = 3\n")});
  EXPECT_NE(misspelt.find("config file"), std::string::npos) << misspelt;
  EXPECT_NE(misspelt.find("kil-timeout"), std::string::npos) << misspelt;

  std::string range = refusal({"--kill-timeout", "0"});
  EXPECT_NE(range.find("--kill-timeout"), std::string::npos) << range;
  EXPECT_NE(range.find("wardend --help"), std::string::npos) << range;

  EXPECT_NE(refusal({"--allowed-roots", "relative/dir"}).find("not an absolute path"),
            std::string::npos);
  EXPECT_NE(refusal({"--tracking", "sometimes"}), "");
  EXPECT_NE(refusal({"--max-frame", "10"}), "");
  EXPECT_NE(refusal({"--no-such-flag"}), "");
}

}  // namespace
}  // namespace warden
