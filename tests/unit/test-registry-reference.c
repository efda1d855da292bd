/*
 * Image references against the behaviour of github.com/distribution/reference:
 * ParseNormalizedNamed followed by TagNameOnly. The cases are transcribed from
 * normalize_test.go (TestValidateReferenceName, TestNormalizedSplitHostname,
 * TestParseRepositoryInfo, TestParseReferenceWithTagAndDigest) and reference_test.go
 * (TestReferenceParse), each read through the normalisation Docker applies on the command line.
 */
#include <stdlib.h>
#include <string.h>

#include "builder/common/xalloc.h"
#include "registry/registry.h"
#include "tests/unit/tap.h"

#define D64  "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"
#define BB   "86e0e091d0da6bde2456dbb48306f3956bbeb2eae1b5b9a43045843f69fe4aaa"
#define HEX  "1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a"
#define D96  D64 "ffffffffffffffffffffffffffffffff"
#define D128 D64 D64

struct valid_case {
        const char *input;
        const char *want;   /* reg_ref_string() */
        const char *domain; /* checked when set */
        const char *path;   /* checked when set */
};

static const struct valid_case valid_cases[] = {
        /* The familiar forms of Docker Hub. */
        { "busybox", "docker.io/library/busybox:latest", "docker.io", "library/busybox" },
        { "library/busybox", "docker.io/library/busybox:latest", "docker.io", "library/busybox" },
        { "docker.io/busybox", "docker.io/library/busybox:latest", "docker.io", "library/busybox" },
        { "docker.io/library/busybox", "docker.io/library/busybox:latest", NULL, NULL },
        { "index.docker.io/busybox", "docker.io/library/busybox:latest", "docker.io", NULL },
        { "index.docker.io/library/busybox:1.36", "docker.io/library/busybox:1.36", NULL, NULL },
        { "index.docker.io/docker/docker", "docker.io/docker/docker:latest", NULL, NULL },
        { "busybox:latest", "docker.io/library/busybox:latest", NULL, NULL },
        { "busybox:1.36.1-musl", "docker.io/library/busybox:1.36.1-musl", NULL, NULL },
        { "docker/docker", "docker.io/docker/docker:latest", "docker.io", "docker/docker" },
        { "debian", "docker.io/library/debian:latest", NULL, NULL },
        { "docker/migrator", "docker.io/docker/migrator:latest", "docker.io", "docker/migrator" },
        { "test_com", "docker.io/library/test_com:latest", NULL, NULL },
        { "test_com/foo", "docker.io/test_com/foo:latest", "docker.io", "test_com/foo" },
        { "fooo/bar", "docker.io/fooo/bar:latest", NULL, NULL },
        { "nonlibrary/ubuntu", "docker.io/nonlibrary/ubuntu:latest", NULL, NULL },
        { "other/library", "docker.io/other/library:latest", NULL, NULL },
        { "store/foo/bar", "docker.io/store/foo/bar:latest", NULL, NULL },
        { "docker.io/library/foo/bar", "docker.io/library/foo/bar:latest", "docker.io",
          "library/foo/bar" },
        { "ubuntu-12.04-base", "docker.io/library/ubuntu-12.04-base:latest", NULL, NULL },
        { "lowercase:Uppercase", "docker.io/library/lowercase:Uppercase", NULL, NULL },
        { "a__b/c---d/e.f_g", "docker.io/a__b/c---d/e.f_g:latest", NULL, NULL },
        { "thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev",
          "docker.io/library/thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev"
          ":latest",
          NULL, NULL },
        /* A 64-hex name is fine once it is not alone. */
        { "docker.io/" HEX, "docker.io/library/" HEX ":latest", NULL, NULL },
        { HEX ":tag", "docker.io/library/" HEX ":tag", NULL, NULL },
        /* No '/': never a host, so ":" starts a tag (Docker's known ambiguity). */
        { "localhost", "docker.io/library/localhost:latest", NULL, NULL },
        { "localhost:5000", "docker.io/library/localhost:5000", NULL, NULL },
        { "test.com:tag", "docker.io/library/test.com:tag", NULL, NULL },
        { "test.com:5000", "docker.io/library/test.com:5000", NULL, NULL },
        { "foo_bar.com:8080", "docker.io/library/foo_bar.com:8080", NULL, NULL },
        { "foo/foo_bar.com:8080", "docker.io/foo/foo_bar.com:8080", NULL, NULL },
        { "192.168.0.1", "docker.io/library/192.168.0.1:latest", NULL, NULL },
        { "192.168.0.1:80", "docker.io/library/192.168.0.1:80", NULL, NULL },
        /* Hosts. */
        { "localhost/app", "localhost/app:latest", "localhost", "app" },
        { "localhost:5000/app:v1", "localhost:5000/app:v1", "localhost:5000", "app" },
        { "127.0.0.1:5000/a/b@sha256:" D64, "127.0.0.1:5000/a/b@sha256:" D64, "127.0.0.1:5000",
          "a/b" },
        { "127.0.0.1:5000/docker/docker", "127.0.0.1:5000/docker/docker:latest", NULL, NULL },
        { "127.0.0.1:8000/privatebase", "127.0.0.1:8000/privatebase:latest", NULL, NULL },
        { "192.168.0.1:8/debian", "192.168.0.1:8/debian:latest", NULL, NULL },
        { "192.168.1.1/repo", "192.168.1.1/repo:latest", "192.168.1.1", "repo" },
        { "192.168.1.1:5000/repo:5050", "192.168.1.1:5000/repo:5050", NULL, NULL },
        { "test.com/foo", "test.com/foo:latest", "test.com", "foo" },
        { "test.com/repo:tag", "test.com/repo:tag", NULL, NULL },
        { "test.com:8080/foo", "test.com:8080/foo:latest", "test.com:8080", "foo" },
        { "test-com:8080/foo", "test-com:8080/foo:latest", "test-com:8080", "foo" },
        { "test:5000/repo", "test:5000/repo:latest", "test:5000", "repo" },
        { "test:5000/repo:tag", "test:5000/repo:tag", NULL, NULL },
        { "test:5000/repo@sha256:" D64, "test:5000/repo@sha256:" D64, NULL, NULL },
        { "test:5000/repo:tag@sha256:" D64, "test:5000/repo:tag@sha256:" D64, NULL, NULL },
        { "example.com/privatebase", "example.com/privatebase:latest", NULL, NULL },
        { "example.com:8000/private/moonbase", "example.com:8000/private/moonbase:latest",
          "example.com:8000", "private/moonbase" },
        { "sub-dom1.foo.com/bar/baz/quux", "sub-dom1.foo.com/bar/baz/quux:latest", NULL, NULL },
        { "sub-dom1.foo.com/bar/baz/quux:some-long-tag",
          "sub-dom1.foo.com/bar/baz/quux:some-long-tag", NULL, NULL },
        { "b.gcr.io/test.example.com/my-app:test.example.com",
          "b.gcr.io/test.example.com/my-app:test.example.com", "b.gcr.io",
          "test.example.com/my-app" },
        { "xn--n3h.com/myimage:xn--n3h.com", "xn--n3h.com/myimage:xn--n3h.com", NULL, NULL },
        { "xn--n3h.com:18080/foo", "xn--n3h.com:18080/foo:latest", "xn--n3h.com:18080", "foo" },
        { "xn--7o8h.com/myimage:xn--7o8h.com@sha512:" D128,
          "xn--7o8h.com/myimage:xn--7o8h.com@sha512:" D128, NULL, NULL },
        /* A first component with upper case is a host (splitDockerDomain). */
        { "Docker/docker", "Docker/docker:latest", "Docker", "docker" },
        { "DOCKER/docker", "DOCKER/docker:latest", "DOCKER", "docker" },
        { "Foo/bar", "Foo/bar:latest", "Foo", "bar" },
        { "Uppercase-domain.com/app", "Uppercase-domain.com/app:latest", "Uppercase-domain.com",
          "app" },
        { "EXAMPLE.com/app:v2", "EXAMPLE.com/app:v2", NULL, NULL },
        /* IPv6 hosts. */
        { "[::1]:5000/app", "[::1]:5000/app:latest", "[::1]:5000", "app" },
        { "[fc00::1]:5000/docker", "[fc00::1]:5000/docker:latest", NULL, NULL },
        { "[fc00::1]:5000/docker/docker", "[fc00::1]:5000/docker/docker:latest", NULL, NULL },
        { "[fc00:1:2:3:4:5:6:7]:5000/debian", "[fc00:1:2:3:4:5:6:7]:5000/debian:latest", NULL,
          NULL },
        { "[2001:db8::1]/repo", "[2001:db8::1]/repo:latest", "[2001:db8::1]", "repo" },
        { "[2001:db8::]:5000/repo", "[2001:db8::]:5000/repo:latest", NULL, NULL },
        { "[2001:db8::1]:5000/repo:tag@sha256:" D64, "[2001:db8::1]:5000/repo:tag@sha256:" D64,
          NULL, NULL },
        /* Tag and digest: both are kept. */
        { "busybox:latest@sha256:" BB, "docker.io/library/busybox:latest@sha256:" BB, NULL, NULL },
        { "busybox@sha256:" BB, "docker.io/library/busybox@sha256:" BB, NULL, NULL },
        { "repo@sha384:" D96, "docker.io/library/repo@sha384:" D96, NULL, NULL },
        { "registry.example/ns/app:v1@sha512:" D128, "registry.example/ns/app:v1@sha512:" D128,
          "registry.example", "ns/app" },
};

