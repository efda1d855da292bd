/*
 * bld_user_resolve(): Docker's USER and --chown rules against a temporary image root with
 * /etc/passwd and /etc/group: names and numbers, explicit groups, supplementary groups,
 * unknown users and groups, malformed specs, missing files, and symlinked files that point
 * out of the root (they must resolve inside it, never read the host's).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "builder/builder-internal.h"
#include "builder/common/xalloc.h"
#include "tests/unit/tap.h"

static char *base; /* the test's temporary directory: base/root, base/outside, base/empty */

static void die(const char *what)
{
        printf("Bail out! %s: %s\n", what, strerror(errno));
        exit(1);
}

static void write_file(const char *path, const char *content)
{
        _cleanup_close_ int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

        if (fd < 0 || write(fd, content, strlen(content)) != (ssize_t) strlen(content))
                die(path);
}

/* base/NAME with an etc/ holding the given passwd and group (NULL: no file). */
static int make_root(const char *name, const char *passwd, const char *group)
{
        _cleanup_free_ char *root = xasprintf("%s/%s", base, name);
        _cleanup_free_ char *etc = xasprintf("%s/etc", root);
        _cleanup_free_ char *pw = xasprintf("%s/passwd", etc);
        _cleanup_free_ char *gr = xasprintf("%s/group", etc);
        int fd;

        if (mkdir(root, 0755) < 0 || mkdir(etc, 0755) < 0)
                die(root);
        if (passwd)
                write_file(pw, passwd);
        if (group)
                write_file(gr, group);
        fd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                die(root);
        return fd;
}

struct result {
        int r;
        uint32_t uid, gid;
        uint32_t *groups;
        size_t n_groups;
        struct kiln_error *err;
        char got[256];
};

static void resolve(int rootfd, const char *spec, struct result *res)
{
        size_t i;
        int len;

        *res = (struct result){ .uid = 99999, .gid = 99999 };
        res->r = bld_user_resolve(rootfd, spec, &res->uid, &res->gid, &res->groups, &res->n_groups,
                                  &res->err);
        if (res->r < 0) {
                snprintf(res->got, sizeof(res->got), "error %s: %s",
                         kiln_errkind_name(res->err->kind), res->err->msg);
                return;
        }
        len = snprintf(res->got, sizeof(res->got), "%u:%u", res->uid, res->gid);
        for (i = 0; i < res->n_groups && len > 0 && (size_t) len < sizeof(res->got); i++)
                len += snprintf(res->got + len, sizeof(res->got) - (size_t) len, "%s%u",
                                i ? "," : " +", res->groups[i]);
}

static void result_release(struct result *res)
{
        free(res->groups);
        kiln_error_free(res->err);
}

/* Resolves and compares "uid:gid +g1,g2" or "error KIND: message". */
static void check(int rootfd, const char *spec, const char *want, const char *what)
{
        struct result res;

        resolve(rootfd, spec, &res);
        tap_eq_str(res.got, want, "%s ('%s')", what, spec);
        result_release(&res);
}

static const char passwd[] = "root:x:0:0:root:/root:/bin/bash\n"
                             "daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"
                             "# a comment is just a strange name\n"
                             "\n"
                             "  app:x:1000:1001:App User:/home/app:/bin/sh  \n"
                             "broken:x:notanumber:5:::\n"
                             "short:x:7\n"
                             "+nis\n"
                             "dup:x:2000:2000::/:/bin/sh\n"
                             "dup:x:2001:2001::/:/bin/sh\n"
                             "numeric:x:3000:3000::/:/bin/sh\n"
                             "last:x:4000:4000::/:/bin/sh"; /* no final newline */

static const char group[] = "root:x:0:\n"
                            "daemon:x:1:\n"
                            "app:x:1001:\n"
                            "docker:x:999:app,other\n"
                            "audio:x:29:other, app \n"
                            "staff:x:50:root\n"
                            "nomembers:x:60\n"
                            "broken:x:nope:app\n"
                            "1234:x:77:\n"
                            "dupgrp:x:500:\n"
                            "dupgrp:x:501:\n"
                            "numeric:x:3000:numeric";

