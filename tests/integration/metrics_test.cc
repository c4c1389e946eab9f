// Metrics in Prometheus text format: from `wardenctl metrics` and from the loopback HTTP listener,
// fetched by a real HTTP client (curl) and checked against the exposition format.
#include <signal.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <regex>
#include <set>
#include <sstream>

#include "tests/support/daemon_test.h"

namespace warden::testing {
namespace {

// The checks `promtool check metrics` makes that matter here: every sample belongs to a family
// declared by # HELP and # TYPE before it, names and labels are well formed, values are numbers,
// histogram buckets are cumulative and end at +Inf with the count. Returns the problems found.
std::vector<std::string> exposition_problems(const std::string& text) {
  static const std::regex sample(
      R"(^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="[^"\\\n]*")(,[a-zA-Z_][a-zA-Z0-9_]*="[^"\\\n]*")*\})? ([-+]?([0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?|Inf|NaN))$)");
  static const std::regex help(R"(^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) .+$)");
  static const std::regex type(
      R"(^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped)$)");
  std::vector<std::string> problems;
  std::map<std::string, std::string> types;
  std::set<std::string> helped;
  std::map<std::string, double> last_bucket;
  std::istringstream in(text);
  std::string line;
  if (text.empty() || text.back() != '\n') problems.push_back("does not end with a newline");
  while (std::getline(in, line)) {
    std::smatch m;
    if (std::regex_match(line, m, help)) {
      helped.insert(m[1]);
    } else if (std::regex_match(line, m, type)) {
      if (!helped.contains(m[1])) problems.push_back("TYPE before HELP: " + line);
      if (types.contains(m[1])) problems.push_back("family declared twice: " + line);
      types[m[1]] = m[2];
    } else if (std::regex_match(line, m, sample)) {
      std::string name = m[1];
      std::string family = name;
      for (const char* suffix : {"_bucket", "_sum", "_count"}) {
        if (name.ends_with(suffix) &&
            types.contains(name.substr(0, name.size() - std::strlen(suffix)))) {
          family = name.substr(0, name.size() - std::strlen(suffix));
        }
      }
      if (!types.contains(family)) problems.push_back("sample without TYPE: " + line);
      if (types[family] == "counter" && !name.ends_with("_total"))
        problems.push_back("counter without _total: " + name);
      double value = m[5] == "Inf" ? INFINITY : std::stod(m[5]);
      if (name.ends_with("_bucket")) {
        if (value < last_bucket[family]) problems.push_back("buckets not cumulative: " + line);
        last_bucket[family] = value;
      }
      if (name.ends_with("_count") && types[family] == "histogram" &&
          value != last_bucket[family]) {
        problems.push_back("histogram count differs from the +Inf bucket: " + line);
      }
    } else if (!line.empty()) {
      problems.push_back("not a sample or comment: " + line);
    }
  }
  return problems;
}

double sample_value(const std::string& text, const std::string& sample) {
  auto at = text.find("\n" + sample + " ");
  if (at == std::string::npos) return -1;
  return std::stod(text.substr(at + sample.size() + 2));
}

TEST(MetricsFormat, TheCheckerCatchesWhatItShould) {
  EXPECT_TRUE(exposition_problems("# HELP a_total x\n# TYPE a_total counter\na_total 1\n").empty());
  EXPECT_FALSE(exposition_problems("a_total 1\n").empty());
  EXPECT_FALSE(exposition_problems("# HELP a x\n# TYPE a gauge\na{l=\"v} 1\n").empty());
  EXPECT_FALSE(exposition_problems("# HELP h x\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\n"
                                   "h_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n")
                   .empty());
}

class Metrics : public DaemonTest {
 protected:
  Metrics() : DaemonTest({"--metrics-listen", "127.0.0.1:0"}) {}

  int port() {
    std::smatch m;
    std::string log = daemon.log();
    if (!std::regex_search(log, m, std::regex(R"(metrics on http://localhost:(\d+)/metrics)")))
      return -1;
    return std::stoi(m[1]);
  }
};

TEST_F(Metrics, HttpEndpointAnswersCurlWithValidPrometheusText) {
  auto t = tree({Behaviour::sleep});
  JobId id = client.register_job({.name = "measured", .pid = t.main, .grace_s = 0.2});
  client.add_process(id, t.workers[0]);
  EXPECT_THROW(client.heartbeat(999), Error);  // one refusal, counted
  ::kill(t.main, SIGKILL);
  ASSERT_EQ(wait_for_state(id, JobState::cleaned).state, JobState::cleaned);

  ASSERT_GT(port(), 0) << daemon.log();
  std::string url = "http://127.0.0.1:" + std::to_string(port()) + "/metrics";
  auto r = run_command({"/usr/bin/curl", "-sS", "--fail", "-D", "/dev/stderr", url});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.err.find("Content-Type: text/plain; version=0.0.4"), std::string::npos) << r.err;
  auto problems = exposition_problems(r.out);
  EXPECT_TRUE(problems.empty()) << ::testing::PrintToString(problems) << "\n" << r.out;
  EXPECT_EQ(sample_value(r.out, "warden_jobs{state=\"cleaned\"}"), 1) << r.out;
  EXPECT_EQ(sample_value(r.out, "warden_cleanups_total{reason=\"failed\"}"), 1) << r.out;
  EXPECT_EQ(
      sample_value(r.out,
                   "warden_cleanup_outcomes_total{resource=\"process\",outcome=\"terminated\"}"),
      1)
      << r.out;
  EXPECT_EQ(sample_value(r.out, "warden_cleanup_duration_seconds_count"), 1) << r.out;
  EXPECT_EQ(sample_value(r.out, "warden_requests_refused_total{code=\"not_found\"}"), 1) << r.out;

  // promtool, where Debian's prometheus package put it, agrees.
  if (::access("/usr/bin/promtool", X_OK) == 0) {
    auto check = run_command({"/bin/sh", "-c", "curl -s " + url + " | promtool check metrics"});
    EXPECT_EQ(check.status, 0) << check.out << check.err;
  }
  auto wrong = run_command({"/usr/bin/curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                            "http://127.0.0.1:" + std::to_string(port()) + "/other"});
  EXPECT_EQ(wrong.out, "404");
}

TEST_F(Metrics, WardenctlMetricsPrintsTheSameFamilies) {
  auto r = run_command({WARDENCTL_PATH, "--socket", daemon.socket(), "metrics"});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(exposition_problems(r.out).empty()) << r.out;
  EXPECT_NE(r.out.find("# TYPE warden_tracked_processes gauge"), std::string::npos);
}

TEST(MetricsListen, RefusesAnAddressOffTheNode) {
  auto r = run_command({WARDEND_PATH, "--socket", "/tmp/warden-never.sock", "--state-dir",
                        "/tmp/warden-never", "--no-durable", "--metrics-listen", "0.0.0.0:9464"});
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("only a loopback address"), std::string::npos) << r.err;
  std::error_code ec;
  std::filesystem::remove_all("/tmp/warden-never", ec);
}

}  // namespace
}  // namespace warden::testing
