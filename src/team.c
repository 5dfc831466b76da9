// team.c: see team.h.
#include "team.h"

#include <stdbool.h>

static struct {
    _Alignas(64) size_t next;
} claims[2][TEAM_MAX];

// The next unit for thread tid: *u and true, or false when none is left in the block. *v is
// the share being drained, counted from tid's own.
static bool claim(size_t set, size_t units, size_t nth, size_t tid, size_t *v, size_t *u) {
    for (; *v < nth; ++*v) {
        const size_t o = (tid + *v) % nth;
        *u = __atomic_fetch_add(&claims[set][o].next, 1, __ATOMIC_RELAXED);
        if (*u < units * (o + 1) / nth) return true;
    }
    return false;
}

void team_run(size_t set, size_t units, size_t nth, size_t tid, void (*unit)(const void *ctx, size_t u),
              const void *ctx) {
    if (nth == 1) {
        for (size_t u = 0; u < units; u++) unit(ctx, u);
        return;
    }
    // reset before the barrier: every claim on this set from two blocks ago has happened (the
    // claimers have since passed the previous block's barrier), every claim of this block
    // comes after the barrier
    __atomic_store_n(&claims[set][tid].next, units * tid / nth, __ATOMIC_RELAXED);
    #pragma omp barrier
    size_t v = 0, u;
    while (claim(set, units, nth, tid, &v, &u)) unit(ctx, u);
}
