/*
 * WWW-Authenticate parsing and credential lookup, storage and removal: docker config.json
 * in a temporary HOME or DOCKER_CONFIG, containers' auth.json through REGISTRY_AUTH_FILE and
 * XDG_RUNTIME_DIR, and a fake docker-credential helper (a shell script first on PATH that keeps
 * its entries as files). Every error message seen is kept, and none may hold a secret.
 */
#include <ftw.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "builder/common/json-util.h"
#include "builder/common/xalloc.h"
#include "layers/layers.h"
#include "registry/registry.h"
#include "tests/unit/tap.h"

#define HUB_SECRET   "s3cret-hub-pw"
#define LOCAL_SECRET "pw-local-5000"
#define AUTHJSON_PW  "carol-pw-from-auth-json"
#define STORED_PW    "St0red:pass with spaces"
#define HELPER_PW    "helper-secret-value"
#define LEAKY_PW     "TopSecret-123"
#define TRUNCATED_PW "truncated-secret-in-broken-file"

static const char *const secrets[] = {
        HUB_SECRET, LOCAL_SECRET, AUTHJSON_PW, STORED_PW, HELPER_PW, LEAKY_PW, TRUNCATED_PW,
};

static char *root;      /* the temporary directory */
static char **messages; /* every formatted error message seen */
static size_t n_messages, alloc_messages;

static const char fake_helper[] =
        "#!/bin/sh\n"
        "# docker-credential-fake: keeps each entry as a file in $FAKE_HELPER_DIR\n"
        "dir=\"${FAKE_HELPER_DIR:?}\"\n"
        "input=$(cat)\n"
        "printf '%s %s\\n' \"$1\" \"$input\" >> \"$dir/log\"\n"
        "name() { printf %s \"$1\" | tr -c 'A-Za-z0-9' '_'; }\n"
        "case \"$1\" in\n"
        "get)\n"
        "        case \"$input\" in\n"
        "        broken.example) echo 'boom: the keychain is locked' >&2; exit 4;;\n"
        "        garbage.example) echo 'this is not json'; exit 0;;\n"
        "        huge.example) head -c 1100000 /dev/zero | tr '\\0' a; exit 0;;\n"
        "        token.example) echo '{\"Username\":\"<token>\",\"Secret\":\"refresh-token\"}';"
        " exit 0;;\n"
        "        esac\n"
        "        f=\"$dir/entry-$(name \"$input\")\"\n"
        "        if [ -f \"$f\" ]; then cat \"$f\"; exit 0; fi\n"
        "        echo 'credentials not found in native keychain'; exit 1;;\n"
        "store)\n"
        "        url=$(printf %s \"$input\" | sed -n "
        "'s/.*\"ServerURL\":\"\\([^\"]*\\)\".*/\\1/p')\n"
        "        if [ \"$url\" = leaky.example ]; then echo \"cannot store $input\" >&2; exit 3; "
        "fi\n"
        "        printf %s \"$input\" > \"$dir/entry-$(name \"$url\")\";;\n"
        "erase)\n"
        "        f=\"$dir/entry-$(name \"$input\")\"\n"
        "        if [ -f \"$f\" ]; then rm \"$f\"; exit 0; fi\n"
        "        echo 'credentials not found in native keychain'; exit 1;;\n"
        "*)\n"
        "        echo \"unknown verb $1\" >&2; exit 2;;\n"
        "esac\n";

/* A helper that answers without reading its input. */
static const char quick_helper[] = "#!/bin/sh\n"
                                   "echo '{\"Username\":\"quick\",\"Secret\":\"quick-pw\"}'\n";

static void keep(struct kiln_error *e)
{
        if (!e)
                return;
        XGROW(messages, n_messages + 1, alloc_messages);
        messages[n_messages++] = kiln_error_format(e);
}

static char *path_of(const char *rel)
{
        return xasprintf("%s/%s", root, rel);
}

