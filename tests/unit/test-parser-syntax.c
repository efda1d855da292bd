/*
 * The syntax tree against BuildKit: the 33 `result` dumps byte for byte, the 4 negative cases,
 * the line-number fixture and transcribed facts (warnings, line cap, word split, heredocs), plus
 * kiln's own positions for errors.
 */
#include <dirent.h>
#include <stdlib.h>
#include <string.h>

#include "builder/common/json-util.h"
#include "builder/common/xalloc.h"
#include "parser/parser-internal.h"
#include "parser/parser.h"
#include "tests/unit/tap.h"

#define CASES "frontend/dockerfile/parser/"

static char **list_dir(const char *dir, size_t *ret_n)
{
        struct dirent **names;
        int n = scandir(dir, &names, NULL, alphasort), i;
        char **out = xcalloc((size_t) (n > 0 ? n : 0) + 1, sizeof(char *));
        size_t k = 0;

        for (i = 0; i < n; i++) {
                if (names[i]->d_name[0] != '.')
                        out[k++] = xstrdup(names[i]->d_name);
                free(names[i]);
        }
        free(names);
        *ret_n = k;
        return out;
}

static struct df_syntax *parse_text(const char *text, struct kiln_error **err)
{
        struct df_syntax *syn = NULL;

        if (df_parse("Dockerfile", text, strlen(text), &syn, err) < 0)
                return NULL;
        return syn;
}

static void test_positive_cases(void)
{
        _cleanup_free_ char *dir = tap_conformance_path(CASES "testfiles");
        size_t n, i, passed = 0;
        char **cases = list_dir(dir, &n);

        for (i = 0; i < n; i++) {
                _cleanup_free_ char *df_path = xasprintf("%s/%s/Dockerfile", dir, cases[i]);
                _cleanup_free_ char *res_path = xasprintf("%s/%s/result", dir, cases[i]);
                _cleanup_free_ char *text = NULL, *want = NULL;
                _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
                _cleanup_(df_syntax_freep) struct df_syntax *syn = NULL;
                _cleanup_buf_ struct kiln_buf out = KILN_BUF_INIT;
                size_t tlen, wlen;

                text = tap_read_file(df_path, &tlen);
                want = tap_read_file(res_path, &wlen);
                if (df_parse("Dockerfile", text, tlen, &syn, &err) < 0) {
                        tap_ok(false, "positive case %s parses: %s", cases[i], err->msg);
                        continue;
                }
                df_syntax_dump(syn, &out, NULL);
                if (tap_eq_mem(out.buf, out.len, want, wlen,
                               "positive case %s dumps byte-identical", cases[i]))
                        passed++;
        }
        tap_diag("parser positive cases: %zu/%zu", passed, n);
        tap_eq_int((long long) n, 33, "all 33 positive cases are present");
        df_strv_free(cases);
}

static void test_negative_cases(void)
{
        _cleanup_free_ char *dir = tap_conformance_path(CASES "testfiles-negative");
        size_t n, i, passed = 0;
        char **cases = list_dir(dir, &n);

        for (i = 0; i < n; i++) {
                _cleanup_free_ char *df_path = xasprintf("%s/%s/Dockerfile", dir, cases[i]);
                _cleanup_free_ char *text = NULL;
                _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
                _cleanup_(df_syntax_freep) struct df_syntax *syn = NULL;
                size_t tlen;
                int r;

                text = tap_read_file(df_path, &tlen);
                r = df_parse("Dockerfile", text, tlen, &syn, &err);
                if (tap_ok(r < 0 && err && err->kind == KILN_ERR_PARSE && err->file,
                           "negative case %s fails to parse with a positioned PARSE error",
                           cases[i]))
                        passed++;
        }
        tap_diag("parser negative cases: %zu/%zu", passed, n);
        tap_eq_int((long long) n, 4, "all 4 negative cases are present");
        df_strv_free(cases);
}

