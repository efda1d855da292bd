/*
 * cp_copy(): COPY and ADD between two directory trees, compared as whole-tree listings (type,
 * mode, owner, content, link target). The hostile cases put symlinks pointing out of both roots
 * and a sentinel directory beside them, which must stay untouched.
 *
 * As an unprivileged user the test enters a user namespace that maps the caller to 0, so that
 * the copies can own their files as 0:0; only the points that set other ids need real root.
 */
#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "builder/builder-internal.h"
#include "builder/common/fd-util.h"
#include "builder/common/strbuf.h"
#include "builder/common/xalloc.h"
#include "parser/parser.h"
#include "tests/unit/tap.h"

#define MTIME 1500000000

static char *base; /* the test's temporary directory */
static int basefd = -1;
static char *sentinel;                   /* base/sentinel, beside both roots, holding "file" */
static bool is_root;                     /* real root: ids other than our own can be set */
static int src_dir = -1, dst_dir = -1;   /* base/src and base/dst, for the test's own use */
static int src_path = -1, dst_path = -1; /* the same as O_PATH fds, for cp_copy */

/* ------------------------------------------------------------------------------------ */
/* Trees                                                                                  */
/* ------------------------------------------------------------------------------------ */

static int open_dir(const char *name, int flags)
{
        int fd = openat(basefd, name, flags | O_DIRECTORY | O_CLOEXEC);

        if (fd < 0)
                abort();
        return fd;
}

/* Fresh, empty base/src and base/dst. */
static void fresh(void)
{
        int *fds[] = { &src_dir, &dst_dir, &src_path, &dst_path };
        size_t i;

        for (i = 0; i < ELEMENTSOF(fds); i++)
                closep(fds[i]);
        tap_rm_rf_at(basefd, "src");
        tap_rm_rf_at(basefd, "dst");
        if (mkdirat(basefd, "src", 0755) < 0 || mkdirat(basefd, "dst", 0755) < 0)
                abort();
        src_dir = open_dir("src", O_RDONLY);
        dst_dir = open_dir("dst", O_RDONLY);
        src_path = open_dir("src", O_PATH);
        dst_path = open_dir("dst", O_PATH);
}

static void set_mtime(int dirfd, const char *path, time_t t)
{
        struct timespec ts[2] = { { .tv_sec = t }, { .tv_sec = t } };

        utimensat(dirfd, path, ts, AT_SYMLINK_NOFOLLOW);
}

/* mkdir -p of `path`'s parents (0755). */
static void parents(int dirfd, const char *path)
{
        char *copy = xstrdup(path), *p;

        for (p = strchr(copy, '/'); p; p = strchr(p + 1, '/')) {
                *p = '\0';
                mkdirat(dirfd, copy, 0755);
                *p = '/';
        }
        free(copy);
}

static void mkdir_at(int dirfd, const char *path, mode_t mode)
{
        parents(dirfd, path);
        mkdirat(dirfd, path, mode);
        fchmodat(dirfd, path, mode, 0);
        set_mtime(dirfd, path, MTIME);
}

static void file_at(int dirfd, const char *path, const char *content, mode_t mode)
{
        int fd;

        parents(dirfd, path);
        unlinkat(dirfd, path, 0);
        fd = openat(dirfd, path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0 || kiln_write_all(fd, content, strlen(content), NULL) < 0)
                abort();
        fchmod(fd, mode);
        close(fd);
        set_mtime(dirfd, path, MTIME);
}

static void link_at(int dirfd, const char *path, const char *target)
{
        parents(dirfd, path);
        unlinkat(dirfd, path, 0);
        if (symlinkat(target, dirfd, path) < 0)
                abort();
}

static void dump_into(struct kiln_buf *b, int dirfd, const char *prefix)
{
        struct dirent **names;
        int n, i;
        int fd = openat(dirfd, prefix[0] ? prefix : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        _cleanup_free_ char *proc = xasprintf("/proc/self/fd/%d", fd);

        n = fd < 0 ? -1 : scandir(proc, &names, NULL, alphasort);
        for (i = 0; i < n; i++) {
                const char *name = names[i]->d_name;
                _cleanup_free_ char *path =
                        prefix[0] ? xasprintf("%s/%s", prefix, name) : xstrdup(name);
                struct stat st;
                char c;

                if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0 ||
                    fstatat(dirfd, path, &st, AT_SYMLINK_NOFOLLOW) < 0) {
                        free(names[i]);
                        continue;
                }
                c = S_ISDIR(st.st_mode)    ? 'd'
                    : S_ISREG(st.st_mode)  ? 'f'
                    : S_ISLNK(st.st_mode)  ? 'l'
                    : S_ISFIFO(st.st_mode) ? 'p'
                                           : '?';
                if (c == 'l') {
                        char target[256];
                        ssize_t len = readlinkat(dirfd, path, target, sizeof(target) - 1);
                        target[len < 0 ? 0 : len] = '\0';
                        kiln_buf_addf(b, NULL, "%s l %u:%u -> %s\n", path, (unsigned) st.st_uid,
                                      (unsigned) st.st_gid, target);
                } else {
                        kiln_buf_addf(b, NULL, "%s %c%04o %u:%u", path, c,
                                      (unsigned) (st.st_mode & 07777), (unsigned) st.st_uid,
                                      (unsigned) st.st_gid);
                        if (c == 'f') {
                                _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
                                _cleanup_free_ char *data = NULL;
                                size_t len = 0;
                                int ffd = openat(dirfd, path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
                                if (ffd >= 0 && kiln_read_fd_all(ffd, 4096, &data, &len, &e) == 0)
                                        kiln_buf_addf(b, NULL, " '%s'", data);
                                if (ffd >= 0)
                                        close(ffd);
                        }
                        kiln_buf_addc(b, '\n', NULL);
                }
                if (c == 'd')
                        dump_into(b, dirfd, path);
                free(names[i]);
        }
        if (n >= 0)
                free(names);
        if (fd >= 0)
                close(fd);
}

/* Every entry below `path` in `dirfd` ("" for all), one line each, sorted. */
static char *dump(int dirfd, const char *path)
{
        struct kiln_buf b = KILN_BUF_INIT;

        dump_into(&b, dirfd, path);
        return kiln_buf_detach(&b, NULL);
}

static bool tree_is(const char *path, const char *want, const char *what)
{
        _cleanup_free_ char *got = dump(dst_dir, path);

        return tap_eq_str(got, want, "%s", what);
}

static time_t mtime_of(int dirfd, const char *path)
{
        struct stat st;

        return fstatat(dirfd, path, &st, AT_SYMLINK_NOFOLLOW) < 0 ? -1 : st.st_mtim.tv_sec;
}

static bool exists(int dirfd, const char *path)
{
        struct stat st;

        return fstatat(dirfd, path, &st, AT_SYMLINK_NOFOLLOW) == 0;
}

/* ------------------------------------------------------------------------------------ */
/* Running a copy                                                                         */
/* ------------------------------------------------------------------------------------ */

static const struct df_ignore *ignore; /* the context's .dockerignore for run() */

static int run(struct cp_opts *o, struct kiln_error **err)
{
        struct cp_source src = { .rootfd = src_path, .ignore = ignore };

        if (!o->workdir)
                o->workdir = "/";
        return cp_copy(&src, dst_path, o, err);
}

#define SRCS(...)                                     \
        .srcs = (const char *const[]){ __VA_ARGS__ }, \
        .n_srcs = ELEMENTSOF(((const char *const[]){ __VA_ARGS__ }))

/* Runs a copy that must succeed. */
static bool copy_ok(struct cp_opts o, const char *what)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        int r = run(&o, &err);

        if (!tap_ok(r == 0, "%s: copied", what))
                tap_diag("error: %s", err ? err->msg : "(none)");
        return r == 0;
}

