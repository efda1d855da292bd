/*
 * Word expansion against BuildKit's tables: every line of envVarTest and wordsTest and every
 * case of transcribed/shell-expansion-extra.json.
 */
#include <stdlib.h>
#include <string.h>

#include "builder/common/json-util.h"
#include "builder/common/xalloc.h"
#include "parser/parser-internal.h"
#include "parser/parser.h"
#include "tests/unit/tap.h"

static char *trim(char *s)
{
        char *e;

        while (*s == ' ' || *s == '\t')
                s++;
        e = s + strlen(s);
        while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
                *--e = '\0';
        return s;
}

static void env_var_test(void)
{
        _cleanup_free_ char *path = tap_conformance_path("frontend/dockerfile/shell/envVarTest");
        _cleanup_free_ char *text = NULL;
        struct df_vars vars = DF_VARS_INIT;
        size_t len, total = 0, passed = 0, not_applicable = 0;
        char *line, *save = NULL;

        text = tap_read_file(path, &len);
        df_vars_set(&vars, "PWD", "/home");
        df_vars_set(&vars, "SHELL", "bash");
        df_vars_set(&vars, "KOREAN", "한국어");
        df_vars_set(&vars, "NULL", "");
        for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
                _cleanup_free_ char *got = NULL;
                char *platform, *input, *want, *bar1, *bar2;
                size_t got_len;
                int r;

                if (line[0] == '#' || trim(line)[0] == '\0')
                        continue;
                bar1 = strchr(line, '|');
                bar2 = bar1 ? strchr(bar1 + 1, '|') : NULL;
                if (!bar1 || !bar2) {
                        tap_ok(false, "envVarTest line is malformed: %s", line);
                        continue;
                }
                *bar1 = *bar2 = '\0';
                platform = trim(line);
                input = trim(bar1 + 1);
                want = trim(bar2 + 1);
                total++;
                if (strcmp(platform, "W") == 0) {
                        /* Windows compares names case-insensitively; kiln builds Linux images. */
                        not_applicable++;
                        continue;
                }
                r = df_expand_word(input, strlen(input), '\\', 0, &vars, &got, &got_len, &err);
                if (strcmp(want, "error") == 0) {
                        if (tap_ok(r < 0 && err, "envVarTest %s: '%s' is an error", platform,
                                   input))
                                passed++;
                } else if (r < 0) {
                        tap_ok(false, "envVarTest %s: '%s' -> '%s' failed: %s", platform, input,
                               want, err ? err->msg : "?");
                } else if (tap_eq_str(got, want, "envVarTest %s: '%s' -> '%s'", platform, input,
                                      want)) {
                        passed++;
                }
        }
        tap_diag("envVarTest: %zu/%zu passed, %zu Windows-only lines not applicable", passed,
                 total - not_applicable, not_applicable);
        tap_eq_int((long long) total, 230, "envVarTest has all 230 lines");
        df_vars_release(&vars);
}

static void words_test(void)
{
        _cleanup_free_ char *path = tap_conformance_path("frontend/dockerfile/shell/wordsTest");
        _cleanup_free_ char *text = NULL;
        struct df_vars vars = DF_VARS_INIT;
        size_t len, total = 0, passed = 0;
        char *line, *save = NULL;

        text = tap_read_file(path, &len);
        for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
                char **words = NULL;
                char *bar, *input, *want;
                size_t n = 0, k;
                bool ok;
                int r;

                if (line[0] == '#')
                        continue;
                if (strncmp(line, "ENV ", 4) == 0) {
                        char *entry = line + 4;
                        while (*entry == ' ')
                                entry++;
                        df_vars_set_entry(&vars, entry);
                        continue;
                }
                bar = strchr(line, '|');
                if (!bar) {
                        tap_ok(false, "wordsTest line is malformed: %s", line);
                        continue;
                }
                *bar = '\0';
                input = trim(line);
                want = bar + 1;
                while (*want == ' ')
                        want++;
                total++;
                r = df_expand_words(input, strlen(input), '\\', 0, &vars, &words, &n, &err);
                if (strcmp(want, "error") == 0) {
                        if (tap_ok(r < 0, "wordsTest: '%s' is an error", input))
                                passed++;
                        df_strv_free(words);
                        continue;
                }
                ok = r == 0;
                if (ok) {
                        _cleanup_free_ char *copy = xstrdup(want);
                        char *w, *wsave = NULL;
                        k = 0;
                        /* strtok would drop empty fields; the table has none. */
                        for (w = strtok_r(copy, ",", &wsave); w && ok;
                             w = strtok_r(NULL, ",", &wsave))
                                ok = k < n && strcmp(words[k++], w) == 0;
                        ok = ok && k == n;
                }
                if (!tap_ok(ok, "wordsTest: '%s' -> [%s]", input, want) && r == 0)
                        for (k = 0; k < n; k++)
                                tap_diag("  got word %zu: '%s'", k, words[k]);
                if (ok)
                        passed++;
                df_strv_free(words);
        }
        tap_diag("wordsTest: %zu/%zu passed", passed, total);
        tap_eq_int((long long) total, 24, "wordsTest has all 24 cases");
        df_vars_release(&vars);
}

