/*
 * Syntax tree -> typed instructions, with BuildKit's instruction rules: which flags each
 * instruction takes and their types (BuildKit's BFlags), argument counts, ONBUILD triggers,
 * and checks of values that need no expansion. Values that contain a variable are checked
 * again after expansion.
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "builder/common/suggest.h"
#include "builder/common/xalloc.h"
#include "parser/parser-internal.h"

static const char *const instr_names[_DF_INSTR_MAX] = {
        [DF_INSTR_FROM] = "FROM",
        [DF_INSTR_RUN] = "RUN",
        [DF_INSTR_CMD] = "CMD",
        [DF_INSTR_LABEL] = "LABEL",
        [DF_INSTR_MAINTAINER] = "MAINTAINER",
        [DF_INSTR_EXPOSE] = "EXPOSE",
        [DF_INSTR_ENV] = "ENV",
        [DF_INSTR_ADD] = "ADD",
        [DF_INSTR_COPY] = "COPY",
        [DF_INSTR_ENTRYPOINT] = "ENTRYPOINT",
        [DF_INSTR_VOLUME] = "VOLUME",
        [DF_INSTR_USER] = "USER",
        [DF_INSTR_WORKDIR] = "WORKDIR",
        [DF_INSTR_ARG] = "ARG",
        [DF_INSTR_ONBUILD] = "ONBUILD",
        [DF_INSTR_STOPSIGNAL] = "STOPSIGNAL",
        [DF_INSTR_HEALTHCHECK] = "HEALTHCHECK",
        [DF_INSTR_SHELL] = "SHELL",
};

const char *df_instr_name(enum df_instr_kind kind)
{
        return (unsigned) kind < _DF_INSTR_MAX ? instr_names[kind] : "?";
}

static bool kind_from_keyword(const char *keyword, enum df_instr_kind *ret)
{
        unsigned k;

        for (k = 0; k < _DF_INSTR_MAX; k++)
                if (strcasecmp(keyword, instr_names[k]) == 0) {
                        *ret = (enum df_instr_kind) k;
                        return true;
                }
        return false;
}

static bool has_variable(const char *s)
{
        return s && strchr(s, '$') != NULL;
}

/* ---- flags (BuildKit's BFlags) ---- */

enum flag_type { FLAG_BOOL, FLAG_STRING, FLAG_STRINGS };

struct flag_spec {
        const char *name;
        enum flag_type type;
};

static const struct flag_spec from_flags[] = {
        { "platform", FLAG_STRING },
        {},
};
static const struct flag_spec run_flags[] = {
        { "mount", FLAG_STRINGS },
        { "network", FLAG_STRING },
        { "security", FLAG_STRING },
        {},
};
static const struct flag_spec copy_flags[] = {
        { "from", FLAG_STRING },
        { "chown", FLAG_STRING },
        { "chmod", FLAG_STRING },
        { "link", FLAG_BOOL },
        { "parents", FLAG_BOOL },
        { "exclude", FLAG_STRINGS },
        {},
};
static const struct flag_spec add_flags[] = {
        { "chown", FLAG_STRING },    { "chmod", FLAG_STRING },
        { "link", FLAG_BOOL },       { "keep-git-dir", FLAG_BOOL },
        { "checksum", FLAG_STRING }, { "exclude", FLAG_STRINGS },
        { "unpack", FLAG_BOOL },     {},
};
static const struct flag_spec healthcheck_flags[] = {
        { "interval", FLAG_STRING },     { "timeout", FLAG_STRING },
        { "start-period", FLAG_STRING }, { "start-interval", FLAG_STRING },
        { "retries", FLAG_STRING },      {},
};
static const struct flag_spec no_flags[] = {
        {},
};

#define MAX_FLAGS 8

struct flag_value {
        bool set;
        struct df_word value;   /* FLAG_BOOL: "true" or "false" */
        struct df_word *values; /* FLAG_STRINGS */
        size_t n_values;
};

struct instr_ctx {
        const struct df_syntax *syn;
        struct kiln_arena *arena;
        struct kiln_error **err;
};

static int fail(const struct instr_ctx *c, const struct df_node *node, size_t offset,
                enum kiln_errkind kind, const char *fmt, ...) _printf_(5, 6);

static int fail(const struct instr_ctx *c, const struct df_node *node, size_t offset,
                enum kiln_errkind kind, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        kiln_error_newv(c->err, kind, fmt, ap);
        va_end(ap);
        if (c->err && *c->err)
                df_error_locate(*c->err, c->syn, node, offset);
        return -1;
}

/* Positions a value-check error raised by a helper at the word it is about. */
static int locate(const struct instr_ctx *c, const struct df_node *node, size_t offset)
{
        if (c->err && *c->err)
                df_error_locate(*c->err, c->syn, node, offset);
        return -1;
}

static int parse_flags(const struct instr_ctx *c, const struct df_node *node,
                       const struct flag_spec *specs, struct flag_value *vals)
{
        size_t i, n_specs = 0;
        const char *names[MAX_FLAGS];

        while (specs[n_specs].name)
                n_specs++;
        for (i = 0; i < n_specs; i++)
                names[i] = specs[i].name;
        memset(vals, 0, sizeof(*vals) * MAX_FLAGS);
        for (i = 0; i < node->n_flags; i++) {
                const struct df_arg *f = &node->flags[i];
                const char *arg = f->text, *eq;
                _cleanup_free_ char *name = NULL;
                const char *value = NULL;
                size_t k;

                if (strncmp(arg, "--", 2) != 0)
                        return fail(c, node, f->offset, KILN_ERR_PARSE,
                                    "flag should start with --: '%s'", arg);
                eq = strchr(arg + 2, '=');
                name = eq ? xstrndup(arg + 2, (size_t) (eq - arg - 2)) : xstrdup(arg + 2);
                if (eq)
                        value = eq + 1;
                for (k = 0; k < n_specs; k++)
                        if (strcmp(specs[k].name, name) == 0)
                                break;
                if (k == n_specs) {
                        const char *hint = kiln_suggest(name, names, n_specs);
                        if (n_specs == 0)
                                return fail(c, node, f->offset, KILN_ERR_PARSE,
                                            "unknown flag: %s (%s takes no flags)", name,
                                            node->keyword);
                        if (hint)
                                return fail(c, node, f->offset, KILN_ERR_PARSE,
                                            "unknown flag: %s (did you mean --%s?)", name, hint);
                        return fail(c, node, f->offset, KILN_ERR_PARSE, "unknown flag: %s", name);
                }
                if (vals[k].set && specs[k].type != FLAG_STRINGS)
                        return fail(c, node, f->offset, KILN_ERR_PARSE,
                                    "duplicate flag specified: %s", name);
                vals[k].set = true;
                switch (specs[k].type) {
                case FLAG_BOOL:
                        if (value && value[0] == '\0')
                                return fail(c, node, f->offset, KILN_ERR_PARSE,
                                            "missing a value on flag: %s", name);
                        if (!value || strcasecmp(value, "true") == 0)
                                value = "true";
                        else if (strcasecmp(value, "false") == 0)
                                value = "false";
                        else
                                return fail(c, node, f->offset, KILN_ERR_PARSE,
                                            "expecting boolean value for flag %s, not: %s", name,
                                            value);
                        vals[k].value.text = value;
                        vals[k].value.offset = f->offset;
                        break;
                case FLAG_STRING:
                        if (!value)
                                return fail(c, node, f->offset, KILN_ERR_PARSE,
                                            "missing a value on flag: %s", name);
                        vals[k].value.text = kiln_arena_strdup(c->arena, value);
                        vals[k].value.offset = f->offset + (size_t) (value - arg);
                        break;
                case FLAG_STRINGS: {
                        struct df_word *nv;
                        if (!value)
                                return fail(c, node, f->offset, KILN_ERR_PARSE,
                                            "missing a value on flag: %s", name);
                        nv = kiln_arena_array(c->arena, vals[k].n_values + 1, sizeof(*nv));
                        if (vals[k].n_values)
                                memcpy(nv, vals[k].values, vals[k].n_values * sizeof(*nv));
                        nv[vals[k].n_values].text = kiln_arena_strdup(c->arena, value);
                        nv[vals[k].n_values].offset = f->offset + (size_t) (value - arg);
                        vals[k].values = nv;
                        vals[k].n_values++;
                        break;
                }
                }
        }
        return 0;
}

