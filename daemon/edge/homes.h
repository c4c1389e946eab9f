// Where each job's paths are resolved and its hooks run: the view (namespaces and root) of the
// container its client registered from, held until the job's cleanup is done, so that its paths
// can be removed after every process in it is gone. A job on the host has wardend's own.
#pragma once

#include <map>
#include <memory>

#include "core/supervisor.h"
#include "world/namespaces.h"

namespace warden {

class Homes {
 public:
  void keep(JobId id, std::shared_ptr<const View> view) { views_[id] = std::move(view); }
  void forget(JobId id) { views_.erase(id); }
  // The job's view; nullptr where it lived in a container that a restarted wardend could not
  // find again (find_again()).
  std::shared_ptr<const View> of(const Job& job) const;
  // After a restart: a container job's view, found again through a process of it still alive.
  // False, with a warning, where none is left.
  bool find_again(const Job& job);

 private:
  std::map<JobId, std::shared_ptr<const View>> views_;
};

}  // namespace warden
