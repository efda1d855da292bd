/*
 * sb_run() and sb_call() for real: a tiny root filesystem made from the static /bin/busybox,
 * commands run in it, and their effects checked in the upper directory: output and status,
 * exactly the changed files (no mount stubs), whiteouts, WORKDIR, USER, the hostname, the pid
 * namespace, the environment, network none, exec failures, descriptor hygiene, the
 * WORKDIR /proc/self/fd escape, hostile symlinks in the image, concurrent sandboxes, and the
 * user-namespace isolation (as root with a range map, and unprivileged as uid 65534).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "builder/builder-internal.h"
#include "builder/common/fd-util.h"
#include "builder/common/strbuf.h"
#include "builder/common/xalloc.h"
#include "tests/unit/tap.h"

#define BUSYBOX "/bin/busybox"

static const char *const applets[] = { "sh",       "echo", "cat",   "ls",   "id",       "touch",
                                       "mkdir",    "rm",   "pwd",   "env",  "hostname", "mount",
                                       "readlink", "ip",   "sleep", "true", "stat",     "wc" };

static char *base;    /* the test's temporary directory */
static char *lower;   /* base/lower: busybox, /etc/passwd and /etc/group, /data/victim */
static char *bare;    /* base/bare: busybox only, no /etc at all */
static char *outside; /* base/outside: a sentinel directory beside the roots */
static char *nslower; /* base/nslower: like lower, owned by 100000 (1000 -> 101000) */
static char *rlower;  /* base/rlower: like lower, owned by 65534 */
static unsigned n_dirs;
static uid_t own_uid;
static gid_t own_gid;

/* ------------------------------------------------------------------------------------ */
/* Fixtures                                                                               */
/* ------------------------------------------------------------------------------------ */

static void die(const char *what)
{
        printf("Bail out! %s: %s\n", what, strerror(errno));
        exit(1);
}

static void write_file(const char *dir, const char *name, const char *content)
{
        _cleanup_free_ char *path = xasprintf("%s/%s", dir, name);
        _cleanup_close_ int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

        if (fd < 0 || write(fd, content, strlen(content)) != (ssize_t) strlen(content))
                die(path);
}

static void make_dir(const char *dir, const char *name)
{
        _cleanup_free_ char *path = xasprintf("%s/%s", dir, name);

        if (mkdir(path, 0755) < 0 && errno != EEXIST)
                die(path);
}

static void copy_busybox(const char *root)
{
        _cleanup_free_ char *dst = xasprintf("%s/bin/busybox", root);
        _cleanup_close_ int in = open(BUSYBOX, O_RDONLY | O_CLOEXEC);
        _cleanup_close_ int out = -1;
        char buf[65536];
        ssize_t n;
        size_t i;

        make_dir(root, "bin");
        out = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0755);
        if (in < 0 || out < 0)
                die("copy busybox");
        while ((n = read(in, buf, sizeof(buf))) > 0)
                if (write(out, buf, (size_t) n) != n)
                        die("copy busybox");
        for (i = 0; i < ELEMENTSOF(applets); i++) {
                _cleanup_free_ char *link = xasprintf("%s/bin/%s", root, applets[i]);
                if (symlink("busybox", link) < 0)
                        die(link);
        }
}

static int chown_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
        return lchown(path, own_uid + (st->st_uid == 1000 ? 1000 : 0),
                      own_gid + (st->st_gid == 1000 ? 1000 : 0));
}

/* chown -R to the ids a user namespace maps from 0 (and 1000 to 1000 above that). */
static void chown_tree(const char *root, uid_t uid, gid_t gid)
{
        own_uid = uid;
        own_gid = gid;
        if (nftw(root, chown_one, 16, FTW_PHYS) != 0)
                die(root);
}

static char *make_root(const char *name)
{
        char *root = xasprintf("%s/%s", base, name);

        if (mkdir(root, 0755) < 0)
                die(root);
        copy_busybox(root);
        return root;
}

static char *make_image(const char *name)
{
        char *root = make_root(name);

        make_dir(root, "etc");
        write_file(root, "etc/passwd",
                   "root:x:0:0:root:/root:/bin/sh\n"
                   "app:x:1000:1000:app:/home/app:/bin/sh\n");
        write_file(root, "etc/group", "root:x:0:\napp:x:1000:\nextra:x:2000:app\n");
        make_dir(root, "data");
        write_file(root, "data/victim", "delete me\n");
        write_file(root, "data/keep", "keep me\n");
        make_dir(root, "tmp");
        {
                _cleanup_free_ char *tmp = xasprintf("%s/tmp", root);
                if (chmod(tmp, 01777) < 0)
                        die(tmp);
        }
        return root;
}

