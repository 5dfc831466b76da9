// path.c: see path.h.
#include "path.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

char *path_fmt(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *s = xvasprintf(fmt, ap);
    va_end(ap);
    return s;
}

char *path_join(const char *dir, const char *name) { return path_fmt("%s/%s", dir, name); }

// path_resolve walks the path a name at a time from an open folder (openat, fstatat,
// readlinkat), so no system call sees more than one name and the result may be longer than
// PATH_MAX; realpath may not give such a result (glibc's does, the sanitizers' does not).
typedef struct {
    char *out;  // the resolved path so far (malloc'ed; "" stands for "/")
    int fd;     // the folder out names (O_PATH); -1 once a name is missing: the rest is appended
    int links;  // symbolic links followed, at most PATH_MAX_LINKS
    char *todo; // what is left of the path (malloc'ed), from offset at
    size_t at;
} Resolve;
#define PATH_MAX_LINKS 40  // as Linux's ELOOP limit

// Start at "/" (absolute) or the current folder. False if that cannot be opened or named.
static bool resolve_start(Resolve *r, bool absolute) {
    free(r->out);
    if (r->fd >= 0) close(r->fd);
    r->out = absolute ? xstrdup("") : getcwd(NULL, 0);  // glibc's getcwd has no PATH_MAX limit
    r->fd = r->out ? open(absolute ? "/" : ".", O_PATH | O_DIRECTORY | O_CLOEXEC) : -1;
    if (r->out && strcmp(r->out, "/") == 0) r->out[0] = '\0';
    return r->out && r->fd >= 0;
}

// Append "/" + name to r->out; descend into it (fd, an open folder) or, with fd -1, stop descending.
static void resolve_enter(Resolve *r, const char *name, int fd) {
    char *next = path_fmt("%s/%s", r->out, name);
    free(r->out);
    r->out = next;
    if (r->fd >= 0) close(r->fd);
    r->fd = fd;
}

// The symbolic link name in r->fd: its target replaces it at the front of what is left.
static bool resolve_link(Resolve *r, const char *name, size_t bytes) {
    char *target = xmalloc(bytes + 1);
    const ssize_t n = readlinkat(r->fd, name, target, bytes + 1);
    bool ok = n > 0 && (size_t)n <= bytes && ++r->links <= PATH_MAX_LINKS;
    if (ok) {
        target[n] = '\0';
        char *todo = path_fmt("%s/%s", target, r->todo + r->at);
        free(r->todo);
        r->todo = todo;
        r->at = 0;
        if (target[0] == '/') ok = resolve_start(r, true);
    }
    free(target);
    return ok;
}

// One name of the path. False when the path cannot be resolved (".." after a missing name,
// a folder that cannot be searched, a loop of links).
static bool resolve_name(Resolve *r, const char *name) {
    if (strcmp(name, ".") == 0) return true;
    if (strcmp(name, "..") == 0) {
        if (r->fd < 0) return false;
        char *slash = strrchr(r->out, '/');
        if (slash) *slash = '\0';  // "" (the root) stays the root, as its ".." is itself
        const int up = openat(r->fd, "..", O_PATH | O_DIRECTORY | O_CLOEXEC);
        close(r->fd);
        r->fd = up;
        return up >= 0;
    }
    struct stat st;
    if (r->fd < 0 || fstatat(r->fd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
        if (r->fd >= 0 && errno != ENOENT) return false;
        resolve_enter(r, name, -1);  // missing: the rest is taken as written
        return true;
    }
    if (S_ISLNK(st.st_mode)) return resolve_link(r, name, (size_t)st.st_size);
    const int fd = S_ISDIR(st.st_mode) ? openat(r->fd, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) : -1;
    if (S_ISDIR(st.st_mode) && fd < 0) return false;
    resolve_enter(r, name, fd);  // a file: what follows it cannot exist, and is taken as written
    return true;
}

char *path_resolve(const char *path) {
    if (!path[0]) return NULL;
    Resolve r = {.fd = -1, .todo = xstrdup(path)};
    bool ok = resolve_start(&r, path[0] == '/');
    while (ok && r.todo[r.at]) {
        const size_t len = strcspn(r.todo + r.at, "/");
        char *name = xmalloc(len + 1);
        memcpy(name, r.todo + r.at, len);
        name[len] = '\0';
        r.at += len + (r.todo[r.at + len] == '/');
        if (len) ok = resolve_name(&r, name);
        free(name);
    }
    if (r.fd >= 0) close(r.fd);
    free(r.todo);
    if (ok && !r.out[0]) {
        free(r.out);
        return xstrdup("/");
    }
    if (!ok) free(r.out);
    return ok ? r.out : NULL;
}

// True if resolved path a lies strictly inside resolved folder b.
static bool path_inside(const char *a, const char *b) {
    size_t lb = strlen(b);
    if (strcmp(b, "/") == 0) return strcmp(a, "/") != 0;
    return strncmp(a, b, lb) == 0 && a[lb] == '/';
}

bool path_check_apart(const char *out_what, const char *out, const char *in_what, const char *in,
                      Error *err) {
    if (!in || !in[0]) return true;
    char *ro = path_resolve(out), *ri = ro ? path_resolve(in) : NULL;
    const char *how = !ri                   ? NULL
                      : strcmp(ro, ri) == 0 ? "is"
                      : path_inside(ro, ri) ? "is inside"
                      : path_inside(ri, ro) ? "contains"
                                            : NULL;
    const bool ok = !how || error_set(err, "%s '%s' %s %s '%s' (resolved: %s): writing there would overwrite or mix "
                                           "with an input; choose another %s", out_what, out, how, in_what, in, ri,
                                      out_what);
    free(ro);
    free(ri);
    return ok;
}

bool path_mkdir_p(const char *path, Error *err) {
    char *tmp = xstrdup(path);
    bool ok = true;
    for (char *p = tmp + 1; ok && *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
            ok = error_errno(err, errno, "%s: cannot create folder", tmp);
        *p = '/';
    }
    if (ok && mkdir(tmp, 0755) != 0 && errno != EEXIST)
        ok = error_errno(err, errno, "%s: cannot create folder", tmp);
    free(tmp);
    return ok;
}

bool path_remove_tree(const char *path) {
    struct stat st;
    if (lstat(path, &st) != 0) return errno == ENOENT;
    if (!S_ISDIR(st.st_mode)) return unlink(path) == 0;
    DIR *d = opendir(path);
    if (!d) return false;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        char *sub = path_join(path, e->d_name);
        path_remove_tree(sub);
        free(sub);
    }
    closedir(d);
    return rmdir(path) == 0;
}
