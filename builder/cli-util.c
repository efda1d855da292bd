#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "builder/cli.h"
#include "builder/common/fd-util.h"
#include "builder/common/xalloc.h"

#define MAX_DOCKERFILE (16u << 20)

void cli_warn(struct cli_ctx *ctx, const char *fmt, ...)
{
        va_list ap;
        char *msg;

        va_start(ap, fmt);
        msg = xvasprintf(fmt, ap);
        va_end(ap);
        XGROW(ctx->warnings, ctx->n_warnings + 1, ctx->alloc_warnings);
        ctx->warnings[ctx->n_warnings++] = msg;
}

int cli_read_dockerfile(const char *path, char **ret_text, size_t *ret_len, struct kiln_error **err)
{
        if (strcmp(path, "-") == 0) {
                if (kiln_read_fd_all(STDIN_FILENO, MAX_DOCKERFILE, ret_text, ret_len, err) < 0)
                        return kiln_error_wrap(err, "reading the Dockerfile from stdin");
                return 0;
        }
        return kiln_read_file_at(AT_FDCWD, path, MAX_DOCKERFILE, ret_text, ret_len, err);
}

char *cli_format_position(const char *file, unsigned line, unsigned column, const char *msg)
{
        if (file && line && column)
                return xasprintf("%s:%u:%u: %s", file, line, column, msg);
        if (file && line)
                return xasprintf("%s:%u: %s", file, line, msg);
        if (file)
                return xasprintf("%s: %s", file, msg);
        return xstrdup(msg);
}

int cli_open_store(const char *root, struct layer_store **ret, struct kiln_error **err)
{
        _cleanup_free_ char *def = NULL;

        if (!root || !*root)
                root = getenv("KILN_ROOT");
        if (!root || !*root)
                root = def = layer_store_default_root();
        return layer_store_open(root, ret, err);
}

void cli_human_size(uint64_t bytes, char buf[32])
{
        static const char *const units[] = { "B", "kB", "MB", "GB", "TB" };
        double v = (double) bytes;
        size_t u = 0;

        while (v >= 1000 && u + 1 < ELEMENTSOF(units)) {
                v /= 1000;
                u++;
        }
        if (u == 0)
                snprintf(buf, 32, "%lluB", (unsigned long long) bytes);
        else
                snprintf(buf, 32, "%.3g%s", v, units[u]);
}

int cli_parse_compression(const char *arg, enum layer_compression *ret, struct kiln_error **err)
{
        int c = layer_compression_from_name(arg);

        if (c < 0) {
                kiln_error_new(err, KILN_ERR_INVALID, "unknown --compression '%s' (use gzip, zstd or none)",
                               arg);
                return CLI_USAGE;
        }
        *ret = (enum layer_compression) c;
        return 0;
}

int cli_write_file(const char *path, const char *text, struct kiln_error **err)
{
        return kiln_write_file_atomic_at(AT_FDCWD, path, text, strlen(text), err);
}
