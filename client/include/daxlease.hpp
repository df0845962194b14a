// C++ wrapper of daxlease.h: an owning, movable handle whose methods throw
// nothing and return the C error codes. Header-only over the C API.
#ifndef DAXLEASE_HPP_
#define DAXLEASE_HPP_

#include <cstdint>
#include <string>
#include <utility>

#include "daxlease.h"

namespace daxlease {

class Volume {
 public:
  Volume() = default;
  ~Volume() { Detach(); }
  Volume(Volume&& o) noexcept : v_(std::exchange(o.v_, nullptr)) {}
  Volume& operator=(Volume&& o) noexcept {
    if (this != &o) {
      Detach();
      v_ = std::exchange(o.v_, nullptr);
    }
    return *this;
  }
  Volume(const Volume&) = delete;
  Volume& operator=(const Volume&) = delete;

  // Returns a daxlease_error; on success *this holds the attachment.
  int Attach(const std::string& dir, int timeout_ms = 0,
             bool readonly = false) {
    Detach();
    daxlease_attach_opts o = DAXLEASE_ATTACH_OPTS_INIT;
    o.timeout_ms = timeout_ms;
    o.readonly = readonly ? 1 : 0;
    return daxlease_attach(dir.c_str(), &o, &v_);
  }
  int Detach() {
    if (v_ == nullptr) return DAXLEASE_OK;
    return daxlease_detach(std::exchange(v_, nullptr));
  }

  bool attached() const { return v_ != nullptr; }
  uint64_t size() const { return daxlease_size(v_); }
  int64_t epoch() const { return daxlease_epoch(v_); }
  bool local() const { return daxlease_is_local(v_) != 0; }
  int Read(uint64_t off, void* buf, size_t len) {
    return daxlease_read(v_, off, buf, len);
  }
  int Write(uint64_t off, const void* buf, size_t len) {
    return daxlease_write(v_, off, buf, len);
  }
  int Persist(uint64_t off = 0, size_t len = 0) {
    return daxlease_persist(v_, off, len);
  }
  // As Persist; on OK *epoch is the epoch the range was made durable under.
  int PersistEpoch(uint64_t off, size_t len, int64_t* epoch) {
    return daxlease_persist_epoch(v_, off, len, epoch);
  }
  uint64_t Unpersisted() const {
    uint64_t n = 0;
    daxlease_unpersisted(v_, &n);
    return n;
  }
  daxlease_volume* get() { return v_; }

  static std::string Error(int err) {
    std::string s = daxlease_strerror(err);
    const char* m = daxlease_errmsg();
    if (m != nullptr && *m != '\0') s += std::string(": ") + m;
    return s;
  }

 private:
  daxlease_volume* v_ = nullptr;
};

}  // namespace daxlease

#endif  // DAXLEASE_HPP_
