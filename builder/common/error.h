/*
 * Errors as values (crun's explicit object, libgit2's few kinds).
 *
 * A function that can fail returns int (0 ok, -1 on failure) or a pointer, and takes
 * `struct kiln_error **err` as its last argument. On success *err is untouched; on
 * failure it is set, unless the caller passed NULL to say it does not care.
 * Library code never prints: only builder/main.c formats and prints errors.
 */
#pragma once

#include <stdarg.h>
#include <stddef.h>

#include "builder/common/cleanup.h"

enum kiln_errkind {
        KILN_ERR_GENERIC,     /* just a message */
        KILN_ERR_IO,          /* a system call failed */
        KILN_ERR_PARSE,       /* malformed input text (Dockerfile, JSON, ...) */
        KILN_ERR_INVALID,     /* well-formed but meaningless input or argument */
        KILN_ERR_NOTFOUND,    /* a named thing does not exist */
        KILN_ERR_UNSUPPORTED, /* valid, but kiln or this machine cannot do it */
        KILN_ERR_NET,         /* network or protocol failure */
        KILN_ERR_AUTH,        /* credentials refused or missing */
        KILN_ERR_DIGEST,      /* content does not match its digest */
        KILN_ERR_LIMIT,       /* a size or count cap was exceeded */
        KILN_ERR_CHILD,       /* a child process failed */
        _KILN_ERR_MAX,
};

struct kiln_error {
        enum kiln_errkind kind;
        int errnum;        /* errno captured by kiln_error_errno(), else 0 */
        char *file;        /* source file the error is about, or NULL */
        unsigned line;     /* 1-based; 0 when unknown */
        unsigned column;   /* 1-based; 0 when unknown */
        char *msg;         /* lower case, no full stop, without strerror */
        char *source_line; /* copy of the offending source line, or NULL */
};

/** Sets *err to a new error of `kind`. Always returns -1, so callers can `return
 * kiln_error_new(...)`. */
int kiln_error_new(struct kiln_error **err, enum kiln_errkind kind, const char *fmt, ...)
        _printf_(3, 4);

/** Like kiln_error_new() but records errno, whose text is appended once when formatted. */
int kiln_error_errno(struct kiln_error **err, enum kiln_errkind kind, const char *fmt, ...)
        _printf_(3, 4);

/** Sets *err to an error at a position in `file` (line and column are 1-based). Returns -1. */
int kiln_error_at(struct kiln_error **err, enum kiln_errkind kind, const char *file, unsigned line,
                  unsigned column, const char *fmt, ...) _printf_(6, 7);

/** Same as kiln_error_new() with a va_list. */
int kiln_error_newv(struct kiln_error **err, enum kiln_errkind kind, const char *fmt, va_list ap)
        _printf_(3, 0);

/** Prepends context ("stage 'build': ") to an error already set in *err. Returns -1. */
int kiln_error_wrap(struct kiln_error **err, const char *fmt, ...) _printf_(2, 3);

/** Attaches a copy of the source line the error points into (for a caret display). */
void kiln_error_set_source_line(struct kiln_error *e, const char *line, size_t len);

/** Sets the position of an error that has none yet. */
void kiln_error_set_position(struct kiln_error *e, const char *file, unsigned line,
                             unsigned column);

/** Formats "FILE:LINE:COL: message: strerror" (parts omitted when unknown). Caller frees. */
char *kiln_error_format(const struct kiln_error *e);

/** A short name for a kind ("parse", "io", ...). */
const char *kiln_errkind_name(enum kiln_errkind kind);

/** Frees an error; accepts NULL and returns NULL. */
struct kiln_error *kiln_error_free(struct kiln_error *e);

DEFINE_TRIVIAL_CLEANUP_FUNC(struct kiln_error *, kiln_error_free)
