// util.c: see util.h.
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define STB_DS_IMPLEMENTATION
#include "ds.h"

// Copy message full (n bytes) into msg (cap bytes) with its middle left out and said so:
// "HEAD[... 3012 bytes left out ...]TAIL". The head holds the file named first, the tail the
// reason that usually ends a message. Cuts fall between UTF-8 sequences.
static void elide_middle(char *msg, size_t cap, const char *full, size_t n) {
    char mark[64];
    const size_t room = cap - 1 - sizeof "[... 18446744073709551615 bytes left out ...]";
    size_t head = room / 2, tail = n - (room - head);
    while (head > 0 && ((unsigned char)full[head] & 0xC0) == 0x80) head--;
    while (tail < n && ((unsigned char)full[tail] & 0xC0) == 0x80) tail++;
    snprintf(mark, sizeof mark, "[... %zu bytes left out ...]", tail - head);
    snprintf(msg, cap, "%.*s%s%s", (int)head, full, mark, full + tail);
}

// Fill err (if not NULL) with the message and status; returns false. A message longer than
// err->msg (a path near the system's limit is 4 KiB) keeps its start and end (elide_middle).
static bool error_vset(Error *err, int status, const char *fmt, va_list ap) {
    if (!err) return false;
    va_list again;
    va_copy(again, ap);
    const int n = vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    if (n >= (int)sizeof err->msg) {
        char *full = xvasprintf(fmt, again);
        elide_middle(err->msg, sizeof err->msg, full, (size_t)n);
        free(full);
    }
    va_end(again);
    err->status = status;
    return false;
}

bool error_set(Error *err, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    error_vset(err, EXIT_BAD_INPUT, fmt, ap);
    va_end(ap);
    return false;
}

bool error_runtime(Error *err, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    error_vset(err, EXIT_RUNTIME, fmt, ap);
    va_end(ap);
    return false;
}

bool error_errno(Error *err, int e, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *what = xvasprintf(fmt, ap);
    va_end(ap);
    if (e == ENAMETOOLONG) error_set(err, "%s: %s", what, strerror(e));
    else error_runtime(err, "%s: %s", what, strerror(e));
    free(what);
    return false;
}

void check_failed(const char *file, int line, const char *expr) {
    fflush(stdout);
    fprintf(stderr, "qlora: internal error: %s:%d: CHECK(%s) failed (this is a bug in qlora)\n",
            file, line, expr);
    abort();
}

// The one place below the commands that exits (util.h says why).
static void out_of_memory(size_t bytes) {
    char buf[32];
    fflush(stdout);
    fprintf(stderr, "qlora: error: out of memory allocating %s\n", fmt_bytes((double)bytes, buf, sizeof buf));
    exit(EXIT_RUNTIME);
}

void *xmalloc(size_t bytes) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) out_of_memory(bytes);
    return p;
}

void *xcalloc(size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) out_of_memory(n * size);
    return p;
}

void *xrealloc(void *p, size_t bytes) {
    void *q = realloc(p, bytes ? bytes : 1);
    if (!q) out_of_memory(bytes);
    return q;
}

void *xmalloc_aligned(size_t bytes) {
    void *p = NULL;
    size_t rounded = (bytes + 63) & ~(size_t)63;
    if (posix_memalign(&p, 64, rounded ? rounded : 64) != 0) out_of_memory(bytes);
    return p;
}

char *xvasprintf(const char *fmt, va_list ap) {
    va_list again;
    va_copy(again, ap);
    const int n = vsnprintf(NULL, 0, fmt, ap);
    const size_t cap = n > 0 ? (size_t)n + 1 : 1;
    char *s = xmalloc(cap);
    s[0] = '\0';
    vsnprintf(s, cap, fmt, again);
    va_end(again);
    return s;
}

char *xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *p = xmalloc(n);
    memcpy(p, s, n);
    return p;
}

// What kind of file st_mode describes, for "expected a regular file, found ..." messages.
static const char *file_kind(mode_t mode) {
    return S_ISDIR(mode) ? "a directory" : S_ISFIFO(mode) ? "a FIFO" : S_ISCHR(mode) ? "a character device"
           : S_ISBLK(mode) ? "a block device" : S_ISSOCK(mode) ? "a socket" : "a special file";
}

