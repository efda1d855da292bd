#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "builder/common/arena.h"
#include "builder/common/xalloc.h"

#define CHUNK_SIZE (64 * 1024)
#define ALIGN      16

struct kiln_arena_chunk {
        struct kiln_arena_chunk *next;
        size_t size;
        _Alignas(ALIGN) unsigned char data[];
};

void *kiln_arena_alloc(struct kiln_arena *a, size_t size)
{
        struct kiln_arena_chunk *c;
        size_t need = (size + ALIGN - 1) & ~(size_t) (ALIGN - 1);
        void *p;

        if (need < size)
                abort();
        if (need == 0)
                need = ALIGN;
        c = a->head;
        if (!c || c->size - a->used < need) {
                size_t csize = need > CHUNK_SIZE / 4 ? need : CHUNK_SIZE;
                c = xmalloc(sizeof(*c) + csize);
                c->size = csize;
                if (a->head && csize != CHUNK_SIZE) {
                        /* A big block gets its own chunk behind the current one. */
                        c->next = a->head->next;
                        a->head->next = c;
                        a->total += need;
                        memset(c->data, 0, need);
                        return c->data;
                }
                c->next = a->head;
                a->head = c;
                a->used = 0;
        }
        p = c->data + a->used;
        a->used += need;
        a->total += need;
        memset(p, 0, need);
        return p;
}

void *kiln_arena_array(struct kiln_arena *a, size_t n, size_t size)
{
        if (size && n > SIZE_MAX / size)
                abort();
        return kiln_arena_alloc(a, n * size);
}

char *kiln_arena_memdup(struct kiln_arena *a, const void *p, size_t n)
{
        char *q = kiln_arena_alloc(a, n + 1);
        if (n)
                memcpy(q, p, n);
        q[n] = '\0';
        return q;
}

char *kiln_arena_strdup(struct kiln_arena *a, const char *s)
{
        return kiln_arena_memdup(a, s, strlen(s));
}

char *kiln_arena_printf(struct kiln_arena *a, const char *fmt, ...)
{
        va_list ap;
        char *tmp, *s;

        va_start(ap, fmt);
        tmp = xvasprintf(fmt, ap);
        va_end(ap);
        s = kiln_arena_strdup(a, tmp);
        free(tmp);
        return s;
}

void kiln_arena_release(struct kiln_arena *a)
{
        struct kiln_arena_chunk *c = a->head;

        while (c) {
                struct kiln_arena_chunk *next = c->next;
                free(c);
                c = next;
        }
        a->head = NULL;
        a->used = 0;
        a->total = 0;
}
