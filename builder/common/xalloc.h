/* Allocators that abort on out-of-memory (crun, git): callers never check for NULL. */
#pragma once

#include <stdarg.h>
#include <stddef.h>

#include "builder/common/cleanup.h"

void *xmalloc(size_t size);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t size);
/* Grows `p` to hold at least `n` elements of `size` bytes, doubling; updates *alloc. */
void *xgrow(void *p, size_t size, size_t n, size_t *alloc);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
void *xmemdup(const void *p, size_t n);
char *xasprintf(const char *fmt, ...) _printf_(1, 2);
char *xvasprintf(const char *fmt, va_list ap) _printf_(1, 0);

/* Grows array `arr` (with counters `nr` in use and `alloc` allocated) to hold `want` items. */
#define XGROW(arr, want, alloc) ((arr) = xgrow((arr), sizeof(*(arr)), (want), &(alloc)))

/* Frees a NULL-terminated vector of strings and the strings; accepts NULL, returns NULL. */
char **strv_free(char **v);
DEFINE_TRIVIAL_CLEANUP_FUNC(char **, strv_free)
