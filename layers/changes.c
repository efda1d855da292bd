/*
 * What a layer holds: every entry of a tree, the changes an overlayfs upper directory records,
 * or the difference between a tree and a snapshot taken of it earlier.
 *
 * Walks are dirfd-relative and never follow a symlink: each directory is opened from its parent
 * with O_NOFOLLOW and checked to be the directory that was stat'ed. Only the deepest
 * OPEN_WINDOW directories and every ANCHOR_EVERY-th level keep a descriptor, so a tree nested
 * MAX_DEPTH deep needs about 70 descriptors, not 4096; a closed level is reopened from the
 * nearest open ancestor (and checked again) when the walk comes back to it.
 *
 * Extended attributes are read with llistxattr/lgetxattr on "/proc/self/fd/<dirfd>/<name>":
 * the directory is our descriptor and the "l" calls do not follow the last component, so this
 * works for every file type (symlinks, FIFOs and devices included) without opening the file.
 * Opening would block on a FIFO, trigger a device's open, or fail on a mode 000 file; f*xattr on
 * an O_PATH descriptor fails with EBADF. It needs /proc, as the rest of kiln's RUN does.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "builder/common/fd-util.h"
#include "builder/common/xalloc.h"
#include "layers/layers.h"

#define MAX_DEPTH    4096  /* directory levels below the root */
#define OPEN_WINDOW  32    /* the deepest levels keep their descriptors open */
#define ANCHOR_EVERY 128   /* so does every 128th level: a reopen walks at most 127 levels */
#define XATTR_MAX    65536 /* XATTR_LIST_MAX and XATTR_SIZE_MAX */
#define XATTR_SMALL  256   /* the first try: the kernel allocates what it is offered */

/* Longest path a walk can produce: MAX_DEPTH directories and a file, NAME_MAX bytes each. */
#define MAX_PATH_LEN ((size_t) (MAX_DEPTH + 1) * (NAME_MAX + 1))
#define MAX_RECORDS  ((size_t) 1 << 27)

#define FNV_OFFSET UINT64_C(0xcbf29ce484222325)
#define FNV_PRIME  UINT64_C(0x100000001b3)

static uint64_t fnv1a(uint64_t h, const void *data, size_t len)
{
        const unsigned char *p = data;
        size_t i;

        for (i = 0; i < len; i++) {
                h ^= p[i];
                h *= FNV_PRIME;
        }
        return h;
}

/* ---- change lists ---- */

static void entry_release(struct layer_entry *e)
{
        size_t i;

        free(e->path);
        free(e->link_target);
        for (i = 0; i < e->n_xattrs; i++) {
                free(e->xattrs[i].name);
                free(e->xattrs[i].value);
        }
        free(e->xattrs);
        memset(e, 0, sizeof(*e));
}

void layer_changes_release(struct layer_changes *c)
{
        size_t i;

        if (!c)
                return;
        for (i = 0; i < c->n; i++)
                entry_release(&c->entries[i]);
        free(c->entries);
        /* A zero-initialised list holds fd 0, which is not its own: the directories these lists
         * own are duplicated with F_DUPFD_CLOEXEC from 3, so 0-2 are never closed here. */
        if (c->dirfd > STDERR_FILENO)
                close(c->dirfd);
        c->dirfd = -1;
        c->entries = NULL;
        c->n = 0;
        c->alloc = 0;
}

static struct layer_entry *add_entry(struct layer_changes *c, const char *path, size_t path_len,
                                     enum layer_change_kind kind)
{
        struct layer_entry *e;

        XGROW(c->entries, c->n + 1, c->alloc);
        e = &c->entries[c->n++];
        memset(e, 0, sizeof(*e));
        e->path = xmemdup(path, path_len + 1);
        e->path[path_len] = '\0';
        e->kind = kind;
        return e;
}

static int entry_cmp(const void *a, const void *b)
{
        const struct layer_entry *x = a, *y = b;

        return strcmp(x->path, y->path);
}

/* Sorts the list, takes a descriptor of the directory and hands the list to *ret. */
static int changes_finish(struct layer_changes *c, int dirfd, struct layer_changes *ret,
                          struct kiln_error **err)
{
        c->dirfd = fcntl(dirfd, F_DUPFD_CLOEXEC, 3);
        if (c->dirfd < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "duplicate the directory descriptor");
        if (c->n > 1)
                qsort(c->entries, c->n, sizeof(*c->entries), entry_cmp);
        *ret = *c;
        *c = (struct layer_changes) LAYER_CHANGES_INIT;
        return 0;
}

/* ---- the walker ---- */

struct walk_node {
        int dirfd;        /* the directory holding the entry */
        const char *name; /* in dirfd */
        const char *path; /* relative to the root, NUL-terminated */
        size_t path_len;
        struct stat st;         /* lstat */
        uint64_t parent_cookie; /* what the visitor noted about the parent; 0 for the root */
};

struct walker;

/* Called for every entry below the root; *ret_descend (false on entry) asks to walk into a
 * directory, whose children get *ret_cookie (0 on entry) as their parent_cookie. */
typedef int (*walk_visit_fn)(struct walker *w, const struct walk_node *node, bool *ret_descend,
                             uint64_t *ret_cookie, struct kiln_error **err);

struct subdir {
        size_t name_off; /* in the level's names */
        dev_t dev;
        ino_t ino;
        uint64_t cookie;
};

struct level {
        int fd; /* -1 while closed to bound the descriptors in use */
        dev_t dev;
        ino_t ino;
        size_t name_off; /* the directory's own name in walker.path */
        size_t path_len;
        uint64_t cookie;
        char *names; /* subdirectories to walk into, NUL-separated */
        size_t names_len, names_alloc;
        struct subdir *subdirs;
        size_t n_subdirs, subdirs_alloc, next;
};

struct xattr_ref {
        const char *name; /* in walker.xlist */
        size_t value_off; /* in walker.xvalues */
        size_t len;
};

/* An entry's metadata as a layer records it. */
struct node_info {
        struct stat st;   /* with the owner from user.kiln.owner */
        const char *link; /* a symlink's target (in walker.link), else NULL */
        size_t link_len;
        size_t n_xattrs;    /* walker.xattrs[0..n_xattrs), sorted by name */
        char ovl_opaque;    /* the overlay.opaque value ('y': opaque, 'x': holds xwhiteouts) */
        bool ovl_whiteout;  /* overlay.whiteout: an xattr whiteout (when its parent allows) */
        bool ovl_whiteouts; /* overlay.whiteouts: Linux 6.7's mark of a dir with xwhiteouts */
        bool ovl_metacopy;
        bool ovl_redirect;
};

struct walker {
        walk_visit_fn visit;
        void *ctx;
        const char *ovl_prefix;     /* "trusted.overlay." or "user.overlay." in an upper dir */
        const char *const *exclude; /* paths neither visited nor walked into */
        size_t n_exclude;
        struct level *levels;
        size_t depth; /* levels in use; levels[0] is the root */
        size_t levels_alloc, levels_ready;
        char *path;
        size_t path_alloc;
        char *names; /* the names of the directory being read */
        size_t names_len, names_alloc;
        char *xlist;
        char *xvalues;
        size_t xvalues_len, xvalues_alloc;
        struct xattr_ref *xattrs;
        size_t xattrs_alloc;
        char link[PATH_MAX + 1];
};

