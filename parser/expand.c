/*
 * Word expansion with BuildKit's shell-lexer semantics: quotes, the escape character,
 * $name and ${name...} substitution (- + ? with and without ':', # ## % %% / //) and word
 * splitting after expansion. Invalid UTF-8 bytes pass through unchanged.
 */
#include <stdlib.h>
#include <string.h>

#include "builder/common/strbuf.h"
#include "builder/common/utf8.h"
#include "builder/common/xalloc.h"
#include "parser/parser-internal.h"
#include "parser/parser.h"

#define EOF_RUNE    (-1)
#define MAX_NESTING 200
/* Expansion can multiply text (${X//""/${X//...}} nests): cap what one word may become. */
#define MAX_OUTPUT ((size_t) 1 << 20)
/* Pattern matching costs pattern x value steps; refuse what would take seconds. */
#define MAX_MATCH_WORK ((size_t) 64 << 20)

/* ---- variables ---- */

struct df_var *df_vars_get(const struct df_vars *vars, const char *name)
{
        size_t i;

        if (!vars)
                return NULL;
        for (i = vars->n; i > 0; i--)
                if (strcmp(vars->items[i - 1].name, name) == 0)
                        return &vars->items[i - 1];
        return NULL;
}

void df_vars_setn(struct df_vars *vars, const char *name, size_t name_len, const char *value,
                  size_t value_len)
{
        _cleanup_free_ char *key = xstrndup(name, name_len);
        struct df_var *v = df_vars_get(vars, key);

        if (v) {
                free(v->value);
                v->value = xstrndup(value, value_len);
                return;
        }
        XGROW(vars->items, vars->n + 1, vars->alloc);
        v = &vars->items[vars->n++];
        v->name = TAKE_PTR(key);
        v->value = xstrndup(value, value_len);
        v->used = false;
}

void df_vars_set(struct df_vars *vars, const char *name, const char *value)
{
        df_vars_setn(vars, name, strlen(name), value, strlen(value));
}

void df_vars_set_entry(struct df_vars *vars, const char *entry)
{
        const char *eq = strchr(entry, '=');

        if (eq)
                df_vars_setn(vars, entry, (size_t) (eq - entry), eq + 1, strlen(eq + 1));
        else
                df_vars_setn(vars, entry, strlen(entry), "", 0);
}

void df_vars_unset(struct df_vars *vars, const char *name)
{
        struct df_var *v = df_vars_get(vars, name);
        size_t i;

        if (!v)
                return;
        i = (size_t) (v - vars->items);
        free(v->name);
        free(v->value);
        memmove(&vars->items[i], &vars->items[i + 1], (vars->n - i - 1) * sizeof(*v));
        vars->n--;
}

void df_vars_copy(struct df_vars *dst, const struct df_vars *src)
{
        size_t i;

        df_vars_release(dst);
        for (i = 0; i < src->n; i++)
                df_vars_set(dst, src->items[i].name, src->items[i].value);
}

void df_vars_release(struct df_vars *vars)
{
        size_t i;

        for (i = 0; i < vars->n; i++) {
                free(vars->items[i].name);
                free(vars->items[i].value);
        }
        free(vars->items);
        for (i = 0; i < vars->n_unset_refs; i++)
                free(vars->unset_refs[i]);
        free(vars->unset_refs);
        memset(vars, 0, sizeof(*vars));
}

char **df_strv_free(char **v)
{
        return strv_free(v);
}

/* ---- the lexer ---- */

struct lexer {
        const char *s;
        size_t len;
        size_t pos;
        char escape;
        unsigned flags;
        bool raw_escapes; /* switched on while reading patterns */
        unsigned depth;
        struct df_vars *vars;
        struct kiln_error **err;
};

/* Words being split out of the expansion (BuildKit's wordsStruct). */
struct words {
        struct kiln_buf word;
        char **v;
        size_t n, alloc;
        bool in_word;
};

static int32_t peek(const struct lexer *lx)
{
        uint32_t r;

        if (lx->pos >= lx->len)
                return EOF_RUNE;
        kiln_utf8_decode(lx->s + lx->pos, lx->len - lx->pos, &r);
        return (int32_t) r;
}