/* ---- value checks ---- */

int df_parse_duration(const char *s, int64_t *ret_ns, struct kiln_error **err)
{
        static const struct {
                const char *unit;
                int64_t ns;
        } units[] = {
                { "ns", 1LL },           { "us", 1000LL },
                { "\xC2\xB5s", 1000LL }, /* U+00B5 micro sign */
                { "\xCE\xBCs", 1000LL }, /* U+03BC Greek mu */
                { "ms", 1000000LL },     { "s", 1000000000LL },
                { "m", 60000000000LL },  { "h", 3600000000000LL },
        };
        const char *p = s;
        bool neg = false;
        long double total = 0;

        if (*p == '-' || *p == '+') {
                neg = *p == '-';
                p++;
        }
        if (strcmp(p, "0") == 0) {
                *ret_ns = 0;
                return 0;
        }
        if (*p == '\0')
                return kiln_error_new(err, KILN_ERR_INVALID, "invalid duration '%s'", s);
        while (*p) {
                long double v = 0, scale = 1;
                bool digits = false;
                size_t u, best = 0, best_len = 0;

                while (isdigit((unsigned char) *p)) {
                        v = v * 10 + (*p++ - '0');
                        digits = true;
                }
                if (*p == '.') {
                        p++;
                        while (isdigit((unsigned char) *p)) {
                                scale /= 10;
                                v += (*p++ - '0') * scale;
                                digits = true;
                        }
                }
                if (!digits)
                        return kiln_error_new(err, KILN_ERR_INVALID, "invalid duration '%s'", s);
                for (u = 0; u < ELEMENTSOF(units); u++) {
                        size_t ul = strlen(units[u].unit);
                        if (strncmp(p, units[u].unit, ul) == 0 && ul > best_len) {
                                best = u;
                                best_len = ul;
                        }
                }
                if (best_len == 0) {
                        if (*p == '\0' || isdigit((unsigned char) *p))
                                return kiln_error_new(err, KILN_ERR_INVALID,
                                                      "missing unit in duration '%s'", s);
                        return kiln_error_new(err, KILN_ERR_INVALID,
                                              "unknown unit in duration '%s'", s);
                }
                total += v * (long double) units[best].ns;
                if (total > (long double) INT64_MAX)
                        return kiln_error_new(err, KILN_ERR_INVALID, "duration '%s' is too long",
                                              s);
                p += best_len;
        }
        *ret_ns = neg ? -(int64_t) total : (int64_t) total;
        return 0;
}

int df_check_port(const char *spec, struct kiln_error **err)
{
        const char *slash = strchr(spec, '/');
        size_t plen = slash ? (size_t) (slash - spec) : strlen(spec);
        unsigned long lo, hi;
        char *end;
        _cleanup_free_ char *ports = xstrndup(spec, plen);
        char *dash;

        if (slash) {
                const char *proto = slash + 1;
                if (strcasecmp(proto, "tcp") != 0 && strcasecmp(proto, "udp") != 0 &&
                    strcasecmp(proto, "sctp") != 0)
                        return kiln_error_new(err, KILN_ERR_INVALID,
                                              "invalid proto '%s' in port '%s'", proto, spec);
        }
        dash = strchr(ports, '-');
        if (dash)
                *dash = '\0';
        errno = 0;
        lo = strtoul(ports, &end, 10);
        if (!isdigit((unsigned char) ports[0]) || *end || errno || lo > 65535)
                return kiln_error_new(err, KILN_ERR_INVALID, "invalid port '%s'", spec);
        if (dash) {
                hi = strtoul(dash + 1, &end, 10);
                if (!isdigit((unsigned char) dash[1]) || *end || hi > 65535 || hi < lo)
                        return kiln_error_new(err, KILN_ERR_INVALID, "invalid port range '%s'",
                                              spec);
        }
        return 0;
}

static const struct {
        const char *name;
        int signo;
} signals[] = {
        { "ABRT", SIGABRT }, { "ALRM", SIGALRM }, { "BUS", SIGBUS },       { "CHLD", SIGCHLD },
        { "CLD", SIGCHLD },  { "CONT", SIGCONT }, { "FPE", SIGFPE },       { "HUP", SIGHUP },
        { "ILL", SIGILL },   { "INT", SIGINT },   { "IO", SIGIO },         { "IOT", SIGIOT },
        { "KILL", SIGKILL }, { "PIPE", SIGPIPE }, { "POLL", SIGPOLL },     { "PROF", SIGPROF },
        { "PWR", SIGPWR },   { "QUIT", SIGQUIT }, { "SEGV", SIGSEGV },     { "STKFLT", SIGSTKFLT },
        { "STOP", SIGSTOP }, { "SYS", SIGSYS },   { "TERM", SIGTERM },     { "TRAP", SIGTRAP },
        { "TSTP", SIGTSTP }, { "TTIN", SIGTTIN }, { "TTOU", SIGTTOU },     { "URG", SIGURG },
        { "USR1", SIGUSR1 }, { "USR2", SIGUSR2 }, { "VTALRM", SIGVTALRM }, { "WINCH", SIGWINCH },
        { "XCPU", SIGXCPU }, { "XFSZ", SIGXFSZ },
};

