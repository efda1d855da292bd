/*
 * bld_cache_explain(): the words a cache miss is explained with, from synthetic key fields
 * (as struct bld_key keeps them) of a step's most recent build and of this one: each kind of
 * input (build-args, ENV, the command, config settings, COPY's result and its per-file
 * fields, FROM's base), the order and limit of reasons, an earlier step, the stage's FROM,
 * secrets kept out, and bld_cache_fields_short()'s long values.
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "builder/builder-internal.h"
#include "builder/common/xalloc.h"
#include "tests/unit/tap.h"

#define P1 "sha256:1111111111111111111111111111111111111111111111111111111111111111"
#define P2 "sha256:2222222222222222222222222222222222222222222222222222222222222222"
#define D1 "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define D2 "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"

/* A field object from "name", "value" pairs, NULL-terminated. */
static json_t *fields(const char *first, ...)
{
        json_t *o = json_object();
        va_list ap;
        const char *name = first;

        va_start(ap, first);
        while (name) {
                const char *value = va_arg(ap, const char *);
                json_object_set_new(o, name, json_string(value));
                name = va_arg(ap, const char *);
        }
        va_end(ap);
        return o;
}

/* The fields of a RUN with `argv`, the config's Env and User, and one env. field per
 * variable of `env` ("A=1", "B=2", NULL-terminated in the array). */
static json_t *run_fields(const char *parent, const char *argv, const char *config_env,
                          const char *user, const char *const *env)
{
        json_t *o =
                fields("parent", parent, "step", "RUN", "argv", argv, "build",
                       "epoch=-1 compression=0", "network", "\xff(null)", "security", "\xff(null)",
                       "image.architecture", "\"amd64\"", "image.rootfs", parent, NULL);

        if (config_env)
                json_object_set_new(o, "config.Env", json_string(config_env));
        if (user)
                json_object_set_new(o, "config.User", json_string(user));
        for (size_t i = 0; env && env[i]; i++) {
                const char *eq = strchr(env[i], '=');
                _cleanup_free_ char *name = xasprintf("env.%.*s", (int) (eq - env[i]), env[i]);
                json_object_set_new(o, name, json_string(eq + 1));
        }
        return o;
}

/* Checks the explanation of `cur` against `old` (both taken). */
static void expect(json_t *old, json_t *cur, const char *prefix, const char *upstream,
                   const char *want, bool want_upstream, const char *what)
{
        bool up = !want_upstream;
        _cleanup_free_ char *got = bld_cache_explain(old, cur, prefix, upstream, &up);

        tap_eq_str(got, want, "%s", what);
        tap_ok(up == want_upstream, "%s: %s the stage's FROM", what,
               want_upstream ? "blames" : "does not blame");
        json_decref(old);
        json_decref(cur);
}

#define ENV1 "[\"PATH=/usr/bin:/bin\",\"MODE=dev\"]"
#define ENV2 "[\"PATH=/usr/bin:/bin\",\"MODE=prod\"]"