/* Consumes one character; ret_start and ret_len give its bytes, which are copied verbatim so
 * that invalid UTF-8 survives. */
static int32_t next(struct lexer *lx, size_t *ret_start, size_t *ret_len)
{
        uint32_t r;
        size_t n;

        if (lx->pos >= lx->len)
                return EOF_RUNE;
        n = kiln_utf8_decode(lx->s + lx->pos, lx->len - lx->pos, &r);
        if (ret_start)
                *ret_start = lx->pos;
        if (ret_len)
                *ret_len = n;
        lx->pos += n;
        return (int32_t) r;
}

/* An error at byte `offset` of the word: the column is the offset, the line is left 0 for the
 * caller to place the word (df_error_locate). */
static int fail_kind(struct lexer *lx, enum kiln_errkind kind, size_t offset, const char *fmt, ...)
        _printf_(4, 5);

static int fail_kind(struct lexer *lx, enum kiln_errkind kind, size_t offset, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        kiln_error_newv(lx->err, kind, fmt, ap);
        va_end(ap);
        if (lx->err && *lx->err)
                (*lx->err)->column = (unsigned) (offset + 1);
        return -1;
}

#define fail_at(lx, offset, ...) fail_kind((lx), KILN_ERR_PARSE, (offset), __VA_ARGS__)

static void words_push(struct words *w)
{
        XGROW(w->v, w->n + 2, w->alloc);
        w->v[w->n++] = kiln_buf_detach(&w->word, NULL);
        w->v[w->n] = NULL;
}

static void words_add_raw(struct words *w, const char *p, size_t n)
{
        if (!w)
                return;
        kiln_buf_add(&w->word, p, n, NULL);
        w->in_word = true;
}

static void words_add_char(struct words *w, uint32_t r, const char *p, size_t n)
{
        if (!w)
                return;
        if (kiln_rune_is_space(r)) {
                if (w->in_word && w->word.len != 0) {
                        words_push(w);
                        w->in_word = false;
                }
                return;
        }
        words_add_raw(w, p, n);
}

/* Adds expanded text whose whitespace splits words. */
static void words_add_string(struct words *w, const char *s, size_t len)
{
        size_t i = 0;

        if (!w)
                return;
        while (i < len) {
                uint32_t r;
                size_t n = kiln_utf8_decode(s + i, len - i, &r);
                words_add_char(w, r, s + i, n);
                i += n;
        }
}

static void words_finish(struct words *w)
{
        if (w->word.len > 0)
                words_push(w);
}

static void words_release(struct words *w)
{
        size_t i;

        kiln_buf_release(&w->word);
        for (i = 0; i < w->n; i++)
                free(w->v[i]);
        free(w->v);
}

static bool is_special_param(int32_t c)
{
        switch (c) {
        case '@':
        case '*':
        case '#':
        case '?':
        case '-':
        case '$':
        case '!':
        case '0':
                return true;
        default:
                return false;
        }
}

/* Reads a name: letters, digits and '_'; a run of digits; or one special parameter. */
static void read_name(struct lexer *lx, struct kiln_buf *name)
{
        for (;;) {
                int32_t c = peek(lx);
                size_t start = 0, n = 0;

                if (c == EOF_RUNE)
                        return;
                if (name->len == 0 && kiln_rune_is_digit((uint32_t) c)) {
                        while ((c = peek(lx)) != EOF_RUNE && kiln_rune_is_digit((uint32_t) c)) {
                                next(lx, &start, &n);
                                kiln_buf_add(name, lx->s + start, n, NULL);
                        }
                        return;
                }
                if (name->len == 0 && is_special_param(c)) {
                        next(lx, &start, &n);
                        kiln_buf_add(name, lx->s + start, n, NULL);
                        return;
                }
                if (!kiln_rune_is_letter((uint32_t) c) && !kiln_rune_is_digit((uint32_t) c) &&
                    c != '_')
                        return;
                next(lx, &start, &n);
                kiln_buf_add(name, lx->s + start, n, NULL);
        }
}