int df_parse_signal(const char *s, int *ret_signo, struct kiln_error **err)
{
        const char *name = s;
        char *end;
        size_t i;
        long n;

        if (isdigit((unsigned char) s[0])) {
                errno = 0;
                n = strtol(s, &end, 10);
                if (*end || errno || n < 1 || n > 64)
                        return kiln_error_new(err, KILN_ERR_INVALID, "invalid signal '%s'", s);
                *ret_signo = (int) n;
                return 0;
        }
        if (strncasecmp(name, "SIG", 3) == 0)
                name += 3;
        if (strncasecmp(name, "RTMIN+", 6) == 0 || strncasecmp(name, "RTMAX-", 6) == 0) {
                n = strtol(name + 6, &end, 10);
                if (*end == '\0' && n >= 0 && n <= SIGRTMAX - SIGRTMIN) {
                        *ret_signo = toupper((unsigned char) name[4]) == 'I' ? SIGRTMIN + (int) n
                                                                             : SIGRTMAX - (int) n;
                        return 0;
                }
        }
        for (i = 0; i < ELEMENTSOF(signals); i++)
                if (strcasecmp(name, signals[i].name) == 0) {
                        *ret_signo = signals[i].signo;
                        return 0;
                }
        return kiln_error_new(err, KILN_ERR_INVALID, "invalid signal '%s'", s);
}

int df_check_chmod(const char *s, struct kiln_error **err)
{
        const char *p = s;
        char *end;
        unsigned long v;

        if (isdigit((unsigned char) s[0])) {
                errno = 0;
                v = strtoul(s, &end, 8);
                if (*end || errno || v > 07777)
                        return kiln_error_new(
                                err, KILN_ERR_INVALID,
                                "invalid --chmod value '%s': not an octal mode up to 7777", s);
                return 0;
        }
        /* Symbolic: [ugoa]*([-+=]([rwxXst]*|[ugo]))+ joined by commas. */
        for (;;) {
                bool op = false;
                while (*p && strchr("ugoa", *p))
                        p++;
                while (*p && strchr("+-=", *p)) {
                        op = true;
                        p++;
                        if (*p && strchr("ugo", *p) &&
                            (p[1] == '\0' || p[1] == ',' || strchr("+-=", p[1])))
                                p++;
                        else
                                while (*p && strchr("rwxXst", *p))
                                        p++;
                }
                if (!op)
                        break;
                if (*p == '\0')
                        return 0;
                if (*p != ',')
                        break;
                p++;
        }
        return kiln_error_new(err, KILN_ERR_INVALID,
                              "invalid --chmod value '%s': not an octal or symbolic (u+x) mode", s);
}

int df_check_platform(const char *s, struct kiln_error **err)
{
        size_t parts = 1, len = 0;
        const char *p;

        for (p = s; *p; p++) {
                if (*p == '/') {
                        if (len == 0)
                                break;
                        parts++;
                        len = 0;
                        continue;
                }
                if (!islower((unsigned char) *p) && !isdigit((unsigned char) *p) && *p != '_' &&
                    *p != '-' && *p != '.')
                        return kiln_error_new(
                                err, KILN_ERR_INVALID,
                                "invalid platform '%s': use os/arch[/variant] in lower case", s);
                len++;
        }
        if (*p || len == 0 || parts < 2 || parts > 3)
                return kiln_error_new(
                        err, KILN_ERR_INVALID,
                        "invalid platform '%s': use os/arch[/variant], e.g. linux/amd64", s);
        return 0;
}

/* ---- RUN --mount ---- */

static const char *const mount_type_names[_DF_MOUNT_MAX] = {
        [DF_MOUNT_BIND] = "bind",     [DF_MOUNT_CACHE] = "cache", [DF_MOUNT_TMPFS] = "tmpfs",
        [DF_MOUNT_SECRET] = "secret", [DF_MOUNT_SSH] = "ssh",
};

static const char *const mount_keys[] = {
        "type",        "from", "source", "target",    "readonly", "id",  "sharing",
        "required",    "size", "mode",   "uid",       "gid",      "src", "dst",
        "destination", "ro",   "rw",     "readwrite", "env",
};

/* Go's encoding/csv for one record: fields split by ',', "..." quoting with "" for a quote. */
static int csv_fields(const char *s, char ***ret, size_t *ret_n, struct kiln_error **err)
{
        _cleanup_buf_ struct kiln_buf field = KILN_BUF_INIT;
        char **v = NULL;
        size_t n = 0, alloc = 0;
        const char *p = s, *why = NULL;

        for (;;) {
                kiln_buf_reset(&field);
                if (*p == '"') {
                        for (p++; !why; p++) {
                                if (*p == '\0')
                                        why = "extraneous or missing \" in quoted field";
                                else if (*p == '"' && p[1] == '"')
                                        kiln_buf_addc(&field, *p++, NULL);
                                else if (*p == '"')
                                        break;
                                else
                                        kiln_buf_addc(&field, *p, NULL);
                        }
                        if (!why && *++p != ',' && *p != '\0')
                                why = "extraneous or missing \" in quoted field";
                } else {
                        for (; !why && *p && *p != ','; p++) {
                                if (*p == '"')
                                        why = "bare \" in non-quoted field";
                                kiln_buf_addc(&field, *p, NULL);
                        }
                }
                if (why) {
                        df_strv_free(v);
                        return kiln_error_new(err, KILN_ERR_INVALID, "%s", why);
                }
                XGROW(v, n + 2, alloc);
                v[n++] = kiln_buf_detach(&field, NULL);
                v[n] = NULL;
                if (*p == '\0')
                        break;
                p++; /* ',' */
        }
        *ret = v;
        *ret_n = n;
        return 0;
}

static int parse_bool(const char *key, const char *value, bool *ret, struct kiln_error **err)
{
        static const char *const yes[] = { "1", "t", "T", "TRUE", "true", "True" };
        static const char *const no[] = { "0", "f", "F", "FALSE", "false", "False" };
        size_t i;

        for (i = 0; i < ELEMENTSOF(yes); i++) {
                if (strcmp(value, yes[i]) == 0) {
                        *ret = true;
                        return 0;
                }
                if (strcmp(value, no[i]) == 0) {
                        *ret = false;
                        return 0;
                }
        }
        return kiln_error_new(err, KILN_ERR_INVALID, "invalid value for %s: %s", key, value);
}

static int parse_u32(const char *what, const char *value, int base, uint32_t *ret,
                     struct kiln_error **err)
{
        char *end;
        unsigned long long v;

        errno = 0;
        v = strtoull(value, &end, base);
        if (!value[0] || *end || errno || v > UINT32_MAX || value[0] == '-' || value[0] == '+')
                return kiln_error_new(err, KILN_ERR_INVALID, "invalid value %s for %s", value,
                                      what);
        *ret = (uint32_t) v;
        return 0;
}