static void make_fixtures(bool root)
{
        base = xstrdup("/tmp/kiln-sandbox-XXXXXX");
        if (!mkdtemp(base) || chmod(base, 0755) < 0)
                die("mkdtemp");
        lower = make_image("lower");
        if (root) {
                nslower = make_image("nslower");
                chown_tree(nslower, 100000, 100000);
                rlower = make_image("rlower");
                chown_tree(rlower, 65534, 65534);
        }
        bare = make_root("bare");
        outside = xasprintf("%s/outside", base);
        make_dir(base, "outside");
        write_file(outside, "sentinel", "host file\n");
}

/* A fresh upper and work directory pair, owned by uid:gid. */
static void new_step(char **ret_upper, char **ret_work, uid_t uid, gid_t gid)
{
        _cleanup_free_ char *dir = xasprintf("%s/step%u", base, ++n_dirs);

        *ret_upper = xasprintf("%s/upper", dir);
        *ret_work = xasprintf("%s/work", dir);
        if (mkdir(dir, 0755) < 0 || mkdir(*ret_upper, 0755) < 0 || mkdir(*ret_work, 0755) < 0 ||
            chown(*ret_upper, uid, gid) < 0 || chown(*ret_work, uid, gid) < 0)
                die(dir);
}

/* The names directly in a directory, sorted, joined with ' '. */
static char *list_dir(const char *path)
{
        struct dirent **names = NULL;
        struct kiln_buf b = KILN_BUF_INIT;
        int n, i;

        n = scandir(path, &names, NULL, alphasort);
        for (i = 0; i < n; i++) {
                if (strcmp(names[i]->d_name, ".") != 0 && strcmp(names[i]->d_name, "..") != 0)
                        kiln_buf_addf(&b, NULL, "%s%s", b.len ? " " : "", names[i]->d_name);
                free(names[i]);
        }
        free(names);
        return kiln_buf_detach(&b, NULL);
}

/* ------------------------------------------------------------------------------------ */
/* Running                                                                                */
/* ------------------------------------------------------------------------------------ */

struct t {
        struct sb_run run;
        const char *lowers[4];
        const char *argv[8];
        char *upper, *work;
        struct kiln_buf out;
        struct kiln_error *err;
        int status;
        int r;
};

static const char *const default_env[] = { "PATH=/bin", "HOME=/root", NULL };

static void collect(void *ctx, const char *data, size_t len)
{
        kiln_buf_add(ctx, data, len, NULL);
}

static void t_init(struct t *t, enum sb_isolation iso)
{
        *t = (struct t){ .status = -1 };
        new_step(&t->upper, &t->work, geteuid(), getegid());
        kiln_buf_init(&t->out, 1 << 20);
        t->lowers[0] = lower;
        t->run = (struct sb_run){
                .root = { .lowers = t->lowers, .n_lowers = 1, .upper = t->upper, .work = t->work },
                .env = { .isolation = iso, .network = SB_NETWORK_HOST },
                .argv = t->argv,
                .envp = default_env,
                .cwd = "/",
                .output = collect,
                .output_ctx = &t->out,
        };
}

static int t_sh(struct t *t, const char *script)
{
        t->argv[0] = "sh";
        t->argv[1] = "-c";
        t->argv[2] = script;
        t->argv[3] = NULL;
        t->r = sb_run(&t->run, &t->status, &t->err);
        if (t->r < 0) {
                _cleanup_free_ char *msg = kiln_error_format(t->err);
                tap_diag("sb_run: %s", msg);
        }
        return t->r;
}

static bool t_exited(const struct t *t, int code)
{
        return t->r == 0 && WIFEXITED(t->status) && WEXITSTATUS(t->status) == code;
}

static void t_release(struct t *t)
{
        free(t->upper);
        free(t->work);
        kiln_buf_release(&t->out);
        kiln_error_free(t->err);
}

static char *upper_path(const struct t *t, const char *name)
{
        return xasprintf("%s/%s", t->upper, name);
}

/* ------------------------------------------------------------------------------------ */
/* ROOT isolation                                                                         */
/* ------------------------------------------------------------------------------------ */

static void test_output_and_status(enum sb_isolation iso, const char *label)
{
        struct t t;

        t_init(&t, iso);
        t_sh(&t, "echo hello; echo to-stderr >&2; exit 3");
        tap_ok(t.r == 0, "%s: sb_run succeeds for a command that fails", label);
        tap_ok(t_exited(&t, 3), "%s: exit 3 is WEXITSTATUS 3 (status %#x)", label, t.status);
        tap_eq_str(t.out.buf, "hello\nto-stderr\n", "%s: stdout and stderr reach the callback",
                   label);
        t_release(&t);

        t_init(&t, iso);
        t_sh(&t, "kill -9 $$");
        tap_ok(t.r == 0 && WIFSIGNALED(t.status) && WTERMSIG(t.status) == 9,
               "%s: a command killed by a signal has that wait status", label);
        t_release(&t);
}