static void test_run(void)
{
        const char *v12[] = { "PATH=/usr/bin:/bin", "MODE=dev", "VERSION=1.2", NULL };
        const char *v13[] = { "PATH=/usr/bin:/bin", "MODE=dev", "VERSION=1.3", NULL };
        const char *v13p[] = { "PATH=/usr/bin:/bin", "MODE=prod", "VERSION=1.3", NULL };
        const char *none[] = { "PATH=/usr/bin:/bin", "MODE=dev", NULL };
        const char *tok1[] = { "PATH=/usr/bin:/bin", "MODE=dev", "API_TOKEN=hunter2", NULL };
        const char *tok2[] = { "PATH=/usr/bin:/bin", "MODE=dev", "API_TOKEN=swordfish", NULL };
        const char *prod[] = { "PATH=/usr/bin:/bin", "MODE=prod", NULL };
        json_t *a, *b;

        expect(run_fields(P1, "[\"sh\",\"-c\",\"make\"]", ENV1, NULL, v12),
               run_fields(P1, "[\"sh\",\"-c\",\"make\"]", ENV1, NULL, v13), "RUN", NULL,
               "RUN: build-arg VERSION changed (1.2 -> 1.3)", false, "a build-arg's value");
        expect(run_fields(P1, "[\"sh\",\"-c\",\"make\"]", ENV1, NULL, none),
               run_fields(P1, "[\"sh\",\"-c\",\"make\"]", ENV1, NULL, v12), "RUN", NULL,
               "RUN: build-arg VERSION added", false, "a build-arg now set");
        expect(run_fields(P1, "[\"sh\",\"-c\",\"make\"]", ENV1, NULL, v12),
               run_fields(P1, "[\"sh\",\"-c\",\"make\"]", ENV1, NULL, none), "RUN", NULL,
               "RUN: build-arg VERSION removed", false, "a build-arg no longer set");
        expect(run_fields(P1, "[\"sh\",\"-c\",\"make\"]", ENV1, NULL, tok1),
               run_fields(P1, "[\"sh\",\"-c\",\"make\"]", ENV1, NULL, tok2), "RUN", NULL,
               "RUN: build-arg API_TOKEN changed", false,
               "a secret-looking build-arg's values are not shown");
        expect(run_fields(P1, "[\"sh\",\"-c\",\"make\"]", ENV1, NULL, none),
               run_fields(P1, "[\"sh\",\"-c\",\"make\"]", ENV2, NULL, prod), "RUN", NULL,
               "RUN: ENV MODE changed (dev -> prod)", false,
               "an ENV's value (said once, from the config)");
        expect(run_fields(P1, "[\"sh\",\"-c\",\"make\"]", "[\"PATH=/bin\"]", NULL, NULL),
               run_fields(P1, "[\"sh\",\"-c\",\"make\"]", "[\"PATH=/bin\",\"NEW=1\"]", NULL, NULL),
               "RUN", NULL, "RUN: ENV NEW added", false, "an ENV added");
        expect(run_fields(P1, "[\"sh\",\"-c\",\"make\"]", "[\"PATH=/bin\",\"OLD=1\"]", NULL, NULL),
               run_fields(P1, "[\"sh\",\"-c\",\"make\"]", "[\"PATH=/bin\"]", NULL, NULL), "RUN",
               NULL, "RUN: ENV OLD removed", false, "an ENV removed");
        expect(run_fields(P1, "[\"sh\",\"-c\",\"make\"]", ENV1, NULL, none),
               run_fields(P1, "[\"sh\",\"-c\",\"make test\"]", ENV1, NULL, none), "RUN", NULL,
               "RUN: command changed", false, "the command");
        expect(run_fields(P1, "[\"sh\",\"-c\",\"make\"]", ENV1, "\"root\"", none),
               run_fields(P1, "[\"sh\",\"-c\",\"make\"]", ENV1, "\"app\"", none), "RUN", NULL,
               "RUN: USER changed (root -> app)", false, "USER");
        expect(run_fields(P1, "[\"sh\",\"-c\",\"make\"]", ENV1, NULL, none),
               run_fields(P1, "[\"sh\",\"-c\",\"make\"]", ENV1, "\"app\"", none), "RUN", NULL,
               "RUN: USER set to app", false, "USER set");
        /* the step's own inputs first, then the config, three at most */
        expect(run_fields(P1, "[\"sh\",\"-c\",\"make\"]", ENV1, "\"root\"", v12),
               run_fields(P1, "[\"sh\",\"-c\",\"make test\"]", ENV2, "\"app\"", v13p), "RUN", NULL,
               "RUN: command changed, build-arg VERSION changed (1.2 -> 1.3), ENV MODE changed "
               "(dev -> prod) "
               "and 1 more",
               false, "several: the first three and how many more");

        a = run_fields(P1, "[\"sh\",\"-c\",\"make\"]", ENV1, NULL, none);
        b = run_fields(P1, "[\"sh\",\"-c\",\"make\"]", ENV1, NULL, none);
        json_object_set_new(b, "network", json_string("none"));
        json_object_set_new(b, "config.WorkingDir", json_string("\"/src\""));
        expect(a, b, "RUN", NULL, "RUN: network changed (default -> none), WORKDIR set to /src",
               false, "--network and WORKDIR");
        a = run_fields(P1, "[\"sh\",\"-c\",\"make\"]", ENV1, NULL, none);
        b = run_fields(P1, "[\"sh\",\"-c\",\"make\"]", ENV1, NULL, none);
        json_object_set_new(b, "build", json_string("epoch=5 compression=0"));
        json_object_set_new(b, "config.Cmd", json_string("[\"sh\"]"));
        expect(a, b, "RUN", NULL, "RUN: build setting epoch changed (-1 -> 5), CMD changed", false,
               "a build setting and CMD");
        expect(run_fields(P1, "[\"sh\",\"-c\",\"make\"]", ENV1, NULL, none),
               run_fields(P1, "[\"sh\",\"-c\",\"make\"]", ENV1, NULL, none), "RUN", NULL,
               "RUN: unchanged, but its cache entry is gone", false,
               "nothing changed: the entry is gone");
        a = run_fields(P1, "[\"sh\",\"-c\",\"make\"]", ENV1, NULL, v12);
        b = run_fields(P1, "[\"sh\",\"-c\",\"make\"]", ENV1, NULL, v13);
        json_object_set_new(b, "build", json_string("epoch=5 compression=0"));
        expect(a, b, "RUN", NULL,
               "RUN: build-arg VERSION changed (1.2 -> 1.3), build setting epoch changed (-1 -> 5)",
               false, "build-args before build settings");
}

