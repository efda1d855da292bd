/*
 * Applies one OCI layer (a tar stream, gzip, zstd or plain) onto a directory tree, safely by
 * construction. This is the one file that includes libarchive.
 *
 * Paths. Every entry's path is cleaned lexically first: a leading "/" is dropped, empty and "."
 * components vanish, and ".." removes the previous component but stops at the root, the way
 * RESOLVE_IN_ROOT treats it. So "/etc/x" is "etc/x" and "../escape" and "a/../../escape" are
 * "escape": a path is confined to the root, never rejected for climbing. Hardlink targets are
 * cleaned the same way. Symlink targets are stored verbatim.
 *
 * Parents. The directory holding an entry is opened with openat2(RESOLVE_IN_ROOT), so symlinks
 * already in the tree (from lower layers or earlier in this one) are followed, but only inside
 * the root. Missing parents are made one component at a time with mkdirat() in the directory
 * just resolved. A parent that is a symlink to something missing in the root is an error: the
 * link's target is not created. The last component is only ever used as a plain name relative to
 * its parent's fd: what is there is removed (unlinkat, or a recursive dirfd-relative removal for a
 * directory) and the new entry is made with O_CREAT|O_EXCL|O_NOFOLLOW, mkdirat, symlinkat,
 * linkat or mknodat. An existing directory is kept when the new entry is a directory.
 *
 * Whiteouts. "DIR/.wh.NAME" and "DIR/.wh..wh..opq" never follow any symlink, not even inside the
 * root (RESOLVE_NO_SYMLINKS): one whose directory is reached through a symlink is skipped with a
 * warning, as nothing a lower layer wrote can be there. OCI says whiteouts and opaque markers hide
 * lower layers only, whatever their position in the tar, so the inodes this layer creates are
 * remembered (directories, and entries made in directories that existed before this layer; all of
 * a new directory's content is this layer's) and are kept. Other ".wh..wh." names (aufs
 * metadata) are ignored; a ".wh." name used as a directory, or whiting out "." or "..", is a PARSE
 * error.
 *
 * Metadata. Owner first (fchown, or the "uid:gid" xattr LAYER_OWNER_XATTR with record_owner),
 * then mode, then xattrs, then times. A directory's mode and times are applied once every entry
 * has been written (children first), so a read-only directory can still be filled and its mtime
 * is the layer's. Hardlinks share their target's inode and metadata: none is applied to them.
 */
#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/openat2.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "builder/common/cleanup.h"
#include "builder/common/error.h"
#include "builder/common/fd-util.h"
#include "builder/common/strbuf.h"
#include "builder/common/xalloc.h"
#include "layers/layers-internal.h"

#define CHUNK_SIZE          (64 * 1024)
#define DEFAULT_MAX_BYTES   (UINT64_C(64) << 30)
#define DEFAULT_MAX_ENTRIES UINT64_C(10000000)
#define DEFAULT_MAX_PATH    ((size_t) 4096)

#define WHITEOUT_PREFIX      ".wh."
#define WHITEOUT_META_PREFIX ".wh..wh."
#define WHITEOUT_OPAQUE      ".wh..wh..opq"

/* Directory levels a recursive removal keeps open; deeper ones are re-entered through "..". */
#define HELD_LEVELS 32

DEFINE_TRIVIAL_CLEANUP_FUNC(struct archive *, archive_read_free)

static inline void closedirp(DIR **d)
{
        if (*d)
                closedir(*d);
}

/* ------------------------------------------------------------------------------------ */
/* A set of inodes, with what this layer did to each                                      */
/* ------------------------------------------------------------------------------------ */

enum {
        INODE_CREATED = 1 << 0, /* made by this layer */
        INODE_TOUCHED = 1 << 1, /* a directory of a lower layer that this layer lists */
        INODE_APPLIED = 1 << 2, /* deferred directory metadata already applied */
};

struct inode_slot {
        uint64_t dev;
        uint64_t ino;
        unsigned flags; /* 0: an empty slot */
};

struct inode_set {
        struct inode_slot *slots;
        size_t n;
        size_t cap; /* 0 or a power of two */
};

static uint64_t inode_hash(uint64_t dev, uint64_t ino)
{
        uint64_t h = ino ^ (dev * UINT64_C(0x9e3779b97f4a7c15));

        h ^= h >> 30;
        h *= UINT64_C(0xbf58476d1ce4e5b9);
        h ^= h >> 27;
        h *= UINT64_C(0x94d049bb133111eb);
        h ^= h >> 31;
        return h;
}

static struct inode_slot *inode_slot(const struct inode_set *s, uint64_t dev, uint64_t ino)
{
        size_t mask = s->cap - 1, i = (size_t) inode_hash(dev, ino) & mask;

        while (s->slots[i].flags && (s->slots[i].dev != dev || s->slots[i].ino != ino))
                i = (i + 1) & mask;
        return &s->slots[i];
}

static unsigned inode_flags(const struct inode_set *s, const struct stat *st)
{
        if (!s->cap)
                return 0;
        return inode_slot(s, (uint64_t) st->st_dev, (uint64_t) st->st_ino)->flags;
}

static void inode_mark(struct inode_set *s, const struct stat *st, unsigned flags)
{
        struct inode_slot *slot;

        if (2 * (s->n + 1) > s->cap) {
                struct inode_set bigger = { .cap = s->cap ? 2 * s->cap : 1024 };
                size_t i;

                bigger.slots = xcalloc(bigger.cap, sizeof(*bigger.slots));
                for (i = 0; i < s->cap; i++)
                        if (s->slots[i].flags)
                                *inode_slot(&bigger, s->slots[i].dev, s->slots[i].ino) =
                                        s->slots[i];
                bigger.n = s->n;
                free(s->slots);
                *s = bigger;
        }
        slot = inode_slot(s, (uint64_t) st->st_dev, (uint64_t) st->st_ino);
        if (!slot->flags) {
                slot->dev = (uint64_t) st->st_dev;
                slot->ino = (uint64_t) st->st_ino;
                s->n++;
        }
        slot->flags |= flags;
}

