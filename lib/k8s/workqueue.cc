#include "lib/k8s/workqueue.h"

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

namespace daxlease::k8s {

WorkQueue::WorkQueue(base::Clock& clock, WorkQueueOptions options)
    : clock_(clock), options_(options) {
  tokens_ = options_.burst;
  bucket_time_ = clock_.Now();
}

void WorkQueue::AddLocked(const std::string& key) {
  if (shutdown_ || dirty_.count(key) != 0) return;
  dirty_.insert(key);
  if (options_.observer != nullptr) options_.observer->Added();
  if (processing_.count(key) != 0) return;  // re-queued by Done()
  PushLocked(key);
}

void WorkQueue::PushLocked(const std::string& key) {
  queue_.push_back(key);
  if (options_.observer == nullptr) return;
  queued_at_[key] = clock_.Now();
  options_.observer->Depth(queue_.size());
}

void WorkQueue::PromoteDueLocked() {
  if (delayed_.empty()) return;
  const absl::Time now = clock_.Now();
  // Ready in due order, ties by key.
  std::vector<std::pair<absl::Time, std::string>> due;
  for (auto it = delayed_.begin(); it != delayed_.end();) {
    if (it->second <= now) {
      due.emplace_back(it->second, it->first);
      it = delayed_.erase(it);
    } else {
      ++it;
    }
  }
  std::sort(due.begin(), due.end());
  for (const auto& [t, key] : due) AddLocked(key);
}

void WorkQueue::Add(absl::string_view key) {
  absl::MutexLock l(&mu_);
  AddLocked(std::string(key));
}

void WorkQueue::AddAfter(absl::string_view key, absl::Duration d) {
  absl::MutexLock l(&mu_);
  if (shutdown_) return;
  std::string k(key);
  if (d <= absl::ZeroDuration()) {
    AddLocked(k);
    return;
  }
  absl::Time at = clock_.Now() + d;
  auto it = delayed_.find(k);
  if (it == delayed_.end()) {
    delayed_.emplace(k, at);
  } else {
    it->second = std::min(it->second, at);
  }
}

absl::Duration WorkQueue::BackoffLocked(const std::string& key) const {
  auto it = failures_.find(key);
  int n = it == failures_.end() ? 0 : it->second;
  // base * 2^n without overflow.
  double factor = std::ldexp(1.0, std::min(n, 62));
  absl::Duration d = options_.base_delay * factor;
  return std::min(d, options_.max_delay);
}

void WorkQueue::AddRateLimited(absl::string_view key) {
  std::string k(key);
  absl::Duration d;
  {
    absl::MutexLock l(&mu_);
    d = BackoffLocked(k);
    ++failures_[k];
    if (options_.observer != nullptr) options_.observer->Retried();
    if (options_.qps > 0) {
      // Token bucket: reserve the next slot; the wait is how far in the
      // future that slot is.
      const absl::Time now = clock_.Now();
      const absl::Duration per = absl::Seconds(1) / options_.qps;
      tokens_ = std::min<double>(
          options_.burst,
          tokens_ + absl::FDivDuration(now - bucket_time_, per));
      bucket_time_ = now;
      tokens_ -= 1;
      if (tokens_ < 0) d = std::max(d, per * (-tokens_));
    }
  }
  AddAfter(k, d);
}

void WorkQueue::Forget(absl::string_view key) {
  absl::MutexLock l(&mu_);
  failures_.erase(std::string(key));
}

int WorkQueue::NumRequeues(absl::string_view key) const {
  absl::MutexLock l(&mu_);
  auto it = failures_.find(std::string(key));
  return it == failures_.end() ? 0 : it->second;
}

absl::Duration WorkQueue::NextBackoff(absl::string_view key) const {
  absl::MutexLock l(&mu_);
  return BackoffLocked(std::string(key));
}

std::optional<std::string> WorkQueue::PopLocked() {
  if (queue_.empty()) return std::nullopt;
  std::string key = std::move(queue_.front());
  queue_.pop_front();
  dirty_.erase(key);
  processing_.insert(key);
  if (options_.observer != nullptr) {
    if (auto it = queued_at_.find(key); it != queued_at_.end()) {
      options_.observer->Waited(clock_.Now() - it->second);
      queued_at_.erase(it);
    }
    options_.observer->Depth(queue_.size());
  }
  return key;
}

std::optional<std::string> WorkQueue::TryGet() {
  absl::MutexLock l(&mu_);
  PromoteDueLocked();
  return PopLocked();
}

std::optional<std::string> WorkQueue::Get() {
  absl::MutexLock l(&mu_);
  while (true) {
    PromoteDueLocked();
    if (!queue_.empty()) return PopLocked();
    if (shutdown_) return std::nullopt;
    // Delayed keys are due by the injected clock, which a real-time wait
    // cannot observe: poll it. Without delayed keys, sleep until Add.
    auto has_work = [this]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
      return !queue_.empty() || shutdown_;
    };
    if (delayed_.empty()) {
      // Until Add, or AddAfter from another thread (then poll the clock).
      auto has_work_or_delayed = [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
        return has_work() || !delayed_.empty();
      };
      mu_.Await(absl::Condition(&has_work_or_delayed));
    } else {
      absl::Time next = absl::InfiniteFuture();
      for (const auto& [k, t] : delayed_) next = std::min(next, t);
      absl::Duration wait = std::clamp(
          next - clock_.Now(), absl::ZeroDuration(), absl::Milliseconds(10));
      mu_.AwaitWithTimeout(absl::Condition(&has_work), wait);
    }
  }
}

void WorkQueue::Done(absl::string_view key) {
  absl::MutexLock l(&mu_);
  std::string k(key);
  processing_.erase(k);
  if (dirty_.count(k) != 0 && !shutdown_) PushLocked(k);
}

void WorkQueue::ShutDown() {
  absl::MutexLock l(&mu_);
  shutdown_ = true;
  delayed_.clear();
}

bool WorkQueue::ShuttingDown() const {
  absl::MutexLock l(&mu_);
  return shutdown_;
}

size_t WorkQueue::Len() const {
  absl::MutexLock l(&mu_);
  return queue_.size();
}

size_t WorkQueue::NumDelayed() const {
  absl::MutexLock l(&mu_);
  return delayed_.size();
}

}  // namespace daxlease::k8s