/* docker/go-units RAMInBytes: "64m", "1.5g", "512k", "100" (bytes), binary multiples. */
static int parse_ram_size(const char *value, int64_t *ret, struct kiln_error **err)
{
        char *end;
        double v;
        int64_t mult = 1;

        errno = 0;
        v = strtod(value, &end);
        if (end == value || errno || v < 0)
                return kiln_error_new(err, KILN_ERR_INVALID, "invalid value for size: %s", value);
        switch (tolower((unsigned char) *end)) {
        case '\0':
                break;
        case 'b':
                break;
        case 'k':
                mult = 1LL << 10;
                break;
        case 'm':
                mult = 1LL << 20;
                break;
        case 'g':
                mult = 1LL << 30;
                break;
        case 't':
                mult = 1LL << 40;
                break;
        case 'p':
                mult = 1LL << 50;
                break;
        default:
                return kiln_error_new(err, KILN_ERR_INVALID, "invalid value for size: %s", value);
        }
        if (*end) {
                end++;
                if (tolower((unsigned char) *end) == 'i')
                        end++;
                if (tolower((unsigned char) *end) == 'b')
                        end++;
                if (*end)
                        return kiln_error_new(err, KILN_ERR_INVALID, "invalid value for size: %s",
                                              value);
        }
        if (v * (double) mult > (double) INT64_MAX)
                return kiln_error_new(err, KILN_ERR_INVALID, "invalid value for size: %s", value);
        *ret = (int64_t) (v * (double) mult);
        return 0;
}

static int mount_field(const char *key, const char *value, struct kiln_arena *arena,
                       struct df_mount *m, bool *ro_auto, struct kiln_error **err)
{
        bool b;
        size_t t;

        if (strcmp(key, "type") == 0) {
                for (t = 0; t < _DF_MOUNT_MAX; t++)
                        if (strcasecmp(value, mount_type_names[t]) == 0)
                                break;
                if (t == _DF_MOUNT_MAX) {
                        const char *hint = kiln_suggest(value, mount_type_names, _DF_MOUNT_MAX);
                        return kiln_error_new(
                                err, KILN_ERR_INVALID, "unsupported mount type '%s'%s%s%s", value,
                                hint ? " (did you mean " : "", hint ? hint : "", hint ? "?)" : "");
                }
                m->type = (enum df_mount_type) t;
        } else if (strcmp(key, "from") == 0) {
                if (strpbrk(value, "${}"))
                        return kiln_error_new(err, KILN_ERR_INVALID,
                                              "'from' doesn't support variable expansion, define "
                                              "alias stage instead");
                m->from = kiln_arena_strdup(arena, value);
        } else if (strcmp(key, "source") == 0 || strcmp(key, "src") == 0) {
                m->source = kiln_arena_strdup(arena, value);
        } else if (strcmp(key, "target") == 0 || strcmp(key, "dst") == 0 ||
                   strcmp(key, "destination") == 0) {
                m->target = kiln_arena_strdup(arena, value);
        } else if (strcmp(key, "readonly") == 0 || strcmp(key, "ro") == 0) {
                if (parse_bool(key, value, &m->readonly, err) < 0)
                        return -1;
                *ro_auto = false;
        } else if (strcmp(key, "readwrite") == 0 || strcmp(key, "rw") == 0) {
                if (parse_bool(key, value, &b, err) < 0)
                        return -1;
                m->readonly = !b;
                *ro_auto = false;
        } else if (strcmp(key, "required") == 0) {
                if (m->type != DF_MOUNT_SECRET && m->type != DF_MOUNT_SSH)
                        return kiln_error_new(err, KILN_ERR_INVALID,
                                              "unexpected key '%s' for mount type '%s'", key,
                                              mount_type_names[m->type]);
                if (parse_bool(key, value, &m->required, err) < 0)
                        return -1;
        } else if (strcmp(key, "size") == 0) {
                if (m->type != DF_MOUNT_TMPFS)
                        return kiln_error_new(err, KILN_ERR_INVALID,
                                              "unexpected key '%s' for mount type '%s'", key,
                                              mount_type_names[m->type]);
                if (parse_ram_size(value, &m->size, err) < 0)
                        return -1;
        } else if (strcmp(key, "id") == 0) {
                m->id = kiln_arena_strdup(arena, value);
        } else if (strcmp(key, "sharing") == 0) {
                if (m->type != DF_MOUNT_CACHE)
                        return kiln_error_new(err, KILN_ERR_INVALID,
                                              "invalid cache sharing set for %s mount",
                                              mount_type_names[m->type]);
                if (strcasecmp(value, "shared") == 0)
                        m->sharing = DF_SHARING_SHARED;
                else if (strcasecmp(value, "private") == 0)
                        m->sharing = DF_SHARING_PRIVATE;
                else if (strcasecmp(value, "locked") == 0)
                        m->sharing = DF_SHARING_LOCKED;
                else
                        return kiln_error_new(err, KILN_ERR_INVALID,
                                              "unsupported sharing value '%s'", value);
        } else if (strcmp(key, "mode") == 0) {
                if (parse_u32("mode", value, 8, &m->mode, err) < 0)
                        return -1;
                m->has_mode = true;
        } else if (strcmp(key, "uid") == 0) {
                if (parse_u32("uid", value, 10, &m->uid, err) < 0)
                        return -1;
                m->has_uid = true;
        } else if (strcmp(key, "gid") == 0) {
                if (parse_u32("gid", value, 10, &m->gid, err) < 0)
                        return -1;
                m->has_gid = true;
        } else if (strcmp(key, "env") == 0) {
                m->env = kiln_arena_strdup(arena, value);
        } else {
                const char *hint = kiln_suggest(key, mount_keys, ELEMENTSOF(mount_keys));
                return kiln_error_new(err, KILN_ERR_INVALID, "unexpected key '%s' in mount%s%s%s",
                                      key, hint ? " (did you mean " : "", hint ? hint : "",
                                      hint ? "?)" : "");
        }
        return 0;
}

int df_mount_parse(const char *spec, struct df_vars *vars, char escape, struct kiln_arena *arena,
                   struct df_mount *ret, struct kiln_error **err)
{
        _cleanup_(df_strv_freep) char **fields = NULL;
        struct df_mount m = { .type = DF_MOUNT_BIND };
        bool ro_auto = true, sharing_set = false;
        size_t n, i;