static void test_earlier(void)
{
        const char *none[] = { "PATH=/usr/bin:/bin", "MODE=dev", NULL };
        const char *up = "FROM: base image digest changed";

        expect(run_fields(P1, "[\"true\"]", ENV1, NULL, none),
               run_fields(P2, "[\"true\"]", ENV1, NULL, none), "RUN", NULL,
               "an earlier step changed", false, "only the parent changed");
        expect(run_fields(P1, "[\"true\"]", ENV1, NULL, none),
               run_fields(P2, "[\"true\"]", ENV1, NULL, none), "RUN", up, up, true,
               "only the parent changed, after a changed FROM");
        /* a new base brings its own config: said as the base's change */
        expect(run_fields(P1, "[\"true\"]", ENV1, "\"a\"", none),
               run_fields(P2, "[\"true\"]", ENV2, "\"b\"", none), "RUN", up, up, true,
               "the parent and the config, after a changed FROM");
        expect(run_fields(P1, "[\"true\"]", ENV1, NULL, none),
               run_fields(P2, "[\"false\"]", ENV1, NULL, none), "RUN", up, "RUN: command changed",
               false, "the step's own change goes first");
        expect(run_fields(P1, "[\"true\"]", ENV1, "\"a\"", none),
               run_fields(P2, "[\"true\"]", ENV1, "\"b\"", none), "RUN", NULL,
               "RUN: USER changed (a -> b)", false, "an earlier step and a setting: the setting");
}

static json_t *copy_fields(const char *instruction, const char *first, ...)
{
        json_t *o = fields("parent", P1, "step", "COPY", "instruction", instruction, NULL);
        const char *name = first;
        va_list ap;

        va_start(ap, first);
        while (name) {
                const char *value = va_arg(ap, const char *);
                _cleanup_free_ char *f = xasprintf("file:%s", name);
                json_object_set_new(o, f, json_string(value));
                name = va_arg(ap, const char *);
        }
        va_end(ap);
        return o;
}