static const struct df_var *lookup(struct lexer *lx, const char *name)
{
        struct df_var *v = df_vars_get(lx->vars, name);
        size_t i;

        if (v) {
                v->used = true;
                return v;
        }
        if (!lx->vars)
                return NULL;
        for (i = 0; i < lx->vars->n_unset_refs; i++)
                if (strcmp(lx->vars->unset_refs[i], name) == 0)
                        return NULL;
        XGROW(lx->vars->unset_refs, lx->vars->n_unset_refs + 1, lx->vars->alloc_unset_refs);
        lx->vars->unset_refs[lx->vars->n_unset_refs++] = xstrdup(name);
        return NULL;
}

static int process_until(struct lexer *lx, int32_t stop, bool raw_escapes, struct kiln_buf *out,
                         struct words *w);

/* ---- shell patterns for # ## % %% / // ---- */

enum tok_kind { TOK_LIT, TOK_ANY, TOK_STAR };

struct pat_tok {
        enum tok_kind kind;
        uint32_t rune;
};

struct runes {
        uint32_t *r;
        size_t *off; /* byte offset of each rune; off[n] == byte length */
        size_t n;
};

static void runes_decode(struct runes *rs, const char *s, size_t len)
{
        size_t i = 0;

        rs->r = xcalloc(len + 1, sizeof(*rs->r));
        rs->off = xcalloc(len + 1, sizeof(*rs->off));
        rs->n = 0;
        while (i < len) {
                size_t n = kiln_utf8_decode(s + i, len - i, &rs->r[rs->n]);
                rs->off[rs->n++] = i;
                i += n;
        }
        rs->off[rs->n] = len;
}

static void runes_release(struct runes *rs)
{
        free(rs->r);
        free(rs->off);
}

/* Translates a pattern: '*' any string, '?' one character, '\' escapes '*', '?' or '\' and
 * is dropped before '}' and '/'; everything else is literal. */
static int pattern_compile(struct lexer *lx, size_t at, const char *pat, size_t len,
                           struct pat_tok **ret, size_t *ret_n)
{
        _cleanup_free_ struct pat_tok *t = xcalloc(len + 1, sizeof(*t));
        size_t i = 0, n = 0;

        while (i < len) {
                uint32_t r;
                i += kiln_utf8_decode(pat + i, len - i, &r);
                if (r == '*') {
                        t[n++].kind = TOK_STAR;
                } else if (r == '?') {
                        t[n++].kind = TOK_ANY;
                } else if (r == '\\') {
                        uint32_t e = 0;
                        if (i < len && (pat[i] == '}' || pat[i] == '/'))
                                continue;
                        if (i < len)
                                i += kiln_utf8_decode(pat + i, len - i, &e);
                        if (i > len || (e != '*' && e != '?' && e != '\\') || e == 0) {
                                char buf[4];
                                size_t bn = e ? kiln_utf8_encode(e, buf) : 0;
                                return fail_at(lx, at,
                                               "invalid pattern (%.*s) in substitution: invalid "
                                               "escape '\\%.*s'",
                                               (int) len, pat, (int) bn, buf);
                        }
                        t[n].kind = TOK_LIT;
                        t[n++].rune = e;
                } else {
                        t[n].kind = TOK_LIT;
                        t[n++].rune = r;
                }
        }
        *ret = TAKE_PTR(t);
        *ret_n = n;
        return 0;
}

/*
 * For every start position i, the end of the match of the whole pattern beginning at i, as a
 * backtracking regular-expression engine (Go's leftmost-first semantics) would choose it, or
 * -1. '*' and '?' do not match a newline, like '.' in Go's regexp. Runs in O(pattern x text).
 */
