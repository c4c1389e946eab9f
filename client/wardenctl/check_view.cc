#include "wardenctl/check_view.h"

#include <fmt/format.h>
#include <fmt/ostream.h>

#include "wardenctl/status_view.h"

namespace warden {

std::string finding_line(const Finding& f) {
  std::string where;
  if (f.job) where = f.job_name.empty() ? fmt::format("job {}", *f.job)
                                        : fmt::format("job {} {}", *f.job, f.job_name);
  if (f.since_unix_ms) {
    where += fmt::format("{}since {} ago", where.empty() ? "" : ", ", age(*f.since_unix_ms));
  }
  return fmt::format("{}: {}{}{}; do: {}", to_string(f.kind), f.what,
                     where.empty() ? "" : " (" + where + ")",
                     f.detail.empty() ? "" : ": " + f.detail, f.action);
}

int print_check(std::ostream& out, const CheckReply& reply) {
  for (const auto& act : reply.reclaimed) {
    fmt::print(out, "reclaimed {}: {}: {}{}\n", to_string(act.kind), act.what,
               to_string(act.outcome), act.detail.empty() ? "" : " (" + act.detail + ")");
  }
  for (const auto& f : reply.findings) out << finding_line(f) << "\n";
  if (reply.clean) {
    fmt::print(out, "clean: nothing a finished job left is on this node (checked in {:.1f} ms)\n",
               reply.elapsed_ms);
  } else {
    fmt::print(out, "not clean: {} finding{}\n", reply.findings.size(),
               reply.findings.size() == 1 ? "" : "s");
  }
  if (!reply.note.empty()) fmt::print(out, "note: {}\n", reply.note);
  return reply.clean ? kCheckClean : kCheckDirty;
}

}  // namespace warden
