/*
 * .dockerignore: reading the file and matching context paths the way BuildKit does
 * (moby/patternmatcher and its ignorefile package).
 *
 * Upstream turns each pattern into a Go regular expression, or into an exact, prefix or suffix
 * string compare when the pattern allows it. We do not build regular expressions: a pattern
 * becomes a short list of tokens run as a small NFA, which accepts the same strings and cannot
 * backtrack; one pass over a path also decides every ancestor directory. The upstream quirks
 * that decide results are kept on purpose:
 *
 *  - A pattern that starts with "**" and is otherwise plain text is a suffix compare, so
 *    "**.txt" matches "a/b.txt" and "**file" matches "myfile".
 *  - "**" before more pattern means "nothing, or anything ending in '/'" rather than "whole
 *    segments", so "a**" + "/b" matches "ax/b"; like Go's '.', it never crosses a newline.
 *  - Upstream escapes only ".+()$" when it builds the regexp (its table for '|', '{' and '}'
 *    loses its bits, being indexed by byte / 8), so in a pattern with wildcards '|' separates
 *    alternatives ("*.js|*.ts"), "{n,m}" repeats and '^' anchors. In a pattern without
 *    wildcards they are ordinary characters, as everything is.
 *  - Syntax is checked with filepath.Match's rules when the matcher is built, but what only
 *    Go's regexp compiler rejects (a backwards class range as in "[Local-Only]", a bad "{n,m}")
 *    fails each time the pattern is tried, because upstream compiles the regexp lazily.
 *  - Paths are cleaned like filepath.Clean: a leading '/' stays and "." never matches.
 *
 * Where upstream's regexp would read a class member or an escaped letter as regexp syntax
 * ("\d", "[?]", "[[:alpha:]]"), we follow filepath.Match, as the conformance data describes:
 * an escaped character is itself and a class holds what is written in it.
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "builder/common/arena.h"
#include "builder/common/cleanup.h"
#include "builder/common/error.h"
#include "builder/common/fd-util.h"
#include "builder/common/utf8.h"
#include "builder/common/xalloc.h"
#include "parser/parser-internal.h"
#include "parser/parser.h"

/* The largest ignore file we read. */
#define IGNORE_FILE_MAX ((size_t) 16 << 20)
/* bufio.Scanner's token limit less the newline: upstream cannot read a file with a longer line. */
#define IGNORE_LINE_MAX 65535
/* The longest pattern df_ignore_new() takes (NFA states are numbered with 32 bits). */
#define PATTERN_MAX ((size_t) 16 << 20)
/* Copies "{n,m}" may add to one pattern. Past it the pattern fails like Go's "expression too
 * large" (Go allows more): it bounds the state set, and so the cost of matching. */
#define REPEAT_TOKENS_MAX ((size_t) 1 << 13)
/* Go's regexp/syntax limit on a repetition count. */
#define REPEAT_MAX 1000

static const char utf8_bom[] = "\xEF\xBB\xBF";

enum tok_kind {
        TOK_LIT,     /* bytes of literal characters */
        TOK_ANY,     /* "?": one character other than '/' */
        TOK_CLASS,   /* "[...]": one character in (or, negated, not in) the ranges */
        TOK_BOL,     /* '^' outside a class: left a regexp anchor upstream, true only at 0 */
        TOK_STAR,    /* "*": any run of characters other than '/' */
        TOK_DSTAR,   /* "**" with more pattern after it: nothing, or up to and including '/' */
        TOK_TAIL,    /* "**" at the end after wildcards: anything without a newline */
        TOK_ALT,     /* '|' while compiling; replaced by the two below */
        TOK_ANYLOOP, /* starts an alternative not anchored at the start: skips anything */
        TOK_ABSORB,  /* ends an alternative not anchored at the end: reaching it is a match */
};

struct tok {
        enum tok_kind kind;
        bool negated;   /* TOK_CLASS */
        bool opt;       /* may be skipped: an optional copy from "{n,m}" */
        bool loop;      /* may repeat: the open end of "{n,}" */
        uint32_t state; /* the token's first NFA state */
        uint32_t off;   /* TOK_LIT: offset in lit; TOK_CLASS: first range */
        uint32_t len;   /* TOK_LIT: bytes; TOK_CLASS: ranges */
        uint32_t run;   /* first token of the run up to this one that never reads a '/' */
};

struct range {
        uint32_t lo, hi;
};

/* How upstream decides a pattern: a string compare, or its regular expression. */
enum pat_kind {
        PAT_EXACT,
        PAT_PREFIX,
        PAT_SUFFIX,
        PAT_REGEX,
};

struct pattern {
        enum pat_kind kind;
        bool exclusion;
        unsigned line;    /* in the ignore file, or 0 */
        const char *bad;  /* why upstream's regexp would not compile: fails when tried */
        const char *text; /* as written, trimmed: for messages */
        size_t text_len;
        const char *body; /* cleaned, without the '!' */
        size_t body_len;
        const char *lit;
        const struct tok *toks;
        uint32_t n_toks;
        const uint32_t *starts; /* PAT_REGEX: first token of each alternative */
        uint32_t n_starts;
        const struct range *ranges;
        uint32_t n_states;   /* PAT_REGEX: the last state accepts */
        const uint32_t *kmp; /* PAT_SUFFIX: failure function of the suffix */
};

struct df_ignore {
        struct kiln_arena arena; /* everything the patterns point to */
        struct pattern *pats;
        size_t n;
        size_t alloc;
        bool exclusions;
        uint32_t max_states;
        const char *source; /* the file the patterns came from, or NULL */
};

