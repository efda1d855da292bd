#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "builder/common/strbuf.h"
#include "builder/common/xalloc.h"

char kiln_buf_empty[1];

void kiln_buf_init(struct kiln_buf *b, size_t max)
{
        b->buf = kiln_buf_empty;
        b->len = 0;
        b->alloc = 0;
        b->max = max;
        b->overflow = false;
}

static int reserve(struct kiln_buf *b, size_t extra, struct kiln_error **err)
{
        size_t limit = b->max ? b->max : (size_t) -1 / 2;
        size_t want;

        if (extra > limit || b->len > limit - extra) {
                b->overflow = true;
                return kiln_error_new(err, KILN_ERR_LIMIT, "text exceeds the limit of %zu bytes",
                                      limit);
        }
        want = b->len + extra + 1;
        if (want <= b->alloc)
                return 0;
        if (b->alloc == 0) {
                size_t alloc = 0;
                b->buf = xgrow(NULL, 1, want < 64 ? 64 : want, &alloc);
                b->alloc = alloc;
                b->buf[0] = '\0';
        } else {
                b->buf = xgrow(b->buf, 1, want, &b->alloc);
        }
        return 0;
}

int kiln_buf_add(struct kiln_buf *b, const void *data, size_t len, struct kiln_error **err)
{
        if (len == 0)
                return 0;
        if (reserve(b, len, err) < 0)
                return -1;
        memcpy(b->buf + b->len, data, len);
        b->len += len;
        b->buf[b->len] = '\0';
        return 0;
}

int kiln_buf_addc(struct kiln_buf *b, char c, struct kiln_error **err)
{
        return kiln_buf_add(b, &c, 1, err);
}

int kiln_buf_adds(struct kiln_buf *b, const char *s, struct kiln_error **err)
{
        return kiln_buf_add(b, s, strlen(s), err);
}

int kiln_buf_vaddf(struct kiln_buf *b, struct kiln_error **err, const char *fmt, va_list ap)
{
        va_list copy;
        int n;

        va_copy(copy, ap);
        n = vsnprintf(NULL, 0, fmt, copy);
        va_end(copy);
        if (n < 0)
                return kiln_error_new(err, KILN_ERR_INVALID, "bad format string");
        if (reserve(b, (size_t) n, err) < 0)
                return -1;
        vsnprintf(b->buf + b->len, (size_t) n + 1, fmt, ap);
        b->len += (size_t) n;
        return 0;
}

int kiln_buf_addf(struct kiln_buf *b, struct kiln_error **err, const char *fmt, ...)
{
        va_list ap;
        int r;

        va_start(ap, fmt);
        r = kiln_buf_vaddf(b, err, fmt, ap);
        va_end(ap);
        return r;
}

void kiln_buf_truncate(struct kiln_buf *b, size_t len)
{
        if (len >= b->len)
                return;
        b->len = len;
        b->buf[len] = '\0';
}

char *kiln_buf_detach(struct kiln_buf *b, size_t *ret_len)
{
        char *s;

        if (ret_len)
                *ret_len = b->len;
        s = b->alloc ? b->buf : xstrdup("");
        kiln_buf_init(b, b->max);
        return s;
}

void kiln_buf_release(struct kiln_buf *b)
{
        if (b->alloc)
                free(b->buf);
        kiln_buf_init(b, b->max);
}
