// path.h: file-system paths and folders: joining without fixed-size buffers, creating a
// folder with its parents, removing a folder tree. (Resolving and comparing paths:
// util.h's path_resolve / path_check_apart.)
#ifndef QLORA_PATH_H
#define QLORA_PATH_H

#include <stdbool.h>

#include "util.h"

// printf-style formatting into a new malloc'ed string (the caller frees it); never NULL.
char *path_fmt(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

// "dir/name" as a new malloc'ed string (the caller frees it).
char *path_join(const char *dir, const char *name);

// Create folder path and any missing parents (mode 0755); an existing folder is fine.
// False (status 1) naming the part that could not be created.
bool path_mkdir_p(const char *path, Error *err);

// Remove path: a file, or a folder with everything in it (best effort; symlinks are removed,
// never followed). True if path is gone afterwards.
bool path_remove_tree(const char *path);

#endif