static void test_upper_holds_only_changes(enum sb_isolation iso, const char *label)
{
        _cleanup_free_ char *list = NULL, *etc = NULL, *victim = NULL;
        struct stat st;
        struct t t;

        t_init(&t, iso);
        t_sh(&t, "echo new > /newfile && rm /data/victim && cat /data/keep && "
                 "test -e /dev/null && test -d /proc/self && test -f /etc/hosts");
        tap_ok(t_exited(&t, 0), "%s: write, delete, read, and see /dev, /proc, /etc/hosts", label);
        tap_eq_str(t.out.buf, "keep me\n", "%s: the lower file is read", label);
        list = list_dir(t.upper);
        tap_eq_str(list, "data newfile",
                   "%s: the upper holds the changes only (no proc, dev, etc stubs)", label);
        etc = upper_path(&t, "etc");
        tap_ok(lstat(etc, &st) < 0 && errno == ENOENT,
               "%s: /etc copied up for the /etc/hosts stub is gone again", label);
        victim = upper_path(&t, "data/victim");
        tap_ok(lstat(victim, &st) == 0 && S_ISCHR(st.st_mode) && st.st_rdev == makedev(0, 0),
               "%s: a deleted lower file is a whiteout (char 0/0) in the upper", label);
        t_release(&t);
}

static void test_bare_image(void)
{
        _cleanup_free_ char *list = NULL;
        struct t t;

        t_init(&t, SB_ISOLATION_ROOT);
        t.lowers[0] = bare;
        t_sh(&t, "ls /; test -f /etc/resolv.conf && test -f /etc/hosts && echo binds");
        tap_ok(t_exited(&t, 0), "bare image: runs without /proc, /dev or /etc in the image");
        tap_ok(strstr(t.out.buf, "binds") != NULL, "bare image: /etc/hosts and resolv.conf bound");
        list = list_dir(t.upper);
        tap_eq_str(list, "", "bare image: the made /proc, /dev, /etc and its files are removed");
        t_release(&t);

        t_init(&t, SB_ISOLATION_ROOT);
        t.lowers[0] = bare;
        t_sh(&t, "echo extra > /etc/extra");
        free(list);
        list = list_dir(t.upper);
        tap_eq_str(list, "etc", "bare image: an /etc the command wrote to stays");
        free(list);
        {
                _cleanup_free_ char *etc = upper_path(&t, "etc");
                list = list_dir(etc);
        }
        tap_eq_str(list, "extra", "bare image: ... holding the command's file, not the stubs");
        t_release(&t);
}

static void test_workdir(void)
{
        _cleanup_free_ char *dir = NULL;
        struct stat st;
        struct t t;

        t_init(&t, SB_ISOLATION_ROOT);
        t.run.cwd = "/work/dir";
        t_sh(&t, "pwd");
        tap_eq_str(t.out.buf, "/work/dir\n", "WORKDIR: made and entered");
        dir = upper_path(&t, "work/dir");
        tap_ok(stat(dir, &st) == 0 && S_ISDIR(st.st_mode) && (st.st_mode & 07777) == 0755 &&
                       st.st_uid == 0 && st.st_gid == 0,
               "WORKDIR: made 0755 root:root in the upper");
        t_release(&t);
}

static void test_user(void)
{
        _cleanup_free_ char *file = NULL;
        struct stat st;
        struct t t;

        t_init(&t, SB_ISOLATION_ROOT);
        t.run.user = "1000:1000";
        t_sh(&t, "id -u; id -g; touch /tmp/mine");
        tap_eq_str(t.out.buf, "1000\n1000\n", "USER 1000:1000: id -u and id -g");
        file = upper_path(&t, "tmp/mine");
        tap_ok(stat(file, &st) == 0 && st.st_uid == 1000 && st.st_gid == 1000,
               "USER 1000:1000: the file it makes is 1000:1000");
        t_release(&t);

        t_init(&t, SB_ISOLATION_ROOT);
        t.run.user = "app";
        t_sh(&t, "id -u; id -G");
        tap_eq_str(t.out.buf, "1000\n1000 2000\n", "USER app: passwd gid and supplementary group");
        t_release(&t);

        t_init(&t, SB_ISOLATION_ROOT);
        t_sh(&t, "id -u; id -G");
        tap_eq_str(t.out.buf, "0\n0\n", "no USER: root, without the caller's groups");
        t_release(&t);

        t_init(&t, SB_ISOLATION_ROOT);
        t.run.user = "nobody-here";
        t_sh(&t, "true");
        tap_ok(t.r < 0 && t.err->kind == KILN_ERR_NOTFOUND &&
                       strstr(t.err->msg, "unable to find user nobody-here"),
               "USER with an unknown name: NOTFOUND");
        t_release(&t);
}