static void write_file(const char *rel, const char *text, mode_t mode)
{
        _cleanup_free_ char *p = path_of(rel);
        FILE *f = fopen(p, "we");

        if (!f) {
                tap_ok(false, "create '%s'", p);
                return;
        }
        fputs(text, f);
        fclose(f);
        chmod(p, mode);
}

static void make_dir(const char *rel)
{
        _cleanup_free_ char *p = path_of(rel);

        mkdir(p, 0700);
}

static bool exists(const char *rel)
{
        _cleanup_free_ char *p = path_of(rel);

        return access(p, F_OK) == 0;
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
        remove(p);
        return 0;
}

static void set_env(const char *name, const char *rel)
{
        _cleanup_free_ char *p = rel ? path_of(rel) : NULL;

        if (p)
                setenv(name, p, 1);
        else
                unsetenv(name);
}

static char *b64(const char *s)
{
        return layer_base64_encode(s, strlen(s));
}

/* Looks a host up and checks the outcome: want_user NULL means an error of `kind`. */
static void expect_lookup(const char *host, const char *want_user, const char *want_pw,
                          enum kiln_errkind kind, const char *what)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct reg_credentials c = { 0 };
        int r = reg_credentials_lookup(host, &c, &err);

        keep(err);
        if (!want_user) {
                if (!tap_ok(r < 0 && err && err->kind == kind, "%s: %s error", what,
                            kiln_errkind_name(kind)))
                        tap_diag("got r=%d kind=%s msg=%s", r,
                                 err ? kiln_errkind_name(err->kind) : "-", err ? err->msg : "-");
                reg_credentials_release(&c);
                return;
        }
        if (!tap_ok(r == 0, "%s: found", what)) {
                tap_diag("error: %s", err ? err->msg : "-");
                return;
        }
        tap_eq_str(c.username, want_user, "%s: username", what);
        tap_eq_str(c.password, want_pw, "%s: password", what);
        reg_credentials_release(&c);
        tap_ok(!c.username && !c.password && !c.identity_token, "%s: release clears", what);
}

/* ------------------------------------------------------------------------------------ */