static void vars_from_json(struct df_vars *vars, json_t *env)
{
        const char *key;
        json_t *value;

        json_object_foreach(env, key, value) df_vars_set(vars, key, json_string_value(value));
}

/* Compares a JSON list of names with the names `vars` saw, as sets. */
static bool same_names(json_t *want, char **got, size_t n_got)
{
        size_t i, k;

        if (json_array_size(want) != n_got)
                return false;
        for (i = 0; i < json_array_size(want); i++) {
                bool found = false;
                for (k = 0; k < n_got; k++)
                        if (strcmp(got[k], json_string_value(json_array_get(want, i))) == 0)
                                found = true;
                if (!found)
                        return false;
        }
        return true;
}

static bool run_case(json_t *c, const char *group, size_t idx)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_free_ char *got = NULL;
        const char *input = kiln_json_get_string(c, "input");
        const char *want = kiln_json_get_string(c, "expected");
        const char *contains = kiln_json_get_string(c, "error_contains");
        bool want_error = kiln_json_get_bool(c, "error", false);
        struct df_vars vars = DF_VARS_INIT;
        bool ok;
        int r;

        vars_from_json(&vars, json_object_get(c, "env"));
        r = df_expand_word(input, strlen(input), '\\', 0, &vars, &got, NULL, &err);
        if (want_error)
                ok = tap_ok(r < 0 && (!contains || (err && strstr(err->msg, contains))),
                            "%s %zu: '%s' is an error%s%s", group, idx, input,
                            contains ? " mentioning " : "", contains ? contains : "");
        else if (r < 0)
                ok = tap_ok(false, "%s %zu: '%s' failed: %s", group, idx, input,
                            err ? err->msg : "?");
        else
                ok = tap_eq_str(got, want, "%s %zu: '%s'", group, idx, input);

        if (json_object_get(c, "used_set_vars")) {
                _cleanup_free_ char **used = xcalloc(vars.n + 1, sizeof(char *));
                size_t n_used = 0, i;
                for (i = 0; i < vars.n; i++)
                        if (vars.items[i].used)
                                used[n_used++] = vars.items[i].name;
                ok = tap_ok(same_names(json_object_get(c, "used_set_vars"), used, n_used),
                            "%s %zu: '%s' uses the set variables listed", group, idx, input) &&
                     ok;
        }
        if (json_object_get(c, "referenced_unset_vars"))
                ok = tap_ok(same_names(json_object_get(c, "referenced_unset_vars"), vars.unset_refs,
                                       vars.n_unset_refs),
                            "%s %zu: '%s' references the unset variables listed", group, idx,
                            input) &&
                     ok;
        df_vars_release(&vars);
        return ok;
}

static void run_group(json_t *cases, const char *group)
{
        size_t i, passed = 0;

        for (i = 0; i < json_array_size(cases); i++)
                if (run_case(json_array_get(cases, i), group, i))
                        passed++;
        tap_diag("%s: %zu/%zu passed", group, passed, json_array_size(cases));
}

