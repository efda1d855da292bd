/*
 * Dockerfile text -> syntax tree, following BuildKit's parser: parser directives, comments,
 * line continuations with the active escape character, BOM and CRLF, heredocs, and each
 * instruction's argument rule (JSON/exec form, whitespace lists, key=value words, ONBUILD).
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "builder/common/json-util.h"
#include "builder/common/strbuf.h"
#include "builder/common/xalloc.h"
#include "parser/parser-internal.h"

/* ---- small string helpers ---- */

void df_trim_space(const char *s, size_t len, size_t *ret_start, size_t *ret_end)
{
        size_t i = 0, start = len, end = 0;

        /* One forward pass: the first and the last rune that is not a space. */
        while (i < len) {
                uint32_t r;
                size_t n = df_rune_at(s, len, i, &r);
                if (!kiln_rune_is_space(r)) {
                        if (start == len)
                                start = i;
                        end = i + n;
                }
                i += n;
        }
        if (start == len)
                start = end = len;
        *ret_start = start;
        *ret_end = end;
}

char *df_arena_lower(struct kiln_arena *a, const char *s, size_t len)
{
        char *p = kiln_arena_memdup(a, s, len);
        size_t i;

        for (i = 0; i < len; i++)
                p[i] = (char) tolower((unsigned char) p[i]);
        return p;
}

bool df_keyword_is(const char *s, const char *keyword)
{
        return strcasecmp(s, keyword) == 0;
}

static size_t trim_left_space(const char *s, size_t len)
{
        size_t i = 0;

        while (i < len) {
                uint32_t r;
                size_t n = df_rune_at(s, len, i, &r);
                if (!kiln_rune_is_space(r))
                        break;
                i += n;
        }
        return i;
}

/* ---- the parse state ---- */

struct vec_args {
        struct df_arg *v;
        size_t n, alloc;
};

struct vec_segments {
        struct df_segment *v;
        size_t n, alloc;
};

struct parse_state {
        struct df_syntax *syn;
        struct kiln_error **err;
        char escape;
        bool directives_done;
        bool seen_escape, seen_syntax, seen_check;
        /* the reader */
        size_t pos;      /* next unread byte */
        unsigned lineno; /* number of physical lines consumed */
        struct df_warning *warnings;
        size_t n_warnings, alloc_warnings;
};

/* The instruction being built: joined text plus the map back to source lines. */
struct joined {
        struct kiln_buf text;
        struct vec_segments segs;
};

static void args_push(struct vec_args *va, const char *text, size_t len, size_t offset)
{
        char *copy = xmalloc(len + 1);

        /* JSON strings may hold NUL bytes, so copy by length. */
        memcpy(copy, text, len);
        copy[len] = '\0';
        XGROW(va->v, va->n + 1, va->alloc);
        va->v[va->n].text = copy;
        va->v[va->n].len = len;
        va->v[va->n].offset = offset;
        va->n++;
}

static void args_release(struct vec_args *va)
{
        size_t i;

        for (i = 0; i < va->n; i++)
                free((char *) va->v[i].text);
        free(va->v);
        va->v = NULL;
        va->n = va->alloc = 0;
}

/* Moves the words into the arena. */
static struct df_arg *args_to_arena(struct kiln_arena *a, struct vec_args *va, size_t *ret_n)
{
        struct df_arg *out = NULL;
        size_t i;

        *ret_n = va->n;
        if (va->n) {
                out = kiln_arena_array(a, va->n, sizeof(*out));
                for (i = 0; i < va->n; i++) {
                        out[i].text = kiln_arena_memdup(a, va->v[i].text, va->v[i].len);
                        out[i].len = va->v[i].len;
                        out[i].offset = va->v[i].offset;
                }
        }
        args_release(va);
        return out;
}

/* ---- positions ---- */

static unsigned column_of(const struct df_syntax *syn, unsigned line, size_t byte_in_line)
{
        size_t len, i = 0;
        const char *s = df_syntax_line(syn, line, &len);
        unsigned col = 1;

        if (!s)
                return 1;
        if (line == 1 && len >= 3 && memcmp(s, "\xEF\xBB\xBF", 3) == 0)
                i = 3;
        if (byte_in_line > len)
                byte_in_line = len;
        while (i < byte_in_line) {
                uint32_t r;
                i += df_rune_at(s, len, i, &r);
                col++;
        }
        return col;
}

const char *df_syntax_line(const struct df_syntax *syn, unsigned line, size_t *ret_len)
{
        size_t start, end;

        if (!syn || line == 0 || line > syn->n_lines)
                return NULL;
        start = syn->line_starts[line - 1];
        end = line < syn->n_lines ? syn->line_starts[line] : syn->text_len;
        while (end > start && (syn->text[end - 1] == '\n' || syn->text[end - 1] == '\r'))
                end--;
        if (ret_len)
                *ret_len = end - start;
        return syn->text + start;
}

static void position_in_segments(const struct df_syntax *syn, const struct df_segment *segs,
                                 size_t n_segs, size_t offset, unsigned *ret_line, size_t *ret_byte)
{
        size_t i, best = 0;

        for (i = 0; i < n_segs; i++)
                if (segs[i].offset <= offset)
                        best = i;
        if (n_segs == 0) {
                *ret_line = 0;
                *ret_byte = 0;
                return;
        }
        *ret_line = segs[best].line;
        *ret_byte = segs[best].line_offset + (offset - segs[best].offset);
        (void) syn;
}

void df_node_position(const struct df_syntax *syn, const struct df_node *node, size_t offset,
                      unsigned *ret_line, unsigned *ret_column)
{
        unsigned line;
        size_t byte;

        position_in_segments(syn, node->segments, node->n_segments, offset, &line, &byte);
        if (line == 0) {
                *ret_line = node->start_line;
                *ret_column = 1;
                return;
        }
        *ret_line = line;
        *ret_column = column_of(syn, line, byte);
}

