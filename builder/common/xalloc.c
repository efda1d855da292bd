#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "builder/common/xalloc.h"

_noreturn_ static void oom(void)
{
        static const char msg[] = "kiln: out of memory\n";
        /* Nothing else is safe to do here; write(2) needs no allocation. */
        if (write(STDERR_FILENO, msg, sizeof(msg) - 1) < 0)
                abort();
        abort();
}

void *xmalloc(size_t size)
{
        void *p = malloc(size ? size : 1);
        if (!p)
                oom();
        return p;
}

void *xcalloc(size_t n, size_t size)
{
        void *p = calloc(n ? n : 1, size ? size : 1);
        if (!p)
                oom();
        return p;
}

void *xrealloc(void *p, size_t size)
{
        void *q = realloc(p, size ? size : 1);
        if (!q)
                oom();
        return q;
}

void *xgrow(void *p, size_t size, size_t n, size_t *alloc)
{
        size_t want;

        if (n <= *alloc)
                return p;
        want = *alloc < 8 ? 8 : *alloc;
        while (want < n) {
                if (want > SIZE_MAX / 2)
                        oom();
                want *= 2;
        }
        if (want > SIZE_MAX / size)
                oom();
        p = xrealloc(p, want * size);
        *alloc = want;
        return p;
}

char *xstrdup(const char *s)
{
        return xmemdup(s, strlen(s) + 1);
}

char *xstrndup(const char *s, size_t n)
{
        size_t len = strnlen(s, n);
        char *p = xmalloc(len + 1);
        memcpy(p, s, len);
        p[len] = '\0';
        return p;
}

void *xmemdup(const void *p, size_t n)
{
        void *q = xmalloc(n);
        if (n)
                memcpy(q, p, n);
        return q;
}

char *xvasprintf(const char *fmt, va_list ap)
{
        char *s;

        if (vasprintf(&s, fmt, ap) < 0)
                oom();
        return s;
}

char *xasprintf(const char *fmt, ...)
{
        va_list ap;
        char *s;

        va_start(ap, fmt);
        s = xvasprintf(fmt, ap);
        va_end(ap);
        return s;
}

char **strv_free(char **v)
{
        size_t i;

        if (!v)
                return NULL;
        for (i = 0; v[i]; i++)
                free(v[i]);
        free(v);
        return NULL;
}