static void test_challenges(void)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct reg_challenge *c = NULL;
        size_t n = 0;
        char *big;

        tap_ok(reg_challenges_parse("Bearer realm=\"https://auth.example/token\","
                                    "service=\"registry.example\","
                                    "scope=\"repository:a/b:pull,push\", Basic realm=\"x\"",
                                    &c, &n, &err) == 0 &&
                       n == 2,
               "two challenges");
        if (n == 2) {
                tap_eq_str(c[0].scheme, "bearer", "scheme lower case");
                tap_eq_int((long long) c[0].n, 3, "bearer has three parameters");
                tap_eq_str(reg_challenge_param(&c[0], "realm"), "https://auth.example/token",
                           "realm");
                tap_eq_str(reg_challenge_param(&c[0], "service"), "registry.example", "service");
                tap_eq_str(reg_challenge_param(&c[0], "scope"), "repository:a/b:pull,push",
                           "a comma inside quotes stays");
                tap_eq_str(c[1].scheme, "basic", "second scheme");
                tap_eq_str(reg_challenge_param(&c[1], "realm"), "x", "second realm");
                tap_ok(reg_challenge_param(&c[1], "service") == NULL, "absent parameter");
        }
        reg_challenges_free(c, n);

        tap_ok(reg_challenges_parse("BEARER Realm=\"r\", SERVICE=svc", &c, &n, &err) == 0 && n == 1,
               "upper-case scheme and keys");
        if (n == 1) {
                tap_eq_str(c[0].scheme, "bearer", "scheme folded");
                tap_eq_str(c[0].keys[0], "realm", "key folded");
                tap_eq_str(c[0].keys[1], "service", "second key folded");
                tap_eq_str(reg_challenge_param(&c[0], "REALM"), "r", "lookup ignores case");
                tap_eq_str(reg_challenge_param(&c[0], "Service"), "svc", "token value");
        }
        reg_challenges_free(c, n);

        tap_ok(reg_challenges_parse("Basic realm=\"a \\\"quoted\\\" \\\\ back\\slash, too\"", &c,
                                    &n, &err) == 0 &&
                       n == 1,
               "escapes");
        if (n == 1)
                tap_eq_str(reg_challenge_param(&c[0], "realm"), "a \"quoted\" \\ backslash, too",
                           "escapes resolved");
        reg_challenges_free(c, n);

        tap_ok(reg_challenges_parse("  Bearer \t realm = \"r\" ,  service =svc  ,, ,scope=\"s\"  ",
                                    &c, &n, &err) == 0 &&
                       n == 1 && c[0].n == 3,
               "whitespace and empty elements");
        if (n == 1 && c[0].n == 3)
                tap_eq_str(reg_challenge_param(&c[0], "scope"), "s", "after empty elements");
        reg_challenges_free(c, n);

        tap_ok(reg_challenges_parse(",, Basic realm=\"x\",,", &c, &n, &err) == 0 && n == 1,
               "leading and trailing empty elements");
        reg_challenges_free(c, n);

        tap_ok(reg_challenges_parse("Negotiate YWxhZGRpbg==, Basic realm=\"x\", Digest", &c, &n,
                                    &err) == 0 &&
                       n == 3,
               "token68 and a bare scheme");
        if (n == 3) {
                tap_eq_str(reg_challenge_param(&c[0], ""), "YWxhZGRpbg==", "token68 kept");
                tap_eq_str(c[2].scheme, "digest", "bare scheme");
                tap_eq_int((long long) c[2].n, 0, "bare scheme has no parameters");
        }
        reg_challenges_free(c, n);

        tap_ok(reg_challenges_parse("Bearer realm=\"\"", &c, &n, &err) == 0 && n == 1 &&
                       strcmp(c[0].values[0], "") == 0,
               "empty quoted value");
        reg_challenges_free(c, n);
        reg_challenges_free(NULL, 0);

        static const char *const garbage[] = {
                "Bearer realm=\"unterminated",
                "Bearer realm=\"ends in a backslash\\",
                "realm=\"x\"",
                "Bearer realm=x, service=",
                "Bearer realm=\"x\" service=\"y\"",
                "\"quoted\"",
                "",
                ",, ,",
                "Bearer realm=a b",
                "Bearer =x",
                "Bearer realm=\"a\x01b\"",
                "Bearer realm=\"x\",, =y",
                "Bearer realm=\"x\"garbage",
                "B@d realm=x",
        };
        for (size_t i = 0; i < ELEMENTSOF(garbage); i++) {
                c = NULL;
                n = 0;
                err = kiln_error_free(err);
                tap_ok(reg_challenges_parse(garbage[i], &c, &n, &err) < 0 && err &&
                               err->kind == KILN_ERR_PARSE && c == NULL,
                       "garbage %zu is a parse error", i);
                if (!err)
                        reg_challenges_free(c, n);
                keep(err);
        }

        err = kiln_error_free(err);
        big = xmalloc(16385 + 1);
        memcpy(big, "Bearer realm=\"", 14);
        memset(big + 14, 'a', 16384 - 15);
        big[16383] = '"';
        big[16384] = '\0';
        tap_ok(reg_challenges_parse(big, &c, &n, &err) == 0 && n == 1 &&
                       strlen(c[0].values[0]) == 16384 - 15,
               "a header of 16 KiB is read");
        reg_challenges_free(c, n);
        memcpy(big + 16383, "a\"", 3);
        tap_ok(reg_challenges_parse(big, &c, &n, &err) < 0 && err->kind == KILN_ERR_LIMIT,
               "a header over 16 KiB is a limit error");
        free(big);
}

/* ------------------------------------------------------------------------------------ */

