/*
 * layer_extract(): every entry kind, stacked layers with whiteouts and opaque directories, a
 * hostile suite (each case must fail or stay inside the root, with a sentinel directory beside
 * the root left untouched), limits, and ownership recorded in an xattr. Layers are written with
 * libarchive into memfds.
 */
#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "builder/common/fd-util.h"
#include "builder/common/strbuf.h"
#include "builder/common/xalloc.h"
#include "layers/layers.h"
#include "tests/unit/tap.h"

static char *base; /* the test's temporary directory */
static int basefd = -1;
static char *sentinel; /* base/sentinel, beside the root, holding "file" */
static bool is_root, can_mknod, has_user_xattr;
static unsigned n_warnings;
static uid_t own_uid;
static gid_t own_gid;

/* ------------------------------------------------------------------------------------ */
/* Writing layers                                                                         */
/* ------------------------------------------------------------------------------------ */

enum compression { PLAIN, GZIP, ZSTD };

struct spec {
        const char *path;
        mode_t type; /* AE_IF*; 0: a regular file */
        mode_t mode; /* 0: 0644 for files, 0755 for directories */
        const char *content;
        uint64_t zeros; /* content of that many zero bytes instead */
        const char *link;
        const char *hardlink;
        bool ids; /* uid/gid given; else the caller's */
        unsigned uid, gid;
        unsigned major, minor;
        const char *xattr, *xattr_value;
        time_t mtime; /* 0: 1600000000 */
        long nsec;
};

#define FILE_(p, c)                         \
        {                                   \
                .path = (p), .content = (c) \
        }
#define DIR_(p)                               \
        {                                     \
                .path = (p), .type = AE_IFDIR \
        }
#define SYMLINK_(p, t)                                     \
        {                                                  \
                .path = (p), .type = AE_IFLNK, .link = (t) \
        }
#define HARDLINK_(p, t)                      \
        {                                    \
                .path = (p), .hardlink = (t) \
        }
#define WHITEOUT_(p)        \
        {                   \
                .path = (p) \
        }

static void add_entry(struct archive *w, const struct spec *s)
{
        struct archive_entry *e = archive_entry_new();
        mode_t type = s->type ? s->type : AE_IFREG;
        uint64_t size = s->content ? strlen(s->content) : s->zeros;

        archive_entry_set_pathname(e, s->path);
        archive_entry_set_filetype(e, type);
        archive_entry_set_perm(e, s->mode ? s->mode : type == AE_IFDIR ? 0755 : 0644);
        archive_entry_set_uid(e, s->ids ? s->uid : own_uid);
        archive_entry_set_gid(e, s->ids ? s->gid : own_gid);
        archive_entry_set_mtime(e, s->mtime ? s->mtime : 1600000000, s->nsec);
        if (s->link)
                archive_entry_set_symlink(e, s->link);
        if (s->hardlink) {
                archive_entry_set_hardlink(e, s->hardlink);
                size = 0;
        }
        if (type == AE_IFCHR || type == AE_IFBLK)
                archive_entry_set_rdev(e, makedev(s->major, s->minor));
        if (s->xattr)
                archive_entry_xattr_add_entry(e, s->xattr, s->xattr_value, strlen(s->xattr_value));
        if (type != AE_IFREG)
                size = 0;
        archive_entry_set_size(e, (la_int64_t) size);
        if (archive_write_header(w, e) != ARCHIVE_OK) {
                fprintf(stderr, "archive_write_header: %s\n", archive_error_string(w));
                exit(1);
        }
        if (s->content) {
                archive_write_data(w, s->content, size);
        } else if (size) {
                static char zeros[1 << 16];
                uint64_t left = size;

                while (left) {
                        size_t n = left < sizeof(zeros) ? (size_t) left : sizeof(zeros);
                        archive_write_data(w, zeros, n);
                        left -= n;
                }
        }
        archive_entry_free(e);
}

/* Writes a layer into a memfd; returns it, positioned at its start. */
static int make_layer(enum compression c, const struct spec *specs, size_t n)
{
        struct archive *w = archive_write_new();
        int fd = memfd_create("layer", MFD_CLOEXEC);
        size_t i;

        if (fd < 0 || !w)
                abort();
        archive_write_set_format_pax(w);
        if (c == GZIP)
                archive_write_add_filter_gzip(w);
        else if (c == ZSTD)
                archive_write_add_filter_zstd(w);
        archive_write_set_bytes_in_last_block(w, 1);
        if (archive_write_open_fd(w, fd) != ARCHIVE_OK)
                abort();
        for (i = 0; i < n; i++)
                add_entry(w, &specs[i]);
        archive_write_close(w);
        archive_write_free(w);
        lseek(fd, 0, SEEK_SET);
        return fd;
}

#define LAYER(c, ...)                                          \
        ({                                                     \
                const struct spec _specs_[] = { __VA_ARGS__ }; \
                make_layer((c), _specs_, ELEMENTSOF(_specs_)); \
        })

static void count_warning(void *ctx, const char *msg)
{
        (void) ctx;
        n_warnings++;
        tap_diag("warning: %s", msg);
}

/* Extracts and closes the layer. */
static int extract(int rootfd, int fd, const char *what, const struct layer_extract_opts *o,
                   struct layer_extract_stats *st, struct kiln_error **err)
{
        struct layer_extract_opts opts = { 0 };
        struct layer_extract_stats dummy;
        int r;

        if (o)
                opts = *o;
        opts.warn = count_warning;
        r = layer_extract(rootfd, fd, what, &opts, st ? st : &dummy, err);
        close(fd);
        return r;
}