static void extra_test(json_t *extra)
{
        json_t *lookups = json_object_get(extra, "env_list_lookup");
        json_t *patterns = json_object_get(json_object_get(extra, "pattern_to_regex"), "cases");
        size_t i, passed = 0;

        run_group(json_object_get(extra, "cases"), "extra cases");
        run_group(json_object_get(json_object_get(extra, "required_var_cases"), "cases"),
                  "required_var_cases");
        run_group(json_object_get(extra, "platform_filename_cases"), "platform_filename_cases");

        for (i = 0; i < json_array_size(lookups); i++) {
                json_t *c = json_array_get(lookups, i);
                json_t *list = json_object_get(c, "env_list");
                struct df_vars vars = DF_VARS_INIT;
                const struct df_var *v;
                size_t k;

                for (k = 0; k < json_array_size(list); k++)
                        df_vars_set_entry(&vars, json_string_value(json_array_get(list, k)));
                v = df_vars_get(&vars, kiln_json_get_string(c, "lookup"));
                if (tap_eq_str(v ? v->value : "", kiln_json_get_string(c, "value"),
                               "env_list_lookup %zu", i))
                        passed++;
                df_vars_release(&vars);
        }
        tap_diag("env_list_lookup: %zu/%zu passed", passed, json_array_size(lookups));

        /* The regex translation itself is informative; check what each pattern means. */
        passed = 0;
        for (i = 0; i < json_array_size(patterns); i++) {
                json_t *c = json_array_get(patterns, i);
                const char *pat = kiln_json_get_string(c, "pattern");
                const char *regex = kiln_json_get_string(c, "regex");
                _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
                long end = -2;
                int r;
                bool ok;

                if (!pat) {
                        tap_ok(false, "pattern_to_regex case %zu has a pattern", i);
                        continue;
                }
                if (!regex)
                        regex = "";
                if (kiln_json_get_bool(c, "error", false)) {
                        r = df_shell_pattern_prefix(pat, strlen(pat), "anything", true, &end, &err);
                        ok = tap_ok(r < 0 && err, "pattern '%s' is invalid", pat);
                } else if (strcmp(regex, "^.*") == 0) {
                        r = df_shell_pattern_prefix(pat, strlen(pat), "abc", true, &end, &err);
                        ok = tap_ok(r == 0 && end == 3, "pattern '%s' means %s", pat, regex);
                } else if (strcmp(regex, "^.") == 0) {
                        r = df_shell_pattern_prefix(pat, strlen(pat), "abc", true, &end, &err);
                        ok = tap_ok(r == 0 && end == 1, "pattern '%s' means %s", pat, regex);
                } else {
                        /* Escaped patterns: all literal; they match their unescaped text. */
                        _cleanup_buf_ struct kiln_buf lit = KILN_BUF_INIT;
                        size_t k;
                        for (k = 0; pat[k]; k++) {
                                if (pat[k] == '\\' && pat[k + 1])
                                        k++;
                                kiln_buf_addc(&lit, pat[k], NULL);
                        }
                        r = df_shell_pattern_prefix(pat, strlen(pat), lit.buf, true, &end, &err);
                        ok = tap_ok(r == 0 && end == (long) lit.len, "pattern '%s' is literal (%s)",
                                    pat, regex);
                        r = df_shell_pattern_prefix(pat, strlen(pat), "xyz", true, &end, &err);
                        ok = tap_ok(r == 0 && end == -1, "pattern '%s' does not match other text",
                                    pat) &&
                             ok;
                }
                if (ok)
                        passed++;
        }
        tap_diag("pattern_to_regex: %zu/%zu passed", passed, json_array_size(patterns));
}