static void attach_source(struct kiln_error *e, const struct df_syntax *syn)
{
        size_t len;
        const char *s;

        if (!e || e->source_line || !e->line)
                return;
        s = df_syntax_line(syn, e->line, &len);
        if (!s)
                return;
        if (e->line == 1 && len >= 3 && memcmp(s, "\xEF\xBB\xBF", 3) == 0) {
                s += 3;
                len -= 3;
        }
        kiln_error_set_source_line(e, s, len);
}

void df_error_locate(struct kiln_error *e, const struct df_syntax *syn, const struct df_node *node,
                     size_t offset)
{
        unsigned line, col;

        if (!e || !syn)
                return;
        if (e->line == 0) {
                /* An expansion error's column is an offset within the word. */
                if (e->column)
                        offset += e->column - 1;
                df_node_position(syn, node, offset, &line, &col);
                e->column = 0;
                kiln_error_set_position(e, syn->filename, line, col);
        } else if (!e->file) {
                kiln_error_set_position(e, syn->filename, e->line, e->column);
        }
        attach_source(e, syn);
}

int df_error_at_node(struct kiln_error **err, const struct df_syntax *syn,
                     const struct df_node *node, size_t offset, enum kiln_errkind kind,
                     const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        kiln_error_newv(err, kind, fmt, ap);
        va_end(ap);
        if (err && *err)
                df_error_locate(*err, syn, node, offset);
        return -1;
}

static int fail_line(struct parse_state *ps, unsigned line, unsigned column, const char *fmt, ...)
        _printf_(4, 5);

static int fail_line(struct parse_state *ps, unsigned line, unsigned column, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        kiln_error_newv(ps->err, KILN_ERR_PARSE, fmt, ap);
        va_end(ap);
        if (ps->err && *ps->err) {
                kiln_error_set_position(*ps->err, ps->syn->filename, line, column);
                attach_source(*ps->err, ps->syn);
        }
        return -1;
}

/* An error inside the instruction being built, at an offset of its joined text. */
static int fail_joined(struct parse_state *ps, const struct joined *j, size_t offset,
                       const char *fmt, ...) _printf_(4, 5);

static int fail_joined(struct parse_state *ps, const struct joined *j, size_t offset,
                       const char *fmt, ...)
{
        unsigned line;
        size_t byte;
        va_list ap;

        va_start(ap, fmt);
        kiln_error_newv(ps->err, KILN_ERR_PARSE, fmt, ap);
        va_end(ap);
        position_in_segments(ps->syn, j->segs.v, j->segs.n, offset, &line, &byte);
        if (ps->err && *ps->err) {
                kiln_error_set_position(*ps->err, ps->syn->filename, line,
                                        column_of(ps->syn, line, byte));
                attach_source(*ps->err, ps->syn);
        }
        return -1;
}

static void warn(struct parse_state *ps, unsigned line, unsigned column, const char *fmt, ...)
        _printf_(4, 5);

static void warn(struct parse_state *ps, unsigned line, unsigned column, const char *fmt, ...)
{
        va_list ap;
        char *msg;

        va_start(ap, fmt);
        msg = xvasprintf(fmt, ap);
        va_end(ap);
        XGROW(ps->warnings, ps->n_warnings + 1, ps->alloc_warnings);
        ps->warnings[ps->n_warnings].msg = kiln_arena_strdup(&ps->syn->arena, msg);
        ps->warnings[ps->n_warnings].line = line;
        ps->warnings[ps->n_warnings].column = column;
        ps->n_warnings++;
        free(msg);
}

/* ---- reading physical lines ---- */

/* Returns the next physical line (with its newline) or false at the end. */
static int read_line(struct parse_state *ps, const char **ret, size_t *ret_len, bool *ret_ok)
{
        const struct df_syntax *syn = ps->syn;
        const char *start, *nl;
        size_t len, content;

        *ret_ok = false;
        if (ps->pos >= syn->text_len)
                return 0;
        start = syn->text + ps->pos;
        nl = memchr(start, '\n', syn->text_len - ps->pos);
        len = nl ? (size_t) (nl - start) + 1 : syn->text_len - ps->pos;
        content = nl ? len - 1 : len;
        if (content > DF_MAX_LINE) {
                kiln_error_new(ps->err, KILN_ERR_LIMIT,
                               "dockerfile line greater than max allowed size of %d", DF_MAX_LINE);
                if (ps->err && *ps->err)
                        kiln_error_set_position(*ps->err, syn->filename, ps->lineno + 1, 1);
                return -1;
        }
        ps->pos += len;
        *ret = start;
        *ret_len = len;
        *ret_ok = true;
        return 0;
}

static size_t trim_newline(const char *s, size_t len)
{
        while (len > 0 && (s[len - 1] == '\r' || s[len - 1] == '\n'))
                len--;
        return len;
}

static bool is_comment(const char *s, size_t len)
{
        size_t n = trim_newline(s, len);
        size_t i = trim_left_space(s, n);

        return i < n && s[i] == '#';
}

static bool is_empty_line(const char *s, size_t len)
{
        size_t n = trim_newline(s, len);

        return trim_left_space(s, n) == n;
}

/* Go regexp \s: [\t\n\f\r ] */
static bool is_re_space(char c)
{
        return c == ' ' || c == '\t' || c == '\n' || c == '\f' || c == '\r';
}

/*
 * Recognises "# key=value" parser directives while they are allowed (BuildKit's
 * `^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$`). Anything else ends the directive section.
 */
