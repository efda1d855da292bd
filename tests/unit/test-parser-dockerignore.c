/*
 * .dockerignore reading and matching against moby/patternmatcher's behaviour. Every case of
 * conformance/buildkit/transcribed/dockerignore-patterns.json runs (read at run time), then
 * our own cases: loading the file from a context or beside the Dockerfile, and hostile input.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "builder/common/error.h"
#include "builder/common/json-util.h"
#include "builder/common/strbuf.h"
#include "builder/common/xalloc.h"
#include "parser/parser.h"
#include "tests/unit/tap.h"

struct group {
        const char *name;
        unsigned passed;
        unsigned total;
};

static void group_point(struct group *g, bool ok)
{
        g->total++;
        if (ok)
                g->passed++;
}

static void group_report(const struct group *g)
{
        tap_diag("%s: %u/%u", g->name, g->passed, g->total);
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

/* Borrows the strings of a JSON array into a malloc'd vector. */
static const char **json_strv(const json_t *arr, size_t *ret_n)
{
        size_t n = json_array_size(arr), i;
        const char **v = xcalloc(n + 1, sizeof(*v));

        for (i = 0; i < n; i++)
                v[i] = json_string_value(json_array_get(arr, i));
        *ret_n = n;
        return v;
}

/* Appends `s` with control characters escaped, so that a test name stays on one line. */
static void add_escaped(struct kiln_buf *b, const char *s)
{
        for (; *s; s++) {
                if ((unsigned char) *s < 0x20 || *s == 0x7f)
                        kiln_buf_addf(b, NULL, "\\x%02x", (unsigned char) *s);
                else
                        kiln_buf_addc(b, *s, NULL);
        }
}

static char *escaped(const char *s)
{
        struct kiln_buf b = KILN_BUF_INIT;

        add_escaped(&b, s);
        return kiln_buf_detach(&b, NULL);
}

/* Renders a pattern list for test names: ["a", "!b"]. */
static char *describe(const char *const *patterns, size_t n)
{
        struct kiln_buf b = KILN_BUF_INIT;
        size_t i;

        kiln_buf_addc(&b, '[', NULL);
        for (i = 0; i < n; i++) {
                kiln_buf_adds(&b, i ? ", \"" : "\"", NULL);
                add_escaped(&b, patterns[i]);
                kiln_buf_addc(&b, '"', NULL);
        }
        kiln_buf_addc(&b, ']', NULL);
        return kiln_buf_detach(&b, NULL);
}

enum outcome {
        OUT_NO_MATCH,
        OUT_MATCH,
        OUT_NEW_ERROR,   /* the matcher could not be built (INVALID) */
        OUT_MATCH_ERROR, /* matching failed (INVALID) */
        OUT_OTHER_ERROR, /* any other error kind */
};

static const char *outcome_name(enum outcome o)
{
        switch (o) {
        case OUT_NO_MATCH:
                return "no match";
        case OUT_MATCH:
                return "match";
        case OUT_NEW_ERROR:
                return "error building the matcher";
        case OUT_MATCH_ERROR:
                return "error while matching";
        case OUT_OTHER_ERROR:
                return "unexpected error kind";
        }
        return "?";
}

static enum outcome evaluate(const char *const *patterns, size_t n, const char *path)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_(df_ignore_freep) struct df_ignore *ig = NULL;
        bool excluded = false;

        if (!path)
                return OUT_OTHER_ERROR; /* malformed case data */
        if (df_ignore_new(patterns, n, &ig, &err) < 0)
                return err && err->kind == KILN_ERR_INVALID ? OUT_NEW_ERROR : OUT_OTHER_ERROR;
        if (df_ignore_matches(ig, path, &excluded, &err) < 0)
                return err && err->kind == KILN_ERR_INVALID ? OUT_MATCH_ERROR : OUT_OTHER_ERROR;
        return excluded ? OUT_MATCH : OUT_NO_MATCH;
}

static bool expect_outcome(struct group *g, const char *const *patterns, size_t n, const char *path,
                           enum outcome want, size_t index)
{
        _cleanup_free_ char *desc = describe(patterns, n), *shown = escaped(path ? path : "");
        enum outcome got = evaluate(patterns, n, path);
        bool ok = got == want;

