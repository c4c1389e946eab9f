// What a cleanup report's outcomes mean, decided once: wardend's status and node check, wardenctl's
// event and cleanup lines and the SDK's users all count and judge a report with these.
#pragma once

#include <cstddef>

#include "warden/types.h"

namespace warden {

// The cleanup ended the process (SIGTERM within the grace, or SIGKILL).
bool ended(const ProcessReport& p);
// The process runs on: it survived SIGKILL, or the job's policy kept it.
bool lives_on(const ProcessReport& p);
// The path is still there: its removal failed or was refused, or the policy kept it.
bool remains(const PathReport& p);
// The step went wrong: a path whose removal failed or was refused (kept ones are outputs the job
// asked to keep), a hook that failed or was killed at its timeout.
bool went_wrong(const PathReport& p);
bool went_wrong(const CommandReport& hook);

// A report counted by those rules.
struct ReportTally {
  std::size_t terminated = 0;
  std::size_t killed = 0;
  std::size_t unkillable = 0;
  std::size_t removed = 0;        // paths
  std::size_t paths_wrong = 0;    // paths that went wrong
  std::size_t hooks_wrong = 0;    // hooks that went wrong
};
ReportTally tally(const CleanupReport& report);

}  // namespace warden
