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

#include <stddef.h>

// The largest team the counters serve.
#define TEAM_MAX 256

// Runs unit(ctx, u) once for every u < units of one block, by thread tid of a team of nth.
// nth == 1: all of them in order, no synchronisation (one whole product per thread, several
// threads at once: the counters are not touched). nth > 1: every thread of the team calls it
// for the block, after packing its share of the block's operands; it opens tid's share in
// counter set `set` (0 or 1, alternating between consecutive blocks), waits at the team's
// barrier (the packing is then complete) and computes units with work stealing. There is no
// barrier after the units: the caller's buffers for the next block must be the other set's.
void team_run(size_t set, size_t units, size_t nth, size_t tid, void (*unit)(const void *ctx, size_t u),
              const void *ctx);

#endif