static void test_line_numbers(json_t *facts)
{
        json_t *lr = json_object_get(facts, "line_ranges");
        _cleanup_free_ char *path = tap_conformance_path(CASES "testfile-line/Dockerfile");
        _cleanup_free_ char *text = NULL;
        _cleanup_(df_syntax_freep) struct df_syntax *syn = NULL;
        json_t *ranges = json_object_get(lr, "instructions");
        size_t tlen, i;

        text = tap_read_file(path, &tlen);
        if (!tap_ok(df_parse("Dockerfile", text, tlen, &syn, NULL) == 0, "line fixture parses"))
                return;
        tap_eq_int((long long) syn->n_nodes,
                   json_integer_value(json_object_get(lr, "instruction_count")),
                   "line fixture: instruction count");
        tap_eq_int(syn->nodes[0].start_line, json_integer_value(json_object_get(lr, "ast_start")),
                   "line fixture: AST starts at the first instruction");
        tap_eq_int(syn->nodes[syn->n_nodes - 1].end_line,
                   json_integer_value(json_object_get(lr, "ast_end")),
                   "line fixture: AST ends at the last line consumed");
        for (i = 0; i < json_array_size(ranges) && i < syn->n_nodes; i++) {
                json_t *r = json_array_get(ranges, i);
                tap_ok(syn->nodes[i].start_line == json_integer_value(json_array_get(r, 0)) &&
                               syn->nodes[i].end_line == json_integer_value(json_array_get(r, 1)),
                       "line fixture: instruction %zu spans %lld-%lld (got %u-%u)", i + 1,
                       json_integer_value(json_array_get(r, 0)),
                       json_integer_value(json_array_get(r, 1)), syn->nodes[i].start_line,
                       syn->nodes[i].end_line);
        }
}

static void test_warnings(json_t *facts)
{
        json_t *w = json_object_get(facts, "empty_continuation_warnings");
        const char *text = kiln_json_get_string(w, "dockerfile");
        _cleanup_(df_syntax_freep) struct df_syntax *syn = parse_text(text, NULL);
        json_t *mention = json_object_get(w, "warnings_mention");
        size_t i;

        if (!tap_ok(syn != NULL, "warnings fixture parses"))
                return;
        tap_eq_int((long long) syn->n_warnings,
                   json_integer_value(json_object_get(w, "warning_count")),
                   "one warning per instruction with empty continuation lines");
        for (i = 0; i < json_array_size(mention) && i < syn->n_warnings; i++)
                tap_ok(strstr(syn->warnings[i].msg,
                              json_string_value(json_array_get(mention, i))) != NULL,
                       "warning %zu shows the joined instruction", i + 1);
}

static void test_max_line(json_t *facts)
{
        const char *want = kiln_json_get_string(json_object_get(facts, "max_line"), "error_text");
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_(df_syntax_freep) struct df_syntax *syn = NULL;
        size_t n = 65536 + 20;
        _cleanup_free_ char *text = xmalloc(n + 1);
        int r;

        memset(text, 'a', n);
        memcpy(text, "FROM x\nRUN ", 11);
        text[n] = '\0';
        r = df_parse("Dockerfile", text, n, &syn, &err);
        tap_ok(r < 0 && err && strstr(err->msg, want), "a 65536-byte line is an error: %s",
               err ? err->msg : "(none)");
        tap_eq_int(err ? err->line : 0, 2, "the overlong line is reported at its line");

        /* 65535 bytes is still fine. */
        err = kiln_error_free(err);
        {
                size_t m = 7 + 65535;
                _cleanup_free_ char *ok = xmalloc(m + 2);
                _cleanup_(df_syntax_freep) struct df_syntax *syn2 = NULL;
                memset(ok, 'b', m);
                memcpy(ok, "FROM x\nRUN ", 11);
                ok[m] = '\n';
                ok[m + 1] = '\0';
                tap_ok(df_parse("Dockerfile", ok, m + 1, &syn2, &err) == 0,
                       "a 65535-byte line is accepted");
        }
}