static long *pattern_match_ends(const struct pat_tok *t, size_t nt, const uint32_t *r, size_t n,
                                bool greedy)
{
        long *cur, *below;
        size_t p, i;

        if ((nt + 1) > MAX_MATCH_WORK / (n + 1))
                return NULL;
        cur = xcalloc(n + 1, sizeof(long));
        below = xcalloc(n + 1, sizeof(long));

        for (i = 0; i <= n; i++)
                below[i] = (long) i;
        for (p = nt; p > 0; p--) {
                const struct pat_tok *tok = &t[p - 1];
                long *tmp;

                for (i = n + 1; i > 0; i--) {
                        size_t at = i - 1;
                        bool can_take = at < n &&
                                        (tok->kind != TOK_LIT ? r[at] != '\n' : r[at] == tok->rune);
                        long res = -1;

                        switch (tok->kind) {
                        case TOK_LIT:
                        case TOK_ANY:
                                res = can_take ? below[at + 1] : -1;
                                break;
                        case TOK_STAR:
                                if (greedy) {
                                        res = can_take ? cur[at + 1] : -1;
                                        if (res < 0)
                                                res = below[at];
                                } else {
                                        res = below[at];
                                        if (res < 0 && can_take)
                                                res = cur[at + 1];
                                }
                                break;
                        }
                        cur[at] = res;
                }
                tmp = below;
                below = cur;
                cur = tmp;
        }
        free(cur);
        return below;
}

/* ${x#p} ${x##p} ${x%p} ${x%%p}: removes the shortest or longest matching prefix or suffix. */
static int trim_affix(struct lexer *lx, size_t at, const char *pat, size_t plen, const char *value,
                      bool greedy, bool suffix, struct kiln_buf *out)
{
        _cleanup_free_ struct pat_tok *t = NULL;
        _cleanup_free_ long *ends = NULL;
        struct runes rs;
        size_t nt, vlen = strlen(value);

        if (pattern_compile(lx, at, pat, plen, &t, &nt) < 0)
                return -1;
        runes_decode(&rs, value, vlen);
        if (suffix) {
                size_t i;
                /* Find the shortest (or longest) rightmost match by matching the reversed
                 * pattern against the reversed text from the left. */
                for (i = 0; i < nt / 2; i++) {
                        struct pat_tok tmp = t[i];
                        t[i] = t[nt - 1 - i];
                        t[nt - 1 - i] = tmp;
                }
                for (i = 0; i < rs.n / 2; i++) {
                        uint32_t tmp = rs.r[i];
                        rs.r[i] = rs.r[rs.n - 1 - i];
                        rs.r[rs.n - 1 - i] = tmp;
                }
        }
        ends = pattern_match_ends(t, nt, rs.r, rs.n, greedy);
        if (!ends) {
                runes_release(&rs);
                return fail_kind(lx, KILN_ERR_LIMIT, at,
                                 "pattern too large for the value it is matched against");
        }
        if (ends[0] < 0) {
                kiln_buf_add(out, value, vlen, NULL);
        } else if (suffix) {
                /* Matched the last ends[0] characters. */
                kiln_buf_add(out, value, rs.off[rs.n - (size_t) ends[0]], NULL);
        } else {
                size_t from = rs.off[ends[0]];
                kiln_buf_add(out, value + from, vlen - from, NULL);
        }
        runes_release(&rs);
        return 0;
}

static bool is_name_char(uint32_t r)
{
        return kiln_rune_is_letter(r) || kiln_rune_is_digit(r) || r == '_';
}

/* Go's Regexp.Expand on a pattern without groups: "$$" is '$', "$0" or "${0}" the match, any
 * other valid reference empty, and a malformed one a literal '$'. */
static void expand_replacement(const char *repl, size_t rlen, const char *match, size_t mlen,
                               struct kiln_buf *out)
{
        size_t i = 0;

        while (i < rlen) {
                size_t j, name_start, name_len;
                bool brace = false;

                if (repl[i] != '$') {
                        const char *dollar = memchr(repl + i, '$', rlen - i);
                        size_t run = dollar ? (size_t) (dollar - repl) - i : rlen - i;
                        kiln_buf_add(out, repl + i, run, NULL);
                        i += run;
                        continue;
                }
                i++;
                if (i < rlen && repl[i] == '$') {
                        kiln_buf_addc(out, '$', NULL);
                        i++;
                        continue;
                }
                j = i;
                if (j < rlen && repl[j] == '{') {
                        brace = true;
                        j++;
                }
                name_start = j;
                while (j < rlen) {
                        uint32_t r;
                        size_t n = kiln_utf8_decode(repl + j, rlen - j, &r);
                        if (!is_name_char(r))
                                break;
                        j += n;
                }
                name_len = j - name_start;
                if (name_len == 0 || (brace && (j >= rlen || repl[j] != '}'))) {
                        kiln_buf_addc(out, '$', NULL);
                        continue;
                }
                if (brace)
                        j++;
                if (name_len == 1 && repl[name_start] == '0')
                        kiln_buf_add(out, match, mlen, NULL);
                i = j;
        }
}

