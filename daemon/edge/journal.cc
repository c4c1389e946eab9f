#include "edge/journal.h"

#include <chrono>
#include <set>

#include <boost/asio/post.hpp>
#include <spdlog/spdlog.h>

namespace warden {
namespace asio = boost::asio;

namespace {

// After a failed write, how long until changes kept in memory are tried again: doubling from the
// first to the last while the store keeps failing (a read-only or full disk may last).
constexpr auto kFirstRetry = std::chrono::seconds(1);
constexpr auto kLastRetry = std::chrono::seconds(60);

}  // namespace

Journal::Journal(asio::io_context& io, std::unique_ptr<Store> store)
    : io_(io), store_(std::move(store)), retry_(io), retry_after_(kFirstRetry) {}

Journal::~Journal() {
  writer_.join();
  // Stopping: what is staged but not yet handed to the writer is written now, so a graceful stop
  // loses no state change (a request still waiting for its reply was never acknowledged anyway).
  if (!store_ || pending_.empty()) return;
  std::vector<Record> records;
  for (auto& change : pending_) {
    for (auto& r : change.records) records.push_back(std::move(r));
  }
  try {
    store_->write(records);
  } catch (const std::exception& e) {
    spdlog::error("state store write at shutdown failed: {}", e.what());
  }
}

std::uint64_t Journal::stage(std::vector<Record> records, std::function<void()> undo) {
  if (!store_) {
    for (const auto& r : records) {
      if (const auto* e = std::get_if<Event>(&r); e != nullptr && on_event_) on_event_(*e, nullptr);
    }
    return 0;
  }
  pending_.push_back({.seq = ++staged_, .records = std::move(records), .undo = std::move(undo)});
  if (!writing_) start_write();
  return staged_;
}

void Journal::when_written(std::uint64_t seq, std::function<void(const Written&)> done) {
  waiters_.push_back({.seq = seq, .done = std::move(done)});
}

void Journal::start_write() {
  // Posted, not run now: every change staged by the requests already read joins this batch.
  writing_ = true;
  asio::post(io_, [this] {
    std::vector<Change> batch = std::move(pending_);
    pending_.clear();
    asio::post(writer_, [this, batch = std::move(batch)]() mutable {
      std::vector<Record> records;
      for (auto& change : batch) {
        for (auto& r : change.records) records.push_back(std::move(r));
      }
      std::string error;
      std::vector<Event> events;
      try {
        store_->write(records);
        for (auto& r : records) {
          if (auto* e = std::get_if<Event>(&r)) events.push_back(std::move(*e));
        }
      } catch (const std::exception& e) {
        error = e.what();
      }
      // The followers' lines of a batch's events (a mass death's hundreds of reports) are made
      // here, not on the loop, which then only sends them.
      std::vector<std::shared_ptr<const std::string>> lines;
      if (error.empty() && make_line_) {
        try {
          for (const auto& e : events) lines.push_back(make_line_(e));
        } catch (const std::exception&) {
          lines.clear();  // the loop makes them
        }
      }
      // Records that were not written go back with their change, for a retry.
      if (!error.empty()) {
        auto it = records.begin();
        for (auto& change : batch) {
          for (auto& r : change.records) r = std::move(*it++);
        }
      }
      asio::post(io_, [this, batch = std::move(batch), error = std::move(error),
                       events = std::move(events), lines = std::move(lines)]() mutable {
        write_finished(std::move(batch), std::move(error), std::move(events), std::move(lines));
      });
    });
  });
}

void Journal::write_finished(std::vector<Change> batch, std::string error,
                             std::vector<Event> events,
                             std::vector<std::shared_ptr<const std::string>> lines) {
  writing_ = false;
  if (on_event_) {
    for (std::size_t i = 0; i < events.size(); ++i) {
      on_event_(events[i], i < lines.size() ? lines[i] : nullptr);
    }
  }
  const std::uint64_t last = batch.empty() ? 0 : batch.back().seq;
  std::set<std::uint64_t> undone;
  if (error.empty()) {
    if (!last_error_.empty()) spdlog::info("state store writable again");
    last_error_.clear();
    retry_after_ = kFirstRetry;
  } else {
    if (error != last_error_) spdlog::error("state store write failed: {}", error);
    ++failed_writes_;
    last_error_ = error;
    // Undone newest first, so each undo finds the state its change left.
    for (auto it = batch.rbegin(); it != batch.rend(); ++it) {
      if (it->undo) {
        it->undo();
        undone.insert(it->seq);
      }
    }
    std::vector<Change> kept;
    for (auto& change : batch) {
      if (!change.undo) kept.push_back(std::move(change));
    }
    if (!kept.empty()) {
      // Kept changes go before anything staged since, so a job's later state still wins; they are
      // tried again with the next change staged, or after a pause if none comes.
      retry_.expires_after(retry_after_);
      retry_after_ = std::min(retry_after_ * 2, std::chrono::duration_cast<Duration>(kLastRetry));
      retry_.async_wait([this](boost::system::error_code ec) {
        if (!ec && !writing_ && !pending_.empty()) start_write();
      });
      bool newer = !pending_.empty();
      for (auto& change : pending_) kept.push_back(std::move(change));
      pending_ = std::move(kept);
      if (!newer) return answer_waiters(last, error, undone);
    }
  }
  answer_waiters(last, error, undone);
  if (!pending_.empty()) start_write();
}

void Journal::answer_waiters(std::uint64_t last, const std::string& error,
                             const std::set<std::uint64_t>& undone) {
  // A kept change counts as failed for its waiter even though it is written later: the request
  // that made it is answered now, and must not be told it is on disk.
  while (!waiters_.empty() && waiters_.front().seq <= last) {
    Waiter waiter = std::move(waiters_.front());
    waiters_.pop_front();
    waiter.done({.error = error, .undone = undone.contains(waiter.seq)});
  }
}

}  // namespace warden