        tap_ok(ok, "%s %zu: %s vs '%s' -> %s", g->name, index + 1, desc, shown, outcome_name(want));
        if (!ok)
                tap_diag("  got: %s", outcome_name(got));
        group_point(g, ok);
        return ok;
}

/* single_pattern, multi_pattern and glob_compat: a pattern (or list), a path, a result. */
static void run_match_group(json_t *root, const char *name, bool many)
{
        struct group g = { .name = name };
        json_t *cases = json_object_get(json_object_get(root, name), "cases"), *c;
        size_t i;

        json_array_foreach(cases, i, c)
        {
                _cleanup_free_ const char **patterns = NULL;
                const char *one[1];
                size_t n = 1;
                enum outcome want;

                if (many) {
                        patterns = json_strv(json_object_get(c, "patterns"), &n);
                } else {
                        one[0] = kiln_json_get_string(c, "pattern");
                }
                if (kiln_json_get_bool(c, "error", false))
                        want = OUT_NEW_ERROR;
                else
                        want = kiln_json_get_bool(c, "match", false) ? OUT_MATCH : OUT_NO_MATCH;
                expect_outcome(&g, many ? patterns : one, n, kiln_json_get_string(c, "path"), want,
                               i);
        }
        group_report(&g);
}

static void run_misc(json_t *root)
{
        struct group g = { .name = "misc" };
        json_t *cases = json_object_get(root, "misc"), *c;
        size_t i;

        json_array_foreach(cases, i, c)
        {
                _cleanup_free_ const char **patterns = NULL;
                const char *path = kiln_json_get_string(c, "path");
                bool want_error = kiln_json_get_bool(c, "error", false);
                bool construct_ok = kiln_json_get_bool(c, "construct_ok", false);
                enum outcome want;
                size_t n;

                patterns = json_strv(json_object_get(c, "patterns"), &n);
                if (want_error && construct_ok) {
                        /* Built fine, then every attempt to match fails, and keeps failing. */
                        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
                        _cleanup_(df_ignore_freep) struct df_ignore *ig = NULL;
                        _cleanup_free_ char *desc = describe(patterns, n);
                        bool ok = df_ignore_new(patterns, n, &ig, &err) == 0, excluded;
                        int attempt;

                        for (attempt = 0; ok && attempt < 3; attempt++) {
                                err = kiln_error_free(err);
                                ok = df_ignore_matches(ig, path, &excluded, &err) < 0 && err &&
                                     err->kind == KILN_ERR_INVALID;
                        }
                        tap_ok(ok, "misc %zu: %s builds, then matching '%s' fails every time",
                               i + 1, desc, path);
                        if (err)
                                tap_diag("  error: %s", err->msg);
                        group_point(&g, ok);
                        continue;
                }
                if (want_error)
                        want = OUT_NEW_ERROR;
                else
                        want = kiln_json_get_bool(c, "match", false) ? OUT_MATCH : OUT_NO_MATCH;
                expect_outcome(&g, patterns, n, path, want, i);
        }
        group_report(&g);
}

static void run_pattern_cleaning(json_t *root)
{
        struct group g = { .name = "pattern_cleaning" };
        json_t *cases = json_object_get(root, "pattern_cleaning"), *c;
        size_t i;

        json_array_foreach(cases, i, c)
        {
                _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
                _cleanup_(df_ignore_freep) struct df_ignore *ig = NULL;
                _cleanup_free_ const char **patterns = NULL;
                _cleanup_free_ char *desc = NULL;
                json_t *active = json_object_get(c, "active_patterns");
                json_t *excl = json_object_get(c, "has_exclusions");
                bool built, ok = true;
                size_t n;

                patterns = json_strv(json_object_get(c, "patterns"), &n);
                desc = describe(patterns, n);
                built = df_ignore_new(patterns, n, &ig, &err) == 0;
                if (kiln_json_get_bool(c, "error", false)) {
                        ok = !built && err && err->kind == KILN_ERR_INVALID;
                        tap_ok(ok, "pattern_cleaning %zu: %s is rejected", i + 1, desc);
                        group_point(&g, ok);
                        continue;
                }
                if (!built) {
                        tap_ok(false, "pattern_cleaning %zu: %s builds", i + 1, desc);
                        tap_diag("  error: %s", err ? err->msg : "?");
                        group_point(&g, false);
                        continue;
                }
                if (active && (long long) df_ignore_count(ig) != json_integer_value(active)) {
                        tap_diag("  count %zu, want %lld", df_ignore_count(ig),
                                 json_integer_value(active));
                        ok = false;
                }
                if (excl && df_ignore_has_exclusions(ig) != json_is_true(excl)) {
                        tap_diag("  has_exclusions %d, want %d", df_ignore_has_exclusions(ig),
                                 json_is_true(excl));
                        ok = false;
                }
                tap_ok(ok, "pattern_cleaning %zu: %s count/exclusions", i + 1, desc);
                group_point(&g, ok);
        }
        group_report(&g);
}