/* ${x/p/r} and ${x//p/r}: replaces the first (or every) longest leftmost match. */
static int replace_pattern(struct lexer *lx, size_t at, const char *pat, size_t plen,
                           const char *repl, size_t rlen, const char *value, bool all,
                           struct kiln_buf *out)
{
        _cleanup_free_ struct pat_tok *t = NULL;
        _cleanup_free_ long *ends = NULL;
        struct runes rs;
        size_t nt, vlen = strlen(value), search = 0, last_end = 0;

        if (pattern_compile(lx, at, pat, plen, &t, &nt) < 0)
                return -1;
        runes_decode(&rs, value, vlen);
        ends = pattern_match_ends(t, nt, rs.r, rs.n, true);
        if (!ends) {
                runes_release(&rs);
                return fail_kind(lx, KILN_ERR_LIMIT, at,
                                 "pattern too large for the value it is matched against");
        }
        while (search <= rs.n) {
                size_t a = search, e;

                while (a <= rs.n && ends[a] < 0)
                        a++;
                if (a > rs.n)
                        break;
                e = (size_t) ends[a];
                kiln_buf_add(out, value + rs.off[last_end], rs.off[a] - rs.off[last_end], NULL);
                /* No replacement for an empty match right after another match. */
                if (e > last_end || a == 0)
                        expand_replacement(repl, rlen, value + rs.off[a], rs.off[e] - rs.off[a],
                                           out);
                last_end = e;
                if (!all || out->overflow)
                        break;
                search = search + 1 > e ? search + 1 : e;
        }
        kiln_buf_add(out, value + rs.off[last_end], vlen - rs.off[last_end], NULL);
        runes_release(&rs);
        return 0;
}

int df_shell_pattern_prefix(const char *pat, size_t plen, const char *value, bool greedy,
                            long *ret_end, struct kiln_error **err)
{
        struct lexer lx = { .err = err };
        _cleanup_free_ struct pat_tok *t = NULL;
        _cleanup_free_ long *ends = NULL;
        struct runes rs;
        size_t nt;

        if (pattern_compile(&lx, 0, pat, plen, &t, &nt) < 0)
                return -1;
        runes_decode(&rs, value, strlen(value));
        ends = pattern_match_ends(t, nt, rs.r, rs.n, greedy);
        if (!ends) {
                runes_release(&rs);
                return kiln_error_new(err, KILN_ERR_LIMIT, "pattern too large");
        }
        *ret_end = ends[0] < 0 ? -1 : (long) rs.off[ends[0]];
        runes_release(&rs);
        return 0;
}

/* ---- $ processing ---- */

/* An output buffer that overflowed holds truncated text: report it as a LIMIT error. */
static int check_output(struct lexer *lx, const struct kiln_buf *b, size_t at)
{
        if (!b->overflow)
                return 0;
        return fail_kind(lx, KILN_ERR_LIMIT, at, "expansion exceeds %zu MiB", MAX_OUTPUT >> 20);
}

static void buf_init(struct kiln_buf *b)
{
        kiln_buf_init(b, MAX_OUTPUT);
}

static int process_dollar_inner(struct lexer *lx, struct kiln_buf *out);

static int process_dollar(struct lexer *lx, struct kiln_buf *out)
{
        size_t start = lx->pos;

        if (process_dollar_inner(lx, out) < 0)
                return -1;
        return check_output(lx, out, start);
}

