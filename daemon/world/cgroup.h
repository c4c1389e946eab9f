// Tracking cgroups: a cgroup v2 leaf per job, beneath the job's own cgroup, in which the kernel
// keeps every process the job forks. The service and the cleanup engine reach the kernel through
// the Cgroups interface, so that their logic is tested with a fake (tests/support/fake_cgroups.h).
#pragma once

#include <sys/types.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>

namespace warden {

// Where the cgroup v2 hierarchy is mounted, from the text of /proc/self/mountinfo (on a hybrid host
// /sys/fs/cgroup/unified, else usually /sys/fs/cgroup); nullopt if there is none.
std::optional<std::string> find_cgroup2_mount(std::string_view mountinfo);
// A process's cgroup v2 path ("/system.slice/x.service"), from the text of /proc/PID/cgroup (its
// "0::" line); nullopt if there is none or the path lies outside the reader's cgroup namespace.
std::optional<std::string> parse_cgroup2_path(std::string_view proc_cgroup);
// The cgroup above `cgroup` ("/" for a top-level one).
std::string parent_cgroup(const std::string& cgroup);
// Whether `inner` is `outer` or a cgroup beneath it (a job registered inside a job); false for
// nullopt (a process that is gone).
bool cgroup_within(const std::optional<std::string>& inner, const std::string& outer);
// This wardend's id: random, made once and kept in STATE_DIR/instance, so that a restarted wardend
// finds its cgroups and its jobs' processes again and two wardends on one node never take each
// other's. Throws std::system_error if it can neither read nor make the file (a read-only state
// directory without one gets an id for this run only).
std::string instance_id(const std::string& state_dir);
// The prefix of this wardend's cgroup names, "warden-<instance id>-" (a job's is the prefix and
// its id).
std::string cgroup_prefix(const std::string& state_dir);

// The kernel side of tracking cgroups. Cgroups are named by their path in the v2 hierarchy, as
// /proc/PID/cgroup shows them ("/user.slice/warden-1f2e-7"). Every call runs on the event loop;
// each is a few small writes or reads of cgroupfs, which never touches a disk. Calls that change
// something throw std::system_error naming what failed; a process that is gone reads as ESRCH.
class Cgroups {
 public:
  virtual ~Cgroups() = default;

  // Makes the cgroup `name` beneath `parent` and returns its path; one that exists already is
  // taken as it is. Nothing is enabled in it: the limits and accounting of the cgroups above
  // still cover its members.
  virtual std::string create(const std::string& parent, const std::string& name) = 0;
  virtual void move(pid_t pid, const std::string& cgroup) = 0;
  // The cgroup `pid` is in now; nullopt if the process is gone.
  virtual std::optional<std::string> cgroup_of(pid_t pid) = 0;
  // Every process in `cgroup` and in cgroups beneath it (a job registered inside a job).
  virtual std::vector<pid_t> members(const std::string& cgroup) = 0;
  virtual void freeze(const std::string& cgroup, bool frozen) = 0;
  // SIGKILL to every member at once (cgroup.kill); frozen members die too.
  virtual void kill(const std::string& cgroup) = 0;
  virtual bool populated(const std::string& cgroup) = 0;
  // Calls `emptied` once, from the event loop, when no process is left in `cgroup` (at once if
  // none is now), unless forget_empty() is called first.
  virtual void when_empty(const std::string& cgroup, std::function<void()> emptied) = 0;
  virtual void forget_empty(const std::string& cgroup) = 0;
  // Removes `cgroup` and the empty cgroups beneath it. Returns 0, or the errno of the rmdir that
  // failed (EBUSY: a member is still alive).
  virtual int remove(const std::string& cgroup) = 0;
  // Every cgroup in the hierarchy whose name starts with `prefix` (a restart's look for leftovers).
  virtual std::vector<std::string> find(const std::string& prefix) = 0;
};

// The real thing: cgroupfs at the v2 mount, with one inotify descriptor on the event loop for
// every cgroup.events being waited on (the kernel reports each change of it as a modification).
class KernelCgroups final : public Cgroups {
 public:
  // nullptr, with `why` set, where this wardend cannot have tracking cgroups (no v2 hierarchy
  // mounted, or mounted read-only).
  static std::unique_ptr<KernelCgroups> open(const boost::asio::any_io_executor& executor,
                                             std::string& why);
  KernelCgroups(const boost::asio::any_io_executor& executor, std::string mount);
  KernelCgroups(const KernelCgroups&) = delete;
  KernelCgroups& operator=(const KernelCgroups&) = delete;

  std::string create(const std::string& parent, const std::string& name) override;
  void move(pid_t pid, const std::string& cgroup) override;
  std::optional<std::string> cgroup_of(pid_t pid) override;
  std::vector<pid_t> members(const std::string& cgroup) override;
  void freeze(const std::string& cgroup, bool frozen) override;
  void kill(const std::string& cgroup) override;
  bool populated(const std::string& cgroup) override;
  void when_empty(const std::string& cgroup, std::function<void()> emptied) override;
  void forget_empty(const std::string& cgroup) override;
  int remove(const std::string& cgroup) override;
  std::vector<std::string> find(const std::string& prefix) override;

  const std::string& mount() const { return mount_; }

 private:
  std::string file(const std::string& cgroup, const char* name) const;
  void read_notifications();
  void check(int watch);

  // Constant after construction.
  const std::string mount_;
  // Mutable state.
  boost::asio::posix::stream_descriptor inotify_;
  char buffer_[4096];
  bool reading_ = false;
  struct Waiting {
    std::string cgroup;
    std::function<void()> emptied;
  };
  std::map<int, Waiting> waiting_;  // by inotify watch
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace warden