static void test_namespaces(void)
{
        struct t t;

        t_init(&t, SB_ISOLATION_ROOT);
        t.run.hostname = "buildbox";
        t_sh(&t, "hostname");
        tap_eq_str(t.out.buf, "buildbox\n", "hostname: set in the new UTS namespace");
        t_release(&t);

        t_init(&t, SB_ISOLATION_ROOT);
        t_sh(&t, "hostname");
        tap_eq_str(t.out.buf, "kiln\n", "hostname: 'kiln' by default");
        t_release(&t);

        t_init(&t, SB_ISOLATION_ROOT);
        t_sh(&t, "echo $$; readlink /proc/self; true");
        tap_eq_str(t.out.buf, "2\n3\n",
                   "/proc: the command is pid 2 of its own namespace (pid 1 is init)");
        t_release(&t);

        t_init(&t, SB_ISOLATION_ROOT);
        t_sh(&t, "echo 1 > /proc/sys/kernel/domainname");
        tap_ok(t.r == 0 && !t_exited(&t, 0), "/proc/sys is read-only");
        t_release(&t);

        t_init(&t, SB_ISOLATION_ROOT);
        t_sh(&t, "mount -t tmpfs none /tmp");
        tap_ok(t.r == 0 && !t_exited(&t, 0), "capabilities: mount is refused (no CAP_SYS_ADMIN)");
        t_release(&t);
}

static void test_environment(void)
{
        static const char *const env[] = { "FOO=bar baz", "PATH=/usr/bin:/bin", NULL };
        struct t t;

        t_init(&t, SB_ISOLATION_ROOT);
        t.run.envp = env;
        t.argv[0] = "env";
        t.argv[1] = NULL;
        t.r = sb_run(&t.run, &t.status, &t.err);
        /* plus HOME from the user's passwd entry, as runc adds it when envp has none */
        tap_eq_str(t.out.buf, "FOO=bar baz\nPATH=/usr/bin:/bin\nHOME=/root\n",
                   "environment: envp and HOME from passwd; argv[0] found in envp's PATH");
        t_release(&t);

        {
                static const char *const with_home[] = { "HOME=/elsewhere", "PATH=/usr/bin:/bin", NULL };
                t_init(&t, SB_ISOLATION_ROOT);
                t.run.envp = with_home;
                t.argv[0] = "env";
                t.argv[1] = NULL;
                t.r = sb_run(&t.run, &t.status, &t.err);
                tap_eq_str(t.out.buf, "HOME=/elsewhere\nPATH=/usr/bin:/bin\n",
                           "environment: a HOME in envp is kept as it is");
        }
        t_release(&t);

        t_init(&t, SB_ISOLATION_ROOT);
        t.run.envp = NULL;
        t.argv[0] = "env";
        t.argv[1] = NULL;
        t.r = sb_run(&t.run, &t.status, &t.err);
        tap_ok(t_exited(&t, 0) && strcmp(t.out.buf, "HOME=/root\n") == 0,
               "environment: empty but for HOME; Docker's default PATH");
        t_release(&t);
}

static void test_network(enum sb_isolation iso, const char *label)
{
        struct t t;

        t_init(&t, iso);
        t.run.env.network = SB_NETWORK_NONE;
        t_sh(&t, "ip -o link | wc -l; ip -o link | grep -c 'lo:.*UP'; ping -c1 -W1 127.0.0.1 "
                 ">/dev/null && echo ping");
        tap_eq_str(t.out.buf, "1\n1\nping\n", "%s: network none has only lo, up", label);
        t_release(&t);
}

static void test_exec_errors(void)
{
        struct t t;

        t_init(&t, SB_ISOLATION_ROOT);
        t.argv[0] = "no-such-command";
        t.argv[1] = NULL;
        t.r = sb_run(&t.run, &t.status, &t.err);
        tap_ok(t.r < 0 && t.err->kind == KILN_ERR_CHILD && t.err->errnum == ENOENT &&
                       strcmp(t.err->msg, "exec 'no-such-command'") == 0,
               "exec of a missing command: CHILD \"exec 'no-such-command'\" with ENOENT");
        t_release(&t);

        t_init(&t, SB_ISOLATION_ROOT);
        t.argv[0] = "/data/keep";
        t.argv[1] = NULL;
        t.r = sb_run(&t.run, &t.status, &t.err);
        tap_ok(t.r < 0 && t.err->errnum == EACCES, "exec of a non-executable file: EACCES");
        t_release(&t);
}