static void test_docker_config(void)
{
        _cleanup_free_ char *hub = b64("alice:" HUB_SECRET), *reg = b64("dave:dave-pw");
        _cleanup_free_ char *cfg = NULL;

        set_env("HOME", "home");
        unsetenv("DOCKER_CONFIG");
        unsetenv("REGISTRY_AUTH_FILE");
        unsetenv("XDG_RUNTIME_DIR");
        make_dir("home");
        expect_lookup("docker.io", NULL, NULL, KILN_ERR_NOTFOUND, "no config at all");

        make_dir("home/.docker");
        cfg = xasprintf("{\n"
                        "  \"auths\": {\n"
                        "    \"https://index.docker.io/v1/\": { \"auth\": \"%s\" },\n"
                        "    \"http://localhost:5000\": { \"username\": \"bob\",\n"
                        "                               \"password\": \"" LOCAL_SECRET "\" },\n"
                        "    \"registry.example/v2/\": { \"auth\": \"%s\" },\n"
                        "    \"https://ghcr.io\": { \"identitytoken\": \"gh-token\" },\n"
                        "    \"empty.example\": {}\n"
                        "  },\n"
                        "  \"psFormat\": \"table {{.ID}}\"\n"
                        "}\n",
                        hub, reg);
        write_file("home/.docker/config.json", cfg, 0600);

        expect_lookup("docker.io", "alice", HUB_SECRET, 0, "docker.io from the v1 URL key");
        expect_lookup("index.docker.io", "alice", HUB_SECRET, 0, "index.docker.io");
        expect_lookup("registry-1.docker.io", "alice", HUB_SECRET, 0, "registry-1.docker.io");
        expect_lookup("https://index.docker.io/v1/", "alice", HUB_SECRET, 0, "a URL as host");
        expect_lookup("localhost:5000", "bob", LOCAL_SECRET, 0, "http:// key, user/password");
        expect_lookup("registry.example", "dave", "dave-pw", 0, "key with a path");
        expect_lookup("quay.io", NULL, NULL, KILN_ERR_NOTFOUND, "unknown host");
        expect_lookup("empty.example", NULL, NULL, KILN_ERR_NOTFOUND, "empty entry");
        expect_lookup("localhost:5001", NULL, NULL, KILN_ERR_NOTFOUND, "other port");

        {
                _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
                struct reg_credentials c = { 0 };

                tap_ok(reg_credentials_lookup("ghcr.io", &c, &err) == 0, "identity token entry");
                tap_eq_str(c.identity_token, "gh-token", "identity token");
                tap_eq_str(c.username, "", "no username");
                reg_credentials_release(&c);
                keep(err);
        }

        /* A containers-style "docker.io" key, and DOCKER_CONFIG over HOME. */
        make_dir("dc");
        {
                _cleanup_free_ char *alt = b64("erin:erin-pw"), *text = NULL;

                text = xasprintf("{\"auths\": {\"docker.io\": {\"auth\": \"%s\"}}}", alt);
                write_file("dc/config.json", text, 0600);
        }
        set_env("DOCKER_CONFIG", "dc");
        expect_lookup("docker.io", "erin", "erin-pw", 0, "DOCKER_CONFIG wins over HOME");
        unsetenv("DOCKER_CONFIG");

        /* Broken files. */
        write_file("dc/config.json", "{\"auths\": {\"docker.io\": {\"auth\": \"not base64!\"}}}",
                   0600);
        set_env("DOCKER_CONFIG", "dc");
        expect_lookup("docker.io", NULL, NULL, KILN_ERR_PARSE, "bad base64");
        {
                _cleanup_free_ char *nocolon = b64("no-colon-here"), *text = NULL;

                text = xasprintf("{\"auths\": {\"docker.io\": {\"auth\": \"%s\"}}}", nocolon);
                write_file("dc/config.json", text, 0600);
        }
        expect_lookup("docker.io", NULL, NULL, KILN_ERR_PARSE, "auth without a colon");
        write_file("dc/config.json", "{\"auths\": {\"docker.io\": {\"password\": \"" TRUNCATED_PW,
                   0600);
        expect_lookup("docker.io", NULL, NULL, KILN_ERR_PARSE, "truncated JSON");
        write_file("dc/config.json", "{\"auths\": [\"" TRUNCATED_PW "\"]}", 0600);
        expect_lookup("docker.io", NULL, NULL, KILN_ERR_PARSE, "auths not an object");
        write_file("dc/config.json", "[\"" TRUNCATED_PW "\"]", 0600);
        expect_lookup("docker.io", NULL, NULL, KILN_ERR_PARSE, "config not an object");
        unsetenv("DOCKER_CONFIG");
}

