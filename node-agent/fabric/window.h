// The life of one type-2 memory window in VerbsFabric, as plain code over an
// injected seam, so the rule rxe's kernel enforces by panicking can be
// unit-tested without a device:
//
//   a window that was invalidated must never be invalidated again
//   (a second IBV_WR_LOCAL_INV of the same window panics the guest kernel:
//   rxe frees the window's QP reference on the first one and dereferences
//   it on the second).
//
// WindowFsm is the state machine; WindowVerbs is what it asks of verbs for
// one window on one queue pair (VerbsFabric implements it with lib/rdma, the
// tests with a fake that fails the test on a second invalidate, as the
// kernel would crash). WindowPool keeps windows allocated ahead of time so a
// grant does not wait on ibv_alloc_mw.
//
//   kUnbound --Bind--> kBound --Revoke (LOCAL_INV completed)--> kInvalidated
//      ^                  |                                         |
//      +------------------|----------- Bind (a new rkey) -----------+
//                         +--Revoke (LOCAL_INV not confirmed)--> kDeallocated
//
// Revoke posts at most one LOCAL_INV per bind, whatever happens to it: when
// it cannot be confirmed (the post failed, or the completion is an error
// such as a flush on a queue pair in the error state) the window is
// deallocated instead, which revokes the key in every state and is safe.
// A deallocated window is never used again.
//
// Thread safety: WindowFsm is not synchronised (its owner's lock guards it);
// WindowPool is.
#ifndef DAXLEASE_NODE_AGENT_FABRIC_WINDOW_H_
#define DAXLEASE_NODE_AGENT_FABRIC_WINDOW_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace daxlease::fabric {

// The verbs one window needs, on the queue pair it is bound through.
class WindowVerbs {
 public:
  virtual ~WindowVerbs() = default;
  // Posts IBV_WR_BIND_MW and waits for its completion; the window's new
  // rkey. An error status when the post or the completion failed.
  virtual absl::StatusOr<uint32_t> Bind() = 0;
  // Posts IBV_WR_LOCAL_INV of `rkey` and waits for its completion. OK only
  // for a successful completion.
  virtual absl::Status LocalInvalidate(uint32_t rkey) = 0;
  // ibv_dealloc_mw: revokes whatever key the window holds, in any state.
  virtual void Deallocate() = 0;
};

class WindowFsm {
 public:
  enum class State { kUnbound, kBound, kInvalidated, kDeallocated };

  State state() const { return state_; }
  // The key of the current bind; 0 unless kBound.
  uint32_t rkey() const { return state_ == State::kBound ? rkey_ : 0; }
  // A window that may be bound again (kUnbound or kInvalidated).
  bool reusable() const {
    return state_ == State::kUnbound || state_ == State::kInvalidated;
  }

  // kUnbound/kInvalidated -> kBound, returning the new rkey.
  // FailedPrecondition when bound or deallocated. A failed bind completion
  // leaves the window's state unknown to us: it is deallocated.
  absl::StatusOr<uint32_t> Bind(WindowVerbs& verbs);

  // kBound -> kInvalidated (the LOCAL_INV completed) or kDeallocated (it
  // could not be confirmed). Returns true when this call revoked a live key;
  // false, with no verbs call at all, in any other state: this is what makes
  // a second invalidate impossible.
  bool Revoke(WindowVerbs& verbs);

  // Revokes a bound window (as Revoke). Then the window is either reusable
  // or deallocated; call before destroying the queue pair it was bound
  // through (rxe blocks ~51 s destroying a QP with a bound window).
  void Release(WindowVerbs& verbs);

  // Counts of verbs calls made, for status and tests.
  int binds() const { return binds_; }
  int invalidates() const { return invalidates_; }

 private:
  State state_ = State::kUnbound;
  uint32_t rkey_ = 0;
  int binds_ = 0;
  int invalidates_ = 0;
};

std::string StateName(WindowFsm::State s);

// A window as the pool keeps it: the verbs handle (in a subclass) and its
// state machine.
class PooledWindow {
 public:
  virtual ~PooledWindow() = default;
  WindowFsm fsm;
};

// Windows allocated ahead of time. Take never allocates while the pool has
// one (a miss allocates and is counted); Put keeps a reusable window and
// drops (deallocates) any other.
class WindowPool {
 public:
  using Allocator =
      std::function<absl::StatusOr<std::unique_ptr<PooledWindow>>()>;
  // `target`: how many windows Fill keeps ready.
  WindowPool(Allocator allocate, size_t target);

  // Allocates windows until `target` are ready (off the grant path).
  absl::Status Fill();
  absl::StatusOr<std::unique_ptr<PooledWindow>> Take();
  // Back to the pool when reusable; a bound window here is a caller bug
  // (it would keep its key valid): it is dropped, and its handle's
  // deallocation revokes the key.
  void Put(std::unique_ptr<PooledWindow> w);

  size_t available() const;
  size_t misses() const;
  // Drops every pooled window (before the protection domain goes).
  void Clear();

 private:
  const Allocator allocate_;
  const size_t target_;
  mutable absl::Mutex mu_;
  std::vector<std::unique_ptr<PooledWindow>> free_ ABSL_GUARDED_BY(mu_);
  size_t misses_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace daxlease::fabric

#endif  // DAXLEASE_NODE_AGENT_FABRIC_WINDOW_H_