static int check_directive(struct parse_state *ps, const char *s, size_t len, unsigned line,
                           size_t byte_in_line)
{
        size_t i = 0, key_start, key_end, val_start, val_end;
        char key[16];
        const char *value;
        size_t vlen;

        if (ps->directives_done)
                return 0;
        if (len == 0 || s[0] != '#')
                goto done;
        i = 1;
        while (i < len && is_re_space(s[i]))
                i++;
        key_start = i;
        if (i >= len || !isalpha((unsigned char) s[i]))
                goto done;
        while (i < len && isalnum((unsigned char) s[i]))
                i++;
        key_end = i;
        while (i < len && is_re_space(s[i]))
                i++;
        if (i >= len || s[i] != '=')
                goto done;
        i++;
        val_start = i;
        while (val_start < len && is_re_space(s[val_start]))
                val_start++;
        val_end = len;
        while (val_end > val_start && is_re_space(s[val_end - 1]))
                val_end--;
        if (val_end == val_start) {
                /* `.+?` still takes one character when only whitespace follows '='. */
                if (i >= len)
                        goto done;
                val_start = len - 1;
                val_end = len;
        }
        if (key_end - key_start >= sizeof(key))
                goto done;
        memcpy(key, s + key_start, key_end - key_start);
        key[key_end - key_start] = '\0';
        value = s + val_start;
        vlen = val_end - val_start;

        if (df_keyword_is(key, "escape")) {
                if (ps->seen_escape)
                        return fail_line(ps, line, column_of(ps->syn, line, byte_in_line),
                                         "only one escape parser directive can be used");
                ps->seen_escape = true;
                if (vlen != 1 || (value[0] != '\\' && value[0] != '`'))
                        return fail_line(ps, line,
                                         column_of(ps->syn, line, byte_in_line + val_start),
                                         "invalid escape token '%.*s' does not match ` or \\",
                                         (int) vlen, value);
                ps->escape = value[0];
                ps->syn->escape = value[0];
        } else if (df_keyword_is(key, "syntax")) {
                if (ps->seen_syntax)
                        return fail_line(ps, line, column_of(ps->syn, line, byte_in_line),
                                         "only one syntax parser directive can be used");
                ps->seen_syntax = true;
                ps->syn->syntax = kiln_arena_memdup(&ps->syn->arena, value, vlen);
        } else if (df_keyword_is(key, "check")) {
                if (ps->seen_check)
                        return fail_line(ps, line, column_of(ps->syn, line, byte_in_line),
                                         "only one check parser directive can be used");
                ps->seen_check = true;
                ps->syn->check = kiln_arena_memdup(&ps->syn->arena, value, vlen);
        } else {
                goto done;
        }
        return 0;
done:
        ps->directives_done = true;
        return 0;
}

/*
 * BuildKit's line-continuation rule: the escape character at the end of the line (spaces and
 * tabs may follow) continues the instruction unless another escape character precedes it.
 * Returns the length to keep, or (size_t)-1 when the line does not continue.
 */
static size_t continuation(const char *s, size_t len, char escape)
{
        size_t end = len;

        while (end > 0 && (s[end - 1] == ' ' || s[end - 1] == '\t'))
                end--;
        if (end == 0 || s[end - 1] != escape)
                return (size_t) -1;
        if (end >= 2 && s[end - 2] == escape)
                return (size_t) -1;
        return end - 1;
}

static void joined_add(struct joined *j, const char *s, size_t len, unsigned line,
                       size_t line_offset)
{
        XGROW(j->segs.v, j->segs.n + 1, j->segs.alloc);
        j->segs.v[j->segs.n].offset = j->text.len;
        j->segs.v[j->segs.n].line = line;
        j->segs.v[j->segs.n].line_offset = line_offset;
        j->segs.n++;
        kiln_buf_add(&j->text, s, len, NULL);
}

/* ---- splitting an instruction ---- */

/*
 * BuildKit's extractBuilderFlags: pulls leading --name[=value] words off `s`. Quotes are
 * removed and '\' escapes the next character. Returns the offset where the rest starts.
 */
static size_t extract_flags(const char *s, size_t len, size_t base, struct vec_args *flags)
{
        _cleanup_buf_ struct kiln_buf word = KILN_BUF_INIT;
        enum { IN_SPACES, IN_WORD, IN_QUOTE } phase = IN_SPACES;
        bool blank_ok = false;
        char quote = 0;
        size_t pos, word_start = 0;

        for (pos = 0; pos <= len; pos++) {
                unsigned char ch = pos < len ? (unsigned char) s[pos] : 0;

                if (phase == IN_SPACES) {
                        if (pos == len)
                                break;
                        if (kiln_rune_is_space(ch))
                                continue;
                        if (ch != '-' || pos + 1 == len || s[pos + 1] != '-')
                                return pos;
                        phase = IN_WORD;
                        word_start = pos;
                }
                if (pos == len) {
                        if (!(word.len == 2 && memcmp(word.buf, "--", 2) == 0) &&
                            (blank_ok || word.len > 0))
                                args_push(flags, word.buf, word.len, base + word_start);
                        break;
                }
                if (phase == IN_WORD) {
                        if (kiln_rune_is_space(ch)) {
                                phase = IN_SPACES;
                                if (word.len == 2 && memcmp(word.buf, "--", 2) == 0)
                                        return pos;
                                if (blank_ok || word.len > 0)
                                        args_push(flags, word.buf, word.len, base + word_start);
                                kiln_buf_reset(&word);
                                blank_ok = false;
                                continue;
                        }
                        if (ch == '\'' || ch == '"') {
                                quote = (char) ch;
                                blank_ok = true;
                                phase = IN_QUOTE;
                                continue;
                        }
                        if (ch == '\\') {
                                if (pos + 1 == len)
                                        continue;
                                pos++;
                                ch = (unsigned char) s[pos];
                        }
                        kiln_buf_addc(&word, (char) ch, NULL);
                        continue;
                }
                /* IN_QUOTE */
                if (ch == (unsigned char) quote) {
                        phase = IN_WORD;
                        continue;
                }
                if (ch == '\\') {
                        if (pos + 1 == len) {
                                phase = IN_WORD;
                                continue;
                        }
                        pos++;
                        ch = (unsigned char) s[pos];
                }
                kiln_buf_addc(&word, (char) ch, NULL);
        }
        return len;
}