static const char *display_path(const struct walker *w, size_t len)
{
        return len ? w->path : ".";
}

static void walker_release(struct walker *w)
{
        size_t i;

        for (i = 0; i < w->levels_ready; i++) {
                if (i > 0 && w->levels[i].fd >= 0)
                        close(w->levels[i].fd);
                free(w->levels[i].names);
                free(w->levels[i].subdirs);
        }
        free(w->levels);
        free(w->path);
        free(w->names);
        free(w->xlist);
        free(w->xvalues);
        free(w->xattrs);
}

static void close_level(struct walker *w, size_t k)
{
        if (k == 0 || w->levels[k].fd < 0)
                return;
        close(w->levels[k].fd);
        w->levels[k].fd = -1;
}

/* Opens levels[k] from its parent, which is open, and checks it is the directory stat'ed
 * before: a directory swapped for another (or for a symlink) is an error, never followed. */
static int open_level(struct walker *w, size_t k, const char *name, struct kiln_error **err)
{
        struct level *l = &w->levels[k];
        struct stat st;
        int fd;

        fd = openat(w->levels[k - 1].fd, name,
                    O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "open '%.*s'", (int) l->path_len,
                                        w->path);
        if (fstat(fd, &st) < 0) {
                kiln_error_errno(err, KILN_ERR_IO, "stat '%.*s'", (int) l->path_len, w->path);
                close(fd);
                return -1;
        }
        if (st.st_dev != l->dev || st.st_ino != l->ino) {
                close(fd);
                return kiln_error_new(err, KILN_ERR_IO, "'%.*s' was replaced during the walk",
                                      (int) l->path_len, w->path);
        }
        l->fd = fd;
        if (k > OPEN_WINDOW && (k - OPEN_WINDOW) % ANCHOR_EVERY != 0)
                close_level(w, k - OPEN_WINDOW);
        return 0;
}

/* Reopens levels[k] (and the closed levels above it) from the nearest open ancestor. */
static int ensure_open(struct walker *w, size_t k, struct kiln_error **err)
{
        char name[NAME_MAX + 1];
        size_t j = k, i;

        while (w->levels[j].fd < 0)
                j--;
        for (i = j + 1; i <= k; i++) {
                const struct level *l = &w->levels[i];
                size_t len = l->path_len - l->name_off;

                memcpy(name, w->path + l->name_off, len);
                name[len] = '\0';
                if (open_level(w, i, name, err) < 0)
                        return -1;
        }
        return 0;
}

static int push_level(struct walker *w, const struct subdir *s, const char *name,
                      struct kiln_error **err)
{
        size_t k = w->depth, name_len = strlen(name), parent_len = w->levels[k - 1].path_len;
        struct level *l;

        if (k > MAX_DEPTH)
                return kiln_error_new(err, KILN_ERR_LIMIT,
                                      "'%s/%s': directories nested deeper than %d levels", w->path,
                                      name, MAX_DEPTH);
        if (ensure_open(w, k - 1, err) < 0)
                return -1;
        if (k == w->levels_ready) {
                XGROW(w->levels, k + 1, w->levels_alloc);
                memset(&w->levels[k], 0, sizeof(w->levels[k]));
                w->levels[k].fd = -1;
                w->levels_ready++;
        }
        l = &w->levels[k];
        XGROW(w->path, parent_len + name_len + 2, w->path_alloc);
        l->name_off = parent_len ? parent_len + 1 : 0;
        if (parent_len)
                w->path[parent_len] = '/';
        memcpy(w->path + l->name_off, name, name_len + 1);
        l->path_len = l->name_off + name_len;
        l->dev = s->dev;
        l->ino = s->ino;
        l->cookie = s->cookie;
        l->names_len = 0;
        l->n_subdirs = 0;
        l->next = 0;
        w->depth = k + 1;
        return open_level(w, k, name, err);
}

static void pop_level(struct walker *w)
{
        size_t k = w->depth - 1;

        close_level(w, k);
        w->depth = k;
        if (k > 0)
                w->path[w->levels[k - 1].path_len] = '\0';
}

static bool excluded(const struct walker *w, const char *path, size_t len)
{
        size_t i;

        for (i = 0; i < w->n_exclude; i++)
                if (strlen(w->exclude[i]) == len && memcmp(w->exclude[i], path, len) == 0)
                        return true;
        return false;
}

static int visit_one(struct walker *w, const char *name, struct kiln_error **err)
{
        size_t k = w->depth - 1, base = w->levels[k].path_len, name_len = strlen(name), off;
        struct walk_node node = { 0 };
        uint64_t cookie = 0;
        bool descend = false;
        struct level *l;
        int r;

        XGROW(w->path, base + name_len + 2, w->path_alloc);
        off = base ? base + 1 : 0;
        if (base)
                w->path[base] = '/';
        memcpy(w->path + off, name, name_len + 1);
        node.dirfd = w->levels[k].fd;
        node.name = name;
        node.path = w->path;
        node.path_len = off + name_len;
        node.parent_cookie = w->levels[k].cookie;
        if (excluded(w, node.path, node.path_len)) {
                w->path[base] = '\0';
                return 0;
        }
        if (fstatat(node.dirfd, name, &node.st, AT_SYMLINK_NOFOLLOW) < 0)
                r = kiln_error_errno(err, KILN_ERR_IO, "stat '%s'", w->path);
        else
                r = w->visit(w, &node, &descend, &cookie, err);
        w->path[base] = '\0';
        if (r < 0 || !descend || !S_ISDIR(node.st.st_mode))
                return r;
        l = &w->levels[k];
        XGROW(l->names, l->names_len + name_len + 1, l->names_alloc);
        XGROW(l->subdirs, l->n_subdirs + 1, l->subdirs_alloc);
        l->subdirs[l->n_subdirs++] = (struct subdir){
                .name_off = l->names_len,
                .dev = node.st.st_dev,
                .ino = node.st.st_ino,
                .cookie = cookie,
        };
        memcpy(l->names + l->names_len, name, name_len + 1);
        l->names_len += name_len + 1;
        return 0;
}