static void test_parse_words(json_t *facts)
{
        json_t *cases = json_object_get(json_object_get(facts, "parse_words"), "cases");
        size_t i;

        for (i = 0; i < json_array_size(cases); i++) {
                json_t *c = json_array_get(cases, i);
                const char *in = json_string_value(json_array_get(c, 0));
                json_t *want = json_array_get(c, 1);
                size_t n, k;
                char **words = df_split_words(in, strlen(in), '\\', &n);
                bool ok = n == json_array_size(want);

                for (k = 0; ok && k < n; k++)
                        ok = strcmp(words[k], json_string_value(json_array_get(want, k))) == 0;
                tap_ok(ok, "parse_words '%s'", in);
                df_strv_free(words);
        }
}

static bool heredoc_matches(const struct df_heredoc *h, json_t *want)
{
        const char *content = kiln_json_get_string(want, "content");

        return strcmp(h->name, kiln_json_get_string(want, "name")) == 0 &&
               h->content_len == strlen(content) &&
               memcmp(h->content, content, h->content_len) == 0 &&
               h->expand == kiln_json_get_bool(want, "expand", false) &&
               h->chomp == kiln_json_get_bool(want, "chomp", false) &&
               (long long) h->fd == json_integer_value(json_object_get(want, "fd"));
}

static void test_heredoc_extraction(json_t *facts)
{
        json_t *ex = json_object_get(facts, "extraction");
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_(df_syntax_freep) struct df_syntax *syn =
                parse_text(kiln_json_get_string(ex, "dockerfile"), &err);
        json_t *expected = json_object_get(ex, "expected");
        size_t i, passed = 0;

        if (!tap_ok(syn != NULL, "heredoc fixture parses%s%s", err ? ": " : "",
                    err ? err->msg : ""))
                return;
        tap_eq_int((long long) syn->n_nodes, (long long) json_array_size(expected) + 1,
                   "heredoc fixture: instruction count");
        for (i = 0; i < json_array_size(expected) && i + 1 < syn->n_nodes; i++) {
                json_t *e = json_array_get(expected, i);
                json_t *docs = json_object_get(e, "heredocs");
                const struct df_node *node = &syn->nodes[i + 1];
                const char *first = kiln_json_get_string(e, "instruction_first_line");
                bool ok = strncmp(node->original, first, strlen(first)) == 0 &&
                          node->n_heredocs == json_array_size(docs);
                size_t k;

                for (k = 0; ok && k < node->n_heredocs; k++)
                        ok = heredoc_matches(&node->heredocs[k], json_array_get(docs, k));
                if (tap_ok(ok, "heredoc fixture: '%s'", first))
                        passed++;
        }
        tap_diag("heredoc extraction: %zu/%zu", passed, json_array_size(expected));
}

static void test_heredoc_misc(json_t *facts)
{
        json_t *jf = json_object_get(facts, "json_form_never_heredoc");
        json_t *counts = json_object_get(jf, "expected_heredoc_count_per_instruction");
        _cleanup_(df_syntax_freep) struct df_syntax *syn =
                parse_text(kiln_json_get_string(jf, "dockerfile"), NULL);
        json_t *chomp = json_object_get(facts, "chomp");
        const char *cin = kiln_json_get_string(chomp, "input");
        _cleanup_free_ char *cout = NULL;
        size_t i, clen;

        if (tap_ok(syn && syn->n_nodes == json_array_size(counts), "JSON-form fixture parses"))
                for (i = 0; i < syn->n_nodes; i++)
                        tap_eq_int((long long) syn->nodes[i].n_heredocs,
                                   json_integer_value(json_array_get(counts, i)),
                                   "JSON form never has heredocs (instruction %zu)", i + 1);
        cout = df_heredoc_chomp(cin, strlen(cin), &clen);
        tap_eq_str(cout, kiln_json_get_string(chomp, "output"), "<<- chomps leading tabs");
}