/* ------------------------------------------------------------------------------------ */
/* The state of one extraction                                                            */
/* ------------------------------------------------------------------------------------ */

/* A directory whose mode and times are applied at the end. */
struct pending_dir {
        char *path;
        uint64_t dev;
        uint64_t ino;
        mode_t mode;
        bool has_times;
        struct timespec times[2];
};

struct extract {
        int rootfd;
        const char *what;
        const struct layer_extract_opts *opts;
        struct archive *a;
        uint64_t max_bytes;
        uint64_t max_entries;
        size_t max_path;
        bool record_owner;
        bool ignore_owner;
        uid_t uid; /* the caller's ids */
        gid_t gid;
        uint64_t content; /* entry data bytes read, written or not */
        struct layer_extract_stats stats;
        char *chunk;
        struct kiln_buf path;   /* the current entry's cleaned path */
        struct kiln_buf parent; /* its parent's */
        struct kiln_buf link;   /* a hardlink's cleaned target */
        struct kiln_buf link_parent;
        struct inode_set inodes;
        struct pending_dir *dirs;
        size_t n_dirs;
        size_t alloc_dirs;
};

/* The entry being written: a name in an open directory. */
struct target {
        int parentfd;     /* the directory holding it, resolved inside the root */
        const char *name; /* a single component */
        const char *path; /* the cleaned path, for messages */
        int fd;           /* the entry itself when open (file or directory), else -1 */
        mode_t type;      /* AE_IF* */
        bool existed;     /* a directory that was already there and is kept */
};

static void warn(struct extract *x, const char *fmt, ...) _printf_(2, 3);

static void warn(struct extract *x, const char *fmt, ...)
{
        _cleanup_free_ char *msg = NULL, *full = NULL;
        va_list ap;

        x->stats.skipped++;
        if (!x->opts || !x->opts->warn)
                return;
        va_start(ap, fmt);
        msg = xvasprintf(fmt, ap);
        va_end(ap);
        full = xasprintf("layer '%s': %s", x->what, msg);
        x->opts->warn(x->opts->warn_ctx, full);
}

static const char *shown(const char *path)
{
        return path[0] ? path : ".";
}

/* The adapter: libarchive's error as a kiln error. */
static int archive_fail(struct extract *x, const char *doing, struct kiln_error **err)
{
        const char *msg = archive_error_string(x->a);
        int e = archive_errno(x->a);

        if (e == EIO || e == EBADF || e == EISDIR || e == ENXIO || e == ENOMEM) {
                errno = e;
                return kiln_error_errno(err, KILN_ERR_IO, "%s: %s", doing,
                                        msg ? msg : "read error");
        }
        return kiln_error_new(err, KILN_ERR_PARSE, "%s: %s", doing, msg ? msg : "damaged archive");
}

static int check_bytes(struct extract *x, struct kiln_error **err)
{
        int64_t pos = archive_filter_bytes(x->a, 0);
        uint64_t total = x->content;

        if (pos > 0 && (uint64_t) pos > total)
                total = (uint64_t) pos;
        if (total > x->max_bytes)
                return kiln_error_new(err, KILN_ERR_LIMIT,
                                      "more than %" PRIu64 " bytes decompressed", x->max_bytes);
        return 0;
}

/* Reads the next chunk of the entry's data, counted against the limit. Returns its size. */
static ssize_t read_chunk(struct extract *x, const char *path, struct kiln_error **err)
{
        la_ssize_t n = archive_read_data(x->a, x->chunk, CHUNK_SIZE);

        if (n < 0) {
                _cleanup_free_ char *doing = xasprintf("read '%s'", shown(path));
                return archive_fail(x, doing, err);
        }
        x->content += (uint64_t) n;
        if (check_bytes(x, err) < 0)
                return -1;
        return (ssize_t) n;
}

/* Reads and drops what is left of an entry's data, so no skip decompresses unchecked. */
static int drain(struct extract *x, struct kiln_error **err)
{
        ssize_t n;

        do
                n = read_chunk(x, x->path.buf, err);
        while (n > 0);
        return n < 0 ? -1 : 0;
}

/* ------------------------------------------------------------------------------------ */
/* Paths                                                                                  */
/* ------------------------------------------------------------------------------------ */

/*
 * Cleans a path from the layer into `out`: components joined by single '/', no "." or ".."
 * (".." above the root stays at the root), "" for the root itself.
 */
static void clean_path(const char *in, struct kiln_buf *out)
{
        const char *p = in;

        kiln_buf_reset(out);
        while (*p) {
                const char *end;
                size_t len;

                while (*p == '/')
                        p++;
                end = strchrnul(p, '/');
                len = (size_t) (end - p);
                if (len == 0 || (len == 1 && p[0] == '.')) {
                        /* nothing */
                } else if (len == 2 && p[0] == '.' && p[1] == '.') {
                        char *slash = memrchr(out->buf, '/', out->len);
                        kiln_buf_truncate(out, slash ? (size_t) (slash - out->buf) : 0);
                } else {
                        if (out->len)
                                kiln_buf_addc(out, '/', NULL);
                        kiln_buf_add(out, p, len, NULL);
                }
                p = end;
        }
}

/* Splits a cleaned path: its parent goes to `parent`, its last component is returned. */
static const char *split_path(const struct kiln_buf *path, struct kiln_buf *parent)
{
        const char *slash = memrchr(path->buf, '/', path->len);

        kiln_buf_reset(parent);
        if (!slash)
                return path->buf;
        kiln_buf_add(parent, path->buf, (size_t) (slash - path->buf), NULL);
        return slash + 1;
}