static void test_names_and_numbers(int rootfd)
{
        check(rootfd, "root", "0:0 +50", "root by name, in the group listing it");
        check(rootfd, "0", "0:0 +50", "uid 0 matches root's entry, with root's groups");
        check(rootfd, "app", "1000:1001 +999,29", "a name: passwd ids, supplementary groups");
        check(rootfd, "1000", "1000:1001 +999,29", "a uid with an entry: as its name");
        check(rootfd, "4242", "4242:0", "a uid without an entry: gid 0, no groups");
        check(rootfd, "dup", "2000:2000", "the first of two passwd entries wins");
        check(rootfd, "last", "4000:4000", "the last line without a newline");
        check(rootfd, "numeric", "3000:3000 +3000", "listed in its own group");
        check(rootfd, "2147483647", "2147483647:0", "the largest uid Docker accepts");
}

static void test_groups(int rootfd)
{
        check(rootfd, "app:docker", "1000:999", "name:group (no supplementary groups)");
        check(rootfd, "app:29", "1000:29", "name:gid with an entry");
        check(rootfd, "app:4321", "1000:4321", "name:gid without an entry");
        check(rootfd, "1000:1000", "1000:1000", "uid:gid");
        check(rootfd, "5555:staff", "5555:50", "uid:group for a uid without an entry");
        check(rootfd, "root:dupgrp", "0:500", "the first of two group entries wins");
        check(rootfd, "root:1234", "0:1234", "a numeric group is a gid, never a name");
        check(rootfd, "daemon:nomembers", "1:60", "a group line without a member field");
}

static void test_errors(int rootfd)
{
        check(rootfd, "nobody",
              "error notfound: unable to find user nobody: no matching entries in passwd file",
              "an unknown name");
        check(rootfd, "broken",
              "error notfound: unable to find user broken: no matching entries in passwd file",
              "an entry with a malformed uid is skipped");
        check(rootfd, "app:wheel",
              "error notfound: unable to find group wheel: no matching entries in group file",
              "an unknown group");
        check(rootfd, "", "error invalid: invalid user spec ''", "an empty spec");
        check(rootfd, ":app", "error invalid: invalid user spec ':app'", "an empty user");
        check(rootfd, "app:", "error invalid: invalid user spec 'app:'", "an empty group");
        check(rootfd, "a:b:c", "error invalid: invalid user spec 'a:b:c'", "two colons");
        check(rootfd, "2147483648",
              "error invalid: uid '2147483648' is out of range in user spec '2147483648'",
              "a uid past Docker's range");
        check(rootfd, "1:99999999999",
              "error invalid: gid '99999999999' is out of range in user spec '1:99999999999'",
              "a gid past Docker's range");
}

static void test_no_groups_out(int rootfd)
{
        uint32_t uid = 1, gid = 1;
        int r;

        r = bld_user_resolve(rootfd, "app", &uid, &gid, NULL, NULL, NULL);
        tap_ok(r == 0 && uid == 1000 && gid == 1001, "ret_groups may be NULL");
}

static void test_missing_files(void)
{
        int none = make_root("none", NULL, NULL);
        int nogroup = make_root("nogroup", "app:x:1000:1000::/:/bin/sh\n", NULL);

        check(none, "0", "0:0", "no passwd: a numeric user still works");
        check(none, "10:20", "10:20", "no passwd nor group: uid:gid still works");
        check(none, "app",
              "error notfound: unable to find user app: no matching entries in passwd file",
              "no passwd: a name is unknown");
        check(none, "0:wheel",
              "error notfound: unable to find group wheel: no matching entries in group file",
              "no group file: a group name is unknown");
        check(nogroup, "app", "1000:1000", "no group file: no supplementary groups");
        close(none);
        close(nogroup);
}