static int process_dollar_inner(struct lexer *lx, struct kiln_buf *out)
{
        _cleanup_buf_ struct kiln_buf name = KILN_BUF_INIT;
        _cleanup_buf_ struct kiln_buf word = KILN_BUF_INIT;
        size_t start = lx->pos;
        const struct df_var *var;
        bool null_is_unset = false;
        int32_t c;
        size_t cs = 0, cn = 0;
        char mod[16];
        int modlen = 0;

        buf_init(&name);
        buf_init(&word);
        next(lx, NULL, NULL); /* '$' */
        if (peek(lx) != '{') {
                read_name(lx, &name);
                if (name.len == 0)
                        return kiln_buf_addc(out, '$', NULL);
                var = lookup(lx, name.buf);
                if (!var) {
                        if (lx->flags & DF_EXPAND_SKIP_UNSET)
                                kiln_buf_addf(out, NULL, "$%s", name.buf);
                        return 0;
                }
                return kiln_buf_adds(out, var->value, NULL);
        }
        next(lx, NULL, NULL); /* '{' */
        c = peek(lx);
        if (c == EOF_RUNE)
                return fail_at(lx, start, "syntax error: missing '}'");
        if (c == '{' || c == '}' || c == ':')
                return fail_at(lx, start, "syntax error: bad substitution");
        if (++lx->depth > MAX_NESTING)
                return fail_at(lx, start, "substitutions nested more than %d deep", MAX_NESTING);
        read_name(lx, &name);
        c = next(lx, &cs, &cn);
        if (c == EOF_RUNE) {
                lx->depth--;
                return fail_at(lx, start, "syntax error: missing '}'");
        }
        memcpy(mod, lx->s + cs, cn);
        modlen = (int) cn;

        switch (c) {
        case '}':
                lx->depth--;
                var = lookup(lx, name.buf);
                if (!var) {
                        if (lx->flags & DF_EXPAND_SKIP_UNSET)
                                kiln_buf_addf(out, NULL, "${%s}", name.buf);
                        return 0;
                }
                return kiln_buf_adds(out, var->value, NULL);
        case ':':
        case '+':
        case '-':
        case '?':
        case '#':
        case '%': {
                bool raw;

                if (c == ':') {
                        null_is_unset = true;
                        c = next(lx, &cs, &cn);
                        if (c == EOF_RUNE) {
                                lx->depth--;
                                return fail_at(lx, start, "syntax error: missing '}'");
                        }
                        memcpy(mod + modlen, lx->s + cs, cn);
                        modlen += (int) cn;
                }
                raw = c == '#' || c == '%';
                if (null_is_unset && raw) {
                        lx->depth--;
                        return fail_at(lx, start, "unsupported modifier (%.*s) in substitution",
                                       modlen, mod);
                }
                if (process_until(lx, '}', raw, &word, NULL) < 0) {
                        lx->depth--;
                        if (peek(lx) == EOF_RUNE)
                                return fail_at(lx, start, "syntax error: missing '}'");
                        return -1;
                }
                lx->depth--;
                var = lookup(lx, name.buf);
                if (!var && (lx->flags & DF_EXPAND_SKIP_UNSET))
                        return kiln_buf_addf(out, NULL, "${%s%.*s%s}", name.buf, modlen, mod,
                                             word.buf);
                switch (c) {
                case '-':
                        if (!var || (null_is_unset && var->value[0] == '\0'))
                                return kiln_buf_add(out, word.buf, word.len, NULL);
                        return kiln_buf_adds(out, var->value, NULL);
                case '+':
                        if (!var || (null_is_unset && var->value[0] == '\0'))
                                return 0;
                        return kiln_buf_add(out, word.buf, word.len, NULL);
                case '?':
                        if (!var)
                                return fail_at(lx, start, "%s: %s", name.buf,
                                               word.len ? word.buf : "is not allowed to be unset");
                        if (null_is_unset && var->value[0] == '\0')
                                return fail_at(lx, start, "%s: %s", name.buf,
                                               word.len ? word.buf : "is not allowed to be empty");
                        return kiln_buf_adds(out, var->value, NULL);
                case '#':
                case '%': {
                        const char *p = word.buf;
                        size_t plen = word.len;
                        bool greedy = false;

                        if (plen > 0 && p[0] == (char) c) {
                                greedy = true;
                                p++;
                                plen--;
                        }
                        return trim_affix(lx, start, p, plen, var ? var->value : "", greedy,
                                          c == '%', out);
                }
                default:
                        return fail_at(lx, start, "unsupported modifier (%.*s) in substitution",
                                       modlen, mod);
                }
        }
        case '/': {
                _cleanup_buf_ struct kiln_buf repl = KILN_BUF_INIT;
                bool all = peek(lx) == '/';

                buf_init(&repl);
                if (all)
                        next(lx, NULL, NULL);
                if (process_until(lx, '/', true, &word, NULL) < 0) {
                        lx->depth--;
                        if (peek(lx) == EOF_RUNE)
                                return fail_at(lx, start, "syntax error: missing '/' in ${}");
                        return -1;
                }
                if (process_until(lx, '}', true, &repl, NULL) < 0) {
                        lx->depth--;
                        if (peek(lx) == EOF_RUNE)
                                return fail_at(lx, start, "syntax error: missing '}'");
                        return -1;
                }
                lx->depth--;
                var = lookup(lx, name.buf);
                if (!var && (lx->flags & DF_EXPAND_SKIP_UNSET))
                        return kiln_buf_addf(out, NULL, "${%s/%s/%s}", name.buf, word.buf,
                                             repl.buf);
                return replace_pattern(lx, start, word.buf, word.len, repl.buf, repl.len,
                                       var ? var->value : "", all, out);
        }
        default:
                lx->depth--;
                return fail_at(lx, start, "unsupported modifier (%.*s) in substitution", modlen,
                               mod);
        }
}

