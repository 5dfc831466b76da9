// bench_quant.c: NF4 + double-quant dequantization throughput (GB/s of fp32 written) next
// to memcpy of the same output size, measured in the same run, on 1 and 2 threads.
// A benchmark, not a test: it prints figures for docs/performance.md.
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/cli.h"
#include "quant.h"

// Median of `reps` timings of fn (after one warm-up call).
#define TIME_MEDIAN(result, reps, body)                                     \
    do {                                                                    \
        double t_[64];                                                      \
        body;                                                               \
        for (int r_ = 0; r_ < (reps); r_++) {                               \
            double t0_ = time_now();                                        \
            body;                                                           \
            t_[r_] = time_now() - t0_;                                      \
        }                                                                   \
        for (int i_ = 1; i_ < (reps); i_++)                                 \
            for (int j_ = i_; j_ > 0 && t_[j_ - 1] > t_[j_]; j_--) {        \
                double s_ = t_[j_]; t_[j_] = t_[j_ - 1]; t_[j_ - 1] = s_;   \
            }                                                               \
        result = t_[(reps) / 2];                                            \
    } while (0)

static void parallel_memcpy(float *dst, const float *src, size_t n) {
    #pragma omp parallel
    {
        int t = omp_get_thread_num(), nt = omp_get_num_threads();
        size_t lo = n * (size_t)t / (size_t)nt, hi = n * (size_t)(t + 1) / (size_t)nt;
        memcpy(dst + lo, src + lo, (hi - lo) * sizeof(float));
    }
}

int main(int argc, char **argv) {
    int reps = argc > 1 ? atoi(argv[1]) : 21;
    if (reps < 3 || reps > 64) reps = 21;
    struct { const char *what; size_t rows, cols; } shapes[] = {
        {"gpt2 c_fc 3072x768 (9.4 MB fp32)", 3072, 768},
        {"gpt2-xl c_fc 6400x1600 (41 MB fp32)", 6400, 1600},
    };
    Rng rng;
    rng_seed(&rng, 1);
    printf("NF4 + double quant dequantization vs memcpy, median of %d runs, max threads %d\n",
           reps, omp_get_max_threads());
    printf("%-38s %7s %12s %12s %8s %12s\n", "matrix", "threads", "dequant GB/s", "memcpy GB/s",
           "ratio", "ref GB/s");
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const size_t n = shapes[s].rows * shapes[s].cols;
        float *x = xmalloc_aligned(n * sizeof(float)), *y = xmalloc_aligned(n * sizeof(float));
        for (size_t i = 0; i < n; i++) x[i] = 0.02f * rng_normal(&rng);
        Q4Tensor q;
        Error err = {0};
        if (!q4_quantize(&q, x, n, QUANT_NF4, 64, true, "bench", &err)) die_error(&err);
        const double gb = (double)n * sizeof(float) / 1e9;
        for (int threads = 1; threads <= 2; threads++) {
            omp_set_num_threads(threads);
            double t_deq, t_cpy, t_ref;
            TIME_MEDIAN(t_deq, reps, q4_dequantize(&q, 0, n, y));
            TIME_MEDIAN(t_cpy, reps, parallel_memcpy(y, x, n));
            TIME_MEDIAN(t_ref, 3, q4_dequantize_ref(&q, 0, n, y));
            printf("%-38s %7d %12.2f %12.2f %8.2f %12.2f\n", shapes[s].what, threads, gb / t_deq,
                   gb / t_cpy, t_deq / t_cpy, gb / t_ref);
        }
        q4_free(&q);
        free(x);
        free(y);
    }
    printf("ratio = dequant time / memcpy time (1.00 = as fast as copying the output)\n");
    return 0;
}
