// What wardend counts for Prometheus, and the text exposition format it is served in (by the
// `metrics` op, `wardenctl metrics`, and the optional loopback HTTP listener).
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "proto/messages.h"
#include "warden/errors.h"

namespace warden {

// Point-in-time values the service reads off its state when asked.
struct Gauges {
  std::map<JobState, std::size_t> jobs;  // running, cleaning, cleaned (kept for status)
  std::size_t processes = 0;             // tracked processes (pidfds held)
  std::size_t paths = 0;                 // registered paths of jobs not yet cleaned
  std::size_t cleanups_running = 0;
  std::size_t event_subscribers = 0;
  std::uint64_t store_write_failures = 0;
  std::uint64_t proc_scans = 0;  // cleanups' looks through /proc for a job's processes
  GpusReply gpus;  // the node's GPUs and their holders, attributed to jobs
};

class Metrics {
 public:
  void cleanup_finished(const CleanupReport& report);
  void refused(ErrorCode code);
  // The verdict of the latest node check made with root's view.
  void node_checked(const CheckReply& reply);
  std::string render(const Gauges& gauges) const;

 private:
  // Upper bounds of the cleanup duration histogram, in seconds.
  static constexpr std::array<double, 13> kBuckets{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                                   1,     2.5,  5,     10,   30,  60};

  std::map<JobState, std::uint64_t> cleanups_;                         // by reason
  std::map<std::pair<std::string, Outcome>, std::uint64_t> outcomes_;  // by resource kind
  std::array<std::uint64_t, kBuckets.size()> duration_buckets_{};      // not cumulative
  std::uint64_t duration_count_ = 0;
  double duration_sum_s_ = 0;
  std::map<ErrorCode, std::uint64_t> refused_;
  std::map<std::string, std::uint64_t, std::less<>> reclaimed_;  // bytes, by kind
  struct NodeVerdict {
    bool clean = true;
    std::map<FindingKind, std::size_t> findings;
    std::int64_t unix_ms = 0;
  };
  std::optional<NodeVerdict> node_;  // none before the first check
};

}  // namespace warden