/* Runs a copy that must fail with `kind` and a message containing `msg`. */
static void copy_fails(struct cp_opts o, enum kiln_errkind kind, const char *msg, const char *what)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        int r = run(&o, &err);

        tap_ok(r < 0 && err, "%s: fails", what);
        if (r < 0 && err) {
                tap_eq_str(kiln_errkind_name(err->kind), kiln_errkind_name(kind), "%s: kind", what);
                if (!tap_ok(strstr(err->msg, msg) != NULL, "%s: message", what))
                        tap_diag("got '%s', want it to contain '%s'", err->msg, msg);
        }
}

/* ------------------------------------------------------------------------------------ */
/* What lies outside the roots                                                            */
/* ------------------------------------------------------------------------------------ */

static void describe(struct kiln_buf *b, const char *path, bool listing)
{
        struct dirent **names;
        struct stat st;
        int n, i;

        if (lstat(path, &st) < 0) {
                kiln_buf_addf(b, NULL, "%s: absent\n", path);
                return;
        }
        kiln_buf_addf(b, NULL, "%s: mode %o ino %lu size %lld mtime %lld.%09ld ctime %lld.%09ld\n",
                      path, (unsigned) st.st_mode, (unsigned long) st.st_ino,
                      (long long) st.st_size, (long long) st.st_mtim.tv_sec, st.st_mtim.tv_nsec,
                      (long long) st.st_ctim.tv_sec, st.st_ctim.tv_nsec);
        if (!listing || !S_ISDIR(st.st_mode))
                return;
        n = scandir(path, &names, NULL, alphasort);
        for (i = 0; i < n; i++) {
                kiln_buf_addf(b, NULL, " %s", names[i]->d_name);
                free(names[i]);
        }
        if (n >= 0)
                free(names);
        kiln_buf_addc(b, '\n', NULL);
}

static void presence(struct kiln_buf *b, const char *path)
{
        struct stat st;

        kiln_buf_addf(b, NULL, "%s: %s\n", path, lstat(path, &st) == 0 ? "present" : "absent");
}

/* The sentinel in full, the names beside the roots, and where an escape would write. */
static char *outside_state(void)
{
        struct kiln_buf b = KILN_BUF_INIT;
        _cleanup_free_ char *copy = xstrdup(base);
        _cleanup_free_ char *file = xasprintf("%s/file", sentinel);
        _cleanup_free_ char *content = NULL;
        static const char *const names[] = { "x", "x.txt", "a.txt", "escape", "kiln-x", "up.txt" };
        const char *up = dirname(copy);
        struct dirent **list;
        size_t i, len;
        int fd, n;

        describe(&b, sentinel, true);
        describe(&b, file, false);
        fd = open(file, O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
                _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
                kiln_read_fd_all(fd, 4096, &content, &len, &e);
                close(fd);
        }
        kiln_buf_addf(&b, NULL, "content: %s\nbase:", content ? content : "(none)");
        n = scandir(base, &list, NULL, alphasort);
        for (int k = 0; k < n; k++) {
                kiln_buf_addf(&b, NULL, " %s", list[k]->d_name);
                free(list[k]);
        }
        if (n >= 0)
                free(list);
        kiln_buf_addc(&b, '\n', NULL);
        for (i = 0; i < ELEMENTSOF(names); i++) {
                _cleanup_free_ char *a = xasprintf("%s/%s", base, names[i]);
                _cleanup_free_ char *c = xasprintf("%s/%s", up, names[i]);
                _cleanup_free_ char *d = xasprintf("/%s", names[i]);
                _cleanup_free_ char *e = xasprintf("%s/%s", sentinel, names[i]);
                presence(&b, a);
                presence(&b, c);
                presence(&b, d);
                presence(&b, e);
        }
        return kiln_buf_detach(&b, NULL);
}

/* ------------------------------------------------------------------------------------ */
/* Archives                                                                               */
/* ------------------------------------------------------------------------------------ */

struct aent {
        const char *path;
        mode_t type; /* AE_IF*; 0: a file */
        mode_t mode;
        const char *content;
        const char *link;
        const char *hardlink;
        unsigned uid, gid;
};

static void archive_add(struct archive *w, const struct aent *s)
{
        struct archive_entry *e = archive_entry_new();
        mode_t type = s->type ? s->type : AE_IFREG;
        size_t size = s->content && !s->hardlink ? strlen(s->content) : 0;

        archive_entry_set_pathname(e, s->path);
        archive_entry_set_filetype(e, type);
        archive_entry_set_perm(e, s->mode ? s->mode : type == AE_IFDIR ? 0755 : 0644);
        archive_entry_set_uid(e, s->uid);
        archive_entry_set_gid(e, s->gid);
        archive_entry_set_mtime(e, MTIME, 0);
        if (s->link)
                archive_entry_set_symlink(e, s->link);
        if (s->hardlink)
                archive_entry_set_hardlink(e, s->hardlink);
        archive_entry_set_size(e, (la_int64_t) size);
        archive_write_header(w, e);
        if (size)
                archive_write_data(w, s->content, size);
        archive_entry_free(e);
}

/* Writes src/<name>: a tar with `filter`, or with `raw` a single compressed file. False when
 * libarchive cannot write that filter here. */