static void test_delimiter_words(json_t *facts)
{
        json_t *dw = json_object_get(facts, "delimiter_word");
        json_t *list;
        size_t i;

        list = json_object_get(dw, "valid_name_EOF");
        for (i = 0; i < json_array_size(list); i++) {
                const char *w = json_string_value(json_array_get(list, i));
                _cleanup_free_ char *name = NULL;
                unsigned fd;
                bool chomp, expand;
                int r = df_heredoc_word(w, &name, &fd, &chomp, &expand, NULL);
                tap_ok(r == 0 && name && strcmp(name, "EOF") == 0, "delimiter word '%s' names EOF",
                       w);
        }
        list = json_object_get(dw, "invalid");
        for (i = 0; i < json_array_size(list); i++) {
                const char *w = json_string_value(json_array_get(list, i));
                _cleanup_free_ char *name = NULL;
                _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
                unsigned fd;
                bool chomp, expand;
                int r = df_heredoc_word(w, &name, &fd, &chomp, &expand, &err);
                tap_ok(r < 0 && err, "delimiter word '%s' is an error", w);
        }
        list = json_object_get(dw, "not_heredoc");
        for (i = 0; i < json_array_size(list); i++) {
                const char *w = json_string_value(json_array_get(list, i));
                _cleanup_free_ char *name = NULL;
                unsigned fd;
                bool chomp, expand;
                int r = df_heredoc_word(w, &name, &fd, &chomp, &expand, NULL);
                tap_ok(r == 0 && !name, "word '%s' is not a heredoc", w);
        }
        list = json_object_get(facts, "names_from_line");
        for (i = 0; i < json_array_size(list); i++) {
                json_t *c = json_array_get(list, i);
                const char *line = kiln_json_get_string(c, "line");
                json_t *want = json_object_get(c, "names");
                struct df_heredoc_spec *specs = NULL;
                size_t n = 0, k;
                bool ok = df_heredocs_from_line(line, strlen(line), &specs, &n, NULL) == 0 &&
                          n == json_array_size(want);

                for (k = 0; ok && k < n; k++)
                        ok = strcmp(specs[k].name, json_string_value(json_array_get(want, k))) == 0;
                tap_ok(ok, "heredoc names on line '%s'", line);
                for (k = 0; k < n; k++)
                        free(specs[k].name);
                free(specs);
        }
}

struct pos_case {
        const char *text;
        unsigned line, column;
        const char *msg;
};

/* kiln's own promise: every syntax error says where. */
static void test_error_positions(void)
{
        static const struct pos_case cases[] = {
                { "", 0, 0, "file with no instructions" },
                { "# only a comment\n\n", 2, 1, "file with no instructions" },
                { "FROM a\nENV PATH\n", 2, 5, "ENV must have two arguments" },
                { "FROM a\nLABEL a=b c\n", 2, 11, "can't find =" },
                { "FROM a\nCMD [\"a\", 1]\n", 2, 5, "arrays must be comprised of strings only" },
                { "FROM a\nRUN echo \\\n  [1] \\\n  && ENV x\nENV y\n", 5, 5,
                  "ENV must have two arguments" },
                { "FROM a\nRUN <<EOF\nno end\n", 2, 1, "unterminated heredoc" },
                { "# escape=x\nFROM a\n", 1, 10, "invalid escape token" },
                { "# escape=`\n# escape=\\\nFROM a\n", 2, 1, "only one escape parser directive" },
                { "\xEF\xBB\xBF"
                  "FROM a\nENV \xC3\xA9t\xC3\xA9\n",
                  2, 5, "ENV must have two arguments" },
                { "FROM a\r\nENV X\r\n", 2, 5, "ENV must have two arguments" },
                { "FROM a\nONBUILD ENV x\n", 2, 13, "ENV must have two arguments" },
        };
        size_t i;

        for (i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
                _cleanup_(df_syntax_freep) struct df_syntax *syn = NULL;
                int r = df_parse("Dockerfile", cases[i].text, strlen(cases[i].text), &syn, &err);

                if (!tap_ok(r < 0 && err, "error case %zu fails", i))
                        continue;
                tap_ok(strstr(err->msg, cases[i].msg) != NULL,
                       "error case %zu says '%s' (got '%s')", i, cases[i].msg, err->msg);
                tap_ok(err->line == cases[i].line && err->column == cases[i].column,
                       "error case %zu at %u:%u (got %u:%u)", i, cases[i].line, cases[i].column,
                       err->line, err->column);
                tap_eq_str(err->file, "Dockerfile", "error case %zu names the file", i);
        }
}

