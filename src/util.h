// util.h: errors, checked allocation, files, timing and a seeded RNG.
//
// Errors come in two tiers (bad input is the user's, so it must never abort):
//   - bad input (files, config, argv): library code fills an Error and returns false;
//     only the commands (src/cmd/, main.c) turn it into a message on stderr and an exit
//     status (die_error in cmd/cli.h);
//   - broken invariants (our bugs): CHECK() prints file:line and aborts.
// Error.status is the exit status a command uses: 2 for bad input or usage (the default
// of error_set), 1 for run-time failures (error_runtime: out of memory, I/O errors).
// Not here: anything numeric (quant.c, ops.c) or format-specific (safetensors.c).
#ifndef QLORA_UTIL_H
#define QLORA_UTIL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define EXIT_BAD_INPUT 2
#define EXIT_RUNTIME 1

typedef struct {
    char msg[1024];
    int status;  // exit status for the command: EXIT_BAD_INPUT or EXIT_RUNTIME; 0 = no error
} Error;

// Fill err with a printf-style message and status EXIT_BAD_INPUT. Always returns false
// so that callers can write `return error_set(err, ...)`. A later call overwrites. A message
// longer than msg keeps its start and its end, with "[... N bytes left out ...]" between.
bool error_set(Error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
// Same with status EXIT_RUNTIME (I/O failure, out of memory).
bool error_runtime(Error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
// A system call on a path failed with errno e: the message, then ": " and strerror(e). Status
// EXIT_BAD_INPUT when the path itself is refused (ENAMETOOLONG: longer than the system's
// PATH_MAX or NAME_MAX), else EXIT_RUNTIME.
bool error_errno(Error *err, int e, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

// Invariant check, always on (never compiled out): a failure is a bug in qlora.
#define CHECK(cond)                                                                   \
    do {                                                                              \
        if (!(cond)) check_failed(__FILE__, __LINE__, #cond);                         \
    } while (0)
void check_failed(const char *file, int line, const char *expr) __attribute__((noreturn));

// Checked allocation: on failure print a one-line message and exit(EXIT_RUNTIME). The one
// documented exception to "library code never exits": out of memory can strike anywhere
// (stb_ds's arrput too), and threading an Error through every allocation would buy nothing
// a user could act on.
// xmalloc_aligned returns 64-byte aligned memory, freed with free().
void *xmalloc(size_t bytes);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t bytes);
void *xmalloc_aligned(size_t bytes);
char *xstrdup(const char *s);
// printf-style formatting into a new malloc'ed string (the caller frees it); never NULL.
// ap is left used (va_end it).
char *xvasprintf(const char *fmt, va_list ap);

// Both readers below open only regular files (after symlinks): a directory, FIFO, device
// or socket is refused with "PATH: expected a regular file, found a FIFO" (status 2), and
// a FIFO is never waited on.
// A read-only view of a whole file, mmap'ed (or an empty view for a 0-byte file).
typedef struct {
    const uint8_t *data;
    size_t size;
} MappedFile;
bool file_map(MappedFile *f, const char *path, Error *err);
void file_unmap(MappedFile *f);

// Read a whole file into a NUL-terminated malloc'ed buffer (*size excludes the NUL).
bool file_read_all(const char *path, char **out, size_t *size, Error *err);

// Crash-safe output: write to "PATH.tmp.<pid>", fsync, rename over PATH, fsync the folder.
// A reader never sees a half-written PATH; an earlier PATH survives any failure.
typedef struct {
    FILE *fp;
    char *path;
    char *tmp_path;
} AtomicFile;
bool atomic_open(AtomicFile *af, const char *path, Error *err);
bool atomic_write(AtomicFile *af, const void *data, size_t bytes, Error *err);
bool atomic_commit(AtomicFile *af, Error *err);  // closes; the file appears at path
void atomic_abort(AtomicFile *af);               // closes and removes the temporary

// Write data[0..len) to path atomically (atomic_open / write / commit), or copy a whole
// file to a new path the same way.
bool write_file_atomic(const char *path, const void *data, size_t len, Error *err);
bool copy_file_atomic(const char *from, const char *to, Error *err);

// Take an exclusive lock on folder dir (flock on dir/.qlora.lock, which records our pid)
// for the rest of the process's life, so that a second run cannot write into the same
// folder at the same time. False (status 1) if another process holds it.
bool dir_lock(const char *dir, Error *err);

// Test-only: widen a crash window. If QLORA_TEST_DELAY is "WHERE:MS" with WHERE equal to
// where, sleep MS milliseconds; otherwise (the normal case) return at once.
void test_delay(const char *where);

// Monotonic wall clock in seconds.
double time_now(void);

// Peak resident set size of this process in bytes (from getrusage), 0 if unknown.
size_t peak_rss_bytes(void);

// Deterministic RNG (xorshift64*), seeded explicitly; state is one uint64 so it can be
// checkpointed. Never seeded from the clock.
typedef struct {
    uint64_t s;
} Rng;
void rng_seed(Rng *r, uint64_t seed);
uint64_t rng_u64(Rng *r);
float rng_uniform(Rng *r);  // [0, 1)
float rng_normal(Rng *r);   // N(0, 1), Box-Muller

// Parse a whole string as a number; false on junk, overflow or out of [lo, hi].
bool parse_long(const char *s, long lo, long hi, long *out);
bool parse_double(const char *s, double *out);

// Length (1-4) of the valid UTF-8 sequence starting at s, n bytes available; 0 if the
// bytes there are not valid UTF-8 (overlong, surrogate, > U+10FFFF, truncated).
size_t utf8_seq_len(const uint8_t *s, size_t n);

// Human-friendly byte count ("1.50 MiB") into buf; returns buf.
const char *fmt_bytes(double bytes, char *buf, size_t cap);

#endif