static int process_single_quote(struct lexer *lx, struct kiln_buf *out)
{
        size_t start = lx->pos, cs = 0, cn = 0;
        int32_t c;

        next(lx, &cs, &cn);
        if (lx->flags & DF_EXPAND_RAW_QUOTES)
                kiln_buf_add(out, lx->s + cs, cn, NULL);
        for (;;) {
                c = next(lx, &cs, &cn);
                if (c == EOF_RUNE)
                        return fail_at(lx, start,
                                       "unexpected end of statement while looking for matching "
                                       "single-quote");
                if (c == '\'') {
                        if (lx->flags & DF_EXPAND_RAW_QUOTES)
                                kiln_buf_add(out, lx->s + cs, cn, NULL);
                        return 0;
                }
                kiln_buf_add(out, lx->s + cs, cn, NULL);
        }
}

static int process_double_quote(struct lexer *lx, struct kiln_buf *out)
{
        size_t start = lx->pos, cs = 0, cn = 0;

        next(lx, &cs, &cn);
        if (lx->flags & DF_EXPAND_RAW_QUOTES)
                kiln_buf_add(out, lx->s + cs, cn, NULL);
        for (;;) {
                int32_t c = peek(lx);

                if (c == EOF_RUNE)
                        return fail_at(lx, start,
                                       "unexpected end of statement while looking for matching "
                                       "double-quote");
                if (c == '"') {
                        next(lx, &cs, &cn);
                        if (lx->flags & DF_EXPAND_RAW_QUOTES)
                                kiln_buf_add(out, lx->s + cs, cn, NULL);
                        return 0;
                }
                if (c == '$') {
                        if (process_dollar(lx, out) < 0)
                                return -1;
                        continue;
                }
                c = next(lx, &cs, &cn);
                if (c == lx->escape) {
                        int32_t after;

                        if (lx->raw_escapes)
                                kiln_buf_add(out, lx->s + cs, cn, NULL);
                        after = peek(lx);
                        if (after == EOF_RUNE)
                                continue; /* reported as an unterminated quote */
                        if (after == '"' || after == '$' || after == lx->escape)
                                next(lx, &cs, &cn);
                }
                kiln_buf_add(out, lx->s + cs, cn, NULL);
        }
}

/* BuildKit's processStopOn: reads until `stop` (consumed) or the end of the word. */
static int process_until(struct lexer *lx, int32_t stop, bool raw_escapes, struct kiln_buf *out,
                         struct words *w)
{
        bool saved_raw = lx->raw_escapes;
        bool quotes = !(lx->flags & DF_EXPAND_NO_QUOTES);
        int r = 0;

