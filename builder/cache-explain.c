/*
 * Why a step missed the cache: its key's named fields (struct bld_key) against those of the
 * most recent build of the same step, in words ("RUN: build-arg VERSION changed (1.2 -> 1.3)").
 * Only text is made here; the records are kept by builder/cache.c and the words are printed
 * by the CLI from a BLD_EVENT_STEP_MISS.
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "builder/builder-internal.h"
#include "builder/common/strbuf.h"
#include "builder/common/xalloc.h"

/* Longer values are kept as a prefix and a digest; Env and Labels whole up to SHORT_MAX_ENV,
 * so one variable can be named. */
#define SHORT_MAX     100
#define SHORT_MAX_ENV 4096
#define SHORT_PREFIX  48
#define SHOWN_MAX     40 /* a value in a reason: at most this, then "..." */
#define REASONS_MAX   3  /* then "and N more" */

/* How many bytes of `s` fit in `max` without cutting a UTF-8 sequence. */
static size_t utf8_cut(const char *s, size_t max)
{
        size_t n = strlen(s);

        if (n <= max)
                return n;
        n = max;
        while (n > 0 && ((unsigned char) s[n] & 0xc0) == 0x80)
                n--;
        return n;
}

json_t *bld_cache_fields_short(json_t *fields)
{
        json_t *out = json_object(), *v;
        const char *name;

        json_object_foreach (fields, name, v) {
                const char *s = json_string_value(v);
                size_t len, max;

                if (!s)
                        continue;
                len = strlen(s);
                max = strcmp(name, "config.Env") == 0 || strcmp(name, "config.Labels") == 0
                              ? SHORT_MAX_ENV
                              : SHORT_MAX;
                if (len <= max) {
                        json_object_set_new(out, name, json_string(s));
                } else {
                        _cleanup_(layer_sha256_freep) struct layer_sha256 *h = layer_sha256_new();
                        char digest[LAYER_DIGEST_SIZE];
                        _cleanup_free_ char *shortened = NULL;

                        layer_sha256_update(h, s, len);
                        layer_sha256_final(h, digest);
                        shortened =
                                xasprintf("%.*s... %s", (int) utf8_cut(s, SHORT_PREFIX), s, digest);
                        json_object_set_new(out, name, json_string(shortened));
                }
        }
        return out;
}

/* ---- the reasons ---- */

struct reasons {
        char **items;
        size_t n;
};

static void reason(struct reasons *r, const char *fmt, ...) _printf_(2, 3);

static void reason(struct reasons *r, const char *fmt, ...)
{
        va_list ap;

        r->items = xrealloc(r->items, (r->n + 1) * sizeof(char *));
        va_start(ap, fmt);
        r->items[r->n++] = xvasprintf(fmt, ap);
        va_end(ap);
}

static void reasons_release(struct reasons *r)
{
        for (size_t i = 0; i < r->n; i++)
                free(r->items[i]);
        free(r->items);
        *r = (struct reasons){ 0 };
}

/* "PREFIX: a, b, c and 2 more" */
static char *reasons_text(const char *prefix, const struct reasons *a, const struct reasons *b)
{
        struct kiln_buf t = KILN_BUF_INIT;
        size_t total = a->n + (b ? b->n : 0), shown = total < REASONS_MAX ? total : REASONS_MAX, i;

        kiln_buf_addf(&t, NULL, "%s: ", prefix);
        for (i = 0; i < shown; i++) {
                const char *item = i < a->n ? a->items[i] : b->items[i - a->n];
                kiln_buf_addf(&t, NULL, "%s%s", i ? ", " : "", item);
        }
        if (total > shown)
                kiln_buf_addf(&t, NULL, " and %zu more", total - shown);
        return kiln_buf_detach(&t, NULL);
}

/* ---- values ---- */

static const char *field(json_t *fields, const char *name)
{
        return fields ? json_string_value(json_object_get(fields, name)) : NULL;
}