static void test_auth_json(void)
{
        _cleanup_free_ char *carol = b64("carol:" AUTHJSON_PW), *text = NULL;

        make_dir("run");
        make_dir("run/containers");
        text = xasprintf("{\"auths\": {\"docker.io\": {\"auth\": \"%s\"}}}", carol);
        write_file("auth.json", text, 0600);
        write_file("run/containers/auth.json", text, 0600);

        set_env("REGISTRY_AUTH_FILE", "auth.json");
        expect_lookup("docker.io", "carol", AUTHJSON_PW, 0, "auth.json comes first");
        expect_lookup("localhost:5000", "bob", LOCAL_SECRET, 0,
                      "a host auth.json lacks falls back to the docker config");
        set_env("REGISTRY_AUTH_FILE", "missing.json");
        expect_lookup("docker.io", "alice", HUB_SECRET, 0, "a missing auth file is skipped");
        unsetenv("REGISTRY_AUTH_FILE");

        set_env("XDG_RUNTIME_DIR", "run");
        expect_lookup("docker.io", "carol", AUTHJSON_PW, 0,
                      "$XDG_RUNTIME_DIR/containers/auth.json");
        set_env("REGISTRY_AUTH_FILE", "auth.json");
        write_file("auth.json", "{\"auths\": {\"docker.io\": {\"auth\": \"" TRUNCATED_PW, 0600);
        expect_lookup("docker.io", NULL, NULL, KILN_ERR_PARSE, "a broken auth.json");
        unsetenv("REGISTRY_AUTH_FILE");
        unsetenv("XDG_RUNTIME_DIR");
}

