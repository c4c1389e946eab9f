#include "world/kernel.h"

namespace warden {

std::vector<Discovered> RealKernel::discover(const DiscoveryQuery& query,
                                             std::chrono::steady_clock::time_point asked,
                                             CookieMemo& memo) {
  scans_made_.fetch_add(1, std::memory_order_relaxed);
  // A non-root job's processes must run as its user: only then is each one's uid read.
  auto processes = scans_.processes(asked, /*with_uid=*/query.owner != 0);
  auto environ_of = [this](pid_t pid) { return scans_.cookie_entries(pid); };
  return warden::discover(*processes, query, environ_of, memo);
}

}  // namespace warden
