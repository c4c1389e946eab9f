// libFuzzer target: bytes from a client, as wardend reads them. The frame decoder splits them into
// lines (in two reads, split where the first byte says), each line is parsed as JSON and, whatever
// its "op", validated by every request parser; what a parser accepts must survive a round trip
// through its JSON form, and a heartbeat read in its plain form must read the same through JSON.
// Any crash, sanitizer report or unexpected exception is a finding.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "proto/framing.h"
#include "proto/messages.h"
#include "proto/plain_heartbeat.h"
#include "warden/errors.h"

namespace {

using warden::json;

template <class Parse>
void check(const json& request, Parse parse) {
  try {
    auto parsed = parse(request);
    json again = warden::to_json(parsed);
    parse(again);  // what the daemon accepts, a client can send back unchanged
  } catch (const warden::Error& e) {
    // A refusal must be a bad request with a message, nothing else.
    if (e.code() != warden::ErrorCode::bad_request || std::string_view(e.what()).empty())
      __builtin_trap();
  }
}

template <class Request>
Request read(const json& j) {
  return warden::from_json<Request>(j);
}

void validate(const json& r) {
  check(r, read<warden::HelloRequest>);
  check(r, read<warden::RegisterJobRequest>);
  check(r, read<warden::AddProcessRequest>);
  for (const auto& kind : warden::path_kinds()) {
    check(r, [&kind](const json& j) {
      return warden::from_json(j, warden::AddPathRequest{.kind = kind.kind});
    });
  }
  check(r, read<warden::AddHookRequest>);
  check(r, read<warden::HeartbeatRequest>);
  check(r, read<warden::EndJobRequest>);
  check(r, read<warden::StatusRequest>);
  check(r, read<warden::CleanupRequest>);
  check(r, read<warden::EventsRequest>);
  check(r, read<warden::CheckRequest>);
}

// A line the plain reading takes (wardend then answers it without parsing JSON) is a heartbeat the
// full reading accepts, with the same job and id and nothing more.
void compare_plain(std::string_view line, const json& request) {
  auto beat = warden::plain_heartbeat(line);
  if (!beat) return;
  if (!request.is_object()) __builtin_trap();
  auto full = warden::from_json<warden::HeartbeatRequest>(request);  // a throw is a finding
  if (full.job != beat->job || full.unsupervised_s != 0 || request.size() != (beat->id ? 3 : 2)) {
    __builtin_trap();
  }
  if (beat->id && (!request.at("id").is_number_unsigned() ||
                   request.at("id").get<std::uint64_t>() != *beat->id)) {
    __builtin_trap();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  warden::FrameDecoder decoder(4096);
  std::size_t split = size == 0 ? 0 : data[0] % (size + 1);
  for (auto [from, to] : {std::pair{std::size_t{0}, split}, std::pair{split, size}}) {
    auto space = decoder.prepare(to - from);
    std::copy(data + from, data + to, space.data());
    decoder.commit(to - from);
    while (auto line = decoder.next()) {
      json request = json::parse(*line, nullptr, /*allow_exceptions=*/false);
      compare_plain(*line, request);
      if (request.is_object()) validate(request);
    }
    if (decoder.overflowed()) break;
  }
  return 0;
}