        lx->raw_escapes = raw_escapes;
        while (peek(lx) != EOF_RUNE) {
                int32_t c = peek(lx);
                size_t cs = 0, cn = 0;

                if (stop != EOF_RUNE && c == stop) {
                        next(lx, NULL, NULL);
                        goto done;
                }
                if (c == '$' || (quotes && (c == '\'' || c == '"'))) {
                        size_t before = out->len;
                        if (c == '$')
                                r = process_dollar(lx, out);
                        else if (c == '\'')
                                r = process_single_quote(lx, out);
                        else
                                r = process_double_quote(lx, out);
                        if (r < 0)
                                goto done;
                        if (c == '$')
                                words_add_string(w, out->buf + before, out->len - before);
                        else
                                words_add_raw(w, out->buf + before, out->len - before);
                        continue;
                }
                c = next(lx, &cs, &cn);
                if (c == lx->escape) {
                        if (lx->raw_escapes) {
                                words_add_raw(w, lx->s + cs, cn);
                                kiln_buf_add(out, lx->s + cs, cn, NULL);
                        }
                        c = next(lx, &cs, &cn);
                        if (c == EOF_RUNE)
                                break; /* a lone escape at the end is dropped */
                        words_add_raw(w, lx->s + cs, cn);
                } else {
                        words_add_char(w, (uint32_t) c, lx->s + cs, cn);
                }
                kiln_buf_add(out, lx->s + cs, cn, NULL);
        }
        if (stop != EOF_RUNE) {
                char sbuf[4];
                size_t sn = kiln_utf8_encode((uint32_t) stop, sbuf);
                r = fail_at(lx, lx->pos,
                            "unexpected end of statement while looking for matching %.*s", (int) sn,
                            sbuf);
        }
done:
        lx->raw_escapes = saved_raw;
        if (r == 0 &&
            (check_output(lx, out, lx->pos) < 0 || (w && check_output(lx, &w->word, lx->pos) < 0)))
                r = -1;
        return r;
}

static int expand(const char *word, size_t len, char escape, unsigned flags, struct df_vars *vars,
                  struct kiln_buf *out, struct words *w, struct kiln_error **err)
{
        struct lexer lx = {
                .s = word,
                .len = len,
                .escape = escape,
                .flags = flags,
                .raw_escapes = (flags & DF_EXPAND_RAW_ESCAPES) != 0,
                .vars = vars,
                .err = err,
        };

        return process_until(&lx, EOF_RUNE, lx.raw_escapes, out, w);
}

int df_expand_word(const char *word, size_t len, char escape, unsigned flags, struct df_vars *vars,
                   char **ret, size_t *ret_len, struct kiln_error **err)
{
        _cleanup_buf_ struct kiln_buf out = KILN_BUF_INIT;
        size_t i;

        /* Most words have nothing to expand: no '$', quote or escape character. */
        for (i = 0; i < len; i++)
                if (word[i] == '$' || word[i] == '\'' || word[i] == '"' || word[i] == escape)
                        break;
        if (i == len && len <= MAX_OUTPUT) {
                *ret = xmalloc(len + 1);
                memcpy(*ret, word, len);
                (*ret)[len] = '\0';
                if (ret_len)
                        *ret_len = len;
                return 0;
        }
        buf_init(&out);
        if (expand(word, len, escape, flags, vars, &out, NULL, err) < 0)
                return -1;
        *ret = kiln_buf_detach(&out, ret_len);
        return 0;
}

int df_expand_words(const char *word, size_t len, char escape, unsigned flags, struct df_vars *vars,
                    char ***ret_words, size_t *ret_n, struct kiln_error **err)
{
        _cleanup_buf_ struct kiln_buf out = KILN_BUF_INIT;
        struct words w = { .word = KILN_BUF_INIT };

        buf_init(&out);
        buf_init(&w.word);
        if (expand(word, len, escape, flags, vars, &out, &w, err) < 0) {
                words_release(&w);
                return -1;
        }
        words_finish(&w);
        if (!w.v) {
                w.v = xcalloc(1, sizeof(char *));
                w.n = 0;
        }
        *ret_words = w.v;
        *ret_n = w.n;
        kiln_buf_release(&w.word);
        return 0;
}