/* BOM, CRLF and comments inside continuations, beyond what the dumps cover. */
static void test_line_handling(void)
{
        static const struct {
                const char *text;
                const char *dump;
        } cases[] = {
                { "\xEF\xBB\xBF"
                  "FROM a\r\nRUN echo \\\r\n  # c\r\n  b\r\n",
                  "(from \"a\")\n(run \"echo   b\")\n" },
                { "# escape=`\nFROM a\nRUN dir c:\\ `\n  d\n",
                  "(from \"a\")\n(run \"dir c:\\\\   d\")\n" },
                { "# syntax=docker/dockerfile:1\n# check=skip=all\nFROM a\n", "(from \"a\")\n" },
                { "FROM a\nONBUILD RUN --mount=type=cache,target=/x echo hi\n",
                  "(from \"a\")\n(onbuild (run [\"--mount=type=cache,target=/x\"] \"echo "
                  "hi\"))\n" },
                { "FROM a\nfrobnicate --x=1 all the things\n",
                  "(from \"a\")\n(frobnicate [\"--x=1\"] \"\")\n" },
        };
        size_t i;

        for (i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
                _cleanup_(df_syntax_freep) struct df_syntax *syn = parse_text(cases[i].text, &err);
                _cleanup_buf_ struct kiln_buf out = KILN_BUF_INIT;

                if (!tap_ok(syn != NULL, "line case %zu parses%s%s", i, err ? ": " : "",
                            err ? err->msg : ""))
                        continue;
                df_syntax_dump(syn, &out, NULL);
                tap_eq_str(out.buf, cases[i].dump, "line case %zu dump", i);
        }
        {
                _cleanup_(df_syntax_freep) struct df_syntax *syn =
                        parse_text("# syntax=docker/dockerfile:1.7\nFROM a\n", NULL);
                tap_eq_str(syn ? syn->syntax : NULL, "docker/dockerfile:1.7",
                           "syntax directive value");
        }
        {
                _cleanup_(df_syntax_freep) struct df_syntax *syn =
                        parse_text("FROM a\nONBUILD RUN <<EOF\nhi\nEOF\n", NULL);
                tap_ok(syn && syn->n_nodes == 2 && syn->nodes[1].n_heredocs == 1 &&
                               strcmp(syn->nodes[1].heredocs[0].content, "hi\n") == 0,
                       "ONBUILD RUN carries its heredoc");
        }
}

int main(void)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_free_ char *lines_path =
                tap_conformance_path("transcribed/parser-line-numbers.json");
        _cleanup_free_ char *heredoc_path = tap_conformance_path("transcribed/heredoc-cases.json");
        json_t *lines = kiln_json_load_file(lines_path, 1 << 20, &err);
        json_t *heredocs = kiln_json_load_file(heredoc_path, 1 << 20, &err);

        if (!lines || !heredocs) {
                tap_ok(false, "load transcribed facts: %s", err ? err->msg : "?");
                return tap_done();
        }
        test_positive_cases();
        test_negative_cases();
        test_line_numbers(lines);
        test_warnings(lines);
        test_max_line(lines);
        test_parse_words(lines);
        test_heredoc_extraction(heredocs);
        test_heredoc_misc(heredocs);
        test_delimiter_words(heredocs);
        test_error_positions();
        test_line_handling();
        json_decref(lines);
        json_decref(heredocs);
        return tap_done();
}