/* Lists the directory on top of the stack and visits its entries. */
static int read_dir(struct walker *w, struct kiln_error **err)
{
        size_t k = w->depth - 1, len = w->levels[k].path_len, off;
        DIR *d;
        int dfd;

        /* The root may be an O_PATH descriptor, which cannot be listed: reopen it. */
        if (k == 0)
                dfd = openat(w->levels[0].fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        else
                dfd = fcntl(w->levels[k].fd, F_DUPFD_CLOEXEC, 3);
        if (dfd < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "open '%s'", display_path(w, len));
        d = fdopendir(dfd);
        if (!d) {
                kiln_error_errno(err, KILN_ERR_IO, "open '%s'", display_path(w, len));
                close(dfd);
                return -1;
        }
        w->names_len = 0;
        for (;;) {
                struct dirent *de;
                size_t n;

                errno = 0;
                de = readdir(d);
                if (!de) {
                        if (errno == 0)
                                break;
                        kiln_error_errno(err, KILN_ERR_IO, "read directory '%s'",
                                         display_path(w, len));
                        closedir(d);
                        return -1;
                }
                if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                        continue;
                n = strlen(de->d_name) + 1;
                XGROW(w->names, w->names_len + n, w->names_alloc);
                memcpy(w->names + w->names_len, de->d_name, n);
                w->names_len += n;
        }
        closedir(d);
        for (off = 0; off < w->names_len; off += strlen(w->names + off) + 1)
                if (visit_one(w, w->names + off, err) < 0)
                        return -1;
        return 0;
}

static int walk(struct walker *w, int rootfd, struct kiln_error **err)
{
        struct stat st;

        if (fstat(rootfd, &st) < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "stat the directory to walk");
        if (!S_ISDIR(st.st_mode))
                return kiln_error_new(err, KILN_ERR_INVALID, "the tree to walk is not a directory");
        XGROW(w->levels, 1, w->levels_alloc);
        memset(&w->levels[0], 0, sizeof(w->levels[0]));
        w->levels_ready = 1;
        w->levels[0].fd = rootfd;
        w->levels[0].dev = st.st_dev;
        w->levels[0].ino = st.st_ino;
        w->depth = 1;
        XGROW(w->path, 256, w->path_alloc);
        w->path[0] = '\0';
        w->xlist = xmalloc(XATTR_MAX);
        if (read_dir(w, err) < 0)
                return -1;
        while (w->depth > 0) {
                struct level *l = &w->levels[w->depth - 1];
                struct subdir s;

                if (l->next == l->n_subdirs) {
                        pop_level(w);
                        continue;
                }
                s = l->subdirs[l->next++];
                if (push_level(w, &s, l->names + s.name_off, err) < 0 || read_dir(w, err) < 0)
                        return -1;
        }
        return 0;
}

/* ---- metadata of one entry ---- */

/* "uid:gid", decimal, as layer_extract() records it. */
static bool parse_owner(const char *v, size_t len, uid_t *ret_uid, gid_t *ret_gid)
{
        uint64_t ids[2] = { 0, 0 };
        size_t i = 0;
        int part;

        for (part = 0; part < 2; part++) {
                size_t start = i;

                while (i < len && v[i] >= '0' && v[i] <= '9' && i - start < 10)
                        ids[part] = ids[part] * 10 + (uint64_t) (v[i++] - '0');
                /* (uid_t) -1 means "no change" to chown(2): never an owner. */
                if (i == start || ids[part] >= UINT32_MAX)
                        return false;
                if (part == 0 && (i >= len || v[i++] != ':'))
                        return false;
        }
        if (i != len)
                return false;
        *ret_uid = (uid_t) ids[0];
        *ret_gid = (gid_t) ids[1];
        return true;
}

static bool has_prefix(const char *s, const char *prefix)
{
        return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* Kernel-internal or host-specific attributes a layer must not carry. */
static bool xattr_excluded(const char *name)
{
        return has_prefix(name, "trusted.overlay.") || has_prefix(name, "user.overlay.") ||
               strcmp(name, "security.selinux") == 0;
}

static int xattr_ref_cmp(const void *a, const void *b)
{
        const struct xattr_ref *x = a, *y = b;

        return strcmp(x->name, y->name);
}

/*
 * The kernel allocates (and for values, zeroes) a buffer as large as the one it is given, on
 * every call: offer XATTR_SMALL bytes first, and the exact size only when that is too small.
 * `buf` holds XATTR_MAX bytes. Sets errno and returns -1 on failure.
 */
static ssize_t list_xattrs(const char *path, char *buf)
{
        ssize_t n = llistxattr(path, buf, XATTR_SMALL);

        while (n < 0 && errno == ERANGE) {
                n = llistxattr(path, NULL, 0);
                if (n <= 0)
                        break;
                if (n > XATTR_MAX) {
                        errno = E2BIG;
                        return -1;
                }
                n = llistxattr(path, buf, (size_t) n);
        }
        return n;
}

static ssize_t get_xattr(const char *path, const char *name, char *buf)
{
        ssize_t n = lgetxattr(path, name, buf, XATTR_SMALL);

        while (n < 0 && errno == ERANGE) {
                n = lgetxattr(path, name, NULL, 0);
                if (n <= 0)
                        break;
                if (n > XATTR_MAX) {
                        errno = E2BIG;
                        return -1;
                }
                n = lgetxattr(path, name, buf, (size_t) n);
        }
        return n;
}

static int read_node(struct walker *w, const struct walk_node *node, struct node_info *info,
                     struct kiln_error **err)
{
        char proc[sizeof("/proc/self/fd//") + 3 * sizeof(int) + NAME_MAX];
        size_t off, plen = w->ovl_prefix ? strlen(w->ovl_prefix) : 0;
        ssize_t n;

        memset(info, 0, sizeof(*info));
        info->st = node->st;
        if (S_ISLNK(node->st.st_mode)) {
                n = readlinkat(node->dirfd, node->name, w->link, sizeof(w->link));
                if (n < 0)
                        return kiln_error_errno(err, KILN_ERR_IO, "read link '%s'", node->path);
                if ((size_t) n >= sizeof(w->link))
                        return kiln_error_new(err, KILN_ERR_LIMIT,
                                              "'%s': symlink target longer than %d bytes",
                                              node->path, PATH_MAX);
                w->link[n] = '\0';
                info->link = w->link;
                info->link_len = (size_t) n;
        }

        snprintf(proc, sizeof(proc), "/proc/self/fd/%d/%s", node->dirfd, node->name);
        n = list_xattrs(proc, w->xlist);
        if (n < 0) {
                if (errno == ENOTSUP)
                        return 0;
                if (errno == ENOENT && access("/proc/self/fd", F_OK) < 0)
                        return kiln_error_errno(err, KILN_ERR_UNSUPPORTED,
                                                "reading extended attributes needs /proc");
                return kiln_error_errno(err, KILN_ERR_IO, "list extended attributes of '%s'",
                                        node->path);
        }
        if (n > 0 && w->xlist[n - 1] != '\0')
                return kiln_error_new(err, KILN_ERR_IO, "malformed extended attribute list of '%s'",
                                      node->path);

        w->xvalues_len = 0;
        for (off = 0; off < (size_t) n; off += strlen(w->xlist + off) + 1) {
                const char *name = w->xlist + off, *ovl = NULL;
                bool owner = strcmp(name, LAYER_OWNER_XATTR) == 0;
                char *value;
                ssize_t len;

                if (plen && strncmp(name, w->ovl_prefix, plen) == 0) {
                        ovl = name + plen;
                        if (strcmp(ovl, "whiteout") == 0)
                                info->ovl_whiteout = true;
                        else if (strcmp(ovl, "whiteouts") == 0)
                                info->ovl_whiteouts = true;
                        else if (strcmp(ovl, "metacopy") == 0)
                                info->ovl_metacopy = true;
                        else if (strcmp(ovl, "redirect") == 0)
                                info->ovl_redirect = true;
                        if (strcmp(ovl, "opaque") != 0)
                                continue;
                } else if (!owner && xattr_excluded(name)) {
                        continue;
                }

                XGROW(w->xvalues, w->xvalues_len + XATTR_MAX, w->xvalues_alloc);
                value = w->xvalues + w->xvalues_len;
                len = get_xattr(proc, name, value);
                if (len < 0) {
                        if (errno == ENODATA)
                                continue; /* removed since it was listed */
                        return kiln_error_errno(err, KILN_ERR_IO,
                                                "read extended attribute '%s' of '%s'", name,
                                                node->path);
                }
                if (ovl) {
                        if (len == 1 && (value[0] == 'y' || value[0] == 'x'))
                                info->ovl_opaque = value[0];
                } else if (owner) {
                        if (!parse_owner(value, (size_t) len, &info->st.st_uid, &info->st.st_gid))
                                return kiln_error_new(err, KILN_ERR_INVALID,
                                                      "'%s': malformed %s '%.*s'", node->path,
                                                      LAYER_OWNER_XATTR, len > 64 ? 64 : (int) len,
                                                      value);
                } else {
                        XGROW(w->xattrs, info->n_xattrs + 1, w->xattrs_alloc);
                        w->xattrs[info->n_xattrs++] = (struct xattr_ref){
                                .name = name,
                                .value_off = w->xvalues_len,
                                .len = (size_t) len,
                        };
                        w->xvalues_len += (size_t) len;
                }
        }
        if (info->n_xattrs > 1)
                qsort(w->xattrs, info->n_xattrs, sizeof(*w->xattrs), xattr_ref_cmp);
        return 0;
}

static void fill_entry(const struct walker *w, struct layer_entry *e, const struct node_info *info)
{
        size_t i;

        e->st = info->st;
        if (info->link)
                e->link_target = xmemdup(info->link, info->link_len + 1);
        if (info->n_xattrs == 0)
                return;
        e->xattrs = xcalloc(info->n_xattrs, sizeof(*e->xattrs));
        for (i = 0; i < info->n_xattrs; i++) {
                const struct xattr_ref *x = &w->xattrs[i];

                e->xattrs[i].name = xstrdup(x->name);
                e->xattrs[i].value = xmemdup(w->xvalues + x->value_off, x->len);
                e->xattrs[i].len = x->len;
        }
        e->n_xattrs = info->n_xattrs;
}

static void put_le64(unsigned char *p, uint64_t v)
{
        int i;

        for (i = 0; i < 8; i++)
                p[i] = (unsigned char) (v >> (8 * i));
}

static uint64_t xattrs_hash(const struct walker *w, const struct node_info *info)
{
        uint64_t h = FNV_OFFSET;
        unsigned char len[8];
        size_t i;

        for (i = 0; i < info->n_xattrs; i++) {
                const struct xattr_ref *x = &w->xattrs[i];

                h = fnv1a(h, x->name, strlen(x->name) + 1);
                put_le64(len, x->len);
                h = fnv1a(h, len, sizeof(len));
                h = fnv1a(h, w->xvalues + x->value_off, x->len);
        }
        return h;
}

/* ---- a whole tree, an upper directory ---- */

static int tree_visit(struct walker *w, const struct walk_node *node, bool *ret_descend,
                      uint64_t *ret_cookie, struct kiln_error **err)
{
        struct layer_changes *c = w->ctx;
        struct node_info info;

        if (read_node(w, node, &info, err) < 0)
                return -1;
        fill_entry(w, add_entry(c, node->path, node->path_len, LAYER_CHANGE_ADD), &info);
        *ret_descend = true;
        return 0;
}

int layer_changes_from_tree(int dirfd, struct layer_changes *ret, struct kiln_error **err)
{
        _cleanup_(layer_changes_release) struct layer_changes c = LAYER_CHANGES_INIT;
        struct walker w = { .visit = tree_visit, .ctx = &c };
        int r;

        r = walk(&w, dirfd, err);
        walker_release(&w);
        if (r < 0)
                return -1;
        return changes_finish(&c, dirfd, ret, err);
}

/* The parent directory may hold xattr whiteouts ("overlay.opaque" = "x", or Linux 6.7's
 * "overlay.whiteouts"): only there does the kernel honour them. */
#define COOKIE_XWHITEOUTS 1

static int upper_visit(struct walker *w, const struct walk_node *node, bool *ret_descend,
                       uint64_t *ret_cookie, struct kiln_error **err)
{
        struct layer_changes *c = w->ctx;
        bool is_dir = S_ISDIR(node->st.st_mode);
        struct layer_entry *e;
        struct node_info info;

        if (S_ISCHR(node->st.st_mode) && node->st.st_rdev == makedev(0, 0)) {
                add_entry(c, node->path, node->path_len, LAYER_CHANGE_DELETE);
                return 0;
        }
        if (read_node(w, node, &info, err) < 0)
                return -1;
        /* Their data or contents live in a lower layer, which this walk never reads. */
        if (info.ovl_metacopy || info.ovl_redirect)
                return kiln_error_new(err, KILN_ERR_UNSUPPORTED,
                                      "'%s' is an overlay %s entry (mount with metacopy=off and "
                                      "redirect_dir=off)",
                                      node->path, info.ovl_metacopy ? "metacopy" : "redirect");
        if (S_ISREG(node->st.st_mode) && node->st.st_size == 0 && info.ovl_whiteout &&
            (node->parent_cookie & COOKIE_XWHITEOUTS)) {
                add_entry(c, node->path, node->path_len, LAYER_CHANGE_DELETE);
                return 0;
        }
        e = add_entry(c, node->path, node->path_len, LAYER_CHANGE_ADD);
        fill_entry(w, e, &info);
        e->opaque = is_dir && info.ovl_opaque == 'y';
        *ret_descend = is_dir;
        if (info.ovl_opaque == 'x' || info.ovl_whiteouts)
                *ret_cookie = COOKIE_XWHITEOUTS;
        return 0;
}

int layer_changes_from_upper(int upper_dirfd, bool userxattr, struct layer_changes *ret,
                             struct kiln_error **err)
{
        _cleanup_(layer_changes_release) struct layer_changes c = LAYER_CHANGES_INIT;
        struct walker w = {
                .visit = upper_visit,
                .ctx = &c,
                .ovl_prefix = userxattr ? "user.overlay." : "trusted.overlay.",
        };
        int r;

        r = walk(&w, upper_dirfd, err);
        walker_release(&w);
        if (r < 0)
                return -1;
        return changes_finish(&c, upper_dirfd, ret, err);
}

/* ---- ancestors ---- */

static int str_cmp(const void *a, const void *b)
{
        return strcmp(*(char *const *) a, *(char *const *) b);
}

/* Whether the first n (sorted) entries hold `path`. */
static bool has_entry(const struct layer_changes *c, size_t n, const char *path)
{
        size_t lo = 0, hi = n;

        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                int r = strcmp(c->entries[mid].path, path);

                if (r == 0)
                        return true;
                if (r < 0)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return false;
}

/* Reads one ancestor directory `path` (relative, clean) as an ADD entry. */
static int add_ancestor(struct layer_changes *c, struct walker *w, const char *path,
                        struct kiln_error **err)
{
        const char *slash = strrchr(path, '/');
        _cleanup_free_ char *parent = slash ? xstrndup(path, (size_t) (slash - path)) : NULL;
        _cleanup_close_ int pfd = -1;
        struct walk_node node = { .path = path, .path_len = strlen(path) };
        struct node_info info;

        if (parent)
                pfd = kiln_openat2_in_root(c->dirfd, parent, O_PATH | O_DIRECTORY | O_CLOEXEC, 0,
                                           RESOLVE_NO_SYMLINKS);
        else
                pfd = fcntl(c->dirfd, F_DUPFD_CLOEXEC, 3);
        if (pfd < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "open '%s'", parent ? parent : ".");
        node.dirfd = pfd;
        node.name = slash ? slash + 1 : path;
        if (fstatat(pfd, node.name, &node.st, AT_SYMLINK_NOFOLLOW) < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "stat '%s'", path);
        if (!S_ISDIR(node.st.st_mode))
                return kiln_error_new(err, KILN_ERR_INVALID,
                                      "'%s' holds changes but is not a directory", path);
        if (read_node(w, &node, &info, err) < 0)
                return -1;
        fill_entry(w, add_entry(c, path, node.path_len, LAYER_CHANGE_ADD), &info);
        return 0;
}

int layer_changes_add_parents(struct layer_changes *c, struct kiln_error **err)
{
        struct walker w = { 0 };
        char **want = NULL;
        size_t n_want = 0, alloc = 0, n = c->n, i;
        int r = 0;

        if (n > 1)
                qsort(c->entries, n, sizeof(*c->entries), entry_cmp);
        for (i = 0; i < n; i++) {
                const char *p = c->entries[i].path, *slash;

                for (slash = strchr(p, '/'); slash; slash = strchr(slash + 1, '/')) {
                        char *a = xstrndup(p, (size_t) (slash - p));

                        if (has_entry(c, n, a) || (n_want && strcmp(want[n_want - 1], a) == 0)) {
                                free(a);
                                continue;
                        }
                        XGROW(want, n_want + 1, alloc);
                        want[n_want++] = a;
                }
        }
        if (n_want > 1)
                qsort(want, n_want, sizeof(*want), str_cmp);
        w.xlist = xmalloc(XATTR_MAX);
        for (i = 0; i < n_want && r == 0; i++)
                if (i == 0 || strcmp(want[i - 1], want[i]) != 0)
                        r = add_ancestor(c, &w, want[i], err);
        for (i = 0; i < n_want; i++)
                free(want[i]);
        free(want);
        walker_release(&w);
        if (c->n > 1)
                qsort(c->entries, c->n, sizeof(*c->entries), entry_cmp);
        return r;
}

/* ---- snapshots ---- */

struct snap_rec {
        uint64_t ino;
        uint64_t size;
        uint64_t rdev;
        uint64_t xattr_hash;
        int64_t ctime_sec;
        int64_t mtime_sec;
        uint64_t path_off; /* in the pool: the path, NUL, the link target, NUL */
        uint32_t ctime_nsec;
        uint32_t mtime_nsec;
        uint32_t mode;
        uint32_t uid;
        uint32_t gid;
        uint32_t path_len;
        uint32_t link_len;
        uint32_t nlink; /* saturated; compared for non-directories only */
};

/* Records sorted by path, their strings in one pool, and a hash index of the paths. */
struct layer_snapshot {
        struct snap_rec *recs;
        size_t n, alloc;
        char *pool;
        size_t pool_len, pool_alloc;
        uint32_t *index; /* open addressing: a record number, or UINT32_MAX */
        size_t index_mask;
};

static const char *snap_path(const struct layer_snapshot *s, const struct snap_rec *r)
{
        return s->pool + r->path_off;
}

static const char *snap_link(const struct layer_snapshot *s, const struct snap_rec *r)
{
        return s->pool + r->path_off + r->path_len + 1;
}

struct layer_snapshot *layer_snapshot_free(struct layer_snapshot *snap)
{
        if (!snap)
                return NULL;
        free(snap->recs);
        free(snap->pool);
        free(snap->index);
        free(snap);
        return NULL;
}

static void snap_add_strings(struct layer_snapshot *s, struct snap_rec *r, const char *path,
                             size_t path_len, const char *link, size_t link_len)
{
        XGROW(s->pool, s->pool_len + path_len + link_len + 2, s->pool_alloc);
        r->path_off = s->pool_len;
        r->path_len = (uint32_t) path_len;
        r->link_len = (uint32_t) link_len;
        memcpy(s->pool + s->pool_len, path, path_len);
        s->pool[s->pool_len + path_len] = '\0';
        if (link_len)
                memcpy(s->pool + s->pool_len + path_len + 1, link, link_len);
        s->pool[s->pool_len + path_len + 1 + link_len] = '\0';
        s->pool_len += path_len + link_len + 2;
}

static size_t snap_find(const struct layer_snapshot *s, const char *path, size_t len)
{
        size_t i = (size_t) fnv1a(FNV_OFFSET, path, len) & s->index_mask;

        for (;; i = (i + 1) & s->index_mask) {
                uint32_t k = s->index[i];
                const struct snap_rec *r;

                if (k == UINT32_MAX)
                        return SIZE_MAX;
                r = &s->recs[k];
                if (r->path_len == len && memcmp(snap_path(s, r), path, len) == 0)
                        return k;
        }
}

static void snap_build_index(struct layer_snapshot *s)
{
        size_t size = 16, i;

        while (size < 2 * s->n)
                size *= 2;
        free(s->index);
        s->index = xmalloc(size * sizeof(*s->index));
        memset(s->index, 0xff, size * sizeof(*s->index));
        s->index_mask = size - 1;
        for (i = 0; i < s->n; i++) {
                const struct snap_rec *r = &s->recs[i];
                size_t j = (size_t) fnv1a(FNV_OFFSET, snap_path(s, r), r->path_len) & s->index_mask;

                while (s->index[j] != UINT32_MAX)
                        j = (j + 1) & s->index_mask;
                s->index[j] = (uint32_t) i;
        }
}

static int snap_rec_cmp(const void *a, const void *b, void *pool)
{
        const struct snap_rec *x = a, *y = b;

        return strcmp((const char *) pool + x->path_off, (const char *) pool + y->path_off);
}

static int take_visit(struct walker *w, const struct walk_node *node, bool *ret_descend,
                      uint64_t *ret_cookie, struct kiln_error **err)
{
        struct layer_snapshot *s = w->ctx;
        struct node_info info;
        struct snap_rec *r;

        if (read_node(w, node, &info, err) < 0)
                return -1;
        if (s->n >= MAX_RECORDS)
                return kiln_error_new(err, KILN_ERR_LIMIT, "more than %zu paths to snapshot",
                                      MAX_RECORDS);
        XGROW(s->recs, s->n + 1, s->alloc);
        r = &s->recs[s->n++];
        *r = (struct snap_rec){
                .ino = (uint64_t) info.st.st_ino,
                .size = (uint64_t) info.st.st_size,
                .rdev = (uint64_t) info.st.st_rdev,
                .xattr_hash = xattrs_hash(w, &info),
                .ctime_sec = (int64_t) info.st.st_ctim.tv_sec,
                .mtime_sec = (int64_t) info.st.st_mtim.tv_sec,
                .ctime_nsec = (uint32_t) info.st.st_ctim.tv_nsec,
                .mtime_nsec = (uint32_t) info.st.st_mtim.tv_nsec,
                .mode = (uint32_t) info.st.st_mode,
                .uid = (uint32_t) info.st.st_uid,
                .gid = (uint32_t) info.st.st_gid,
                .nlink = info.st.st_nlink > UINT32_MAX ? UINT32_MAX : (uint32_t) info.st.st_nlink,
        };
        snap_add_strings(s, r, node->path, node->path_len, info.link, info.link_len);
        *ret_descend = true;
        return 0;
}

int layer_snapshot_take(int dirfd, struct layer_snapshot **ret, struct kiln_error **err)
{
        return layer_snapshot_take_excluding(dirfd, NULL, 0, ret, err);
}

int layer_snapshot_take_excluding(int dirfd, const char *const *exclude, size_t n_exclude,
                                  struct layer_snapshot **ret, struct kiln_error **err)
{
        _cleanup_(layer_snapshot_freep) struct layer_snapshot *s = xcalloc(1, sizeof(*s));
        struct walker w = {
                .visit = take_visit, .ctx = s, .exclude = exclude, .n_exclude = n_exclude
        };
        int r;

        r = walk(&w, dirfd, err);
        walker_release(&w);
        if (r < 0)
                return -1;
        if (s->n > 1)
                qsort_r(s->recs, s->n, sizeof(*s->recs), snap_rec_cmp, s->pool);
        snap_build_index(s);
        *ret = TAKE_PTR(s);
        return 0;
}

/*
 * The file: a header, fixed-size records, their strings, and an FNV-1a 64 of everything before
 * it. Integers are little-endian.
 *
 *   header  "KILNSNAP", u32 version (1), u32 flags (0), u64 records, u64 string bytes
 *   record  u64 ino, i64 ctime sec, u32 ctime nsec, i64 mtime sec, u32 mtime nsec, u64 size,
 *           u32 mode, u32 uid, u32 gid, u64 rdev, u64 xattr hash, u32 path length,
 *           u32 link target length, u32 link count
 *   strings each record's path then its link target, without terminators
 *   trailer u64 FNV-1a 64 of all the bytes above
 */
#define SNAP_MAGIC   "KILNSNAP"
#define SNAP_VERSION 1
#define SNAP_HEADER  32
#define SNAP_RECORD  80
#define SNAP_BUFFER  65536

struct snap_io {
        int fd;
        unsigned char *buf;
        size_t pos, len;
        uint64_t hash;
};

static uint32_t get_le32(const unsigned char *p)
{
        return (uint32_t) p[0] | (uint32_t) p[1] << 8 | (uint32_t) p[2] << 16 |
               (uint32_t) p[3] << 24;
}

static uint64_t get_le64(const unsigned char *p)
{
        return (uint64_t) get_le32(p) | (uint64_t) get_le32(p + 4) << 32;
}

static void put_le32(unsigned char *p, uint32_t v)
{
        int i;

        for (i = 0; i < 4; i++)
                p[i] = (unsigned char) (v >> (8 * i));
}

static int io_flush(struct snap_io *io, struct kiln_error **err)
{
        if (io->len && kiln_write_all(io->fd, io->buf, io->len, err) < 0)
                return kiln_error_wrap(err, "write snapshot");
        io->len = 0;
        return 0;
}

static int io_put(struct snap_io *io, const void *data, size_t len, struct kiln_error **err)
{
        const unsigned char *p = data;

        io->hash = fnv1a(io->hash, data, len);
        while (len > 0) {
                size_t n = SNAP_BUFFER - io->len;

                if (n > len)
                        n = len;
                memcpy(io->buf + io->len, p, n);
                io->len += n;
                p += n;
                len -= n;
                if (io->len == SNAP_BUFFER && io_flush(io, err) < 0)
                        return -1;
        }
        return 0;
}

int layer_snapshot_save(const struct layer_snapshot *snap, int fd, struct kiln_error **err)
{
        _cleanup_free_ unsigned char *buf = xmalloc(SNAP_BUFFER);
        struct snap_io io = { .fd = fd, .buf = buf, .hash = FNV_OFFSET };
        unsigned char h[SNAP_HEADER], rec[SNAP_RECORD], sum[8];
        uint64_t strings = 0;
        size_t i;

        for (i = 0; i < snap->n; i++)
                strings += (uint64_t) snap->recs[i].path_len + snap->recs[i].link_len;
        memcpy(h, SNAP_MAGIC, 8);
        put_le32(h + 8, SNAP_VERSION);
        put_le32(h + 12, 0);
        put_le64(h + 16, snap->n);
        put_le64(h + 24, strings);
        if (io_put(&io, h, sizeof(h), err) < 0)
                return -1;
        for (i = 0; i < snap->n; i++) {
                const struct snap_rec *r = &snap->recs[i];

                put_le64(rec + 0, r->ino);
                put_le64(rec + 8, (uint64_t) r->ctime_sec);
                put_le32(rec + 16, r->ctime_nsec);
                put_le64(rec + 20, (uint64_t) r->mtime_sec);
                put_le32(rec + 28, r->mtime_nsec);
                put_le64(rec + 32, r->size);
                put_le32(rec + 40, r->mode);
                put_le32(rec + 44, r->uid);
                put_le32(rec + 48, r->gid);
                put_le64(rec + 52, r->rdev);
                put_le64(rec + 60, r->xattr_hash);
                put_le32(rec + 68, r->path_len);
                put_le32(rec + 72, r->link_len);
                put_le32(rec + 76, r->nlink);
                if (io_put(&io, rec, SNAP_RECORD, err) < 0)
                        return -1;
        }
        for (i = 0; i < snap->n; i++) {
                const struct snap_rec *r = &snap->recs[i];

                if (io_put(&io, snap_path(snap, r), r->path_len, err) < 0 ||
                    io_put(&io, snap_link(snap, r), r->link_len, err) < 0)
                        return -1;
        }
        put_le64(sum, io.hash);
        if (io_put(&io, sum, sizeof(sum), err) < 0)
                return -1;
        return io_flush(&io, err);
}

/* Reads exactly `len` bytes; the end of the file first is a truncated snapshot. */
static int io_get(struct snap_io *io, void *data, size_t len, struct kiln_error **err)
{
        unsigned char *p = data;

        while (len > 0) {
                size_t n;

                if (io->pos == io->len) {
                        ssize_t got = read(io->fd, io->buf, SNAP_BUFFER);

                        if (got < 0) {
                                if (errno == EINTR)
                                        continue;
                                return kiln_error_errno(err, KILN_ERR_IO, "read snapshot");
                        }
                        if (got == 0)
                                return kiln_error_new(err, KILN_ERR_PARSE, "snapshot truncated");
                        io->pos = 0;
                        io->len = (size_t) got;
                }
                n = io->len - io->pos;
                if (n > len)
                        n = len;
                memcpy(p, io->buf + io->pos, n);
                io->hash = fnv1a(io->hash, p, n);
                io->pos += n;
                p += n;
                len -= n;
        }
        return 0;
}

static int io_expect_end(struct snap_io *io, struct kiln_error **err)
{
        ssize_t got;

        if (io->pos < io->len)
                return kiln_error_new(err, KILN_ERR_PARSE, "snapshot: data after the end");
        do
                got = read(io->fd, io->buf, 1);
        while (got < 0 && errno == EINTR);
        if (got < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "read snapshot");
        if (got > 0)
                return kiln_error_new(err, KILN_ERR_PARSE, "snapshot: data after the end");
        return 0;
}

static bool mode_valid(uint32_t mode)
{
        if (mode & ~(uint32_t) (S_IFMT | 07777))
                return false;
        switch (mode & S_IFMT) {
        case S_IFREG:
        case S_IFDIR:
        case S_IFLNK:
        case S_IFCHR:
        case S_IFBLK:
        case S_IFIFO:
        case S_IFSOCK:
                return true;
        }
        return false;
}

/* Relative and clean: no empty, "." or ".." component, no leading or trailing '/'. */
static bool path_clean(const char *p, size_t len)
{
        size_t i = 0;

        while (i < len) {
                size_t j = i;

                while (j < len && p[j] != '/')
                        j++;
                if (j == i || j - i > NAME_MAX || (j - i == 1 && p[i] == '.') ||
                    (j - i == 2 && p[i] == '.' && p[i + 1] == '.'))
                        return false;
                if (j == len)
                        return true;
                i = j + 1;
        }
        return false;
}

static int load_record(struct layer_snapshot *s, const unsigned char *b, uint64_t *strings_left,
                       struct kiln_error **err)
{
        struct snap_rec *r;
        uint64_t path_len = get_le32(b + 68), link_len = get_le32(b + 72);

        XGROW(s->recs, s->n + 1, s->alloc);
        r = &s->recs[s->n];
        *r = (struct snap_rec){
                .ino = get_le64(b + 0),
                .ctime_sec = (int64_t) get_le64(b + 8),
                .ctime_nsec = get_le32(b + 16),
                .mtime_sec = (int64_t) get_le64(b + 20),
                .mtime_nsec = get_le32(b + 28),
                .size = get_le64(b + 32),
                .mode = get_le32(b + 40),
                .uid = get_le32(b + 44),
                .gid = get_le32(b + 48),
                .rdev = get_le64(b + 52),
                .xattr_hash = get_le64(b + 60),
                .nlink = get_le32(b + 76),
        };
        if (r->ctime_nsec >= 1000000000 || r->mtime_nsec >= 1000000000 || !mode_valid(r->mode))
                return kiln_error_new(err, KILN_ERR_PARSE, "snapshot: record %zu: bad metadata",
                                      s->n);
        if (path_len == 0 || path_len > MAX_PATH_LEN ||
            (S_ISLNK(r->mode) ? link_len == 0 || link_len > PATH_MAX : link_len != 0))
                return kiln_error_new(err, KILN_ERR_PARSE, "snapshot: record %zu: bad lengths",
                                      s->n);
        if (path_len + link_len > *strings_left)
                return kiln_error_new(err, KILN_ERR_PARSE,
                                      "snapshot: record %zu: strings exceed the header", s->n);
        *strings_left -= path_len + link_len;
        r->path_len = (uint32_t) path_len;
        r->link_len = (uint32_t) link_len;
        s->n++;
        return 0;
}

static int load_strings(struct snap_io *io, struct layer_snapshot *s, struct kiln_error **err)
{
        size_t i;

        for (i = 0; i < s->n; i++) {
                struct snap_rec *r = &s->recs[i];
                size_t len = (size_t) r->path_len + r->link_len;
                char *p;

                XGROW(s->pool, s->pool_len + len + 2, s->pool_alloc);
                p = s->pool + s->pool_len;
                if (io_get(io, p, r->path_len, err) < 0 ||
                    io_get(io, p + r->path_len + 1, r->link_len, err) < 0)
                        return -1;
                p[r->path_len] = '\0';
                p[len + 1] = '\0';
                if (memchr(p, '\0', r->path_len) || memchr(p + r->path_len + 1, '\0', r->link_len))
                        return kiln_error_new(err, KILN_ERR_PARSE,
                                              "snapshot: record %zu: NUL in "
                                              "a path or link",
                                              i);
                if (!path_clean(p, r->path_len))
                        return kiln_error_new(err, KILN_ERR_PARSE,
                                              "snapshot: record %zu: path is not clean", i);
                if (i > 0 && strcmp(snap_path(s, &s->recs[i - 1]), p) >= 0)
                        return kiln_error_new(err, KILN_ERR_PARSE,
                                              "snapshot: record %zu: paths out of order", i);
                r->path_off = s->pool_len;
                s->pool_len += len + 2;
        }
        return 0;
}

/* Every path's parent is a directory of the snapshot, as a walk records them. */
static int check_parents(const struct layer_snapshot *s, struct kiln_error **err)
{
        size_t i;

        for (i = 0; i < s->n; i++) {
                const struct snap_rec *r = &s->recs[i];
                const char *path = snap_path(s, r), *slash = memrchr(path, '/', r->path_len);
                size_t p;

                if (!slash)
                        continue;
                p = snap_find(s, path, (size_t) (slash - path));
                if (p == SIZE_MAX || !S_ISDIR(s->recs[p].mode))
                        return kiln_error_new(err, KILN_ERR_PARSE,
                                              "snapshot: record %zu: parent is not a directory", i);
        }
        return 0;
}

int layer_snapshot_load(int fd, struct layer_snapshot **ret, struct kiln_error **err)
{
        _cleanup_(layer_snapshot_freep) struct layer_snapshot *s = xcalloc(1, sizeof(*s));
        _cleanup_free_ unsigned char *buf = xmalloc(SNAP_BUFFER);
        struct snap_io io = { .fd = fd, .buf = buf, .hash = FNV_OFFSET };
        unsigned char h[SNAP_HEADER], rec[SNAP_RECORD], sum[8];
        uint64_t n, strings, left, hash;
        size_t i;

        if (io_get(&io, h, sizeof(h), err) < 0)
                return -1;
        if (memcmp(h, SNAP_MAGIC, 8) != 0)
                return kiln_error_new(err, KILN_ERR_PARSE, "not a kiln snapshot");
        if (get_le32(h + 8) != SNAP_VERSION)
                return kiln_error_new(err, KILN_ERR_PARSE, "snapshot: unknown version %u",
                                      (unsigned) get_le32(h + 8));
        if (get_le32(h + 12) != 0)
                return kiln_error_new(err, KILN_ERR_PARSE, "snapshot: unknown flags %#x",
                                      (unsigned) get_le32(h + 12));
        n = get_le64(h + 16);
        strings = get_le64(h + 24);
        if (n > MAX_RECORDS)
                return kiln_error_new(err, KILN_ERR_PARSE, "snapshot: too many records");
        if (strings > n * (MAX_PATH_LEN + PATH_MAX))
                return kiln_error_new(err, KILN_ERR_PARSE, "snapshot: bad string size");
        /* Memory grows with the bytes actually read, never with what the header claims. */
        left = strings;
        for (i = 0; i < n; i++)
                if (io_get(&io, rec, sizeof(rec), err) < 0 || load_record(s, rec, &left, err) < 0)
                        return -1;
        if (left != 0)
                return kiln_error_new(err, KILN_ERR_PARSE, "snapshot: bad string size");
        if (load_strings(&io, s, err) < 0)
                return -1;
        hash = io.hash;
        if (io_get(&io, sum, sizeof(sum), err) < 0)
                return -1;
        if (get_le64(sum) != hash)
                return kiln_error_new(err, KILN_ERR_PARSE, "snapshot: checksum mismatch");
        if (io_expect_end(&io, err) < 0)
                return -1;
        snap_build_index(s);
        if (check_parents(s, err) < 0)
                return -1;
        *ret = TAKE_PTR(s);
        return 0;
}

/* ---- the difference between a snapshot and a tree ---- */

enum {
        SEEN_DIR = 1,   /* the path exists and is a directory */
        SEEN_OTHER = 2, /* the path exists and is not */
        CHURN = 4,      /* a directory where an entry was added, removed or replaced */
};

/* Cookies: the parent is the root, is new (so are its children), or is record N - 2. */
#define COOKIE_ROOT 0
#define COOKIE_NEW  1

struct diff_ctx {
        const struct layer_snapshot *snap;
        struct layer_changes *out;
        /* Directories whose mtime alone changed: an ADD unless their own entries changed. */
        struct layer_changes pending;
        size_t *pending_rec;
        size_t pending_alloc;
        uint8_t *state; /* per record */
};

static bool same_time(int64_t sec, uint32_t nsec, const struct timespec *ts)
{
        return sec == (int64_t) ts->tv_sec && nsec == (uint32_t) ts->tv_nsec;
}

static int diff_visit(struct walker *w, const struct walk_node *node, bool *ret_descend,
                      uint64_t *ret_cookie, struct kiln_error **err)
{
        struct diff_ctx *d = w->ctx;
        const struct layer_snapshot *s = d->snap;
        bool is_dir = S_ISDIR(node->st.st_mode), add = false, pending = false, replaced = false;
        const struct stat *st;
        struct node_info info;
        size_t idx = SIZE_MAX;

        if (read_node(w, node, &info, err) < 0)
                return -1;
        st = &info.st;
        *ret_descend = is_dir;
        *ret_cookie = COOKIE_NEW;
        if (node->parent_cookie != COOKIE_NEW)
                idx = snap_find(s, node->path, node->path_len);
        if (idx == SIZE_MAX) {
                add = replaced = true;
        } else {
                const struct snap_rec *r = &s->recs[idx];

                d->state[idx] |= is_dir ? SEEN_DIR : SEEN_OTHER;
                if (((r->mode ^ (uint32_t) st->st_mode) & S_IFMT) != 0) {
                        add = replaced = true;
                } else {
                        if (is_dir)
                                *ret_cookie = idx + 2;
                        if (r->ino != (uint64_t) st->st_ino)
                                add = replaced = true;
                        else if (r->mode != (uint32_t) st->st_mode ||
                                 r->uid != (uint32_t) st->st_uid ||
                                 r->gid != (uint32_t) st->st_gid ||
                                 r->xattr_hash != xattrs_hash(w, &info))
                                add = true;
                        else if (is_dir)
                                /* Its size, ctime and link count follow its entries. */
                                pending = !same_time(r->mtime_sec, r->mtime_nsec, &st->st_mtim);
                        else
                                add = !same_time(r->ctime_sec, r->ctime_nsec, &st->st_ctim) ||
                                      !same_time(r->mtime_sec, r->mtime_nsec, &st->st_mtim) ||
                                      r->size != (uint64_t) st->st_size ||
                                      r->nlink != (st->st_nlink > UINT32_MAX
                                                           ? UINT32_MAX
                                                           : (uint32_t) st->st_nlink) ||
                                      r->rdev != (uint64_t) st->st_rdev ||
                                      r->link_len != info.link_len ||
                                      (info.link_len &&
                                       memcmp(snap_link(s, r), info.link, info.link_len) != 0);
                }
        }
        if (replaced && node->parent_cookie >= 2)
                d->state[node->parent_cookie - 2] |= CHURN;
        if (add) {
                fill_entry(w, add_entry(d->out, node->path, node->path_len, LAYER_CHANGE_ADD),
                           &info);
        } else if (pending) {
                fill_entry(w, add_entry(&d->pending, node->path, node->path_len, LAYER_CHANGE_ADD),
                           &info);
                XGROW(d->pending_rec, d->pending.n, d->pending_alloc);
                d->pending_rec[d->pending.n - 1] = idx;
        }
        return 0;
}

/* Removed paths: only the top-most, and none below a path that is no longer a directory (its
 * ADD replaces the whole subtree). */
static void diff_deletes(struct diff_ctx *d)
{
        const struct layer_snapshot *s = d->snap;
        size_t i;

        for (i = 0; i < s->n; i++) {
                const struct snap_rec *r = &s->recs[i];
                const char *path = snap_path(s, r), *slash;

                if (d->state[i] & (SEEN_DIR | SEEN_OTHER))
                        continue;
                slash = memrchr(path, '/', r->path_len);
                if (slash) {
                        size_t p = snap_find(s, path, (size_t) (slash - path));

                        if (p == SIZE_MAX || !(d->state[p] & SEEN_DIR))
                                continue;
                        d->state[p] |= CHURN;
                }
                add_entry(d->out, path, r->path_len, LAYER_CHANGE_DELETE);
        }
}

static void diff_release(struct diff_ctx *d)
{
        layer_changes_release(&d->pending);
        free(d->pending_rec);
        free(d->state);
}

int layer_changes_from_snapshot(int dirfd, const struct layer_snapshot *before,
                                struct layer_changes *ret, struct kiln_error **err)
{
        return layer_changes_from_snapshot_excluding(dirfd, before, NULL, 0, ret, err);
}

int layer_changes_from_snapshot_excluding(int dirfd, const struct layer_snapshot *before,
                                          const char *const *exclude, size_t n_exclude,
                                          struct layer_changes *ret, struct kiln_error **err)
{
        _cleanup_(layer_changes_release) struct layer_changes c = LAYER_CHANGES_INIT;
        struct diff_ctx d = {
                .snap = before,
                .out = &c,
                .pending = LAYER_CHANGES_INIT,
        };
        struct walker w = {
                .visit = diff_visit, .ctx = &d, .exclude = exclude, .n_exclude = n_exclude
        };
        size_t i;
        int r;

        if (!before)
                return kiln_error_new(err, KILN_ERR_INVALID, "no snapshot to compare with");
        d.state = xcalloc(before->n, 1);
        r = walk(&w, dirfd, err);
        walker_release(&w);
        if (r < 0) {
                diff_release(&d);
                return -1;
        }
        diff_deletes(&d);
        for (i = 0; i < d.pending.n; i++) {
                struct layer_entry *e = &d.pending.entries[i];

                if (d.state[d.pending_rec[i]] & CHURN) {
                        entry_release(e);
                        continue;
                }
                XGROW(c.entries, c.n + 1, c.alloc);
                c.entries[c.n++] = *e;
                memset(e, 0, sizeof(*e));
        }
        diff_release(&d);
        return changes_finish(&c, dirfd, ret, err);
}
