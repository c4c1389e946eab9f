// Renders GPUs for people: the node's GPUs with their holders, and a cleanup report's GPU part.
#pragma once

#include <cstdint>
#include <ostream>
#include <string>

#include "proto/messages.h"

namespace warden {

// "1.5 GiB", "300 MiB", "12 KiB".
std::string bytes_text(std::uint64_t bytes);

void print_gpus(std::ostream& out, const GpusReply& gpus);
// The "gpus" part of a cleanup report (nothing where the job held no GPU).
void print_gpu_report(std::ostream& out, const CleanupReport& report);

}  // namespace warden