/*
 * The classification is upstream's internal fast path and is not visible through our API. What
 * is visible: every pattern builds, and each class implies a probe result (an exact pattern
 * matches itself, a prefix pattern what extends it, a suffix pattern anything ending in its
 * suffix, even mid-name: "**file" matches "probefile").
 */
static void run_pattern_classification(json_t *root)
{
        struct group g = { .name = "pattern_classification" };
        json_t *cases = json_object_get(json_object_get(root, "pattern_classification"), "cases");
        json_t *c;
        size_t i;

        json_array_foreach(cases, i, c)
        {
                const char *pattern = kiln_json_get_string(c, "pattern");
                const char *type = kiln_json_get_string(c, "match_type");
                const char *one[1] = { pattern };
                _cleanup_free_ char *probe = NULL;
                enum outcome got = OUT_MATCH;
                bool ok;

                if (!pattern || !type) {
                        tap_ok(false, "pattern_classification %zu: malformed case", i + 1);
                        group_point(&g, false);
                        continue;
                }

                if (strcmp(type, "exact") == 0)
                        probe = xstrdup(pattern);
                else if (strcmp(type, "prefix") == 0)
                        probe = xasprintf("%.*sprobe", (int) (strlen(pattern) - 2), pattern);
                else if (strcmp(type, "suffix") == 0)
                        probe = xasprintf("probe%s", pattern + 2);
                if (probe) {
                        got = evaluate(one, 1, probe);
                        ok = got == OUT_MATCH;
                } else {
                        got = evaluate(one, 1, "x");
                        ok = got == OUT_MATCH || got == OUT_NO_MATCH;
                }
                tap_ok(ok, "pattern_classification %zu: '%s' (%s) builds%s%s", i + 1, pattern, type,
                       probe ? " and matches " : "", probe ? probe : "");
                if (!ok)
                        tap_diag("  got: %s", outcome_name(got));
                group_point(&g, ok);
        }
        tap_diag("pattern_classification is informative: only what the API shows is checked");
        group_report(&g);
}

static bool check_read(const char *name, const char *text, size_t len, json_t *expected)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        char **got = NULL;
        size_t n = 0, i;
        bool ok;

        if (df_ignore_read(text, len, &got, &n, &err) < 0) {
                tap_ok(false, "%s: read", name);
                tap_diag("  error: %s", err->msg);
                return false;
        }
        ok = n == json_array_size(expected) && got[n] == NULL;
        for (i = 0; ok && i < n; i++)
                ok = strcmp(got[i], json_string_value(json_array_get(expected, i))) == 0;
        tap_ok(ok, "%s: %zu patterns as expected", name, json_array_size(expected));
        if (!ok) {
                for (i = 0; i < n; i++)
                        tap_diag("  got[%zu] = '%s'", i, got[i]);
                for (i = 0; i < json_array_size(expected); i++)
                        tap_diag("  want[%zu] = '%s'", i,
                                 json_string_value(json_array_get(expected, i)));
        }
        strv_release(got);
        return ok;
}

static void run_ignore_file_reading(json_t *root)
{
        struct group g = { .name = "ignore_file_reading" };
        json_t *group = json_object_get(root, "ignore_file_reading");
        json_t *also = json_object_get(group, "also"), *input;

        input = json_object_get(group, "input");
        group_point(&g, check_read("ignore_file_reading 1", json_string_value(input),
                                   json_string_length(input), json_object_get(group, "expected")));
        if (also) {
                /* A null input stands for no reader at all: read as empty text. */
                input = json_object_get(also, "input");
                group_point(&g, check_read("ignore_file_reading 2 (null input)",
                                           json_is_string(input) ? json_string_value(input) : NULL,
                                           json_is_string(input) ? json_string_length(input) : 0,
                                           json_object_get(also, "expected")));
        }
        group_report(&g);
}

