/*
 * A bump allocator whose memory is freed in one call (libgit2's git_pool): the syntax
 * tree and everything derived from it live in one arena.
 */
#pragma once

#include <stddef.h>

#include "builder/common/cleanup.h"

struct kiln_arena_chunk;

struct kiln_arena {
        struct kiln_arena_chunk *head;
        size_t used;  /* bytes used in head */
        size_t total; /* bytes handed out, for statistics */
};

#define KILN_ARENA_INIT                             \
        {                                           \
                .head = NULL, .used = 0, .total = 0 \
        }

/** Returns `size` zeroed bytes aligned for any type; aborts on out-of-memory. */
void *kiln_arena_alloc(struct kiln_arena *a, size_t size);

/** Allocates an array of `n` zeroed elements of `size` bytes. */
void *kiln_arena_array(struct kiln_arena *a, size_t n, size_t size);

/** Copies `n` bytes; the result is NUL-terminated so text can be used as a string. */
char *kiln_arena_memdup(struct kiln_arena *a, const void *p, size_t n);
char *kiln_arena_strdup(struct kiln_arena *a, const char *s);
char *kiln_arena_printf(struct kiln_arena *a, const char *fmt, ...) _printf_(2, 3);

/** Frees everything allocated from the arena; it can be used again afterwards. */
void kiln_arena_release(struct kiln_arena *a);
