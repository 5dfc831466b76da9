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
    const int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *s = xmalloc(n > 0 ? (size_t)n + 1 : 1);
    va_start(ap, fmt);
    vsnprintf(s, n > 0 ? (size_t)n + 1 : 1, fmt, ap);
    va_end(ap);
    return s;
}

char *path_join(const char *dir, const char *name) { return path_fmt("%s/%s", dir, name); }

bool path_mkdir_p(const char *path, Error *err) {
    char *tmp = xstrdup(path);
    bool ok = true;
    for (char *p = tmp + 1; ok && *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
            ok = error_runtime(err, "%s: cannot create folder: %s", tmp, strerror(errno));
        *p = '/';
    }
    if (ok && mkdir(tmp, 0755) != 0 && errno != EEXIST)
        ok = error_runtime(err, "%s: cannot create folder: %s", tmp, strerror(errno));
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