static bool make_archive(const char *name, int filter, bool raw, const struct aent *ents, size_t n)
{
        struct archive *w = archive_write_new();
        int fd;
        size_t i;
        bool ok;

        if (!w)
                abort();
        if (raw)
                archive_write_set_format_raw(w);
        else
                archive_write_set_format_pax_restricted(w);
        ok = archive_write_add_filter(w, filter) == ARCHIVE_OK;
        fd = openat(src_dir, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (ok && fd >= 0 && archive_write_open_fd(w, fd) == ARCHIVE_OK) {
                for (i = 0; i < n; i++)
                        archive_add(w, &ents[i]);
                archive_write_close(w);
        } else {
                ok = false;
        }
        archive_write_free(w);
        if (fd >= 0)
                close(fd);
        return ok;
}

#define ARCHIVE(name, filter, ...)                                           \
        ({                                                                   \
                const struct aent _e_[] = { __VA_ARGS__ };                   \
                make_archive((name), (filter), false, _e_, ELEMENTSOF(_e_)); \
        })

/* ------------------------------------------------------------------------------------ */
/* The cases                                                                              */
/* ------------------------------------------------------------------------------------ */

static void test_file(void)
{
        fresh();
        file_at(src_dir, "a.txt", "A", 0640);
        copy_ok((struct cp_opts){ SRCS("a.txt"), .dest = "/b.txt" }, "file to file");
        tree_is("", "b.txt f0640 0:0 'A'\n", "file to file: the tree");
        tap_eq_int(mtime_of(dst_dir, "b.txt"), MTIME, "file to file: mtime kept");

        file_at(dst_dir, "old", "old content", 0600);
        copy_ok((struct cp_opts){ SRCS("/a.txt"), .dest = "/old" }, "file over a file");
        tree_is("old", "", "file over a file: not a directory");
        {
                _cleanup_free_ char *got = dump(dst_dir, "");
                tap_ok(strstr(got, "old f0640 0:0 'A'\n") != NULL, "file over a file: replaced");
        }

        copy_ok((struct cp_opts){ SRCS("a.txt"), .dest = "/sub/dir/c.txt" },
                "file to a path with missing parents");
        tree_is("sub", "sub/dir d0755 0:0\nsub/dir/c.txt f0640 0:0 'A'\n",
                "created parents: 0755, root's");
}

static void test_file_into_dir(void)
{
        fresh();
        file_at(src_dir, "a.txt", "A", 0640);
        copy_ok((struct cp_opts){ SRCS("a.txt"), .dest = "/d/" }, "file to dir/");
        tree_is("", "d d0755 0:0\nd/a.txt f0640 0:0 'A'\n", "file to dir/: the tree");

        mkdir_at(dst_dir, "e", 0700);
        copy_ok((struct cp_opts){ SRCS("a.txt"), .dest = "/e" }, "file to an existing dir");
        tree_is("e", "e/a.txt f0640 0:0 'A'\n", "file to an existing dir: lands inside");
        {
                struct stat st;
                fstatat(dst_dir, "e", &st, 0);
                tap_eq_int(st.st_mode & 07777, 0700, "existing dir: its mode is kept");
                tap_eq_int(st.st_mtim.tv_sec == MTIME, 0, "existing dir: changed by the copy");
        }

        link_at(dst_dir, "f", "e");
        link_at(dst_dir, "g", "/e");
        copy_ok((struct cp_opts){ SRCS("a.txt"), .dest = "/f" }, "file to a symlink to a dir");
        tap_ok(exists(dst_dir, "e/a.txt"), "symlink to a dir (relative): followed in the root");
        file_at(dst_dir, "e/a.txt", "stale", 0600);
        copy_ok((struct cp_opts){ SRCS("a.txt"), .dest = "/g/" }, "file to an absolute link/");
        tree_is("e", "e/a.txt f0640 0:0 'A'\n", "symlink to a dir (absolute): followed");
}

static void make_dir_tree(void)
{
        mkdir_at(src_dir, "dir", 0750);
        file_at(src_dir, "dir/x", "X", 0644);
        mkdir_at(src_dir, "dir/sub", 0700);
        file_at(src_dir, "dir/sub/y", "Y", 0600);
        link_at(src_dir, "dir/l", "x");
        set_mtime(src_dir, "dir/sub", MTIME);
        set_mtime(src_dir, "dir", MTIME);
}

static void test_dir(void)
{
        fresh();
        make_dir_tree();
        copy_ok((struct cp_opts){ SRCS("dir"), .dest = "/out" }, "dir to a new path");
        tree_is("",
                "out d0755 0:0\n"
                "out/l l 0:0 -> x\n"
                "out/sub d0700 0:0\n"
                "out/sub/y f0600 0:0 'Y'\n"
                "out/x f0644 0:0 'X'\n",
                "dir: its contents, the new destination 0755 (BuildKit's MkdirAll)");
        tap_eq_int(mtime_of(dst_dir, "out/sub"), MTIME, "dir: a subdirectory's mtime kept");
        tap_eq_int(mtime_of(dst_dir, "out/x"), MTIME, "dir: a file's mtime kept");

        mkdir_at(dst_dir, "keep", 0711);
        mkdir_at(dst_dir, "keep/sub", 0755);
        file_at(dst_dir, "keep/other", "O", 0644);
        copy_ok((struct cp_opts){ SRCS("dir/"), .dest = "/keep/" }, "dir into an existing dir");
        tree_is("keep",
                "keep/l l 0:0 -> x\n"
                "keep/other f0644 0:0 'O'\n"
                "keep/sub d0700 0:0\n"
                "keep/sub/y f0600 0:0 'Y'\n"
                "keep/x f0644 0:0 'X'\n",
                "dir into an existing dir: merged, a subdirectory takes the source's mode");
        {
                struct stat st;
                fstatat(dst_dir, "keep", &st, 0);
                tap_eq_int(st.st_mode & 07777, 0711, "existing top directory: left as it was");
        }

        copy_ok((struct cp_opts){ SRCS("."), .dest = "/all/" }, "the whole source root");
        tap_ok(exists(dst_dir, "all/dir/sub/y"), "the root: everything below it");
}

static void test_wildcards(void)
{
        static const char *const files[] = { "a.txt", "b.txt", "c.md", "ab",     "ac",
                                             "ba",    "star",  "st*r", ".hidden" };
        size_t i;

        fresh();
        for (i = 0; i < ELEMENTSOF(files); i++)
                file_at(src_dir, files[i], files[i], 0644);
        file_at(src_dir, "dir/p/x", "p", 0644);
        file_at(src_dir, "dir/q/x", "q", 0644);
        file_at(src_dir, "dir/r/y", "r", 0644);

        copy_ok((struct cp_opts){ SRCS("*.txt"), .dest = "/w/" }, "*.txt");
        tree_is("w", "w/a.txt f0644 0:0 'a.txt'\nw/b.txt f0644 0:0 'b.txt'\n", "*.txt: matches");

        copy_ok((struct cp_opts){ SRCS("dir/*/x"), .dest = "/w2/" }, "dir/*/x");
        tree_is("w2", "w2/x f0644 0:0 'q'\n", "dir/*/x: each match by its name, the last wins");

        copy_ok((struct cp_opts){ SRCS("[ab]?"), .dest = "/w3/" }, "[ab]?");
        tree_is("w3", "w3/ab f0644 0:0 'ab'\nw3/ac f0644 0:0 'ac'\nw3/ba f0644 0:0 'ba'\n",
                "[ab]?: a class and one character");

        copy_ok((struct cp_opts){ SRCS("s?\\*r"), .dest = "/w4/" }, "an escaped '*'");
        tree_is("w4", "w4/st*r f0644 0:0 'st*r'\n", "an escaped '*' matches only itself");
        copy_fails((struct cp_opts){ SRCS("st\\*r"), .dest = "/w4b/" }, KILN_ERR_NOTFOUND,
                   "'st\\*r': not found",
                   "no unescaped wildcard: a literal path, backslash included (BuildKit)");

        copy_ok((struct cp_opts){ SRCS("[^a-b.]*"), .dest = "/w5/" }, "a negated class");
        tree_is("w5",
                "w5/c.md f0644 0:0 'c.md'\nw5/p d0755 0:0\n"
                "w5/p/x f0644 0:0 'p'\nw5/q d0755 0:0\nw5/q/x f0644 0:0 'q'\n"
                "w5/r d0755 0:0\nw5/r/y f0644 0:0 'r'\n"
                "w5/st*r f0644 0:0 'st*r'\nw5/star f0644 0:0 'star'\n",
                "a negated class (a matched directory copies its contents)");

        copy_ok((struct cp_opts){ SRCS(".h*"), .dest = "/w6/" }, "a dot file");
        tree_is("w6", "w6/.hidden f0644 0:0 '.hidden'\n", "'*' matches after a leading dot");

        copy_ok((struct cp_opts){ SRCS("nomatch*", "a.txt"), .dest = "/w7/" },
                "a pattern matching nothing beside a source");
        tree_is("w7", "w7/a.txt f0644 0:0 'a.txt'\n", "an empty pattern is allowed");

        copy_ok((struct cp_opts){ SRCS("c.m?"), .dest = "/single" }, "one match to a file path");
        tree_is("single", "", "one match: written as the path");
        tap_ok(exists(dst_dir, "single") && !exists(dst_dir, "single/c.md"),
               "one match: a file named after the destination");

        copy_fails((struct cp_opts){ SRCS("nomatch*", "*.none"), .dest = "/w8/" },
                   KILN_ERR_NOTFOUND, "COPY failed: no source files were specified",
                   "only patterns matching nothing");
        copy_fails((struct cp_opts){ SRCS("*.txt"), .dest = "/w9" }, KILN_ERR_INVALID,
                   "cannot copy multiple sources to '/w9'", "two matches to a file path");
        tap_ok(!exists(dst_dir, "w9"), "two matches to a file path: nothing written");
}

static void test_multiple_and_missing(void)
{
        fresh();
        file_at(src_dir, "a.txt", "A", 0644);
        file_at(src_dir, "b.txt", "B", 0644);
        copy_ok((struct cp_opts){ SRCS("a.txt", "b.txt"), .dest = "/m/" }, "two sources to dir/");
        tree_is("m", "m/a.txt f0644 0:0 'A'\nm/b.txt f0644 0:0 'B'\n", "two sources: both");
        copy_fails((struct cp_opts){ SRCS("a.txt", "b.txt"), .dest = "/m2" }, KILN_ERR_INVALID,
                   "COPY: cannot copy multiple sources to '/m2': the destination must be a "
                   "directory and end with a /",
                   "two sources to a file path");
        tap_ok(!exists(dst_dir, "m2"), "two sources to a file path: nothing written");
        copy_fails((struct cp_opts){ SRCS("a.txt", "src/app.py"), .dest = "/m3/" },
                   KILN_ERR_NOTFOUND, "COPY: 'src/app.py': not found", "a missing source");
        tap_ok(!exists(dst_dir, "m3"), "a missing source: nothing written");
        copy_fails((struct cp_opts){ SRCS("a.txt/x"), .dest = "/m4" }, KILN_ERR_NOTFOUND,
                   "'a.txt/x': not found", "a path below a file");
        copy_fails((struct cp_opts){ SRCS("a.txt", "b.txt"), .dest = "/m5", .add = true },
                   KILN_ERR_INVALID, "ADD: cannot copy multiple sources", "ADD names itself");
}

static void test_dockerignore(void)
{
        static const char *const patterns[] = { "secret.env", "logs", "**/*.log", "!keep.log",
                                                "!logs/keep.log" };
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_(df_ignore_freep) struct df_ignore *ig = NULL;

        fresh();
        if (!tap_ok(df_ignore_new(patterns, ELEMENTSOF(patterns), &ig, &err) == 0,
                    ".dockerignore: compiled"))
                return;
        file_at(src_dir, "secret.env", "S", 0600);
        file_at(src_dir, "app.py", "P", 0644);
        file_at(src_dir, "logs/a.txt", "L", 0644);
        file_at(src_dir, "logs/keep.log", "K", 0644);
        file_at(src_dir, "x.log", "X", 0644);
        file_at(src_dir, "keep.log", "k", 0644);
        link_at(src_dir, "link-secret", "secret.env");
        link_at(src_dir, "linkdir", "logs");
        mkdir_at(src_dir, "up", 0755);
        link_at(src_dir, "up/root", "..");
        ignore = ig;

        copy_ok((struct cp_opts){ SRCS("."), .dest = "/ctx/" }, ".dockerignore: the context");
        tree_is("ctx",
                "ctx/app.py f0644 0:0 'P'\n"
                "ctx/keep.log f0644 0:0 'k'\n"
                "ctx/link-secret l 0:0 -> secret.env\n"
                "ctx/linkdir l 0:0 -> logs\n"
                "ctx/logs d0755 0:0\n"
                "ctx/logs/keep.log f0644 0:0 'K'\n"
                "ctx/up d0755 0:0\n"
                "ctx/up/root l 0:0 -> ..\n",
                ".dockerignore: excluded entries absent, '!' brings children back");
        copy_fails((struct cp_opts){ SRCS("secret.env"), .dest = "/s" }, KILN_ERR_NOTFOUND,
                   "'secret.env': not found", ".dockerignore: an excluded source is absent");
        copy_fails((struct cp_opts){ SRCS("link-secret"), .dest = "/s" }, KILN_ERR_NOTFOUND,
                   "'link-secret': not found",
                   ".dockerignore: a symlink to an excluded file is absent");
        copy_ok((struct cp_opts){ SRCS("linkdir"), .dest = "/ld/" }, ".dockerignore: linkdir");
        tree_is("ld", "ld/keep.log f0644 0:0 'K'\n",
                ".dockerignore: checked on real paths through a symlinked directory");
        copy_ok((struct cp_opts){ SRCS("up/root/"), .dest = "/ur/" }, ".dockerignore: up/root");
        tap_ok(!exists(dst_dir, "ur/secret.env") && exists(dst_dir, "ur/app.py"),
               ".dockerignore: a symlink back to the root does not bring secrets");
        copy_fails((struct cp_opts){ SRCS("*.env"), .dest = "/e/" }, KILN_ERR_NOTFOUND,
                   "no source files were specified",
                   ".dockerignore: a pattern matching only excluded files");
        ignore = NULL;
}

static void test_exclude(void)
{
        fresh();
        file_at(src_dir, "home.txt", "t", 0644);
        file_at(src_dir, "home.md", "m", 0644);
        file_at(src_dir, "hom/x.txt", "x", 0644);
        file_at(src_dir, "hom/y.md", "y", 0644);
        file_at(src_dir, "hom/sub/z.txt", "z", 0644);
        copy_ok((struct cp_opts){ SRCS("hom*"), .dest = "/ex/",
                                  .excludes = (const char *const[]){ "*.txt" }, .n_excludes = 1 },
                "--exclude=*.txt hom*");
        tree_is("ex",
                "ex/home.md f0644 0:0 'm'\nex/sub d0755 0:0\nex/sub/z.txt f0644 0:0 'z'\n"
                "ex/y.md f0644 0:0 'y'\n",
                "--exclude: matches and children filtered, paths below the copied directory");
        copy_ok((struct cp_opts){ SRCS("hom"), .dest = "/ex2/",
                                  .excludes = (const char *const[]){ "sub", "**/*.md" },
                                  .n_excludes = 2 },
                "--exclude of a subdirectory");
        tree_is("ex2", "ex2/x.txt f0644 0:0 'x'\n", "--exclude: a directory and a ** pattern");
}

static void test_chown(void)
{
        fresh();
        make_dir_tree();
        if (!is_root) {
                tap_skip("--chown: setting other ids needs root");
                return;
        }
        fchownat(src_dir, "dir/x", 1000, 1000, 0);
        copy_ok((struct cp_opts){ SRCS("dir"), .dest = "/plain/" }, "no --chown");
        {
                struct stat st;
                fstatat(dst_dir, "plain/x", &st, 0);
                tap_ok(st.st_uid == 0 && st.st_gid == 0, "no --chown: 0:0, not the source's");
        }
        copy_ok((struct cp_opts){ SRCS("dir"), .dest = "/co/a/b/", .chown = true, .uid = 1234,
                                  .gid = 5678 },
                "--chown=1234:5678");
        tree_is("co",
                "co/a d0755 1234:5678\n"
                "co/a/b d0755 1234:5678\n"
                "co/a/b/l l 1234:5678 -> x\n"
                "co/a/b/sub d0700 1234:5678\n"
                "co/a/b/sub/y f0600 1234:5678 'Y'\n"
                "co/a/b/x f0644 1234:5678 'X'\n",
                "--chown: every entry and the created parents (BuildKit's MkdirAll chowner)");
        {
                struct stat st;
                fstatat(dst_dir, "co", &st, 0);
                tap_ok(st.st_uid == 1234, "--chown: the first created parent too");
        }
        file_at(src_dir, "suid", "s", 04755);
        copy_ok((struct cp_opts){ SRCS("suid"), .dest = "/suid", .chown = true, .uid = 7,
                                  .gid = 8 },
                "--chown of a setuid file");
        {
                struct stat st;
                fstatat(dst_dir, "suid", &st, 0);
                tap_eq_int(st.st_mode & 07777, 04755, "--chown: setuid bit kept (chmod after)");
        }
}

static void test_chmod(void)
{
        fresh();
        make_dir_tree();
        file_at(src_dir, "f664", "a", 0664);
        file_at(src_dir, "f640", "b", 0640);
        file_at(src_dir, "f755", "c", 0755);
        mkdir_at(src_dir, "d775", 0775);
        file_at(src_dir, "d775/in", "d", 0644);
        set_mtime(src_dir, "d775", MTIME);

        copy_ok((struct cp_opts){ SRCS("dir"), .dest = "/oct/p/", .chmod = true,
                                  .chmod_spec = "0751" },
                "--chmod=0751");
        tree_is("oct",
                "oct/p d0755 0:0\n"
                "oct/p/l l 0:0 -> x\n"
                "oct/p/sub d0751 0:0\n"
                "oct/p/sub/y f0751 0:0 'Y'\n"
                "oct/p/x f0751 0:0 'X'\n",
                "--chmod octal: files and directories, not created parents");

        copy_ok((struct cp_opts){ SRCS("f664", "f640", "d775"), .dest = "/sym/", .chmod = true,
                                  .chmod_spec = "u+x,go-w" },
                "--chmod=u+x,go-w");
        tree_is("sym",
                "sym/f640 f0740 0:0 'b'\n"
                "sym/f664 f0744 0:0 'a'\n"
                "sym/in f0744 0:0 'd'\n",
                "--chmod symbolic: u+x,go-w");

        copy_ok((struct cp_opts){ SRCS("f755", "f640", "dir"), .dest = "/rx/", .chmod = true,
                                  .chmod_spec = "a=rX" },
                "--chmod=a=rX");
        tree_is("rx",
                "rx/f640 f0444 0:0 'b'\n"
                "rx/f755 f0555 0:0 'c'\n"
                "rx/l l 0:0 -> x\n"
                "rx/sub d0555 0:0\n"
                "rx/sub/y f0444 0:0 'Y'\n"
                "rx/x f0444 0:0 'X'\n",
                "--chmod symbolic: a=rX (X for directories and executables)");

        copy_ok((struct cp_opts){ SRCS("f640"), .dest = "/g", .chmod = true,
                                  .chmod_spec = "g=u,o+r" },
                "--chmod=g=u,o+r");
        {
                struct stat st;
                fstatat(dst_dir, "g", &st, 0);
                tap_eq_int(st.st_mode & 07777, 0664, "--chmod: g=u copies the user bits");
        }
        copy_fails((struct cp_opts){ SRCS("f640"), .dest = "/bad", .chmod = true,
                                     .chmod_spec = "u+q" },
                   KILN_ERR_INVALID, "invalid --chmod value 'u+q'", "--chmod malformed");
}

static void test_parents(void)
{
        fresh();
        mkdir_at(src_dir, "x", 0750);
        file_at(src_dir, "x/a.txt", "xa", 0644);
        file_at(src_dir, "y/a.txt", "ya", 0644);
        file_at(src_dir, "x/sub/b.txt", "b", 0644);
        set_mtime(src_dir, "x", MTIME);

        copy_ok((struct cp_opts){ SRCS("x/a.txt", "./y/a.txt"), .dest = "/p/", .parents = true },
                "--parents");
        tree_is("p",
                "p/x d0750 0:0\np/x/a.txt f0644 0:0 'xa'\n"
                "p/y d0755 0:0\np/y/a.txt f0644 0:0 'ya'\n",
                "--parents: the source's directories, with their modes");
        copy_ok((struct cp_opts){ SRCS("x/./sub/b.txt"), .dest = "/q", .parents = true },
                "--parents with a /./ pivot");
        tree_is("q", "q/sub d0755 0:0\nq/sub/b.txt f0644 0:0 'b'\n",
                "--parents: kept from the pivot");
        copy_ok((struct cp_opts){ SRCS("x"), .dest = "/r/", .parents = true },
                "--parents of a directory");
        tree_is("r",
                "r/x d0750 0:0\nr/x/a.txt f0644 0:0 'xa'\nr/x/sub d0755 0:0\n"
                "r/x/sub/b.txt f0644 0:0 'b'\n",
                "--parents: a directory keeps its name");
        copy_ok((struct cp_opts){ SRCS("*/a.txt"), .dest = "/s/", .parents = true },
                "--parents with a wildcard");
        tree_is("s",
                "s/x d0750 0:0\ns/x/a.txt f0644 0:0 'xa'\n"
                "s/y d0755 0:0\ns/y/a.txt f0644 0:0 'ya'\n",
                "--parents: each match under its directories");
}

static void test_inline(void)
{
        static const char *const names[] = { "script.sh", "notes" };
        static const char *const data[] = { "echo hi\n", "" };
        static const size_t lens[] = { 8, 0 };
        struct timespec start;

        fresh();
        clock_gettime(CLOCK_REALTIME, &start);
        copy_ok((struct cp_opts){ SRCS("script.sh", "notes"), .dest = "/i/", .inline_names = names,
                                  .inline_data = data, .inline_len = lens, .n_inline = 2 },
                "inline sources");
        tree_is("i", "i/notes f0644 0:0 ''\ni/script.sh f0644 0:0 'echo hi\n'\n",
                "inline: files of mode 0644 with the content");
        tap_ok(mtime_of(dst_dir, "i/script.sh") >= start.tv_sec, "inline: mtime is now");
        copy_ok((struct cp_opts){ SRCS("script.sh"), .dest = "/run.sh", .inline_names = names,
                                  .inline_data = data, .inline_len = lens, .n_inline = 2,
                                  .chmod = true, .chmod_spec = "755" },
                "inline to a file path with --chmod");
        {
                _cleanup_free_ char *got = dump(dst_dir, "");
                tap_ok(strstr(got, "run.sh f0755 0:0 'echo hi\n'\n") != NULL,
                       "inline: written as the path, mode from --chmod");
        }
}

static void test_add(void)
{
        const unsigned uid = is_root ? 42 : 0, gid = is_root ? 43 : 0;
        static const struct {
                const char *name;
                int filter;
        } kinds[] = {
                { "a.tar.gz", ARCHIVE_FILTER_GZIP },   { "a.tar.xz", ARCHIVE_FILTER_XZ },
                { "a.tar.bz2", ARCHIVE_FILTER_BZIP2 }, { "a.tar.zst", ARCHIVE_FILTER_ZSTD },
                { "plain", ARCHIVE_FILTER_NONE },
        };
        size_t i;

        fresh();
        for (i = 0; i < ELEMENTSOF(kinds); i++) {
                _cleanup_free_ char *dest = xasprintf("/x%zu/", i);
                _cleanup_free_ char *want = NULL;
                _cleanup_free_ char *what = xasprintf("ADD %s", kinds[i].name);
                bool made = ARCHIVE(
                        kinds[i].name, kinds[i].filter,
                        { .path = "top", .type = AE_IFDIR, .mode = 0750, .uid = uid, .gid = gid },
                        { .path = "top/f", .content = "F", .mode = 0640, .uid = uid, .gid = gid },
                        { .path = "l", .type = AE_IFLNK, .link = "top/f" },
                        { .path = "h", .hardlink = "top/f" });
                struct stat a, b;

                if (!made) {
                        tap_skip("%s: libarchive cannot write it here", what);
                        continue;
                }
                if (i == 4)
                        dest[strlen(dest) - 1] = '\0'; /* an archive makes even "/x4" a dir */
                copy_ok((struct cp_opts){ SRCS(kinds[i].name), .dest = dest, .add = true }, what);
                want = xasprintf("x%zu/h f0640 %u:%u 'F'\nx%zu/l l 0:0 -> top/f\n"
                                 "x%zu/top d0750 %u:%u\nx%zu/top/f f0640 %u:%u 'F'\n",
                                 i, uid, gid, i, i, uid, gid, i, uid, gid);
                {
                        _cleanup_free_ char *top = xasprintf("x%zu", i);
                        tree_is(top, want, what);
                }
                {
                        _cleanup_free_ char *h = xasprintf("x%zu/h", i);
                        _cleanup_free_ char *f = xasprintf("x%zu/top/f", i);
                        tap_ok(fstatat(dst_dir, h, &a, AT_SYMLINK_NOFOLLOW) == 0 &&
                                       fstatat(dst_dir, f, &b, AT_SYMLINK_NOFOLLOW) == 0 &&
                                       a.st_ino == b.st_ino,
                               "%s: a hardlink stays a hardlink", what);
                }
        }
        {
                _cleanup_free_ char *got = dump(dst_dir, "");
                tap_ok(strstr(got, ".kiln-add") == NULL, "ADD: no scratch directory left");
        }

        /* A gzip of something that is not a tar, an empty tar, and text: copied as they are. */
        {
                const struct aent raw[] = { { .path = "note", .content = "just text\n" } };
                if (make_archive("note.gz", ARCHIVE_FILTER_GZIP, true, raw, 1)) {
                        struct stat a, b;
                        copy_ok((struct cp_opts){ SRCS("note.gz"), .dest = "/n/", .add = true },
                                "ADD a gzip file that is not a tar");
                        tap_ok(fstatat(dst_dir, "n/note.gz", &a, AT_SYMLINK_NOFOLLOW) == 0 &&
                                       fstatat(src_dir, "note.gz", &b, 0) == 0 &&
                                       S_ISREG(a.st_mode) && a.st_size == b.st_size,
                               "ADD a gzip of text: copied, not unpacked");
                } else {
                        tap_skip("no raw gzip writer");
                }
        }
        {
                char zeros[1024] = { 0 };
                int fd = openat(src_dir, "empty.tar", O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
                kiln_write_all(fd, zeros, sizeof(zeros), NULL);
                close(fd);
                file_at(src_dir, "text.txt", "hello", 0644);
                copy_ok((struct cp_opts){ SRCS("empty.tar", "text.txt"), .dest = "/t/",
                                          .add = true },
                        "ADD an empty tar and a text file");
                tree_is("t", "t/empty.tar f0644 0:0 ''\nt/text.txt f0644 0:0 'hello'\n",
                        "ADD: an empty tar and text are copied like COPY");
        }
        if (is_root) {
                copy_ok((struct cp_opts){ SRCS("a.tar.gz"), .dest = "/y", .add = true,
                                          .chown = true, .uid = 7, .gid = 8 },
                        "ADD --chown");
                tree_is("y",
                        "y/h f0640 7:8 'F'\ny/l l 7:8 -> top/f\ny/top d0750 7:8\n"
                        "y/top/f f0640 7:8 'F'\n",
                        "ADD --chown: the ids replace the archive's (BuildKit)");
        } else {
                tap_skip("ADD --chown: setting other ids needs root");
        }
        {
                /* Cut deep inside the second entry's data: a damaged archive, not a file to copy.
                 * (One that breaks before its first header can be read is taken for a file that
                 * is not an archive, as libarchive reads ahead.) */
                static char noise[1 << 18];
                uint32_t x = 12345;
                struct stat st;
                size_t k;
                int fd;

                for (k = 0; k + 1 < sizeof(noise); k++) {
                        x = x * 1103515245 + 12345;
                        noise[k] = (char) ('!' + (x >> 16) % 90);
                }
                ARCHIVE("trunc.tar.gz", ARCHIVE_FILTER_GZIP, { .path = "a", .content = "A" },
                        { .path = "big", .content = noise });
                fstatat(src_dir, "trunc.tar.gz", &st, 0);
                fd = openat(src_dir, "trunc.tar.gz", O_WRONLY | O_CLOEXEC);
                if (fd < 0 || ftruncate(fd, st.st_size * 3 / 4) < 0)
                        abort();
                close(fd);
        }
        copy_fails((struct cp_opts){ SRCS("trunc.tar.gz"), .dest = "/tr/", .add = true },
                   KILN_ERR_PARSE, "ADD: layer 'trunc.tar.gz'", "ADD a damaged archive");
        {
                _cleanup_free_ char *got = dump(dst_dir, "");
                tap_ok(strstr(got, ".kiln-add") == NULL, "ADD failed: no scratch directory left");
        }
}

static void test_workdir(void)
{
        fresh();
        file_at(src_dir, "a.txt", "A", 0644);
        copy_ok((struct cp_opts){ SRCS("a.txt"), .dest = "sub/", .workdir = "/app" },
                "relative dest/ with WORKDIR");
        copy_ok((struct cp_opts){ SRCS("a.txt"), .dest = ".", .workdir = "/app" },
                "dest '.' with WORKDIR");
        copy_ok((struct cp_opts){ SRCS("a.txt"), .dest = "rel.txt", .workdir = "/app" },
                "relative file dest with WORKDIR");
        copy_ok((struct cp_opts){ SRCS("a.txt"), .dest = "../../../../up.txt", .workdir = "/app" },
                "a dest climbing above the root");
        tree_is("",
                "app d0755 0:0\n"
                "app/a.txt f0644 0:0 'A'\n"
                "app/rel.txt f0644 0:0 'A'\n"
                "app/sub d0755 0:0\n"
                "app/sub/a.txt f0644 0:0 'A'\n"
                "up.txt f0644 0:0 'A'\n",
                "WORKDIR: relative destinations, '..' stops at the root");
}

static void test_dest_escapes(void)
{
        _cleanup_free_ char *before = NULL, *after = NULL;
        _cleanup_free_ char *to_file = xasprintf("%s/file", sentinel);
        _cleanup_free_ char *inside = NULL;

        fresh();
        file_at(src_dir, "a.txt", "A", 0644);
        make_dir_tree();
        mkdir_at(src_dir, "evil", 0755);
        file_at(src_dir, "evil/sub/x", "E", 0644);
        file_at(src_dir, "evil/x", "E", 0644);
        ARCHIVE("esc.tar", ARCHIVE_FILTER_NONE, { .path = "../../escape", .content = "T" },
                { .path = "out", .type = AE_IFLNK, .link = "/" },
                { .path = "out/kiln-x", .content = "T" },
                { .path = "up", .type = AE_IFLNK, .link = "../../../.." },
                { .path = "up/x", .content = "T" });
        link_at(dst_dir, "abs", sentinel);
        link_at(dst_dir, "rel", "../../../../../../../../sentinel");
        link_at(dst_dir, "final", to_file);
        link_at(dst_dir, "dots", "../../..");
        mkdir_at(dst_dir, "d", 0755);
        link_at(dst_dir, "d/sub", sentinel);
        mkdir_at(dst_dir, "d2", 0755);
        link_at(dst_dir, "d2/x", to_file);
        link_at(dst_dir, "dang", "/kiln-x/made");
        link_at(dst_dir, "dang2", "/kiln-x/other");
        before = outside_state();

        copy_ok((struct cp_opts){ SRCS("a.txt"), .dest = "/abs/" }, "into an absolute link/");
        inside = xasprintf("%s/a.txt", sentinel + 1);
        tap_ok(exists(dst_dir, inside), "absolute link: followed inside the image root");
        copy_ok((struct cp_opts){ SRCS("a.txt"), .dest = "/rel/x.txt" }, "through a ../ link");
        tap_ok(exists(dst_dir, "sentinel/x.txt"), "../ link: stops at the image root");
        copy_ok((struct cp_opts){ SRCS("a.txt"), .dest = "/final" }, "onto a link to a file");
        {
                struct stat st;
                tap_ok(fstatat(dst_dir, "final", &st, AT_SYMLINK_NOFOLLOW) == 0 &&
                               S_ISREG(st.st_mode),
                       "a final symlink is replaced, not followed");
        }
        copy_ok((struct cp_opts){ SRCS("a.txt"), .dest = "/dots" }, "onto a link to ../../..");
        tap_ok(exists(dst_dir, "a.txt"), "a link climbing out is the image root, a directory");
        copy_fails((struct cp_opts){ SRCS("evil"), .dest = "/d/" }, KILN_ERR_INVALID,
                   "cannot copy to non-directory: '/d/sub'", "a directory onto a symlink");
        copy_ok((struct cp_opts){ SRCS("evil/x"), .dest = "/d2/" }, "a file onto a symlink");
        tap_ok(!exists(dst_dir, "d2/x/x"), "a file onto a symlink in a dir: replaced");
        copy_ok((struct cp_opts){ SRCS("dir"), .dest = "/abs/deeper/", .chown = false },
                "a directory through an absolute link");
        copy_ok((struct cp_opts){ SRCS("esc.tar"), .dest = "/abs/", .add = true },
                "ADD a hostile archive through a link");
        copy_ok((struct cp_opts){ SRCS("a.txt"), .dest = "/dang/" }, "into a dangling link/");
        tap_ok(exists(dst_dir, "kiln-x/made/a.txt"),
               "a dangling link/: its target made inside the root (RootPath, MkdirAll)");
        copy_ok((struct cp_opts){ SRCS("dir"), .dest = "/dang2" }, "a dir onto a dangling link");
        {
                struct stat st;
                tap_ok(fstatat(dst_dir, "dang2", &st, AT_SYMLINK_NOFOLLOW) == 0 &&
                               S_ISDIR(st.st_mode) && exists(dst_dir, "dang2/x") &&
                               !exists(dst_dir, "kiln-x/other"),
                       "a dangling final link: replaced by the directory");
        }
        copy_ok((struct cp_opts){ SRCS("a.txt"), .dest = "../../../../../../x" },
                "a relative dest climbing out");
        tap_ok(exists(dst_dir, "x"), "the climbing dest: at the root");

        after = outside_state();
        tap_eq_str(after, before, "escapes: nothing outside the image root changed");
}

static void test_source_escapes(void)
{
        _cleanup_free_ char *before = NULL, *after = NULL;
        _cleanup_free_ char *to_file = xasprintf("%s/file", sentinel);

        fresh();
        link_at(src_dir, "evil-abs", to_file);
        link_at(src_dir, "evil-rel", "../sentinel/file");
        link_at(src_dir, "evil-dir", "../../../../../");
        file_at(src_dir, "sentinel/file", "ctx decoy", 0644);
        file_at(src_dir, "etc/passwd", "ctx passwd", 0644);
        mkdir_at(src_dir, "links", 0755);
        link_at(src_dir, "links/abs", to_file);
        link_at(src_dir, "links/rel", "../../sentinel/file");
        link_at(src_dir, "loop", "loop");
        before = outside_state();

        copy_fails((struct cp_opts){ SRCS("evil-abs"), .dest = "/o" }, KILN_ERR_NOTFOUND,
                   "'evil-abs': not found", "a link to an absolute host path: not outside");
        copy_ok((struct cp_opts){ SRCS("evil-rel"), .dest = "/r" }, "a ../ link");
        {
                _cleanup_free_ char *got = dump(dst_dir, "");
                tap_ok(strstr(got, "r f0644 0:0 'ctx decoy'") != NULL,
                       "a ../ link resolves inside the context");
        }
        copy_ok((struct cp_opts){ SRCS("evil-dir/etc/passwd"), .dest = "/p1" },
                "through a link climbing out");
        copy_ok((struct cp_opts){ SRCS("../../etc/passwd"), .dest = "/p2" }, "../../etc/passwd");
        {
                _cleanup_free_ char *got = dump(dst_dir, "");
                tap_ok(strstr(got, "p1 f0644 0:0 'ctx passwd'") != NULL &&
                               strstr(got, "p2 f0644 0:0 'ctx passwd'") != NULL,
                       "'..' in sources stops at the context root");
        }
        copy_ok((struct cp_opts){ SRCS("links"), .dest = "/lk/" }, "a directory of links");
        {
                _cleanup_free_ char *want = xasprintf("lk/abs l 0:0 -> %s\n"
                                                      "lk/rel l 0:0 -> ../../sentinel/file\n",
                                                      to_file);
                tree_is("lk", want, "links in a copied directory: verbatim, never read");
        }
        copy_fails((struct cp_opts){ SRCS("loop"), .dest = "/lp" }, KILN_ERR_INVALID, "'/loop'",
                   "a symlink loop as a source");
        copy_fails((struct cp_opts){ SRCS("lo*"), .dest = "/lp2/" }, KILN_ERR_INVALID, "'/loop'",
                   "a pattern matching a symlink loop (followed, as BuildKit does)");
        copy_ok((struct cp_opts){ SRCS("."), .dest = "/all/",
                                  .excludes = (const char *const[]){ "loop" }, .n_excludes = 1 },
                "the context with its links");
        tap_ok(exists(dst_dir, "all/evil-abs"), "the context: links copied as links");
        after = outside_state();
        tap_eq_str(after, before, "source escapes: nothing outside changed");
}

static void test_special(void)
{
        struct stat a, b;

        fresh();
        file_at(src_dir, "h/one", "1", 0644);
        if (linkat(src_dir, "h/one", src_dir, "h/two", 0) < 0)
                abort();
        mkdir_at(src_dir, "f", 0755);
        mkfifoat(src_dir, "f/fifo", 0640);
        fchmodat(src_dir, "f/fifo", 0640, 0);
        copy_ok((struct cp_opts){ SRCS("h"), .dest = "/hl/" }, "hardlinked files");
        tap_ok(fstatat(dst_dir, "hl/one", &a, 0) == 0 && fstatat(dst_dir, "hl/two", &b, 0) == 0 &&
                       a.st_ino == b.st_ino && a.st_nlink == 2,
               "hardlinks: kept among the copied files");
        copy_ok((struct cp_opts){ SRCS("h/one", "h/two"), .dest = "/hl2/" },
                "hardlinked files as sources");
        /* BuildKit makes one copy per source as written, each with its own link map */
        tap_ok(fstatat(dst_dir, "hl2/one", &a, 0) == 0 && fstatat(dst_dir, "hl2/two", &b, 0) == 0 &&
                       a.st_ino != b.st_ino && a.st_nlink == 1 && b.st_nlink == 1,
               "hardlinks: not made between two sources of one COPY");
        copy_ok((struct cp_opts){ SRCS("f"), .dest = "/ff/" }, "a fifo");
        tree_is("ff", "ff/fifo p0640 0:0\n", "a fifo is made as a fifo");

        mkdir_at(dst_dir, "z/x", 0755);
        file_at(src_dir, "x", "x", 0644);
        copy_fails((struct cp_opts){ SRCS("x"), .dest = "/z/" }, KILN_ERR_INVALID,
                   "cannot replace directory '/z/x' with a file", "a file onto a directory");
        file_at(dst_dir, "file", "f", 0644);
        copy_fails((struct cp_opts){ SRCS("f"), .dest = "/file" }, KILN_ERR_INVALID,
                   "cannot copy to non-directory", "a directory onto a file");
        copy_fails((struct cp_opts){ SRCS("x"), .dest = "/file/y" }, KILN_ERR_INVALID,
                   "cannot copy to non-directory: '/file'", "a parent that is a file");
}

/* ------------------------------------------------------------------------------------ */

static bool write_proc(const char *path, const char *text)
{
        int fd = open(path, O_WRONLY | O_CLOEXEC);
        bool ok = fd >= 0 && write(fd, text, strlen(text)) == (ssize_t) strlen(text);

        if (fd >= 0)
                close(fd);
        return ok;
}

/* Maps our ids to 0 in a new user namespace, so that copies can own their files as 0:0. */
static bool enter_userns(void)
{
        char map[64];
        uid_t uid = getuid();
        gid_t gid = getgid();

        if (unshare(CLONE_NEWUSER) < 0)
                return false;
        write_proc("/proc/self/setgroups", "deny");
        snprintf(map, sizeof(map), "0 %u 1", (unsigned) uid);
        if (!write_proc("/proc/self/uid_map", map))
                return false;
        snprintf(map, sizeof(map), "0 %u 1", (unsigned) gid);
        return write_proc("/proc/self/gid_map", map);
}

static int count_fds(void)
{
        struct dirent **names;
        int n = scandir("/proc/self/fd", &names, NULL, NULL), i;

        for (i = 0; i < n; i++)
                free(names[i]);
        if (n >= 0)
                free(names);
        return n;
}

int main(void)
{
        char tmpl[] = "/tmp/kiln-copy-XXXXXX";
        int fds;

        is_root = geteuid() == 0;
        if (!is_root && !enter_userns())
                tap_skip_all("not root and no user namespace to map us to 0 in");
        umask(022);
        base = mkdtemp(tmpl);
        if (!base)
                abort();
        basefd = open(base, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        sentinel = xasprintf("%s/sentinel", base);
        mkdirat(basefd, "sentinel", 0755);
        {
                int fd = openat(basefd, "sentinel/file", O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
                kiln_write_all(fd, "outside", 7, NULL);
                close(fd);
        }

        fresh();
        fds = count_fds();
        test_file();
        test_file_into_dir();
        test_dir();
        test_wildcards();
        test_multiple_and_missing();
        test_dockerignore();
        test_exclude();
        test_chown();
        test_chmod();
        test_parents();
        test_inline();
        test_add();
        test_workdir();
        test_dest_escapes();
        test_source_escapes();
        test_special();

        fresh();
        tap_eq_int(count_fds(), fds, "no descriptor leaked");
        closep(&src_dir);
        closep(&dst_dir);
        closep(&src_path);
        closep(&dst_path);
        tap_rm_rf_at(AT_FDCWD, base);
        free(sentinel);
        close(basefd);
        return tap_done();
}
