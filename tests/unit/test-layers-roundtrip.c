/*
 * Layers end to end: a tree -> changes -> layer -> extracted over a base gives the same tree,
 * compared by path, type, mode, uid/gid, size, content hash, link target, rdev and xattrs.
 * For a whole tree, for a snapshot diff, and for a real overlayfs upper directory.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "builder/common/fd-util.h"
#include "builder/common/strbuf.h"
#include "builder/common/xalloc.h"
#include "layers/layers.h"
#include "tests/unit/tap.h"

static char base[] = "/tmp/kiln-roundtrip-XXXXXX";
static bool is_root;

static char *at(const char *rel)
{
        return xasprintf("%s/%s", base, rel);
}

static void sh(const char *fmt, ...) _printf_(1, 2);

/* Test fixtures are made with the shell for brevity; kiln itself never shells out. */
static void sh(const char *fmt, ...)
{
        va_list ap;
        char *cmd;

        va_start(ap, fmt);
        if (vasprintf(&cmd, fmt, ap) < 0)
                abort();
        va_end(ap);
        if (system(cmd) != 0)
                tap_diag("command failed: %s", cmd);
        free(cmd);
}

/* One line per path: what the comparison covers. */
static void describe(int dirfd, const char *rel, struct kiln_buf *out)
{
        _cleanup_close_ int fd = -1;
        struct stat st;
        char link[4096], names[4096];
        ssize_t n, nn;
        _cleanup_(layer_sha256_freep) struct layer_sha256 *h = NULL;
        char digest[LAYER_DIGEST_SIZE] = "";

        if (fstatat(dirfd, rel, &st, AT_SYMLINK_NOFOLLOW) < 0) {
                kiln_buf_addf(out, NULL, "%s: stat failed\n", rel);
                return;
        }
        kiln_buf_addf(out, NULL, "%s %o %u:%u", rel, (unsigned) st.st_mode, (unsigned) st.st_uid,
                      (unsigned) st.st_gid);
        if (S_ISREG(st.st_mode)) {
                char buf[65536];
                fd = openat(dirfd, rel, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
                h = layer_sha256_new();
                while (fd >= 0 && (n = read(fd, buf, sizeof(buf))) > 0)
                        layer_sha256_update(h, buf, (size_t) n);
                layer_sha256_final(h, digest);
                kiln_buf_addf(out, NULL, " size=%lld %s", (long long) st.st_size, digest + 7);
        } else if (S_ISLNK(st.st_mode)) {
                n = readlinkat(dirfd, rel, link, sizeof(link) - 1);
                kiln_buf_addf(out, NULL, " -> %.*s", (int) (n > 0 ? n : 0), link);
        } else if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) {
                kiln_buf_addf(out, NULL, " dev=%u,%u", major(st.st_rdev), minor(st.st_rdev));
        }
        if (!S_ISLNK(st.st_mode)) {
                _cleanup_free_ char *path = xasprintf("/proc/self/fd/%d/%s", dirfd, rel);
                nn = llistxattr(path, names, sizeof(names));
                for (char *p = names; nn > 0 && p < names + nn; p += strlen(p) + 1) {
                        char value[256];
                        ssize_t vn;
                        if (strncmp(p, "user.", 5) != 0 || strcmp(p, LAYER_OWNER_XATTR) == 0)
                                continue;
                        vn = lgetxattr(path, p, value, sizeof(value));
                        kiln_buf_addf(out, NULL, " %s=%.*s", p, (int) (vn > 0 ? vn : 0), value);
                }
        }
        kiln_buf_addc(out, '\n', NULL);
}

static int cmp_names(const void *a, const void *b)
{
        return strcmp(*(char *const *) a, *(char *const *) b);
}