static void test_copy(void)
{
        const char *in = "COPY . /app";

        expect(fields("parent", P1, "step", "COPY", "instruction", "COPY a.txt /a.txt", "files", D1,
                      NULL),
               fields("parent", P1, "step", "COPY", "instruction", "COPY a.txt /a.txt", "files", D2,
                      NULL),
               "COPY a.txt /a.txt", NULL, "COPY a.txt /a.txt: files changed", false,
               "the result's digest");
        expect(copy_fields(in, "app/main.py", "reg 644 " D1, "app/run.sh", "reg 755 " D1, NULL),
               copy_fields(in, "app/main.py", "reg 644 " D2, "app/run.sh", "reg 755 " D1, NULL), in,
               NULL, "COPY . /app: app/main.py changed", false, "a file's content");
        expect(copy_fields(in, "app/main.py", "reg 644 " D1, NULL),
               copy_fields(in, "app/main.py", "reg 644 " D1, "app/new.py", "reg 644 " D2, NULL), in,
               NULL, "COPY . /app: app/new.py added", false, "a file added");
        expect(copy_fields(in, "app/main.py", "reg 644 " D1, "old.py", "reg 644 " D2, NULL),
               copy_fields(in, "app/main.py", "reg 644 " D1, NULL), in, NULL,
               "COPY . /app: old.py removed", false, "a file removed");
        expect(copy_fields(in, "app/run.sh", "reg 644 " D1, NULL),
               copy_fields(in, "app/run.sh", "reg 755 " D1, NULL), in, NULL,
               "COPY . /app: app/run.sh mode changed (644 -> 755)", false, "a mode alone");
        expect(copy_fields(in, "app/run.sh", "reg 644 " D1, NULL),
               copy_fields(in, "app/run.sh", "reg 755 " D2, NULL), in, NULL,
               "COPY . /app: app/run.sh changed", false, "mode and content");
        expect(copy_fields(in, "lib", "lnk 777 a", NULL),
               copy_fields(in, "lib", "lnk 777 b c", NULL), in, NULL, "COPY . /app: lib changed",
               false, "a link's target");
        expect(copy_fields(in, "x", "reg 644 " D1, NULL), copy_fields(in, "x", "dir 755 ", NULL),
               in, NULL, "COPY . /app: x changed", false, "a file that became a directory");
        expect(copy_fields(in, "a", "reg 644 " D1, "b", "reg 644 " D1, "c", "reg 644 " D1, "d",
                           "reg 644 " D1, "e", "reg 644 " D1, NULL),
               copy_fields(in, "a", "reg 644 " D2, "b", "reg 644 " D2, "c", "reg 644 " D2, "d",
                           "reg 644 " D2, "e", "reg 644 " D2, NULL),
               in, NULL, "COPY . /app: a changed, b changed, c changed and 2 more", false,
               "five files");
        expect(copy_fields("COPY . /src", "a", "reg 644 " D1, NULL),
               copy_fields(in, "a", "reg 644 " D1, NULL), in, NULL,
               "COPY . /app: instruction changed (was COPY . /src)", false,
               "the instruction edited");
        expect(fields("parent", P1, "step", "RUN", "argv", "[\"true\"]", NULL),
               copy_fields(in, "a", "reg 644 " D1, NULL), in, NULL,
               "COPY . /app: instruction changed (was RUN)", false,
               "another kind of step here before");
        {
                json_t *a =
                        copy_fields("COPY --from=build /out /app", "out/bin", "reg 755 " D1, NULL);
                json_t *b =
                        copy_fields("COPY --from=build /out /app", "out/bin", "reg 755 " D1, NULL);
                json_object_set_new(a, "from", json_string(P1));
                json_object_set_new(b, "from", json_string(P2));
                expect(a, b, "COPY --from=build /out /app", NULL,
                       "COPY --from=build /out /app: --from source changed", false,
                       "COPY --from's source");
        }
}

/* The fields as the source-keyed COPY writes them: "file 0644 <digest>", "symlink <target>",
 * "dir 0755", "item:<n>:<top>" for what a source matched, "heredoc:<name>", "from.stage", and
 * the instruction as a JSON object of what decides the result. */
