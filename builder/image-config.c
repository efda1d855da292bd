/*
 * The image config as a build changes it: the metadata instructions (ENV, LABEL, EXPOSE, CMD,
 * ENTRYPOINT, USER, WORKDIR, VOLUME, STOPSIGNAL, HEALTHCHECK, SHELL, ONBUILD, MAINTAINER) as
 * Docker writes them into "config", the history entries and the diff_ids.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "builder/builder-internal.h"
#include "builder/common/strbuf.h"
#include "builder/common/xalloc.h"

/* a history entry whose time bld_config_settle_times() decides */
#define PENDING "kiln.pending"

#define DEFAULT_PATH "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

static json_t *object_member(json_t *o, const char *key)
{
        json_t *v = json_object_get(o, key);

        if (!json_is_object(v)) {
                v = json_object();
                json_object_set_new(o, key, v);
        }
        return v;
}

static json_t *array_member(json_t *o, const char *key)
{
        json_t *v = json_object_get(o, key);

        if (!json_is_array(v)) {
                v = json_array();
                json_object_set_new(o, key, v);
        }
        return v;
}

json_t *bld_config_run(json_t *config)
{
        return object_member(config, "config");
}

json_t *bld_config_new(const char *platform)
{
        _cleanup_free_ char *p = xstrdup(platform);
        const char *os, *arch, *variant;
        json_t *c;

        bld_platform_split(p, &os, &arch, &variant);
        c = json_pack("{s:s, s:s}", "architecture", arch, "os", os);
        if (variant && *variant)
                json_object_set_new(c, "variant", json_string(variant));
        bld_config_normalize(c);
        return c;
}

void bld_config_normalize(json_t *config)
{
        json_t *rootfs = object_member(config, "rootfs");

        object_member(config, "config");
        json_object_set_new(rootfs, "type", json_string("layers"));
        array_member(rootfs, "diff_ids");
        array_member(config, "history");
}

/* The index of NAME in an Env array, or -1. */
static ssize_t env_find(json_t *env, const char *name)
{
        size_t i, n = strlen(name);

        for (i = 0; i < json_array_size(env); i++) {
                const char *e = json_string_value(json_array_get(env, i));
                if (e && strncmp(e, name, n) == 0 && (e[n] == '=' || e[n] == '\0'))
                        return (ssize_t) i;
        }
        return -1;
}

void bld_config_set_env(json_t *config, const char *name, const char *value)
{
        json_t *env = array_member(bld_config_run(config), "Env");
        _cleanup_free_ char *entry = xasprintf("%s=%s", name, value);
        ssize_t i = env_find(env, name);

        if (i >= 0)
                json_array_set_new(env, (size_t) i, json_string(entry));
        else
                json_array_append_new(env, json_string(entry));
}

void bld_config_default_path(json_t *config)
{
        json_t *env = array_member(bld_config_run(config), "Env");

        if (env_find(env, "PATH") < 0)
                json_array_insert_new(env, 0, json_string(DEFAULT_PATH));
}

const char **bld_config_env(json_t *config, size_t *ret_n)
{
        json_t *env = json_object_get(bld_config_run(config), "Env");
        const char **v = xcalloc(json_array_size(env) + 1, sizeof(char *));
        size_t i, n = 0;

        for (i = 0; i < json_array_size(env); i++)
                if (json_is_string(json_array_get(env, i)))
                        v[n++] = json_string_value(json_array_get(env, i));
        *ret_n = n;
        return v;
}

const char *bld_config_string(json_t *config, const char *key)
{
        return kiln_json_get_string(bld_config_run(config), key);
}

void bld_config_add_history(json_t *config, int64_t created, const char *created_by, bool empty_layer)
{
        char when[64];
        time_t t = (time_t) created;
        struct tm tm;
        json_t *h;

        h = json_pack("{s:s, s:s}", "created_by", created_by, "comment", "kiln.dockerfile.v0");
        if (created == BLD_TIME_PENDING) {
                /* bld_config_settle_times() gives it a neighbour's time */
                json_object_set_new(h, PENDING, json_true());
        } else {
                gmtime_r(&t, &tm);
                strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
                json_object_set_new(h, "created", json_string(when));
        }
        if (empty_layer)
                json_object_set_new(h, "empty_layer", json_true());
        json_array_append_new(array_member(config, "history"), h);
}

void bld_config_add_diff_id(json_t *config, const char *diff_id)
{
        json_array_append_new(array_member(object_member(config, "rootfs"), "diff_ids"), json_string(diff_id));
}

/* An RFC 3339 time in UTC ("2024-05-01T10:00:00Z", fractions ignored); -1 when it is not one. */
static int64_t parse_time(const char *s)
{
        struct tm tm = { 0 };
        const char *end;

        if (!s)
                return -1;
        end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
        if (!end)
                return -1;
        if (*end == '.')
                for (end++; *end >= '0' && *end <= '9'; end++)
                        ;
        if (strcmp(end, "Z") != 0 && strcmp(end, "+00:00") != 0)
                return -1;
        return (int64_t) timegm(&tm);
}

