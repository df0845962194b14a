// The C API of include/daxlease.h over client::Volume.
#include <cstring>
#include <memory>
#include <new>
#include <string>

#include "client/volume.h"
#include "daxlease.h"
#include "node-agent/fabric/verbs_fabric.h"

struct daxlease_volume {
  std::unique_ptr<daxlease::client::Volume> v;
};

namespace {

thread_local std::string last_error;

int Ok() {
  last_error.clear();
  return DAXLEASE_OK;
}

int Fail(int code, const absl::Status& s) {
  last_error = std::string(s.message());
  return code;
}

// Status of a data call -> error code. A revoked handle always reports
// REVOKED, whatever the transport said.
int FromStatus(daxlease_volume* vol, const absl::Status& s) {
  if (s.ok()) return Ok();
  if (vol != nullptr && vol->v->revoked()) return Fail(DAXLEASE_E_REVOKED, s);
  switch (s.code()) {
    case absl::StatusCode::kOutOfRange:
      return Fail(DAXLEASE_E_RANGE, s);
    case absl::StatusCode::kPermissionDenied:
      return Fail(DAXLEASE_E_REVOKED, s);
    case absl::StatusCode::kInvalidArgument:
      return Fail(DAXLEASE_E_INVAL, s);
    default:
      return Fail(DAXLEASE_E_IO, s);
  }
}

}  // namespace