/* Scratch space for one compilation, reused from pattern to pattern. */
struct builder {
        struct tok *toks;
        size_t n_toks, alloc_toks;
        struct tok *final;
        size_t n_final, alloc_final;
        uint32_t *starts;
        size_t n_starts, alloc_starts;
        char *lit;
        size_t n_lit, alloc_lit;
        struct range *ranges;
        size_t n_ranges, alloc_ranges;
        size_t n_repeated;     /* tokens added by "{n,m}" */
        bool last_repeat;      /* the last regexp item was a repetition */
        size_t n_alts;         /* '|' seen so far */
        bool unanchored_start; /* "{0...}" made the leading '^' of the regexp optional */
        bool bad;
        char why[256];
};

static void builder_reset(struct builder *b)
{
        b->n_toks = b->n_final = b->n_starts = b->n_lit = b->n_ranges = 0;
        b->n_repeated = 0;
        b->last_repeat = false;
        b->n_alts = 0;
        b->unanchored_start = false;
        b->bad = false;
}

static void builder_release(struct builder *b)
{
        free(b->toks);
        free(b->final);
        free(b->starts);
        free(b->lit);
        free(b->ranges);
}

/* Records why upstream's regexp would fail to compile; the first reason wins. */
_printf_(2, 3) static void set_bad(struct builder *b, const char *fmt, ...)
{
        va_list ap;

        if (b->bad)
                return;
        b->bad = true;
        va_start(ap, fmt);
        vsnprintf(b->why, sizeof(b->why), fmt, ap);
        va_end(ap);
}

/* ---------------------------------------------------------------------------------------- */
/* Text helpers                                                                               */
/* ---------------------------------------------------------------------------------------- */

/* Go's strings.TrimSpace: Unicode white space off both ends. */
static void trim_space(const char **s, size_t *len)
{
        size_t start, end;

        df_trim_space(*s, *len, &start, &end);
        *s += start;
        *len = end - start;
}

/* Go's path/filepath.Clean for '/' separators. Returns a malloc'd string of *ret_len bytes. */
static char *path_clean(const char *path, size_t n, size_t *ret_len)
{
        size_t r = 0, w = 0, dotdot = 0;
        bool rooted;
        char *out;

        out = xmalloc(n + 2);
        rooted = n > 0 && path[0] == '/';
        if (rooted) {
                out[w++] = '/';
                r = 1;
                dotdot = 1;
        }
        while (r < n) {
                if (path[r] == '/') {
                        r++;
                } else if (path[r] == '.' && (r + 1 == n || path[r + 1] == '/')) {
                        r++;
                } else if (path[r] == '.' && path[r + 1] == '.' &&
                           (r + 2 == n || path[r + 2] == '/')) {
                        r += 2;
                        if (w > dotdot) {
                                w--;
                                while (w > dotdot && out[w] != '/')
                                        w--;
                        } else if (!rooted) {
                                if (w > 0)
                                        out[w++] = '/';
                                out[w++] = '.';
                                out[w++] = '.';
                                dotdot = w;
                        }
                } else {
                        if (w != (rooted ? 1u : 0u))
                                out[w++] = '/';
                        while (r < n && path[r] != '/')
                                out[w++] = path[r++];
                }
        }
        if (w == 0)
                out[w++] = '.';
        out[w] = '\0';
        *ret_len = w;
        return out;
}

/* ---------------------------------------------------------------------------------------- */
/* Compiling patterns                                                                         */
/* ---------------------------------------------------------------------------------------- */

static void push_tok(struct builder *b, struct tok t)
{
        XGROW(b->toks, b->n_toks + 1, b->alloc_toks);
        b->toks[b->n_toks++] = t;
}

static void emit(struct builder *b, enum tok_kind kind)
{
        /* "**" twice accepts the same as once. */
        if (kind == TOK_DSTAR && b->n_toks > 0 && b->toks[b->n_toks - 1].kind == kind)
                return;
        push_tok(b, (struct tok){ .kind = kind });
}

static void emit_rune(struct builder *b, uint32_t r)
{
        struct tok *last = b->n_toks > 0 ? &b->toks[b->n_toks - 1] : NULL;
        char enc[4];
        size_t k = kiln_utf8_encode(r, enc);

        /* Extend the last literal unless a repetition owns it. */
        if (!last || last->kind != TOK_LIT || last->opt || last->loop ||
            last->off + last->len != b->n_lit) {
                push_tok(b, (struct tok){ .kind = TOK_LIT, .off = (uint32_t) b->n_lit });
                last = &b->toks[b->n_toks - 1];
        }
        XGROW(b->lit, b->n_lit + k, b->alloc_lit);
        memcpy(b->lit + b->n_lit, enc, k);
        b->n_lit += k;
        last->len += (uint32_t) k;
}

/* filepath.Match's getEsc: one class character, perhaps escaped. Leaves *i on what follows,
 * which always exists on success. Returns NULL or why the class is malformed. */
static const char *class_char(const char *p, size_t n, size_t *i, bool range_end, uint32_t *ret)
{
        size_t k;

        if (*i >= n)
                return "unclosed character class";
        if (p[*i] == '-')
                return "unescaped '-' in character class";
        if (p[*i] == ']')
                return range_end ? "missing end of range in character class"
                                 : "empty character class";
        if (p[*i] == '\\') {
                (*i)++;
                if (*i >= n)
                        return "unclosed character class";
        }
        k = kiln_utf8_decode(p + *i, n - *i, ret);
        if (*ret == KILN_RUNE_ERROR && k == 1)
                return "invalid UTF-8 in character class";
        *i += k;
        if (*i >= n)
                return "unclosed character class";
        return NULL;
}

static int range_cmp(const void *a, const void *b)
{
        const struct range *x = a, *y = b;

        return x->lo < y->lo ? -1 : x->lo > y->lo;
}