/* kiln's additions: escape directive, raw modes, positions of errors, hostile input. */
static void own_cases(void)
{
        struct df_vars vars = DF_VARS_INIT;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_free_ char *big = NULL;
        char *out = NULL;
        size_t i;

        df_vars_set(&vars, "A", "1");
        tap_ok(df_expand_word("`$A\\x", 6, '`', 0, &vars, &out, NULL, NULL) == 0 &&
                       strcmp(out, "$A\\x") == 0,
               "backtick escape: `$ is literal and \\ is ordinary");
        free(out);
        tap_ok(df_expand_word("'a'\"$A\"\\b", 10, '\\',
                              DF_EXPAND_RAW_QUOTES | DF_EXPAND_RAW_ESCAPES, &vars, &out, NULL,
                              NULL) == 0 &&
                       strcmp(out, "'a'\"1\"\\b") == 0,
               "raw quotes and escapes keep their characters");
        free(out);
        tap_ok(df_expand_word("$B${B}${B:-x}", 13, '\\', DF_EXPAND_SKIP_UNSET, &vars, &out, NULL,
                              NULL) == 0 &&
                       strcmp(out, "$B${B}${B:-x}") == 0,
               "unset references are kept when asked");
        free(out);
        tap_ok(df_expand_word("ab${A:?}cd${B:?no B here}", 25, '\\', 0, &vars, &out, NULL, &err) <
                               0 &&
                       err->column == 11 && strstr(err->msg, "B: no B here"),
               "an expansion error points at its ${ (column %u)", err ? err->column : 0);
        /* "$0" would be expanded as a variable first; an escaped one reaches Go's Expand. */
        tap_ok(df_expand_word("x${A/1/[\\$0]}", 13, '\\', 0, &vars, &out, NULL, NULL) == 0 &&
                       strcmp(out, "x[\\1]") == 0,
               "an escaped $0 in a replacement is the match, as Go's Expand has it");
        free(out);

        /* Deep nesting is refused, not a stack overflow. */
        big = xmalloc(20000 * 5 + 1);
        for (i = 0; i < 20000; i++)
                memcpy(big + i * 4, "${a:", 4);
        big[20000 * 4] = '\0';
        err = kiln_error_free(err);
        tap_ok(df_expand_word(big, strlen(big), '\\', 0, &vars, &out, NULL, &err) < 0 && err,
               "20000 nested substitutions fail cleanly: %s", err ? err->msg : "");
        /* Nested replacements that multiply the text are cut off, not run for ever. */
        {
                _cleanup_buf_ struct kiln_buf nest = KILN_BUF_INIT;
                df_vars_set(&vars, "X", "abcdefgh");
                /* ${X///${X///...}}: an empty pattern puts the replacement between every
                 * character, so each level multiplies the length by nine. */
                for (i = 0; i < 12; i++)
                        kiln_buf_adds(&nest, "${X///", NULL);
                for (i = 0; i < 12; i++)
                        kiln_buf_adds(&nest, "}", NULL);
                err = kiln_error_free(err);
                tap_ok(df_expand_word(nest.buf, nest.len, '\\', 0, &vars, &out, NULL, &err) < 0 &&
                               err && err->kind == KILN_ERR_LIMIT,
                       "a word whose expansion grows past the cap fails with LIMIT");
        }
        /* Many stars against a long value stay polynomial. */
        {
                _cleanup_free_ char *word = xmalloc(4000);
                _cleanup_free_ char *val = xmalloc(20001);
                memcpy(word, "${V##", 5);
                for (i = 0; i < 1000; i++)
                        memcpy(word + 5 + i * 2, "*a", 2);
                memcpy(word + 2005, "b}", 3);
                memset(val, 'a', 20000);
                val[20000] = '\0';
                df_vars_set(&vars, "V", val);
                tap_ok(df_expand_word(word, strlen(word), '\\', 0, &vars, &out, NULL, NULL) == 0 &&
                               strlen(out) == 20000,
                       "1000 stars against 20000 characters finish (no match)");
                free(out);
        }
        df_vars_release(&vars);
}

int main(void)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_free_ char *extra_path =
                tap_conformance_path("transcribed/shell-expansion-extra.json");
        json_t *extra = kiln_json_load_file(extra_path, 1 << 20, &err);

        if (!tap_ok(extra != NULL, "load shell-expansion-extra.json"))
                return tap_done();
        env_var_test();
        words_test();
        extra_test(extra);
        own_cases();
        json_decref(extra);
        return tap_done();
}