static void test_store_erase(void)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_json_ json_t *j = NULL;
        _cleanup_free_ char *path = path_of("home/.docker/config.json");
        _cleanup_free_ char *want = b64("frank:" STORED_PW);
        struct stat st;

        tap_ok(reg_credentials_store("localhost:5000", "frank", STORED_PW, &err) == 0,
               "store without a helper");
        keep(err);
        j = kiln_json_load_file(path, 1 << 20, NULL);
        tap_ok(j != NULL, "the config is still JSON");
        tap_eq_str(kiln_json_get_string(j, "psFormat"), "table {{.ID}}", "other keys kept");
        tap_ok(json_object_get(json_object_get(j, "auths"), "https://ghcr.io") != NULL,
               "other entries kept");
        tap_eq_str(kiln_json_get_string(
                           json_object_get(json_object_get(j, "auths"), "localhost:5000"), "auth"),
                   want, "auths[host].auth is base64 of user:password");
        tap_ok(stat(path, &st) == 0 && (st.st_mode & 07777) == 0600, "mode 0600");
        expect_lookup("localhost:5000", "frank", STORED_PW, 0,
                      "the exact key wins over http://localhost:5000");
        json_decref(TAKE_PTR(j));

        tap_ok(reg_credentials_store("docker.io", "gina", "gina-pw", &err) == 0,
               "store for docker.io");
        j = kiln_json_load_file(path, 1 << 20, NULL);
        tap_ok(json_object_get(json_object_get(j, "auths"), "https://index.docker.io/v1/") !=
                               NULL &&
                       json_object_get(json_object_get(j, "auths"), "docker.io") == NULL,
               "docker.io is written as https://index.docker.io/v1/");
        expect_lookup("docker.io", "gina", "gina-pw", 0, "stored docker.io credentials");
        json_decref(TAKE_PTR(j));

        tap_ok(reg_credentials_store("x.example", "a:b", "pw", &err) < 0 &&
                       err->kind == KILN_ERR_INVALID,
               "a username with ':' is refused");
        keep(err);

        err = kiln_error_free(err);
        tap_ok(reg_credentials_erase("localhost:5000", &err) == 0, "erase");
        j = kiln_json_load_file(path, 1 << 20, NULL);
        tap_ok(json_object_get(json_object_get(j, "auths"), "localhost:5000") == NULL &&
                       json_object_get(json_object_get(j, "auths"), "http://localhost:5000") ==
                               NULL,
               "erase removes every key of the host");
        tap_eq_str(kiln_json_get_string(j, "psFormat"), "table {{.ID}}", "erase keeps other keys");
        json_decref(TAKE_PTR(j));
        expect_lookup("localhost:5000", NULL, NULL, KILN_ERR_NOTFOUND, "erased");
        tap_ok(reg_credentials_erase("localhost:5000", &err) < 0 && err->kind == KILN_ERR_NOTFOUND,
               "erasing again is NOTFOUND");
        keep(err);

        /* A fresh HOME: ~/.docker is created 0700. */
        err = kiln_error_free(err);
        make_dir("home2");
        set_env("HOME", "home2");
        tap_ok(reg_credentials_store("new.example", "hank", "hank-pw", &err) == 0,
               "store into a new ~/.docker");
        {
                _cleanup_free_ char *dir = path_of("home2/.docker");

                tap_ok(stat(dir, &st) == 0 && S_ISDIR(st.st_mode) && (st.st_mode & 0777) == 0700,
                       "~/.docker is created 0700");
        }
        expect_lookup("new.example", "hank", "hank-pw", 0, "stored into a new file");

        /* A config.json that is a symbolic link stays one. */
        {
                _cleanup_free_ char *link = path_of("home2/.docker/config.json");
                _cleanup_free_ char *text = tap_read_file(link, NULL);

                write_file("home2/real-config.json", text, 0600);
                unlink(link);
                tap_ok(symlink("../real-config.json", link) == 0, "symlink config.json");
                tap_ok(reg_credentials_store("other.example", "ivy", "ivy-pw", &err) == 0,
                       "store through a symlink");
                tap_ok(lstat(link, &st) == 0 && S_ISLNK(st.st_mode), "the link stays a link");
                expect_lookup("other.example", "ivy", "ivy-pw", 0, "stored through the link");
                expect_lookup("new.example", "hank", "hank-pw", 0, "older entry kept");
        }

        /* A broken config is not overwritten. */
        write_file("home2/real-config.json", "{\"auths\": {", 0600);
        tap_ok(reg_credentials_store("new.example", "x", "y", &err) < 0 &&
                       err->kind == KILN_ERR_PARSE,
               "store refuses to overwrite a broken config");
        keep(err);
        {
                _cleanup_free_ char *p = path_of("home2/real-config.json");
                _cleanup_free_ char *text = tap_read_file(p, NULL);

                tap_eq_str(text, "{\"auths\": {", "the broken config is untouched");
        }
        set_env("HOME", "home");
}