static void add_range(struct builder *b, uint32_t lo, uint32_t hi)
{
        if (lo > hi) {
                char l[4], h[4];
                size_t ll = kiln_utf8_encode(lo, l), hl = kiln_utf8_encode(hi, h);

                /* Go's regexp.Compile rejects it; the range would match nothing anyway. */
                set_bad(b, "character class range '%.*s-%.*s' is backwards", (int) ll, l, (int) hl,
                        h);
                return;
        }
        XGROW(b->ranges, b->n_ranges + 1, b->alloc_ranges);
        b->ranges[b->n_ranges++] = (struct range){ lo, hi };
}

/* Sorts and merges the class's ranges so that matching can search them. */
static void finish_class(struct builder *b, size_t first, bool negated)
{
        size_t n = b->n_ranges - first, i, w = 0;

        if (n > 0) {
                struct range *r = b->ranges + first;

                qsort(r, n, sizeof(*r), range_cmp);
                /* Runes stop at U+10FFFF, so hi + 1 cannot overflow. */
                for (i = 0; i < n; i++) {
                        if (w > 0 && r[i].lo <= r[w - 1].hi + 1) {
                                if (r[i].hi > r[w - 1].hi)
                                        r[w - 1].hi = r[i].hi;
                        } else {
                                r[w++] = r[i];
                        }
                }
        }
        b->n_ranges = first + w;
        push_tok(b, (struct tok){ .kind = TOK_CLASS,
                                  .negated = negated,
                                  .off = (uint32_t) first,
                                  .len = (uint32_t) w });
}

/* Parses the class that starts at p[*i] == '[' with filepath.Match's rules. With a builder,
 * adds it as a TOK_CLASS. Returns NULL or why the class is malformed. */
static const char *parse_class(const char *p, size_t n, size_t *i, struct builder *b)
{
        size_t first = b ? b->n_ranges : 0, nrange;
        bool negated = false;
        const char *why;

        (*i)++;
        if (*i < n && p[*i] == '^') {
                negated = true;
                (*i)++;
        }
        for (nrange = 0;; nrange++) {
                uint32_t lo, hi;

                if (*i < n && p[*i] == ']' && nrange > 0) {
                        (*i)++;
                        break;
                }
                why = class_char(p, n, i, false, &lo);
                if (why)
                        return why;
                hi = lo;
                if (p[*i] == '-') {
                        (*i)++;
                        why = class_char(p, n, i, true, &hi);
                        if (why)
                                return why;
                }
                if (b)
                        add_range(b, lo, hi);
        }
        if (b)
                finish_class(b, first, negated);
        return NULL;
}

/* The check upstream makes with filepath.Match(pattern, "."): every class well formed and no
 * trailing backslash. Returns NULL or why the pattern is malformed. */
static const char *check_syntax(const char *p, size_t n)
{
        size_t i = 0;
        const char *why;

        while (i < n) {
                if (p[i] == '\\') {
                        if (i + 1 >= n)
                                return "trailing backslash";
                        i += 2;
                } else if (p[i] == '[') {
                        why = parse_class(p, n, &i, NULL);
                        if (why)
                                return why;
                } else {
                        i++;
                }
        }
        return NULL;
}

/* Go's regexp/syntax parseInt: digits without a leading zero; -1 when too big. */
static bool parse_count(const char *p, size_t n, size_t *i, long *ret)
{
        long v = 0;

        if (*i >= n || p[*i] < '0' || p[*i] > '9')
                return false;
        if (*i + 1 < n && p[*i] == '0' && p[*i + 1] >= '0' && p[*i + 1] <= '9')
                return false;
        for (; *i < n && p[*i] >= '0' && p[*i] <= '9'; (*i)++) {
                if (v >= 100000000 || v < 0)
                        v = -1;
                else
                        v = v * 10 + (p[*i] - '0');
        }
        *ret = v;
        return true;
}

/* Go's regexp/syntax parseRepeat on "{n}", "{n,}" or "{n,m}" at p[*i]; max is -1 for "{n,}". */
static bool parse_repeat(const char *p, size_t n, size_t *i, long *ret_min, long *ret_max)
{
        size_t j = *i + 1;
        long min, max;

        if (!parse_count(p, n, &j, &min) || j >= n)
                return false;
        if (p[j] != ',') {
                max = min;
        } else {
                j++;
                if (j >= n)
                        return false;
                if (p[j] == '}') {
                        max = -1;
                } else {
                        if (!parse_count(p, n, &j, &max))
                                return false;
                        if (max < 0)
                                min = -1;
                }
        }
        if (j >= n || p[j] != '}')
                return false;
        *i = j + 1;
        *ret_min = min;
        *ret_max = max;
        return true;
}

/*
 * Applies "{min,max}" to the last item of the regexp as Go's regexp/syntax would: an item that
 * is itself a repetition ("*", "**") is an error, as is nothing at all after a '|'. At the very
 * start it repeats the regexp's own leading '^', which "{0...}" makes optional.
 */
