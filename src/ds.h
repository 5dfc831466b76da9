// ds.h: the one way to include stb_ds (Debian's libstb-dev), with its allocations
// routed through xrealloc so that running out of memory is a clean exit, not a crash.
// STB_DS_IMPLEMENTATION is defined once, in util.c.
#ifndef QLORA_DS_H
#define QLORA_DS_H
#include "util.h"
#define STBDS_REALLOC(ctx, p, size) xrealloc((p), (size))
#define STBDS_FREE(ctx, p) free(p)
#include <stdlib.h>
#include <stb/stb_ds.h>
#endif