static bool same(const char *a, const char *b)
{
        return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* A JSON-encoded string setting ("\"app\"") as its text; anything else as it is. */
static char *json_text(const char *v)
{
        json_t *j;
        char *s;

        if (!v)
                return NULL;
        j = json_loads(v, JSON_DECODE_ANY, NULL);
        s = xstrdup(json_is_string(j) ? json_string_value(j) : v);
        json_decref(j);
        return s;
}

/* A value as a reason shows it: on one line, at most SHOWN_MAX bytes. */
static char *shown(const char *v)
{
        size_t n;
        char *s;

        if (!v || strcmp(v, "\xff(null)") == 0)
                return xstrdup("default");
        n = utf8_cut(v, SHOWN_MAX);
        s = xasprintf("%.*s%s", (int) n, v, v[n] ? "..." : "");
        for (char *c = s; *c; c++)
                if (*c == '\n' || *c == '\r' || *c == '\t')
                        *c = ' ';
        return s;
}

/* A name that may hold a secret (BuildKit's SecretsUsedInArgOrEnv words): its values are not
 * shown, only that it changed. */
static bool secret_name(const char *name)
{
        static const char *const words[] = { "apikey", "auth",     "credential", "credentials",
                                             "key",    "password", "pword",      "passwd",
                                             "secret", "token" };
        const char *p = name;

        while (*p) {
                size_t n = strcspn(p, "_");
                for (size_t i = 0; i < ELEMENTSOF(words); i++)
                        if (strlen(words[i]) == n && strncasecmp(p, words[i], n) == 0)
                                return true;
                p += n;
                if (*p == '_')
                        p++;
        }
        return false;
}

/* WHAT NAME changed (a -> b) / added / removed */
static void value_change(struct reasons *r, const char *what, const char *name, const char *a,
                         const char *b)
{
        _cleanup_free_ char *sa = NULL, *sb = NULL;

        if (!a)
                reason(r, "%s %s added", what, name);
        else if (!b)
                reason(r, "%s %s removed", what, name);
        else if (secret_name(name))
                reason(r, "%s %s changed", what, name);
        else
                reason(r, "%s %s changed (%s -> %s)", what, name, sa = shown(a), sb = shown(b));
}

/* Env's JSON array ["K=V", ...] as an object K -> V; NULL when it is not one (or kept as a
 * digest). */
static json_t *env_map(const char *v)
{
        json_t *arr, *m, *e;
        size_t i;

        if (!v)
                return json_object();
        arr = json_loads(v, 0, NULL);
        if (!json_is_array(arr)) {
                json_decref(arr);
                return NULL;
        }
        m = json_object();
        json_array_foreach (arr, i, e) {
                const char *s = json_string_value(e), *eq;
                _cleanup_free_ char *name = NULL;
                if (!s)
                        continue;
                eq = strchr(s, '=');
                name = eq ? xstrndup(s, (size_t) (eq - s)) : xstrdup(s);
                json_object_set_new(m, name, json_string(eq ? eq + 1 : ""));
        }
        json_decref(arr);
        return m;
}

static void env_changes(struct reasons *r, json_t *old_env, json_t *cur_env)
{
        const char *name;
        json_t *v;

        json_object_foreach (old_env, name, v) {
                const char *b = json_string_value(json_object_get(cur_env, name));
                if (!same(json_string_value(v), b))
                        value_change(r, "ENV", name, json_string_value(v), b);
        }
        json_object_foreach (cur_env, name, v)
                if (!json_object_get(old_env, name))
                        value_change(r, "ENV", name, NULL, json_string_value(v));
}

/* A word of octal digits (a mode) */
static bool octal_word(const char *s, size_t n)
{
        return n > 0 && strspn(s, "01234567") >= n;
}

/* A mode as `ls` would say it: "0644" is 644 */
static void mode_word(const char **s, size_t *n)
{
        while (*n > 3 && **s == '0') {
                (*s)++;
                (*n)--;
        }
}

/* "file:<path>" values: "<type> <octal mode> <sha256|link target|...>" (a symlink may have no
 * mode: "symlink <target>") */
static void file_change(struct reasons *r, const char *path, const char *a, const char *b)
{
        size_t ta, tb, ma, mb;

        if (!a) {
                reason(r, "%s added", path);
                return;
        }
        if (!b) {
                reason(r, "%s removed", path);
                return;
        }
        ta = strcspn(a, " ");
        tb = strcspn(b, " ");
        if (ta == tb && strncmp(a, b, ta) == 0 && a[ta] && b[tb]) {
                const char *pa = a + ta + 1, *pb = b + tb + 1;
                ma = strcspn(pa, " ");
                mb = strcspn(pb, " ");
                /* only the mode differs: say which */
                if (octal_word(pa, ma) && octal_word(pb, mb) &&
                    (ma != mb || strncmp(pa, pb, ma) != 0) && strcmp(pa + ma, pb + mb) == 0) {
                        mode_word(&pa, &ma);
                        mode_word(&pb, &mb);
                        reason(r, "%s mode changed (%.*s -> %.*s)", path, (int) ma, pa, (int) mb,
                               pb);
                        return;
                }
        }
        reason(r, "%s changed", path);
}

/* "build": "k=v k=v ..." settings; each that differs */
static void build_changes(struct reasons *r, const char *a, const char *b)
{
        _cleanup_free_ char *ca = xstrdup(a ? a : ""), *cb = xstrdup(b ? b : "");
        char *sa = NULL, *sb = NULL, *wa, *wb;
        size_t before = r->n;

        for (wa = strtok_r(ca, " ", &sa), wb = strtok_r(cb, " ", &sb); wa || wb;
             wa = wa ? strtok_r(NULL, " ", &sa) : NULL, wb = wb ? strtok_r(NULL, " ", &sb) : NULL) {
                char *ea = wa ? strchr(wa, '=') : NULL, *eb = wb ? strchr(wb, '=') : NULL;
                if (wa && wb && strcmp(wa, wb) == 0)
                        continue;
                if (!ea || !eb || ea - wa != eb - wb || strncmp(wa, wb, (size_t) (ea - wa)) != 0)
                        break; /* not the same list of settings: said below */
                reason(r, "build setting %.*s changed (%s -> %s)", (int) (ea - wa), wa, ea + 1,
                       eb + 1);
        }
        if (r->n == before)
                reason(r, "build settings changed");
}

/* config.<Key> as the instruction that sets it */
static const char *config_instr(const char *key)
{
        static const struct {
                const char *key, *instr;
        } map[] = {
                { "User", "USER" },
                { "WorkingDir", "WORKDIR" },
                { "Cmd", "CMD" },
                { "Entrypoint", "ENTRYPOINT" },
                { "Labels", "LABEL" },
                { "ExposedPorts", "EXPOSE" },
                { "Volumes", "VOLUME" },
                { "StopSignal", "STOPSIGNAL" },
                { "Healthcheck", "HEALTHCHECK" },
                { "Shell", "SHELL" },
                { "OnBuild", "ONBUILD" },
                { "Env", "ENV" },
        };

        for (size_t i = 0; i < ELEMENTSOF(map); i++)
                if (strcmp(map[i].key, key) == 0)
                        return map[i].instr;
        return NULL;
}

static void config_change(struct reasons *r, const char *key, const char *a, const char *b)
{
        const char *instr = config_instr(key);
        _cleanup_free_ char *ta = json_text(a), *tb = json_text(b), *sa = NULL, *sb = NULL;

        /* settings that are one word say what they were and are */
        if (instr && (strcmp(key, "User") == 0 || strcmp(key, "WorkingDir") == 0 ||
                      strcmp(key, "StopSignal") == 0)) {
                if (!ta || !*ta)
                        reason(r, "%s set to %s", instr, sb = shown(tb));
                else if (!tb || !*tb)
                        reason(r, "%s unset (was %s)", instr, sa = shown(ta));
                else
                        reason(r, "%s changed (%s -> %s)", instr, sa = shown(ta), sb = shown(tb));
        } else if (instr) {
                reason(r, "%s changed", instr);
        } else {
                reason(r, "config %s changed", key);
        }
}

/* The instruction's own field: its text as history shows it, or a JSON object of what decides
 * the result (the sources, the destination, the flags): then the members that differ */
static void instruction_change(struct reasons *r, const char *a, const char *b)
{
        _cleanup_json_ json_t *ja = a && *a == '{' ? json_loads(a, 0, NULL) : NULL;
        _cleanup_json_ json_t *jb = b && *b == '{' ? json_loads(b, 0, NULL) : NULL;
        _cleanup_free_ char *sa = NULL;
        struct kiln_buf names = KILN_BUF_INIT;
        const char *name;
        json_t *v;

        if (!json_is_object(ja) || !json_is_object(jb)) {
                if (a && *a != '{')
                        reason(r, "instruction changed (was %s)", sa = shown(a));
                else
                        reason(r, "instruction changed");
                return;
        }
        json_object_foreach (ja, name, v)
                if (!json_equal(v, json_object_get(jb, name)))
                        kiln_buf_addf(&names, NULL, "%s%s", names.len ? ", " : "", name);
        json_object_foreach (jb, name, v)
                if (!json_object_get(ja, name))
                        kiln_buf_addf(&names, NULL, "%s%s", names.len ? ", " : "", name);
        if (names.len)
                reason(r, "instruction changed (%s)", names.buf);
        else
                reason(r, "instruction changed");
        kiln_buf_release(&names);
}

static int cmp_str(const void *a, const void *b)
{
        return strcmp(*(const char *const *) a, *(const char *const *) b);
}

/* Every field name of both, sorted, once. */
static const char **union_names(json_t *old, json_t *cur, size_t *ret_n)
{
        const char **names =
                xcalloc(json_object_size(old) + json_object_size(cur) + 1, sizeof(char *));
        const char *name;
        json_t *v;
        size_t n = 0, i, k = 0;

        json_object_foreach (old, name, v)
                names[n++] = name;
        json_object_foreach (cur, name, v)
                if (!json_object_get(old, name))
                        names[n++] = name;
        qsort(names, n, sizeof(char *), cmp_str);
        for (i = 0; i < n; i++)
                if (k == 0 || strcmp(names[k - 1], names[i]) != 0)
                        names[k++] = names[i];
        *ret_n = k;
        return names;
}

static bool starts(const char *s, const char *prefix)
{
        return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* The order a step's own inputs are named in: what the instruction says, where it copies from,
 * its files, the build-args, then the rest */
static int rank_of(const char *name)
{
        if (strcmp(name, "instruction") == 0 || strcmp(name, "argv") == 0 ||
            strcmp(name, "path") == 0)
                return 0;
        if (strcmp(name, "from") == 0 || starts(name, "from."))
                return 1;
        if (strcmp(name, "files") == 0 || starts(name, "file:") || starts(name, "parent:") ||
            starts(name, "heredoc:") || starts(name, "item:"))
                return 2;
        if (starts(name, "env."))
                return 3;
        return 4;
}
#define RANKS 5

/* FROM: one reason, the most telling */
static char *explain_from(json_t *old, json_t *cur)
{
        const char *parent = field(cur, "parent");
        const char *name;
        json_t *v;

        if (!same(field(old, "parent"), parent))
                return xstrdup("FROM: base stage changed");
        if (!same(field(old, "base.layers"), field(cur, "base.layers")))
                return xstrdup("FROM: base image digest changed");
        if (!same(field(old, "base.onbuild"), field(cur, "base.onbuild")))
                return xstrdup("FROM: base image ONBUILD triggers changed");
        json_object_foreach (cur, name, v)
                if (!same(field(old, name), json_string_value(v)))
                        return xstrdup("FROM: base image config changed");
        json_object_foreach (old, name, v)
                if (!json_object_get(cur, name))
                        return xstrdup("FROM: base image config changed");
        return NULL;
}

/* What the comparison found */
struct found {
        struct reasons own;        /* the step's own inputs */
        struct reasons config;     /* the config it sees */
        json_t *old_env, *cur_env; /* config.Env as name -> value; NULL: not readable */
        bool parent_changed;       /* what earlier steps made */
        bool items_changed, files_said;
        bool path_said; /* WORKDIR's path: its config.WorkingDir says the same */
};

/* One field that may differ, `a` before and `b` now */
static void one_field(struct found *f, const char *name, const char *a, const char *b)
{
        if (same(a, b))
                return;
        if (strcmp(name, "parent") == 0 || strcmp(name, "image.rootfs") == 0) {
                f->parent_changed = true;
        } else if (strcmp(name, "instruction") == 0) {
                instruction_change(&f->own, a, b);
        } else if (strcmp(name, "argv") == 0) {
                reason(&f->own, "command changed");
        } else if (strcmp(name, "path") == 0) {
                _cleanup_free_ char *sa = shown(a), *sb = shown(b);
                reason(&f->own, "path changed (%s -> %s)", sa, sb);
                f->path_said = true;
        } else if (strcmp(name, "from") == 0) {
                reason(&f->own, "--from source changed");
        } else if (strcmp(name, "from.stage") == 0) {
                reason(&f->own, "--from stage changed");
        } else if (strcmp(name, "from.image") == 0) {
                reason(&f->own, "--from image changed");
        } else if (strcmp(name, "files") == 0) {
                reason(&f->own, "files changed");
                f->files_said = true;
        } else if (starts(name, "file:") || starts(name, "parent:")) {
                /* a source entry, or (--parents) a directory made above one */
                file_change(&f->own, strchr(name, ':') + 1, a, b);
                f->files_said = true;
        } else if (starts(name, "heredoc:")) {
                const char *what = !a ? "added" : !b ? "removed" : "changed";
                reason(&f->own, "heredoc %s %s", name + strlen("heredoc:"), what);
        } else if (starts(name, "item:")) {
                /* what a source matched: said by its files, else as "sources changed" */
                f->items_changed = true;
        } else if (starts(name, "env.")) {
                const char *var = name + strlen("env.");
                /* ENV's variables are said by config.Env; the others came from ARG */
                if (!f->old_env || !f->cur_env)
                        value_change(&f->own, "variable", var, a, b);
                else if (!json_object_get(f->old_env, var) && !json_object_get(f->cur_env, var))
                        value_change(&f->own, "build-arg", var, a, b);
        } else if (strcmp(name, "network") == 0 || strcmp(name, "security") == 0) {
                _cleanup_free_ char *sa = shown(a), *sb = shown(b);
                reason(&f->own, "%s changed (%s -> %s)", name, sa, sb);
        } else if (strcmp(name, "build") == 0) {
                build_changes(&f->own, a, b);
        } else if (strcmp(name, "config.Env") == 0) {
                if (f->old_env && f->cur_env)
                        env_changes(&f->config, f->old_env, f->cur_env);
                else
                        reason(&f->config, "ENV changed");
        } else if (strcmp(name, "config.WorkingDir") == 0 && f->path_said) {
                /* said as WORKDIR's path */
        } else if (starts(name, "config.")) {
                config_change(&f->config, name + strlen("config."), a, b);
        } else if (starts(name, "image.")) {
                _cleanup_free_ char *sa = shown(a), *sb = shown(b);
                reason(&f->config, "image %s changed (%s -> %s)", name + strlen("image."), sa, sb);
        } else {
                reason(&f->own, "%s changed", name);
        }
}

char *bld_cache_explain(json_t *old, json_t *cur, const char *prefix, const char *upstream,
                        bool *ret_upstream)
{
        struct found f = { 0 };
        _cleanup_free_ const char **names = NULL;
        const char *step = field(cur, "step");
        char *text = NULL;
        size_t n, i;
        int rank;

        if (ret_upstream)
                *ret_upstream = false;
        if (step && strcmp(step, "FROM") == 0 && same(field(old, "step"), step))
                return explain_from(old, cur);
        if (!same(field(old, "step"), step)) {
                const char *was = field(old, "instruction");
                _cleanup_free_ char *s = NULL;
                if (!was || *was == '{')
                        was = field(old, "step");
                s = shown(was);
                return xasprintf("%s: instruction changed (was %s)", prefix, s);
        }
        f.old_env = env_map(field(old, "config.Env"));
        f.cur_env = env_map(field(cur, "config.Env"));
        names = union_names(old, cur, &n);
        for (rank = 0; rank < RANKS; rank++)
                for (i = 0; i < n; i++)
                        if (rank_of(names[i]) == rank)
                                one_field(&f, names[i], field(old, names[i]), field(cur, names[i]));
        if (f.items_changed && !f.files_said)
                reason(&f.own, "sources changed");
        if (f.parent_changed && upstream) {
                /* the base changed: what the config says changed came with it */
                reasons_release(&f.config);
                if (f.own.n == 0) {
                        text = xstrdup(upstream);
                        if (ret_upstream)
                                *ret_upstream = true;
                }
        }
        if (!text && (f.own.n || f.config.n))
                text = reasons_text(prefix, &f.own, &f.config);
        else if (!text && f.parent_changed)
                text = xstrdup("an earlier step changed");
        else if (!text)
                text = xasprintf("%s: unchanged, but its cache entry is gone", prefix);
        reasons_release(&f.own);
        reasons_release(&f.config);
        json_decref(f.old_env);
        json_decref(f.cur_env);
        return text;
}