struct invalid_case {
        const char *input;
        const char *msg; /* a part of the message */
};

static const struct invalid_case invalid_cases[] = {
        { "docker/Docker", "repository name must be lowercase" },
        { "Busybox", "repository name must be lowercase" },
        { "Uppercase:tag", "repository name must be lowercase" },
        { "test:5000/Uppercase/lowercase:tag", "repository name must be lowercase" },
        { "docker.io/docker/Docker", "repository name must be lowercase" },
        { "localhost/App", "repository name must be lowercase" },
        { "busybox:", "invalid reference format" },
        { "localhost:5000/app:", "invalid reference format" },
        { "a:b:c", "invalid reference format" },
        { HEX, "cannot specify 64-byte hexadecimal strings" },
        { "https://github.com/docker/docker", "invalid reference format" },
        { "-docker", "invalid reference format" },
        { "-docker/docker", "invalid reference format" },
        { "-docker.io/docker/docker", "invalid reference format" },
        { "docker///docker", "invalid reference format" },
        { "docker.io/docker///docker", "invalid reference format" },
        { "[fc00::1]", "invalid reference format" },
        { "[fc00::1]:5000", "invalid reference format" },
        { "fc00::1:5000/debian", "invalid reference format" },
        { "[fe80::1%eth0]:5000/debian", "invalid reference format" },
        { "[fe80::1%@invalidzone]:5000/repo", "invalid reference format" },
        { "[2001:db8:3:4::192.0.2.33]:5000/debian", "invalid reference format" },
        { "[2001:db8::1]:tag", "invalid reference format" },
        { "", "invalid reference format" },
        { ":justtag", "invalid reference format" },
        { "@sha256:" D64, "invalid reference format" },
        { "repo@sha256:"
          "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
          "invalid checksum digest length" },
        { "validname@invaliddigest:" D64, "unsupported digest algorithm" },
        { "busybox@sha256:"
          "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF",
          "invalid checksum digest format" },
        { "busybox@sha256:abc", "invalid reference format" },
        { "busybox@sha256:" D64 "@sha256:" D64, "invalid reference format" },
        { "aa/asdf$$^/aa", "invalid reference format" },
        { "busybox:-tag", "invalid reference format" },
        { "busybox:.tag", "invalid reference format" },
        { "a..b", "invalid reference format" },
        { "a-/b", "invalid reference format" },
        { "a b", "invalid reference format" },
        { "localhost:5000/", "invalid reference format" },
        { "host:abc/app", "invalid reference format" },
        { "docker.io/", "invalid reference format" },
        { "/busybox", "invalid reference format" },
        /* Docker would keep this as a name without a domain; kiln cannot pull it. */
        { "foo_bar.com/x", "invalid reference format" },
};

