/*
 * layers/changes.c: every entry of a tree, overlayfs upper directories made by real mounts (as
 * root, and in an unprivileged user namespace with userxattr), snapshot diffs, and the
 * snapshot file format.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "builder/common/fd-util.h"
#include "builder/common/strbuf.h"
#include "builder/common/xalloc.h"
#include "layers/layers.h"
#include "tests/unit/tap.h"

static bool is_root;
static char *tmp_root;
static int tmp_fd = -1;

/* Setup that cannot fail on a working machine: stop the run, saying where. */
#define MUST(x) must((x) >= 0, #x, __LINE__)

static void must(bool ok, const char *what, int line)
{
        if (ok)
                return;
        printf("Bail out! line %d: %s: %s\n", line, what, strerror(errno));
        exit(1);
}

/* A point this run cannot do: root-only ones as an unprivileged user. */
static void skip_point(const char *what, const char *reason)
{
        tap_ok(true, "# SKIP %s: %s", what, reason);
}

/* A point the machine cannot do (no overlay, no user namespaces): a failure in CI, where
 * KILN_MUST_WORK=1 says everything must run. */
static void skip_capability(const char *what, const char *reason)
{
        const char *must = getenv("KILN_MUST_WORK");

        if (must && strcmp(must, "1") == 0)
                tap_ok(false, "%s: cannot run (KILN_MUST_WORK=1): %s", what, reason);
        else
                skip_point(what, reason);
}

/* ---- files ---- */

static void put_file(int dirfd, const char *path, const char *data, mode_t mode)
{
        int fd = openat(dirfd, path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);

        MUST(fd);
        MUST(kiln_write_all(fd, data, strlen(data), NULL));
        MUST(fchmod(fd, mode));
        close(fd);
}

static void set_xattr(int dirfd, const char *path, const char *name, const char *value)
{
        char proc[PATH_MAX];

        snprintf(proc, sizeof(proc), "/proc/self/fd/%d/%s", dirfd, path);
        MUST(lsetxattr(proc, name, value, strlen(value), 0));
}