static void test_copy_sources(void)
{
        const char *in = "COPY . /app";
        json_t *a, *b;

        expect(copy_fields(in, "app/main.py", "file 0644 " D1, NULL),
               copy_fields(in, "app/main.py", "file 0644 " D2, NULL), in, NULL,
               "COPY . /app: app/main.py changed", false, "sources: a file's content");
        expect(copy_fields(in, "app/run.sh", "file 0644 " D1, NULL),
               copy_fields(in, "app/run.sh", "file 0755 " D1, NULL), in, NULL,
               "COPY . /app: app/run.sh mode changed (644 -> 755)", false, "sources: a mode alone");
        expect(copy_fields(in, "bin", "file 04755 " D1, NULL),
               copy_fields(in, "bin", "file 0755 " D1, NULL), in, NULL,
               "COPY . /app: bin mode changed (4755 -> 755)", false, "sources: setuid dropped");
        expect(copy_fields(in, "lib", "symlink a", NULL), copy_fields(in, "lib", "symlink b", NULL),
               in, NULL, "COPY . /app: lib changed", false,
               "sources: a symlink's target (no mode to blame)");
        expect(copy_fields(in, "app", "dir 0755", NULL), copy_fields(in, "app", "dir 0700", NULL),
               in, NULL, "COPY . /app: app mode changed (755 -> 700)", false,
               "sources: a directory's mode");

        a = copy_fields(in, "new.py", "file 0644 " D1, NULL);
        b = copy_fields(in, "new.py", "file 0644 " D1, "other.py", "file 0644 " D1, NULL);
        json_object_set_new(a, "item:0:.", json_string(". kept_from=0"));
        json_object_set_new(b, "item:0:.", json_string(". kept_from=0"));
        json_object_set_new(b, "item:1:other.py", json_string("other.py kept_from=0"));
        expect(a, b, in, NULL, "COPY . /app: other.py added", false,
               "sources: a file and its item added");
        a = copy_fields(in, "x", "file 0644 " D1, NULL);
        b = copy_fields(in, "x", "file 0644 " D1, NULL);
        json_object_set_new(a, "item:0:x", json_string("x kept_from=0"));
        json_object_set_new(b, "item:0:x", json_string("x kept_from=1"));
        expect(a, b, in, NULL, "COPY . /app: sources changed", false, "sources: only what matched");

        a = copy_fields("{\"dest\":\"/app\",\"chown\":null,\"srcs\":[\".\"]}", "x", "file 0644 " D1,
                        NULL);
        b = copy_fields("{\"dest\":\"/srv\",\"chown\":\"app\",\"srcs\":[\".\"]}", "x",
                        "file 0644 " D1, NULL);
        expect(a, b, "COPY --chown=app . /srv", NULL,
               "COPY --chown=app . /srv: instruction changed (dest, chown)", false,
               "sources: the instruction's members that differ");
        expect(copy_fields("{\"dest\":\"/app\"}", NULL),
               fields("parent", P1, "step", "RUN", "argv", "[]", NULL), "RUN", NULL,
               "RUN: instruction changed (was COPY)", false, "sources: a COPY was here before");

        /* what the instruction says first, then the files */
        a = copy_fields("{\"dest\":\"/app\"}", "a", "file 0644 " D1, NULL);
        b = copy_fields("{\"dest\":\"/srv\"}", "a", "file 0644 " D2, NULL);
        expect(a, b, "COPY a /srv", NULL, "COPY a /srv: instruction changed (dest), a changed",
               false, "sources: the instruction before the files");
        a = copy_fields("COPY --from=build /out /app", NULL);
        b = copy_fields("COPY --from=build /out /app", NULL);
        json_object_set_new(a, "from.stage", json_string(P1));
        json_object_set_new(b, "from.stage", json_string(P2));
        expect(a, b, "COPY --from=build /out /app", NULL,
               "COPY --from=build /out /app: --from stage changed", false,
               "sources: the --from stage");
        a = copy_fields("COPY <<EOF /x", NULL);
        b = copy_fields("COPY <<EOF /x", NULL);
        json_object_set_new(a, "heredoc:EOF", json_string("file 0644 " D1));
        json_object_set_new(b, "heredoc:EOF", json_string("file 0644 " D2));
        expect(a, b, "COPY <<EOF /x", NULL, "COPY <<EOF /x: heredoc EOF changed", false,
               "sources: a heredoc");
}