static void apply_repeat(struct builder *b, const char *text, size_t len, long min, long max)
{
        struct tok atom, *last;
        size_t count, i;

        if (min < 0 || min > REPEAT_MAX || max > REPEAT_MAX || (max >= 0 && min > max)) {
                set_bad(b, "invalid repeat count '%.*s'", (int) len, text);
                return;
        }
        if (b->last_repeat) {
                set_bad(b, "invalid nested repetition operator '%.*s'", (int) len, text);
                return;
        }
        if (b->n_toks == 0 || b->toks[b->n_toks - 1].kind == TOK_ALT) {
                if (b->n_alts > 0)
                        set_bad(b, "missing argument to repetition operator '%.*s'", (int) len,
                                text);
                else if (min == 0)
                        b->unanchored_start = true;
                return;
        }
        last = &b->toks[b->n_toks - 1];
        if (last->kind == TOK_LIT) {
                /* Only the last character of a literal repeats. */
                uint32_t start = last->len - 1;

                while (start > 0 && ((unsigned char) b->lit[last->off + start] & 0xC0) == 0x80)
                        start--;
                atom = (struct tok){ .kind = TOK_LIT,
                                     .off = last->off + start,
                                     .len = last->len - start };
                last->len = start;
                if (last->len == 0)
                        b->n_toks--;
        } else {
                atom = *last;
                b->n_toks--;
        }
        count = (size_t) min + (max < 0 ? 1 : (size_t) (max - min));
        if (b->n_repeated + count > REPEAT_TOKENS_MAX) {
                set_bad(b, "expression too large");
                return;
        }
        b->n_repeated += count;
        for (i = 0; i < count; i++) {
                struct tok t = atom;

                t.opt = i >= (size_t) min;
                t.loop = max < 0 && i >= (size_t) min;
                push_tok(b, t);
        }
}

/*
 * Mirrors upstream's translation of a pattern (already checked) into a regular expression,
 * including how it picks a string compare instead: any wildcard makes it a regexp, a "**" at
 * the very start makes it a suffix compare unless a wildcard follows, and a plain pattern that
 * ends in "**" is a prefix compare. Upstream escapes only ".+()$" (its escape table drops bits
 * for bytes past 63), so in a regexp '^' anchors, '|' separates alternatives and "{n,m}"
 * repeats; we keep that. Classes and '\' follow filepath.Match, as documented upstream.
 */
static enum pat_kind translate(const char *p, size_t n, struct builder *b)
{
        enum pat_kind kind = PAT_EXACT;
        bool first = true;
        size_t i = 0;

        /* Upstream reads the pattern with text/scanner, which skips a leading byte order mark. */
        if (n >= 3 && memcmp(p, utf8_bom, 3) == 0)
                i = 3;
        while (i < n) {
                bool at_start = first, repeat = false;
                size_t at = i;
                long min, max;
                uint32_t r;

                first = false;
                switch (p[i]) {
                case '*':
                        repeat = true;
                        if (i + 1 < n && p[i + 1] == '*') {
                                i += 2;
                                if (i < n && p[i] == '/')
                                        i++;
                                if (i < n) {
                                        emit(b, TOK_DSTAR);
                                        kind = PAT_REGEX;
                                } else if (kind == PAT_EXACT) {
                                        kind = PAT_PREFIX;
                                } else {
                                        emit(b, TOK_TAIL);
                                        kind = PAT_REGEX;
                                }
                                if (at_start)
                                        kind = PAT_SUFFIX;
                        } else {
                                i++;
                                emit(b, TOK_STAR);
                                kind = PAT_REGEX;
                        }
                        break;
                case '?':
                        i++;
                        emit(b, TOK_ANY);
                        kind = PAT_REGEX;
                        break;
                case '\\':
                        i++;
                        i += kiln_utf8_decode(p + i, n - i, &r);
                        emit_rune(b, r);
                        kind = PAT_REGEX;
                        break;
                case '[':
                        parse_class(p, n, &i, b);
                        kind = PAT_REGEX;
                        break;
                case ']':
                        i++;
                        emit_rune(b, ']');
                        kind = PAT_REGEX;
                        break;
                case '^':
                        i++;
                        emit(b, TOK_BOL);
                        break;
                case '|':
                        i++;
                        emit(b, TOK_ALT);
                        b->n_alts++;
                        break;
                case '{':
                        if (parse_repeat(p, n, &i, &min, &max)) {
                                apply_repeat(b, p + at, i - at, min, max);
                                repeat = true;
                        } else {
                                i++;
                                emit_rune(b, '{');
                        }
                        break;
                default:
                        i += kiln_utf8_decode(p + i, n - i, &r);
                        emit_rune(b, r);
                        break;
                }
                b->last_repeat = repeat;
        }
        return kind;
}

static void push_final(struct builder *b, struct tok t)
{
        XGROW(b->final, b->n_final + 1, b->alloc_final);
        b->final[b->n_final++] = t;
}

static bool class_has(const struct range *r, uint32_t n, uint32_t c)
{
        uint32_t lo = 0, hi = n;

        while (lo < hi) {
                uint32_t mid = lo + (hi - lo) / 2;

                if (c < r[mid].lo)
                        hi = mid;
                else if (c > r[mid].hi)
                        lo = mid + 1;
                else
                        return true;
        }
        return false;
}

/* Whether a token can never read a '/'. */
static bool slash_free(const struct builder *b, const struct tok *t)
{
        switch (t->kind) {
        case TOK_LIT:
                return !memchr(b->lit + t->off, '/', t->len);
        case TOK_ANY:
        case TOK_STAR:
        case TOK_BOL:
                return true;
        case TOK_CLASS:
                return class_has(b->ranges + t->off, t->len, '/') == t->negated;
        case TOK_DSTAR:
        case TOK_TAIL:
        case TOK_ALT:
        case TOK_ANYLOOP:
        case TOK_ABSORB:
                return false;
        }
        return false;
}

/*
 * Lays the tokens out for the NFA. "^A|B|C$" anchors A at the start only and C at the end
 * only, so every alternative but the first starts with a skip-anything loop and every one but
 * the last ends in a state that accepts whatever follows. Then numbers the states.
 */