static void test_fds(void)
{
        _cleanup_close_ int dir = open(outside, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        _cleanup_close_ int leak = dup2(dir, 10); /* no O_CLOEXEC */
        _cleanup_free_ char *cwd = xasprintf("/proc/self/fd/%d", leak);
        struct t t;

        t_init(&t, SB_ISOLATION_ROOT);
        t_sh(&t, "exec ls /proc/self/fd");
        tap_eq_str(t.out.buf, "0\n1\n2\n3\n",
                   "descriptors: only 0-2 (and ls's own directory) reach the command");
        t_release(&t);

        t_init(&t, SB_ISOLATION_ROOT);
        t_sh(&t, "ls -l /proc/1/fd 2>/dev/null | grep -c -- '->'");
        tap_ok(strcmp(t.out.buf, "0\n") == 0 || strcmp(t.out.buf, "4\n") == 0,
               "descriptors: init's are out of reach, or only stdio and its message pipe (%.*s)",
               (int) strcspn(t.out.buf, "\n"), t.out.buf);
        t_release(&t);

        t_init(&t, SB_ISOLATION_ROOT);
        t.run.cwd = cwd;
        t_sh(&t, "pwd; ls");
        tap_ok(t.r < 0 || !strstr(t.out.buf, "sentinel"),
               "WORKDIR /proc/self/fd/%d: never reaches the host directory (%s)", leak,
               t.r < 0 ? t.err->msg : t.out.buf);
        t_release(&t);
}

static void test_hostile_images(void)
{
        _cleanup_free_ char *evil = xasprintf("%s/evil", base), *list = NULL;
        _cleanup_free_ char *dev = xasprintf("%s/dev", evil);
        _cleanup_free_ char *hosts = xasprintf("%s/etc/hosts", evil);
        struct t t;

        /* /dev and /etc/hosts as symlinks out of the root: they resolve inside it. */
        make_dir(base, "evil");
        copy_busybox(evil);
        make_dir(evil, "etc");
        make_dir(evil, "outside");
        if (symlink("../../../../../../outside", dev) < 0 ||
            symlink("/../../../outside/hosts", hosts) < 0)
                die("symlink");
        t_init(&t, SB_ISOLATION_ROOT);
        t.lowers[0] = evil;
        t_sh(&t, "test -c /dev/null && echo dev; ls /outside");
        tap_ok(t_exited(&t, 0) && strstr(t.out.buf, "dev\nfd\nfull\n"),
               "image with /dev -> ../../outside: /dev is mounted on the image's /outside");
        list = list_dir(outside);
        tap_eq_str(list, "sentinel", "... and the host's directory beside the root is untouched");
        free(list);
        list = list_dir(t.upper);
        tap_eq_str(list, "", "... and the upper holds no stub");
        t_release(&t);
}

static void test_layers(void)
{
        _cleanup_free_ char *top = NULL, *longdir = NULL, *list = NULL;
        char name[201];
        struct t t;

        memset(name, 'l', sizeof(name) - 1);
        name[sizeof(name) - 1] = '\0';
        top = xasprintf("%s/top", base);
        make_dir(base, "top");
        write_file(top, "order", "top\n");
        longdir = xasprintf("%s/%s", base, name);
        make_dir(base, name);
        write_file(longdir, "order", "long\n");
        write_file(longdir, "only-long", "long path layer\n");
        write_file(lower, "order", "bottom\n");

        t_init(&t, SB_ISOLATION_ROOT);
        t.lowers[0] = top;
        t.lowers[1] = lower;
        t.run.root.n_lowers = 2;
        t_sh(&t, "cat /order");
        tap_eq_str(t.out.buf, "top\n", "layers: the first lower is the top one");
        t_release(&t);

        /* A lower path longer than fsconfig's 255 bytes takes the mount(2) fallback. */
        t_init(&t, SB_ISOLATION_ROOT);
        t.lowers[0] = longdir;
        t.lowers[1] = lower;
        t.run.root.n_lowers = 2;
        t_sh(&t, "cat /order /only-long; touch /x");
        tap_eq_str(t.out.buf, "long\nlong path layer\n",
                   "layers: a %zu-byte lower path mounts (mount(2) fallback)", strlen(longdir));
        list = list_dir(t.upper);
        tap_eq_str(list, "x", "layers: ... with the stubs removed as well");
        t_release(&t);
}

/* ------------------------------------------------------------------------------------ */
/* sb_call                                                                                */
/* ------------------------------------------------------------------------------------ */

static int call_write(void *ctx, int rootfd, struct kiln_error **err)
{
        _cleanup_free_ char *data = NULL;
        _cleanup_close_ int fd = -1;
        size_t len;

        if (kiln_read_file_in_root(rootfd, "/data/keep", 1024, &data, &len, err) < 0)
                return -1;
        fd = kiln_open_in_root(rootfd, "/called", O_WRONLY | O_CREAT | O_EXCL, 0644, err);
        if (fd < 0)
                return -1;
        *(int *) ctx = 1; /* the child's copy: must not be seen by the parent */
        return kiln_write_all(fd, data, len, err);
}

static int call_fail(void *ctx, int rootfd, struct kiln_error **err)
{
        errno = EROFS;
        return kiln_error_errno(err, KILN_ERR_NOTFOUND, "no such thing '%s'", (const char *) ctx);
}

static void test_call(enum sb_isolation iso, const char *label)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_free_ char *file = NULL, *data = NULL, *list = NULL;
        struct sb_rootfs root = { .lowers = (const char *const[]){ lower }, .n_lowers = 1 };
        struct sb_env env = { .isolation = iso, .network = SB_NETWORK_HOST };
        char *upper, *work;
        int flag = 0, r;

        new_step(&upper, &work, geteuid(), getegid());
        root.upper = upper;
        root.work = work;
        r = sb_call(&root, &env, call_write, &flag, &err);
        tap_ok(r == 0 && flag == 0, "%s: sb_call runs fn in a child", label);
        file = xasprintf("%s/called", upper);
        data = tap_read_file(file, NULL);
        tap_eq_str(data, "keep me\n", "%s: fn read the lower and wrote into the upper", label);
        list = list_dir(upper);
        tap_eq_str(list, "called", "%s: sb_call leaves no stubs", label);

        r = sb_call(&root, &env, call_fail, "x", &err);
        tap_ok(r < 0 && err->kind == KILN_ERR_NOTFOUND && err->errnum == EROFS &&
                       strcmp(err->msg, "no such thing 'x'") == 0,
               "%s: fn's error comes back with its kind, errno and message", label);
        free(upper);
        free(work);
}