/* ------------------------------------------------------------------------------------ */
/* Trees                                                                                  */
/* ------------------------------------------------------------------------------------ */

/* A fresh, empty base/root, returned open. */
static int fresh_root(void)
{
        int fd;

        tap_rm_rf_at(basefd, "root");
        if (mkdirat(basefd, "root", 0755) < 0)
                abort();
        fd = openat(basefd, "root", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                abort();
        return fd;
}

static bool exists(int dirfd, const char *path)
{
        struct stat st;

        return fstatat(dirfd, path, &st, AT_SYMLINK_NOFOLLOW) == 0;
}

static bool is_type(int dirfd, const char *path, mode_t type)
{
        struct stat st;

        return fstatat(dirfd, path, &st, AT_SYMLINK_NOFOLLOW) == 0 && (st.st_mode & S_IFMT) == type;
}

/* The content of a regular file (not through a final symlink), or NULL. */
static char *content(int dirfd, const char *path)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_close_ int fd = openat(dirfd, path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        char *data = NULL;
        size_t len;

        if (fd < 0 || kiln_read_fd_all(fd, 1 << 20, &data, &len, &err) < 0)
                return NULL;
        return data;
}

static bool has_content(int dirfd, const char *path, const char *want)
{
        _cleanup_free_ char *got = content(dirfd, path);

        return got && strcmp(got, want) == 0;
}

/* An xattr of a path (not following a final symlink), or NULL. */
static char *xattr(int dirfd, const char *path, const char *name)
{
        _cleanup_free_ char *proc = xasprintf("/proc/self/fd/%d/%s", dirfd, path);
        char value[256];
        ssize_t n = lgetxattr(proc, name, value, sizeof(value) - 1);

        if (n < 0)
                return NULL;
        value[n] = '\0';
        return xstrdup(value);
}

static void skip_point(const char *why, const char *what)
{
        tap_ok(true, "%s # SKIP %s", what, why);
}

/* ------------------------------------------------------------------------------------ */
/* What lies outside the root                                                             */
/* ------------------------------------------------------------------------------------ */

static void describe_stat(struct kiln_buf *b, const char *label, const char *path)
{
        struct stat st;

        if (lstat(path, &st) < 0) {
                kiln_buf_addf(b, NULL, "%s: absent\n", label);
                return;
        }
        kiln_buf_addf(b, NULL,
                      "%s: mode %o ino %lu nlink %lu size %lld mtime %lld.%09ld ctime %lld.%09ld\n",
                      label, (unsigned) st.st_mode, (unsigned long) st.st_ino,
                      (unsigned long) st.st_nlink, (long long) st.st_size,
                      (long long) st.st_mtim.tv_sec, st.st_mtim.tv_nsec,
                      (long long) st.st_ctim.tv_sec, st.st_ctim.tv_nsec);
}

static void describe_dir(struct kiln_buf *b, const char *path)
{
        struct dirent **names;
        int n = scandir(path, &names, NULL, alphasort), i;

        kiln_buf_addf(b, NULL, "%s:", path);
        for (i = 0; i < n; i++) {
                kiln_buf_addf(b, NULL, " %s", names[i]->d_name);
                free(names[i]);
        }
        if (n >= 0)
                free(names);
        kiln_buf_addc(b, '\n', NULL);
}

/* Everything an escape could change: the sentinel, the base's listing, names the hostile layers
 * use, probed where a climb out of the root would put them. */
static char *outside_state(void)
{
        struct kiln_buf b = KILN_BUF_INIT;
        _cleanup_free_ char *copy = xstrdup(base);
        const char *up = dirname(copy);
        static const char *const names[] = { "kiln-escape", "kiln-x", "x", "escape", "file" };
        size_t i;

        describe_stat(&b, "sentinel", sentinel);
        describe_dir(&b, sentinel);
        {
                _cleanup_free_ char *f = xasprintf("%s/file", sentinel);
                _cleanup_free_ char *c = NULL;

                describe_stat(&b, "sentinel/file", f);
                c = content(AT_FDCWD, f);
                kiln_buf_addf(&b, NULL, "content: %s\n", c ? c : "(none)");
        }
        describe_dir(&b, base);
        for (i = 0; i < ELEMENTSOF(names); i++) {
                _cleanup_free_ char *a = xasprintf("%s/%s", base, names[i]);
                _cleanup_free_ char *c = xasprintf("%s/%s", up, names[i]);
                _cleanup_free_ char *d = xasprintf("/%s", names[i]);

                describe_stat(&b, a, a);
                describe_stat(&b, c, c);
                describe_stat(&b, d, d);
        }
        describe_stat(&b, "/etc/kiln-x", "/etc/kiln-x");
        describe_stat(&b, "/tmp/kiln-x", "/tmp/kiln-x");
        return kiln_buf_detach(&b, NULL);
}

/* ------------------------------------------------------------------------------------ */
/* (a) Every entry kind                                                                   */
/* ------------------------------------------------------------------------------------ */

static void test_kinds(void)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_close_ int root = fresh_root();
        struct layer_extract_stats st = { 0 };
        unsigned uid = is_root ? 1234 : own_uid, gid = is_root ? 5678 : own_gid;
        struct stat s, s2;
        char target[64];
        ssize_t n;
        unsigned warnings = n_warnings;
        int fd, r;

        fd = LAYER(GZIP, { .path = "bin", .type = AE_IFDIR },
                   { .path = "bin/tool",
                     .content = "hello\n",
                     .mode = 04755,
                     .ids = true,
                     .uid = uid,
                     .gid = gid,
                     .mtime = 1000000000,
                     .nsec = 500000000,
                     .xattr = "user.test",
                     .xattr_value = "1" },
                   HARDLINK_("bin/tool2", "bin/tool"),
                   { .path = "etc", .type = AE_IFDIR, .mode = 0750, .mtime = 1234567890 },
                   FILE_("etc/conf", "x"),
                   { .path = "lnk",
                     .type = AE_IFLNK,
                     .link = "bin/tool",
                     .ids = true,
                     .uid = uid,
                     .gid = gid,
                     .mtime = 1111111111 },
                   { .path = "run/fifo", .type = AE_IFIFO, .mode = 0640 },
                   { .path = "dev/null", .type = AE_IFCHR, .mode = 0666, .major = 1, .minor = 3 },
                   { .path = "deep/a/b/file", .content = "" },
                   { .path = "trusted",
                     .content = "t",
                     .xattr = "trusted.overlay.opaque",
                     .xattr_value = "y" });
        r = extract(root, fd, "kinds", NULL, &st, &err);
        if (!tap_ok(r == 0, "every kind: extracted"))
                tap_diag("%s", err ? err->msg : "?");

        tap_ok(fstatat(root, "bin/tool", &s, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(s.st_mode),
               "file: a regular file");
        tap_eq_int(s.st_mode & 07777, 04755, "file: mode 04755 (setuid kept after chown)");
        tap_eq_int(s.st_uid, uid, "file: uid");
        tap_eq_int(s.st_gid, gid, "file: gid");
        tap_eq_int(s.st_size, 6, "file: size");
        tap_ok(has_content(root, "bin/tool", "hello\n"), "file: content");
        tap_eq_int(s.st_mtim.tv_sec, 1000000000, "file: mtime seconds");
        tap_eq_int(s.st_mtim.tv_nsec, 500000000, "file: mtime nanoseconds");
        if (has_user_xattr) {
                _cleanup_free_ char *v = xattr(root, "bin/tool", "user.test");
                tap_eq_str(v, "1", "file: xattr user.test");
        } else {
                skip_point("no user xattrs on this filesystem", "file: xattr user.test");
        }
        tap_ok(fstatat(root, "bin/tool2", &s2, AT_SYMLINK_NOFOLLOW) == 0 && s2.st_ino == s.st_ino &&
                       s2.st_nlink == 2,
               "hardlink: the same inode, two links");

        tap_ok(fstatat(root, "lnk", &s, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(s.st_mode),
               "symlink: a symlink");
        n = readlinkat(root, "lnk", target, sizeof(target) - 1);
        target[n < 0 ? 0 : n] = '\0';
        tap_eq_str(target, "bin/tool", "symlink: target verbatim");
        tap_eq_int(s.st_uid, uid, "symlink: uid (not the target's)");
        tap_eq_int(s.st_mtim.tv_sec, 1111111111, "symlink: its own mtime");

        tap_ok(fstatat(root, "etc", &s, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(s.st_mode),
               "dir: a directory");
        tap_eq_int(s.st_mode & 07777, 0750, "dir: mode");
        tap_eq_int(s.st_mtim.tv_sec, 1234567890, "dir: mtime set after its children");

        tap_ok(fstatat(root, "run/fifo", &s, AT_SYMLINK_NOFOLLOW) == 0 && S_ISFIFO(s.st_mode),
               "fifo: a fifo");
        tap_eq_int(s.st_mode & 07777, 0640, "fifo: mode");
        tap_ok(fstatat(root, "run", &s, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(s.st_mode) &&
                       (s.st_mode & 07777) == 0755,
               "implicit parent: a 0755 directory");
        tap_ok(is_type(root, "deep/a/b", S_IFDIR) && is_type(root, "deep/a/b/file", S_IFREG),
               "implicit parents: made one component at a time");

        if (can_mknod) {
                tap_ok(fstatat(root, "dev/null", &s, AT_SYMLINK_NOFOLLOW) == 0 &&
                               S_ISCHR(s.st_mode) && s.st_rdev == makedev(1, 3),
                       "char device: 1,3");
                tap_eq_int(s.st_mode & 07777, 0666, "char device: mode");
                tap_eq_int(st.skipped, 0, "stats: nothing skipped");
        } else {
                skip_point("mknod is not permitted", "char device: 1,3");
                tap_ok(!exists(root, "dev/null") && st.skipped == 1 && n_warnings > warnings,
                       "char device: skipped with a warning and counted");
        }
        tap_ok(is_type(root, "trusted", S_IFREG) &&
                       !xattr(root, "trusted", "trusted.overlay.opaque"),
               "trusted.overlay.* xattrs are ignored");
        tap_eq_int(st.entries, 10, "stats: entries");
        tap_eq_int(st.bytes, 8, "stats: content bytes");
        tap_eq_int(st.whiteouts, 0, "stats: whiteouts");
}

static void test_compressions(void)
{
        static const enum compression cs[] = { PLAIN, GZIP, ZSTD };
        static const char *const names[] = { "plain", "gzip", "zstd" };
        size_t i;

        for (i = 0; i < ELEMENTSOF(cs); i++) {
                _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
                _cleanup_close_ int root = fresh_root();
                int fd = LAYER(cs[i], FILE_("a/b", "content"));
                int r = extract(root, fd, names[i], NULL, NULL, &err);

                tap_ok(r == 0 && has_content(root, "a/b", "content"), "%s layer detected",
                       names[i]);
        }
        {
                _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
                _cleanup_close_ int root = fresh_root();
                struct layer_extract_stats st = { .entries = 9 };
                int fd = memfd_create("empty", MFD_CLOEXEC);
                char zeros[1024] = { 0 };

                kiln_write_all(fd, zeros, sizeof(zeros), NULL);
                lseek(fd, 0, SEEK_SET);
                tap_ok(extract(root, fd, "empty", NULL, &st, &err) == 0 && st.entries == 0,
                       "an empty tar is an empty layer");
        }
        {
                _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
                _cleanup_close_ int root = fresh_root();
                int fd = memfd_create("garbage", MFD_CLOEXEC);
                char junk[2048];

                memset(junk, 'j', sizeof(junk));
                kiln_write_all(fd, junk, sizeof(junk), NULL);
                lseek(fd, 0, SEEK_SET);
                tap_ok(extract(root, fd, "junk", NULL, NULL, &err) < 0 && err &&
                               err->kind == KILN_ERR_PARSE,
                       "garbage is a PARSE error");
                if (err)
                        tap_diag("%s", err->msg);
        }
        {
                _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
                _cleanup_close_ int root = fresh_root();
                int fd = LAYER(PLAIN, FILE_("file", "x"), FILE_("file/x", "y"));

                tap_ok(extract(root, fd, "msgs", NULL, NULL, &err) < 0 && err &&
                               err->kind == KILN_ERR_IO && err->errnum == ENOTDIR,
                       "a file used as a directory is an IO error");
                tap_eq_str(err ? err->msg : NULL, "layer 'msgs': open 'file'",
                           "the error names the layer and the path");
        }
}

/* ------------------------------------------------------------------------------------ */
/* (b) Stacking                                                                           */
/* ------------------------------------------------------------------------------------ */

static void test_stacking(void)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_close_ int root = fresh_root();
        struct layer_extract_stats st = { 0 };
        int fd, r;

        fd = LAYER(GZIP, FILE_("gone-file", "g"), DIR_("gone-dir"), DIR_("gone-dir/inner"),
                   FILE_("gone-dir/inner/y", "y"), DIR_("opq"), FILE_("opq/old1", "1"),
                   DIR_("opq/olddir"), FILE_("opq/olddir/z", "z"), DIR_("opq/oldempty"),
                   FILE_("f2d", "file"), DIR_("d2f"), FILE_("d2f/child", "c"),
                   SYMLINK_("s2f", "stay"), FILE_("stay", "stay"), DIR_("pre"),
                   FILE_("pre/a", "a"));
        r = extract(root, fd, "lower", NULL, NULL, &err);
        tap_ok(r == 0, "stacking: lower layer");

        fd = LAYER(PLAIN, WHITEOUT_(".wh.gone-file"), WHITEOUT_(".wh.gone-dir"), DIR_("opq"),
                   FILE_("opq/early", "e"), DIR_("opq/olddir"), FILE_("opq/olddir/mine", "m"),
                   WHITEOUT_("opq/.wh..wh..opq"), FILE_("opq/late", "l"), DIR_("f2d"),
                   FILE_("f2d/child", "c"), FILE_("d2f", "now a file"),
                   FILE_("s2f", "was a symlink"), FILE_("pre/a2", "a2"), WHITEOUT_("pre/.wh.a2"));
        r = extract(root, fd, "upper", NULL, &st, &err);
        if (!tap_ok(r == 0, "stacking: upper layer"))
                tap_diag("%s", err ? err->msg : "?");

        tap_ok(!exists(root, "gone-file"), "whiteout removes a file");
        tap_ok(!exists(root, "gone-dir"), "whiteout removes a directory and its contents");
        tap_ok(!exists(root, "opq/old1") && !exists(root, "opq/olddir/z") &&
                       !exists(root, "opq/oldempty"),
               "opaque: the lower layer's contents are gone");
        tap_ok(has_content(root, "opq/early", "e") && has_content(root, "opq/late", "l"),
               "opaque: this layer's entries before and after the marker stay");
        tap_ok(has_content(root, "opq/olddir/mine", "m") && is_type(root, "opq/olddir", S_IFDIR),
               "opaque: a relisted lower directory keeps only this layer's entries");
        tap_ok(is_type(root, "f2d", S_IFDIR) && has_content(root, "f2d/child", "c"),
               "a file replaced by a directory");
        tap_ok(is_type(root, "d2f", S_IFREG) && has_content(root, "d2f", "now a file"),
               "a directory replaced by a file");
        tap_ok(is_type(root, "s2f", S_IFREG) && has_content(root, "s2f", "was a symlink") &&
                       has_content(root, "stay", "stay"),
               "a symlink replaced by a file, its target untouched");
        tap_ok(has_content(root, "pre/a", "a") && has_content(root, "pre/a2", "a2"),
               "a whiteout hides lower layers only, not the same layer's entry");
        tap_eq_int(st.whiteouts, 4, "stats: whiteouts");
}

/* A whiteout and an opaque marker over a tree far deeper than the fds the process may open. */
static void test_deep_removal(void)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_close_ int root = fresh_root();
        struct kiln_buf p = KILN_BUF_INIT, q = KILN_BUF_INIT;
        struct rlimit saved, low;
        int fd, r, i;

        for (i = 0; i < 300; i++)
                kiln_buf_adds(&p, i ? "/d" : "deep/d", NULL);
        kiln_buf_addf(&q, NULL, "opq/%s", p.buf + strlen("deep/"));
        {
                struct spec specs[] = { FILE_(p.buf, "x"), FILE_(q.buf, "y"), FILE_("opq/k", "") };
                fd = make_layer(PLAIN, specs, ELEMENTSOF(specs));
        }
        r = extract(root, fd, "deep", NULL, NULL, &err);
        tap_ok(r == 0 && exists(root, p.buf) && exists(root, q.buf), "a 300-deep tree");

        getrlimit(RLIMIT_NOFILE, &saved);
        low = saved;
        low.rlim_cur = 64;
        setrlimit(RLIMIT_NOFILE, &low);
        fd = LAYER(PLAIN, WHITEOUT_(".wh.deep"), DIR_("opq"), FILE_("opq/new", "n"),
                   WHITEOUT_("opq/.wh..wh..opq"));
        r = extract(root, fd, "deep", NULL, NULL, &err);
        setrlimit(RLIMIT_NOFILE, &saved);
        if (!tap_ok(r == 0 && !exists(root, "deep"), "whiteout of a 300-deep tree with 64 fds"))
                tap_diag("%s", err ? err->msg : "?");
        tap_ok(!exists(root, "opq/d") && !exists(root, "opq/k") && exists(root, "opq/new"),
               "opaque directory over a 300-deep tree with 64 fds");
        kiln_buf_release(&p);
        kiln_buf_release(&q);
}

/* The layer's "./" entry sets the root's metadata; ownership needs root. */
static void test_root_and_owner(void)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_close_ int root = fresh_root();
        struct stat s;
        int fd, r;

        fd = LAYER(PLAIN, { .path = "./", .type = AE_IFDIR, .mode = 0711, .mtime = 1500000000 },
                   FILE_("./x", "x"));
        r = extract(root, fd, "dot", NULL, NULL, &err);
        tap_ok(r == 0 && fstat(root, &s) == 0 && (s.st_mode & 07777) == 0711 &&
                       s.st_mtim.tv_sec == 1500000000,
               "'./' sets the root's mode and mtime");
        fchmod(root, 0755);

        fd = LAYER(PLAIN,
                   { .path = "other", .content = "o", .ids = true, .uid = 4321, .gid = 8765 });
        r = extract(root, fd, "chown", NULL, NULL, &err);
        if (is_root) {
                tap_ok(r == 0 && fstatat(root, "other", &s, AT_SYMLINK_NOFOLLOW) == 0 &&
                               s.st_uid == 4321 && s.st_gid == 8765,
                       "chown to other ids");
        } else {
                skip_point("not root", "chown to other ids");
                tap_ok(r < 0 && err && err->kind == KILN_ERR_IO && err->errnum == EPERM,
                       "chown to other ids without record_owner is an IO error");
        }
}

/* ------------------------------------------------------------------------------------ */
/* (c) Hostile layers                                                                     */
/* ------------------------------------------------------------------------------------ */

struct hostile {
        const char *name;
        bool (*run)(int root);
};

static struct kiln_error *herr; /* the last hostile case's error */

static int hostile_extract(int root, int fd, const struct layer_extract_opts *o)
{
        herr = kiln_error_free(herr);
        return extract(root, fd, "hostile", o, NULL, &herr);
}

static bool failed_with(enum kiln_errkind kind)
{
        if (herr)
                tap_diag("error: %s", herr->msg);
        return herr && herr->kind == kind;
}

static bool h_absolute(int root)
{
        _cleanup_free_ char *abs = xasprintf("%s/kiln-x", sentinel);
        _cleanup_free_ char *inside = xasprintf("%s/kiln-x", sentinel + 1);
        struct spec specs[] = { FILE_("/etc/kiln-x", "a"), FILE_(abs, "b") };

        return hostile_extract(root, make_layer(PLAIN, specs, 2), NULL) == 0 &&
               has_content(root, "etc/kiln-x", "a") && has_content(root, inside, "b");
}

static bool h_dotdot(int root)
{
        return hostile_extract(root, LAYER(PLAIN, FILE_("../kiln-escape", "e")), NULL) == 0 &&
               has_content(root, "kiln-escape", "e");
}

static bool h_dotdot_inner(int root)
{
        return hostile_extract(root, LAYER(PLAIN, FILE_("a/../../kiln-escape", "e")), NULL) == 0 &&
               has_content(root, "kiln-escape", "e") && !exists(root, "a");
}

static bool h_symlink_abs(int root)
{
        _cleanup_free_ char *inside = xasprintf("%s/kiln-x", sentinel + 1);
        struct spec specs[] = { SYMLINK_("evil", sentinel), FILE_("evil/kiln-x", "x") };
        int r = hostile_extract(root, make_layer(PLAIN, specs, 2), NULL);

        return (r < 0 && failed_with(KILN_ERR_INVALID)) || has_content(root, inside, "x");
}

static bool h_symlink_tmp(int root)
{
        int r = hostile_extract(
                root, LAYER(GZIP, SYMLINK_("evil", "/tmp"), FILE_("evil/kiln-x", "x")), NULL);

        return (r < 0 && failed_with(KILN_ERR_INVALID)) || has_content(root, "tmp/kiln-x", "x");
}

static bool h_symlink_climb(int root)
{
        int r = hostile_extract(
                root, LAYER(PLAIN, SYMLINK_("evil", "../../.."), FILE_("evil/kiln-x", "x")), NULL);

        return r == 0 && has_content(root, "kiln-x", "x") && is_type(root, "evil", S_IFLNK);
}

static bool h_lower_symlink(int root)
{
        struct spec lower[] = { SYMLINK_("lnk", sentinel), SYMLINK_("up", "..") };
        bool through_abs, through_up;

        if (hostile_extract(root, make_layer(PLAIN, lower, 2), NULL) < 0)
                return false;
        through_abs = hostile_extract(root, LAYER(PLAIN, FILE_("lnk/file", "pwned")), NULL) < 0 &&
                      failed_with(KILN_ERR_INVALID);
        /* "up" resolves to the root itself: "sentinel" is made there. */
        through_up = hostile_extract(root, LAYER(PLAIN, FILE_("up/sentinel/file", "pwned")),
                                     NULL) == 0 &&
                     has_content(root, "sentinel/file", "pwned");
        return through_abs && through_up;
}

static bool h_hardlink_abs(int root)
{
        _cleanup_free_ char *target = xasprintf("%s/file", sentinel);
        struct spec specs[] = { HARDLINK_("h", target) };

        return hostile_extract(root, make_layer(PLAIN, specs, 1), NULL) < 0 &&
               failed_with(KILN_ERR_NOTFOUND) && !exists(root, "h");
}

static bool h_hardlink_climb(int root)
{
        _cleanup_free_ char *copy = xstrdup(base);
        _cleanup_free_ char *deep = xasprintf("../../%s/sentinel/file", basename(copy));
        struct spec specs[] = { HARDLINK_("h2", deep) };
        bool ok;

        ok = hostile_extract(root, LAYER(PLAIN, HARDLINK_("h", "../sentinel/file")), NULL) < 0 &&
             failed_with(KILN_ERR_NOTFOUND);
        return ok && hostile_extract(root, make_layer(PLAIN, specs, 1), NULL) < 0 &&
               failed_with(KILN_ERR_NOTFOUND) && !exists(root, "h") && !exists(root, "h2");
}

static bool h_hardlink_via_symlink(int root)
{
        struct spec specs[] = { SYMLINK_("l", sentinel), HARDLINK_("h", "l/file") };

        return hostile_extract(root, make_layer(PLAIN, specs, 2), NULL) < 0 &&
               failed_with(KILN_ERR_NOTFOUND) && !exists(root, "h");
}

static bool h_whiteout_symlinked_parent(int root)
{
        struct spec specs[] = {
                SYMLINK_("link", sentinel),
                WHITEOUT_("link/.wh.file"),
                SYMLINK_("up", ".."),
                WHITEOUT_("up/sentinel/.wh.file"),
        };
        unsigned before = n_warnings;

        return hostile_extract(root, make_layer(PLAIN, specs, 4), NULL) == 0 &&
               n_warnings == before + 2 && is_type(root, "link", S_IFLNK);
}

static bool h_whiteout_dotdot(int root)
{
        bool a = hostile_extract(root, LAYER(PLAIN, WHITEOUT_("sub/.wh...")), NULL) < 0 &&
                 failed_with(KILN_ERR_PARSE);
        bool b = hostile_extract(root, LAYER(PLAIN, WHITEOUT_(".wh..")), NULL) < 0 &&
                 failed_with(KILN_ERR_PARSE);

        return a && b && !exists(root, "sub");
}

static bool h_whiteout_dir_name(int root)
{
        bool a = hostile_extract(root, LAYER(PLAIN, FILE_(".wh.../kiln-x", "x")), NULL) < 0 &&
                 failed_with(KILN_ERR_PARSE);
        bool b = hostile_extract(root, LAYER(PLAIN, WHITEOUT_(".wh..wh..opq/.wh.x")), NULL) < 0 &&
                 failed_with(KILN_ERR_PARSE);

        return a && b && !exists(root, ".wh..") && !exists(root, "kiln-x");
}

static bool h_opaque_symlinked(int root)
{
        struct spec specs[] = {
                SYMLINK_("link", sentinel), WHITEOUT_("link/.wh..wh..opq"),
                SYMLINK_("self", "."),      WHITEOUT_("self/.wh..wh..opq"),
                SYMLINK_("up", ".."),       WHITEOUT_("up/.wh..wh..opq"),
        };

        if (hostile_extract(root, LAYER(PLAIN, FILE_("keep", "k"), DIR_("d"), FILE_("d/k", "k")),
                            NULL) < 0)
                return false;
        return hostile_extract(root, make_layer(PLAIN, specs, ELEMENTSOF(specs)), NULL) == 0 &&
               has_content(root, "keep", "k") && has_content(root, "d/k", "k");
}

static bool h_gzip_bomb(int root)
{
        struct layer_extract_opts o = { .max_bytes = 10 << 20 };
        int fd = LAYER(GZIP, { .path = "zeros", .zeros = UINT64_C(200) << 20 });
        off_t size = lseek(fd, 0, SEEK_END), consumed;
        struct stat st;
        int r;

        lseek(fd, 0, SEEK_SET);
        herr = kiln_error_free(herr);
        o.warn = count_warning;
        r = layer_extract(root, fd, "bomb", &o, NULL, &herr);
        consumed = lseek(fd, 0, SEEK_CUR);
        close(fd);
        tap_diag("bomb: %lld compressed bytes, %lld read", (long long) size, (long long) consumed);
        return r < 0 && failed_with(KILN_ERR_LIMIT) && consumed < size / 2 &&
               fstatat(root, "zeros", &st, AT_SYMLINK_NOFOLLOW) == 0 && st.st_size <= (10 << 20) &&
               strstr(herr->msg, "layer 'bomb': more than");
}

static bool h_truncated(int root)
{
        int fd = LAYER(GZIP, { .path = "big", .zeros = 1 << 20 }, FILE_("after", "a"));
        off_t size = lseek(fd, 0, SEEK_END);

        if (ftruncate(fd, size / 2) < 0)
                return false;
        lseek(fd, 0, SEEK_SET);
        return hostile_extract(root, fd, NULL) < 0 && failed_with(KILN_ERR_PARSE) &&
               !exists(root, "after");
}

static bool h_long_path(int root)
{
        struct kiln_buf p = KILN_BUF_INIT;
        int i, r;
        bool ok;

        for (i = 0; i < 2100; i++)
                kiln_buf_adds(&p, "a/", NULL);
        kiln_buf_adds(&p, "f", NULL);
        {
                struct spec specs[] = { FILE_(p.buf, "x") };
                r = hostile_extract(root, make_layer(PLAIN, specs, 1), NULL);
        }
        ok = r < 0 && failed_with(KILN_ERR_LIMIT) &&
             strcmp(herr->msg, "layer 'hostile': more than 4096 bytes in a path") == 0 &&
             !exists(root, "a");
        kiln_buf_release(&p);
        return ok;
}

static bool h_many_entries(int root)
{
        struct layer_extract_opts o = { .max_entries = 5 };
        int r = hostile_extract(root,
                                LAYER(PLAIN, FILE_("1", ""), FILE_("2", ""), FILE_("3", ""),
                                      FILE_("4", ""), FILE_("5", ""), FILE_("6", ""),
                                      FILE_("7", "")),
                                &o);

        return r < 0 && failed_with(KILN_ERR_LIMIT) &&
               strcmp(herr->msg, "layer 'hostile': more than 5 entries") == 0 &&
               exists(root, "5") && !exists(root, "6");
}

static bool h_final_symlink(int root)
{
        _cleanup_free_ char *target = xasprintf("%s/file", sentinel);
        struct spec specs[] = { SYMLINK_("f", target), FILE_("f", "new") };

        return hostile_extract(root, make_layer(PLAIN, specs, 2), NULL) == 0 &&
               is_type(root, "f", S_IFREG) && has_content(root, "f", "new");
}

static bool h_final_symlink_dir(int root)
{
        struct spec specs[] = { SYMLINK_("d", sentinel), DIR_("d"), FILE_("d/kiln-x", "x") };

        return hostile_extract(root, make_layer(PLAIN, specs, 3), NULL) == 0 &&
               is_type(root, "d", S_IFDIR) && has_content(root, "d/kiln-x", "x");
}

static bool h_symlink_loop(int root)
{
        int r = hostile_extract(root,
                                LAYER(PLAIN, SYMLINK_("a", "a"), SYMLINK_("b", "c"),
                                      SYMLINK_("c", "b"), FILE_("a/kiln-x", "x")),
                                NULL);

        return r < 0 && failed_with(KILN_ERR_IO) && herr->errnum == ELOOP &&
               is_type(root, "a", S_IFLNK);
}

static bool h_final_hardlink(int root)
{
        /* Writing over a hardlink replaces the name; the other link keeps its content. */
        int r = hostile_extract(
                root,
                LAYER(PLAIN, FILE_("t", "original"), HARDLINK_("h", "t"), FILE_("h", "replaced")),
                NULL);

        return r == 0 && has_content(root, "t", "original") && has_content(root, "h", "replaced");
}

static const struct hostile hostiles[] = {
        { "absolute paths are confined", h_absolute },
        { "'../kiln-escape' is confined", h_dotdot },
        { "'a/../../kiln-escape' is confined", h_dotdot_inner },
        { "symlink to the sentinel, then a write through it", h_symlink_abs },
        { "symlink 'evil -> /tmp', then 'evil/kiln-x'", h_symlink_tmp },
        { "symlink 'evil -> ../../..', then a write through it", h_symlink_climb },
        { "a lower layer's symlink, then a write through it", h_lower_symlink },
        { "hardlink to the sentinel's absolute path", h_hardlink_abs },
        { "hardlink to '../sentinel/file' and '../../<base>/sentinel/file'", h_hardlink_climb },
        { "hardlink through a symlinked parent", h_hardlink_via_symlink },
        { "whiteout through a symlinked parent", h_whiteout_symlinked_parent },
        { "whiteouts of '..' and '.'", h_whiteout_dotdot },
        { "whiteout names used as directories", h_whiteout_dir_name },
        { "opaque markers under symlinked directories", h_opaque_symlinked },
        { "gzip bomb stops at max_bytes", h_gzip_bomb },
        { "truncated gzip stream", h_truncated },
        { "path longer than max_path", h_long_path },
        { "more entries than max_entries", h_many_entries },
        { "symlink at the final component replaced by a file", h_final_symlink },
        { "symlink at the final component replaced by a directory", h_final_symlink_dir },
        { "symlink loops", h_symlink_loop },
        { "hardlink at the final component replaced by a file", h_final_hardlink },
};

static void test_hostile(void)
{
        unsigned confined = 0;
        size_t i;

        for (i = 0; i < ELEMENTSOF(hostiles); i++) {
                _cleanup_close_ int root = fresh_root();
                _cleanup_free_ char *before = outside_state(), *after = NULL;
                bool ok = tap_ok(hostiles[i].run(root), "hostile: %s", hostiles[i].name);

                after = outside_state();
                if (!tap_eq_str(after, before, "hostile: %s: nothing changed outside the root",
                                hostiles[i].name))
                        ok = false;
                if (ok)
                        confined++;
        }
        herr = kiln_error_free(herr);
        tap_diag("hostile: %u/%zu confined", confined, ELEMENTSOF(hostiles));
}

/* ------------------------------------------------------------------------------------ */
/* (d) Recorded ownership                                                                 */
/* ------------------------------------------------------------------------------------ */

static void test_record_owner(void)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_close_ int root = fresh_root();
        struct layer_extract_opts o = { .record_owner = true };
        struct stat s;
        int fd, r;

        if (!has_user_xattr) {
                skip_point("no user xattrs on this filesystem", "record_owner");
                return;
        }
        fd = LAYER(PLAIN,
                   { .path = "owned", .type = AE_IFDIR, .ids = true, .uid = 1234, .gid = 5678 },
                   { .path = "owned/f",
                     .content = "f",
                     .ids = true,
                     .uid = 1234,
                     .gid = 5678,
                     .mode = 04755 },
                   { .path = "mine", .content = "m" },
                   { .path = "sym",
                     .type = AE_IFLNK,
                     .link = "mine",
                     .ids = true,
                     .uid = 1234,
                     .gid = 5678 },
                   { .path = "implicit/f", .content = "i", .ids = true, .uid = 1, .gid = 2 },
                   { .path = "spoof",
                     .content = "s",
                     .xattr = LAYER_OWNER_XATTR,
                     .xattr_value = "0:0" });
        r = extract(root, fd, "owner", &o, NULL, &err);
        if (!tap_ok(r == 0, "record_owner: extracted"))
                tap_diag("%s", err ? err->msg : "?");
        {
                _cleanup_free_ char *d = xattr(root, "owned", LAYER_OWNER_XATTR);
                _cleanup_free_ char *f = xattr(root, "owned/f", LAYER_OWNER_XATTR);
                _cleanup_free_ char *i = xattr(root, "implicit/f", LAYER_OWNER_XATTR);
                _cleanup_free_ char *m = xattr(root, "mine", LAYER_OWNER_XATTR);
                _cleanup_free_ char *p = xattr(root, "spoof", LAYER_OWNER_XATTR);
                _cleanup_free_ char *imp = xattr(root, "implicit", LAYER_OWNER_XATTR);

                tap_eq_str(d, "1234:5678", "record_owner: directory");
                tap_eq_str(f, "1234:5678", "record_owner: file");
                tap_eq_str(i, "1:2", "record_owner: file in an implicit directory");
                tap_ok(!m, "record_owner: nothing recorded for the caller's own ids");
                tap_ok(!p, "record_owner: a layer's own user.kiln.owner is ignored");
                if (own_uid == 0 && own_gid == 0)
                        tap_ok(!imp, "record_owner: implicit directory is the caller's (root)");
                else
                        tap_eq_str(imp, "0:0", "record_owner: implicit directory is root's");
        }
        tap_ok(fstatat(root, "owned/f", &s, AT_SYMLINK_NOFOLLOW) == 0 && s.st_uid == own_uid &&
                       s.st_gid == own_gid,
               "record_owner: no chown");
        tap_eq_int(s.st_mode & 07777, 04755, "record_owner: mode still applied");
        tap_ok(fstatat(root, "sym", &s, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(s.st_mode) &&
                       s.st_uid == own_uid,
               "record_owner: symlink made, not chowned, no xattr");

        fd = LAYER(PLAIN, DIR_("owned"));
        r = extract(root, fd, "owner2", &o, NULL, &err);
        {
                _cleanup_free_ char *d = xattr(root, "owned", LAYER_OWNER_XATTR);
                tap_ok(r == 0 && !d, "record_owner: a relisted directory drops a stale record");
        }
}

/* ------------------------------------------------------------------------------------ */

static int count_fds(void)
{
        DIR *d = opendir("/proc/self/fd");
        int n = 0;

        if (!d)
                return -1;
        while (readdir(d))
                n++;
        closedir(d);
        return n;
}

static void probe(void)
{
        char value[4];

        own_uid = geteuid();
        own_gid = getegid();
        is_root = own_uid == 0;
        can_mknod = mknodat(basefd, "probe-dev", S_IFCHR | 0600, makedev(1, 3)) == 0;
        unlinkat(basefd, "probe-dev", 0);
        if (mknodat(basefd, "probe-xattr", S_IFREG | 0600, 0) == 0) {
                _cleanup_free_ char *p = xasprintf("%s/probe-xattr", base);
                has_user_xattr = setxattr(p, "user.probe", "1", 1, 0) == 0 &&
                                 getxattr(p, "user.probe", value, sizeof(value)) == 1;
                unlinkat(basefd, "probe-xattr", 0);
        }
        tap_diag("uid %u, mknod %s, user xattrs %s", (unsigned) own_uid, can_mknod ? "yes" : "no",
                 has_user_xattr ? "yes" : "no");
}

int main(void)
{
        const char *tmp = getenv("TMPDIR");
        _cleanup_free_ char *template =
                xasprintf("%s/kiln-extract-XXXXXX", tmp && *tmp ? tmp : "/tmp");
        _cleanup_free_ char *file = NULL;
        int fd, fds;

        base = mkdtemp(template);
        if (!base)
                tap_skip_all("cannot make a temporary directory");
        basefd = open(base, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        sentinel = xasprintf("%s/sentinel", base);
        if (basefd < 0 || mkdir(sentinel, 0755) < 0)
                tap_skip_all("cannot make the sentinel directory");
        file = xasprintf("%s/file", sentinel);
        fd = open(file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0 || kiln_write_all(fd, "keep", 4, NULL) < 0)
                tap_skip_all("cannot write the sentinel file");
        close(fd);
        probe();

        fds = count_fds();
        test_kinds();
        test_compressions();
        test_stacking();
        test_deep_removal();
        test_root_and_owner();
        test_hostile();
        test_record_owner();
        tap_eq_int(count_fds(), fds, "no file descriptor leaked");

        tap_rm_rf_at(AT_FDCWD, base);
        close(basefd);
        free(sentinel);
        return tap_done();
}
