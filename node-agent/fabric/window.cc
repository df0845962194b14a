#include "node-agent/fabric/window.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "lib/base/log.h"

namespace daxlease::fabric {

std::string StateName(WindowFsm::State s) {
  switch (s) {
    case WindowFsm::State::kUnbound:
      return "unbound";
    case WindowFsm::State::kBound:
      return "bound";
    case WindowFsm::State::kInvalidated:
      return "invalidated";
    case WindowFsm::State::kDeallocated:
      return "deallocated";
  }
  return "?";
}

absl::StatusOr<uint32_t> WindowFsm::Bind(WindowVerbs& verbs) {
  if (!reusable()) {
    return absl::FailedPreconditionError(
        absl::StrCat("memory window is ", StateName(state_), ", not bindable"));
  }
  ++binds_;
  absl::StatusOr<uint32_t> rkey = verbs.Bind();
  if (!rkey.ok()) {
    // The bind may or may not have taken effect: never guess, deallocate.
    verbs.Deallocate();
    state_ = State::kDeallocated;
    return rkey.status();
  }
  rkey_ = *rkey;
  state_ = State::kBound;
  return rkey_;
}

bool WindowFsm::Revoke(WindowVerbs& verbs) {
  if (state_ != State::kBound) return false;
  // Leave kBound before the post: whatever happens next, no second
  // LOCAL_INV of this bind can be posted.
  state_ = State::kDeallocated;
  ++invalidates_;
  absl::Status st = verbs.LocalInvalidate(rkey_);
  if (st.ok()) {
    state_ = State::kInvalidated;
  } else {
    base::LogWarn("fabric.window_invalidate_unconfirmed",
                  {{"rkey", absl::StrCat(rkey_)}, {"error", st.ToString()}});
    verbs.Deallocate();
  }
  rkey_ = 0;
  return true;
}

void WindowFsm::Release(WindowVerbs& verbs) { (void)Revoke(verbs); }

WindowPool::WindowPool(Allocator allocate, size_t target)
    : allocate_(std::move(allocate)), target_(target) {}

absl::Status WindowPool::Fill() {
  while (available() < target_) {
    absl::StatusOr<std::unique_ptr<PooledWindow>> w = allocate_();
    if (!w.ok()) return w.status();
    absl::MutexLock l(&mu_);
    free_.push_back(*std::move(w));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<PooledWindow>> WindowPool::Take() {
  {
    absl::MutexLock l(&mu_);
    if (!free_.empty()) {
      std::unique_ptr<PooledWindow> w = std::move(free_.back());
      free_.pop_back();
      return w;
    }
    ++misses_;
  }
  return allocate_();
}

void WindowPool::Put(std::unique_ptr<PooledWindow> w) {
  if (w == nullptr) return;
  if (w->fsm.state() == WindowFsm::State::kBound) {
    base::LogWarn("fabric.window_put_bound", {});
    return;  // the handle's destructor deallocates, revoking the key
  }
  if (!w->fsm.reusable()) return;
  absl::MutexLock l(&mu_);
  free_.push_back(std::move(w));
}

size_t WindowPool::available() const {
  absl::MutexLock l(&mu_);
  return free_.size();
}

size_t WindowPool::misses() const {
  absl::MutexLock l(&mu_);
  return misses_;
}

void WindowPool::Clear() {
  absl::MutexLock l(&mu_);
  free_.clear();
}

}  // namespace daxlease::fabric
