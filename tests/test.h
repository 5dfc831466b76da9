// test.h: a tiny test harness. Each EXPECT counts one check, prints "ok"/"FAIL" with
// details; SKIP counts a check that could not run here and prints why. test_summary()
// prints "NAME: N passed, M failed, S skipped" (tests/run.sh adds the counts up) and
// returns the exit status.
#ifndef QLORA_TEST_H
#define QLORA_TEST_H

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

static int test_passed, test_failed, test_skipped;

static int test_verbose = -1;
static void test_report(int ok, const char *what, const char *file, int line) {
    if (test_verbose < 0) test_verbose = getenv("TEST_VERBOSE") != NULL;
    if (ok && test_verbose) printf("ok   %s\n", what);
    if (ok) test_passed++;
    else test_failed++;
    if (!ok) printf("FAIL %s (%s:%d)\n", what, file, line);
}

#define EXPECT(cond, ...)                                                     \
    do {                                                                      \
        char what_[2048];                                                      \
        snprintf(what_, sizeof what_, __VA_ARGS__);                           \
        test_report(!!(cond), what_, __FILE__, __LINE__);                     \
    } while (0)

// Elementwise |got - ref| <= atol + rtol * |ref| over n floats. Prints the max abs and
// rel error and the first failing index, pass or fail.
#define EXPECT_CLOSE(name, got, ref, n, atol, rtol) \
    expect_close_(name, got, ref, n, atol, rtol, __FILE__, __LINE__)
__attribute__((unused)) static void expect_close_(const char *name, const float *got, const float *ref, size_t n,
                          double atol, double rtol, const char *file, int line) {
    double max_abs = 0, max_rel = 0;
    size_t first_bad = (size_t)-1;
    for (size_t i = 0; i < n; i++) {
        double a = got[i], r = ref[i], e = fabs(a - r);
        if (e > max_abs) max_abs = e;
        if (r != 0 && e / fabs(r) > max_rel) max_rel = e / fabs(r);
        if ((!(e <= atol + rtol * fabs(r))) && first_bad == (size_t)-1) first_bad = i;
    }
    int ok = first_bad == (size_t)-1;
    printf("  %s: n=%zu max_abs_err=%.3g max_rel_err=%.3g%s\n", name, n, max_abs, max_rel,
           ok ? "" : " <-- exceeds tolerance");
    if (!ok)
        printf("  first failing index %zu: got %.9g ref %.9g\n", first_bad,
               (double)got[first_bad], (double)ref[first_bad]);
    char what[300];
    snprintf(what, sizeof what, "%s within atol %.3g + rtol %.3g", name, atol, rtol);
    test_report(ok, what, file, line);
}

// Count n checks as skipped (never as passed) and print the reason.
#define SKIP(n, ...)                  \
    do {                              \
        test_skipped += (n);          \
        printf("skip (%d): ", (n));   \
        printf(__VA_ARGS__);          \
        printf("\n");                 \
    } while (0)

// Run the printf-formatted shell command; its exit status (128 + signal if it was killed).
__attribute__((unused, format(printf, 1, 2))) static int test_sh(const char *fmt, ...) {
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    fflush(stdout);
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : 128 + WTERMSIG(rc);
}

static int test_summary(const char *name) {
    printf("%s: %d passed, %d failed, %d skipped\n", name, test_passed, test_failed, test_skipped);
    return test_failed ? 1 : 0;
}

#endif