/* BuildKit's parseWords: whitespace separates words; quotes and escapes stay in them. */
static void parse_words(const char *s, size_t len, size_t base, char escape, struct vec_args *out)
{
        _cleanup_buf_ struct kiln_buf word = KILN_BUF_INIT;
        enum { IN_SPACES, IN_WORD, IN_QUOTE } phase = IN_SPACES;
        bool blank_ok = false;
        uint32_t quote = 0, ch = 0;
        size_t pos, width = 0, word_start = 0;

        for (pos = 0; pos <= len; pos += width) {
                if (pos != len)
                        width = df_rune_at(s, len, pos, &ch);
                if (phase == IN_SPACES) {
                        if (pos == len)
                                break;
                        if (kiln_rune_is_space(ch))
                                continue;
                        phase = IN_WORD;
                        word_start = pos;
                }
                if (pos == len) {
                        if (blank_ok || word.len > 0)
                                args_push(out, word.buf, word.len, base + word_start);
                        break;
                }
                if (phase == IN_WORD) {
                        if (kiln_rune_is_space(ch)) {
                                phase = IN_SPACES;
                                if (blank_ok || word.len > 0)
                                        args_push(out, word.buf, word.len, base + word_start);
                                kiln_buf_reset(&word);
                                blank_ok = false;
                                continue;
                        }
                        if (ch == '\'' || ch == '"') {
                                quote = ch;
                                blank_ok = true;
                                phase = IN_QUOTE;
                        }
                        if (ch == (uint32_t) escape) {
                                if (pos + width == len)
                                        continue;
                                kiln_buf_add(&word, s + pos, width, NULL);
                                pos += width;
                                width = df_rune_at(s, len, pos, &ch);
                        }
                        kiln_buf_add(&word, s + pos, width, NULL);
                        continue;
                }
                /* IN_QUOTE */
                if (ch == quote)
                        phase = IN_WORD;
                if (ch == (uint32_t) escape && quote != '\'') {
                        if (pos + width == len) {
                                phase = IN_WORD;
                                continue;
                        }
                        kiln_buf_add(&word, s + pos, width, NULL);
                        pos += width;
                        width = df_rune_at(s, len, pos, &ch);
                }
                kiln_buf_add(&word, s + pos, width, NULL);
        }
}

char **df_split_words(const char *s, size_t len, char escape, size_t *ret_n)
{
        struct vec_args words = { 0 };
        char **v;
        size_t i;

        parse_words(s, len, 0, escape, &words);
        v = xcalloc(words.n + 1, sizeof(*v));
        for (i = 0; i < words.n; i++)
                v[i] = xstrdup(words.v[i].text);
        *ret_n = words.n;
        args_release(&words);
        return v;
}

/* Splits on runs of "\t\v\f\r " (BuildKit's reWhitespace). */
static void split_ws(const char *s, size_t len, size_t base, struct vec_args *out)
{
        size_t i = 0, start = 0;

        if (len == 0)
                return;
        for (;;) {
                if (i == len || df_is_ws_class(s[i])) {
                        args_push(out, s + start, i - start, base + start);
                        if (i == len)
                                return;
                        while (i < len && df_is_ws_class(s[i]))
                                i++;
                        start = i;
                        continue;
                }
                i++;
        }
}

enum json_result { JSON_OK, JSON_NOT_JSON, JSON_NOT_STRINGS };

static enum json_result parse_json(const char *s, size_t len, size_t base, struct vec_args *out)
{
        _cleanup_(kiln_error_freep) struct kiln_error *jerr = NULL;
        size_t lead = trim_left_space(s, len);
        char **items = NULL;
        size_t *lens = NULL, n = 0, i;

        if (lead >= len || s[lead] != '[')
                return JSON_NOT_JSON;
        if (kiln_json_string_array(s + lead, len - lead, &items, &lens, &n, &jerr) < 0)
                return jerr && jerr->kind == KILN_ERR_INVALID ? JSON_NOT_STRINGS : JSON_NOT_JSON;
        for (i = 0; i < n; i++) {
                args_push(out, items[i], lens[i], base + lead);
                free(items[i]);
        }
        free(items);
        free(lens);
        return JSON_OK;
}

enum arg_rule {
        RULE_IGNORE,
        RULE_STRING,
        RULE_WS_LIST,
        RULE_MAYBE_JSON,
        RULE_MAYBE_JSON_LIST,
        RULE_NAME_VAL,
        RULE_NAME_OR_NAME_VAL,
        RULE_HEALTHCHECK,
        RULE_SUBCOMMAND,
};

