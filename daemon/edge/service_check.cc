// The node check: a snapshot of the jobs taken on the event loop, the look at the node (and the
// reclaim) on the views thread, the verdict filtered to what the asker may see.
#include <chrono>

#include <boost/asio/post.hpp>
#include <spdlog/spdlog.h>

#include "core/wall_clock.h"
#include "warden/outcomes.h"
#include "edge/service.h"

namespace warden {
namespace {

// Root sees every finding; another user the findings about its own processes and files, and the
// node's own (GPU memory, a full /dev/shm) without the names of other users.
bool sees(const Caller& caller, Finding& f) {
  if (caller.is_admin()) return true;
  if (f.kind == FindingKind::shm_full) {
    f.detail.clear();
    return true;
  }
  if (f.kind == FindingKind::unheld_gpu_memory) return true;
  return f.uid && *f.uid == caller.uid;
}

// A process named as the asker numbers it; none where it is outside the asker's PID namespace.
void renumber(const Caller& caller, Finding& f) {
  if (!f.pid || caller.view == nullptr || caller.view->shares_pids()) return;
  f.pid = caller.view->local_pid(*f.pid);
}

}  // namespace

std::vector<CheckedJob> Service::checked_jobs(bool with_cleaned) const {
  std::vector<CheckedJob> out;
  for (const Job* job : core_.visible_jobs(Caller{.uid = 0})) {
    if (!with_cleaned && job->state == JobState::cleaned) continue;
    CheckedJob& c = out.emplace_back();
    c.id = job->id;
    c.name = job->spec.name;
    c.uid = job->uid;
    c.active = job->state != JobState::cleaned;
    if (!job->cgroup.empty()) c.cgroups.push_back(job->cgroup);
    c.cgroups.insert(c.cgroups.end(), job->more_cgroups.begin(), job->more_cgroups.end());
    c.paths_here = !job->spec.home;
    c.processes.push_back(job->main);
    for (const auto& w : job->workers) {
      if (!c.active || !w.exited_at) c.processes.push_back(w.identity);
    }
    if (c.active || !job->report) continue;
    const CleanupReport& r = *job->report;
    c.finished_unix_ms = to_unix_ms(job->finished);
    for (const auto& p : r.processes) {
      if (p.outcome == Outcome::unkillable) c.unkillable.push_back(p);
    }
    for (const auto& p : r.paths) {
      // Paths kept by policy are outputs the job asked to keep, not dirt.
      if (!went_wrong(p)) continue;
      for (const auto& registered : job->paths) {
        if (registered.kind == p.kind && registered.path == p.path) {
          c.left.push_back({.path = registered, .outcome = p.outcome, .detail = p.detail});
          break;
        }
      }
    }
  }
  return out;
}

std::function<CheckReply()> Service::check(const Caller& caller, const CheckRequest& request) {
  if (request.reclaim && !caller.is_admin()) {
    throw Error(ErrorCode::permission_denied,
                "only root may reclaim (it ends other users' processes); run `wardenctl check` "
                "without --reclaim to see what you may, or ask an operator");
  }
  auto jobs = checked_jobs(/*with_cleaned=*/true);
  const bool root_view = caller.is_admin();
  return [this, alive = std::weak_ptr<bool>(alive_), jobs = std::move(jobs), caller, request, root_view,
          check = check_options_, cleanup = cleanup_options_, gpus = gpus_]() {
    const auto start = Clock::now();
    NodeCheckContext context{.kernel = kernel_, .cgroups = cgroups_, .gpus = gpus.get()};
    NodeLook look = look_at_node(jobs, check, cleanup, context);
    CheckReply reply{.note = look.note};
    if (request.reclaim && !look.found.empty()) {
      reply.reclaimed = reclaim_node(look.found, from_seconds(request.grace_s), cleanup, context);
      for (const auto& act : reply.reclaimed) {
        spdlog::info("check reclaim kind={} what={:?} outcome={} detail={:?}", to_string(act.kind),
                     act.what, to_string(act.outcome), act.detail);
      }
      look = look_at_node(jobs, check, cleanup, context);
    }
    for (Found& found : look.found) {
      if (!sees(caller, found.finding)) continue;
      renumber(caller, found.finding);
      reply.findings.push_back(std::move(found.finding));
    }
    reply.clean = reply.findings.empty();
    reply.elapsed_ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
    if (root_view) {
      boost::asio::post(io_, [this, alive, reply] {
        if (alive.lock()) checked(reply);
      });
    }
    return reply;
  };
}

void Service::checked(const CheckReply& reply) {
  metrics_.node_checked(reply);
  if (!reply.clean) {
    spdlog::info("check clean=false findings={}", reply.findings.size());
  }
}

void Service::schedule_check(Duration after) {
  check_timer_.cancel();
  if (check_options_.interval == Duration::zero()) return;
  check_timer_.expires_after(after);
  check_timer_.async_wait([this](boost::system::error_code ec) {
    if (ec) return;
    boost::asio::post(views_, [look = check(Caller{.uid = 0}, {})] { look(); });
    schedule_check(check_options_.interval);
  });
}

}  // namespace warden