/* ------------------------------------------------------------------------------------ */
/* USERNS isolation                                                                       */
/* ------------------------------------------------------------------------------------ */

static void test_userns_ranges(void)
{
        static const struct sb_idmap map[] = { { 0, 100000, 65536 } };
        _cleanup_free_ char *file = NULL, *mine = NULL, *list = NULL;
        struct stat st;
        struct t t;

        t_init(&t, SB_ISOLATION_USERNS);
        free(t.upper);
        free(t.work);
        new_step(&t.upper, &t.work, 100000, 100000);
        t.lowers[0] = nslower;
        t.run.root.upper = t.upper;
        t.run.root.work = t.work;
        t.run.env.uid_map = t.run.env.gid_map = map;
        t.run.env.n_uid_map = t.run.env.n_gid_map = 1;
        t.run.cwd = "/home/app";
        t_sh(&t, "id -u; touch /mine; rm /data/victim");
        tap_eq_str(t.out.buf, "0\n", "userns range map: root inside");
        mine = upper_path(&t, "mine");
        if (stat(mine, &st) < 0)
                st.st_uid = st.st_gid = (unsigned) -1;
        tap_ok(st.st_uid == 100000 && st.st_gid == 100000,
               "userns range map: its file is owned by 100000 outside (%u:%u)", st.st_uid,
               st.st_gid);
        file = upper_path(&t, "data/victim");
        tap_ok(lstat(file, &st) == 0 && S_ISCHR(st.st_mode) && st.st_rdev == makedev(0, 0),
               "userns range map: a deletion is a whiteout (char 0/0)");
        list = list_dir(t.upper);
        tap_eq_str(list, "data home mine", "userns range map: no stubs left in the upper");
        t_release(&t);

        t_init(&t, SB_ISOLATION_USERNS);
        free(t.upper);
        free(t.work);
        new_step(&t.upper, &t.work, 100000, 100000);
        t.lowers[0] = nslower;
        t.run.root.upper = t.upper;
        t.run.root.work = t.work;
        t.run.env.uid_map = t.run.env.gid_map = map;
        t.run.env.n_uid_map = t.run.env.n_gid_map = 1;
        t.run.user = "app";
        t_sh(&t, "id -u; id -G; touch /tmp/app-file");
        tap_eq_str(t.out.buf, "1000\n1000 2000\n",
                   "userns range map: USER app with its supplementary group");
        free(mine);
        mine = upper_path(&t, "tmp/app-file");
        tap_ok(stat(mine, &st) == 0 && st.st_uid == 101000,
               "userns range map: app's file is owned by 101000 outside");
        t_release(&t);
}

