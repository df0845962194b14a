/* daxlease-io: a small CLI over the public libdaxlease API.
 *
 *   daxlease-io cat DIR [OFFSET [LEN]]      volume bytes to stdout
 *   daxlease-io write DIR [OFFSET]          stdin into the volume, persisted
 *   daxlease-io bench DIR [BLOCK [MB]]      write+persist and read throughput
 *   daxlease-io pattern DIR BLOCK SECONDS [FIRST [COUNT]]
 *       write checksummed blocks continuously (block i at i*BLOCK, i from
 *       FIRST (0) over COUNT blocks (to the volume's last), wrapping),
 *       persist each, and print "persisted seq=N index=I epoch=E" after
 *       each (E: the epoch it was persisted under); errors are
 *       printed and counted, and the program keeps going (REVOKED ends it
 *       with exit code 3; SIGTERM or SIGINT ends it after the block in hand,
 *       as SECONDS does). Writers on disjoint ranges do not meet.
 *   daxlease-io verify DIR BLOCK [FIRST [COUNT]]
 *       check every pattern block of that range: prints
 *       "blocks=N valid=V empty=E corrupt=C maxseq=S"; when C > 0 also a
 *       second line "corrupt_at=I[,I...]" naming the first 16 corrupt
 *       blocks' indices (a writer killed in the middle of a block leaves
 *       that one block torn); exit 1 if C > 0.
 *
 * Environment: DAXLEASE_IO_TIMEOUT_MS (attach timeout), DAXLEASE_IO_PACE_MS
 * (pattern: pause after each persisted block, so a long run in a pod logs a
 * few lines a second, not thousands). Exit codes: 0 ok, 1 failure, 2 usage,
 * 3 revoked. */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "daxlease.h"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int fail(const char* what, int rc) {
  fprintf(stderr, "daxlease-io: %s: %s: %s\n", what, daxlease_strerror(rc),
          daxlease_errmsg());
  return rc == DAXLEASE_E_REVOKED ? 3 : 1;
}

static int attach(const char* dir, daxlease_volume** vol) {
  daxlease_attach_opts o = DAXLEASE_ATTACH_OPTS_INIT;
  const char* t = getenv("DAXLEASE_IO_TIMEOUT_MS");
  if (t != NULL) o.timeout_ms = atoi(t);
  return daxlease_attach(dir, &o, vol);
}

/* FNV-1a over a block's payload, seeded by its header. */
static uint64_t fnv(const unsigned char* p, size_t n, uint64_t h) {
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 1099511628211ull;
  }
  return h;
}

struct block_header {
  uint64_t magic; /* "DXLPATT1" */
  uint64_t seq;   /* 1, 2, ... */
  uint64_t index; /* block index */
  uint64_t sum;   /* fnv of header fields + payload */
};
#define PATTERN_MAGIC 0x31545441504c5844ull

static void fill_block(unsigned char* b, size_t block, uint64_t seq,
                       uint64_t index) {
  struct block_header h = {PATTERN_MAGIC, seq, index, 0};
  uint64_t x = seq * 0x9e3779b97f4a7c15ull + index;
  for (size_t i = sizeof(h); i < block; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    b[i] = (unsigned char)x;
  }
  h.sum = fnv(b + sizeof(h), block - sizeof(h),
              fnv((const unsigned char*)&h, 24, 1469598103934665603ull));
  memcpy(b, &h, sizeof(h));
}

/* Blocks [*first, *first + *count) of the volume from argv[at], argv[at+1]
 * (defaults: all of them; a COUNT past the end stops at the last block);
 * 0 when the range is empty or starts outside. */
static int block_range(daxlease_volume* vol, size_t block, int argc,
                       char** argv, int at, uint64_t* first, uint64_t* count) {
  uint64_t blocks = daxlease_size(vol) / block;
  *first = argc > at ? strtoull(argv[at], NULL, 0) : 0;
  if (*first >= blocks) return 0;
  *count = blocks - *first;
  if (argc > at + 1 && strtoull(argv[at + 1], NULL, 0) < *count) {
    *count = strtoull(argv[at + 1], NULL, 0);
  }
  return *count > 0;
}