void bld_config_settle_times(json_t *config, int64_t fallback)
{
        json_t *history = json_object_get(config, "history");
        size_t n = json_array_size(history), i, k;
        int64_t newest = -1, *t = xcalloc(n + 1, sizeof(*t));

        for (i = 0; i < n; i++) {
                json_t *h = json_array_get(history, i);
                t[i] = json_is_true(json_object_get(h, PENDING))
                               ? BLD_TIME_PENDING
                               : parse_time(json_string_value(json_object_get(h, "created")));
        }
        for (i = 0; i < n; i++) {
                json_t *h = json_array_get(history, i);
                int64_t when = -1;
                if (t[i] != BLD_TIME_PENDING)
                        continue;
                /* the step after it (metadata leading a stage's steps), else the one before */
                for (k = i + 1; k < n && when < 0; k++)
                        if (t[k] != BLD_TIME_PENDING)
                                when = t[k];
                for (k = i; k-- > 0 && when < 0;)
                        if (t[k] != BLD_TIME_PENDING)
                                when = t[k];
                t[i] = when >= 0 ? when : fallback;
                json_object_del(h, PENDING);
                bld_config_set_created(h, t[i]);
        }
        for (i = 0; i < n; i++)
                if (t[i] > newest)
                        newest = t[i];
        bld_config_set_created(config, newest >= 0 ? newest : fallback);
        free(t);
}

void bld_config_set_created(json_t *config, int64_t created)
{
        char when[64];
        time_t t = (time_t) created;
        struct tm tm;

        gmtime_r(&t, &tm);
        strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
        json_object_set_new(config, "created", json_string(when));
}

/* ---- the metadata instructions ---- */

static json_t *words_array(const struct df_word *w, size_t n)
{
        json_t *a = json_array();
        size_t i;

        for (i = 0; i < n; i++)
                json_array_append_new(a, json_string(w[i].text));
        return a;
}

/* CMD, ENTRYPOINT and HEALTHCHECK's shell form: the stage's SHELL plus the text. */
static json_t *shell_form(json_t *config, const char *text)
{
        json_t *shell = json_object_get(bld_config_run(config), "Shell");
        json_t *a = json_is_array(shell) && json_array_size(shell) ? json_deep_copy(shell)
                                                                 : json_pack("[s, s]", "/bin/sh", "-c");

        json_array_append_new(a, json_string(text));
        return a;
}

static json_t *cmdline(json_t *config, const struct df_instr *in)
{
        if (in->json)
                return words_array(in->cmd.argv, in->cmd.argc);
        return shell_form(config, in->cmd.argc ? in->cmd.argv[0].text : "");
}

/* Appends a JSON array as Docker's history shows it: ["a" "b"]. */
static void add_list(struct kiln_buf *b, json_t *a)
{
        size_t i;

        kiln_buf_addc(b, '[', NULL);
        for (i = 0; i < json_array_size(a); i++)
                kiln_buf_addf(b, NULL, "%s\"%s\"", i ? " " : "", json_string_value(json_array_get(a, i)));
        kiln_buf_addc(b, ']', NULL);
}

/* EXPOSE "80", "80/udp", "8000-8002/tcp" -> "80/tcp"... each port of a range. */
static int expose(json_t *ports, const char *spec, struct kiln_buf *hist, struct kiln_error **err)
{
        _cleanup_free_ char *s = xstrdup(spec);
        char *proto = strchr(s, '/'), *dash;
        unsigned long lo, hi, p;

        if (df_check_port(spec, err) < 0)
                return -1;
        if (proto)
                *proto++ = '\0';
        for (char *c = proto; c && *c; c++)
                *c = (char) (*c >= 'A' && *c <= 'Z' ? *c - 'A' + 'a' : *c);
        dash = strchr(s, '-');
        lo = strtoul(s, NULL, 10);
        hi = dash ? strtoul(dash + 1, NULL, 10) : lo;
        for (p = lo; p <= hi && p - lo < 65536; p++) {
                _cleanup_free_ char *key = xasprintf("%lu/%s", p, proto && *proto ? proto : "tcp");
                json_object_set_new(ports, key, json_object());
                kiln_buf_addf(hist, NULL, " %s", key);
        }
        return 0;
}

static json_t *nanoseconds(int64_t ns)
{
        return json_integer((json_int_t) ns);
}

int bld_config_apply(json_t *config, const struct df_instr *in, bool *ret_cmd_reset, char **ret_history,
                     struct kiln_error **err)
{
        json_t *run = bld_config_run(config);
        struct kiln_buf h = KILN_BUF_INIT;
        size_t i;