static void test_userns_root_single(void)
{
        _cleanup_free_ char *file = NULL;
        struct stat st;
        struct t t;

        t_init(&t, SB_ISOLATION_USERNS);
        t_sh(&t, "id -u; touch /f");
        tap_eq_str(t.out.buf, "0\n", "userns single id: root inside");
        file = upper_path(&t, "f");
        tap_ok(stat(file, &st) == 0 && st.st_uid == geteuid(),
               "userns single id: the file is the caller's (%u) outside", (unsigned) geteuid());
        t_release(&t);

        t_init(&t, SB_ISOLATION_USERNS);
        t.run.user = "1000";
        t_sh(&t, "true");
        tap_ok(t.r < 0 && t.err->msg && strstr(t.err->msg, "not mapped"),
               "userns single id: USER 1000 fails as not mapped (%s)",
               t.r < 0 ? t.err->msg : "succeeded");
        t_release(&t);
}

/*
 * Unprivileged: a child drops to 65534 and runs one sandbox in its own directory; the result
 * comes back as one line over a pipe ("ok" or what went wrong).
 */
static void rootless_child(int fd)
{
        char upper[PATH_MAX], work[PATH_MAX], msg[512] = "ok";
        struct kiln_buf out = KILN_BUF_INIT;
        struct kiln_error *err = NULL;
        const char *argv[] = { "sh", "-c", "id -u; touch /f; rm /data/victim", NULL };
        struct sb_run run = {
                .root = { .lowers = (const char *const[]){ rlower },
                          .n_lowers = 1,
                          .upper = upper,
                          .work = work },
                .env = { .isolation = SB_ISOLATION_USERNS, .network = SB_NETWORK_NONE },
                .argv = argv,
                .envp = default_env,
                .output = collect,
                .output_ctx = &out,
        };
        enum sb_isolation iso;
        char *why = NULL;
        struct stat st;
        int status;

        snprintf(upper, sizeof(upper), "%s/rootless/upper", base);
        snprintf(work, sizeof(work), "%s/rootless/work", base);
        if (setgroups(0, NULL) < 0 || setresgid(65534, 65534, 65534) < 0 ||
            setresuid(65534, 65534, 65534) < 0 || prctl(PR_SET_DUMPABLE, 1) < 0)
                snprintf(msg, sizeof(msg), "drop to 65534: %s", strerror(errno));
        else if (sb_probe(&iso, &why, &err) < 0)
                snprintf(msg, sizeof(msg), "SKIP sb_probe: %s", err->msg);
        else if (iso != SB_ISOLATION_USERNS)
                snprintf(msg, sizeof(msg), "sb_probe says %d (%s)", iso, why);
        else if (sb_run(&run, &status, &err) < 0)
                snprintf(msg, sizeof(msg), "sb_run: %s", kiln_error_format(err));
        else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || strcmp(out.buf, "0\n") != 0)
                snprintf(msg, sizeof(msg), "status %#x, output '%s'", status, out.buf);
        else if (stat(upper, &st) < 0 || strcmp(list_dir(upper), "data f") != 0)
                snprintf(msg, sizeof(msg), "upper holds '%s'", list_dir(upper));
        else if (fstatat(AT_FDCWD, upper, &st, 0) < 0 || chdir(upper) < 0 || stat("f", &st) < 0 ||
                 st.st_uid != 65534)
                snprintf(msg, sizeof(msg), "/f is not owned by 65534 outside");
        if (why && strcmp(msg, "ok") == 0)
                snprintf(msg, sizeof(msg), "ok %s", why);
        (void) write(fd, msg, strlen(msg));
        _exit(0);
}

static void test_rootless(void)
{
        _cleanup_free_ char *dir = xasprintf("%s/rootless", base);
        _cleanup_free_ char *upper = xasprintf("%s/upper", dir), *work = xasprintf("%s/work", dir);
        char msg[513] = "";
        int fds[2];
        pid_t pid;
        ssize_t n;

        if (mkdir(dir, 0755) < 0 || mkdir(upper, 0755) < 0 || mkdir(work, 0755) < 0 ||
            chown(dir, 65534, 65534) < 0 || chown(upper, 65534, 65534) < 0 ||
            chown(work, 65534, 65534) < 0 || pipe(fds) < 0)
                die(dir);
        fflush(stdout);
        pid = fork();
        if (pid == 0) {
                close(fds[0]);
                rootless_child(fds[1]);
        }
        close(fds[1]);
        n = read(fds[0], msg, sizeof(msg) - 1);
        msg[n > 0 ? n : 0] = '\0';
        close(fds[0]);
        waitpid(pid, NULL, 0);
        if (strncmp(msg, "SKIP ", 5) == 0)
                tap_skip("rootless (uid 65534): %s", msg + 5);
        else
                tap_ok(strncmp(msg, "ok", 2) == 0,
                       "rootless (uid 65534, single id, network none): %s", msg);
}

