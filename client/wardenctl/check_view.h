// Renders the node check for people: "clean", or one line per finding with what to do, and what a
// reclaim did. The exit status follows node-problem-detector's contract (0 OK, 1 problem,
// 2 unknown), so Slurm, Kubernetes and scripts read the verdict without parsing.
#pragma once

#include <ostream>
#include <string>

#include "proto/messages.h"

namespace warden {

inline constexpr int kCheckClean = 0;
inline constexpr int kCheckDirty = 1;
inline constexpr int kCheckUnknown = 2;

// One line: "KIND: WHAT (job N NAME, 3m12s ago): DETAIL; do: ACTION".
std::string finding_line(const Finding& finding);
// Prints the verdict and returns the exit status.
int print_check(std::ostream& out, const CheckReply& reply);

}  // namespace warden