static uint32_t finish_regex(struct builder *b)
{
        uint32_t states = 0, run = 0;
        size_t i;

        for (i = 0; i <= b->n_toks; i++) {
                if (i == 0) {
                        XGROW(b->starts, b->n_starts + 1, b->alloc_starts);
                        b->starts[b->n_starts++] = 0;
                        if (b->unanchored_start)
                                push_final(b, (struct tok){ .kind = TOK_ANYLOOP });
                }
                if (i == b->n_toks)
                        break;
                if (b->toks[i].kind != TOK_ALT) {
                        push_final(b, b->toks[i]);
                        continue;
                }
                push_final(b, (struct tok){ .kind = TOK_ABSORB });
                XGROW(b->starts, b->n_starts + 1, b->alloc_starts);
                b->starts[b->n_starts++] = (uint32_t) b->n_final;
                push_final(b, (struct tok){ .kind = TOK_ANYLOOP });
        }
        for (i = 0; i < b->n_final; i++) {
                struct tok *t = &b->final[i];

                t->state = states;
                t->run = run;
                if (!slash_free(b, t))
                        run = (uint32_t) i + 1;
                switch (t->kind) {
                case TOK_LIT:
                        states += t->len;
                        break;
                case TOK_DSTAR:
                        states += 2;
                        break;
                case TOK_ANY:
                case TOK_CLASS:
                case TOK_BOL:
                case TOK_STAR:
                case TOK_TAIL:
                case TOK_ALT:
                case TOK_ANYLOOP:
                case TOK_ABSORB:
                        states += 1;
                        break;
                }
        }
        return states + 1;
}

static void *arena_copy(struct kiln_arena *a, const void *p, size_t size)
{
        void *q = kiln_arena_alloc(a, size);

        if (size)
                memcpy(q, p, size);
        return q;
}

static uint32_t *kmp_table(struct kiln_arena *a, const char *s, size_t n)
{
        uint32_t *f = kiln_arena_array(a, n, sizeof(*f));
        size_t i, k = 0;

        for (i = 1; i < n; i++) {
                while (k > 0 && s[i] != s[k])
                        k = f[k - 1];
                if (s[i] == s[k])
                        k++;
                f[i] = (uint32_t) k;
        }
        return f;
}

static int pattern_error(struct kiln_error **err, const char *text, size_t len, const char *why)
{
        return kiln_error_new(err, KILN_ERR_INVALID, ".dockerignore: invalid pattern '%.*s': %s",
                              (int) len, text, why);
}

/* Compiles one pattern as upstream's New does: trim, drop if empty, clean, split off '!'. */
static int compile_one(struct df_ignore *ig, struct builder *b, const char *raw, unsigned line,
                       struct kiln_error **err)
{
        _cleanup_free_ char *clean = NULL;
        size_t len = strlen(raw), clean_len, body_len;
        const char *s = raw, *body, *why;
        struct pattern *pat;
        bool exclusion;

        trim_space(&s, &len);
        if (len == 0)
                return 0;
        if (len > PATTERN_MAX)
                return kiln_error_new(err, KILN_ERR_LIMIT,
                                      ".dockerignore: pattern longer than %zu bytes", PATTERN_MAX);
        clean = path_clean(s, len, &clean_len);
        body = clean;
        body_len = clean_len;
        exclusion = clean[0] == '!';
        if (exclusion) {
                if (clean_len == 1)
                        return pattern_error(err, s, len, "'!' must be followed by a pattern");
                body++;
                body_len--;
        }
        why = check_syntax(body, body_len);
        if (why)
                return pattern_error(err, s, len, why);

        XGROW(ig->pats, ig->n + 1, ig->alloc);
        pat = &ig->pats[ig->n++];
        *pat = (struct pattern){ .exclusion = exclusion, .line = line };
        pat->text = kiln_arena_memdup(&ig->arena, s, len);
        pat->text_len = len;
        pat->body = kiln_arena_memdup(&ig->arena, body, body_len);
        pat->body_len = body_len;
        if (exclusion)
                ig->exclusions = true;

        builder_reset(b);
        pat->kind = translate(body, body_len, b);
        switch (pat->kind) {
        case PAT_EXACT:
        case PAT_PREFIX:
                break;
        case PAT_SUFFIX:
                if (body_len > 2)
                        pat->kmp = kmp_table(&ig->arena, pat->body + 2, body_len - 2);
                break;
        case PAT_REGEX:
                /* Upstream compiles the regexp the first time the pattern is tried. */
                if (b->bad) {
                        pat->bad = kiln_arena_strdup(&ig->arena, b->why);
                        break;
                }
                pat->n_states = finish_regex(b);
                pat->n_toks = (uint32_t) b->n_final;
                pat->toks = arena_copy(&ig->arena, b->final, b->n_final * sizeof(*b->final));
                pat->starts = arena_copy(&ig->arena, b->starts, b->n_starts * sizeof(*b->starts));
                pat->n_starts = (uint32_t) b->n_starts;
                pat->lit = kiln_arena_memdup(&ig->arena, b->lit, b->n_lit);
                pat->ranges = arena_copy(&ig->arena, b->ranges, b->n_ranges * sizeof(*b->ranges));
                if (pat->n_states > ig->max_states)
                        ig->max_states = pat->n_states;
                break;
        }
        return 0;
}

/* Builds a matcher. With `source`, errors are positioned at lines[i] of that file. */
static int ignore_build(const char *const *patterns, const unsigned *lines, size_t n,
                        const char *source, struct df_ignore **ret, struct kiln_error **err)
{
        _cleanup_(df_ignore_freep) struct df_ignore *ig = xcalloc(1, sizeof(*ig));
        _cleanup_(builder_release) struct builder b = { 0 };
        size_t i;

        if (source)
                ig->source = kiln_arena_strdup(&ig->arena, source);
        for (i = 0; i < n; i++) {
                if (!patterns[i])
                        continue;
                if (compile_one(ig, &b, patterns[i], lines ? lines[i] : 0, err) < 0) {
                        if (source && err && *err)
                                kiln_error_set_position(*err, source, lines ? lines[i] : 0, 0);
                        return -1;
                }
        }
        *ret = TAKE_PTR(ig);
        return 0;
}

