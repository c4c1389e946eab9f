// Renders the event history for people, and reads the --since times they type.
#pragma once

#include <cstdint>
#include <optional>
#include <ostream>
#include <string>

#include "proto/messages.h"

namespace warden {

// One line per event: time, job, name, user, state, and why or what cleanup did.
void print_event(std::ostream& out, const Event& event);

// "90s", "15m", "2h", "3d" (that long ago), a date "2026-11-28" or "2026-11-28T14:05:00" (local
// time), or seconds since the epoch. nullopt if it is none of these.
std::optional<std::int64_t> parse_since(const std::string& text);

}  // namespace warden
