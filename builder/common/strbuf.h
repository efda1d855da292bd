/*
 * A growable string buffer with git strbuf's invariants (buf is never NULL and always
 * NUL-terminated; _detach hands the memory out) and curl dynbuf's hard size cap, so that
 * hostile input fails with a LIMIT error instead of eating memory.
 */
#pragma once

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

#include "builder/common/error.h"

struct kiln_buf {
        char *buf;
        size_t len;
        size_t alloc;  /* 0 while buf points at the shared empty string */
        size_t max;    /* largest len allowed; 0 means unlimited */
        bool overflow; /* an append was refused for the cap: the contents are incomplete */
};

extern char kiln_buf_empty[];

#define KILN_BUF_INIT                                                                    \
        {                                                                                \
                .buf = kiln_buf_empty, .len = 0, .alloc = 0, .max = 0, .overflow = false \
        }

/** Initialises an empty buffer that may hold at most `max` bytes (0: unlimited). */
void kiln_buf_init(struct kiln_buf *b, size_t max);

/** Appends bytes. Fails with LIMIT (buffer unchanged, `overflow` set) when the cap would be
 * exceeded, so a caller that ignores the result can still check once at the end. */
int kiln_buf_add(struct kiln_buf *b, const void *data, size_t len, struct kiln_error **err);
int kiln_buf_addc(struct kiln_buf *b, char c, struct kiln_error **err);
int kiln_buf_adds(struct kiln_buf *b, const char *s, struct kiln_error **err);
int kiln_buf_addf(struct kiln_buf *b, struct kiln_error **err, const char *fmt, ...) _printf_(3, 4);
int kiln_buf_vaddf(struct kiln_buf *b, struct kiln_error **err, const char *fmt, va_list ap)
        _printf_(3, 0);

/** Shortens the buffer to `len` bytes (no-op when already shorter). */
void kiln_buf_truncate(struct kiln_buf *b, size_t len);

static inline void kiln_buf_reset(struct kiln_buf *b)
{
        kiln_buf_truncate(b, 0);
}

/** Returns the contents as a malloc'd string the caller owns; the buffer is left empty. */
char *kiln_buf_detach(struct kiln_buf *b, size_t *ret_len);

/** Frees the contents and leaves an empty buffer. */
void kiln_buf_release(struct kiln_buf *b);

static inline void kiln_buf_releasep(struct kiln_buf *b)
{
        kiln_buf_release(b);
}

#define _cleanup_buf_ _cleanup_(kiln_buf_releasep)
