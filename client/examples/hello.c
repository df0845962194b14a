/* The smallest libdaxlease program: attach to a published volume, write a
 * greeting at offset 0, persist it, read it back, detach.
 *   daxlease-example /path/the/pod/sees */
#include <stdio.h>
#include <string.h>

#include "daxlease.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s PUBLISHED_DIR\n", argv[0]);
    return 2;
  }
  daxlease_volume* vol = NULL;
  int rc = daxlease_attach(argv[1], NULL, &vol);
  if (rc != DAXLEASE_OK) {
    fprintf(stderr, "attach: %s: %s\n", daxlease_strerror(rc), daxlease_errmsg());
    return 1;
  }
  const char msg[] = "hello from libdaxlease";
  char back[sizeof(msg)];
  if ((rc = daxlease_write(vol, 0, msg, sizeof(msg))) != DAXLEASE_OK ||
      (rc = daxlease_persist(vol, 0, sizeof(msg))) != DAXLEASE_OK ||
      (rc = daxlease_read(vol, 0, back, sizeof(back))) != DAXLEASE_OK) {
    fprintf(stderr, "io: %s: %s\n", daxlease_strerror(rc), daxlease_errmsg());
    daxlease_detach(vol);
    return 1;
  }
  printf("epoch %lld, %s, %llu bytes: %s\n", (long long)daxlease_epoch(vol),
         daxlease_is_local(vol) ? "local" : "remote",
         (unsigned long long)daxlease_size(vol), back);
  rc = daxlease_detach(vol);
  return rc == DAXLEASE_OK && memcmp(msg, back, sizeof(msg)) == 0 ? 0 : 1;
}