/* A fresh directory under the test's temporary directory. */
static int new_dir(const char *name, char **ret_path)
{
        int fd;

        tap_rm_rf_at(tmp_fd, name);
        MUST(mkdirat(tmp_fd, name, 0755));
        fd = openat(tmp_fd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        MUST(fd);
        if (ret_path)
                *ret_path = xasprintf("%s/%s", tmp_root, name);
        return fd;
}

static int count_fds(void)
{
        DIR *d = opendir("/proc/self/fd");
        int n = 0;

        MUST(d ? 0 : -1);
        while (readdir(d))
                n++;
        closedir(d);
        return n;
}

/* Waits until the coarse clock (the one ctime comes from without multigrain timestamps) has
 * passed `t`, so that the next change gets a different ctime. */
static void wait_past(const struct timespec *t)
{
        struct timespec now;
        int i;

        for (i = 0; i < 20000; i++) {
                clock_gettime(CLOCK_REALTIME_COARSE, &now);
                if (now.tv_sec > t->tv_sec || (now.tv_sec == t->tv_sec && now.tv_nsec > t->tv_nsec))
                        return;
                usleep(100);
        }
}

/* ---- change lists ---- */

/* "+path" for ADD ("(o)" when opaque), "-path" for DELETE, in list order. */
static char *list_of(const struct layer_changes *c)
{
        struct kiln_buf b = KILN_BUF_INIT;
        size_t i;

        for (i = 0; i < c->n; i++) {
                const struct layer_entry *e = &c->entries[i];

                kiln_buf_addf(&b, NULL, "%s%c%s%s", i ? " " : "",
                              e->kind == LAYER_CHANGE_ADD ? '+' : '-', e->path,
                              e->opaque ? "(o)" : "");
        }
        return kiln_buf_detach(&b, NULL);
}

static char *error_text(struct kiln_error *err)
{
        char *msg = kiln_error_format(err),
             *s = xasprintf("error (%s): %s", kiln_errkind_name(err->kind), msg);

        free(msg);
        kiln_error_free(err);
        return s;
}

static const struct layer_entry *find(const struct layer_changes *c, const char *path)
{
        size_t i;

        for (i = 0; i < c->n; i++)
                if (strcmp(c->entries[i].path, path) == 0)
                        return &c->entries[i];
        return NULL;
}

static const struct layer_xattr *find_xattr(const struct layer_entry *e, const char *name)
{
        size_t i;

        for (i = 0; e && i < e->n_xattrs; i++)
                if (strcmp(e->xattrs[i].name, name) == 0)
                        return &e->xattrs[i];
        return NULL;
}

static bool xattr_is(const struct layer_entry *e, const char *name, const char *value)
{
        const struct layer_xattr *x = find_xattr(e, name);

        return x && x->len == strlen(value) && memcmp(x->value, value, x->len) == 0;
}

static bool sorted_parents_first(const struct layer_changes *c)
{
        size_t i, j;

        for (i = 1; i < c->n; i++)
                if (strcmp(c->entries[i - 1].path, c->entries[i].path) >= 0)
                        return false;
        for (i = 0; i < c->n; i++) {
                const char *p = c->entries[i].path, *slash = strrchr(p, '/');
                bool found = false;

                if (!slash)
                        continue;
                for (j = 0; j < i && !found; j++)
                        found = strlen(c->entries[j].path) == (size_t) (slash - p) &&
                                strncmp(c->entries[j].path, p, (size_t) (slash - p)) == 0;
                if (!found)
                        return false;
        }
        return true;
}

static size_t total_xattrs(const struct layer_changes *c)
{
        size_t i, n = 0;

        for (i = 0; i < c->n; i++)
                n += c->entries[i].n_xattrs;
        return n;
}

/* ---- a whole tree ---- */

static void test_tree(void)
{
        struct layer_changes c = LAYER_CHANGES_INIT, zero = { 0 };
        struct kiln_error *err = NULL;
        const struct layer_entry *e, *h1, *h2;
        struct stat st, dst;
        char *got;
        int fd = new_dir("tree", NULL), pathfd, filefd, stdin_ok;

        MUST(mkdirat(fd, "d", 0750));
        MUST(fchmodat(fd, "d", 0750, 0));
        put_file(fd, "d/f", "hello", 0644);
        put_file(fd, "a", "a", 0640);
        MUST(symlinkat("../outside/../x", fd, "link"));
        MUST(symlinkat("a", fd, "link2"));
        put_file(fd, "h1", "h", 0644);
        MUST(linkat(fd, "h1", fd, "d/h2", 0));
        MUST(mkfifoat(fd, "fifo", 0600));
        if (is_root)
                MUST(mknodat(fd, "null", S_IFCHR | 0666, makedev(1, 3)));
        MUST(mkdirat(fd, "x", 0755));
        put_file(fd, "x/y", "", 0644);
        put_file(fd, "x-z", "", 0644);
        put_file(fd, "x.z", "", 0644);
        set_xattr(fd, "a", "user.test", "v1");
        set_xattr(fd, "a", "user.a", "1");
        set_xattr(fd, "a", "user.overlay.opaque", "y");
        set_xattr(fd, "d/f", LAYER_OWNER_XATTR, "1234:5678");
        if (is_root) {
                set_xattr(fd, "link", "trusted.test", "t");
                set_xattr(fd, "a", "trusted.overlay.origin", "o");
        }

        if (layer_changes_from_tree(fd, &c, &err) < 0)
                got = error_text(TAKE_PTR(err));
        else
                got = list_of(&c);
        tap_eq_str(got,
                   is_root ? "+a +d +d/f +d/h2 +fifo +h1 +link +link2 +null +x +x-z +x.z +x/y"
                           : "+a +d +d/f +d/h2 +fifo +h1 +link +link2 +x +x-z +x.z +x/y",
                   "from_tree: every entry, as ADD, in byte order of the path");
        free(got);
        tap_ok(sorted_parents_first(&c), "from_tree: sorted, parents before children");
        MUST(fstat(fd, &st));
        tap_ok(c.dirfd > 2 && fstat(c.dirfd, &dst) == 0 && dst.st_ino == st.st_ino &&
                       (fcntl(c.dirfd, F_GETFD) & FD_CLOEXEC),
               "from_tree: dirfd is a close-on-exec duplicate of the directory");

        e = find(&c, "a");
        tap_ok(e && S_ISREG(e->st.st_mode) && (e->st.st_mode & 07777) == 0640 && e->st.st_size == 1,
               "file: type, mode and size");
        tap_ok(e && e->n_xattrs == 2 && strcmp(e->xattrs[0].name, "user.a") == 0 &&
                       strcmp(e->xattrs[1].name, "user.test") == 0 &&
                       xattr_is(e, "user.test", "v1"),
               "file: xattrs sorted by name, overlay's own left out");
        e = find(&c, "d");
        tap_ok(e && S_ISDIR(e->st.st_mode) && (e->st.st_mode & 07777) == 0750 && !e->opaque,
               "directory: type and mode");
        e = find(&c, "d/f");
        tap_ok(e && e->st.st_uid == 1234 && e->st.st_gid == 5678 && e->n_xattrs == 0,
               "user.kiln.owner becomes the owner and is not recorded");
        h1 = find(&c, "h1");
        h2 = find(&c, "d/h2");
        tap_ok(h1 && h2 && h1->st.st_ino == h2->st.st_ino && h1->st.st_dev == h2->st.st_dev &&
                       h1->st.st_nlink == 2,
               "hardlinked pair: same st_dev/st_ino, nlink 2");
        e = find(&c, "link");
        tap_eq_str(e ? e->link_target : NULL, "../outside/../x", "symlink: target verbatim");
        tap_ok(e && S_ISLNK(e->st.st_mode), "symlink: lstat, not followed");
        if (is_root)
                tap_ok(xattr_is(e, "trusted.test", "t") && e->n_xattrs == 1,
                       "symlink: its own xattrs (trusted.test)");
        else
                skip_point("symlink xattrs", "trusted.* needs root");
        e = find(&c, "link2");
        tap_ok(e && e->n_xattrs == 0 && e->link_target && strcmp(e->link_target, "a") == 0,
               "symlink to a file with xattrs: the target's xattrs are not its own");
        e = find(&c, "fifo");
        tap_ok(e && S_ISFIFO(e->st.st_mode), "fifo");
        if (is_root) {
                e = find(&c, "null");
                tap_ok(e && S_ISCHR(e->st.st_mode) && e->st.st_rdev == makedev(1, 3),
                       "character device with its rdev");
        } else {
                skip_point("character device", "mknod needs root");
        }
        e = find(&c, "x/y");
        tap_ok(e && e->kind == LAYER_CHANGE_ADD && e->link_target == NULL,
               "nested file after x-z and x.z");

        layer_changes_release(&c);
        tap_ok(c.dirfd == -1 && c.n == 0 && c.entries == NULL, "release leaves an empty list");
        layer_changes_release(&c);
        tap_ok(c.dirfd == -1, "release is idempotent");
        stdin_ok = fcntl(0, F_GETFD) >= 0;
        layer_changes_release(&zero);
        tap_ok(!stdin_ok || fcntl(0, F_GETFD) >= 0, "release of a zeroed list closes no fd 0");

        /* layer_store_unpack hands out O_PATH descriptors */
        pathfd = openat(fd, ".", O_PATH | O_DIRECTORY | O_CLOEXEC);
        MUST(pathfd);
        tap_ok(layer_changes_from_tree(pathfd, &c, &err) == 0 && c.n == (is_root ? 13u : 12u),
               "from_tree on an O_PATH descriptor");
        layer_changes_release(&c);
        err = kiln_error_free(err);
        close(pathfd);

        filefd = openat(fd, "a", O_RDONLY | O_CLOEXEC);
        MUST(filefd);
        tap_ok(layer_changes_from_tree(filefd, &c, &err) < 0 && err &&
                       err->kind == KILN_ERR_INVALID && c.dirfd == -1 && c.n == 0,
               "from_tree on a file: INVALID, *ret untouched");
        err = kiln_error_free(err);
        close(filefd);

        set_xattr(fd, "x/y", LAYER_OWNER_XATTR, "12:x");
        tap_ok(layer_changes_from_tree(fd, &c, &err) < 0 && err && err->kind == KILN_ERR_INVALID &&
                       c.n == 0,
               "malformed user.kiln.owner: INVALID");
        err = kiln_error_free(err);
        set_xattr(fd, "x/y", LAYER_OWNER_XATTR, "4294967295:0");
        tap_ok(layer_changes_from_tree(fd, &c, &err) < 0 && err && err->kind == KILN_ERR_INVALID,
               "user.kiln.owner with id -1: INVALID");
        err = kiln_error_free(err);
        close(fd);
}

/* ---- deep trees and descriptors ---- */

static int deep_child(int fd, size_t want)
{
        struct rlimit rl = { .rlim_cur = 100, .rlim_max = 100 };
        struct layer_changes c = LAYER_CHANGES_INIT;
        struct layer_snapshot *s = NULL;
        struct kiln_error *err = NULL;

        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
                return 10;
        if (layer_changes_from_tree(fd, &c, &err) < 0) {
                printf("# %s\n", error_text(err));
                fflush(stdout);
                return 11;
        }
        if (c.n != want)
                return 12;
        layer_changes_release(&c);
        if (layer_snapshot_take(fd, &s, &err) < 0)
                return 13;
        if (layer_changes_from_snapshot(fd, s, &c, &err) < 0)
                return 14;
        if (c.n != 0)
                return 15;
        layer_changes_release(&c);
        layer_snapshot_free(s);
        return 0;
}

static void test_deep(void)
{
        struct layer_changes c = LAYER_CHANGES_INIT;
        struct layer_snapshot *s = NULL;
        struct kiln_error *err = NULL;
        int base = new_dir("deep", NULL), fd, next, status, i;
        pid_t pid;

        /* d/d/.../d, 4096 levels, with a leaf directory "e" beside each d but the last: the walk
         * must come back up through levels whose descriptors it closed. */
        fd = fcntl(base, F_DUPFD_CLOEXEC, 3);
        MUST(fd);
        for (i = 0; i < 4096; i++) {
                MUST(mkdirat(fd, "d", 0755));
                if (i < 4095)
                        MUST(mkdirat(fd, "e", 0755));
                next = openat(fd, "d", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                MUST(next);
                close(fd);
                fd = next;
        }
        fflush(stdout);
        pid = fork();
        MUST(pid);
        if (pid == 0)
                _exit(deep_child(base, 4096 + 4095));
        MUST(waitpid(pid, &status, 0));
        tap_ok(WIFEXITED(status) && WEXITSTATUS(status) == 0,
               "4096 levels deep with RLIMIT_NOFILE 100: walk, snapshot and diff (status %d)",
               WIFEXITED(status) ? WEXITSTATUS(status) : -1);

        MUST(mkdirat(fd, "d", 0755));
        tap_ok(layer_changes_from_tree(base, &c, &err) < 0 && err && err->kind == KILN_ERR_LIMIT &&
                       c.dirfd == -1,
               "4097 levels: LIMIT");
        err = kiln_error_free(err);
        tap_ok(layer_snapshot_take(base, &s, &err) < 0 && err && err->kind == KILN_ERR_LIMIT &&
                       s == NULL,
               "4097 levels: snapshot LIMIT");
        err = kiln_error_free(err);
        close(fd);

        /* rm -rf of 4097 levels without 4097 descriptors: move each level up and remove it. */
        for (;;) {
                bool more;

                fd = openat(base, "chain", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (fd < 0) {
                        MUST(renameat(base, "d", base, "chain"));
                        continue;
                }
                unlinkat(fd, "e", AT_REMOVEDIR);
                more = renameat(fd, "d", base, "next") == 0;
                close(fd);
                MUST(unlinkat(base, "chain", AT_REMOVEDIR));
                if (!more)
                        break;
                MUST(renameat(base, "next", base, "chain"));
        }
        close(base);
        tap_rm_rf_at(tmp_fd, "deep");
}

static void test_fds(void)
{
        struct layer_changes c = LAYER_CHANGES_INIT;
        struct layer_snapshot *s = NULL;
        struct kiln_error *err = NULL;
        int fd = new_dir("fds", NULL), before, i, ok = 0;
        char name[32];

        for (i = 0; i < 300; i++) {
                snprintf(name, sizeof(name), "d%d", i);
                MUST(mkdirat(fd, name, 0755));
                snprintf(name, sizeof(name), "d%d/f", i);
                put_file(fd, name, "x", 0644);
        }
        before = count_fds();
        ok += layer_changes_from_tree(fd, &c, &err) == 0 && c.n == 600;
        layer_changes_release(&c);
        ok += layer_changes_from_upper(fd, false, &c, &err) == 0 && c.n == 600;
        layer_changes_release(&c);
        ok += layer_snapshot_take(fd, &s, &err) == 0;
        ok += layer_changes_from_snapshot(fd, s, &c, &err) == 0 && c.n == 0;
        layer_changes_release(&c);
        s = layer_snapshot_free(s);
        tap_ok(ok == 4 && count_fds() == before, "no descriptor outlives a walk (%d -> %d)", before,
               count_fds());
        if (err) {
                char *msg = error_text(TAKE_PTR(err));

                tap_diag("%s", msg);
                free(msg);
        }
        close(fd);
        tap_rm_rf_at(tmp_fd, "fds");
}

/* ---- snapshots ---- */

static struct layer_snapshot *snap_of(int fd)
{
        struct layer_snapshot *s = NULL;
        struct kiln_error *err = NULL;

        if (layer_snapshot_take(fd, &s, &err) < 0) {
                char *msg = error_text(err);

                printf("Bail out! snapshot: %s\n", msg);
                exit(1);
        }
        return s;
}

/* Diffs the tree against *snap, then snapshots it again for the next step. */
static char *step(int fd, struct layer_snapshot **snap, struct layer_changes *c)
{
        struct kiln_error *err = NULL;
        char *got;

        layer_changes_release(c);
        if (layer_changes_from_snapshot(fd, *snap, c, &err) < 0)
                got = error_text(err);
        else
                got = list_of(c);
        layer_snapshot_free(*snap);
        *snap = snap_of(fd);
        return got;
}

#define STEP(want, ...)                                       \
        do {                                                  \
                char *got_ = step(fd, &snap, &c);             \
                tap_eq_str(got_, want, "diff: " __VA_ARGS__); \
                free(got_);                                   \
        } while (0)

static void test_diffs(void)
{
        struct layer_changes c = LAYER_CHANGES_INIT;
        struct layer_snapshot *snap;
        const struct layer_entry *e;
        struct timespec times[2];
        struct stat st;
        char buf[16];
        int fd = new_dir("snap", NULL), f;

        put_file(fd, "f", "0123456789", 0644);
        put_file(fd, "g", "g", 0644);
        MUST(mkdirat(fd, "d", 0755));
        put_file(fd, "d/f1", "1", 0644);
        put_file(fd, "d/f2", "2", 0644);
        MUST(mkdirat(fd, "sub", 0755));
        put_file(fd, "sub/a", "a", 0644);
        put_file(fd, "sub/b", "b", 0644);
        MUST(mkdirat(fd, "sub/c", 0755));
        put_file(fd, "sub/c/d", "d", 0644);
        put_file(fd, "p", "p", 0644);
        MUST(mkdirat(fd, "r", 0755));
        put_file(fd, "r/a", "a", 0644);
        put_file(fd, "r/b", "b", 0644);
        put_file(fd, "xa", "", 0644);
        set_xattr(fd, "xa", "user.test", "1");
        MUST(mkdirat(fd, "xd", 0755));
        MUST(mkdirat(fd, "md", 0755));
        put_file(fd, "md/keep", "", 0644);
        MUST(mkdirat(fd, "cm", 0755));
        put_file(fd, "own", "", 0644);
        MUST(symlinkat("t1", fd, "l"));
        put_file(fd, "hl-src", "", 0644);

        snap = snap_of(fd);
        f = openat(fd, "f", O_RDONLY | O_CLOEXEC);
        MUST(f);
        MUST(read(f, buf, sizeof(buf)));
        close(f);
        STEP("", "unchanged tree (a file read)");

        MUST(fstatat(fd, "f", &st, 0));
        wait_past(&st.st_ctim);
        f = openat(fd, "f", O_WRONLY | O_CLOEXEC);
        MUST(f);
        MUST(pwrite(f, "abcdefghij", 10, 0));
        times[0] = st.st_atim;
        times[1] = st.st_mtim;
        MUST(futimens(f, times));
        close(f);
        e = NULL;
        {
                char *got = step(fd, &snap, &c);

                tap_eq_str(got, "+f", "diff: same size, mtime restored: ctime tells");
                free(got);
                e = find(&c, "f");
                tap_ok(e && e->st.st_mtim.tv_sec == st.st_mtim.tv_sec &&
                               e->st.st_mtim.tv_nsec == st.st_mtim.tv_nsec && e->st.st_size == 10,
                       "diff: the ADD carries the current stat");
        }

        MUST(fchmodat(fd, "f", 0600, 0));
        STEP("+f", "chmod");

        if (is_root) {
                MUST(fchownat(fd, "own", 1, 1, 0));
                STEP("+own", "chown");
        } else {
                skip_point("diff: chown", "needs root");
        }

        set_xattr(fd, "g", LAYER_OWNER_XATTR, "7:8");
        {
                char *got = step(fd, &snap, &c);

                tap_eq_str(got, "+g", "diff: user.kiln.owner changed");
                free(got);
                e = find(&c, "g");
                tap_ok(e && e->st.st_uid == 7 && e->st.st_gid == 8 && e->n_xattrs == 0,
                       "diff: the ADD has the recorded owner");
        }

        put_file(fd, "d/new", "n", 0644);
        STEP("+d/new", "new file (its directory is not an ADD)");

        MUST(unlinkat(fd, "d/f1", 0));
        STEP("-d/f1", "deleted file");

        put_file(fd, "d/f2", "changed", 0644);
        STEP("+d/f2", "modified file in a directory");

        tap_rm_rf_at(fd, "sub");
        STEP("-sub", "deleted directory with children: only the top");

        MUST(unlinkat(fd, "p", 0));
        MUST(mkdirat(fd, "p", 0755));
        put_file(fd, "p/c", "c", 0644);
        STEP("+p +p/c", "file -> directory");

        tap_rm_rf_at(fd, "p");
        MUST(symlinkat("target", fd, "p"));
        {
                char *got = step(fd, &snap, &c);

                tap_eq_str(got, "+p", "diff: directory -> symlink (no DELETE below it)");
                free(got);
                e = find(&c, "p");
                tap_ok(e && S_ISLNK(e->st.st_mode) && e->link_target &&
                               strcmp(e->link_target, "target") == 0,
                       "diff: the new symlink's target");
        }

        MUST(unlinkat(fd, "p", 0));
        put_file(fd, "p", "file again", 0644);
        STEP("+p", "symlink -> file");

        tap_rm_rf_at(fd, "r");
        MUST(mkdirat(fd, "r", 0755));
        put_file(fd, "r/a", "new a", 0644);
        STEP("+r +r/a -r/b", "replaced directory");

        set_xattr(fd, "xa", "user.test", "2");
        {
                char *got = step(fd, &snap, &c);

                tap_eq_str(got, "+xa", "diff: xattr value changed");
                free(got);
                tap_ok(xattr_is(find(&c, "xa"), "user.test", "2"), "diff: the fresh xattr value");
        }

        set_xattr(fd, "xd", "user.test", "1");
        STEP("+xd", "xattr added to a directory");

        times[0].tv_sec = times[1].tv_sec = 1000000000;
        times[0].tv_nsec = times[1].tv_nsec = 0;
        MUST(utimensat(fd, "md", times, AT_SYMLINK_NOFOLLOW));
        STEP("+md", "directory mtime set");

        MUST(fchmodat(fd, "cm", 0700, 0));
        STEP("+cm", "directory chmod");

        MUST(unlinkat(fd, "l", 0));
        MUST(symlinkat("t2", fd, "l"));
        STEP("+l", "symlink retargeted");
        e = find(&c, "l");
        tap_eq_str(e ? e->link_target : NULL, "t2", "diff: the new link target");

        MUST(linkat(fd, "hl-src", fd, "d/hl", 0));
        STEP("+d/hl +hl-src", "hardlink added (both names)");

        STEP("", "unchanged again");

        layer_changes_release(&c);
        layer_snapshot_free(snap);
        close(fd);
}

static int memfd_of(const void *data, size_t len)
{
        int fd = memfd_create("snapshot", MFD_CLOEXEC);

        MUST(fd);
        MUST(kiln_write_all(fd, data, len, NULL));
        MUST(lseek(fd, 0, SEEK_SET));
        return fd;
}

static bool load_fails_parse(const void *data, size_t len)
{
        struct layer_snapshot *s = NULL;
        struct kiln_error *err = NULL;
        int fd = memfd_of(data, len), r;
        bool parse;

        r = layer_snapshot_load(fd, &s, &err);
        parse = r < 0 && err && err->kind == KILN_ERR_PARSE && s == NULL;
        kiln_error_free(err);
        layer_snapshot_free(s);
        close(fd);
        return parse;
}

static void test_snapshot_file(void)
{
        struct layer_changes c = LAYER_CHANGES_INIT;
        struct layer_snapshot *s, *back = NULL;
        struct kiln_error *err = NULL;
        char *data, *again, *bad;
        size_t len, again_len, i, parse_truncated = 0, parse_flipped = 0;
        int fd = new_dir("file", NULL), out;

        MUST(mkdirat(fd, "d", 0755));
        put_file(fd, "d/f", "f", 0644);
        MUST(symlinkat("d/f", fd, "l"));
        put_file(fd, "x", "", 0600);
        set_xattr(fd, "x", "user.x", "1");
        s = snap_of(fd);

        out = memfd_create("snapshot", MFD_CLOEXEC);
        MUST(out);
        tap_ok(layer_snapshot_save(s, out, &err) == 0, "save");
        MUST(lseek(out, 0, SEEK_SET));
        MUST(kiln_read_fd_all(out, 1 << 20, &data, &len, NULL));
        MUST(lseek(out, 0, SEEK_SET));
        tap_ok(layer_snapshot_load(out, &back, &err) == 0 && back, "load what was saved");
        close(out);
        if (err) {
                char *msg = error_text(TAKE_PTR(err));

                tap_diag("%s", msg);
                free(msg);
        }

        tap_ok(back && layer_changes_from_snapshot(fd, back, &c, &err) == 0 && c.n == 0,
               "a loaded snapshot of an unchanged tree: no changes");
        layer_changes_release(&c);
        out = memfd_create("snapshot", MFD_CLOEXEC);
        MUST(out);
        tap_ok(back && layer_snapshot_save(back, out, &err) == 0, "save the loaded snapshot");
        MUST(lseek(out, 0, SEEK_SET));
        MUST(kiln_read_fd_all(out, 1 << 20, &again, &again_len, NULL));
        close(out);
        tap_eq_mem(again, again_len, data, len, "round trip: the same bytes");
        free(again);

        put_file(fd, "d/new", "", 0644);
        tap_ok(back && layer_changes_from_snapshot(fd, back, &c, &err) == 0 && c.n == 1 &&
                       strcmp(c.entries[0].path, "d/new") == 0,
               "a loaded snapshot finds a new file");
        layer_changes_release(&c);

        for (i = 0; i < len; i++)
                parse_truncated += load_fails_parse(data, i);
        tap_eq_int((long long) parse_truncated, (long long) len,
                   "every truncation (0..%zu bytes) is a PARSE error", len - 1);
        bad = xmemdup(data, len + 1);
        for (i = 0; i < len; i++) {
                bad[i] ^= 0x20;
                parse_flipped += load_fails_parse(bad, len);
                bad[i] ^= 0x20;
        }
        tap_eq_int((long long) parse_flipped, (long long) len,
                   "every flipped byte is a PARSE error");
        bad[len] = '\n';
        tap_ok(load_fails_parse(bad, len + 1), "data after the end: PARSE");
        tap_ok(load_fails_parse("KILNSNAP", 8), "a bare magic: PARSE");
        free(bad);

        free(data);
        layer_snapshot_free(s);
        layer_snapshot_free(back);
        kiln_error_free(err);
        close(fd);
}

/* ---- overlayfs upper directories ---- */

/* Upper directories written by hand: every whiteout form, without a mount. */
static void crafted_upper(bool user)
{
        const char *prefix = user ? "user.overlay." : "trusted.overlay.";
        struct layer_changes c = LAYER_CHANGES_INIT;
        struct kiln_error *err = NULL;
        char name[64], *got, *want;
        bool chr;
        int fd = new_dir(user ? "craft-user" : "craft-trusted", NULL);

        chr = mknodat(fd, "wh", S_IFCHR | 0, makedev(0, 0)) == 0;
        MUST(mkdirat(fd, "x", 0755));
        snprintf(name, sizeof(name), "%sopaque", prefix);
        set_xattr(fd, "x", name, "x");
        put_file(fd, "x/gone", "", 0644);
        put_file(fd, "x/kept", "", 0644);
        put_file(fd, "x/notempty", "data", 0644);
        snprintf(name, sizeof(name), "%swhiteout", prefix);
        set_xattr(fd, "x/gone", name, "");
        set_xattr(fd, "x/notempty", name, "");
        MUST(mkdirat(fd, "y", 0755));
        put_file(fd, "y/notwh", "", 0644);
        set_xattr(fd, "y/notwh", name, "");
        MUST(mkdirat(fd, "z", 0755));
        put_file(fd, "z/gone2", "", 0644);
        set_xattr(fd, "z/gone2", name, "");
        snprintf(name, sizeof(name), "%swhiteouts", prefix);
        set_xattr(fd, "z", name, "");
        MUST(mkdirat(fd, "o", 0755));
        snprintf(name, sizeof(name), "%sopaque", prefix);
        set_xattr(fd, "o", name, "y");

        if (layer_changes_from_upper(fd, user, &c, &err) < 0)
                got = error_text(err);
        else
                got = list_of(&c);
        want = xasprintf("+o(o) %s+x -x/gone +x/kept +x/notempty +y +y/notwh +z -z/gone2",
                         chr ? "-wh " : "");
        tap_eq_str(got, want, "crafted %s upper: char 0/0 and xattr whiteouts, opaque y and x",
                   prefix);
        tap_ok(total_xattrs(&c) == 0, "crafted %s upper: overlay's xattrs not recorded", prefix);
        if (!chr)
                tap_diag("mknod of a 0/0 whiteout not permitted here: %s", strerror(errno));
        free(got);
        free(want);
        layer_changes_release(&c);

        /* The other namespace's markers mean nothing. */
        if (layer_changes_from_upper(fd, !user, &c, &err) < 0)
                got = error_text(err);
        else
                got = list_of(&c);
        want = xasprintf("+o %s+x +x/gone +x/kept +x/notempty +y +y/notwh +z +z/gone2",
                         chr ? "-wh " : "");
        tap_eq_str(got, want, "crafted %s upper read with userxattr=%s: markers ignored", prefix,
                   user ? "false" : "true");
        free(got);
        free(want);
        layer_changes_release(&c);

        snprintf(name, sizeof(name), "%smetacopy", prefix);
        set_xattr(fd, "y/notwh", name, "");
        tap_ok(layer_changes_from_upper(fd, user, &c, &err) < 0 && err &&
                       err->kind == KILN_ERR_UNSUPPORTED,
               "crafted %s upper: a metacopy file is UNSUPPORTED", prefix);
        err = kiln_error_free(err);
        close(fd);
}

static void test_crafted(void)
{
        crafted_upper(true);
        if (is_root)
                crafted_upper(false);
        else
                skip_point("crafted trusted.overlay upper", "trusted.* needs root");
}

static const char *const expected_upper =
        "-del -deldir +mod +new +opq(o) +opq/fresh +repl(o) +repl/in +sub +sub/added";

/* lower/{keep,mod,del,deldir/{a,b},opq/{x,y/z},repl,sub/inner}, empty upper, work, merged. */
static void make_overlay_dirs(int fd)
{
        int lower;

        MUST(mkdirat(fd, "lower", 0755));
        MUST(mkdirat(fd, "upper", 0755));
        MUST(mkdirat(fd, "work", 0755));
        MUST(mkdirat(fd, "merged", 0755));
        lower = openat(fd, "lower", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        MUST(lower);
        put_file(lower, "keep", "keep", 0644);
        put_file(lower, "mod", "old", 0644);
        put_file(lower, "del", "del", 0644);
        MUST(mkdirat(lower, "deldir", 0755));
        put_file(lower, "deldir/a", "a", 0644);
        put_file(lower, "deldir/b", "b", 0644);
        MUST(mkdirat(lower, "opq", 0755));
        put_file(lower, "opq/x", "x", 0644);
        MUST(mkdirat(lower, "opq/y", 0755));
        put_file(lower, "opq/y/z", "z", 0644);
        put_file(lower, "repl", "file", 0644);
        MUST(mkdirat(lower, "sub", 0755));
        put_file(lower, "sub/inner", "i", 0644);
        close(lower);
}

/* The same changes through the merged directory; returns a description of what failed. */
static const char *change_merged(const char *merged)
{
        int m = open(merged, O_RDONLY | O_DIRECTORY | O_CLOEXEC), f;

        if (m < 0)
                return "open merged";
        f = openat(m, "new", O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        if (f < 0 || write(f, "new", 3) != 3)
                return "create new";
        close(f);
        f = openat(m, "mod", O_WRONLY | O_APPEND | O_CLOEXEC);
        if (f < 0 || write(f, "er", 2) != 2)
                return "modify mod";
        close(f);
        if (unlinkat(m, "del", 0) < 0)
                return "delete del";
        if (unlinkat(m, "deldir/a", 0) < 0 || unlinkat(m, "deldir/b", 0) < 0 ||
            unlinkat(m, "deldir", AT_REMOVEDIR) < 0)
                return "delete deldir";
        if (unlinkat(m, "opq/x", 0) < 0 || unlinkat(m, "opq/y/z", 0) < 0 ||
            unlinkat(m, "opq/y", AT_REMOVEDIR) < 0 || unlinkat(m, "opq", AT_REMOVEDIR) < 0 ||
            mkdirat(m, "opq", 0755) < 0)
                return "recreate opq";
        f = openat(m, "opq/fresh", O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        if (f < 0)
                return "create opq/fresh";
        close(f);
        if (unlinkat(m, "repl", 0) < 0 || mkdirat(m, "repl", 0755) < 0)
                return "replace repl";
        f = openat(m, "repl/in", O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        if (f < 0)
                return "create repl/in";
        close(f);
        f = openat(m, "sub/added", O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        if (f < 0)
                return "create sub/added";
        close(f);
        close(m);
        return NULL;
}

static char *upper_list(const char *upper, bool userxattr, size_t *ret_xattrs)
{
        struct layer_changes c = LAYER_CHANGES_INIT;
        struct kiln_error *err = NULL;
        int fd = open(upper, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        char *got;

        if (fd < 0)
                return xasprintf("open upper: %s", strerror(errno));
        if (layer_changes_from_upper(fd, userxattr, &c, &err) < 0) {
                got = error_text(err);
        } else {
                got = list_of(&c);
                *ret_xattrs = total_xattrs(&c);
        }
        layer_changes_release(&c);
        close(fd);
        return got;
}

static void test_overlay_root(void)
{
        char *base, *opts, *lower, *upper, *work, *merged, *got;
        const char *failed;
        size_t nx = 99;
        int fd;

        if (!is_root) {
                skip_point("overlay mounted as root", "not root");
                skip_point("overlay metacopy upper", "not root");
                return;
        }
        fd = new_dir("ovl", &base);
        make_overlay_dirs(fd);
        lower = xasprintf("%s/lower", base);
        upper = xasprintf("%s/upper", base);
        work = xasprintf("%s/work", base);
        merged = xasprintf("%s/merged", base);
        opts = xasprintf("lowerdir=%s,upperdir=%s,workdir=%s,redirect_dir=off,metacopy=off", lower,
                         upper, work);
        if (mount("overlay", merged, "overlay", 0, opts) < 0) {
                skip_capability("overlay mounted as root", strerror(errno));
        } else {
                failed = change_merged(merged);
                MUST(umount2(merged, 0));
                if (failed) {
                        tap_ok(false, "overlay as root: %s: %s", failed, strerror(errno));
                } else {
                        got = upper_list(upper, false, &nx);
                        tap_eq_str(got, expected_upper,
                                   "overlay as root: from_upper(userxattr=false)");
                        tap_ok(nx == 0, "overlay as root: no overlay xattrs recorded (%zu)", nx);
                        free(got);
                }
        }
        free(opts);

        /* metacopy=on: a chmod copies up metadata only; the walk refuses it. */
        tap_rm_rf_at(fd, "upper");
        tap_rm_rf_at(fd, "work");
        MUST(mkdirat(fd, "upper", 0755));
        MUST(mkdirat(fd, "work", 0755));
        opts = xasprintf("lowerdir=%s,upperdir=%s,workdir=%s,metacopy=on", lower, upper, work);
        if (mount("overlay", merged, "overlay", 0, opts) < 0) {
                skip_capability("overlay metacopy upper", strerror(errno));
        } else {
                char m[PATH_MAX];

                snprintf(m, sizeof(m), "%s/keep", merged);
                MUST(chmod(m, 0600));
                MUST(umount2(merged, 0));
                got = upper_list(upper, false, &nx);
                tap_ok(strncmp(got, "error (unsupported)", 19) == 0,
                       "overlay metacopy upper: UNSUPPORTED (%s)", got);
                free(got);
        }
        free(opts);
        free(lower);
        free(upper);
        free(work);
        free(merged);
        free(base);
        close(fd);
}

static int write_proc(const char *path, const char *text)
{
        int fd = open(path, O_WRONLY | O_CLOEXEC), r;

        if (fd < 0)
                return -1;
        r = kiln_write_all(fd, text, strlen(text), NULL);
        close(fd);
        return r;
}

/* In the child: reports "OK <list> <xattrs>", "SKIP <why>" or "FAIL <why>" on `out`. */
static void userns_child(int out)
{
        char tmpl[] = "/tmp/kiln-test-userns-XXXXXX", map[64], *opts, *got, *p;
        const char *failed;
        uid_t uid;
        gid_t gid;
        size_t nx = 99;
        int fd, r;
        FILE *f = fdopen(out, "w");

        if (!f)
                _exit(3);
        if (getuid() == 0 && (setgroups(0, NULL) < 0 || setresgid(65534, 65534, 65534) < 0 ||
                              setresuid(65534, 65534, 65534) < 0)) {
                fprintf(f, "FAIL drop to 65534: %s", strerror(errno));
                fclose(f);
                _exit(1);
        }
        /* Changing ids made the process non-dumpable, which would make /proc/self/uid_map
         * root's. */
        prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
        uid = getuid();
        gid = getgid();
        if (!mkdtemp(tmpl)) {
                fprintf(f, "FAIL mkdtemp: %s", strerror(errno));
                fclose(f);
                _exit(1);
        }
        fd = open(tmpl, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0) {
                fprintf(f, "FAIL open %s: %s", tmpl, strerror(errno));
                fclose(f);
                _exit(1);
        }
        make_overlay_dirs(fd);
        if (unshare(CLONE_NEWUSER | CLONE_NEWNS) < 0) {
                fprintf(f, "SKIP unshare(CLONE_NEWUSER|CLONE_NEWNS): %s", strerror(errno));
                goto out;
        }
        snprintf(map, sizeof(map), "0 %u 1", (unsigned) uid);
        r = write_proc("/proc/self/setgroups", "deny");
        if (r == 0)
                r = write_proc("/proc/self/uid_map", map);
        snprintf(map, sizeof(map), "0 %u 1", (unsigned) gid);
        if (r == 0)
                r = write_proc("/proc/self/gid_map", map);
        if (r < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) {
                /* e.g. AppArmor's restriction of unprivileged user namespaces */
                fprintf(f, "SKIP id maps or private mounts in a user namespace: %s",
                        strerror(errno));
                goto out;
        }
        opts = xasprintf("lowerdir=%s/lower,upperdir=%s/upper,workdir=%s/work,userxattr", tmpl,
                         tmpl, tmpl);
        p = xasprintf("%s/merged", tmpl);
        if (mount("overlay", p, "overlay", 0, opts) < 0) {
                fprintf(f, "SKIP overlay with userxattr in a user namespace: %s", strerror(errno));
                goto out;
        }
        failed = change_merged(p);
        if (umount2(p, 0) < 0 && !failed)
                failed = "umount";
        if (failed) {
                fprintf(f, "FAIL %s: %s", failed, strerror(errno));
                goto out;
        }
        free(p);
        p = xasprintf("%s/upper", tmpl);
        got = upper_list(p, true, &nx);
        fprintf(f, "OK %zu %s", nx, got);
        free(got);
out:
        fclose(f);
        tap_rm_rf_at(AT_FDCWD, tmpl);
        _exit(0);
}

static void test_overlay_userns(void)
{
        char *report = NULL, *want;
        size_t len = 0;
        int pipefd[2], status;
        pid_t pid;

        MUST(pipe2(pipefd, O_CLOEXEC));
        fflush(stdout);
        pid = fork();
        MUST(pid);
        if (pid == 0) {
                close(pipefd[0]);
                userns_child(pipefd[1]);
        }
        close(pipefd[1]);
        MUST(kiln_read_fd_all(pipefd[0], 1 << 16, &report, &len, NULL));
        close(pipefd[0]);
        MUST(waitpid(pid, &status, 0));
        if (strncmp(report, "SKIP ", 5) == 0) {
                skip_capability("overlay in an unprivileged user namespace", report + 5);
                free(report);
                return;
        }
        tap_ok(WIFEXITED(status) && WEXITSTATUS(status) == 0 && strncmp(report, "OK ", 3) == 0,
               "userns overlay: the child ran (%s)", report);
        want = xasprintf("OK 0 %s", expected_upper);
        tap_eq_str(report, want, "userns overlay: from_upper(userxattr=true), no xattrs kept");
        free(want);
        free(report);
}

int main(void)
{
        const char *tmpdir = getenv("TMPDIR");
        char *tmpl;

        umask(022);
        is_root = geteuid() == 0;
        tmpl = xasprintf("%s/kiln-test-changes-XXXXXX", tmpdir && *tmpdir ? tmpdir : "/tmp");
        MUST(mkdtemp(tmpl) ? 0 : -1);
        tmp_root = tmpl;
        tmp_fd = open(tmp_root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        MUST(tmp_fd);
        if (setxattr(tmp_root, "user.kiln.probe", "1", 1, 0) < 0) {
                int e = errno;

                rmdir(tmp_root);
                tap_skip_all("%s has no user xattrs: %s", tmp_root, strerror(e));
        }

        test_tree();
        test_fds();
        test_deep();
        test_diffs();
        test_snapshot_file();
        test_crafted();
        test_overlay_root();
        test_overlay_userns();

        close(tmp_fd);
        tap_rm_rf_at(AT_FDCWD, tmp_root);
        free(tmp_root);
        return tap_done();
}
