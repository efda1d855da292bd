/*
 * WWW-Authenticate (RFC 7235 section 4.1) parsing:
 *
 *   WWW-Authenticate = 1#challenge
 *   challenge        = auth-scheme [ 1*SP ( token68 / #auth-param ) ]
 *   auth-param       = token BWS "=" BWS ( token / quoted-string )
 *
 * The list is comma-separated at two levels, so an element is read as "token =" (a parameter
 * of the current challenge) or "token" (a new scheme, which may be followed by its first
 * parameter or a token68 after whitespace). Empty list elements are skipped, as RFC 7230's
 * list rule asks of recipients. A token68 is kept as a parameter with the empty key.
 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "builder/common/strbuf.h"
#include "builder/common/xalloc.h"
#include "registry/registry.h"

#define HEADER_MAX (16u << 10)

static bool is_tchar(char c)
{
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               (c != '\0' && strchr("!#$%&'*+-.^_`|~", c));
}

static bool is_token68_char(char c)
{
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '-' || c == '.' || c == '_' || c == '~' || c == '+' || c == '/';
}

static bool is_ows(char c)
{
        return c == ' ' || c == '\t';
}

struct parser {
        const char *s;
        size_t pos;
        struct reg_challenge *list;
        size_t n, alloc;
};

static void skip_ows(struct parser *p)
{
        while (is_ows(p->s[p->pos]))
                p->pos++;
}

static size_t span_token(const struct parser *p, size_t from)
{
        size_t i = from;

        while (is_tchar(p->s[i]))
                i++;
        return i - from;
}

static char *lower_dup(const char *s, size_t len)
{
        char *r = xstrndup(s, len);
        size_t i;

        for (i = 0; i < len; i++)
                if (r[i] >= 'A' && r[i] <= 'Z')
                        r[i] = (char) (r[i] - 'A' + 'a');
        return r;
}

static int fail(struct parser *p, struct kiln_error **err, const char *what)
{
        return kiln_error_new(err, KILN_ERR_PARSE, "WWW-Authenticate: %s at offset %zu", what,
                              p->pos);
}

static void add_param(struct reg_challenge *c, char *key, char *value)
{
        c->keys = xrealloc(c->keys, (c->n + 1) * sizeof(*c->keys));
        c->values = xrealloc(c->values, (c->n + 1) * sizeof(*c->values));
        c->keys[c->n] = key;
        c->values[c->n] = value;
        c->n++;
}

/* quoted-string = DQUOTE *( qdtext / quoted-pair ) DQUOTE, at p->pos. */
static int read_quoted(struct parser *p, char **ret, struct kiln_error **err)
{
        _cleanup_buf_ struct kiln_buf b = KILN_BUF_INIT;
        size_t start = p->pos;

        p->pos++;
        for (;;) {
                char c = p->s[p->pos];

                if (c == '\0') {
                        p->pos = start;
                        return fail(p, err, "unterminated quoted string");
                }
                if (c == '"') {
                        p->pos++;
                        break;
                }
                if (c == '\\') {
                        c = p->s[++p->pos];
                        if (c == '\0') {
                                p->pos = start;
                                return fail(p, err, "unterminated quoted string");
                        }
                }
                if ((unsigned char) c < 0x20 && c != '\t')
                        return fail(p, err, "control character in quoted string");
                if (c == 0x7f)
                        return fail(p, err, "control character in quoted string");
                kiln_buf_addc(&b, c, NULL);
                p->pos++;
        }
        *ret = kiln_buf_detach(&b, NULL);
        return 0;
}

/* After an element: OWS, then a comma or the end. */
static int end_of_element(struct parser *p, struct kiln_error **err)
{
        skip_ows(p);
        if (p->s[p->pos] != ',' && p->s[p->pos] != '\0')
                return fail(p, err, "expected ',' or the end");
        return 0;
}

/* auth-param at p->pos, whose name is `len` bytes long and is followed by BWS "=". */
static int read_param(struct parser *p, struct reg_challenge *c, size_t len,
                      struct kiln_error **err)
{
        _cleanup_free_ char *key = lower_dup(p->s + p->pos, len);
        char *value = NULL;

