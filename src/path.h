// path.h: file-system paths and folders: joining, resolving and comparing them, creating a
// folder with its parents, removing a folder tree. Every path is a malloc'ed string sized to
// fit: no function here has a length limit of its own (the system's PATH_MAX, 4096 bytes on
// Linux, still bounds what one system call takes, and its errors name the path).
#ifndef QLORA_PATH_H
#define QLORA_PATH_H

#include <stdbool.h>

#include "util.h"

// printf-style formatting into a new malloc'ed string (the caller frees it); never NULL.
char *path_fmt(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

// "dir/name" as a new malloc'ed string (the caller frees it).
char *path_join(const char *dir, const char *name);

// The absolute, symlink-free form of path as a new malloc'ed string (the caller frees it), of
// any length (a folder deeper than PATH_MAX too), also for a path that does not exist yet: its
// longest existing prefix is resolved as realpath would and the rest is appended as written.
// NULL if that cannot be done (".." after a missing name, a folder that cannot be searched, a
// loop of symbolic links).
char *path_resolve(const char *path);

// Refuse an output folder that is, contains or is inside an input (a model folder, an
// adapter, a data file): writing there would replace or mix with what is being read.
// out_what / in_what name the two in the message ("output_dir", "base_model"); status 2.
// Paths that cannot be resolved are let through (they do not exist, so overlap nothing).
bool path_check_apart(const char *out_what, const char *out, const char *in_what, const char *in,
                      Error *err);

// Create folder path and any missing parents (mode 0755); an existing folder is fine.
// False (status 1) naming the part that could not be created.
bool path_mkdir_p(const char *path, Error *err);

// Remove path: a file, or a folder with everything in it (best effort; symlinks are removed,
// never followed). True if path is gone afterwards.
bool path_remove_tree(const char *path);

#endif
