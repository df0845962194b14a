/*
 * libdaxlease: shared DAX volumes for applications in pods.
 *
 * An application attaches to the directory a daxlease volume is published
 * at (the path the pod sees), then reads, writes and persists byte ranges of
 * the volume. On the node that holds the memory (the owner) the library maps
 * it and the application may also use a direct pointer; on any other node
 * every access goes to the owner through the fabric (TCP now, RDMA later).
 *
 * Recall is transparent: when the operator recalls the volume (it is about to
 * be reshaped or moved), the library holds new calls, waits for the calls in
 * flight and for direct-pointer holds to be released, calls the pre-flush
 * hook, persists, drops its mappings and acknowledges; when the volume is
 * granted again (at a new epoch) it remaps and the held calls proceed.
 *
 * Revocation is loud: a holder that did not acknowledge a recall in time is
 * fenced by the owner. From then on every call on the handle returns
 * DAXLEASE_E_REVOKED, and bytes written but not persisted before the fence
 * are reported by daxlease_unpersisted(). Nothing kills the process; detach
 * and attach again to get a new lease.
 *
 * Flush semantics (docs/libdaxlease.md):
 *  - daxlease_write returns once the bytes are in the volume's memory and
 *    visible to every other holder's later reads (visibility);
 *  - daxlease_persist returns once every byte written through this handle
 *    in the range is durable on the owner's media (persistence);
 *  - an acknowledged recall implies a persist of everything written.
 *
 * Thread safety: every function may be called from any thread on the same
 * handle, except daxlease_detach, which must be the last call on it.
 *
 * Return values: 0 (DAXLEASE_OK) or a negative daxlease_error. The functions
 * below list the errors they return. daxlease_errmsg() gives the detail of
 * the calling thread's last error.
 */
#ifndef DAXLEASE_H_
#define DAXLEASE_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DAXLEASE_API_VERSION 1

enum daxlease_error {
  DAXLEASE_OK = 0,
  DAXLEASE_E_INVAL = -1,         /* bad argument (NULL, zero size, flags) */
  DAXLEASE_E_NOT_PUBLISHED = -2, /* no or malformed descriptor at the path */
  DAXLEASE_E_AGENT = -3,         /* the node agent cannot be reached */
  DAXLEASE_E_DENIED = -4,        /* not published to this pod, or refused */
  DAXLEASE_E_TIMEOUT = -5,       /* not granted within the attach timeout */
  DAXLEASE_E_RANGE = -6,         /* offset/length outside the volume */
  DAXLEASE_E_REVOKED = -7,       /* the lease was revoked (fenced): sticky */
  DAXLEASE_E_IO = -8,            /* the owner or fabric failed the request */
  DAXLEASE_E_NOT_LOCAL = -9,     /* direct access on a remote volume */
  DAXLEASE_E_READONLY = -10,     /* write on a read-only attachment */
  DAXLEASE_E_NOMEM = -11,
  DAXLEASE_E_BUSY = -12, /* direct hold already taken on this thread */
};

/* An attached volume. Opaque. */
typedef struct daxlease_volume daxlease_volume;

/* Called before the library persists for a recall (and before detach), on
 * the library's recall thread, while the application's other calls on the
 * handle are held. It may call daxlease_write/daxlease_persist on the same
 * handle (they are let through) to flush application buffers. A non-zero
 * return is logged and ignored: the recall proceeds. */
typedef int (*daxlease_preflush_fn)(daxlease_volume* vol, void* arg);

typedef struct daxlease_attach_opts {
  uint32_t struct_size; /* sizeof(daxlease_attach_opts) */
  int32_t timeout_ms;   /* wait for the grant; 0: 30000; <0: forever */
  int32_t readonly;     /* non-zero: attach read-only */
  int32_t reserved;
} daxlease_attach_opts;

#define DAXLEASE_ATTACH_OPTS_INIT \
  { sizeof(daxlease_attach_opts), 0, 0, 0 }

/* Attaches to the volume published at `published_dir` (the directory holding
 * daxlease.json and the agent socket) and waits until it is granted.
 * `opts` may be NULL (defaults). On success *out is a new handle.
 * Errors: INVAL, NOT_PUBLISHED, AGENT, DENIED, TIMEOUT, REVOKED, IO, NOMEM. */
int daxlease_attach(const char* published_dir, const daxlease_attach_opts* opts,
                    daxlease_volume** out);

/* Calls the pre-flush hook, persists what was written, releases the lease and
 * frees the handle (always freed, whatever it returns).
 * Errors: REVOKED (and unpersisted writes were lost), IO. */
int daxlease_detach(daxlease_volume* vol);

/* Bytes of the volume. Never fails on a valid handle. */
uint64_t daxlease_size(const daxlease_volume* vol);

/* The epoch the handle is granted at now (0 while not granted). */
int64_t daxlease_epoch(const daxlease_volume* vol);

/* 1 when the memory is mapped locally now (the volume's owner is this node),
 * else 0 (through the fabric, or not granted). A migration of the volume can
 * change it at the next grant: local -> remote on the old owner, remote ->
 * local on the new one when the agent's media path can be opened. */
int daxlease_is_local(const daxlease_volume* vol);

/* Copies [offset, offset+len) of the volume into buf.
 * Errors: INVAL, RANGE, REVOKED, IO. */
int daxlease_read(daxlease_volume* vol, uint64_t offset, void* buf, size_t len);

/* Writes buf into [offset, offset+len) of the volume (visible, not yet
 * durable). Errors: INVAL, RANGE, READONLY, REVOKED, IO. */
int daxlease_write(daxlease_volume* vol, uint64_t offset, const void* buf,
                   size_t len);

/* Makes [offset, offset+len) durable on the owner (len 0: the whole volume).
 * Errors: INVAL, RANGE, REVOKED (the range's unpersisted writes are lost),
 * IO. */
int daxlease_persist(daxlease_volume* vol, uint64_t offset, size_t len);

/* As daxlease_persist; on OK, *epoch (when epoch is not NULL) gets the epoch
 * of the grant the range was made durable under. Unlike a daxlease_epoch
 * call after the persist, which a recall starting in between answers with 0
 * (or a later grant's epoch), this is the persist's own.
 * Errors: those of daxlease_persist. */
int daxlease_persist_epoch(daxlease_volume* vol, uint64_t offset, size_t len,
                           int64_t* epoch);

/* Bytes written through this handle since its last successful persist of
 * them; after a revocation, what was lost. Errors: INVAL. */
int daxlease_unpersisted(const daxlease_volume* vol, uint64_t* bytes);

/* Direct access (owner node only): *addr and *len describe the mapping until
 * daxlease_direct_release. While held, a recall waits for the release (until
 * its deadline; a hold past it gets the handle revoked). Remap may move the
 * address: take it again after each release. Stores through the pointer are
 * made durable by daxlease_persist.
 * Errors: INVAL, NOT_LOCAL, REVOKED, BUSY. */
int daxlease_direct_acquire(daxlease_volume* vol, void** addr, size_t* len);
int daxlease_direct_release(daxlease_volume* vol);

/* Installs (or with fn NULL removes) the pre-flush hook. Errors: INVAL. */
int daxlease_set_preflush_hook(daxlease_volume* vol, daxlease_preflush_fn fn,
                               void* arg);

/* Static text for an error code. */
const char* daxlease_strerror(int err);

/* Detail of the calling thread's last failed call ("" when none). Valid until
 * the thread's next call into the library. */
const char* daxlease_errmsg(void);

#ifdef __cplusplus
}
#endif

#endif /* DAXLEASE_H_ */
