// test_stress.h: the thread loop of the matrix products' stress checks (test_sgemm.c and
// test_bgemm.c). A product runs on 1 thread, then on 2 threads and on more threads than a
// 2-core machine has, so that threads are descheduled in the middle of a block and the others
// steal their tiles (or units of columns) and reach the next block's packing while a slow one
// still computes; every run must give the 1-thread bits.
#ifndef QLORA_TEST_STRESS_H
#define QLORA_TEST_STRESS_H

#include <omp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"
#include "util.h"

static const int stress_threads[] = {2, 3, 7, 13};
enum { STRESS_ROUNDS = 3, N_STRESS = sizeof stress_threads / sizeof stress_threads[0] };

// Uniform in [-1, 1): cheaper than normal values for the stress checks' large operands (only
// bit-identity is checked there). Overwrites x[0..n).
__attribute__((unused)) static void fill_uniform(float *x, size_t n, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) x[i] = 2.0f * rng_uniform(&r) - 1.0f;
}

// What one stress loop saw: its runs, how many differed from the 1-thread result, and for the
// first that did, its thread count, round and number of differing values.
typedef struct {
    int runs, differ, first_threads, first_round;
    size_t first_values;
} StressResult;

// run(ctx, C) computes one product into C, which holds C0 on entry (beta != 0 reads it).
// R = its result on 1 thread; then STRESS_ROUNDS rounds of every count in stress_threads and,
// with `dynamic`, one run of 13 threads with dynamic adjustment on (the runtime may give the
// team fewer threads than the driver chose its schedule for), each compared with R bit for
// bit. C0, R and C hold nc floats (R and C overwritten); the thread settings are restored.
__attribute__((unused)) static StressResult stress_runs(void (*run)(const void *ctx, float *C), const void *ctx,
                                                        const float *C0, float *R, float *C, size_t nc,
                                                        bool dynamic) {
    const int saved = omp_get_max_threads();
    memcpy(R, C0, nc * 4);
    omp_set_num_threads(1);
    run(ctx, R);
    StressResult s = {0};
    for (int r = 0; r <= STRESS_ROUNDS; r++)
        for (int t = 0; t < (r < STRESS_ROUNDS ? N_STRESS : dynamic ? 1 : 0); t++) {
            const int threads = r < STRESS_ROUNDS ? stress_threads[t] : 13;
            omp_set_dynamic(r == STRESS_ROUNDS);
            omp_set_num_threads(threads);
            memcpy(C, C0, nc * 4);
            run(ctx, C);
            s.runs++;
            if (memcmp(C, R, nc * 4) == 0) continue;
            if (s.differ++ == 0) {
                s.first_threads = threads, s.first_round = r;
                for (size_t i = 0; i < nc; i++) s.first_values += memcmp(&C[i], &R[i], 4) != 0;
            }
        }
    omp_set_dynamic(0);
    omp_set_num_threads(saved);
    return s;
}

// One stressed product: C = alpha op(A) op(B) + beta C, op(B) from the matrix B or (source)
// from a panel source reading W = B as [N][K].
typedef struct {
    const char *what;
    bool ta, tb, source;
    size_t M, N, K;
    float alpha, beta;
} StressCase;

// Computes case c into C (which holds the initial C) with the product under test.
typedef void (*StressProduct)(const StressCase *c, const float *A, const float *B, float *C);

typedef struct {
    StressProduct product;
    const StressCase *c;
    const float *A, *B;
} StressOne;
static void stress_run_one(const void *ctx, float *C) {
    const StressOne *o = ctx;
    o->product(o->c, o->A, o->B, C);
}

// Case c on random operands (seeded) through stress_runs, with the dynamic run; one check,
// named with label (e.g. the instruction set).
__attribute__((unused)) static void stress_one(const char *label, StressProduct product, const StressCase *c,
                                               uint64_t seed) {
    const size_t na = c->M * c->K, nb = c->K * c->N, nc = c->M * c->N;
    float *A = malloc(na * 4), *B = malloc(nb * 4), *C0 = malloc(nc * 4), *R = malloc(nc * 4), *C = malloc(nc * 4);
    fill_uniform(A, na, seed);
    fill_uniform(B, nb, seed + 1);
    fill_uniform(C0, nc, seed + 2);
    const StressOne one = {product, c, A, B};
    const StressResult s = stress_runs(stress_run_one, &one, C0, R, C, nc, true);
    EXPECT(s.differ == 0,
           "%s stress %s: ta=%d tb=%d%s %zux%zux%zu alpha %g beta %g, %d runs on 2, 3, 7, 13 threads (x%d) "
           "and 13 dynamic bit-identical to 1 thread: %d differ (first: %d threads, round %d, %zu values)",
           label, c->what, c->ta, c->tb, c->source ? " panel source" : "", c->M, c->N, c->K, (double)c->alpha,
           (double)c->beta, s.runs, STRESS_ROUNDS, s.differ, s.first_threads, s.first_round, s.first_values);
    free(A), free(B), free(C0), free(R), free(C);
}

// A batch of products with sgemm_native_batch's / bgemm_batch's signature.
typedef void (*StressBatchFn)(bool ta, bool tb, size_t count, size_t M, size_t N, size_t K, float alpha,
                              const float *const *A, size_t lda, const float *const *B, size_t ldb, float beta,
                              float *const *C, size_t ldc);

typedef struct {
    StressBatchFn fn;
    bool ta, tb;
    size_t count, M, N, K;
    float alpha, beta;
    const float *const *pa, *const *pb;
    float **pc;  // refilled for each run's C: item i writes C + i * M * N
} StressBatch;
static void stress_run_batch(const void *ctx, float *C) {
    const StressBatch *b = ctx;
    for (size_t i = 0; i < b->count; i++) b->pc[i] = C + i * b->M * b->N;
    b->fn(b->ta, b->tb, b->count, b->M, b->N, b->K, b->alpha, b->pa, b->ta ? b->M : b->K, b->pb, b->tb ? b->K : b->N,
          b->beta, b->pc, b->N);
}

// count products of one shape on random operands through stress_runs (no dynamic run); one
// check, named with label.
__attribute__((unused)) static void stress_batch(const char *label, StressBatchFn fn, bool ta, bool tb, size_t count,
                                                 size_t M, size_t N, size_t K, float alpha, float beta,
                                                 uint64_t seed) {
    const size_t sa = M * K, sb = K * N, sc = M * N;
    float *A = malloc(count * sa * 4), *B = malloc(count * sb * 4), *C0 = malloc(count * sc * 4);
    float *R = malloc(count * sc * 4), *C = malloc(count * sc * 4);
    fill_uniform(A, count * sa, seed);
    fill_uniform(B, count * sb, seed + 1);
    fill_uniform(C0, count * sc, seed + 2);
    const float **pa = malloc(2 * count * sizeof *pa), **pb = pa + count;
    float **pc = malloc(count * sizeof *pc);
    for (size_t i = 0; i < count; i++) pa[i] = A + i * sa, pb[i] = B + i * sb;
    const StressBatch bt = {fn, ta, tb, count, M, N, K, alpha, beta, pa, pb, pc};
    const StressResult s = stress_runs(stress_run_batch, &bt, C0, R, C, count * sc, false);
    EXPECT(s.differ == 0, "%s stress batch: ta=%d tb=%d %zu x %zux%zux%zu, %d runs on 2, 3, 7, 13 threads "
           "bit-identical to 1 thread: %d differ", label, ta, tb, count, M, N, K, s.runs, s.differ);
    free(A), free(B), free(C0), free(R), free(C), free(pa), free(pc);
}

#endif