static const struct {
        const char *name;
        enum arg_rule rule;
} instruction_rules[] = {
        { "add", RULE_MAYBE_JSON_LIST },     { "arg", RULE_NAME_OR_NAME_VAL },
        { "cmd", RULE_MAYBE_JSON },          { "copy", RULE_MAYBE_JSON_LIST },
        { "entrypoint", RULE_MAYBE_JSON },   { "env", RULE_NAME_VAL },
        { "expose", RULE_WS_LIST },          { "from", RULE_WS_LIST },
        { "healthcheck", RULE_HEALTHCHECK }, { "label", RULE_NAME_VAL },
        { "maintainer", RULE_STRING },       { "onbuild", RULE_SUBCOMMAND },
        { "run", RULE_MAYBE_JSON },          { "shell", RULE_MAYBE_JSON },
        { "stopsignal", RULE_STRING },       { "user", RULE_STRING },
        { "volume", RULE_MAYBE_JSON_LIST },  { "workdir", RULE_STRING },
};

/* The argument rule of a keyword; an unknown instruction keeps none of its arguments. */
static enum arg_rule rule_for(const char *keyword)
{
        size_t i;

        for (i = 0; i < ELEMENTSOF(instruction_rules); i++)
                if (df_keyword_is(keyword, instruction_rules[i].name))
                        return instruction_rules[i].rule;
        return RULE_IGNORE;
}

static int node_from_text(struct parse_state *ps, const struct joined *j, size_t off, size_t len,
                          struct df_node *node, unsigned depth);

/* ENV and LABEL: new "k=v ..." form, or the legacy "k value" form. */
static int parse_name_val(struct parse_state *ps, const struct joined *j, const char *s, size_t len,
                          size_t base, const char *what, struct vec_args *out)
{
        struct vec_args words = { 0 };
        size_t i;

        parse_words(s, len, base, ps->escape, &words);
        if (words.n == 0)
                return 0;
        if (!memchr(words.v[0].text, '=', words.v[0].len)) {
                size_t k = 0, v;

                args_release(&words);
                while (k < len && !df_is_ws_class(s[k]))
                        k++;
                if (k == len)
                        return fail_joined(ps, j, base, "%s must have two arguments", what);
                v = k;
                while (v < len && df_is_ws_class(s[v]))
                        v++;
                args_push(out, s, k, base);
                args_push(out, s + v, len - v, base + v);
                args_push(out, "", 0, base + v);
                return 0;
        }
        for (i = 0; i < words.n; i++) {
                const char *w = words.v[i].text;
                const char *eq = memchr(w, '=', words.v[i].len);

                if (!eq) {
                        int r = fail_joined(ps, j, words.v[i].offset,
                                            "syntax error - can't find = in '%s'; must be of the "
                                            "form: name=value",
                                            w);
                        args_release(&words);
                        return r;
                }
                args_push(out, w, (size_t) (eq - w), words.v[i].offset);
                args_push(out, eq + 1, words.v[i].len - (size_t) (eq - w) - 1,
                          words.v[i].offset + (size_t) (eq - w) + 1);
                args_push(out, "=", 1, words.v[i].offset + (size_t) (eq - w));
        }
        args_release(&words);
        return 0;
}

static int parse_maybe_json(struct parse_state *ps, const struct joined *j, const char *s,
                            size_t len, size_t base, bool list, struct vec_args *out,
                            bool *ret_json)
{
        if (len == 0 && !list)
                return 0;
        switch (parse_json(s, len, base, out)) {
        case JSON_OK:
                *ret_json = true;
                return 0;
        case JSON_NOT_STRINGS:
                return fail_joined(
                        ps, j, base + trim_left_space(s, len),
                        "when using JSON array syntax, arrays must be comprised of strings only");
        case JSON_NOT_JSON:
                break;
        }
        if (list)
                split_ws(s, len, base, out);
        else
                args_push(out, s, len, base);
        return 0;
}

static int dispatch_args(struct parse_state *ps, const struct joined *j, struct df_node *node,
                         enum arg_rule rule, const char *s, size_t len, size_t base,
                         struct vec_args *out, unsigned depth)
{
        switch (rule) {
        case RULE_IGNORE:
                args_push(out, "", 0, base);
                return 0;
        case RULE_STRING:
                if (len)
                        args_push(out, s, len, base);
                return 0;
        case RULE_WS_LIST:
                split_ws(s, len, base, out);
                return 0;
        case RULE_MAYBE_JSON:
                return parse_maybe_json(ps, j, s, len, base, false, out, &node->json);
        case RULE_MAYBE_JSON_LIST:
                return parse_maybe_json(ps, j, s, len, base, true, out, &node->json);
        case RULE_NAME_VAL:
                return parse_name_val(ps, j, s, len, base,
                                      df_keyword_is(node->keyword, "env") ? "ENV" : "LABEL", out);
        case RULE_NAME_OR_NAME_VAL:
                parse_words(s, len, base, ps->escape, out);
                return 0;
        case RULE_HEALTHCHECK: {
                /* Byte-wise, as BuildKit does: the type word, then the command like CMD. */
                size_t sep = 0, nxt;

                while (sep < len && !kiln_rune_is_space((unsigned char) s[sep]))
                        sep++;
                nxt = sep;
                while (nxt < len && kiln_rune_is_space((unsigned char) s[nxt]))
                        nxt++;
                if (sep == 0)
                        return 0;
                args_push(out, s, sep, base);
                return parse_maybe_json(ps, j, s + nxt, len - nxt, base + nxt, false, out,
                                        &node->json);
        }
        case RULE_SUBCOMMAND: {
                struct df_node *sub;

                if (len == 0)
                        return 0;
                /* BuildKit nests ONBUILD ONBUILD ... freely (the instruction check rejects
                 * it); bound the recursion all the same. */
                if (depth >= 64)
                        return fail_joined(ps, j, base,
                                           "ONBUILD triggers nested more than 64 deep");
                sub = kiln_arena_alloc(&ps->syn->arena, sizeof(*sub));
                if (node_from_text(ps, j, base, len, sub, depth + 1) < 0)
                        return -1;
                node->trigger = sub;
                return 0;
        }
        }
        return 0;
}

