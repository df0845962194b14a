/* The public header compiles as C (C11) on its own. */
#include "daxlease.h"

int main(void) {
  daxlease_attach_opts opts = DAXLEASE_ATTACH_OPTS_INIT;
  return opts.struct_size == sizeof(opts) && DAXLEASE_E_REVOKED < 0 ? 0 : 1;
}
