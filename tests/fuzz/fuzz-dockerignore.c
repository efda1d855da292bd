/*
 * Fuzzes .dockerignore reading and matching. The input is an ignore file, then a NUL byte, then
 * paths separated by NUL bytes. Without a NUL, the lines of the ignore file are also tried as
 * paths. The patterns go through df_ignore_read() and, as raw lines, straight to
 * df_ignore_new() (which sees what the reader would have cleaned away), and every path is
 * matched against both matchers.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "builder/common/error.h"
#include "builder/common/xalloc.h"
#include "parser/parser.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Splits text[0..len) at `sep` into a NULL-terminated vector of copies. */
static char **split(const char *text, size_t len, char sep, size_t *ret_n)
{
        char **v = xcalloc(len + 2, sizeof(*v));
        size_t n = 0, start = 0, i;

        for (i = 0; i <= len; i++) {
                if (i == len || text[i] == sep) {
                        v[n++] = xstrndup(text + start, i - start);
                        start = i + 1;
                }
        }
        *ret_n = n;
        return v;
}

static void strv_release(char **v)
{
        char **p;

        if (!v)
                return;
        for (p = v; *p; p++)
                free(*p);
        free(v);
}

static void match_all(const struct df_ignore *ig, char **paths, size_t n)
{
        size_t i;

        for (i = 0; i < n; i++) {
                struct kiln_error *err = NULL;
                bool excluded;

                if (df_ignore_matches(ig, paths[i], &excluded, &err) < 0 &&
                    (!err || err->kind != KILN_ERR_INVALID))
                        abort();
                kiln_error_free(err);
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        const char *text = (const char *) data, *nul = memchr(data, '\0', size);
        size_t text_len = nul ? (size_t) (nul - text) : size, n_patterns = 0, n_lines, n_paths;
        struct kiln_error *err = NULL;
        struct df_ignore *ig = NULL;
        char **patterns = NULL, **lines, **paths;

        /* Keep single runs short: matching is O(path x pattern) by design. */
        if (size > 16384)
                return 0;
        lines = split(text, text_len, '\n', &n_lines);
        if (nul)
                paths = split(nul + 1, size - text_len - 1, '\0', &n_paths);
        else
                paths = split(text, text_len, '\n', &n_paths);

        if (df_ignore_read(text, text_len, &patterns, &n_patterns, &err) == 0) {
                if (df_ignore_new((const char *const *) patterns, n_patterns, &ig, &err) == 0) {
                        if (df_ignore_count(ig) > n_patterns)
                                abort();
                        match_all(ig, paths, n_paths);
                        ig = df_ignore_free(ig);
                }
        }
        err = kiln_error_free(err);

        if (df_ignore_new((const char *const *) lines, n_lines, &ig, &err) == 0) {
                match_all(ig, paths, n_paths);
                ig = df_ignore_free(ig);
        }
        kiln_error_free(err);

        strv_release(patterns);
        strv_release(lines);
        strv_release(paths);
        return 0;
}