static void test_workdir(void)
{
        json_t *a = fields("parent", P1, "step", "WORKDIR", "path", "/app", "config.WorkingDir",
                           "\"/app\"", NULL);
        json_t *b = fields("parent", P1, "step", "WORKDIR", "path", "/srv", "config.WorkingDir",
                           "\"/srv\"", NULL);

        expect(a, b, "WORKDIR /srv", NULL, "WORKDIR /srv: path changed (/app -> /srv)", false,
               "WORKDIR's path, said once");
        a = fields("parent", P1, "step", "WORKDIR", "path", "/app", "config.User", "\"a\"", NULL);
        b = fields("parent", P1, "step", "WORKDIR", "path", "/app", "config.User", "\"b\"", NULL);
        expect(a, b, "WORKDIR /app", NULL, "WORKDIR /app: USER changed (a -> b)", false,
               "WORKDIR under another USER");
}

static void test_from(void)
{
        expect(fields("parent", "", "step", "FROM", "base.layers", D1 " " D1, "base.onbuild",
                      "null", "config.Env", ENV1, NULL),
               fields("parent", "", "step", "FROM", "base.layers", D2 " " D2, "base.onbuild",
                      "null", "config.Env", ENV2, NULL),
               "FROM", NULL, "FROM: base image digest changed", false, "another base image");
        expect(fields("parent", "", "step", "FROM", "base.layers", D1, "base.onbuild", "null",
                      "config.Env", ENV1, NULL),
               fields("parent", "", "step", "FROM", "base.layers", D1, "base.onbuild", "null",
                      "config.Env", ENV2, NULL),
               "FROM", NULL, "FROM: base image config changed", false, "the base's config alone");
        expect(fields("parent", "", "step", "FROM", "base.layers", D1, "base.onbuild", "null",
                      NULL),
               fields("parent", "", "step", "FROM", "base.layers", D1, "base.onbuild",
                      "[\"RUN x\"]", NULL),
               "FROM", NULL, "FROM: base image ONBUILD triggers changed", false,
               "the base's triggers");
        expect(fields("parent", P1, "step", "FROM", "base.layers", D1, NULL),
               fields("parent", P2, "step", "FROM", "base.layers", D2, NULL), "FROM", NULL,
               "FROM: base stage changed", false, "an earlier stage as the base");
        {
                json_t *a = fields("parent", "", "step", "FROM", "base.layers", D1, NULL);
                json_t *b = fields("parent", "", "step", "FROM", "base.layers", D1, NULL);
                _cleanup_free_ char *why = bld_cache_explain(a, b, "FROM", NULL, NULL);
                tap_ok(why == NULL, "FROM unchanged: no reason");
                json_decref(a);
                json_decref(b);
        }
}

static void test_short(void)
{
        char long_value[300], *s;
        json_t *f, *sh;
        const char *v;

        memset(long_value, 'x', sizeof(long_value) - 1);
        long_value[sizeof(long_value) - 1] = '\0';
        f = fields("argv", long_value, "config.Env", long_value, "step", "RUN", NULL);
        sh = bld_cache_fields_short(f);
        v = json_string_value(json_object_get(sh, "argv"));
        tap_ok(v && strlen(v) < 130 && strstr(v, "... sha256:") && strncmp(v, "xxxx", 4) == 0,
               "a long value is kept as a prefix and a digest: %s", v ? v : "(none)");
        tap_eq_str(json_string_value(json_object_get(sh, "config.Env")), long_value,
                   "Env is kept whole up to 4096 bytes");
        tap_eq_str(json_string_value(json_object_get(sh, "step")), "RUN", "a short value as it is");
        json_decref(f);
        json_decref(sh);

        /* a multi-byte character is never cut */
        s = xstrdup("\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3"
                    "\xa9\xc3\xa9"
                    "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3"
                    "\xa9\xc3\xa9"
                    "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3"
                    "\xa9\xc3\xa9"
                    "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3"
                    "\xa9\xc3\xa9"
                    "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3"
                    "\xa9\xc3\xa9");
        f = fields("argv", s, NULL);
        sh = bld_cache_fields_short(f);
        tap_ok(json_object_get(sh, "argv") != NULL,
               "a long UTF-8 value is shortened on a character boundary");
        json_decref(f);
        json_decref(sh);
        free(s);
}

int main(void)
{
        test_run();
        test_earlier();
        test_copy();
        test_copy_sources();
        test_workdir();
        test_from();
        test_short();
        return tap_done();
}
