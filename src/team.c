// team.c: see team.h.
#include "team.h"

static struct {
    _Alignas(64) size_t next;
} claims[2][TEAM_MAX];

void team_claim_reset(size_t set, size_t units, size_t nth, size_t tid) {
    __atomic_store_n(&claims[set][tid].next, units * tid / nth, __ATOMIC_RELAXED);
}

bool team_claim(size_t set, size_t units, size_t nth, size_t tid, size_t *v, size_t *u) {
    for (; *v < nth; ++*v) {
        const size_t o = (tid + *v) % nth;
        *u = __atomic_fetch_add(&claims[set][o].next, 1, __ATOMIC_RELAXED);
        if (*u < units * (o + 1) / nth) return true;
    }
    return false;
}
