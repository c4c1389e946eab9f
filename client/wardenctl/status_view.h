// Renders job status for people: a table of jobs, or one job in detail with its cleanup report.
#pragma once

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "proto/messages.h"

namespace warden {

// The user's name, or the uid as a number when it has none.
std::string user_name(uid_t uid);
// Now, in milliseconds since the epoch.
std::int64_t now_unix_ms();
// How long ago: "4s", "3m12s", "2h05m", "3d04h", short enough for a table column.
std::string age(std::int64_t since_unix_ms);

void print_job_table(std::ostream& out, const std::vector<JobStatus>& jobs);
void print_job_detail(std::ostream& out, const JobStatus& job);

}  // namespace warden
