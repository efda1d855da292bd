/* File descriptor helpers. Every descriptor kiln opens is O_CLOEXEC. */
#pragma once

#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "builder/common/error.h"

/** Reads all of `fd` into a malloc'd, NUL-terminated buffer; LIMIT when longer than `max`. */
int kiln_read_fd_all(int fd, size_t max, char **ret_data, size_t *ret_len, struct kiln_error **err);

/** Reads a whole file (path relative to `dirfd`, AT_FDCWD allowed); NOTFOUND when absent. */
int kiln_read_file_at(int dirfd, const char *path, size_t max, char **ret_data, size_t *ret_len,
                      struct kiln_error **err);

/**
 * Opens `path` as if `rootfd` were "/": symlinks, ".." and absolute paths never leave it
 * (openat2 with RESOLVE_IN_ROOT). O_CLOEXEC is always added. Returns the fd or -1
 * (NOTFOUND when the path does not exist, IO otherwise, UNSUPPORTED without openat2).
 */
/**
 * openat2() confined to `rootfd` (RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | `resolve`), O_CLOEXEC
 * added, retried on EAGAIN and EINTR; "" is the root itself. -1 with errno, for callers that
 * act on errno (ENOENT, ELOOP...).
 */
int kiln_openat2_in_root(int rootfd, const char *path, int flags, mode_t mode, uint64_t resolve);

int kiln_open_in_root(int rootfd, const char *path, int flags, mode_t mode,
                      struct kiln_error **err);

/** Reads a whole file resolved inside `rootfd` as kiln_open_in_root() does. */
int kiln_read_file_in_root(int rootfd, const char *path, size_t max, char **ret_data,
                           size_t *ret_len, struct kiln_error **err);

/** Writes all bytes, retrying on short writes and EINTR. */
int kiln_write_all(int fd, const void *data, size_t len, struct kiln_error **err);

/** Replaces the file `path` (relative to `dirfd`, or AT_FDCWD) with `data`, mode 0644: written
 * to "PATH.kiln-tmp" beside it, fsync'd and renamed over it, so a reader never sees half of
 * it. IO errors name `path`; the temporary file is removed on failure. */
int kiln_write_file_atomic_at(int dirfd, const char *path, const void *data, size_t len,
                              struct kiln_error **err);