/* ---------------------------------------------------------------------------------------- */
/* Our own cases                                                                              */
/* ---------------------------------------------------------------------------------------- */

static struct group own = { .name = "own_matching" };

static void expect(const char *const *patterns, size_t n, const char *path, enum outcome want)
{
        expect_outcome(&own, patterns, n, path, want, own.total);
}

#define PATS(...) \
        ((const char *const[]){ __VA_ARGS__ }), ELEMENTSOF(((const char *[]){ __VA_ARGS__ }))

static void test_own_matching(void)
{
        /* Upstream's suffix compare: "**" then plain text matches mid-name too. */
        expect(PATS("**file"), "dir/myfile", OUT_MATCH);
        expect(PATS("**.txt"), "a/b.txt", OUT_MATCH);
        /* "**" before more pattern: nothing, or anything that ends in '/'. */
        expect(PATS("a**/b"), "ab", OUT_MATCH);
        expect(PATS("a**/b"), "ax/y/b", OUT_MATCH);
        expect(PATS("a**/b"), "axb", OUT_NO_MATCH);
        expect(PATS("dir/**"), "dir", OUT_NO_MATCH);
        expect(PATS("dir/**"), "dir/x/y", OUT_MATCH);
        expect(PATS("**/x/**/*.c"), "a/x/b/c/d.c", OUT_MATCH);
        expect(PATS("**/x/**/*.c"), "x/d.c", OUT_MATCH);
        /* As Go's '.', a "**" that became a regexp does not cross a newline; a prefix does. */
        expect(PATS("*/**"), "a/b\nc", OUT_NO_MATCH);
        expect(PATS("a/**"), "a/b\nc", OUT_MATCH);
        /* Ancestors, cleaning, the context root. */
        expect(PATS("docs"), "docs/a/b/c.md", OUT_MATCH);
        expect(PATS("docs"), "./docs//a/../b/", OUT_MATCH);
        expect(PATS("d?cs"), "docs/x", OUT_MATCH);
        expect(PATS("**"), ".", OUT_NO_MATCH);
        expect(PATS("**"), "", OUT_NO_MATCH);
        expect(PATS("**"), "a/..", OUT_NO_MATCH);
        expect(PATS("*"), "a/b", OUT_MATCH);
        /* Order: last applicable pattern wins; exclusions only while excluded. */
        expect(PATS("*.md", "!README.md", "README*"), "README.md", OUT_MATCH);
        expect(PATS("*.md", "!README.md", "!*.md"), "README.md", OUT_NO_MATCH);
        expect(PATS("a", "!a/b", "a/b/c"), "a/b/c/d", OUT_MATCH);
        expect(PATS("a", "!a/b"), "a/b/c/d", OUT_NO_MATCH);
        /* Classes: '/' is an ordinary member, runes not bytes, escapes inside. */
        expect(PATS("a[/]b"), "a/b", OUT_MATCH);
        expect(PATS("[^a]"), "é", OUT_MATCH);
        expect(PATS("[\\]-\\^]x"), "^x", OUT_MATCH);
        expect(PATS("[a-cx-z]*"), "yes", OUT_MATCH);
        expect(PATS("[a-cx-z]*"), "no", OUT_NO_MATCH);
        expect(PATS("*\\?"), "why?", OUT_MATCH);
        expect(PATS("*\\?"), "why", OUT_NO_MATCH);
        /* Malformed: at build time, or (a backwards range) only when tried. */
        expect(PATS("ok", "a[b"), "ok", OUT_NEW_ERROR);
        expect(PATS("!"), "x", OUT_NEW_ERROR);
        expect(PATS("  !/  "), "x", OUT_NEW_ERROR);
        expect(PATS("x\\"), "x", OUT_NEW_ERROR);
        expect(PATS("[z-a]"), "x", OUT_MATCH_ERROR);
        expect(PATS("x", "![z-a]"), "y", OUT_NO_MATCH);
        expect(PATS("x", "![z-a]"), "x", OUT_MATCH_ERROR);
        /* Upstream copies '^' into its regexp unescaped, where it anchors. */
        expect(PATS("a^b"), "a^b", OUT_MATCH);
        expect(PATS("a^b*"), "a^bc", OUT_NO_MATCH);
        expect(PATS("^a*"), "abc", OUT_MATCH);
        expect(PATS("a[^^]"), "ab", OUT_MATCH);
        /* Upstream leaves '|' and "{n,m}" unescaped too: in a pattern with wildcards they are
         * regexp alternation and repetition; in a plain pattern, just characters. */
        expect(PATS("*.js|*.ts"), "a/b/c.ts", OUT_MATCH);
        expect(PATS("*.js|*.ts"), "x.jsfoo", OUT_MATCH);
        expect(PATS("*.js|*.ts"), "x.py", OUT_NO_MATCH);
        expect(PATS("a|b"), "a|b", OUT_MATCH);
        expect(PATS("a|b"), "a", OUT_NO_MATCH);
        expect(PATS("|*"), "anything/at/all", OUT_MATCH);
        expect(PATS("?{2}"), "ab", OUT_MATCH);
        expect(PATS("?{2}"), "abc", OUT_NO_MATCH);
        expect(PATS("a{2}*"), "aab", OUT_MATCH);
        expect(PATS("a{2}*"), "ab", OUT_NO_MATCH);
        expect(PATS("a{,2}*"), "a{,2}x", OUT_MATCH);
        expect(PATS("{0}a*"), "ba", OUT_MATCH);
        expect(PATS("*{2}"), "x", OUT_MATCH_ERROR);
        expect(PATS("?{1001}"), "x", OUT_MATCH_ERROR);
        expect(PATS("x|{2}*"), "x", OUT_MATCH_ERROR);
        /* "./!x" cleans to "!x", an exclusion. */
        expect(PATS("*", "./!x"), "x", OUT_NO_MATCH);
        group_report(&own);
}