        p->pos += len;
        skip_ows(p);
        p->pos++; /* '=' */
        skip_ows(p);
        if (p->s[p->pos] == '"') {
                if (read_quoted(p, &value, err) < 0)
                        return -1;
        } else {
                size_t vlen = span_token(p, p->pos);

                if (vlen == 0)
                        return fail(p, err, "expected a token or a quoted string");
                value = xstrndup(p->s + p->pos, vlen);
                p->pos += vlen;
        }
        add_param(c, TAKE_PTR(key), value);
        return end_of_element(p, err);
}

/* Whether a token68 ends the challenge at p->pos: 1*token68-char *"=" OWS ( "," / end ). */
static size_t span_token68(const struct parser *p)
{
        size_t i = p->pos, j;

        while (is_token68_char(p->s[i]))
                i++;
        if (i == p->pos)
                return 0;
        while (p->s[i] == '=')
                i++;
        for (j = i; is_ows(p->s[j]); j++)
                ;
        return (p->s[j] == ',' || p->s[j] == '\0') ? i - p->pos : 0;
}

/* Whether a token at p->pos of length len is followed by BWS "=" (an auth-param). */
static bool is_param_start(const struct parser *p, size_t len)
{
        size_t i = p->pos + len;

        while (is_ows(p->s[i]))
                i++;
        return p->s[i] == '=';
}

static int parse(struct parser *p, struct kiln_error **err)
{
        struct reg_challenge *current = NULL;

        for (;;) {
                size_t len;

                while (is_ows(p->s[p->pos]) || p->s[p->pos] == ',')
                        p->pos++;
                if (p->s[p->pos] == '\0')
                        return 0;
                len = span_token(p, p->pos);
                if (len == 0)
                        return fail(p, err, "expected a token");
                if (is_param_start(p, len)) {
                        if (!current)
                                return fail(p, err, "parameter before any scheme");
                        if (read_param(p, current, len, err) < 0)
                                return -1;
                        continue;
                }

                /* A new challenge: the scheme, then optionally 1*SP and a token68 or the first
                 * parameter. "YWxhZGRpbg==" is a token68, "realm=x" a parameter. */
                XGROW(p->list, p->n + 1, p->alloc);
                current = &p->list[p->n++];
                memset(current, 0, sizeof(*current));
                current->scheme = lower_dup(p->s + p->pos, len);
                p->pos += len;
                if (!is_ows(p->s[p->pos])) {
                        if (end_of_element(p, err) < 0)
                                return -1;
                        continue;
                }
                skip_ows(p);
                if (p->s[p->pos] == ',' || p->s[p->pos] == '\0')
                        continue;
                len = span_token68(p);
                if (len > 0) {
                        add_param(current, xstrdup(""), xstrndup(p->s + p->pos, len));
                        p->pos += len;
                        if (end_of_element(p, err) < 0)
                                return -1;
                        continue;
                }
                len = span_token(p, p->pos);
                if (len == 0 || !is_param_start(p, len))
                        return fail(p, err, "expected a parameter or a token68");
                if (read_param(p, current, len, err) < 0)
                        return -1;
        }
}

int reg_challenges_parse(const char *header, struct reg_challenge **ret, size_t *ret_n,
                         struct kiln_error **err)
{
        struct parser p = { .s = header };

        if (!header)
                return kiln_error_new(err, KILN_ERR_PARSE, "WWW-Authenticate: no header");
        if (strnlen(header, HEADER_MAX + 1) > HEADER_MAX)
                return kiln_error_new(err, KILN_ERR_LIMIT,
                                      "WWW-Authenticate: header longer than %u bytes", HEADER_MAX);
        if (parse(&p, err) < 0) {
                reg_challenges_free(p.list, p.n);
                return -1;
        }
        if (p.n == 0) {
                reg_challenges_free(p.list, p.n);
                return kiln_error_new(err, KILN_ERR_PARSE, "WWW-Authenticate: no challenge");
        }
        *ret = p.list;
        *ret_n = p.n;
        return 0;
}

const char *reg_challenge_param(const struct reg_challenge *c, const char *key)
{
        size_t i;

        for (i = 0; i < c->n; i++)
                if (strcasecmp(c->keys[i], key) == 0)
                        return c->values[i];
        return NULL;
}

void reg_challenges_free(struct reg_challenge *c, size_t n)
{
        size_t i, k;

        if (!c)
                return;
        for (i = 0; i < n; i++) {
                free(c[i].scheme);
                for (k = 0; k < c[i].n; k++) {
                        free(c[i].keys[k]);
                        free(c[i].values[k]);
                }
                free(c[i].keys);
                free(c[i].values);
        }
        free(c);
}