static void test_escapes(void)
{
        _cleanup_free_ char *outside = xasprintf("%s/outside", base);
        _cleanup_free_ char *host_pw = xasprintf("%s/passwd", outside);
        _cleanup_free_ char *host_gr = xasprintf("%s/group", outside);
        _cleanup_free_ char *abs_pw = NULL, *rel_gr = NULL, *dir_pw = NULL;
        int abs = make_root("abs", NULL, NULL);
        int rel = make_root("rel", "app:x:1000:1000::/:/bin/sh\n", NULL);
        int dir = make_root("dir", NULL, NULL);
        int inside;

        if (mkdir(outside, 0755) < 0)
                die(outside);
        write_file(host_pw, "evil:x:6666:6666::/:/bin/sh\napp:x:6666:6666::/:/bin/sh\n");
        write_file(host_gr, "evilgrp:x:6666:app\n");

        /* An absolute symlink to the host's file: resolves to ROOT/<that path>, absent. */
        abs_pw = xasprintf("%s/abs/etc/passwd", base);
        if (symlink(host_pw, abs_pw) < 0)
                die(abs_pw);
        check(abs, "evil",
              "error notfound: unable to find user evil: no matching entries in passwd file",
              "/etc/passwd -> an absolute host path is not read");

        /* A relative symlink climbing out: ".." stops at the root. */
        rel_gr = xasprintf("%s/rel/etc/group", base);
        if (symlink("../../../../../../outside/group", rel_gr) < 0)
                die(rel_gr);
        check(rel, "app", "1000:1000", "/etc/group -> ../../outside/group is not read");
        check(rel, "app:evilgrp",
              "error notfound: unable to find group evilgrp: no matching entries in group "
              "file",
              "... so its groups are unknown");

        /* The same symlink with the file present inside the root: that one is read. */
        inside = make_root("rel/outside", NULL, NULL);
        close(inside);
        {
                _cleanup_free_ char *in_gr = xasprintf("%s/rel/outside/group", base);
                write_file(in_gr, "ingrp:x:4444:app\n");
        }
        check(rel, "app", "1000:1000 +4444", "... it resolves inside the root instead");

        /* A directory where the file should be. */
        dir_pw = xasprintf("%s/dir/etc/passwd", base);
        if (mkdir(dir_pw, 0755) < 0)
                die(dir_pw);
        check(dir, "0",
              "error invalid: read '/etc/passwd' of the image: '/etc/passwd' is a "
              "directory",
              "/etc/passwd as a directory is an error");
        close(abs);
        close(rel);
        close(dir);
}

static void test_limits(void)
{
        _cleanup_free_ char *big = NULL, *path = NULL;
        int fd = make_root("big", NULL, "");
        size_t size = (16u << 20) + 1;

        path = xasprintf("%s/big/etc/passwd", base);
        big = xmalloc(size + 1);
        memset(big, 'x', size);
        big[size] = '\0';
        write_file(path, big);
        {
                struct result res;

                resolve(fd, "0", &res);
                tap_ok(res.r < 0 && res.err->kind == KILN_ERR_LIMIT,
                       "a passwd file over 16 MiB is refused with LIMIT (%s)", res.got);
                result_release(&res);
        }
        close(fd);
}

int main(void)
{
        int rootfd;

        base = xstrdup("/tmp/kiln-users-XXXXXX");
        if (!mkdtemp(base))
                die("mkdtemp");
        rootfd = make_root("root", passwd, group);

        test_names_and_numbers(rootfd);
        test_groups(rootfd);
        test_errors(rootfd);
        test_no_groups_out(rootfd);
        test_missing_files();
        test_escapes();
        test_limits();
        close(rootfd);

        {
                _cleanup_free_ char *cmd = xasprintf("rm -rf '%s'", base);
                if (system(cmd) != 0)
                        tap_diag("could not remove %s", base);
        }
        free(base);
        return tap_done();
}
