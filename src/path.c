// path.c: see path.h.
#include "path.h"

#include <dirent.h>
#include <errno.h>
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

char *path_resolve(const char *path) {
    char *r = realpath(path, NULL);  // glibc allocates: no PATH_MAX limit on the result
    if (r || !path[0]) return r;
    char *copy = xstrdup(path), *out = NULL;
    size_t n = strlen(copy);
    while (n > 1 && copy[n - 1] == '/') copy[--n] = '\0';
    char *slash = strrchr(copy, '/');
    const char *base = slash ? slash + 1 : copy, *parent = !slash ? "." : slash == copy ? "/" : copy;
    if (slash && slash != copy) *slash = '\0';
    if (*base && strcmp(base, ".") != 0 && strcmp(base, "..") != 0) {
        char *dir = path_resolve(parent);
        if (dir) out = path_fmt("%s%s%s", dir, strcmp(dir, "/") == 0 ? "" : "/", base);
        free(dir);
    }
    free(copy);
    return out;
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