        if (csv_fields(spec, &fields, &n, err) < 0)
                return kiln_error_wrap(err, "failed to parse mount '%s'", spec);
        /* The type decides which keys are valid, wherever it is written. */
        for (i = 0; i < n; i++) {
                _cleanup_free_ char *value = NULL;
                if (strncasecmp(fields[i], "type=", 5) != 0)
                        continue;
                if (vars && df_expand_word(fields[i] + 5, strlen(fields[i] + 5), escape, 0, vars,
                                           &value, NULL, err) < 0)
                        return kiln_error_wrap(err, "mount field 'type'");
                if (mount_field("type", value ? value : fields[i] + 5, arena, &m, &ro_auto, err) <
                    0)
                        return -1;
        }
        for (i = 0; i < n; i++) {
                char *eq = strchr(fields[i], '=');
                char *key = fields[i];
                size_t k;

                if (eq)
                        *eq = '\0';
                for (k = 0; key[k]; k++)
                        key[k] = (char) tolower((unsigned char) key[k]);
                if (strcmp(key, "type") == 0)
                        continue;
                if (!eq) {
                        if (strcmp(key, "readonly") == 0 || strcmp(key, "ro") == 0) {
                                m.readonly = true;
                                ro_auto = false;
                        } else if (strcmp(key, "readwrite") == 0 || strcmp(key, "rw") == 0) {
                                m.readonly = false;
                                ro_auto = false;
                        } else if (strcmp(key, "required") == 0) {
                                if (m.type != DF_MOUNT_SECRET && m.type != DF_MOUNT_SSH)
                                        return kiln_error_new(
                                                err, KILN_ERR_INVALID,
                                                "unexpected key '%s' for mount type '%s'", key,
                                                mount_type_names[m.type]);
                                m.required = true;
                        } else {
                                return kiln_error_new(err, KILN_ERR_INVALID,
                                                      "invalid field '%s' must be a key=value pair",
                                                      key);
                        }
                        continue;
                }
                if (strcmp(key, "sharing") == 0)
                        sharing_set = true;
                if (vars && strcmp(key, "from") != 0) {
                        _cleanup_free_ char *value = NULL;
                        if (df_expand_word(eq + 1, strlen(eq + 1), escape, 0, vars, &value, NULL,
                                           err) < 0)
                                return kiln_error_wrap(err, "mount field '%s'", key);
                        if (mount_field(key, value, arena, &m, &ro_auto, err) < 0)
                                return -1;
                        continue;
                }
                if (mount_field(key, eq + 1, arena, &m, &ro_auto, err) < 0)
                        return -1;
        }
        if (m.type != DF_MOUNT_SECRET && m.type != DF_MOUNT_SSH && m.type != DF_MOUNT_CACHE) {
                if (m.has_mode)
                        return kiln_error_new(err, KILN_ERR_INVALID,
                                              "mode not allowed for '%s' mounts",
                                              mount_type_names[m.type]);
                if (m.has_uid)
                        return kiln_error_new(err, KILN_ERR_INVALID,
                                              "uid not allowed for '%s' mounts",
                                              mount_type_names[m.type]);
                if (m.has_gid)
                        return kiln_error_new(err, KILN_ERR_INVALID,
                                              "gid not allowed for '%s' mounts",
                                              mount_type_names[m.type]);
        }
        if (ro_auto)
                m.readonly = !(m.type == DF_MOUNT_CACHE || m.type == DF_MOUNT_TMPFS);
        if (m.type == DF_MOUNT_SECRET) {
                if (m.from)
                        return kiln_error_new(err, KILN_ERR_INVALID,
                                              "secret mount should not have a from");
                if (sharing_set)
                        return kiln_error_new(err, KILN_ERR_INVALID,
                                              "secret mount should not define sharing");
                if (!m.source && !m.target && !m.id)
                        return kiln_error_new(
                                err, KILN_ERR_INVALID,
                                "invalid secret mount: one of source, target or id is required");
                if (m.source && m.id)
                        return kiln_error_new(err, KILN_ERR_INVALID,
                                              "both source and id can't be set");
        }
        if (!m.target && m.type != DF_MOUNT_SECRET && m.type != DF_MOUNT_SSH)
                return kiln_error_new(err, KILN_ERR_INVALID, "mount destination (target) not set");
        *ret = m;
        return 0;
}

int df_mount_get_from(const char *spec, char **ret_from, struct kiln_error **err)
{
        _cleanup_(df_strv_freep) char **fields = NULL;
        size_t n, i;

        *ret_from = NULL;
        if (csv_fields(spec, &fields, &n, err) < 0)
                return kiln_error_wrap(err, "failed to parse mount '%s'", spec);
        for (i = 0; i < n; i++)
                if (strncasecmp(fields[i], "from=", 5) == 0) {
                        free(*ret_from);
                        *ret_from = xstrdup(fields[i] + 5);
                }
        return 0;
}

/* ---- per-instruction rules ---- */

static struct df_word word_of(const struct df_arg *a)
{
        return (struct df_word){ .text = a->text, .offset = a->offset };
}

static struct df_word *words_of(struct kiln_arena *arena, const struct df_arg *args, size_t n)
{
        struct df_word *w = n ? kiln_arena_array(arena, n, sizeof(*w)) : NULL;
        size_t i;

        for (i = 0; i < n; i++)
                w[i] = word_of(&args[i]);
        return w;
}

/* An argument that came from JSON may hold a NUL byte nothing downstream can carry. */
static int check_no_nul(const struct instr_ctx *c, const struct df_node *node)
{
        size_t i;

        for (i = 0; i < node->n_args; i++)
                if (strlen(node->args[i].text) != node->args[i].len)
                        return fail(c, node, node->args[i].offset, KILN_ERR_INVALID,
                                    "%s: argument %zu contains a NUL byte", node->keyword, i + 1);
        return 0;
}

static size_t end_offset(const struct df_node *node)
{
        return node->original_len;
}

static int need_args(const struct instr_ctx *c, const struct df_node *node, size_t min,
                     const char *what)
{
        if (node->n_args >= min)
                return 0;
        return fail(c, node, node->n_args ? node->args_offset : end_offset(node), KILN_ERR_PARSE,
                    "%s", what);
}

static int type_from(const struct instr_ctx *c, const struct df_node *node, struct df_instr *in)
{
        struct flag_value f[MAX_FLAGS];
        size_t i;

        if (parse_flags(c, node, from_flags, f) < 0)
                return -1;
        if (!(node->n_args == 1 ||
              (node->n_args == 3 && strcasecmp(node->args[1].text, "as") == 0)))
                return fail(c, node, node->n_args ? node->args[0].offset : end_offset(node),
                            KILN_ERR_PARSE,
                            "FROM requires either one or three arguments (FROM image [AS name])");
        in->from.image = word_of(&node->args[0]);
        if (f[0].set) {
                in->from.platform = f[0].value;
                if (!has_variable(f[0].value.text) &&
                    df_check_platform(f[0].value.text, c->err) < 0)
                        return locate(c, node, f[0].value.offset);
        }
        if (node->n_args == 3) {
                const char *name = node->args[2].text;
                bool ok = islower((unsigned char) tolower((unsigned char) name[0]));

                for (i = 1; ok && name[i]; i++) {
                        char ch = (char) tolower((unsigned char) name[i]);
                        ok = islower((unsigned char) ch) || isdigit((unsigned char) ch) ||
                             ch == '-' || ch == '_' || ch == '.';
                }
                if (!ok)
                        return fail(c, node, node->args[2].offset, KILN_ERR_PARSE,
                                    "invalid name for build stage: '%s', name can't start with a "
                                    "number or contain symbols",
                                    name);
                in->from.name = word_of(&node->args[2]);
        }
        return 0;
}

