// Journal: group commit of the event loop's changes to the durable store.
//
// The loop applies a request to the core at once and stages its records here; the reply waits
// until they are written. Changes staged while a write is in flight go together in the next one, so
// N concurrent requests cost one fsync, not N, and the loop never blocks on the disk.
//
// A change that cannot be written (disk full, read-only, I/O error) fails as a whole: a change
// made with an `undo` is taken back in memory and its request answered with an error; one without
// (a state change wardend made itself, which must not be forgotten) is kept and retried.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>

#include "edge/store.h"

namespace warden {

// How a change ended up.
struct Written {
  std::string error;    // empty: on disk
  bool undone = false;  // not written and taken back (else kept in memory and retried)
};

// Single-threaded like the service: every call runs on the io_context's thread.
class Journal {
 public:
  // Without a store (durability off) nothing is written and every change counts as written.
  Journal(boost::asio::io_context& io, std::unique_ptr<Store> store);
  Journal(const Journal&) = delete;
  Journal& operator=(const Journal&) = delete;
  ~Journal();  // writes what is still staged

  // Queues one change; returns its sequence number (0 without a store: nothing to wait for).
  std::uint64_t stage(std::vector<Record> records, std::function<void()> undo = {});
  std::uint64_t last_staged() const { return staged_; }
  // Calls `done` on the loop once the change `seq` is written or has failed.
  void when_written(std::uint64_t seq, std::function<void(const Written&)> done);

  Store* store() { return store_.get(); }
  // What an event's followers are sent, made of it off the loop; null: nothing to make now.
  using LineMaker = std::function<std::shared_ptr<const std::string>(const Event&)>;
  using EventHandler =
      std::function<void(const Event&, const std::shared_ptr<const std::string>& line)>;
  // `handler` is called on the loop with each event once it is written (at once, without a
  // store), and with the line `make_line` made of it on the writer thread beside the write (null
  // where it made none). Set once, before the first change is staged. `make_line` may run while
  // the journal's owner is being destroyed (a write in flight at shutdown): it holds what it uses.
  void on_event_written(EventHandler handler, LineMaker make_line) {
    on_event_ = std::move(handler);
    make_line_ = std::move(make_line);
  }
  std::uint64_t failed_writes() const { return failed_writes_; }

 private:
  struct Change {
    std::uint64_t seq = 0;
    std::vector<Record> records;
    std::function<void()> undo;
  };
  struct Waiter {
    std::uint64_t seq = 0;
    std::function<void(const Written&)> done;
  };

  void start_write();
  void write_finished(std::vector<Change> batch, std::string error, std::vector<Event> events,
                      std::vector<std::shared_ptr<const std::string>> lines);
  void answer_waiters(std::uint64_t last, const std::string& error,
                      const std::set<std::uint64_t>& undone);

  // Constant after construction.
  boost::asio::io_context& io_;
  const std::unique_ptr<Store> store_;
  boost::asio::thread_pool writer_{1};  // the store's writes, one batch at a time

  // Mutable state.
  std::vector<Change> pending_;  // staged, not yet handed to the writer
  bool writing_ = false;
  std::uint64_t staged_ = 0;
  std::deque<Waiter> waiters_;  // by seq
  std::string last_error_;
  std::uint64_t failed_writes_ = 0;
  boost::asio::steady_timer retry_;  // rewrites kept changes after a failure
  Duration retry_after_;
  EventHandler on_event_;
  LineMaker make_line_;  // called on the writer thread
};

}  // namespace warden
