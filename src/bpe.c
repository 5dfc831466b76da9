// bpe.c: see bpe.h.
#include "bpe.h"

#include <stdint.h>
#include <stdlib.h>

#include "ds.h"

typedef struct {
    int rank, merged;
} BpeMerge;

// An open-addressing hash table (linear probing, power-of-two capacity, at most half full):
// stb_ds's integer-keyed maps need the `typeof` keyword, which -std=c11 does not have.
struct BpeMerges {
    uint64_t *keys;  // [cap], EMPTY_KEY where unused
    BpeMerge *vals;  // [cap]
    size_t cap, count;
};

static const uint64_t EMPTY_KEY = UINT64_MAX;  // no pair of ids < 2^31 packs to this

static uint64_t pair_key(int left, int right) {
    return (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
}

static size_t slot_of(const BpeMerges *m, uint64_t key) {
    uint64_t h = key * 0x9E3779B97F4A7C15ull;  // Fibonacci hashing spreads both halves
    size_t i = (size_t)(h >> 32) & (m->cap - 1);
    while (m->keys[i] != EMPTY_KEY && m->keys[i] != key) i = (i + 1) & (m->cap - 1);
    return i;
}

static void grow(BpeMerges *m) {
    BpeMerges old = *m;
    m->cap = old.cap ? old.cap * 2 : 64;
    m->keys = xmalloc(m->cap * sizeof *m->keys);
    m->vals = xmalloc(m->cap * sizeof *m->vals);
    for (size_t i = 0; i < m->cap; i++) m->keys[i] = EMPTY_KEY;
    for (size_t i = 0; i < old.cap; i++) {
        if (old.keys[i] == EMPTY_KEY) continue;
        size_t j = slot_of(m, old.keys[i]);
        m->keys[j] = old.keys[i];
        m->vals[j] = old.vals[i];
    }
    free(old.keys);
    free(old.vals);
}

BpeMerges *bpe_merges_create(void) {
    BpeMerges *m = xcalloc(1, sizeof(BpeMerges));
    grow(m);
    return m;
}

void bpe_merges_free(BpeMerges *m) {
    if (!m) return;
    free(m->keys);
    free(m->vals);
    free(m);
}

bool bpe_merges_add(BpeMerges *m, int left, int right, int merged, int rank) {
    CHECK(left >= 0 && right >= 0);
    const uint64_t key = pair_key(left, right);
    if (m->keys[slot_of(m, key)] == key) return false;
    if (2 * (m->count + 1) > m->cap) grow(m);
    const size_t i = slot_of(m, key);
    m->keys[i] = key;
    m->vals[i] = (BpeMerge){rank, merged};
    m->count++;
    return true;
}

size_t bpe_merges_count(const BpeMerges *m) { return m->count; }

static const BpeMerge *find_merge(const BpeMerges *m, int left, int right) {
    const uint64_t key = pair_key(left, right);
    const size_t i = slot_of(m, key);
    return m->keys[i] == key ? &m->vals[i] : NULL;
}

// A queued merge of the symbol at pos with the symbol after it, into `merged`.
typedef struct {
    int rank, merged;
    size_t pos;
} BpeCandidate;

static bool cand_before(const BpeCandidate *a, const BpeCandidate *b) {
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

// Queue the merge of symbols left and right (positions in the word) if the table has one.
static void push_cand(const BpeMerges *m, const int *ids, size_t left, size_t right, BpeCandidate **heap) {
    const BpeMerge *mg = find_merge(m, ids[left], ids[right]);
    if (!mg) return;
    BpeCandidate c = {mg->rank, mg->merged, left};
    arrput(*heap, c);
    BpeCandidate *h = *heap;
    for (size_t i = arrlenu(h) - 1; i > 0 && cand_before(&h[i], &h[(i - 1) / 2]); i = (i - 1) / 2) {
        BpeCandidate tmp = h[i];
        h[i] = h[(i - 1) / 2];
        h[(i - 1) / 2] = tmp;
    }
}

// Remove and return the first candidate of a non-empty heap.
static BpeCandidate pop_cand(BpeCandidate *heap) {
    BpeCandidate top = heap[0];
    heap[0] = arrpop(heap);
    const size_t n = arrlenu(heap);
    for (size_t i = 0;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && cand_before(&heap[c + 1], &heap[c])) c++;
        if (!cand_before(&heap[c], &heap[i])) break;
        BpeCandidate tmp = heap[i];
        heap[i] = heap[c];
        heap[c] = tmp;
        i = c;
    }
    return top;
}

size_t bpe_merge(const BpeMerges *m, int *ids, size_t n) {
    if (n < 2) return n;
    const size_t NONE = (size_t)-1;
    size_t *prev = xmalloc(n * sizeof(size_t)), *next = xmalloc(n * sizeof(size_t));
    bool *gone = xcalloc(n, sizeof(bool));
    for (size_t k = 0; k < n; k++) {
        prev[k] = k ? k - 1 : NONE;
        next[k] = k + 1 < n ? k + 1 : NONE;
    }
    BpeCandidate *heap = NULL;
    for (size_t k = 0; k + 1 < n; k++) push_cand(m, ids, k, k + 1, &heap);
    while (arrlenu(heap)) {
        const BpeCandidate c = pop_cand(heap);
        if (gone[c.pos] || next[c.pos] == NONE) continue;
        // A stale entry: the pair at pos changed since it was queued. A changed pair spells a
        // longer string, so it cannot merge into the same token (the check word.rs makes).
        const BpeMerge *now = find_merge(m, ids[c.pos], ids[next[c.pos]]);
        if (!now || now->merged != c.merged) continue;
        const size_t right = next[c.pos];
        ids[c.pos] = c.merged;  // the right symbol joins the left one
        gone[right] = true;
        next[c.pos] = next[right];
        if (next[c.pos] != NONE) prev[next[c.pos]] = c.pos;
        if (prev[c.pos] != NONE) push_cand(m, ids, prev[c.pos], c.pos, &heap);
        if (next[c.pos] != NONE) push_cand(m, ids, c.pos, next[c.pos], &heap);
    }
    size_t out = 0;
    for (size_t k = 0; k < n; k++)
        if (!gone[k]) ids[out++] = ids[k];
    arrfree(heap);
    free(prev);
    free(next);
    free(gone);
    return out;
}