static int type_run(const struct instr_ctx *c, const struct df_node *node, struct df_instr *in)
{
        struct flag_value f[MAX_FLAGS];
        size_t i;

        if (parse_flags(c, node, run_flags, f) < 0 || check_no_nul(c, node) < 0)
                return -1;
        if (node->n_args == 0 && node->n_heredocs == 0)
                return need_args(c, node, 1, "RUN requires at least one argument");
        in->run.argv = words_of(c->arena, node->args, node->n_args);
        in->run.argc = node->n_args;
        in->run.heredocs = node->heredocs;
        in->run.n_heredocs = node->n_heredocs;
        in->run.mounts = f[0].values;
        in->run.n_mounts = f[0].n_values;
        for (i = 0; i < f[0].n_values; i++) {
                _cleanup_(kiln_arena_release) struct kiln_arena scratch = KILN_ARENA_INIT;
                struct df_mount m;
                const char *spec = f[0].values[i].text;

                /* Values with variables are checked once expanded, but `from` never
                 * expands, so it is checked now. */
                if (has_variable(spec)) {
                        _cleanup_free_ char *from = NULL;
                        if (df_mount_get_from(spec, &from, c->err) < 0)
                                return locate(c, node, f[0].values[i].offset);
                        if (from && strpbrk(from, "${}"))
                                return fail(c, node, f[0].values[i].offset, KILN_ERR_INVALID,
                                            "'from' doesn't support variable expansion, define "
                                            "alias stage instead");
                        continue;
                }
                if (df_mount_parse(spec, NULL, '\\', &scratch, &m, c->err) < 0)
                        return locate(c, node, f[0].values[i].offset);
        }
        if (f[1].set) {
                const char *v = f[1].value.text;
                in->run.network = f[1].value;
                if (!has_variable(v) && strcmp(v, "default") != 0 && strcmp(v, "none") != 0 &&
                    strcmp(v, "host") != 0)
                        return fail(c, node, f[1].value.offset, KILN_ERR_INVALID,
                                    "unsupported network mode '%s' (use default, none or host)", v);
        }
        if (f[2].set) {
                const char *v = f[2].value.text;
                in->run.security = f[2].value;
                if (!has_variable(v) && strcmp(v, "sandbox") != 0 && strcmp(v, "insecure") != 0)
                        return fail(c, node, f[2].value.offset, KILN_ERR_INVALID,
                                    "unsupported security mode '%s' (use sandbox or insecure)", v);
        }
        return 0;
}

static int type_cmdline(const struct instr_ctx *c, const struct df_node *node, struct df_instr *in)
{
        struct flag_value f[MAX_FLAGS];

        if (parse_flags(c, node, no_flags, f) < 0 || check_no_nul(c, node) < 0)
                return -1;
        if (in->kind == DF_INSTR_SHELL) {
                if (node->n_args == 0)
                        return need_args(c, node, 1, "SHELL requires at least one argument");
                if (!node->json)
                        return fail(c, node, node->args_offset, KILN_ERR_PARSE,
                                    "SHELL requires the arguments to be in JSON form");
        }
        in->cmd.argv = words_of(c->arena, node->args, node->n_args);
        in->cmd.argc = node->n_args;
        return 0;
}

static int type_kv(const struct instr_ctx *c, const struct df_node *node, struct df_instr *in)
{
        struct flag_value f[MAX_FLAGS];
        const char *what = df_instr_name(in->kind);
        size_t i, n;

        if (parse_flags(c, node, no_flags, f) < 0)
                return -1;
        if (in->kind == DF_INSTR_ARG) {
                if (node->n_args == 0)
                        return need_args(c, node, 1, "ARG requires at least one argument");
                in->kv.items = kiln_arena_array(c->arena, node->n_args, sizeof(struct df_kv));
                for (i = 0; i < node->n_args; i++) {
                        const struct df_arg *a = &node->args[i];
                        const char *eq = strchr(a->text, '=');
                        struct df_kv *kv = &in->kv.items[i];

                        kv->key.text =
                                eq ? kiln_arena_memdup(c->arena, a->text, (size_t) (eq - a->text))
                                   : a->text;
                        kv->key.offset = a->offset;
                        if (eq) {
                                kv->value.text = eq + 1;
                                kv->value.offset = a->offset + (size_t) (eq - a->text) + 1;
                        }
                        if (kv->key.text[0] == '\0')
                                return fail(c, node, a->offset, KILN_ERR_PARSE,
                                            "ARG names can not be blank");
                }
                in->kv.n = node->n_args;
                return 0;
        }
        /* ENV and LABEL come as (key, value, separator) triples. */
        if (node->n_args == 0)
                return fail(c, node, end_offset(node), KILN_ERR_PARSE,
                            "%s requires at least one argument", what);
        n = node->n_args / 3;
        in->kv.items = kiln_arena_array(c->arena, n, sizeof(struct df_kv));
        for (i = 0; i < n; i++) {
                const struct df_arg *k = &node->args[i * 3], *v = &node->args[i * 3 + 1];
                if (k->text[0] == '\0')
                        return fail(c, node, k->offset, KILN_ERR_PARSE, "%s names can not be blank",
                                    what);
                in->kv.items[i].key = word_of(k);
                in->kv.items[i].value = word_of(v);
        }
        in->kv.n = n;
        return 0;
}

static int type_copy(const struct instr_ctx *c, const struct df_node *node, struct df_instr *in)
{
        struct flag_value f[MAX_FLAGS];
        const struct flag_spec *specs = in->kind == DF_INSTR_COPY ? copy_flags : add_flags;
        struct df_copy *cp = &in->copy;
        size_t k;

        if (parse_flags(c, node, specs, f) < 0 || check_no_nul(c, node) < 0)
                return -1;
        if (node->n_args < 2)
                return fail(c, node, node->n_args ? node->args[0].offset : end_offset(node),
                            KILN_ERR_PARSE,
                            "%s requires at least two arguments, but only %s provided: the "
                            "destination could not be determined",
                            df_instr_name(in->kind), node->n_args ? "one was" : "none were");
        cp->srcs = words_of(c->arena, node->args, node->n_args - 1);
        cp->n_srcs = node->n_args - 1;
        cp->dest = word_of(&node->args[node->n_args - 1]);
        cp->unpack = -1;
        cp->heredocs = node->heredocs;
        cp->n_heredocs = node->n_heredocs;
        for (k = 0; specs[k].name; k++) {
                const char *name = specs[k].name;
                bool on = f[k].set && f[k].value.text && strcmp(f[k].value.text, "true") == 0;

                if (!f[k].set)
                        continue;
                if (strcmp(name, "from") == 0) {
                        cp->from = f[k].value;
                        if (f[k].value.text[0] == '\0')
                                return fail(c, node, f[k].value.offset, KILN_ERR_PARSE,
                                            "--from needs a stage name, index or image");
                } else if (strcmp(name, "chown") == 0) {
                        cp->chown = f[k].value;
                } else if (strcmp(name, "chmod") == 0) {
                        cp->chmod = f[k].value;
                        if (!has_variable(cp->chmod.text) &&
                            df_check_chmod(cp->chmod.text, c->err) < 0)
                                return locate(c, node, cp->chmod.offset);
                } else if (strcmp(name, "checksum") == 0) {
                        cp->checksum = f[k].value;
                } else if (strcmp(name, "exclude") == 0) {
                        cp->excludes = f[k].values;
                        cp->n_excludes = f[k].n_values;
                } else if (strcmp(name, "link") == 0) {
                        cp->link = on;
                } else if (strcmp(name, "parents") == 0) {
                        cp->parents = on;
                } else if (strcmp(name, "keep-git-dir") == 0) {
                        cp->keep_git_dir = on;
                } else if (strcmp(name, "unpack") == 0) {
                        cp->unpack = on;
                }
        }
        if (cp->checksum.text && !has_variable(cp->checksum.text)) {
                const char *colon = strchr(cp->checksum.text, ':');
                size_t hex = colon ? strspn(colon + 1, "0123456789abcdef") : 0;
                bool ok = colon &&
                          ((strncmp(cp->checksum.text, "sha256:", 7) == 0 && hex == 64) ||
                           (strncmp(cp->checksum.text, "sha384:", 7) == 0 && hex == 96) ||
                           (strncmp(cp->checksum.text, "sha512:", 7) == 0 && hex == 128)) &&
                          colon[1 + hex] == '\0';
                if (!ok)
                        return fail(c, node, cp->checksum.offset, KILN_ERR_INVALID,
                                    "invalid checksum '%s': expected sha256:<64 hex digits>",
                                    cp->checksum.text);
        }
        return 0;
}

