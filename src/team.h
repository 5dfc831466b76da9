// team.h: work stealing inside one OpenMP team's block of work (sgemm.c and bgemm.c).
//
// A block's work units (micro-tiles, or groups of B panels) are dealt out in contiguous
// shares, share(o) = [units * o / nth, units * (o + 1) / nth). A thread computes its own share
// first and then claims what is left of the others' shares, so that a core slowed by a
// neighbour on a shared host no longer holds every barrier up. A claim is an atomic increment
// of the share owner's counter (each on its own cache line). There are two sets of counters,
// used by alternate blocks: a thread may reset its counter for the next block while others
// still claim in the current one. The counters are global: one team at a time (the matrix
// products are never called inside a parallel region).
#ifndef QLORA_TEAM_H
#define QLORA_TEAM_H

#include <stdbool.h>
#include <stddef.h>

// The largest team the counters serve.
#define TEAM_MAX 256

// Thread tid (of nth) opens its share of a block of `units` units in counter set `set`
// (0 or 1). Call it before the barrier after which the block's units are claimed.
void team_claim_reset(size_t set, size_t units, size_t nth, size_t tid);

// The next unit for thread tid: *u and true, or false when none is left in the block. *v
// is the share being drained, counted from tid's own: start it at 0 for each block.
bool team_claim(size_t set, size_t units, size_t nth, size_t tid, size_t *v, size_t *u);

#endif