        kiln_buf_adds(&h, df_instr_name(in->kind), NULL);
        switch (in->kind) {
        case DF_INSTR_ENV:
                for (i = 0; i < in->kv.n; i++) {
                        const char *v = in->kv.items[i].value.text ? in->kv.items[i].value.text : "";
                        bld_config_set_env(config, in->kv.items[i].key.text, v);
                        kiln_buf_addf(&h, NULL, " %s=%s", in->kv.items[i].key.text, v);
                }
                break;
        case DF_INSTR_LABEL: {
                json_t *labels = object_member(run, "Labels");
                for (i = 0; i < in->kv.n; i++) {
                        const char *v = in->kv.items[i].value.text ? in->kv.items[i].value.text : "";
                        json_object_set_new(labels, in->kv.items[i].key.text, json_string(v));
                        kiln_buf_addf(&h, NULL, " %s=%s", in->kv.items[i].key.text, v);
                }
                break;
        }
        case DF_INSTR_EXPOSE: {
                json_t *ports = object_member(run, "ExposedPorts");
                for (i = 0; i < in->list.n; i++)
                        if (expose(ports, in->list.items[i].text, &h, err) < 0) {
                                kiln_buf_release(&h);
                                return -1;
                        }
                break;
        }
        case DF_INSTR_CMD:
        case DF_INSTR_ENTRYPOINT: {
                json_t *a = cmdline(config, in);
                kiln_buf_addc(&h, ' ', NULL);
                add_list(&h, a);
                json_object_set_new(run, in->kind == DF_INSTR_CMD ? "Cmd" : "Entrypoint", a);
                /* ENTRYPOINT resets a Cmd the stage inherited (Docker's rule). */
                if (in->kind == DF_INSTR_ENTRYPOINT && ret_cmd_reset && *ret_cmd_reset) {
                        json_object_del(run, "Cmd");
                        *ret_cmd_reset = false;
                }
                if (in->kind == DF_INSTR_CMD && ret_cmd_reset)
                        *ret_cmd_reset = false;
                break;
        }
        case DF_INSTR_SHELL: {
                json_t *a = words_array(in->cmd.argv, in->cmd.argc);
                kiln_buf_addc(&h, ' ', NULL);
                add_list(&h, a);
                json_object_set_new(run, "Shell", a);
                break;
        }
        case DF_INSTR_USER:
                json_object_set_new(run, "User", json_string(in->text.word.text));
                kiln_buf_addf(&h, NULL, " %s", in->text.word.text);
                break;
        case DF_INSTR_STOPSIGNAL:
                json_object_set_new(run, "StopSignal", json_string(in->text.word.text));
                kiln_buf_addf(&h, NULL, " %s", in->text.word.text);
                break;
        case DF_INSTR_MAINTAINER:
                json_object_set_new(config, "author", json_string(in->text.word.text));
                kiln_buf_addf(&h, NULL, " %s", in->text.word.text);
                break;
        case DF_INSTR_VOLUME: {
                json_t *vols = object_member(run, "Volumes");
                for (i = 0; i < in->list.n; i++) {
                        json_object_set_new(vols, in->list.items[i].text, json_object());
                        kiln_buf_addf(&h, NULL, " %s", in->list.items[i].text);
                }
                break;
        }
        case DF_INSTR_ONBUILD:
                json_array_append_new(array_member(run, "OnBuild"), json_string(in->onbuild.expression));
                kiln_buf_addf(&h, NULL, " %s", in->onbuild.expression);
                break;
        case DF_INSTR_HEALTHCHECK: {
                json_t *hc = json_object(), *test;
                const struct df_healthcheck *hcv = &in->health;
                if (hcv->none) {
                        test = json_pack("[s]", "NONE");
                } else if (hcv->shell) {
                        test = json_pack("[s, s]", "CMD-SHELL", hcv->n_test ? hcv->test[0].text : "");
                } else {
                        test = words_array(hcv->test, hcv->n_test);
                        json_array_insert_new(test, 0, json_string("CMD"));
                }
                kiln_buf_addc(&h, ' ', NULL);
                add_list(&h, test);
                json_object_set_new(hc, "Test", test);
                if (hcv->interval_ns)
                        json_object_set_new(hc, "Interval", nanoseconds(hcv->interval_ns));
                if (hcv->timeout_ns)
                        json_object_set_new(hc, "Timeout", nanoseconds(hcv->timeout_ns));
                if (hcv->start_period_ns)
                        json_object_set_new(hc, "StartPeriod", nanoseconds(hcv->start_period_ns));
                if (hcv->start_interval_ns)
                        json_object_set_new(hc, "StartInterval", nanoseconds(hcv->start_interval_ns));
                if (hcv->retries >= 0)
                        json_object_set_new(hc, "Retries", json_integer(hcv->retries));
                json_object_set_new(run, "Healthcheck", hc);
                break;
        }
        case DF_INSTR_FROM:
        case DF_INSTR_RUN:
        case DF_INSTR_ADD:
        case DF_INSTR_COPY:
        case DF_INSTR_WORKDIR:
        case DF_INSTR_ARG:
        case _DF_INSTR_MAX:
                kiln_buf_release(&h);
                return kiln_error_new(err, KILN_ERR_INVALID, "%s is not a metadata instruction",
                                      df_instr_name(in->kind));
        }
        *ret_history = kiln_buf_detach(&h, NULL);
        return 0;
}