/* Copies the segments of `j` that cover [off, ...) shifted so that `off` becomes 0. */
static void node_segments(struct kiln_arena *a, const struct joined *j, size_t off,
                          struct df_node *node)
{
        size_t i, first = 0, n = 0;
        struct df_segment *out;

        for (i = 0; i < j->segs.n; i++)
                if (j->segs.v[i].offset <= off)
                        first = i;
        out = kiln_arena_array(a, j->segs.n - first, sizeof(*out));
        for (i = first; i < j->segs.n; i++) {
                const struct df_segment *s = &j->segs.v[i];
                if (i == first) {
                        out[n].offset = 0;
                        out[n].line = s->line;
                        out[n].line_offset = s->line_offset + (off - s->offset);
                } else {
                        out[n].offset = s->offset - off;
                        out[n].line = s->line;
                        out[n].line_offset = s->line_offset;
                }
                n++;
        }
        node->segments = out;
        node->n_segments = n;
}

/*
 * BuildKit's newNodeFromLine on j->text[off, off+len): keyword, flags, then the arguments by
 * the keyword's rule. Offsets stored in the node are relative to `off`.
 */
static int node_from_text(struct parse_state *ps, const struct joined *j, size_t off, size_t len,
                          struct df_node *node, unsigned depth)
{
        struct kiln_arena *a = &ps->syn->arena;
        const char *text = j->text.buf + off;
        struct vec_args flags = { 0 }, args = { 0 };
        size_t ts, te, kw_end, rest, args_start = len, args_end = len;
        enum arg_rule rule;
        int r;

        node->original = kiln_arena_memdup(a, text, len);
        node->original_len = len;
        node_segments(a, j, off, node);

        df_trim_space(text, len, &ts, &te);
        kw_end = ts;
        while (kw_end < te && !df_is_ws_class(text[kw_end]))
                kw_end++;
        node->keyword = kiln_arena_memdup(a, text + ts, kw_end - ts);
        rule = rule_for(node->keyword);
        if (kw_end < te) {
                size_t at, s2, e2;

                rest = kw_end;
                while (rest < te && df_is_ws_class(text[rest]))
                        rest++;
                at = rest + extract_flags(text + rest, te - rest, rest, &flags);
                df_trim_space(text + at, te - at, &s2, &e2);
                args_start = at + s2;
                args_end = at + e2;
        } else {
                args_start = args_end = te;
        }
        node->args_offset = args_start;
        r = dispatch_args(ps, j, node, rule, text + args_start, args_end - args_start,
                          off + args_start, &args, depth);
        if (r < 0) {
                args_release(&flags);
                args_release(&args);
                return -1;
        }
        /* Offsets were computed against the joined text; make them node-relative. */
        for (size_t i = 0; i < args.n; i++)
                args.v[i].offset -= off;
        node->flags = args_to_arena(a, &flags, &node->n_flags);
        node->args = args_to_arena(a, &args, &node->n_args);
        return 0;
}

/* ---- heredocs ---- */

static bool can_contain_heredoc(const struct df_node *node)
{
        if (df_keyword_is(node->keyword, "onbuild") && node->trigger)
                node = node->trigger;
        if (!df_keyword_is(node->keyword, "run") && !df_keyword_is(node->keyword, "copy") &&
            !df_keyword_is(node->keyword, "add"))
                return false;
        return !node->json;
}

static size_t count_quotes(const char *s)
{
        size_t n = 0;

        for (; *s; s++)
                if (*s == '\'' || *s == '"')
                        n++;
        return n;
}

/* Matches `^(\d*)<<(-?)\s*(.*)$` where the rest has no '<'; returns false otherwise. */
static bool heredoc_marker(const char *w, unsigned *ret_fd, bool *ret_chomp, const char **ret_rest)
{
        const char *p = w;
        unsigned fd = 0;

        while (*p >= '0' && *p <= '9') {
                if (fd < 100000000)
                        fd = fd * 10 + (unsigned) (*p - '0');
                p++;
        }
        if (p[0] != '<' || p[1] != '<')
                return false;
        p += 2;
        *ret_chomp = *p == '-';
        if (*p == '-')
                p++;
        while (is_re_space(*p))
                p++;
        if (strchr(p, '<'))
                return false;
        *ret_fd = fd;
        *ret_rest = p;
        return true;
}

/*
 * BuildKit's ParseHeredoc for one word: 0 with *ret_name NULL when the word is not a heredoc,
 * -1 (PARSE) when its delimiter is malformed.
 */
int df_heredoc_word(const char *w, char **ret_name, unsigned *ret_fd, bool *ret_chomp,
                    bool *ret_expand, struct kiln_error **err)
{
        const char *rest;
        char **plain = NULL, **raw = NULL;
        size_t n_plain = 0, n_raw = 0;
        int r = 0;

        *ret_name = NULL;
        if (!heredoc_marker(w, ret_fd, ret_chomp, &rest) || rest[0] == '\0')
                return 0;
        if (df_expand_words(rest, strlen(rest), '\\', DF_EXPAND_SKIP_UNSET, NULL, &plain, &n_plain,
                            err) < 0)
                return -1;
        if (n_plain != 1)
                goto out;
        if (df_expand_words(rest, strlen(rest), '\\', DF_EXPAND_SKIP_UNSET | DF_EXPAND_RAW_QUOTES,
                            NULL, &raw, &n_raw, err) < 0) {
                r = -1;
                goto out;
        }
        if (n_raw != n_plain) {
                r = kiln_error_new(err, KILN_ERR_PARSE,
                                   "internal lexing of heredoc produced inconsistent results: %s",
                                   rest);
                goto out;
        }
        *ret_expand = count_quotes(plain[0]) == count_quotes(raw[0]);
        *ret_name = xstrdup(plain[0]);
out:
        df_strv_free(plain);
        df_strv_free(raw);
        return r;
}