static void check_valid(const struct valid_case *c)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_free_ char *s = NULL;
        struct reg_ref r = { 0 };

        if (!tap_ok(reg_ref_parse(c->input, &r, &err) == 0, "parse '%s'", c->input)) {
                tap_diag("error: %s", err ? err->msg : "(none)");
                return;
        }
        s = reg_ref_string(&r);
        tap_eq_str(s, c->want, "'%s' normalises", c->input);
        if (c->domain)
                tap_eq_str(r.domain, c->domain, "'%s' domain", c->input);
        if (c->path)
                tap_eq_str(r.path, c->path, "'%s' path", c->input);
        reg_ref_release(&r);
}

static void check_invalid(const struct invalid_case *c)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct reg_ref r = { 0 };
        int ret = reg_ref_parse(c->input, &r, &err);

        if (!tap_ok(ret < 0 && err && err->kind == KILN_ERR_INVALID, "'%s' is rejected",
                    c->input)) {
                reg_ref_release(&r);
                return;
        }
        if (!tap_ok(strstr(err->msg, c->msg) != NULL, "'%s': message names the problem", c->input))
                tap_diag("got '%s', want a part '%s'", err->msg, c->msg);
        tap_ok(r.domain == NULL && r.path == NULL && r.tag == NULL && r.digest == NULL,
               "'%s': output untouched", c->input);
}