int df_ignore_new(const char *const *patterns, size_t n, struct df_ignore **ret,
                  struct kiln_error **err)
{
        return ignore_build(patterns, NULL, n, NULL, ret, err);
}

struct df_ignore *df_ignore_free(struct df_ignore *ig)
{
        if (!ig)
                return NULL;
        kiln_arena_release(&ig->arena);
        free(ig->pats);
        free(ig);
        return NULL;
}

size_t df_ignore_count(const struct df_ignore *ig)
{
        return ig ? ig->n : 0;
}

bool df_ignore_has_exclusions(const struct df_ignore *ig)
{
        return ig && ig->exclusions;
}

/* ---------------------------------------------------------------------------------------- */
/* Matching                                                                                   */
/* ---------------------------------------------------------------------------------------- */

/*
 * Whether upstream tries the prefix path[0..len): the path itself and each ancestor directory,
 * that is every prefix that ends before a '/' (the empty one too, for a rooted path), and "/"
 * when the parent is the root. `last` is the offset of the last '/', or SIZE_MAX.
 */
static bool is_candidate(const char *path, size_t n, size_t last, size_t len)
{
        if (len > n)
                return false;
        if (len == n || path[len] == '/')
                return true;
        return len == 1 && last == 0;
}

static bool match_exact(const struct pattern *pat, const char *path, size_t n, size_t last)
{
        return is_candidate(path, n, last, pat->body_len) &&
               memcmp(path, pat->body, pat->body_len) == 0;
}

/* strings.HasPrefix on the path or an ancestor is the same as on the path. */
static bool match_prefix(const struct pattern *pat, const char *path, size_t n)
{
        size_t len = pat->body_len - 2;

        return len <= n && memcmp(path, pat->body, len) == 0;
}

/* strings.HasSuffix(candidate, suffix), or candidate == suffix[1:] when that starts with '/'. */
static bool match_suffix(const struct pattern *pat, const char *path, size_t n, size_t last)
{
        const char *suf = pat->body + 2;
        size_t len = pat->body_len - 2, k = 0, i;

        if (len == 0)
                return true;
        if (suf[0] == '/' && is_candidate(path, n, last, len - 1) &&
            memcmp(path, suf + 1, len - 1) == 0)
                return true;
        for (i = 0;; i++) {
                if (k == len) {
                        if (is_candidate(path, n, last, i))
                                return true;
                        k = pat->kmp[k - 1];
                }
                if (i == n)
                        return false;
                while (k > 0 && path[i] != suf[k])
                        k = pat->kmp[k - 1];
                if (path[i] == suf[k])
                        k++;
        }
}

struct active {
        uint32_t tok;
        uint32_t off;
};

/* NFA simulation scratch, sized for the pattern with the most states. */
struct nfa {
        uint32_t *mark; /* generation in which each state was added */
        struct active *cur, *next;
        size_t cap;
        uint32_t gen;
        bool at_start; /* nothing read yet: '^' holds */
        bool absorbed; /* an alternative matched with the rest of the path free */
};

static void nfa_release(struct nfa *m)
{
        free(m->mark);
        free(m->cur);
        free(m->next);
}

static void nfa_next_gen(struct nfa *m)
{
        if (++m->gen == 0) {
                memset(m->mark, 0, m->cap * sizeof(*m->mark));
                m->gen = 1;
        }
}

static void nfa_push(struct nfa *m, const struct pattern *pat, struct active *list, size_t *n,
                     uint32_t tok, uint32_t off)
{
        uint32_t id = tok < pat->n_toks ? pat->toks[tok].state + off : pat->n_states - 1;

        if (m->mark[id] == m->gen)
                return;
        m->mark[id] = m->gen;
        list[(*n)++] = (struct active){ tok, off };
        if (tok < pat->n_toks && pat->toks[tok].kind == TOK_ABSORB)
                m->absorbed = true;
}

/* Adds a state and everything reachable from it without reading (no recursion: the list is
 * its own work queue). */
static void nfa_add(struct nfa *m, const struct pattern *pat, struct active *list, size_t *n,
                    uint32_t tok, uint32_t off)
{
        const struct tok *t;
        size_t i = *n;

        nfa_push(m, pat, list, n, tok, off);
        for (; i < *n; i++) {
                struct active s = list[i];

                if (s.tok >= pat->n_toks || s.off != 0)
                        continue;
                t = &pat->toks[s.tok];
                if (t->opt)
                        nfa_push(m, pat, list, n, s.tok + 1, 0);
                switch (t->kind) {
                case TOK_STAR:
                case TOK_TAIL:
                case TOK_ANYLOOP:
                        nfa_push(m, pat, list, n, s.tok + 1, 0);
                        break;
                case TOK_DSTAR:
                        nfa_push(m, pat, list, n, s.tok, 1);
                        nfa_push(m, pat, list, n, s.tok + 1, 0);
                        break;
                case TOK_BOL:
                        if (m->at_start)
                                nfa_push(m, pat, list, n, s.tok + 1, 0);
                        break;
                case TOK_LIT:
                case TOK_ANY:
                case TOK_CLASS:
                case TOK_ALT:
                case TOK_ABSORB:
                        break;
                }
        }
}