// Open path for reading only if it is a regular file (after symlinks): O_NONBLOCK so that
// a FIFO cannot block the open, then fstat. Returns the fd (blocking again) or -1 with err
// set: a missing file or a non-regular one is bad input (status 2).
static int open_regular(const char *path, struct stat *st, Error *err) {
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENXIO) return error_set(err, "%s: expected a regular file, found a special file", path), -1;
        return error_set(err, "%s: cannot open: %s", path, strerror(errno)), -1;
    }
    if (fstat(fd, st) != 0) {
        error_runtime(err, "%s: cannot stat: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    if (!S_ISREG(st->st_mode)) {
        error_set(err, "%s: expected a regular file, found %s", path, file_kind(st->st_mode));
        close(fd);
        return -1;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    return fd;
}

bool file_map(MappedFile *f, const char *path, Error *err) {
    f->data = NULL;
    f->size = 0;
    struct stat st;
    int fd = open_regular(path, &st, err);
    if (fd < 0) return false;
    if (st.st_size > 0) {
        void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            close(fd);
            return error_runtime(err, "%s: cannot mmap %lld bytes: %s", path,
                                 (long long)st.st_size, strerror(errno));
        }
        f->data = p;
        f->size = (size_t)st.st_size;
    }
    close(fd);
    return true;
}

void file_unmap(MappedFile *f) {
    if (f->data && f->size) munmap((void *)f->data, f->size);
    f->data = NULL;
    f->size = 0;
}

bool file_read_all(const char *path, char **out, size_t *size, Error *err) {
    *out = NULL;
    struct stat st;
    int fd = open_regular(path, &st, err);
    if (fd < 0) return false;
    FILE *fp = fdopen(fd, "rb");
    if (!fp) {
        close(fd);
        return error_runtime(err, "%s: cannot open: %s", path, strerror(errno));
    }
    size_t cap = 4096, n = 0;
    char *buf = xmalloc(cap);
    for (;;) {
        if (n + 1 >= cap) buf = xrealloc(buf, cap *= 2);
        size_t got = fread(buf + n, 1, cap - n - 1, fp);
        n += got;
        if (got == 0) break;
    }
    bool bad = ferror(fp);
    fclose(fp);
    if (bad) {
        free(buf);
        return error_runtime(err, "%s: read error", path);
    }
    buf[n] = '\0';
    *out = buf;
    if (size) *size = n;
    return true;
}

bool atomic_open(AtomicFile *af, const char *path, Error *err) {
    af->path = xstrdup(path);
    size_t cap = strlen(path) + 32;
    af->tmp_path = xmalloc(cap);
    snprintf(af->tmp_path, cap, "%s.tmp.%ld", path, (long)getpid());
    af->fp = fopen(af->tmp_path, "wb");
    if (!af->fp) {
        bool r = error_errno(err, errno, "%s: cannot create", af->tmp_path);
        free(af->path);
        free(af->tmp_path);
        af->path = af->tmp_path = NULL;
        return r;
    }
    return true;
}

bool atomic_write(AtomicFile *af, const void *data, size_t bytes, Error *err) {
    if (bytes && fwrite(data, 1, bytes, af->fp) != bytes)
        return error_runtime(err, "%s: write failed: %s", af->tmp_path, strerror(errno));
    return true;
}

// fsync the folder holding path, so that a rename into it survives a crash (best effort).
static void fsync_parent_dir(const char *path) {
    char *copy = xstrdup(path);
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);  // best effort: some file systems refuse fsync on a directory
        close(fd);
    }
    free(copy);
}

bool atomic_commit(AtomicFile *af, Error *err) {
    bool ok = true;
    if (fflush(af->fp) != 0 || fsync(fileno(af->fp)) != 0)
        ok = error_runtime(err, "%s: write failed: %s", af->tmp_path, strerror(errno));
    if (fclose(af->fp) != 0 && ok)
        ok = error_runtime(err, "%s: close failed: %s", af->tmp_path, strerror(errno));
    af->fp = NULL;
    if (ok && rename(af->tmp_path, af->path) != 0)
        ok = error_runtime(err, "%s: cannot rename to %s: %s", af->tmp_path, af->path,
                           strerror(errno));
    if (ok)
        fsync_parent_dir(af->path);
    else
        unlink(af->tmp_path);
    free(af->path);
    free(af->tmp_path);
    af->path = af->tmp_path = NULL;
    return ok;
}

void atomic_abort(AtomicFile *af) {
    if (af->fp) fclose(af->fp);
    if (af->tmp_path) unlink(af->tmp_path);
    free(af->path);
    free(af->tmp_path);
    af->fp = NULL;
    af->path = af->tmp_path = NULL;
}