static void test_helpers(void)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_free_ char *cfg_path = path_of("hc/config.json"), *before = NULL, *after = NULL;
        _cleanup_free_ char *log = NULL, *log_path = path_of("store/log"), *old_path = NULL;
        _cleanup_free_ char *bin = path_of("bin"), *hub = b64("alice:" HUB_SECRET), *cfg = NULL;
        const char *path = getenv("PATH");

        make_dir("bin");
        make_dir("store");
        make_dir("hc");
        write_file("bin/docker-credential-fake", fake_helper, 0755);
        write_file("bin/docker-credential-quick", quick_helper, 0755);
        old_path = xstrdup(path ? path : "/usr/bin:/bin");
        {
                _cleanup_free_ char *p = xasprintf("%s:%s", bin, old_path);

                setenv("PATH", p, 1);
        }
        set_env("FAKE_HELPER_DIR", "store");
        set_env("DOCKER_CONFIG", "hc");

        cfg = xasprintf("{\"credHelpers\": {\"helped.example\": \"fake\", \"plain.example\": \"\"},"
                        " \"auths\": {\"plain.example\": {\"auth\": \"%s\"}}}",
                        hub);
        write_file("hc/config.json", cfg, 0600);
        before = tap_read_file(cfg_path, NULL);

        expect_lookup("helped.example", NULL, NULL, KILN_ERR_NOTFOUND,
                      "credHelpers: the helper has nothing yet");
        tap_ok(reg_credentials_store("helped.example", "jack", HELPER_PW, &err) == 0,
               "credHelpers: store");
        keep(err);
        tap_ok(exists("store/entry-helped_example"), "credHelpers: the helper stored it");
        after = tap_read_file(cfg_path, NULL);
        tap_eq_str(after, before, "credHelpers: config.json is not rewritten");
        expect_lookup("helped.example", "jack", HELPER_PW, 0, "credHelpers: get");
        expect_lookup("plain.example", "alice", HUB_SECRET, 0,
                      "credHelpers entry \"\" means the file");
        expect_lookup("other.example", NULL, NULL, KILN_ERR_NOTFOUND,
                      "credHelpers: other hosts use the file");
        err = kiln_error_free(err);
        tap_ok(reg_credentials_erase("helped.example", &err) == 0, "credHelpers: erase");
        tap_ok(!exists("store/entry-helped_example"), "credHelpers: the helper erased it");
        expect_lookup("helped.example", NULL, NULL, KILN_ERR_NOTFOUND, "credHelpers: erased");
        tap_ok(reg_credentials_erase("helped.example", &err) < 0 && err->kind == KILN_ERR_NOTFOUND,
               "credHelpers: erase again is NOTFOUND");
        keep(err);

        /* credsStore for every other host. */
        write_file("hc/config.json",
                   "{\"credsStore\": \"fake\", \"credHelpers\": {\"plain.example\": \"\"},"
                   " \"auths\": {\"https://index.docker.io/v1/\": {}}}",
                   0600);
        err = kiln_error_free(err);
        tap_ok(reg_credentials_store("docker.io", "kate", HELPER_PW, &err) == 0,
               "credsStore: store docker.io");
        keep(err);
        log = tap_read_file(log_path, NULL);
        tap_ok(strstr(log, "store {\"ServerURL\":\"https://index.docker.io/v1/\",\"Username\":"
                           "\"kate\",\"Secret\":\"" HELPER_PW "\"}") != NULL,
               "credsStore: the helper gets {ServerURL, Username, Secret}");
        expect_lookup("docker.io", "kate", HELPER_PW, 0, "credsStore: get");
        expect_lookup("index.docker.io", "kate", HELPER_PW, 0, "credsStore: get by old name");
        free(log);
        log = tap_read_file(log_path, NULL);
        tap_ok(strstr(log, "get https://index.docker.io/v1/\n") != NULL,
               "credsStore: get is given the server URL on stdin");
        expect_lookup("localhost:5000", NULL, NULL, KILN_ERR_NOTFOUND,
                      "credsStore: the helper has nothing");
        {
                struct reg_credentials c = { 0 };

                tap_ok(reg_credentials_lookup("token.example", &c, &err) == 0 && c.identity_token &&
                               strcmp(c.identity_token, "refresh-token") == 0 &&
                               strcmp(c.username, "") == 0,
                       "credsStore: <token> is an identity token");
                reg_credentials_release(&c);
        }
        expect_lookup("broken.example", NULL, NULL, KILN_ERR_CHILD, "credsStore: helper fails");
        tap_ok(n_messages > 0 && strstr(messages[n_messages - 1], "boom: the keychain is locked"),
               "credsStore: the helper's stderr is in the message");
        expect_lookup("garbage.example", NULL, NULL, KILN_ERR_PARSE, "credsStore: not JSON");
        expect_lookup("huge.example", NULL, NULL, KILN_ERR_LIMIT, "credsStore: output over 1 MiB");
        err = kiln_error_free(err);
        tap_ok(reg_credentials_store("leaky.example", "lee", LEAKY_PW, &err) < 0 &&
                       err->kind == KILN_ERR_CHILD,
               "credsStore: a failing store");
        keep(err);
        tap_ok(err && strstr(err->msg, "cannot store") && !strstr(err->msg, LEAKY_PW) &&
                       strstr(err->msg, "*************"),
               "credsStore: the secret is blanked out of the helper's stderr");
        err = kiln_error_free(err);
        tap_ok(reg_credentials_erase("docker.io", &err) == 0, "credsStore: erase");
        tap_ok(!exists("store/entry-https___index_docker_io_v1_"), "credsStore: erased");
        {
                _cleanup_json_ json_t *j = kiln_json_load_file(cfg_path, 1 << 20, NULL);

                tap_ok(json_object_get(json_object_get(j, "auths"),
                                       "https://index.docker.io/v1/") == NULL,
                       "credsStore: erase drops the file's empty entry too");
                tap_eq_str(kiln_json_get_string(j, "credsStore"), "fake",
                           "credsStore: erase keeps the other keys");
        }

        /* A helper that never reads a large input: no SIGPIPE, no hang. */
        write_file("hc/config.json", "{\"credsStore\": \"quick\"}", 0600);
        {
                char *big = xmalloc(512 * 1024 + 1);

                memset(big, 'p', 512 * 1024);
                big[512 * 1024] = '\0';
                err = kiln_error_free(err);
                tap_ok(reg_credentials_store("quick.example", "q", big, &err) == 0,
                       "a helper that does not read its input");
                keep(err);
                free(big);
        }
        expect_lookup("quick.example", "quick", "quick-pw", 0, "a helper that answers at once");

        write_file("hc/config.json", "{\"credsStore\": \"nosuch\"}", 0600);
        expect_lookup("docker.io", NULL, NULL, KILN_ERR_CHILD, "a helper not in PATH");
        tap_ok(n_messages > 0 && strstr(messages[n_messages - 1], "docker-credential-nosuch"),
               "the message names the missing helper");
        write_file("hc/config.json", "{\"credsStore\": \"../../bin/sh\"}", 0600);
        expect_lookup("docker.io", NULL, NULL, KILN_ERR_INVALID, "a helper name with '/'");

        setenv("PATH", old_path, 1);
        unsetenv("DOCKER_CONFIG");
        unsetenv("FAKE_HELPER_DIR");
}

static void test_no_secret_in_messages(void)
{
        size_t i, k, leaks = 0;

        for (i = 0; i < n_messages; i++) {
                for (k = 0; k < ELEMENTSOF(secrets); k++) {
                        if (strstr(messages[i], secrets[k])) {
                                tap_diag("message %zu holds a secret: %s", i, messages[i]);
                                leaks++;
                        }
                }
        }
        tap_ok(n_messages >= 20, "%zu error messages were collected", n_messages);
        tap_ok(leaks == 0, "no error message holds a secret");
        for (i = 0; i < n_messages; i++)
                free(messages[i]);
        free(messages);
}

int main(void)
{
        char tmpl[] = "/tmp/kiln-test-credentials-XXXXXX";

        root = mkdtemp(tmpl);
        if (!root)
                tap_skip_all("cannot create a temporary directory");
        test_challenges();
        test_docker_config();
        test_auth_json();
        test_store_erase();
        test_helpers();
        test_no_secret_in_messages();
        nftw(root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
        return tap_done();
}