/* Finds the heredoc markers on an instruction line (quoted markers are not heredocs). */
int df_heredocs_from_line(const char *line, size_t len, struct df_heredoc_spec **ret, size_t *ret_n,
                          struct kiln_error **err)
{
        _cleanup_(kiln_error_freep) struct kiln_error *lex_err = NULL;
        char **words = NULL;
        struct df_heredoc_spec *specs = NULL;
        size_t n_words = 0, n = 0, alloc = 0, i;

        *ret = NULL;
        *ret_n = 0;
        if (df_expand_words(line, len, '\\',
                            DF_EXPAND_RAW_QUOTES | DF_EXPAND_RAW_ESCAPES | DF_EXPAND_SKIP_UNSET,
                            NULL, &words, &n_words, &lex_err) < 0)
                return 0; /* a line that does not lex has no heredocs */
        for (i = 0; i < n_words; i++) {
                _cleanup_free_ char *joined_word = NULL;
                const char *w = words[i];
                struct df_heredoc_spec spec = { 0 };
                const char *rest;

                /* "<< EOF" and "<<- EOF": the delimiter may be a separate word. */
                if (heredoc_marker(w, &spec.fd, &spec.chomp, &rest) && rest[0] == '\0' &&
                    i + 1 < n_words) {
                        joined_word = xasprintf("%s %s", w, words[i + 1]);
                        w = joined_word;
                        i++;
                }
                if (df_heredoc_word(w, &spec.name, &spec.fd, &spec.chomp, &spec.expand, err) < 0) {
                        size_t k;
                        for (k = 0; k < n; k++)
                                free(specs[k].name);
                        free(specs);
                        df_strv_free(words);
                        return -1;
                }
                if (!spec.name)
                        continue;
                XGROW(specs, n + 1, alloc);
                specs[n++] = spec;
        }
        df_strv_free(words);
        *ret = specs;
        *ret_n = n;
        return 0;
}

static size_t trim_leading_tabs(const char *s, size_t len)
{
        size_t i = 0;

        while (i < len && s[i] == '\t')
                i++;
        return i;
}

static int read_heredocs(struct parse_state *ps, const struct joined *j, struct df_node *node,
                         unsigned start_line)
{
        struct df_heredoc_spec *specs = NULL;
        size_t n = 0, i;
        int r = 0;

        /* Only a line with "<<" can start a heredoc; spare the lexer the rest. */
        if (!memmem(j->text.buf, j->text.len, "<<", 2))
                return 0;
        if (df_heredocs_from_line(j->text.buf, j->text.len, &specs, &n, ps->err) < 0) {
                if (ps->err && *ps->err) {
                        unsigned line;
                        size_t byte;
                        position_in_segments(ps->syn, j->segs.v, j->segs.n, 0, &line, &byte);
                        kiln_error_set_position(*ps->err, ps->syn->filename, line,
                                                column_of(ps->syn, line, byte));
                        attach_source(*ps->err, ps->syn);
                }
                return -1;
        }
        if (n == 0)
                return 0;
        node->heredocs = kiln_arena_array(&ps->syn->arena, n, sizeof(*node->heredocs));
        node->n_heredocs = n;
        for (i = 0; i < n; i++) {
                _cleanup_buf_ struct kiln_buf body = KILN_BUF_INIT;
                struct df_heredoc *h = &node->heredocs[i];
                size_t name_len = strlen(specs[i].name);
                bool terminated = false;

                h->name = kiln_arena_strdup(&ps->syn->arena, specs[i].name);
                h->fd = specs[i].fd;
                h->chomp = specs[i].chomp;
                h->expand = specs[i].expand;
                h->start_line = ps->lineno + 1;
                for (;;) {
                        const char *l;
                        size_t ll, t, skip = 0;
                        bool ok;

                        if (read_line(ps, &l, &ll, &ok) < 0) {
                                r = -1;
                                goto out;
                        }
                        if (!ok)
                                break;
                        ps->lineno++;
                        t = trim_newline(l, ll);
                        if (h->chomp)
                                skip = trim_leading_tabs(l, t);
                        if (t - skip == name_len &&
                            memcmp(l + skip, specs[i].name, name_len) == 0) {
                                terminated = true;
                                break;
                        }
                        kiln_buf_add(&body, l, ll, NULL);
                }
                if (!terminated) {
                        r = fail_line(ps, start_line, 1, "unterminated heredoc '%s'",
                                      specs[i].name);
                        goto out;
                }
                h->content = kiln_arena_memdup(&ps->syn->arena, body.buf, body.len);
                h->content_len = body.len;
        }
out:
        for (i = 0; i < n; i++)
                free(specs[i].name);
        free(specs);
        return r;
}

char *df_heredoc_chomp(const char *content, size_t len, size_t *ret_len)
{
        struct kiln_buf out = KILN_BUF_INIT;
        size_t i = 0;

        while (i < len) {
                const char *nl = memchr(content + i, '\n', len - i);
                size_t end = nl ? (size_t) (nl - content) + 1 : len;
                i += trim_leading_tabs(content + i, end - i);
                kiln_buf_add(&out, content + i, end - i, NULL);
                i = end;
        }
        return kiln_buf_detach(&out, ret_len);
}

/* ---- the main loop ---- */