bool write_file_atomic(const char *path, const void *data, size_t len, Error *err) {
    AtomicFile af;
    if (!atomic_open(&af, path, err)) return false;
    if (!atomic_write(&af, data, len, err)) {
        atomic_abort(&af);
        return false;
    }
    return atomic_commit(&af, err);
}

bool copy_file_atomic(const char *from, const char *to, Error *err) {
    char *text;
    size_t len;
    if (!file_read_all(from, &text, &len, err)) return false;
    bool ok = write_file_atomic(to, text, len, err);
    free(text);
    return ok;
}

bool dir_lock(const char *dir, Error *err) {
    const size_t cap = strlen(dir) + sizeof "/.qlora.lock";
    char *path = xmalloc(cap), holder[32] = "";
    snprintf(path, cap, "%s/.qlora.lock", dir);
    bool ok = true;
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        ok = error_errno(err, errno, "%s: cannot create", path);
    } else if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        ssize_t n = read(fd, holder, sizeof holder - 1);
        holder[n > 0 ? n : 0] = '\0';
        holder[strcspn(holder, "\n")] = '\0';
        close(fd);
        ok = error_runtime(err, "%s: in use by another run (pid %s); wait for it to end or choose another "
                                "output folder", dir, holder[0] ? holder : "unknown");
    } else {
        char pid[32];
        int len = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
        if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)len, 0) != len) {
            close(fd);
            ok = error_runtime(err, "%s: cannot write: %s", path, strerror(errno));
        }
    }
    free(path);
    return ok;  // on success fd stays open: the lock lasts until the process exits
}

void test_delay(const char *where) {
    const char *v = getenv("QLORA_TEST_DELAY");
    size_t n = strlen(where);
    if (!v || strncmp(v, where, n) != 0 || v[n] != ':') return;
    long ms = atol(v + n + 1);
    if (ms > 0) usleep((useconds_t)ms * 1000);
}

double time_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

size_t peak_rss_bytes(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return 0;
    return (size_t)ru.ru_maxrss * 1024;  // Linux reports KiB
}

void rng_seed(Rng *r, uint64_t seed) {
    // splitmix64 of the seed, so that seeds 0, 1, 2 ... give unrelated streams
    uint64_t z = seed + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    r->s = z ? z : 0x2545F4914F6CDD1Dull;  // xorshift state must be non-zero
}

uint64_t rng_u64(Rng *r) {
    uint64_t x = r->s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    r->s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

float rng_uniform(Rng *r) {
    return (float)(rng_u64(r) >> 40) * (1.0f / 16777216.0f);  // 24 random bits
}

float rng_normal(Rng *r) {
    double u1 = ((double)(rng_u64(r) >> 11) + 1.0) * (1.0 / 9007199254740993.0);  // (0, 1]
    double u2 = (double)(rng_u64(r) >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2));
}

bool parse_long(const char *s, long lo, long hi, long *out) {
    if (!s || !*s) return false;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end != '\0' || v < lo || v > hi) return false;
    *out = v;
    return true;
}

bool parse_double(const char *s, double *out) {
    if (!s || !*s) return false;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end != '\0' || !isfinite(v)) return false;
    *out = v;
    return true;
}

size_t utf8_seq_len(const uint8_t *s, size_t n) {
    uint8_t c = s[0];
    size_t len;
    uint32_t cp;
    if (c < 0x80) return 1;
    if ((c & 0xE0) == 0xC0) { len = 2; cp = c & 0x1F; }
    else if ((c & 0xF0) == 0xE0) { len = 3; cp = c & 0x0F; }
    else if ((c & 0xF8) == 0xF0) { len = 4; cp = c & 0x07; }
    else return 0;
    if (len > n) return 0;
    for (size_t k = 1; k < len; k++) {
        if ((s[k] & 0xC0) != 0x80) return 0;
        cp = cp << 6 | (s[k] & 0x3F);
    }
    static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min_cp[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return len;
}

const char *fmt_bytes(double bytes, char *buf, size_t cap) {
    const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    while (bytes >= 1024.0 && u < 4) {
        bytes /= 1024.0;
        u++;
    }
    if (u == 0)
        snprintf(buf, cap, "%.0f B", bytes);
    else
        snprintf(buf, cap, "%.2f %s", bytes, units[u]);
    return buf;
}