static bool starts_with(const char *s, const char *prefix)
{
        return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* ------------------------------------------------------------------------------------ */
/* Removal, never through symlinks                                                        */
/* ------------------------------------------------------------------------------------ */

/* Whether `path` (cleaned, relative) is one of opts->skip or below one; with `or_above`, also
 * whether it is an ancestor of one (a whiteout or opaque marker there would remove it). */
static bool skipped(const struct extract *x, const char *path, bool or_above)
{
        size_t i, n = strlen(path);

        for (i = 0; x->opts && i < x->opts->n_skip; i++) {
                const char *s = x->opts->skip[i];
                size_t k = strlen(s);

                if (strncmp(path, s, k) == 0 && (path[k] == '\0' || path[k] == '/'))
                        return true;
                if (or_above && (n == 0 || (strncmp(s, path, n) == 0 && s[n] == '/')))
                        return true;
        }
        return false;
}

static int empty_dir(struct extract *x, int *fd, bool only_lower, unsigned depth, const char *path,
                     struct kiln_error **err);

/* As an unprivileged owner, makes a directory writable so it can be emptied. */
static bool make_writable(struct extract *x, int dirfd, const char *name, const struct stat *st)
{
        if (x->uid == 0 || st->st_uid != x->uid || (st->st_mode & 0700) == 0700)
                return false;
        return fchmodat(dirfd, name, (st->st_mode & 07777) | 0700, 0) == 0;
}

/* Removes the directory `name` in *fd (or, with only_lower, what lower layers put in it). */
static int remove_subdir(struct extract *x, int *fd, const struct stat *self, const char *name,
                         bool only_lower, unsigned depth, const char *path, struct kiln_error **err)
{
        _cleanup_close_ int child = -1;
        struct stat st, back;
        unsigned flags;
        bool chmodded;
        int r;

        if (fstatat(*fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
                if (errno == ENOENT)
                        return 0;
                return kiln_error_errno(err, KILN_ERR_IO, "remove '%s'", shown(path));
        }
        if (!S_ISDIR(st.st_mode)) {
                if (unlinkat(*fd, name, 0) < 0 && errno != ENOENT)
                        return kiln_error_errno(err, KILN_ERR_IO, "remove '%s'", shown(path));
                return 0;
        }
        flags = only_lower ? inode_flags(&x->inodes, &st) : 0;
        if (flags & INODE_CREATED)
                return 0;
        chmodded = make_writable(x, *fd, name, &st);
        child = openat(*fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (child < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "remove '%s'", shown(path));
        if (depth >= HELD_LEVELS) {
                close(*fd);
                *fd = -1;
        }
        r = empty_dir(x, &child, only_lower, depth + 1, path, err);
        if (*fd < 0) {
                if (child < 0)
                        return -1;
                *fd = openat(child, "..", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (*fd < 0)
                        return r < 0 ? -1
                                     : kiln_error_errno(err, KILN_ERR_IO, "remove '%s'",
                                                        shown(path));
                if (fstat(*fd, &back) < 0 || back.st_dev != self->st_dev ||
                    back.st_ino != self->st_ino) {
                        if (r < 0)
                                return -1;
                        return kiln_error_new(err, KILN_ERR_IO,
                                              "remove '%s': a directory moved during removal",
                                              shown(path));
                }
        }
        if (r < 0)
                return -1;
        if (only_lower && (flags & INODE_TOUCHED))
                return 0;
        if (unlinkat(*fd, name, AT_REMOVEDIR) < 0) {
                if (only_lower && (errno == ENOTEMPTY || errno == EEXIST)) {
                        /* It holds this layer's entries: it stays, as it was. */
                        if (chmodded)
                                fchmodat(*fd, name, st.st_mode & 07777, 0);
                        return 0;
                }
                if (errno != ENOENT)
                        return kiln_error_errno(err, KILN_ERR_IO, "remove '%s'", shown(path));
        }
        return 0;
}

/*
 * Empties the directory open at *fd, never following a symlink: everything, or with
 * `only_lower` what this layer did not create (directories of lower layers that this layer
 * lists, or that hold its entries, stay). *fd may be replaced by another fd of the same
 * directory. `path` names the removal in messages.
 */
static int empty_dir(struct extract *x, int *fd, bool only_lower, unsigned depth, const char *path,
                     struct kiln_error **err)
{
        _cleanup_(closedirp) DIR *d = NULL;
        char **subdirs = NULL;
        size_t n = 0, alloc = 0, i;
        struct stat self;
        int dfd, r = -1;

        if (fstat(*fd, &self) < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "remove '%s'", shown(path));
        dfd = fcntl(*fd, F_DUPFD_CLOEXEC, 3);
        if (dfd < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "remove '%s'", shown(path));
        if (lseek(dfd, 0, SEEK_SET) < 0 || !(d = fdopendir(dfd))) {
                close(dfd);
                return kiln_error_errno(err, KILN_ERR_IO, "remove '%s'", shown(path));
        }
        for (;;) {
                struct dirent *de;
                struct stat st;

                errno = 0;
                de = readdir(d);
                if (!de) {
                        if (errno) {
                                kiln_error_errno(err, KILN_ERR_IO, "remove '%s'", shown(path));
                                goto out;
                        }
                        break;
                }
                if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                        continue;
                if (fstatat(*fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
                        if (errno == ENOENT)
                                continue;
                        kiln_error_errno(err, KILN_ERR_IO, "remove '%s'", shown(path));
                        goto out;
                }
                if (only_lower && (inode_flags(&x->inodes, &st) & INODE_CREATED))
                        continue;
                if (S_ISDIR(st.st_mode)) {
                        XGROW(subdirs, n + 1, alloc);
                        subdirs[n++] = xstrdup(de->d_name);
                } else if (unlinkat(*fd, de->d_name, 0) < 0 && errno != ENOENT) {
                        kiln_error_errno(err, KILN_ERR_IO, "remove '%s'", shown(path));
                        goto out;
                }
        }
        d = (closedir(d), NULL);
        for (i = 0; i < n; i++)
                if (remove_subdir(x, fd, &self, subdirs[i], only_lower, depth, path, err) < 0)
                        goto out;
        r = 0;
out:
        for (i = 0; i < n; i++)
                free(subdirs[i]);
        free(subdirs);
        return r;
}

/* Removes `name` in `dirfd` whatever it is, a directory with everything in it. */
static int remove_entry(struct extract *x, int dirfd, const char *name, const char *path,
                        struct kiln_error **err)
{
        _cleanup_close_ int fd = fcntl(dirfd, F_DUPFD_CLOEXEC, 3);
        struct stat self;

        if (fd < 0 || fstat(fd, &self) < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "remove '%s'", shown(path));
        return remove_subdir(x, &fd, &self, name, false, 0, path, err);
}

int layer_remove_tree(int dirfd, const char *name, struct kiln_error **err)
{
        struct extract x = { .rootfd = -1, .uid = geteuid(), .gid = getegid() };

        return remove_entry(&x, dirfd, name, name, err);
}

/* ------------------------------------------------------------------------------------ */
/* Parents                                                                                */
/* ------------------------------------------------------------------------------------ */

static int record_owner(struct extract *x, int fd, uid_t uid, gid_t gid, bool existed,
                        const char *path, struct kiln_error **err);

/* Makes one missing parent directory (0755, root's) and returns it open. */
static int make_parent(struct extract *x, int dirfd, const char *name, const char *path,
                       struct kiln_error **err)
{
        _cleanup_close_ int fd = -1;
        struct stat st;

        if (mkdirat(dirfd, name, 0700) < 0) {
                if (errno == EEXIST && fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
                    S_ISLNK(st.st_mode))
                        return kiln_error_new(err, KILN_ERR_INVALID,
                                              "'%s' is a symlink to a missing directory", path);
                return kiln_error_errno(err, KILN_ERR_IO, "mkdir '%s'", path);
        }
        fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0 || fstat(fd, &st) < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "open '%s'", path);
        inode_mark(&x->inodes, &st, INODE_CREATED);
        if (fchmod(fd, 0755) < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "chmod '%s'", path);
        if (x->record_owner && record_owner(x, fd, 0, 0, false, path, err) < 0)
                return -1;
        return TAKE_FD(fd);
}

/*
 * Opens the directory `parent` (a cleaned path, "" for the root) resolved inside the root,
 * making what is missing one component at a time.
 */
static int open_parent(struct extract *x, const char *parent, struct kiln_error **err)
{
        _cleanup_close_ int cur = -1;
        bool made = false;
        const char *p;
        int fd;

        fd = kiln_openat2_in_root(x->rootfd, parent, O_PATH | O_DIRECTORY, 0, 0);
        if (fd >= 0)
                return fd;
        if (errno != ENOENT)
                return kiln_error_errno(err, KILN_ERR_IO, "open '%s'", shown(parent));
        cur = kiln_openat2_in_root(x->rootfd, "", O_PATH | O_DIRECTORY, 0, 0);
        if (cur < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "open '.'");
        for (p = parent; *p;) {
                const char *end = strchrnul(p, '/');
                _cleanup_free_ char *name = xstrndup(p, (size_t) (end - p));
                _cleanup_free_ char *prefix = xstrndup(parent, (size_t) (end - parent));
                int next = -1;

                if (!made) {
                        next = kiln_openat2_in_root(x->rootfd, prefix, O_PATH | O_DIRECTORY, 0, 0);
                        if (next < 0 && errno != ENOENT)
                                return kiln_error_errno(err, KILN_ERR_IO, "open '%s'", prefix);
                }
                if (next < 0) {
                        next = make_parent(x, cur, name, prefix, err);
                        if (next < 0)
                                return -1;
                        made = true;
                }
                close(cur);
                cur = next;
                p = *end ? end + 1 : end;
        }
        return TAKE_FD(cur);
}

/* ------------------------------------------------------------------------------------ */
/* Metadata                                                                               */
/* ------------------------------------------------------------------------------------ */

static int record_owner(struct extract *x, int fd, uid_t uid, gid_t gid, bool existed,
                        const char *path, struct kiln_error **err)
{
        char value[32];
        int len;

        if (uid == x->uid && gid == x->gid) {
                /* A kept directory may carry a lower layer's record. */
                if (existed && fremovexattr(fd, LAYER_OWNER_XATTR) < 0 && errno != ENODATA &&
                    errno != ENOTSUP)
                        return kiln_error_errno(err, KILN_ERR_IO, "record owner of '%s'",
                                                shown(path));
                return 0;
        }
        len = snprintf(value, sizeof(value), "%u:%u", (unsigned) uid, (unsigned) gid);
        if (fsetxattr(fd, LAYER_OWNER_XATTR, value, (size_t) len, 0) < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "record owner %s of '%s'", value,
                                        shown(path));
        return 0;
}

static int entry_ids(struct archive_entry *e, const char *path, uid_t *ret_uid, gid_t *ret_gid,
                     struct kiln_error **err)
{
        la_int64_t uid = archive_entry_uid(e), gid = archive_entry_gid(e);

        /* (uid_t) -1 means "leave unchanged" to chown: never a real id. */
        if (uid < 0 || uid >= (la_int64_t) UINT32_MAX || gid < 0 || gid >= (la_int64_t) UINT32_MAX)
                return kiln_error_new(err, KILN_ERR_PARSE, "'%s': owner %lld:%lld out of range",
                                      shown(path), (long long) uid, (long long) gid);
        *ret_uid = (uid_t) uid;
        *ret_gid = (gid_t) gid;
        return 0;
}

static int apply_owner(struct extract *x, struct archive_entry *e, const struct target *t,
                       struct kiln_error **err)
{
        uid_t uid = 0;
        gid_t gid = 0;
        struct stat st;

        if (entry_ids(e, t->path, &uid, &gid, err) < 0)
                return -1;
        if (x->ignore_owner)
                return 0;
        if (x->record_owner) {
                /* user.* xattrs exist only on regular files and directories. */
                if (t->fd < 0)
                        return 0;
                return record_owner(x, t->fd, uid, gid, t->existed, t->path, err);
        }
        if (t->fd >= 0) {
                if (fstat(t->fd, &st) == 0 && st.st_uid == uid && st.st_gid == gid)
                        return 0;
                if (fchown(t->fd, uid, gid) == 0)
                        return 0;
        } else if (fchownat(t->parentfd, t->name, uid, gid, AT_SYMLINK_NOFOLLOW) == 0) {
                return 0;
        }
        return kiln_error_errno(err, KILN_ERR_IO, "chown '%s' to %u:%u", shown(t->path),
                                (unsigned) uid, (unsigned) gid);
}

static int apply_mode(struct archive_entry *e, const struct target *t, struct kiln_error **err)
{
        mode_t mode = archive_entry_perm(e) & 07777;
        int r;

        if (t->type == AE_IFLNK)
                return 0;
        if (t->fd >= 0)
                r = fchmod(t->fd, mode);
        else
                /* A fifo or device node this layer just made: not a symlink. */
                r = fchmodat(t->parentfd, t->name, mode, 0);
        if (r < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "chmod '%s'", shown(t->path));
        return 0;
}

static bool ignored_xattr(const char *name)
{
        /* overlayfs' own attributes would turn the tree into whiteouts or redirects when it is
         * used as a lower directory; the owner record is kiln's, never the layer's. */
        return starts_with(name, "trusted.overlay.") || starts_with(name, "user.overlay.") ||
               strcmp(name, LAYER_OWNER_XATTR) == 0;
}

static void apply_xattrs(struct extract *x, struct archive_entry *e, const struct target *t)
{
        const char *name;
        const void *value;
        size_t size;

        if (archive_entry_xattr_reset(e) == 0)
                return;
        while (archive_entry_xattr_next(e, &name, &value, &size) == ARCHIVE_OK) {
                int r;

                if (!name || ignored_xattr(name))
                        continue;
                if (t->fd >= 0) {
                        r = fsetxattr(t->fd, name, value, size, 0);
                } else {
                        _cleanup_free_ char *proc = NULL;

                        /* user.* is refused on symlinks (and special files) by the kernel. */
                        if (starts_with(name, "user."))
                                continue;
                        /* Through the parent's fd: the name itself is not followed. */
                        proc = xasprintf("/proc/self/fd/%d/%s", t->parentfd, t->name);
                        r = lsetxattr(proc, name, value, size, 0);
                }
                if (r < 0)
                        warn(x, "xattr '%s' of '%s' skipped: %s", name, shown(t->path),
                             strerror(errno));
        }
}

static bool entry_times(struct archive_entry *e, struct timespec ts[2])
{
        long nsec;

        if (!archive_entry_mtime_is_set(e))
                return false;
        nsec = archive_entry_mtime_nsec(e);
        ts[1].tv_sec = archive_entry_mtime(e);
        ts[1].tv_nsec = nsec >= 0 && nsec < 1000000000 ? nsec : 0;
        ts[0] = ts[1];
        if (archive_entry_atime_is_set(e)) {
                nsec = archive_entry_atime_nsec(e);
                ts[0].tv_sec = archive_entry_atime(e);
                ts[0].tv_nsec = nsec >= 0 && nsec < 1000000000 ? nsec : 0;
        }
        return true;
}

static int times_failed(struct extract *x, const char *path, struct kiln_error **err)
{
        if (errno == EINVAL || errno == EOVERFLOW || errno == ERANGE) {
                warn(x, "times of '%s' skipped: %s", shown(path), strerror(errno));
                return 0;
        }
        return kiln_error_errno(err, KILN_ERR_IO, "set times of '%s'", shown(path));
}

static int apply_times(struct extract *x, struct archive_entry *e, const struct target *t,
                       struct kiln_error **err)
{
        struct timespec ts[2];
        int r;

        if (!entry_times(e, ts))
                return 0;
        if (t->fd >= 0)
                r = futimens(t->fd, ts);
        else
                r = utimensat(t->parentfd, t->name, ts, AT_SYMLINK_NOFOLLOW);
        if (r < 0)
                return times_failed(x, t->path, err);
        return 0;
}

/* Owner, mode, xattrs and times of a just-made entry other than a directory. */
static int apply_metadata(struct extract *x, struct archive_entry *e, const struct target *t,
                          struct kiln_error **err)
{
        if (apply_owner(x, e, t, err) < 0 || apply_mode(e, t, err) < 0)
                return -1;
        apply_xattrs(x, e, t);
        return apply_times(x, e, t, err);
}

/* Remembers what this layer made: directories always, other entries when their directory
 * existed before (what a new directory holds is all this layer's). */
static void track(struct extract *x, const struct target *t, bool parent_new)
{
        struct stat st;
        int r;

        if (parent_new && t->type != AE_IFDIR)
                return;
        if (t->fd >= 0)
                r = fstat(t->fd, &st);
        else
                r = fstatat(t->parentfd, t->name, &st, AT_SYMLINK_NOFOLLOW);
        if (r == 0)
                inode_mark(&x->inodes, &st, INODE_CREATED);
}

/* ------------------------------------------------------------------------------------ */
/* Entries                                                                                */
/* ------------------------------------------------------------------------------------ */

/* Removes what is at the target, unless it is a directory and `keep_dir`. Returns whether a
 * directory was kept. */
static int clear_target(struct extract *x, const struct target *t, bool keep_dir,
                        struct kiln_error **err)
{
        struct stat st;

        if (fstatat(t->parentfd, t->name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
                if (errno == ENOENT)
                        return 0;
                return kiln_error_errno(err, KILN_ERR_IO, "stat '%s'", shown(t->path));
        }
        if (S_ISDIR(st.st_mode)) {
                if (keep_dir)
                        return 1;
                return remove_entry(x, t->parentfd, t->name, t->path, err);
        }
        if (unlinkat(t->parentfd, t->name, 0) < 0 && errno != ENOENT)
                return kiln_error_errno(err, KILN_ERR_IO, "remove '%s'", shown(t->path));
        return 0;
}

static int write_file(struct extract *x, struct target *t, struct kiln_error **err)
{
        _cleanup_close_ int fd = -1;
        ssize_t n;

        if (clear_target(x, t, false, err) < 0)
                return -1;
        fd = openat(t->parentfd, t->name,
                    O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC, 0600);
        if (fd < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "create '%s'", t->path);
        while ((n = read_chunk(x, t->path, err)) > 0) {
                if (kiln_write_all(fd, x->chunk, (size_t) n, NULL) < 0)
                        return kiln_error_errno(err, KILN_ERR_IO, "write '%s'", t->path);
                x->stats.bytes += (uint64_t) n;
        }
        if (n < 0)
                return -1;
        t->fd = TAKE_FD(fd);
        return 0;
}

static int make_dir(struct extract *x, struct archive_entry *e, struct target *t,
                    struct kiln_error **err)
{
        struct pending_dir *pd;
        struct stat st;
        int kept, fd;

        if (t->name[0]) {
                kept = clear_target(x, t, true, err);
                if (kept < 0)
                        return -1;
                if (!kept && mkdirat(t->parentfd, t->name, 0700) < 0)
                        return kiln_error_errno(err, KILN_ERR_IO, "mkdir '%s'", t->path);
                fd = openat(t->parentfd, t->name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        } else {
                kept = 1;
                fd = openat(x->rootfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        }
        if (fd < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "open '%s'", shown(t->path));
        t->fd = fd;
        if (fstat(fd, &st) < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "stat '%s'", shown(t->path));
        t->existed = kept;
        if (kept && !(inode_flags(&x->inodes, &st) & INODE_CREATED))
                inode_mark(&x->inodes, &st, INODE_TOUCHED);
        XGROW(x->dirs, x->n_dirs + 1, x->alloc_dirs);
        pd = &x->dirs[x->n_dirs++];
        *pd = (struct pending_dir){
                .path = xstrdup(t->path),
                .dev = (uint64_t) st.st_dev,
                .ino = (uint64_t) st.st_ino,
                .mode = archive_entry_perm(e) & 07777,
        };
        pd->has_times = entry_times(e, pd->times);
        if (apply_owner(x, e, t, err) < 0)
                return -1;
        apply_xattrs(x, e, t);
        return kept;
}

static int make_hardlink(struct extract *x, struct archive_entry *e, struct target *t,
                         struct kiln_error **err)
{
        const char *raw = archive_entry_hardlink(e), *tname;
        _cleanup_close_ int tparent = -1;
        struct stat tst, st;

        if (strlen(raw) > x->max_path)
                return kiln_error_new(err, KILN_ERR_LIMIT, "more than %zu bytes in a path",
                                      x->max_path);
        clean_path(raw, &x->link);
        tname = split_path(&x->link, &x->link_parent);
        if (!tname[0])
                return kiln_error_new(err, KILN_ERR_INVALID, "hardlink '%s' to the root", t->path);
        if (skipped(x, x->link.buf, false)) {
                warn(x, "hardlink '%s' to kept '%s' skipped", t->path, x->link.buf);
                return 0;
        }
        tparent = kiln_openat2_in_root(x->rootfd, x->link_parent.buf, O_PATH | O_DIRECTORY, 0, 0);
        if (tparent < 0 || fstatat(tparent, tname, &tst, AT_SYMLINK_NOFOLLOW) < 0) {
                if (errno == ENOENT || errno == ENOTDIR)
                        return kiln_error_new(err, KILN_ERR_NOTFOUND,
                                              "hardlink '%s' to missing '%s'", t->path,
                                              x->link.buf);
                return kiln_error_errno(err, KILN_ERR_IO, "hardlink '%s' to '%s'", t->path,
                                        x->link.buf);
        }
        if (S_ISDIR(tst.st_mode))
                return kiln_error_new(err, KILN_ERR_INVALID, "hardlink '%s' to directory '%s'",
                                      t->path, x->link.buf);
        if (fstatat(t->parentfd, t->name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
            st.st_dev == tst.st_dev && st.st_ino == tst.st_ino)
                return 0; /* already that file (or the very same path) */
        if (clear_target(x, t, false, err) < 0)
                return -1;
        if (linkat(tparent, tname, t->parentfd, t->name, 0) < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "link '%s' to '%s'", t->path,
                                        x->link.buf);
        return 0;
}

static int make_special(struct extract *x, struct archive_entry *e, struct target *t,
                        struct kiln_error **err)
{
        const char *kind = t->type == AE_IFCHR ? "character device" : "block device";
        mode_t type = t->type == AE_IFIFO ? S_IFIFO : t->type == AE_IFCHR ? S_IFCHR : S_IFBLK;
        dev_t dev = t->type == AE_IFIFO ? 0 : archive_entry_rdev(e);

        if (clear_target(x, t, false, err) < 0)
                return -1;
        if (mknodat(t->parentfd, t->name, type | 0600, dev) < 0) {
                if (errno == EPERM && t->type != AE_IFIFO) {
                        warn(x, "%s '%s' skipped: %s", kind, t->path, strerror(errno));
                        return 1;
                }
                return kiln_error_errno(err, KILN_ERR_IO, "mknod '%s'", t->path);
        }
        return 0;
}

static int make_symlink(struct extract *x, struct archive_entry *e, struct target *t,
                        struct kiln_error **err)
{
        const char *target = archive_entry_symlink(e);

        if (!target)
                return kiln_error_new(err, KILN_ERR_PARSE, "symlink '%s' without a target",
                                      t->path);
        if (strlen(target) > x->max_path)
                return kiln_error_new(err, KILN_ERR_LIMIT, "more than %zu bytes in a path",
                                      x->max_path);
        if (clear_target(x, t, false, err) < 0)
                return -1;
        if (symlinkat(target, t->parentfd, t->name) < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "symlink '%s'", t->path);
        return 0;
}

/* "DIR/.wh.NAME": removes what lower layers put at DIR/NAME. */
static int whiteout(struct extract *x, const char *parent, const char *name, const char *path,
                    struct kiln_error **err)
{
        _cleanup_close_ int dirfd = -1;
        struct stat st;
        unsigned flags;
        bool opaque = strcmp(name, WHITEOUT_OPAQUE) == 0;

        x->stats.whiteouts++;
        /* An opaque marker lists the directory; a whiteout only needs it as a dirfd. */
        dirfd = kiln_openat2_in_root(x->rootfd, parent, (opaque ? O_RDONLY : O_PATH) | O_DIRECTORY, 0,
                             RESOLVE_NO_SYMLINKS);
        if (dirfd < 0) {
                if (errno == ENOENT || errno == ENOTDIR)
                        return 0; /* nothing there to hide */
                if (errno == ELOOP) {
                        warn(x, "whiteout '%s' under a symlink ignored", path);
                        return 0;
                }
                return kiln_error_errno(err, KILN_ERR_IO, "open '%s'", shown(parent));
        }
        if (fstat(dirfd, &st) < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "stat '%s'", shown(parent));
        if (inode_flags(&x->inodes, &st) & INODE_CREATED)
                return 0; /* a directory of this layer: no lower layer wrote there */
        if (opaque)
                return empty_dir(x, &dirfd, true, 0, path, err);
        name += strlen(WHITEOUT_PREFIX);
        if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
                if (errno == ENOENT)
                        return 0;
                return kiln_error_errno(err, KILN_ERR_IO, "stat '%s'", path);
        }
        flags = inode_flags(&x->inodes, &st);
        if (flags & INODE_CREATED)
                return 0; /* this layer's own entry: whiteouts hide lower layers only */
        if (S_ISDIR(st.st_mode)) {
                struct stat self;

                if (fstat(dirfd, &self) < 0)
                        return kiln_error_errno(err, KILN_ERR_IO, "stat '%s'", shown(parent));
                return remove_subdir(x, &dirfd, &self, name, (flags & INODE_TOUCHED) != 0, 0, path,
                                     err);
        }
        if (unlinkat(dirfd, name, 0) < 0 && errno != ENOENT)
                return kiln_error_errno(err, KILN_ERR_IO, "remove '%s'", path);
        return 0;
}

static int extract_entry(struct extract *x, struct archive_entry *e, bool warned,
                         struct kiln_error **err)
{
        const char *raw = archive_entry_pathname(e), *name, *p;
        struct target t = { .fd = -1 };
        _cleanup_close_ int parentfd = -1;
        bool parent_new = false;
        struct stat st;
        int r;

        if (!raw) {
                const char *msg = warned ? archive_error_string(x->a) : NULL;
                return kiln_error_new(err, KILN_ERR_PARSE, "entry without a path%s%s",
                                      msg ? ": " : "", msg ? msg : "");
        }
        if (strlen(raw) > x->max_path)
                return kiln_error_new(err, KILN_ERR_LIMIT, "more than %zu bytes in a path",
                                      x->max_path);
        clean_path(raw, &x->path);
        name = split_path(&x->path, &x->parent);
        for (p = x->parent.buf; *p; p = strchrnul(p, '/'), p += *p == '/')
                if (starts_with(p, WHITEOUT_PREFIX))
                        return kiln_error_new(err, KILN_ERR_PARSE,
                                              "'%s': a whiteout name used as a directory",
                                              x->path.buf);
        if (starts_with(name, WHITEOUT_PREFIX)) {
                const char *hidden = name + strlen(WHITEOUT_PREFIX);

                if (strcmp(name, WHITEOUT_OPAQUE) != 0 && starts_with(name, WHITEOUT_META_PREFIX))
                        return 0; /* aufs metadata (.wh..wh.plnk, ...) */
                if (strcmp(name, WHITEOUT_OPAQUE) != 0 &&
                    (!hidden[0] || strcmp(hidden, ".") == 0 || strcmp(hidden, "..") == 0))
                        return kiln_error_new(err, KILN_ERR_PARSE, "invalid whiteout '%s'",
                                              x->path.buf);
                if (x->opts && x->opts->n_skip) {
                        _cleanup_free_ char *hidden_path =
                                strcmp(name, WHITEOUT_OPAQUE) == 0 ? xstrdup(x->parent.buf)
                                : x->parent.buf[0] ? xasprintf("%s/%s", x->parent.buf, hidden)
                                                   : xstrdup(hidden);

                        if (skipped(x, hidden_path, true)) {
                                if (!skipped(x, hidden_path, false))
                                        warn(x, "whiteout '%s' over a kept path ignored", x->path.buf);
                                return 0;
                        }
                }
                return whiteout(x, x->parent.buf, name, x->path.buf, err);
        }
        if (skipped(x, x->path.buf, false))
                return 0;

        t.type = archive_entry_filetype(e);
        t.path = x->path.buf;
        t.name = name;
        if (archive_entry_hardlink(e))
                t.type = AE_IFREG;
        if (t.type != AE_IFDIR && skipped(x, x->path.buf, true)) {
                /* a file or link in place of a kept path's directory would remove what is kept */
                if (!skipped(x, x->path.buf, false))
                        warn(x, "'%s' over a kept path skipped", x->path.buf);
                return 0;
        }
        if (t.type != AE_IFREG && t.type != AE_IFDIR && t.type != AE_IFLNK && t.type != AE_IFIFO &&
            t.type != AE_IFCHR && t.type != AE_IFBLK) {
                if (warned)
                        return kiln_error_new(err, KILN_ERR_PARSE, "'%s': %s", shown(t.path),
                                              archive_error_string(x->a));
                warn(x, "'%s' of unsupported type %o skipped", shown(t.path), (unsigned) t.type);
                return 0;
        }
        if (!name[0] && t.type != AE_IFDIR)
                return kiln_error_new(err, KILN_ERR_INVALID, "entry '%s' would replace the root",
                                      raw);

        parentfd = open_parent(x, x->parent.buf, err);
        if (parentfd < 0)
                return -1;
        t.parentfd = parentfd;
        if (fstat(parentfd, &st) < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "stat '%s'", shown(x->parent.buf));
        parent_new = (inode_flags(&x->inodes, &st) & INODE_CREATED) != 0;

        if (archive_entry_hardlink(e)) {
                r = make_hardlink(x, e, &t, err);
                if (r == 0)
                        track(x, &t, parent_new);
                return r;
        }
        if (t.type == AE_IFDIR) {
                r = make_dir(x, e, &t, err);
                if (r == 0)
                        track(x, &t, parent_new);
        } else {
                if (t.type == AE_IFREG)
                        r = write_file(x, &t, err);
                else if (t.type == AE_IFLNK)
                        r = make_symlink(x, e, &t, err);
                else
                        r = make_special(x, e, &t, err);
                if (r == 0) {
                        track(x, &t, parent_new);
                        r = apply_metadata(x, e, &t, err);
                }
        }
        if (t.fd >= 0)
                close(t.fd);
        return r < 0 ? -1 : 0;
}

/* Directory modes and times, once their contents are written: the last entries first. */
static int apply_pending_dirs(struct extract *x, struct kiln_error **err)
{
        size_t i;

        for (i = x->n_dirs; i-- > 0;) {
                const struct pending_dir *pd = &x->dirs[i];
                _cleanup_close_ int fd = -1;
                struct stat st;

                if (pd->path[0])
                        fd = kiln_openat2_in_root(x->rootfd, pd->path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW, 0,
                                          0);
                else
                        fd = openat(x->rootfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (fd < 0) {
                        /* Removed or replaced by a later entry of the layer. */
                        if (errno == ENOENT || errno == ENOTDIR || errno == ELOOP)
                                continue;
                        return kiln_error_errno(err, KILN_ERR_IO, "open '%s'", shown(pd->path));
                }
                if (fstat(fd, &st) < 0)
                        return kiln_error_errno(err, KILN_ERR_IO, "stat '%s'", shown(pd->path));
                if ((uint64_t) st.st_dev != pd->dev || (uint64_t) st.st_ino != pd->ino ||
                    (inode_flags(&x->inodes, &st) & INODE_APPLIED))
                        continue; /* another directory now, or a later entry already won */
                inode_mark(&x->inodes, &st, INODE_APPLIED);
                if (fchmod(fd, pd->mode) < 0)
                        return kiln_error_errno(err, KILN_ERR_IO, "chmod '%s'", shown(pd->path));
                if (pd->has_times && futimens(fd, pd->times) < 0 &&
                    times_failed(x, pd->path, err) < 0)
                        return -1;
        }
        return 0;
}

/* Only filters built into libarchive: one that would run an external program is left out. */
static void support_filter(struct archive *a, int (*support)(struct archive *))
{
        struct archive *probe = archive_read_new();

        if (!probe)
                abort();
        if (support(probe) == ARCHIVE_OK)
                support(a);
        archive_read_free(probe);
}

static int extract_all(struct extract *x, int blob_fd, struct kiln_error **err)
{
        struct archive_entry *e;
        int r;

        x->a = archive_read_new();
        if (!x->a)
                abort();
        support_filter(x->a, archive_read_support_filter_gzip);
        support_filter(x->a, archive_read_support_filter_zstd);
        /* Not layer formats, but what ADD unpacks besides (BuildKit's DecompressStream). */
        support_filter(x->a, archive_read_support_filter_bzip2);
        support_filter(x->a, archive_read_support_filter_xz);
        archive_read_support_filter_none(x->a);
        archive_read_support_format_tar(x->a);
        if (archive_read_open_fd(x->a, blob_fd, CHUNK_SIZE) != ARCHIVE_OK)
                return archive_fail(x, "read", err);
        for (;;) {
                r = archive_read_next_header(x->a, &e);
                if (r == ARCHIVE_EOF)
                        break;
                if (r < ARCHIVE_WARN)
                        return archive_fail(x, "read", err);
                if (check_bytes(x, err) < 0)
                        return -1;
                if (x->stats.entries >= x->max_entries)
                        return kiln_error_new(err, KILN_ERR_LIMIT, "more than %" PRIu64 " entries",
                                              x->max_entries);
                x->stats.entries++;
                /* ARCHIVE_WARN: e.g. a name not convertible to the locale, kept as bytes. */
                if (extract_entry(x, e, r == ARCHIVE_WARN, err) < 0 || drain(x, err) < 0)
                        return -1;
        }
        return apply_pending_dirs(x, err);
}

int layer_extract(int rootfd, int blob_fd, const char *what, const struct layer_extract_opts *opts,
                  struct layer_extract_stats *ret, struct kiln_error **err)
{
        _cleanup_(archive_read_freep) struct archive *a = NULL;
        _cleanup_close_ int root = -1;
        struct extract x = {
                .what = what ? what : "?",
                .opts = opts,
                .max_bytes = opts && opts->max_bytes ? opts->max_bytes : DEFAULT_MAX_BYTES,
                .max_entries = opts && opts->max_entries ? opts->max_entries : DEFAULT_MAX_ENTRIES,
                .max_path = opts && opts->max_path ? opts->max_path : DEFAULT_MAX_PATH,
                .record_owner = opts && opts->record_owner,
                .ignore_owner = opts && opts->ignore_owner,
                .uid = geteuid(),
                .gid = getegid(),
                .path = KILN_BUF_INIT,
                .parent = KILN_BUF_INIT,
                .link = KILN_BUF_INIT,
                .link_parent = KILN_BUF_INIT,
        };
        size_t i;
        int r;

        root = kiln_openat2_in_root(rootfd, "", O_PATH | O_DIRECTORY, 0, 0);
        if (root < 0) {
                if (errno == ENOSYS)
                        kiln_error_errno(err, KILN_ERR_UNSUPPORTED,
                                         "openat2 is not available (Linux 5.6 or newer is needed)");
                else
                        kiln_error_errno(err, KILN_ERR_IO, "open the root");
                return kiln_error_wrap(err, "layer '%s'", x.what);
        }
        x.rootfd = root;
        x.chunk = xmalloc(CHUNK_SIZE);
        r = extract_all(&x, blob_fd, err);
        a = x.a;
        free(x.chunk);
        kiln_buf_release(&x.path);
        kiln_buf_release(&x.parent);
        kiln_buf_release(&x.link);
        kiln_buf_release(&x.link_parent);
        free(x.inodes.slots);
        for (i = 0; i < x.n_dirs; i++)
                free(x.dirs[i].path);
        free(x.dirs);
        if (r < 0)
                return kiln_error_wrap(err, "layer '%s'", x.what);
        if (ret)
                *ret = x.stats;
        return 0;
}