static void nfa_step(struct nfa *m, const struct pattern *pat, struct active s, uint32_t r,
                     const char *enc, uint32_t enc_len, size_t *n_next)
{
        const struct tok *t;
        uint32_t done;

        if (s.tok >= pat->n_toks)
                return;
        t = &pat->toks[s.tok];
        /* Where a token goes once it has read a whole character: on, or round again. */
        done = t->loop ? s.tok : s.tok + 1;
        switch (t->kind) {
        case TOK_LIT:
                if (s.off + enc_len <= t->len &&
                    (enc_len == 1 ? pat->lit[t->off + s.off] == enc[0]
                                  : memcmp(pat->lit + t->off + s.off, enc, enc_len) == 0)) {
                        if (s.off + enc_len == t->len)
                                nfa_add(m, pat, m->next, n_next, done, 0);
                        else
                                nfa_add(m, pat, m->next, n_next, s.tok, s.off + enc_len);
                }
                break;
        case TOK_ANY:
                if (r != '/')
                        nfa_add(m, pat, m->next, n_next, done, 0);
                break;
        case TOK_CLASS:
                if (class_has(pat->ranges + t->off, t->len, r) != t->negated)
                        nfa_add(m, pat, m->next, n_next, done, 0);
                break;
        case TOK_ANYLOOP:
                nfa_add(m, pat, m->next, n_next, s.tok, 0);
                break;
        case TOK_STAR:
                if (r != '/')
                        nfa_add(m, pat, m->next, n_next, s.tok, 0);
                break;
        case TOK_TAIL:
                if (r != '\n')
                        nfa_add(m, pat, m->next, n_next, s.tok, 0);
                break;
        case TOK_DSTAR:
                if (s.off == 1) {
                        if (r != '\n')
                                nfa_add(m, pat, m->next, n_next, s.tok, 1);
                        if (r == '/')
                                nfa_add(m, pat, m->next, n_next, s.tok + 1, 0);
                }
                break;
        case TOK_BOL:
        case TOK_ALT:
        case TOK_ABSORB:
                break;
        }
}

/*
 * Keeps the state set small. When a "*" is active, every active state earlier in the same run
 * of tokens that never read a '/' is redundant: whatever such a state could still go on to
 * match must pass through that "*" at some later point, reading no '/' on the way, and the "*"
 * itself can read that same text. Without this, "*a*a*a...b" keeps a state per "*".
 */
static size_t prune(const struct pattern *pat, struct active *list, size_t n)
{
        uint32_t star = UINT32_MAX, run;
        size_t i, w = 0;

        for (i = 0; i < n; i++) {
                const struct active *s = &list[i];

                if (s->tok < pat->n_toks && s->off == 0 && pat->toks[s->tok].kind == TOK_STAR &&
                    (star == UINT32_MAX || s->tok > star))
                        star = s->tok;
        }
        if (star == UINT32_MAX || pat->toks[star].run == star)
                return n;
        run = pat->toks[star].run;
        for (i = 0; i < n; i++)
                if (list[i].tok < run || list[i].tok >= star)
                        list[w++] = list[i];
        return w;
}

/* Runs the pattern over the path once; the states after each prefix tell whether that prefix
 * (an ancestor) matches, so the path and all its ancestors cost one pass. */
static bool match_regex(const struct pattern *pat, struct nfa *m, const char *path, size_t n,
                        size_t last)
{
        uint32_t accept = pat->n_states - 1, j;
        size_t n_cur = 0, i = 0;

        nfa_next_gen(m);
        m->at_start = true;
        m->absorbed = false;
        for (j = 0; j < pat->n_starts; j++)
                nfa_add(m, pat, m->cur, &n_cur, pat->starts[j], 0);
        m->at_start = false;
        for (;;) {
                struct active *swap;
                size_t n_next = 0, k;
                char enc[4];
                uint32_t r, enc_len;

                /* A match that leaves the rest free holds for every longer prefix, and the
                 * whole path is always tried. */
                if (m->absorbed)
                        return true;
                if (m->mark[accept] == m->gen && is_candidate(path, n, last, i))
                        return true;
                if (i == n || n_cur == 0)
                        return false;
                /* Characters as Go's regexp reads them: an invalid byte is one U+FFFD. */
                k = kiln_utf8_decode(path + i, n - i, &r);
                enc_len = (uint32_t) kiln_utf8_encode(r, enc);
                nfa_next_gen(m);
                for (j = 0; j < n_cur; j++)
                        nfa_step(m, pat, m->cur[j], r, enc, enc_len, &n_next);
                n_next = prune(pat, m->next, n_next);
                swap = m->cur;
                m->cur = m->next;
                m->next = swap;
                n_cur = n_next;
                i += k;
        }
}

static bool pattern_matches(const struct df_ignore *ig, const struct pattern *pat, struct nfa *m,
                            const char *path, size_t n, size_t last)
{
        switch (pat->kind) {
        case PAT_EXACT:
                return match_exact(pat, path, n, last);
        case PAT_PREFIX:
                return match_prefix(pat, path, n);
        case PAT_SUFFIX:
                return match_suffix(pat, path, n, last);
        case PAT_REGEX:
                if (!m->cap) {
                        m->cap = ig->max_states;
                        m->mark = xcalloc(m->cap, sizeof(*m->mark));
                        m->cur = xmalloc(m->cap * sizeof(*m->cur));
                        m->next = xmalloc(m->cap * sizeof(*m->next));
                }
                return match_regex(pat, m, path, n, last);
        }
        return false;
}

/* Upstream's regexp failed to compile: the pattern fails each time it is tried. */
static int bad_pattern_error(const struct df_ignore *ig, const struct pattern *pat,
                             struct kiln_error **err)
{
        pattern_error(err, pat->text, pat->text_len, pat->bad);
        if (ig->source && err && *err)
                kiln_error_set_position(*err, ig->source, pat->line, 0);
        return -1;
}

int df_ignore_matches(const struct df_ignore *ig, const char *path, bool *ret_excluded,
                      struct kiln_error **err)
{
        _cleanup_(nfa_release) struct nfa m = { 0 };
        _cleanup_free_ char *clean = NULL;
        bool matched = false;
        size_t n, last, i;
        const char *slash;

