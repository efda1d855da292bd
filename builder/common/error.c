#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "builder/common/error.h"
#include "builder/common/strbuf.h"
#include "builder/common/xalloc.h"

static const char *const kind_names[_KILN_ERR_MAX] = {
        [KILN_ERR_GENERIC] = "error",     [KILN_ERR_IO] = "io",
        [KILN_ERR_PARSE] = "parse",       [KILN_ERR_INVALID] = "invalid",
        [KILN_ERR_NOTFOUND] = "notfound", [KILN_ERR_UNSUPPORTED] = "unsupported",
        [KILN_ERR_NET] = "net",           [KILN_ERR_AUTH] = "auth",
        [KILN_ERR_DIGEST] = "digest",     [KILN_ERR_LIMIT] = "limit",
        [KILN_ERR_CHILD] = "child",
};

const char *kiln_errkind_name(enum kiln_errkind kind)
{
        if ((unsigned) kind >= _KILN_ERR_MAX)
                return "error";
        return kind_names[kind];
}

static void set_error(struct kiln_error **err, struct kiln_error *e)
{
        if (!err) {
                kiln_error_free(e);
                return;
        }
        /* A caller that reuses an error slot gets the newest error. */
        kiln_error_free(*err);
        *err = e;
}

int kiln_error_newv(struct kiln_error **err, enum kiln_errkind kind, const char *fmt, va_list ap)
{
        struct kiln_error *e;
        char *msg;

        if (!err)
                return -1;
        msg = xvasprintf(fmt, ap);
        e = xcalloc(1, sizeof(*e));
        e->kind = kind;
        e->msg = msg;
        set_error(err, e);
        return -1;
}

int kiln_error_new(struct kiln_error **err, enum kiln_errkind kind, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        kiln_error_newv(err, kind, fmt, ap);
        va_end(ap);
        return -1;
}

int kiln_error_errno(struct kiln_error **err, enum kiln_errkind kind, const char *fmt, ...)
{
        int saved = errno;
        va_list ap;

        va_start(ap, fmt);
        kiln_error_newv(err, kind, fmt, ap);
        va_end(ap);
        if (err && *err)
                (*err)->errnum = saved;
        errno = saved;
        return -1;
}

int kiln_error_at(struct kiln_error **err, enum kiln_errkind kind, const char *file, unsigned line,
                  unsigned column, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        kiln_error_newv(err, kind, fmt, ap);
        va_end(ap);
        if (err && *err)
                kiln_error_set_position(*err, file, line, column);
        return -1;
}

int kiln_error_wrap(struct kiln_error **err, const char *fmt, ...)
{
        va_list ap;
        char *prefix, *msg;

        if (!err || !*err)
                return -1;
        va_start(ap, fmt);
        prefix = xvasprintf(fmt, ap);
        va_end(ap);
        msg = xasprintf("%s: %s", prefix, (*err)->msg);
        free(prefix);
        free((*err)->msg);
        (*err)->msg = msg;
        return -1;
}

void kiln_error_set_source_line(struct kiln_error *e, const char *line, size_t len)
{
        if (!e)
                return;
        free(e->source_line);
        e->source_line = xstrndup(line, len);
}

void kiln_error_set_position(struct kiln_error *e, const char *file, unsigned line, unsigned column)
{
        if (!e)
                return;
        if (file && !e->file)
                e->file = xstrdup(file);
        if (!e->line) {
                e->line = line;
                e->column = column;
        }
}

char *kiln_error_format(const struct kiln_error *e)
{
        struct kiln_buf b = KILN_BUF_INIT;

        if (e->file) {
                kiln_buf_adds(&b, e->file, NULL);
                if (e->line) {
                        kiln_buf_addf(&b, NULL, ":%u", e->line);
                        if (e->column)
                                kiln_buf_addf(&b, NULL, ":%u", e->column);
                }
                kiln_buf_adds(&b, ": ", NULL);
        }
        kiln_buf_adds(&b, e->msg ? e->msg : "unknown error", NULL);
        if (e->errnum)
                kiln_buf_addf(&b, NULL, ": %s", strerror(e->errnum));
        return kiln_buf_detach(&b, NULL);
}

struct kiln_error *kiln_error_free(struct kiln_error *e)
{
        if (!e)
                return NULL;
        free(e->file);
        free(e->msg);
        free(e->source_line);
        free(e);
        return NULL;
}