/* ------------------------------------------------------------------------------------ */
/* Concurrency and cost                                                                   */
/* ------------------------------------------------------------------------------------ */

static double now(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static void *slow_thread(void *arg)
{
        struct t *t = arg;

        t_sh(t, "sleep 2; echo slow");
        return NULL;
}

static void test_concurrency(void)
{
        struct t slow, fast;
        pthread_t th;
        double start, took;

        t_init(&slow, SB_ISOLATION_ROOT);
        t_init(&fast, SB_ISOLATION_ROOT);
        pthread_create(&th, NULL, slow_thread, &slow);
        usleep(100000);
        start = now();
        t_sh(&fast, "echo fast");
        took = now() - start;
        pthread_join(th, NULL);
        tap_ok(t_exited(&fast, 0) && strcmp(fast.out.buf, "fast\n") == 0 && took < 1.5,
               "concurrency: a quick sandbox ends while another runs (%.3f s)", took);
        tap_eq_str(slow.out.buf, "slow\n", "concurrency: the slow one ends too");
        t_release(&slow);
        t_release(&fast);
}

static void test_cost(enum sb_isolation iso, const char *label)
{
        const int n = 20;
        double start = now(), took;
        bool ok = true;
        int i;

        for (i = 0; i < n; i++) {
                struct t t;

                t_init(&t, iso);
                t.argv[0] = "true";
                t.argv[1] = NULL;
                t.r = sb_run(&t.run, &t.status, &t.err);
                ok = ok && t_exited(&t, 0);
                t_release(&t);
        }
        took = (now() - start) / n;
        tap_ok(ok, "%s: %d runs of 'true'", label, n);
        tap_diag("%s: a trivial sb_run takes %.2f ms", label, took * 1000);
}

int main(void)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        bool root = geteuid() == 0;
        enum sb_isolation iso;
        char *why = NULL;

        if (access(BUSYBOX, X_OK) < 0)
                tap_skip_all("%s is missing (Debian package busybox-static)", BUSYBOX);
        if (sb_probe(&iso, &why, &err) < 0)
                tap_skip_all("no sandbox isolation works here: %s", err->msg);
        if (root && iso != SB_ISOLATION_ROOT)
                tap_skip_all("running as root, but root isolation is not available: %s", why);
        tap_diag("sb_probe: %s", why);
        if (root)
                tap_eq_str(why, "running as root", "sb_probe: root isolation, running as root");
        else
                tap_ok(iso == SB_ISOLATION_USERNS, "sb_probe: user namespace isolation");
        free(why);
        make_fixtures(root);

        if (root) {
                test_output_and_status(SB_ISOLATION_ROOT, "root");
                test_upper_holds_only_changes(SB_ISOLATION_ROOT, "root");
                test_bare_image();
                test_workdir();
                test_user();
                test_namespaces();
                test_environment();
                test_network(SB_ISOLATION_ROOT, "root");
                test_exec_errors();
                test_fds();
                test_hostile_images();
                test_layers();
                test_call(SB_ISOLATION_ROOT, "root sb_call");
                test_concurrency();
                test_cost(SB_ISOLATION_ROOT, "root");
        } else {
                tap_diag("not root: the user-namespace tests only (CI runs all as root)");
        }

        test_output_and_status(SB_ISOLATION_USERNS, "userns");
        test_upper_holds_only_changes(SB_ISOLATION_USERNS, "userns");
        test_network(SB_ISOLATION_USERNS, "userns");
        test_call(SB_ISOLATION_USERNS, "userns sb_call");
        test_userns_root_single();
        test_cost(SB_ISOLATION_USERNS, "userns");
        if (root) {
                test_userns_ranges();
                test_rootless();
        }

        {
                /* Overlay leaves work/work with mode 000: an unprivileged owner must chmod. */
                _cleanup_free_ char *cmd =
                        xasprintf("chmod -R u+rwX '%s' 2>/dev/null; rm -rf '%s'", base, base);
                if (system(cmd) != 0)
                        tap_diag("could not remove %s", base);
        }
        return tap_done();
}