/* 1 valid, 0 empty (all zero header), -1 corrupt. */
static int check_block(const unsigned char* b, size_t block, uint64_t index,
                       uint64_t* seq) {
  struct block_header h;
  memcpy(&h, b, sizeof(h));
  if (h.magic == 0 && h.seq == 0 && h.sum == 0) return 0;
  if (h.magic != PATTERN_MAGIC || h.index != index) return -1;
  struct block_header z = h;
  z.sum = 0;
  uint64_t sum = fnv(b + sizeof(h), block - sizeof(h),
                     fnv((const unsigned char*)&z, 24, 1469598103934665603ull));
  if (sum != h.sum) return -1;
  *seq = h.seq;
  return 1;
}

static int cmd_cat(daxlease_volume* vol, int argc, char** argv) {
  uint64_t off = argc > 3 ? strtoull(argv[3], NULL, 0) : 0;
  uint64_t len =
      argc > 4 ? strtoull(argv[4], NULL, 0) : daxlease_size(vol) - off;
  char buf[1 << 16];
  while (len > 0) {
    size_t n = len < sizeof(buf) ? (size_t)len : sizeof(buf);
    int rc = daxlease_read(vol, off, buf, n);
    if (rc != DAXLEASE_OK) return fail("read", rc);
    if (fwrite(buf, 1, n, stdout) != n) return 1;
    off += n;
    len -= n;
  }
  return 0;
}

static int cmd_write(daxlease_volume* vol, int argc, char** argv) {
  uint64_t off = argc > 3 ? strtoull(argv[3], NULL, 0) : 0, start = off;
  char buf[1 << 16];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), stdin)) > 0) {
    int rc = daxlease_write(vol, off, buf, n);
    if (rc != DAXLEASE_OK) return fail("write", rc);
    off += n;
  }
  int rc = daxlease_persist(vol, start, (size_t)(off - start));
  if (rc != DAXLEASE_OK) return fail("persist", rc);
  fprintf(stderr, "wrote %" PRIu64 " bytes at %" PRIu64 ", persisted\n",
          off - start, start);
  return 0;
}

static int cmd_bench(daxlease_volume* vol, int argc, char** argv) {
  size_t block = argc > 3 ? (size_t)strtoull(argv[3], NULL, 0) : (1u << 20);
  uint64_t total = (argc > 4 ? strtoull(argv[4], NULL, 0) : 256) << 20;
  uint64_t size = daxlease_size(vol);
  if (block == 0 || block > size) return fail("bench", DAXLEASE_E_INVAL);
  if (total < block) total = block;
  unsigned char* buf = malloc(block);
  if (buf == NULL) return 1;
  memset(buf, 0xa5, block);
  double t0 = now_s();
  uint64_t off = 0, done = 0;
  for (; done < total; done += block) {
    if (off + block > size) off = 0;
    int rc = daxlease_write(vol, off, buf, block);
    if (rc != DAXLEASE_OK) return fail("write", rc);
    off += block;
  }
  int rc = daxlease_persist(vol, 0, 0);
  if (rc != DAXLEASE_OK) return fail("persist", rc);
  double tw = now_s() - t0;
  t0 = now_s();
  off = 0;
  for (done = 0; done < total; done += block) {
    if (off + block > size) off = 0;
    rc = daxlease_read(vol, off, buf, block);
    if (rc != DAXLEASE_OK) return fail("read", rc);
    off += block;
  }
  double tr = now_s() - t0;
  printf("%s block=%zu bytes=%" PRIu64 " write_MBps=%.1f read_MBps=%.1f\n",
         daxlease_is_local(vol) ? "local" : "remote", block, total,
         (double)total / tw / 1e6, (double)total / tr / 1e6);
  free(buf);
  return 0;
}

static volatile sig_atomic_t stop_requested = 0;
static void request_stop(int sig) {
  (void)sig;
  stop_requested = 1;
}