static int type_list(const struct instr_ctx *c, const struct df_node *node, struct df_instr *in)
{
        struct flag_value f[MAX_FLAGS];
        size_t i;

        if (parse_flags(c, node, no_flags, f) < 0 || check_no_nul(c, node) < 0)
                return -1;
        if (node->n_args == 0)
                return need_args(c, node, 1,
                                 in->kind == DF_INSTR_EXPOSE
                                         ? "EXPOSE requires at least one argument"
                                         : "VOLUME requires at least one argument");
        for (i = 0; i < node->n_args; i++) {
                const char *a = node->args[i].text;
                if (in->kind == DF_INSTR_VOLUME && a[0] == '\0')
                        return fail(c, node, node->args[i].offset, KILN_ERR_PARSE,
                                    "VOLUME specified can not be an empty string");
                if (in->kind == DF_INSTR_EXPOSE && !has_variable(a) && df_check_port(a, c->err) < 0)
                        return locate(c, node, node->args[i].offset);
        }
        in->list.items = words_of(c->arena, node->args, node->n_args);
        in->list.n = node->n_args;
        return 0;
}

static int type_text(const struct instr_ctx *c, const struct df_node *node, struct df_instr *in)
{
        struct flag_value f[MAX_FLAGS];
        const char *what = df_instr_name(in->kind);
        int signo;

        if (parse_flags(c, node, no_flags, f) < 0)
                return -1;
        if (node->n_args != 1 || node->args[0].text[0] == '\0')
                return fail(c, node, node->n_args ? node->args[0].offset : end_offset(node),
                            KILN_ERR_PARSE, "%s requires exactly one argument", what);
        in->text.word = word_of(&node->args[0]);
        if (in->kind == DF_INSTR_STOPSIGNAL && !has_variable(in->text.word.text) &&
            df_parse_signal(in->text.word.text, &signo, c->err) < 0)
                return locate(c, node, in->text.word.offset);
        return 0;
}

static int health_duration(const struct instr_ctx *c, const struct df_node *node,
                           const struct flag_value *f, const char *name, int64_t *ret)
{
        int64_t ns;

        *ret = 0;
        if (!f->set || f->value.text[0] == '\0')
                return 0;
        if (df_parse_duration(f->value.text, &ns, c->err) < 0)
                return locate(c, node, f->value.offset);
        if (ns == 0)
                return 0;
        if (ns < 1000000)
                return fail(c, node, f->value.offset, KILN_ERR_INVALID,
                            "interval '%s' cannot be less than 1ms", name);
        *ret = ns;
        return 0;
}

static int type_healthcheck(const struct instr_ctx *c, const struct df_node *node,
                            struct df_instr *in)
{
        struct flag_value f[MAX_FLAGS];
        struct df_healthcheck *h = &in->health;
        const char *typ;

        if (parse_flags(c, node, healthcheck_flags, f) < 0 || check_no_nul(c, node) < 0)
                return -1;
        if (node->n_args == 0)
                return fail(c, node, end_offset(node), KILN_ERR_PARSE,
                            "HEALTHCHECK requires at least one argument (CMD ... or NONE)");
        typ = node->args[0].text;
        h->retries = -1;
        if (strcasecmp(typ, "NONE") == 0) {
                if (node->n_args != 1)
                        return fail(c, node, node->args[1].offset, KILN_ERR_PARSE,
                                    "HEALTHCHECK NONE takes no arguments");
                h->none = true;
                return 0;
        }
        if (strcasecmp(typ, "CMD") != 0)
                return fail(c, node, node->args[0].offset, KILN_ERR_PARSE,
                            "unknown type '%s' in HEALTHCHECK (try CMD)", typ);
        if (node->n_args < 2 || (node->n_args == 2 && !node->json && node->args[1].text[0] == '\0'))
                return fail(c, node, end_offset(node), KILN_ERR_PARSE,
                            "missing command after HEALTHCHECK CMD");
        h->test = words_of(c->arena, node->args + 1, node->n_args - 1);
        h->n_test = node->n_args - 1;
        h->shell = !node->json;
        if (health_duration(c, node, &f[0], "interval", &h->interval_ns) < 0 ||
            health_duration(c, node, &f[1], "timeout", &h->timeout_ns) < 0 ||
            health_duration(c, node, &f[2], "start-period", &h->start_period_ns) < 0 ||
            health_duration(c, node, &f[3], "start-interval", &h->start_interval_ns) < 0)
                return -1;
        if (f[4].set && f[4].value.text[0]) {
                char *end;
                long v;
                errno = 0;
                v = strtol(f[4].value.text, &end, 10);
                if (*end || errno || v > INT32_MAX || v < INT32_MIN)
                        return fail(c, node, f[4].value.offset, KILN_ERR_INVALID,
                                    "invalid --retries value '%s'", f[4].value.text);
                if (v < 0)
                        return fail(c, node, f[4].value.offset, KILN_ERR_INVALID,
                                    "--retries cannot be negative (%ld)", v);
                h->retries = (int) v;
        }
        return 0;
}

static int type_node(const struct instr_ctx *c, const struct df_node *node, struct df_instr *in,
                     bool is_trigger);

static int type_onbuild(const struct instr_ctx *c, const struct df_node *node, struct df_instr *in)
{
        struct flag_value f[MAX_FLAGS];
        const struct df_node *t = node->trigger;
        enum df_instr_kind k;

        if (parse_flags(c, node, no_flags, f) < 0)
                return -1;
        if (!t)
                return fail(c, node, end_offset(node), KILN_ERR_PARSE,
                            "ONBUILD requires at least one argument");
        if (kind_from_keyword(t->keyword, &k) &&
            (k == DF_INSTR_ONBUILD || k == DF_INSTR_FROM || k == DF_INSTR_MAINTAINER))
                return fail(c, t, 0, KILN_ERR_PARSE, "%s isn't allowed as an ONBUILD trigger",
                            df_instr_name(k));
        in->onbuild.trigger = kiln_arena_alloc(c->arena, sizeof(struct df_instr));
        in->onbuild.expression = t->original;
        return type_node(c, t, in->onbuild.trigger, true);
}