static void check_fields(void)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_free_ char *repo = NULL, *repo2 = NULL;
        struct reg_ref r = { 0 };

        tap_ok(reg_ref_parse("busybox", &r, &err) == 0, "busybox parses");
        tap_eq_str(r.tag, "latest", "busybox gets the tag latest");
        tap_ok(r.digest == NULL, "busybox has no digest");
        tap_eq_str(reg_ref_endpoint(&r), "registry-1.docker.io",
                   "docker.io is reached at "
                   "registry-1.docker.io");
        repo = reg_ref_repository(&r);
        tap_eq_str(repo, "docker.io/library/busybox", "repository of busybox");
        reg_ref_release(&r);
        tap_ok(r.domain == NULL && r.path == NULL && r.tag == NULL, "release zeroes");

        tap_ok(reg_ref_parse("localhost:5000/a/b@sha256:" D64, &r, &err) == 0, "digest parses");
        tap_ok(r.tag == NULL, "a digest alone gets no tag");
        tap_eq_str(r.digest, "sha256:" D64, "digest kept");
        tap_eq_str(reg_ref_endpoint(&r), "localhost:5000", "endpoint of a host is itself");
        repo2 = reg_ref_repository(&r);
        tap_eq_str(repo2, "localhost:5000/a/b", "repository has no tag or digest");
        reg_ref_release(&r);
        reg_ref_release(NULL);
}

static void check_message_quotes_input(void)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct reg_ref r = { 0 };

        reg_ref_parse("docker/Docker", &r, &err);
        tap_ok(err && strstr(err->msg, "'docker/Docker'"), "message quotes the input");
        tap_ok(err && strncmp(err->msg,
                              "invalid reference format: repository name must be "
                              "lowercase",
                              strlen("invalid reference format: repository name must be "
                                     "lowercase")) == 0,
               "message is Docker's");
}

static void check_lengths(void)
{
        _cleanup_free_ char *long128 = NULL, *long127 = NULL, *max = NULL, *over = NULL;
        _cleanup_free_ char *tag128 = NULL, *tag129 = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct reg_ref r = { 0 };
        char a[300];
        size_t i;

        /* strings.Repeat("a/", 128) + "a:tag" */
        for (i = 0; i < 256; i += 2) {
                a[i] = 'a';
                a[i + 1] = '/';
        }
        a[256] = '\0';
        long128 = xasprintf("%sa:tag", a);
        tap_ok(reg_ref_parse(long128, &r, &err) < 0 && err->kind == KILN_ERR_INVALID &&
                       strstr(err->msg, "must not be more than 255 characters"),
               "a name of 257 characters is too long");
        err = kiln_error_free(err);
        /* strings.Repeat("a/", 127) + "a:tag-puts-this-over-max": 255 characters, but docker.io/
         * is added in front. */
        a[254] = '\0';
        long127 = xasprintf("%sa:tag-puts-this-over-max", a);
        tap_ok(reg_ref_parse(long127, &r, &err) < 0 && err->kind == KILN_ERR_INVALID &&
                       strstr(err->msg, "must not be more than 255 characters"),
               "255 characters plus docker.io/ are too long");
        err = kiln_error_free(err);

        /* "docker.io/" + 245 characters is exactly 255. */
        memset(a, 'a', 243);
        a[243] = '\0';
        max = xasprintf("docker.io/x/%s", a);
        tap_ok(reg_ref_parse(max, &r, &err) == 0 && strlen(r.domain) + 1 + strlen(r.path) == 255,
               "a name of exactly 255 characters is fine");
        reg_ref_release(&r);
        err = kiln_error_free(err);
        over = xasprintf("docker.io/x/%sa", a);
        tap_ok(reg_ref_parse(over, &r, &err) < 0 && err->kind == KILN_ERR_INVALID,
               "256 characters are too long");
        err = kiln_error_free(err);

        memset(a, 'a', 129);
        a[128] = '\0';
        tag128 = xasprintf("busybox:%s", a);
        tap_ok(reg_ref_parse(tag128, &r, &err) == 0 && strlen(r.tag) == 128,
               "a tag of 128 characters is fine");
        reg_ref_release(&r);
        err = kiln_error_free(err);
        a[128] = 'a';
        a[129] = '\0';
        tag129 = xasprintf("busybox:%s", a);
        tap_ok(reg_ref_parse(tag129, &r, &err) < 0 && err->kind == KILN_ERR_INVALID,
               "a tag of 129 characters is not");
}

int main(void)
{
        size_t i;

        for (i = 0; i < ELEMENTSOF(valid_cases); i++)
                check_valid(&valid_cases[i]);
        for (i = 0; i < ELEMENTSOF(invalid_cases); i++)
                check_invalid(&invalid_cases[i]);
        check_fields();
        check_message_quotes_input();
        check_lengths();
        tap_diag("%zu valid and %zu invalid references", ELEMENTSOF(valid_cases),
                 ELEMENTSOF(invalid_cases));
        return tap_done();
}