static void test_own_errors(void)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_(df_ignore_freep) struct df_ignore *ig = NULL;
        const char *pats[] = { "[" };
        bool excluded;

        tap_ok(df_ignore_new(pats, 1, &ig, &err) < 0 && err && err->kind == KILN_ERR_INVALID,
               "'[' is INVALID");
        tap_eq_str(err ? err->msg : NULL,
                   ".dockerignore: invalid pattern '[': unclosed character class",
                   "message for '['");
        err = kiln_error_free(err);
        tap_ok(df_ignore_new(NULL, 0, &ig, &err) == 0 && df_ignore_count(ig) == 0 &&
                       !df_ignore_has_exclusions(ig),
               "an empty list builds an empty matcher");
        tap_ok(df_ignore_matches(ig, "anything", &excluded, &err) == 0 && !excluded,
               "an empty matcher excludes nothing");
}

static void test_own_reading(void)
{
        /* Octal escapes, so that "bom" is not read as more hex digits. */
        static const char crlf[] = "\357\273\277# comment\r\n  # not a comment\r\n"
                                   "\t!  /x/../y/ \r\n//abs\n/\n\357\273\277bom\n!\n";
        static const char *const want[] = {
                "# not a comment", "!y", "abs", "/", "\357\273\277bom", "!",
        };
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_free_ char *longline = NULL;
        char **got = NULL;
        size_t n = 0, i;
        bool ok;

        ok = df_ignore_read(crlf, sizeof(crlf) - 1, &got, &n, &err) == 0 && n == ELEMENTSOF(want);
        for (i = 0; ok && i < n; i++)
                ok = strcmp(got[i], want[i]) == 0;
        tap_ok(ok, "read: BOM, CRLF, '#' only at column 1, '!' and '/' handling");
        for (i = 0; !ok && got && i < n; i++)
                tap_diag("  got[%zu] = '%s'", i, got[i]);
        strv_release(got);
        got = NULL;

        /* bufio.Scanner's limit: a 65535-byte line is fine, one more byte is not. */
        longline = xmalloc(65536 + 8);
        memcpy(longline, "ok\n", 3);
        memset(longline + 3, 'a', 65535);
        ok = df_ignore_read(longline, 3 + 65535, &got, &n, &err) == 0 && n == 2;
        tap_ok(ok, "read: a line of 65535 bytes is accepted");
        strv_release(got);
        got = NULL;
        memset(longline + 3, 'a', 65536);
        ok = df_ignore_read(longline, 3 + 65536, &got, &n, &err) < 0 && err &&
             err->kind == KILN_ERR_LIMIT && err->line == 2;
        tap_ok(ok, "read: a line of 65536 bytes is a LIMIT error at line 2");
        err = kiln_error_free(err);

        ok = df_ignore_read("a\nb\0c\n", 6, &got, &n, &err) < 0 && err &&
             err->kind == KILN_ERR_INVALID && err->line == 2;
        tap_ok(ok, "read: a NUL byte in a pattern is an INVALID error at line 2");
}