static const char *const keyword_list[] = {
        "FROM",    "RUN", "CMD",     "LABEL",      "MAINTAINER",  "EXPOSE",
        "ENV",     "ADD", "COPY",    "ENTRYPOINT", "VOLUME",      "USER",
        "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL",
};

static int type_node(const struct instr_ctx *c, const struct df_node *node, struct df_instr *in,
                     bool is_trigger)
{
        enum df_instr_kind kind;

        if (!kind_from_keyword(node->keyword, &kind)) {
                const char *hint =
                        kiln_suggest(node->keyword, keyword_list, ELEMENTSOF(keyword_list));
                if (hint)
                        return fail(c, node, 0, KILN_ERR_PARSE,
                                    "unknown instruction: %s (did you mean %s?)", node->keyword,
                                    hint);
                return fail(c, node, 0, KILN_ERR_PARSE, "unknown instruction: %s", node->keyword);
        }
        in->kind = kind;
        in->node = node;
        in->json = node->json;
        switch (kind) {
        case DF_INSTR_FROM:
                return type_from(c, node, in);
        case DF_INSTR_RUN:
                return type_run(c, node, in);
        case DF_INSTR_CMD:
        case DF_INSTR_ENTRYPOINT:
        case DF_INSTR_SHELL:
                return type_cmdline(c, node, in);
        case DF_INSTR_LABEL:
        case DF_INSTR_ENV:
        case DF_INSTR_ARG:
                return type_kv(c, node, in);
        case DF_INSTR_ADD:
        case DF_INSTR_COPY:
                return type_copy(c, node, in);
        case DF_INSTR_EXPOSE:
        case DF_INSTR_VOLUME:
                return type_list(c, node, in);
        case DF_INSTR_MAINTAINER:
        case DF_INSTR_USER:
        case DF_INSTR_WORKDIR:
        case DF_INSTR_STOPSIGNAL:
                return type_text(c, node, in);
        case DF_INSTR_ONBUILD:
                if (is_trigger)
                        return fail(c, node, 0, KILN_ERR_PARSE,
                                    "ONBUILD isn't allowed as an ONBUILD trigger");
                return type_onbuild(c, node, in);
        case DF_INSTR_HEALTHCHECK:
                return type_healthcheck(c, node, in);
        case _DF_INSTR_MAX:
                break;
        }
        return fail(c, node, 0, KILN_ERR_PARSE, "unknown instruction: %s", node->keyword);
}

int df_dockerfile_new(const struct df_syntax *syn, struct df_dockerfile **ret,
                      struct kiln_error **err)
{
        _cleanup_(df_dockerfile_freep) struct df_dockerfile *df = xcalloc(1, sizeof(*df));
        struct instr_ctx c = { .syn = syn, .arena = &df->arena, .err = err };
        struct df_instr *all;
        size_t i, n_stages = 0, n_meta = 0, s = 0;

        df->syn = syn;
        all = kiln_arena_array(&df->arena, syn->n_nodes, sizeof(*all));
        for (i = 0; i < syn->n_nodes; i++) {
                if (type_node(&c, &syn->nodes[i], &all[i], false) < 0)
                        return -1;
                if (all[i].kind == DF_INSTR_FROM)
                        n_stages++;
                else if (n_stages == 0 && all[i].kind != DF_INSTR_ARG)
                        return df_error_at_node(
                                err, syn, &syn->nodes[i], 0, KILN_ERR_PARSE,
                                "%s before the first FROM: only ARG may come before FROM",
                                df_instr_name(all[i].kind));
                else if (n_stages == 0)
                        n_meta++;
        }
        if (n_stages == 0)
                return kiln_error_at(err, KILN_ERR_PARSE, syn->filename,
                                     syn->n_nodes ? syn->nodes[syn->n_nodes - 1].end_line : 0, 0,
                                     "no FROM instruction: a Dockerfile needs at least one stage");
        df->meta_args = all;
        df->n_meta_args = n_meta;
        df->stages = kiln_arena_array(&df->arena, n_stages, sizeof(*df->stages));
        df->n_stages = n_stages;
        for (i = n_meta; i < syn->n_nodes; i++) {
                if (all[i].kind == DF_INSTR_FROM) {
                        struct df_stage *st = &df->stages[s];
                        st->index = s++;
                        st->from = &all[i];
                        st->instrs = &all[i + 1];
                        if (all[i].from.name.text) {
                                size_t k;
                                st->name = df_arena_lower(&df->arena, all[i].from.name.text,
                                                          strlen(all[i].from.name.text));
                                for (k = 0; k + 1 < s; k++)
                                        if (df->stages[k].name &&
                                            strcmp(df->stages[k].name, st->name) == 0)
                                                return df_error_at_node(
                                                        err, syn, all[i].node,
                                                        all[i].from.name.offset, KILN_ERR_PARSE,
                                                        "duplicate stage name '%s' (first used on "
                                                        "line %u)",
                                                        st->name,
                                                        df->stages[k].from->node->start_line);
                        }
                } else {
                        df->stages[s - 1].n_instrs++;
                }
        }
        *ret = TAKE_PTR(df);
        return 0;
}

struct df_dockerfile *df_dockerfile_free(struct df_dockerfile *df)
{
        if (!df)
                return NULL;
        kiln_arena_release(&df->arena);
        free(df);
        return NULL;
}

int df_trigger_parse(const char *expression, struct df_trigger **ret, struct kiln_error **err)
{
        _cleanup_(df_trigger_freep) struct df_trigger *t = xcalloc(1, sizeof(*t));
        struct instr_ctx c = { .arena = &t->arena, .err = err };
        enum df_instr_kind kind;

        if (df_parse("ONBUILD trigger", expression, strlen(expression), &t->syn, err) < 0)
                return -1;
        c.syn = t->syn;
        if (t->syn->n_nodes != 1)
                return kiln_error_new(err, KILN_ERR_PARSE,
                                      "an ONBUILD trigger must be a single instruction, not %zu",
                                      t->syn->n_nodes);
        if (kind_from_keyword(t->syn->nodes[0].keyword, &kind) &&
            (kind == DF_INSTR_FROM || kind == DF_INSTR_MAINTAINER || kind == DF_INSTR_ONBUILD))
                return kiln_error_new(err, KILN_ERR_PARSE, "%s isn't allowed as an ONBUILD trigger",
                                      df_instr_name(kind));
        if (type_node(&c, &t->syn->nodes[0], &t->instr, true) < 0)
                return -1;
        *ret = TAKE_PTR(t);
        return 0;
}

struct df_trigger *df_trigger_free(struct df_trigger *t)
{
        if (!t)
                return NULL;
        kiln_arena_release(&t->arena);
        df_syntax_free(t->syn);
        free(t);
        return NULL;
}