static int cmd_pattern(daxlease_volume* vol, int argc, char** argv) {
  if (argc < 5) return 2;
  size_t block = (size_t)strtoull(argv[3], NULL, 0);
  double seconds = atof(argv[4]);
  uint64_t first = 0, blocks = 0;
  if (block < sizeof(struct block_header) ||
      !block_range(vol, block, argc, argv, 5, &first, &blocks)) {
    return 2;
  }
  unsigned char* buf = malloc(block);
  if (buf == NULL) return 1;
  double end = now_s() + seconds;
  const char* pace = getenv("DAXLEASE_IO_PACE_MS");
  useconds_t pace_us = pace != NULL ? (useconds_t)atoi(pace) * 1000u : 0;
  uint64_t seq = 0, errors = 0;
  struct sigaction sa;
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = request_stop;
  sa.sa_flags = SA_RESTART;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  while (!stop_requested && now_s() < end) {
    ++seq;
    uint64_t index = first + (seq - 1) % blocks;
    fill_block(buf, block, seq, index);
    int64_t epoch = 0;
    int rc = daxlease_write(vol, index * block, buf, block);
    if (rc == DAXLEASE_OK) {
      rc = daxlease_persist_epoch(vol, index * block, block, &epoch);
    }
    if (rc == DAXLEASE_E_REVOKED) {
      uint64_t lost = 0;
      daxlease_unpersisted(vol, &lost);
      printf("revoked seq=%" PRIu64 " unpersisted=%" PRIu64 "\n", seq, lost);
      fflush(stdout);
      free(buf);
      return 3;
    }
    if (rc != DAXLEASE_OK) {
      ++errors;
      printf("error seq=%" PRIu64 " %s: %s\n", seq, daxlease_strerror(rc),
             daxlease_errmsg());
      fflush(stdout);
      --seq;
      usleep(10000);
      continue;
    }
    printf("persisted seq=%" PRIu64 " index=%" PRIu64 " epoch=%" PRId64 "\n",
           seq, index, epoch);
    fflush(stdout);
    if (pace_us > 0) usleep(pace_us);
  }
  free(buf);
  return errors == 0 ? 0 : 1;
}

/* verify names this many corrupt blocks at most. */
#define CORRUPT_NAMED 16

static int cmd_verify(daxlease_volume* vol, int argc, char** argv) {
  if (argc < 4) return 2;
  size_t block = (size_t)strtoull(argv[3], NULL, 0);
  uint64_t first = 0, blocks = 0;
  if (block < sizeof(struct block_header) ||
      !block_range(vol, block, argc, argv, 4, &first, &blocks)) {
    return 2;
  }
  unsigned char* buf = malloc(block);
  if (buf == NULL) return 1;
  uint64_t valid = 0, empty = 0, corrupt = 0, maxseq = 0;
  uint64_t corrupt_at[CORRUPT_NAMED];
  for (uint64_t i = first; i < first + blocks; ++i) {
    int rc = daxlease_read(vol, i * block, buf, block);
    if (rc != DAXLEASE_OK) return fail("read", rc);
    uint64_t seq = 0;
    int c = check_block(buf, block, i, &seq);
    if (c > 0) {
      ++valid;
      if (seq > maxseq) maxseq = seq;
    } else if (c == 0) {
      ++empty;
    } else {
      if (corrupt < CORRUPT_NAMED) corrupt_at[corrupt] = i;
      ++corrupt;
    }
  }
  printf("blocks=%" PRIu64 " valid=%" PRIu64 " empty=%" PRIu64
         " corrupt=%" PRIu64 " maxseq=%" PRIu64 "\n",
         blocks, valid, empty, corrupt, maxseq);
  for (uint64_t k = 0; k < corrupt && k < CORRUPT_NAMED; ++k) {
    printf("%s%" PRIu64, k == 0 ? "corrupt_at=" : ",", corrupt_at[k]);
  }
  if (corrupt > 0) printf("\n");
  free(buf);
  return corrupt == 0 ? 0 : 1;
}

int main(int argc, char** argv) {
  if (argc < 3) {
    fprintf(stderr,
            "usage: daxlease-io cat|write|bench|pattern|verify DIR [args]\n");
    return 2;
  }
  daxlease_volume* vol = NULL;
  int rc = attach(argv[2], &vol);
  if (rc != DAXLEASE_OK) return fail("attach", rc);
  int code = 2;
  const char* cmd = argv[1];
  if (strcmp(cmd, "cat") == 0)
    code = cmd_cat(vol, argc, argv);
  else if (strcmp(cmd, "write") == 0)
    code = cmd_write(vol, argc, argv);
  else if (strcmp(cmd, "bench") == 0)
    code = cmd_bench(vol, argc, argv);
  else if (strcmp(cmd, "pattern") == 0)
    code = cmd_pattern(vol, argc, argv);
  else if (strcmp(cmd, "verify") == 0)
    code = cmd_verify(vol, argc, argv);
  else
    fprintf(stderr, "daxlease-io: unknown command %s\n", cmd);
  rc = daxlease_detach(vol);
  if (code == 0 && rc != DAXLEASE_OK) return fail("detach", rc);
  return code;
}