static void walk(int rootfd, const char *rel, struct kiln_buf *out)
{
        _cleanup_close_ int fd =
                openat(rootfd, rel[0] ? rel : ".", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        char **names = NULL;
        size_t n = 0, i;
        struct dirent *de;
        DIR *d;

        if (fd < 0)
                return;
        d = fdopendir(fcntl(fd, F_DUPFD_CLOEXEC, 3));
        while (d && (de = readdir(d))) {
                if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                        continue;
                names = xrealloc(names, (n + 1) * sizeof(char *));
                names[n++] = rel[0] ? xasprintf("%s/%s", rel, de->d_name) : xstrdup(de->d_name);
        }
        if (d)
                closedir(d);
        if (n)
                qsort(names, n, sizeof(char *), cmp_names);
        for (i = 0; i < n; i++) {
                struct stat st;
                describe(rootfd, names[i], out);
                if (fstatat(rootfd, names[i], &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode))
                        walk(rootfd, names[i], out);
                free(names[i]);
        }
        free(names);
}

static char *tree_listing(const char *path)
{
        struct kiln_buf out = KILN_BUF_INIT;
        _cleanup_close_ int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

        if (fd >= 0)
                walk(fd, "", &out);
        return kiln_buf_detach(&out, NULL);
}

static int memfd_write(void *ctx, const void *data, size_t len, struct kiln_error **err)
{
        return kiln_write_all(*(int *) ctx, data, len, err);
}

/* changes -> a gzip layer in a memfd -> extracted onto the directory `onto`. */
static bool apply(struct layer_changes *c, const char *onto, struct kiln_error **err)
{
        _cleanup_close_ int mfd = memfd_create("layer", MFD_CLOEXEC);
        _cleanup_close_ int dir = -1;
        struct layer_write_opts wo = LAYER_WRITE_OPTS_DEFAULT;
        struct layer_sink sink = { .write = memfd_write, .ctx = &mfd };
        struct layer_extract_opts xo = { .record_owner = !is_root };
        struct layer_desc d;

        mkdir(onto, 0755);
        dir = open(onto, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (mfd < 0 || dir < 0 || layer_write(c, &wo, &sink, &d, err) < 0)
                return false;
        lseek(mfd, 0, SEEK_SET);
        return layer_extract(dir, mfd, "test layer", &xo, NULL, err) == 0;
}

static void make_tree(const char *t)
{
        sh("mkdir -p %s/bin %s/etc/conf.d %s/var/lib/app %s/opt/old/deep %s/tmp", t, t, t, t, t);
        sh("printf '#!/bin/sh\\necho hi\\n' > %s/bin/hello && chmod 4755 %s/bin/hello", t, t);
        sh("echo welcome > %s/etc/motd && ln %s/etc/motd %s/etc/motd.hard && ln -s motd "
           "%s/etc/motd.link",
           t, t, t, t);
        sh("head -c 200000 /dev/urandom > %s/var/lib/app/data && mkfifo %s/var/lib/app/fifo", t, t);
        sh("echo old > %s/opt/old/deep/file && echo keep > %s/opt/keep && chmod 1777 %s/tmp", t, t,
           t);
        sh("chmod 0700 %s/etc/conf.d && setfattr -n user.origin -v kiln %s/etc/motd", t, t);
        if (is_root) {
                sh("chown -R 1000:2000 %s/var/lib/app && mknod %s/etc/null c 1 3", t, t);
        }
}

/* The changes a RUN would make, done in `t`. */
static void change_tree(const char *t)
{
        sh("echo changed > %s/etc/motd", t); /* modify (a hardlinked file) */
        sh("rm %s/etc/motd.link && ln -s /elsewhere %s/etc/motd.link", t, t); /* retarget a link */
        sh("rm -r %s/opt/old", t); /* delete a directory */
        sh("rm %s/bin/hello && mkdir %s/bin/hello && echo x > %s/bin/hello/x", t, t,
           t);                                                                /* file -> dir */
        sh("rm -r %s/var/lib/app && echo now-a-file > %s/var/lib/app", t, t); /* dir -> file */
        sh("mkdir -p %s/new/a/b && echo n > %s/new/a/b/c", t, t);             /* new tree */
        sh("chmod 0750 %s/etc/conf.d && touch -d @1700000000 %s/opt/keep", t,
           t); /* metadata only */
        sh("setfattr -n user.origin -v changed %s/etc/motd", t);
}

static void whole_tree(void)
{
        _cleanup_free_ char *t = at("tree"), *e = at("extracted");
        _cleanup_free_ char *a = NULL, *b = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct layer_changes c = LAYER_CHANGES_INIT;
        _cleanup_close_ int fd = -1;

        make_tree(t);
        fd = open(t, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        tap_ok(layer_changes_from_tree(fd, &c, &err) == 0, "changes of a whole tree");
        tap_ok(apply(&c, e, &err), "written and extracted into an empty directory%s%s",
               err ? ": " : "", err ? err->msg : "");
        layer_changes_release(&c);
        a = tree_listing(t);
        b = tree_listing(e);
        tap_eq_str(
                b, a,
                "the extracted tree is the tree (types, modes, ids, sizes, hashes, links, xattrs)");
}

static void snapshot_diff(void)
{
        _cleanup_free_ char *t = at("tree"), *e = at("extracted");
        _cleanup_free_ char *a = NULL, *b = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_(layer_snapshot_freep) struct layer_snapshot *snap = NULL;
        struct layer_changes c = LAYER_CHANGES_INIT;
        _cleanup_close_ int fd = open(t, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

        tap_ok(layer_snapshot_take(fd, &snap, &err) == 0, "snapshot the tree");
        change_tree(t);
        tap_ok(layer_changes_from_snapshot(fd, snap, &c, &err) == 0, "diff against the snapshot");
        tap_ok(c.n > 5 && c.n < 30, "only the changes are listed (%zu entries)", c.n);
        tap_ok(apply(&c, e, &err), "the diff layer applies over the old tree%s%s", err ? ": " : "",
               err ? err->msg : "");
        layer_changes_release(&c);
        a = tree_listing(t);
        b = tree_listing(e);
        tap_eq_str(b, a, "old tree + diff layer = new tree");
}

static void overlay_upper(void)
{
        _cleanup_free_ char *lower = at("ovl/lower"), *upper = at("ovl/upper"),
                            *work = at("ovl/work");
        _cleanup_free_ char *merged = at("ovl/merged"), *result = at("ovl/result");
        _cleanup_free_ char *opts = NULL, *want = NULL, *got = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct layer_changes c = LAYER_CHANGES_INIT;
        _cleanup_close_ int ufd = -1;

        if (!is_root) {
                printf("# the overlay round trip needs root; test-layers-changes covers user "
                       "namespaces\n");
                return;
        }
        sh("mkdir -p %s %s %s %s", lower, upper, work, merged);
        make_tree(lower);
        sh("cp -a %s %s", lower, result);
        opts = xasprintf("lowerdir=%s,upperdir=%s,workdir=%s", lower, upper, work);
        if (mount("overlay", merged, "overlay", 0, opts) < 0) {
                tap_skip("cannot mount overlay: %s", strerror(errno));
                return;
        }
        change_tree(merged);
        sh("rm -rf %s/etc/conf.d && mkdir %s/etc/conf.d && echo fresh > %s/etc/conf.d/only", merged,
           merged, merged); /* an opaque directory */
        want = tree_listing(merged);
        umount(merged);
        ufd = open(upper, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        tap_ok(layer_changes_from_upper(ufd, false, &c, &err) == 0,
               "changes of the upper directory");
        tap_ok(apply(&c, result, &err), "the upper's layer applies over the lower tree%s%s",
               err ? ": " : "", err ? err->msg : "");
        layer_changes_release(&c);
        got = tree_listing(result);
        tap_eq_str(got, want, "lower + upper layer = the merged view overlayfs showed");
}

int main(void)
{
        is_root = geteuid() == 0;
        if (!mkdtemp(base))
                tap_skip_all("cannot make a temporary directory");
        whole_tree();
        snapshot_diff();
        overlay_upper();
        sh("rm -rf %s", base);
        return tap_done();
}