/* ---------------------------------------------------------------------------------------- */
/* Loading from a context directory                                                           */
/* ---------------------------------------------------------------------------------------- */

static void write_file(const char *path, const char *text)
{
        FILE *f = fopen(path, "w");

        if (!f || fputs(text, f) < 0 || fclose(f) != 0) {
                printf("Bail out! cannot write %s: %s\n", path, strerror(errno));
                exit(1);
        }
}

static bool excludes(const struct df_ignore *ig, const char *path)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        bool excluded = false;

        return df_ignore_matches(ig, path, &excluded, &err) == 0 && excluded;
}

static void test_load(void)
{
        const char *tmp = getenv("TMPDIR");
        _cleanup_free_ char *dir = xasprintf("%s/kiln-dockerignore-XXXXXX", tmp ? tmp : "/tmp");
        _cleanup_free_ char *ctx = NULL, *ctx_ignore = NULL, *sub = NULL, *dockerfile = NULL;
        _cleanup_free_ char *df_ignore = NULL, *other = NULL, *big = NULL, *src = NULL;
        _cleanup_close_ int ctx_fd = -1;
        struct kiln_error *err = NULL;
        struct df_ignore *ig = NULL;
        bool excluded = false;
        char chunk[1000];
        int fd, r;

        if (!mkdtemp(dir)) {
                tap_ok(false, "load: mkdtemp: %s", strerror(errno));
                return;
        }
        ctx = xasprintf("%s/ctx", dir);
        sub = xasprintf("%s/sub", dir);
        ctx_ignore = xasprintf("%s/.dockerignore", ctx);
        dockerfile = xasprintf("%s/Dockerfile", sub);
        df_ignore = xasprintf("%s/Dockerfile.dockerignore", sub);
        other = xasprintf("%s/Other.Dockerfile", sub);
        big = xasprintf("%s/Big.Dockerfile.dockerignore", sub);
        if (mkdir(ctx, 0700) < 0 || mkdir(sub, 0700) < 0) {
                tap_ok(false, "load: mkdir: %s", strerror(errno));
                return;
        }
        ctx_fd = open(ctx, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

        /* No ignore file anywhere: an empty matcher, no source. */
        r = df_ignore_load(ctx_fd, NULL, &ig, &src, &err);
        tap_ok(r == 0 && df_ignore_count(ig) == 0 && !src && !excludes(ig, "a"),
               "load: no .dockerignore gives an empty matcher");
        ig = df_ignore_free(ig);
        err = kiln_error_free(err);

        write_file(ctx_ignore, "# build output\n*.log\n!keep.log\n/build/\n\n");
        write_file(dockerfile, "FROM scratch\n");
        r = df_ignore_load(ctx_fd, NULL, &ig, &src, &err);
        tap_ok(r == 0 && df_ignore_count(ig) == 3 && df_ignore_has_exclusions(ig) && src &&
                       strcmp(src, ".dockerignore") == 0,
               "load: the context's .dockerignore");
        tap_ok(r == 0 && excludes(ig, "a.log") && !excludes(ig, "keep.log") &&
                       excludes(ig, "build/x/y") && !excludes(ig, "src/a.log") &&
                       !excludes(ig, "Dockerfile"),
               "load: the context's patterns apply");
        ig = df_ignore_free(ig);
        src = (free(src), NULL);
        err = kiln_error_free(err);

        /* A Dockerfile without its own ignore file falls back to the context's. */
        r = df_ignore_load(ctx_fd, dockerfile, &ig, &src, &err);
        tap_ok(r == 0 && src && strcmp(src, ".dockerignore") == 0 && excludes(ig, "a.log"),
               "load: falls back to the context without Dockerfile.dockerignore");
        ig = df_ignore_free(ig);
        src = (free(src), NULL);
        err = kiln_error_free(err);

        /* Dockerfile.dockerignore beside the Dockerfile takes precedence. */
        write_file(df_ignore, "secret\n*.key\n");
        r = df_ignore_load(ctx_fd, dockerfile, &ig, &src, &err);
        tap_ok(r == 0 && src && strcmp(src, df_ignore) == 0 && df_ignore_count(ig) == 2 &&
                       !df_ignore_has_exclusions(ig),
               "load: Dockerfile.dockerignore takes precedence");
        tap_ok(r == 0 && excludes(ig, "secret/x") && excludes(ig, "id.key") &&
                       !excludes(ig, "a.log"),
               "load: only the Dockerfile's patterns apply");
        ig = df_ignore_free(ig);
        src = (free(src), NULL);
        err = kiln_error_free(err);

        /* A bad pattern is INVALID, positioned at its file and line. */
        write_file(df_ignore, "# fine\nok\n\n  [oops\n");
        r = df_ignore_load(ctx_fd, dockerfile, &ig, NULL, &err);
        tap_ok(r < 0 && err && err->kind == KILN_ERR_INVALID && err->file &&
                       strcmp(err->file, df_ignore) == 0 && err->line == 4,
               "load: a malformed pattern is INVALID at file:4");
        if (err)
                tap_diag("  %s:%u: %s", err->file ? err->file : "?", err->line, err->msg);
        ig = df_ignore_free(ig);
        err = kiln_error_free(err);

        /* A backwards range fails when matching, still naming the file and line. */
        write_file(df_ignore, "a\n[Local-Only]/\n");
        r = df_ignore_load(ctx_fd, dockerfile, &ig, NULL, &err);
        tap_ok(r == 0, "load: '[Local-Only]/' builds");
        r = ig ? df_ignore_matches(ig, "x", &excluded, &err) : 0;
        tap_ok(r < 0 && err && err->kind == KILN_ERR_INVALID && err->line == 2 && err->file &&
                       strcmp(err->file, df_ignore) == 0,
               "load: matching '[Local-Only]' is INVALID at file:2");
        if (err)
                tap_diag("  %s:%u: %s", err->file ? err->file : "?", err->line, err->msg);
        ig = df_ignore_free(ig);
        err = kiln_error_free(err);

        /* A line too long for upstream's reader. */
        write_file(df_ignore, "a\n");
        fd = open(df_ignore, O_WRONLY | O_APPEND | O_CLOEXEC);
        memset(chunk, 'x', sizeof(chunk));
        for (r = 0; fd >= 0 && r < 70; r++)
                if (write(fd, chunk, sizeof(chunk)) != (ssize_t) sizeof(chunk))
                        break;
        if (fd >= 0)
                close(fd);
        r = df_ignore_load(ctx_fd, dockerfile, &ig, NULL, &err);
        tap_ok(r < 0 && err && err->kind == KILN_ERR_LIMIT && err->line == 2 && err->file &&
                       strcmp(err->file, df_ignore) == 0,
               "load: a 70000-byte line is a LIMIT error at file:2");
        ig = df_ignore_free(ig);
        err = kiln_error_free(err);

        /* The 16 MiB cap. */
        fd = open(big, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        r = fd >= 0 && ftruncate(fd, (16 << 20) + 1) == 0;
        if (fd >= 0)
                close(fd);
        if (r) {
                _cleanup_free_ char *big_df = xasprintf("%s/Big.Dockerfile", sub);

                r = df_ignore_load(ctx_fd, big_df, &ig, NULL, &err);
                tap_ok(r < 0 && err && err->kind == KILN_ERR_LIMIT,
                       "load: an ignore file over 16 MiB is a LIMIT error");
                if (err)
                        tap_diag("  %s", err->msg);
                ig = df_ignore_free(ig);
                err = kiln_error_free(err);
        } else {
                tap_ok(false, "load: cannot create a 16 MiB file: %s", strerror(errno));
        }

        /* A Dockerfile elsewhere without an ignore file of its own. */
        r = df_ignore_load(ctx_fd, other, &ig, &src, &err);
        tap_ok(r == 0 && src && strcmp(src, ".dockerignore") == 0,
               "load: another Dockerfile uses the context's .dockerignore");
        ig = df_ignore_free(ig);
        src = (free(src), NULL);
        err = kiln_error_free(err);

        unlink(big);
        unlink(df_ignore);
        unlink(dockerfile);
        unlink(ctx_ignore);
        rmdir(sub);
        rmdir(ctx);
        rmdir(dir);
}

/* ---------------------------------------------------------------------------------------- */
/* Hostile input                                                                              */
/* ---------------------------------------------------------------------------------------- */

static double now(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

/* `unit` repeated `times`, then `tail`. */
static char *repeat(const char *unit, size_t times, const char *tail)
{
        size_t ul = strlen(unit), tl = strlen(tail), i;
        char *s = xmalloc(ul * times + tl + 1);

        for (i = 0; i < times; i++)
                memcpy(s + i * ul, unit, ul);
        memcpy(s + ul * times, tail, tl + 1);
        return s;
}

/* Takes `s`, returns `head` followed by it. */
static char *prefixed(const char *head, char *s)
{
        char *r = xasprintf("%s%s", head, s);

        free(s);
        return r;
}

static void hostile(const char *name, char *pattern, char *path, enum outcome want)
{
        const char *pats[] = { pattern };
        double start = now(), took;
        enum outcome got = evaluate(pats, 1, path);

        took = now() - start;
        tap_ok(got == want && took < 5.0, "hostile: %s gives %s quickly", name, outcome_name(want));
        tap_diag("  %s took %.3f s (%s)", name, took, outcome_name(got));
        free(pattern);
        free(path);
}

static void test_hostile(void)
{
        /* The shapes that make backtracking matchers exponential. */
        hostile("50000 '*' against 50000 'a'", repeat("*", 50000, "b"), repeat("a", 50000, ""),
                OUT_NO_MATCH);
        hostile("'*a' x 3000 + 'b' against 'a' x 6000", repeat("*a", 3000, "b"),
                repeat("a", 6000, ""), OUT_NO_MATCH);
        hostile("'a*' x 3000 against 'a' x 6000", repeat("a*", 3000, ""), repeat("a", 6000, ""),
                OUT_MATCH);
        hostile("'**/a' x 1500 + '/b' against 'a/' x 3000", repeat("**/a", 1500, "/b"),
                repeat("a/", 3000, "c"), OUT_NO_MATCH);
        hostile("'?*' x 3000 against 'a' x 2999", repeat("?*", 3000, ""), repeat("a", 2999, ""),
                OUT_NO_MATCH);
        hostile("exact 'ab/' x 20000 + 'zz' against 'ab/' x 20000 + 'ab'",
                repeat("ab/", 20000, "zz"), repeat("ab/", 20000, "ab"), OUT_NO_MATCH);
        hostile("suffix '**' + '/a' x 2000 against 'a/' x 20000 + 'b'",
                prefixed("**", repeat("/a", 2000, "")), repeat("a/", 20000, "b"), OUT_MATCH);
        hostile("class of 20000 ranges against 20000 characters",
                prefixed("*[", repeat("a-b", 20000, "]*z")), repeat("c", 20000, ""), OUT_NO_MATCH);
        hostile("'a{0,1000}' x 4 + 'b?' against 'a' x 4096", repeat("a{0,1000}", 4, "b?"),
                repeat("a", 4096, ""), OUT_NO_MATCH);
        hostile("'?{1000}' x 9: too many copies", repeat("?{1000}", 9, ""), repeat("a", 9000, ""),
                OUT_MATCH_ERROR);
        hostile("'**/a' x 16000 against 'a/' x 2048", repeat("**/a", 16000, ""),
                repeat("a/", 2048, "c"), OUT_NO_MATCH);
}

int main(void)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_free_ char *path = tap_conformance_path("transcribed/dockerignore-patterns.json");
        json_t *root = kiln_json_load_file(path, 1 << 20, &err);

        if (!root) {
                tap_ok(false, "load %s: %s", path, err ? err->msg : "?");
                return tap_done();
        }
        run_match_group(root, "single_pattern", false);
        run_match_group(root, "multi_pattern", true);
        run_match_group(root, "glob_compat", false);
        run_misc(root);
        run_pattern_cleaning(root);
        run_pattern_classification(root);
        run_ignore_file_reading(root);
        json_decref(root);

        test_own_matching();
        test_own_errors();
        test_own_reading();
        test_load();
        test_hostile();
        return tap_done();
}