static void index_lines(struct df_syntax *syn)
{
        size_t i, n = 0, alloc = 0;
        size_t *starts = NULL;

        for (i = 0; i < syn->text_len; i++) {
                if (i == 0 || syn->text[i - 1] == '\n') {
                        XGROW(starts, n + 1, alloc);
                        starts[n++] = i;
                }
        }
        syn->line_starts = kiln_arena_array(&syn->arena, n ? n : 1, sizeof(size_t));
        if (n)
                memcpy(syn->line_starts, starts, n * sizeof(size_t));
        syn->n_lines = n;
        free(starts);
}

static int parse_all(struct parse_state *ps, struct df_node **ret_nodes, size_t *ret_n)
{
        struct df_node *nodes = NULL;
        size_t n = 0, alloc = 0;
        struct joined j = { .text = KILN_BUF_INIT };
        int r = 0;

        for (;;) {
                const char *l;
                size_t ll, t, lead, keep;
                bool ok, has_empty = false, eol;
                unsigned start_line;
                struct df_node node;

                if (read_line(ps, &l, &ll, &ok) < 0) {
                        r = -1;
                        break;
                }
                if (!ok)
                        break;
                lead = 0;
                if (ps->lineno == 0 && ll >= 3 && memcmp(l, "\xEF\xBB\xBF", 3) == 0)
                        lead = 3;
                t = trim_newline(l, ll);
                lead += trim_left_space(l + lead, t - lead);
                ps->lineno++;
                start_line = ps->lineno;
                if (check_directive(ps, l + lead, t - lead, start_line, lead) < 0) {
                        r = -1;
                        break;
                }
                if (lead < t && l[lead] == '#')
                        lead = t; /* a comment line */
                keep = continuation(l + lead, t - lead, ps->escape);
                eol = keep == (size_t) -1;
                if (eol && lead == t)
                        continue;

                kiln_buf_reset(&j.text);
                j.segs.n = 0;
                joined_add(&j, l + lead, eol ? t - lead : keep, start_line, lead);
                while (!eol) {
                        size_t cl, ct;

                        if (read_line(ps, &l, &ll, &ok) < 0) {
                                r = -1;
                                goto out;
                        }
                        if (!ok)
                                break;
                        ct = trim_newline(l, ll);
                        if (check_directive(ps, l, ct, ps->lineno + 1, 0) < 0) {
                                r = -1;
                                goto out;
                        }
                        ps->lineno++;
                        if (is_comment(l, ll))
                                continue;
                        if (is_empty_line(l, ll)) {
                                has_empty = true;
                                continue;
                        }
                        cl = continuation(l, ct, ps->escape);
                        eol = cl == (size_t) -1;
                        joined_add(&j, l, eol ? ct : cl, ps->lineno, 0);
                }
                if (has_empty)
                        warn(ps, start_line, 1, "empty continuation line found in: %s", j.text.buf);

                memset(&node, 0, sizeof(node));
                if (node_from_text(ps, &j, 0, j.text.len, &node, 0) < 0) {
                        r = -1;
                        break;
                }
                node.start_line = start_line;
                if (can_contain_heredoc(&node) && read_heredocs(ps, &j, &node, start_line) < 0) {
                        r = -1;
                        break;
                }
                node.end_line = ps->lineno;
                if (node.trigger) {
                        /* An ONBUILD trigger's heredocs belong to the trigger. */
                        node.trigger->start_line = node.start_line;
                        node.trigger->end_line = node.end_line;
                        node.trigger->heredocs = node.heredocs;
                        node.trigger->n_heredocs = node.n_heredocs;
                }
                XGROW(nodes, n + 1, alloc);
                nodes[n++] = node;
        }
out:
        kiln_buf_release(&j.text);
        free(j.segs.v);
        if (r < 0) {
                free(nodes);
                return -1;
        }
        *ret_nodes = nodes;
        *ret_n = n;
        return 0;
}

int df_parse(const char *filename, const char *text, size_t len, struct df_syntax **ret,
             struct kiln_error **err)
{
        _cleanup_(df_syntax_freep) struct df_syntax *syn = xcalloc(1, sizeof(*syn));
        struct parse_state ps = { 0 };
        struct df_node *nodes = NULL;
        size_t n = 0;

        syn->filename = kiln_arena_strdup(&syn->arena, filename ? filename : "Dockerfile");
        syn->text = kiln_arena_memdup(&syn->arena, text, len);
        syn->text_len = len;
        syn->escape = '\\';
        index_lines(syn);

        ps.syn = syn;
        ps.err = err;
        ps.escape = '\\';
        if (parse_all(&ps, &nodes, &n) < 0) {
                free(ps.warnings);
                return -1;
        }
        if (n == 0) {
                free(ps.warnings);
                kiln_error_new(err, KILN_ERR_PARSE, "file with no instructions");
                if (err && *err)
                        kiln_error_set_position(*err, syn->filename, syn->n_lines ? ps.lineno : 0,
                                                syn->n_lines ? 1 : 0);
                return -1;
        }
        syn->nodes = kiln_arena_array(&syn->arena, n, sizeof(*nodes));
        memcpy(syn->nodes, nodes, n * sizeof(*nodes));
        syn->n_nodes = n;
        free(nodes);
        if (ps.n_warnings) {
                syn->warnings = kiln_arena_array(&syn->arena, ps.n_warnings, sizeof(*ps.warnings));
                memcpy(syn->warnings, ps.warnings, ps.n_warnings * sizeof(*ps.warnings));
                syn->n_warnings = ps.n_warnings;
        }
        free(ps.warnings);
        *ret = TAKE_PTR(syn);
        return 0;
}

struct df_syntax *df_syntax_free(struct df_syntax *syn)
{
        if (!syn)
                return NULL;
        kiln_arena_release(&syn->arena);
        free(syn);
        return NULL;
}