        clean = path_clean(path, strlen(path), &n);
        if (!ig || (n == 1 && clean[0] == '.')) {
                /* The context root is never excluded. */
                *ret_excluded = false;
                return 0;
        }
        slash = memrchr(clean, '/', n);
        last = slash ? (size_t) (slash - clean) : SIZE_MAX;
        for (i = 0; i < ig->n; i++) {
                const struct pattern *pat = &ig->pats[i];

                /* An inclusion only matters while the path is not excluded, an exclusion only
                 * while it is. */
                if (pat->exclusion != matched)
                        continue;
                if (pat->bad)
                        return bad_pattern_error(ig, pat, err);
                if (pattern_matches(ig, pat, &m, clean, n, last))
                        matched = !pat->exclusion;
        }
        *ret_excluded = matched;
        return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Reading the file                                                                           */
/* ---------------------------------------------------------------------------------------- */

/* ignorefile.ReadAll, also returning the line each pattern came from. */
static int read_patterns(const char *text, size_t len, char ***ret_patterns, unsigned **ret_lines,
                         size_t *ret_n, struct kiln_error **err)
{
        _cleanup_(df_strv_freep) char **v = xcalloc(1, sizeof(*v));
        _cleanup_free_ unsigned *lines = NULL;
        size_t n = 0, alloc = 1, alloc_lines = 0, pos = 0;
        unsigned lineno = 0;

        if (!text)
                len = 0;
        while (pos < len) {
                _cleanup_free_ char *clean = NULL;
                const char *s = text + pos, *nl = memchr(s, '\n', len - pos), *body = "";
                size_t l = nl ? (size_t) (nl - s) : len - pos, body_len = 0;
                bool invert;
                char *out;

                pos += l + (nl ? 1 : 0);
                lineno++;
                if (l > IGNORE_LINE_MAX) {
                        kiln_error_new(err, KILN_ERR_LIMIT,
                                       ".dockerignore: line longer than %d bytes", IGNORE_LINE_MAX);
                        if (err && *err)
                                kiln_error_set_position(*err, NULL, lineno, 0);
                        return -1;
                }
                if (l > 0 && s[l - 1] == '\r')
                        l--;
                if (lineno == 1 && l >= 3 && memcmp(s, utf8_bom, 3) == 0) {
                        s += 3;
                        l -= 3;
                }
                /* A comment only when '#' is the very first character. */
                if (l > 0 && s[0] == '#')
                        continue;
                trim_space(&s, &l);
                if (l == 0)
                        continue;
                if (memchr(s, '\0', l)) {
                        /* A C string cannot carry it, and no path can contain it. */
                        kiln_error_new(err, KILN_ERR_INVALID, ".dockerignore: NUL byte in pattern");
                        if (err && *err)
                                kiln_error_set_position(*err, NULL, lineno, 0);
                        return -1;
                }
                invert = s[0] == '!';
                if (invert) {
                        s++;
                        l--;
                        trim_space(&s, &l);
                }
                if (l > 0) {
                        clean = path_clean(s, l, &body_len);
                        body = clean;
                        /* "/foo" means "foo": patterns are relative to the context. */
                        if (body_len > 1 && body[0] == '/') {
                                body++;
                                body_len--;
                        }
                }
                out = xmalloc(body_len + 2);
                if (invert)
                        out[0] = '!';
                memcpy(out + invert, body, body_len);
                out[body_len + invert] = '\0';
                XGROW(v, n + 2, alloc);
                v[n++] = out;
                v[n] = NULL;
                XGROW(lines, n, alloc_lines);
                lines[n - 1] = lineno;
        }
        *ret_patterns = TAKE_PTR(v);
        if (ret_lines)
                *ret_lines = TAKE_PTR(lines);
        if (ret_n)
                *ret_n = n;
        return 0;
}

int df_ignore_read(const char *text, size_t len, char ***ret_patterns, size_t *ret_n,
                   struct kiln_error **err)
{
        return read_patterns(text, len, ret_patterns, NULL, ret_n, err);
}

static int hand_over(struct kiln_error **err, struct kiln_error *e)
{
        if (err) {
                kiln_error_free(*err);
                *err = e;
        } else {
                kiln_error_free(e);
        }
        return -1;
}

int df_ignore_load(int context_fd, const char *dockerfile_path, struct df_ignore **ret,
                   char **ret_source, struct kiln_error **err)
{
        _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
        _cleanup_(df_strv_freep) char **patterns = NULL;
        _cleanup_free_ char *data = NULL, *source = NULL;
        _cleanup_free_ unsigned *lines = NULL;
        struct df_ignore *ig;
        size_t len = 0, n = 0;

        if (dockerfile_path) {
                _cleanup_free_ char *path = xasprintf("%s.dockerignore", dockerfile_path);

                if (kiln_read_file_at(AT_FDCWD, path, IGNORE_FILE_MAX, &data, &len, &e) == 0)
                        source = TAKE_PTR(path);
                else if (e->kind != KILN_ERR_NOTFOUND)
                        return hand_over(err, TAKE_PTR(e));
                else
                        e = kiln_error_free(e);
        }
        if (!source) {
                if (kiln_read_file_in_root(context_fd, ".dockerignore", IGNORE_FILE_MAX, &data,
                                           &len, &e) == 0)
                        source = xstrdup(".dockerignore");
                else if (e->kind != KILN_ERR_NOTFOUND)
                        return hand_over(err, TAKE_PTR(e));
        }
        if (source && read_patterns(data, len, &patterns, &lines, &n, err) < 0) {
                if (err && *err)
                        kiln_error_set_position(*err, source, 0, 0);
                return -1;
        }
        if (ignore_build((const char *const *) patterns, lines, n, source, &ig, err) < 0)
                return -1;
        *ret = ig;
        if (ret_source)
                *ret_source = TAKE_PTR(source);
        return 0;
}