extern "C" {

int daxlease_attach(const char* published_dir, const daxlease_attach_opts* opts,
                    daxlease_volume** out) {
  if (published_dir == nullptr || out == nullptr ||
      (opts != nullptr && opts->struct_size < sizeof(daxlease_attach_opts))) {
    return Fail(DAXLEASE_E_INVAL, absl::InvalidArgumentError("bad argument"));
  }
  daxlease::client::AttachOptions o;
  if (opts != nullptr) {
    if (opts->timeout_ms < 0) {
      o.timeout = absl::InfiniteDuration();
    } else if (opts->timeout_ms > 0) {
      o.timeout = absl::Milliseconds(opts->timeout_ms);
    }
    o.read_only = opts->readonly != 0;
  }
  auto v = daxlease::client::Volume::Attach(
      published_dir, o, std::make_unique<daxlease::fabric::AnyConnector>());
  if (!v.ok()) {
    const absl::Status& s = v.status();
    switch (s.code()) {
      case absl::StatusCode::kNotFound:
        // No descriptor, or the agent does not know the lease.
        return Fail(s.message().find("daxlease.json") != absl::string_view::npos
                        ? DAXLEASE_E_NOT_PUBLISHED
                        : DAXLEASE_E_DENIED,
                    s);
      case absl::StatusCode::kInvalidArgument:
        return Fail(DAXLEASE_E_NOT_PUBLISHED, s);
      case absl::StatusCode::kUnavailable:
        return Fail(DAXLEASE_E_AGENT, s);
      case absl::StatusCode::kPermissionDenied:
        return Fail(s.message().rfind("revoked", 0) == 0 ? DAXLEASE_E_REVOKED
                                                         : DAXLEASE_E_DENIED,
                    s);
      case absl::StatusCode::kFailedPrecondition:
        return Fail(DAXLEASE_E_READONLY, s);
      case absl::StatusCode::kDeadlineExceeded:
        return Fail(DAXLEASE_E_TIMEOUT, s);
      default:
        return Fail(DAXLEASE_E_IO, s);
    }
  }
  auto* h = new (std::nothrow) daxlease_volume;
  if (h == nullptr)
    return Fail(DAXLEASE_E_NOMEM, absl::ResourceExhaustedError("handle"));
  h->v = std::move(*v);
  *out = h;
  return Ok();
}

int daxlease_detach(daxlease_volume* vol) {
  if (vol == nullptr)
    return Fail(DAXLEASE_E_INVAL, absl::InvalidArgumentError("NULL handle"));
  bool revoked = vol->v->revoked();
  absl::Status s = vol->v->Detach();
  delete vol;
  if (s.ok()) return Ok();
  return Fail(revoked ? DAXLEASE_E_REVOKED : DAXLEASE_E_IO, s);
}

uint64_t daxlease_size(const daxlease_volume* vol) {
  return vol == nullptr ? 0 : vol->v->size();
}

int64_t daxlease_epoch(const daxlease_volume* vol) {
  return vol == nullptr ? 0 : vol->v->epoch();
}

int daxlease_is_local(const daxlease_volume* vol) {
  return vol != nullptr && vol->v->is_local() ? 1 : 0;
}

int daxlease_read(daxlease_volume* vol, uint64_t offset, void* buf,
                  size_t len) {
  if (vol == nullptr || (buf == nullptr && len > 0)) {
    return Fail(DAXLEASE_E_INVAL, absl::InvalidArgumentError("bad argument"));
  }
  return FromStatus(vol, vol->v->Read(offset, static_cast<char*>(buf), len));
}

int daxlease_write(daxlease_volume* vol, uint64_t offset, const void* buf,
                   size_t len) {
  if (vol == nullptr || (buf == nullptr && len > 0)) {
    return Fail(DAXLEASE_E_INVAL, absl::InvalidArgumentError("bad argument"));
  }
  absl::Status s = vol->v->Write(offset, static_cast<const char*>(buf), len);
  if (s.code() == absl::StatusCode::kFailedPrecondition && !vol->v->revoked()) {
    return Fail(DAXLEASE_E_READONLY, s);
  }
  return FromStatus(vol, s);
}

int daxlease_persist(daxlease_volume* vol, uint64_t offset, size_t len) {
  if (vol == nullptr)
    return Fail(DAXLEASE_E_INVAL, absl::InvalidArgumentError("NULL handle"));
  return FromStatus(vol, vol->v->Persist(offset, len));
}

int daxlease_persist_epoch(daxlease_volume* vol, uint64_t offset, size_t len,
                           int64_t* epoch) {
  if (vol == nullptr)
    return Fail(DAXLEASE_E_INVAL, absl::InvalidArgumentError("NULL handle"));
  return FromStatus(vol, vol->v->Persist(offset, len, epoch));
}

int daxlease_unpersisted(const daxlease_volume* vol, uint64_t* bytes) {
  if (vol == nullptr || bytes == nullptr) {
    return Fail(DAXLEASE_E_INVAL, absl::InvalidArgumentError("bad argument"));
  }
  *bytes = vol->v->Unpersisted();
  return Ok();
}

int daxlease_direct_acquire(daxlease_volume* vol, void** addr, size_t* len) {
  if (vol == nullptr || addr == nullptr || len == nullptr) {
    return Fail(DAXLEASE_E_INVAL, absl::InvalidArgumentError("bad argument"));
  }
  if (!vol->v->is_local()) {
    return Fail(DAXLEASE_E_NOT_LOCAL,
                absl::FailedPreconditionError("the volume is remote here"));
  }
  auto r = vol->v->DirectAcquire();
  if (!r.ok()) return FromStatus(vol, r.status());
  *addr = r->first;
  *len = r->second;
  return Ok();
}

int daxlease_direct_release(daxlease_volume* vol) {
  if (vol == nullptr)
    return Fail(DAXLEASE_E_INVAL, absl::InvalidArgumentError("NULL handle"));
  absl::Status s = vol->v->DirectRelease();
  if (!s.ok()) return Fail(DAXLEASE_E_INVAL, s);
  return Ok();
}

int daxlease_set_preflush_hook(daxlease_volume* vol, daxlease_preflush_fn fn,
                               void* arg) {
  if (vol == nullptr)
    return Fail(DAXLEASE_E_INVAL, absl::InvalidArgumentError("NULL handle"));
  if (fn == nullptr) {
    vol->v->SetPreflushHook(nullptr);
  } else {
    vol->v->SetPreflushHook([vol, fn, arg] { (void)fn(vol, arg); });
  }
  return Ok();
}

const char* daxlease_strerror(int err) {
  switch (err) {
    case DAXLEASE_OK:
      return "success";
    case DAXLEASE_E_INVAL:
      return "invalid argument";
    case DAXLEASE_E_NOT_PUBLISHED:
      return "no daxlease volume is published at this path";
    case DAXLEASE_E_AGENT:
      return "the node agent cannot be reached";
    case DAXLEASE_E_DENIED:
      return "access denied (not published to this pod)";
    case DAXLEASE_E_TIMEOUT:
      return "not granted in time";
    case DAXLEASE_E_RANGE:
      return "range outside the volume";
    case DAXLEASE_E_REVOKED:
      return "the lease was revoked";
    case DAXLEASE_E_IO:
      return "I/O error";
    case DAXLEASE_E_NOT_LOCAL:
      return "the volume's memory is not on this node";
    case DAXLEASE_E_READONLY:
      return "attached read-only";
    case DAXLEASE_E_NOMEM:
      return "out of memory";
    case DAXLEASE_E_BUSY:
      return "busy";
    default:
      return "unknown error";
  }
}

const char* daxlease_errmsg(void) { return last_error.c_str(); }

}  // extern "C"
