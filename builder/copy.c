/*
 * COPY and ADD into an image root, with BuildKit's semantics: the Dockerfile frontend's FileOp
 * copy (FollowSymlinks, CopyDirContents, AllowWildcard, AllowEmptyWildcard, CreateDestPath) as
 * solver/llbsolver/file/backend.go and tonistiigi/fsutil's copy package carry it out.
 *
 * Safety. Both roots are reached only through openat2(RESOLVE_IN_ROOT). A path is first
 * resolved by hand, one component at a time, the way containerd's fs.RootPath does: a symlink
 * is read and spliced in, an absolute target restarts at the root, ".." stops at the root. The
 * result is a real path (no symlink in it) that is then opened with RESOLVE_NO_SYMLINKS, so a
 * swap after the resolution fails instead of leading elsewhere. Below a resolved directory
 * everything is done relative to directory fds with O_NOFOLLOW / AT_SYMLINK_NOFOLLOW: what is
 * at a name is removed (unlinkat) and the new entry made with O_CREAT|O_EXCL, mkdirat,
 * symlinkat, mknodat or linkat. No write can leave the destination root and no read can leave
 * the source root, whatever the symlinks on either side say.
 *
 * Sources (BuildKit). Paths are relative to the source root; a leading '/' is allowed and ".."
 * is confined. A path's last component is followed when it is a symlink (FollowSymlinks: true),
 * inside the root, and the destination name is the link's own name (filepath.Base(src)).
 * Wildcards are Go's filepath.Match, component by component (fsutil's splitWildcards and
 * resolveWildcards: the part before the first wildcard component is followed; below it only
 * real directories are entered). A wildcard that matches nothing is allowed as long as something
 * is copied (AllowEmptyWildcard); a missing literal path is NOTFOUND. .dockerignore is applied
 * to real paths (what the context would hold), --exclude to the path as written at the top and
 * to the path below a copied directory (fsutil's exclude patterns); an excluded directory is
 * still entered when "!" patterns might bring some of its children back, and kept only if one
 * is. A directory copies its contents. Symlinks inside a copied directory are copied verbatim.
 *
 * Destination (BuildKit's prepareTargetDir and MkdirAll). Relative to WORKDIR unless absolute.
 * With a trailing '/', several sources or --parents it is a directory. A single source that is
 * not a directory lands inside an existing directory, else is written at the path, replacing
 * (never following) a symlink there. Directories created for the destination, its parents
 * included, are 0755, owned by the --chown ids (BuildKit passes the chowner to MkdirAll) or
 * 0:0, with the current time; an existing destination directory is left as it is. A directory
 * below the copied one takes the source's metadata whether it existed or not; a file never
 * replaces a directory and a directory never replaces a non-directory, a symlink included
 * ("cannot copy to non-directory", as BuildKit).
 *
 * Entries keep their permission bits, mtime (and atime) and xattrs (best effort; overlay's and
 * kiln's own are not copied); the owner is 0:0 (the context is sent with its ids reset) or the
 * --chown ids; --chmod (octal, or chmod(1)'s symbolic form with a missing "who" meaning "a")
 * applies to every copied file and directory, not to created parents. Hardlinks among the
 * files copied from one source (a path or a wildcard's matches) are kept (fsutil's
 * getLinkSource); two sources are two copies, as BuildKit makes them. Fifos and device nodes
 * are made with mknod (an error when that is not allowed); sockets are skipped.
 *
 * Inline (heredoc) sources become files of mode 0644 with the current time (the frontend's
 * llb.Mkfile(name, 0644, data)). ADD extracts a local tar archive (plain, gzip, bzip2, xz or
 * zstd, by content) into the destination directory, as BuildKit's unpack() does: the archive
 * is unpacked by layer_extract() into a scratch directory beside the destination root and
 * copied from there, with its own owners or the --chown ids, and without --chmod. A file that
 * is not a tar with at least one entry is copied like COPY does. Whiteout names in such an
 * archive are not copied (BuildKit writes them as plain files).
 *
 * Downloaded (ADD <url>) sources are files of mode 0600 (BuildKit's HTTP source), with the
 * Last-Modified time or the current time, named after the URL; like inline ones they are
 * never extracted and --parents does not apply to them.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "builder/builder-internal.h"
#include "builder/common/cleanup.h"
#include "builder/common/error.h"
#include "builder/common/fd-util.h"
#include "builder/common/utf8.h"
#include "builder/common/xalloc.h"
#include "layers/layers.h"
#include "parser/parser.h"

#define CHUNK_SIZE     (64 * 1024)
#define MAX_SYMLINKS   40 /* Linux's limit on symlinks in one lookup */
#define SCRATCH_PREFIX ".kiln-add-"

static inline void closedirp(DIR **d)
{
        if (*d)
                closedir(*d);
}

/* ------------------------------------------------------------------------------------ */
/* Lists of strings                                                                       */
/* ------------------------------------------------------------------------------------ */

struct names {
        char **v;
        size_t n;
        size_t alloc;
};

static void names_push(struct names *s, char *str)
{
        XGROW(s->v, s->n + 1, s->alloc);
        s->v[s->n++] = str;
}

static char *names_pop(struct names *s)
{
        return s->n ? s->v[--s->n] : NULL;
}

static void names_release(struct names *s)
{
        size_t i;

        for (i = 0; i < s->n; i++)
                free(s->v[i]);
        free(s->v);
        *s = (struct names){ 0 };
}

static int cmp_names(const void *a, const void *b)
{
        return strcmp(*(char *const *) a, *(char *const *) b);
}

/* ------------------------------------------------------------------------------------ */
/* Paths                                                                                  */
/* ------------------------------------------------------------------------------------ */

/* Appends the components of `path`, cleaned lexically: no "" or ".", and ".." removes the
 * previous component but stops at the top (as RESOLVE_IN_ROOT treats it). */
static void path_clean(const char *path, size_t len, struct names *out)
{
        const char *p = path, *end = path + len;

        while (p < end) {
                const char *slash = memchr(p, '/', (size_t) (end - p));
                const char *stop = slash ? slash : end;
                size_t n = (size_t) (stop - p);

                if (n == 2 && p[0] == '.' && p[1] == '.')
                        free(names_pop(out));
                else if (n > 0 && !(n == 1 && p[0] == '.'))
                        names_push(out, xstrndup(p, n));
                p = slash ? slash + 1 : end;
        }
}

/* "a/b/c" from components [from, to); "" when empty. */
static char *path_join(char *const *comps, size_t from, size_t to)
{
        size_t len = 0, i;
        char *s, *p;

        for (i = from; i < to; i++)
                len += strlen(comps[i]) + 1;
        s = p = xmalloc(len + 1);
        for (i = from; i < to; i++) {
                if (i > from)
                        *p++ = '/';
                p = stpcpy(p, comps[i]);
        }
        *p = '\0';
        return s;
}

static char *path_child(const char *dir, const char *name)
{
        return dir && dir[0] ? xasprintf("%s/%s", dir, name) : xstrdup(name);
}

static const char *base_name(const char *path)
{
        const char *slash = strrchr(path, '/');

        return slash ? slash + 1 : path;
}

/* ------------------------------------------------------------------------------------ */
/* Go's filepath.Match, for one path component                                            */
/* ------------------------------------------------------------------------------------ */

/* Whether a component holds '*', '?' or '[' not escaped by '\' (fsutil's containsWildcards). */
static bool has_wildcard(const char *s)
{
        for (; *s; s++) {
                if (*s == '\\') {
                        if (!s[1])
                                break;
                        s++;
                } else if (*s == '*' || *s == '?' || *s == '[') {
                        return true;
                }
        }
        return false;
}

static size_t rune_at(const char *s, uint32_t *ret)
{
        return kiln_utf8_decode(s, strlen(s), ret);
}

/* One character of a class, '\' escaping; -1 for what Go calls ErrBadPattern. */
static int class_char(const char **p, uint32_t *ret)
{
        if (**p == '\0' || **p == '-' || **p == ']')
                return -1;
        if (**p == '\\') {
                (*p)++;
                if (**p == '\0')
                        return -1;
        }
        *p += rune_at(*p, ret);
        return 0;
}

/* Matches `r` against the class after '[' at *p and moves *p past its ']': 1, 0, or -1 when
 * malformed. */
static int class_match(const char **p, uint32_t r)
{
        bool negate = false, match = false;
        size_t n = 0;

        if (**p == '^') {
                negate = true;
                (*p)++;
        }
        for (;;) {
                uint32_t lo, hi;

                if (**p == ']' && n > 0) {
                        (*p)++;
                        break;
                }
                if (class_char(p, &lo) < 0)
                        return -1;
                hi = lo;
                if (**p == '-') {
                        (*p)++;
                        if (class_char(p, &hi) < 0)
                                return -1;
                }
                if (lo <= r && r <= hi)
                        match = true;
                n++;
        }
        return match != negate;
}

/* Matches the pattern token at *p (not '*') against the character at *s, advancing both. */
static int token_match(const char **p, const char **s)
{
        uint32_t r;
        size_t len;
        int m;

        if (**s == '\0' || **p == '\0')
                return 0;
        len = rune_at(*s, &r);
        if (**p == '?') {
                (*p)++;
        } else if (**p == '[') {
                (*p)++;
                m = class_match(p, r);
                if (m <= 0)
                        return m;
        } else {
                if (**p == '\\') {
                        (*p)++;
                        if (**p == '\0')
                                return -1;
                }
                if (**p != **s)
                        return 0;
                (*p)++;
                (*s)++;
                return 1;
        }
        *s += len;
        return 1;
}

/* filepath.Match(pat, name) for a name without '/'; a malformed pattern matches nothing (fsutil
 * ignores Match's error). Backtracks only to the last '*', so it is O(len(pat) * len(name)). */
static bool glob_match(const char *pat, const char *name)
{
        const char *p = pat, *s = name, *star_p = NULL, *star_s = NULL;

        while (*s) {
                const char *np = p, *ns = s;
                uint32_t r;
                int m;

                if (*p == '*') {
                        while (*p == '*')
                                p++;
                        star_p = p;
                        star_s = s;
                        continue;
                }
                m = token_match(&np, &ns);
                if (m < 0)
                        return false;
                if (m > 0) {
                        p = np;
                        s = ns;
                        continue;
                }
                if (!star_p)
                        return false;
                star_s += rune_at(star_s, &r);
                p = star_p;
                s = star_s;
        }
        while (*p == '*')
                p++;
        return *p == '\0';
}

/* ------------------------------------------------------------------------------------ */
/* --chmod                                                                                */
/* ------------------------------------------------------------------------------------ */

enum { WHO_U = 1, WHO_G = 2, WHO_O = 4, WHO_ALL = 7 };

struct mode_action {
        unsigned who;
        char op; /* '+', '-', '=' */
        mode_t bits;
        bool x_if; /* 'X': execute when a directory or executable by someone */
        char copy; /* 'u', 'g', 'o': the bits another class has; else 0 */
};

struct mode_spec {
        bool octal;
        mode_t value;
        struct mode_action *acts;
        size_t n;
        size_t alloc;
};

static void mode_spec_release(struct mode_spec *m)
{
        free(m->acts);
        *m = (struct mode_spec){ 0 };
}

static mode_t perm_bit(char c, bool *x_if)
{
        switch (c) {
        case 'r':
                return 0444;
        case 'w':
                return 0222;
        case 'x':
                return 0111;
        case 's':
                return 06000;
        case 't':
                return 01000;
        case 'X':
                *x_if = true;
                return 0;
        }
        return 0;
}

/* Parses what df_check_chmod() accepts: octal, or [ugoa]*([-+=]([rwxXst]*|[ugo]))+ clauses
 * joined by commas. */
static int mode_parse(const char *s, struct mode_spec *ret, struct kiln_error **err)
{
        const char *p = s;

        if (df_check_chmod(s, err) < 0)
                return -1;
        if (*s >= '0' && *s <= '9') {
                ret->octal = true;
                ret->value = (mode_t) strtoul(s, NULL, 8) & 07777;
                return 0;
        }
        while (*p) {
                unsigned who = 0;

                for (; *p && strchr("ugoa", *p); p++)
                        who |= *p == 'u' ? WHO_U : *p == 'g' ? WHO_G : *p == 'o' ? WHO_O : WHO_ALL;
                while (*p == '+' || *p == '-' || *p == '=') {
                        struct mode_action a = { .who = who ? who : WHO_ALL, .op = *p++ };

                        if (*p && strchr("ugo", *p) &&
                            (p[1] == '\0' || p[1] == ',' || p[1] == '+' || p[1] == '-' ||
                             p[1] == '='))
                                a.copy = *p++;
                        else
                                for (; *p && strchr("rwxXst", *p); p++)
                                        a.bits |= perm_bit(*p, &a.x_if);
                        XGROW(ret->acts, ret->n + 1, ret->alloc);
                        ret->acts[ret->n++] = a;
                }
                if (*p == ',')
                        p++;
        }
        return 0;
}

static mode_t class_mask(unsigned who)
{
        return ((who & WHO_U) ? 04700 : 0) | ((who & WHO_G) ? 02070 : 0) |
               ((who & WHO_O) ? 01007 : 0);
}

static mode_t mode_apply(const struct mode_spec *ms, mode_t mode, bool dir)
{
        size_t i;

        if (ms->octal)
                return ms->value;
        for (i = 0; i < ms->n; i++) {
                const struct mode_action *a = &ms->acts[i];
                mode_t bits = a->bits;

                if (a->x_if && (dir || (mode & 0111)))
                        bits |= 0111;
                if (a->copy) {
                        unsigned shift = a->copy == 'u' ? 6 : a->copy == 'g' ? 3 : 0;
                        mode_t v = (mode >> shift) & 7;
                        bits |= (v << 6) | (v << 3) | v;
                }
                bits &= class_mask(a->who);
                if (a->op == '+')
                        mode |= bits;
                else if (a->op == '-')
                        mode &= ~bits;
                else
                        mode = (mode & ~class_mask(a->who)) | bits;
        }
        return mode & 07777;
}

/* ------------------------------------------------------------------------------------ */
/* Resolving paths inside a root                                                          */
/* ------------------------------------------------------------------------------------ */

/* Opens a real path (one resolve() returned) without following anything. */
static int open_real(int root, const char *path, int flags)
{
        return kiln_openat2_in_root(root, path, flags, 0, RESOLVE_NO_SYMLINKS);
}

static int open_failed(const char *what, const char *path, struct kiln_error **err)
{
        if (errno == ENOSYS)
                return kiln_error_errno(err, KILN_ERR_UNSUPPORTED,
                                        "openat2 is not available (Linux 5.6 or newer is needed)");
        return kiln_error_errno(err, errno == ENOENT ? KILN_ERR_NOTFOUND : KILN_ERR_IO, "%s '/%s'",
                                what, path);
}

/* The result of resolve(): comps[0, existing) exist and hold no symlink; the rest do not
 * exist (they are the cleaned remainder of the path). */
struct resolved {
        struct names comps;
        size_t existing;
        bool blocked; /* comps[existing - 1] is not a directory, yet more follows */
};

static void resolved_release(struct resolved *r)
{
        names_release(&r->comps);
}

/* Pushes the components of `path` so that the first is popped first. */
static void push_reversed(struct names *todo, const char *path)
{
        struct names tmp = { 0 };
        const char *p = path;

        while (*p) {
                const char *end = strchrnul(p, '/');
                size_t n = (size_t) (end - p);

                if (n > 0 && !(n == 1 && p[0] == '.'))
                        names_push(&tmp, xstrndup(p, n));
                p = *end ? end + 1 : end;
        }
        while (tmp.n)
                names_push(todo, names_pop(&tmp));
        names_release(&tmp);
}

static int reopen_prefix(int root, const struct resolved *r, int *cur, struct kiln_error **err)
{
        _cleanup_free_ char *prefix = path_join(r->comps.v, 0, r->existing);
        int fd = open_real(root, prefix, O_PATH | O_DIRECTORY);

        if (fd < 0)
                return open_failed("open", prefix, err);
        closep(cur);
        *cur = fd;
        return 0;
}

/* Reads a symlink named `name` in `dirfd`; malloc'd. */
static char *read_link(int dirfd, const char *name, size_t hint)
{
        size_t size = hint + 2 > 256 ? hint + 2 : 256;

        for (;;) {
                char *buf = xmalloc(size);
                ssize_t n = readlinkat(dirfd, name, buf, size);

                if (n < 0) {
                        int e = errno;
                        free(buf);
                        errno = e;
                        return NULL;
                }
                if ((size_t) n < size) {
                        buf[n] = '\0';
                        return buf;
                }
                free(buf);
                if (size > 1 << 20) {
                        errno = ENAMETOOLONG;
                        return NULL;
                }
                size *= 2;
        }
}

/* Handles one step of resolve() that meets a symlink. Returns 1 when followed. */
static int follow_link(int root, struct resolved *r, struct names *todo, int *cur, const char *comp,
                       const struct stat *st, unsigned *hops, struct kiln_error **err)
{
        _cleanup_free_ char *target = NULL;

        if (++*hops > MAX_SYMLINKS) {
                _cleanup_free_ char *p = path_join(r->comps.v, 0, r->comps.n);
                errno = ELOOP;
                return kiln_error_errno(err, KILN_ERR_INVALID, "resolve '/%s%s%s'", p,
                                        p[0] ? "/" : "", comp);
        }
        target = read_link(*cur, comp, (size_t) st->st_size);
        if (!target)
                return kiln_error_errno(err, KILN_ERR_IO, "readlink '%s'", comp);
        if (target[0] == '/') {
                names_release(&r->comps);
                r->existing = 0;
                if (reopen_prefix(root, r, cur, err) < 0)
                        return -1;
        }
        push_reversed(todo, target);
        return 1;
}

/*
 * Resolves `path` inside `root` as containerd's fs.RootPath does, following symlinks (the last
 * component's too when `follow_last`). Never fails for a missing path: what is missing is kept
 * lexically.
 */
static int resolve(int root, const char *path, bool follow_last, struct resolved *ret,
                   struct kiln_error **err)
{
        _cleanup_(names_release) struct names todo = { 0 };
        _cleanup_close_ int cur = -1;
        struct resolved r = { 0 };
        unsigned hops = 0;

        push_reversed(&todo, path);
        if (reopen_prefix(root, &r, &cur, err) < 0)
                return -1;
        while (todo.n) {
                _cleanup_free_ char *comp = names_pop(&todo);
                struct stat st;

                if (strcmp(comp, "..") == 0) {
                        if (r.comps.n == 0)
                                continue;
                        free(names_pop(&r.comps));
                        if (r.comps.n < r.existing) {
                                r.existing = r.comps.n;
                                r.blocked = false;
                                if (reopen_prefix(root, &r, &cur, err) < 0)
                                        goto fail;
                        }
                        continue;
                }
                if (r.existing < r.comps.n || r.blocked ||
                    fstatat(cur, comp, &st, AT_SYMLINK_NOFOLLOW) < 0) {
                        if (r.existing == r.comps.n && !r.blocked && errno != ENOENT) {
                                kiln_error_errno(err, KILN_ERR_IO, "stat '%s'", comp);
                                goto fail;
                        }
                        names_push(&r.comps, TAKE_PTR(comp));
                        continue;
                }
                if (S_ISLNK(st.st_mode) && (todo.n > 0 || follow_last)) {
                        if (follow_link(root, &r, &todo, &cur, comp, &st, &hops, err) < 0)
                                goto fail;
                        continue;
                }
                if (S_ISDIR(st.st_mode)) {
                        int next = openat(cur, comp, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                        if (next < 0) {
                                kiln_error_errno(err, KILN_ERR_IO, "open '%s'", comp);
                                goto fail;
                        }
                        close(cur);
                        cur = next;
                } else {
                        r.blocked = todo.n > 0;
                }
                names_push(&r.comps, TAKE_PTR(comp));
                r.existing++;
        }
        *ret = r;
        return 0;
fail:
        resolved_release(&r);
        return -1;
}

/* ------------------------------------------------------------------------------------ */
/* The copier                                                                             */
/* ------------------------------------------------------------------------------------ */

enum owner_policy {
        OWNER_ROOT, /* 0:0 */
        OWNER_KEEP, /* the source's (an unpacked archive's) */
        OWNER_SET,  /* --chown */
        _OWNER_MAX,
};

/* A copied file with more than one link: where its first copy went. */
struct link_slot {
        uint64_t dev;
        uint64_t ino;
        char *dest; /* path in the destination root; NULL: an empty slot */
};

struct link_map {
        struct link_slot *slots;
        size_t n;
        size_t cap; /* 0 or a power of two */
};

struct copier {
        int srcroot;                     /* the source root (O_PATH) */
        int destroot;                    /* the image root (O_PATH) */
        const struct df_ignore *ignore;  /* .dockerignore, on source-root paths, or NULL */
        const struct df_ignore *exclude; /* --exclude, or NULL */
        enum owner_policy owner;
        uint32_t uid, gid;            /* OWNER_SET, and directories made for the destination */
        const struct mode_spec *mode; /* --chmod, or NULL */
        struct link_map links;
        char *buf;
        struct timespec now;
        /* cp_walk(): entries are passed to `visit` instead of copied (no destination) */
        int (*visit)(void *ctx, const struct cp_entry *e, struct kiln_error **err);
        void *visit_ctx;
};

static void link_map_release(struct link_map *m)
{
        size_t i;

        for (i = 0; i < m->cap; i++)
                free(m->slots[i].dest);
        free(m->slots);
        *m = (struct link_map){ 0 };
}

static struct link_slot *link_slot(const struct link_map *m, uint64_t dev, uint64_t ino)
{
        uint64_t h = (ino ^ (dev * UINT64_C(0x9e3779b97f4a7c15))) * UINT64_C(0xbf58476d1ce4e5b9);
        size_t mask = m->cap - 1, i = (size_t) (h >> 17) & mask;

        while (m->slots[i].dest && (m->slots[i].dev != dev || m->slots[i].ino != ino))
                i = (i + 1) & mask;
        return &m->slots[i];
}

static const char *link_find(const struct link_map *m, const struct stat *st)
{
        if (!m->cap)
                return NULL;
        return link_slot(m, (uint64_t) st->st_dev, (uint64_t) st->st_ino)->dest;
}

static void link_add(struct link_map *m, const struct stat *st, const char *dest)
{
        struct link_slot *slot;

        if (2 * (m->n + 1) > m->cap) {
                struct link_map bigger = { .cap = m->cap ? 2 * m->cap : 64, .n = m->n };
                size_t i;

                bigger.slots = xcalloc(bigger.cap, sizeof(*bigger.slots));
                for (i = 0; i < m->cap; i++)
                        if (m->slots[i].dest)
                                *link_slot(&bigger, m->slots[i].dev, m->slots[i].ino) = m->slots[i];
                free(m->slots);
                *m = bigger;
        }
        slot = link_slot(m, (uint64_t) st->st_dev, (uint64_t) st->st_ino);
        if (slot->dest)
                return;
        *slot = (struct link_slot){ (uint64_t) st->st_dev, (uint64_t) st->st_ino, xstrdup(dest) };
        m->n++;
}

/* A source entry: `name` in the open directory `dirfd`, or inline content. */
struct src {
        int dirfd;
        const char *name;
        const char *path;  /* real path in the source root, for .dockerignore and messages */
        const char *xpath; /* below the copied source, for --exclude; NULL: its top */
        struct stat st;
        const char *data; /* inline content, or NULL */
        size_t len;
        const struct cp_fetched *fetched; /* a download, or NULL */
        bool lazy; /* an excluded directory entered for children "!" patterns bring back */
};

/* Where it goes: `name` in the open directory `dirfd`, `path` in the image (for messages and
 * hardlinks). */
struct dst {
        int dirfd;
        const char *name;
        const char *path;
};

static void owner_of(const struct copier *c, const struct stat *st, uid_t *uid, gid_t *gid)
{
        switch (c->owner) {
        case OWNER_ROOT:
                *uid = 0;
                *gid = 0;
                return;
        case OWNER_KEEP:
                *uid = st->st_uid;
                *gid = st->st_gid;
                return;
        case OWNER_SET:
        case _OWNER_MAX:
                break;
        }
        *uid = c->uid;
        *gid = c->gid;
}

static mode_t mode_of(const struct copier *c, const struct stat *st)
{
        mode_t mode = st->st_mode & 07777;

        return c->mode ? mode_apply(c->mode, mode, S_ISDIR(st->st_mode)) : mode;
}

static bool skipped_xattr(const char *name)
{
        /* overlayfs' own attributes would turn entries into whiteouts or redirects; kiln's
         * owner record belongs to the tree it was written in. */
        return strncmp(name, "trusted.overlay.", 16) == 0 ||
               strncmp(name, "user.overlay.", 13) == 0 || strcmp(name, LAYER_OWNER_XATTR) == 0;
}

/* Copies extended attributes, best effort as BuildKit does (it logs and goes on). */
static void copy_xattrs(int in, int out)
{
        _cleanup_free_ char *list = NULL;
        ssize_t len = flistxattr(in, NULL, 0);
        const char *name;

        if (len <= 0)
                return;
        list = xmalloc((size_t) len);
        len = flistxattr(in, list, (size_t) len);
        for (name = list; len > 0 && name < list + len; name += strlen(name) + 1) {
                char value[4096];
                ssize_t n;

                if (skipped_xattr(name))
                        continue;
                n = fgetxattr(in, name, value, sizeof(value));
                if (n >= 0)
                        (void) fsetxattr(out, name, value, (size_t) n, 0);
        }
}

static void times_of(const struct src *s, struct timespec ts[2])
{
        ts[0] = s->st.st_atim;
        ts[1] = s->st.st_mtim;
}

/* Owner, mode, xattrs and times of an open file or directory (in that order: chown clears
 * setuid bits and file capabilities). `in` is the source, for its xattrs, or -1. */
static int meta_fd(const struct copier *c, const struct src *s, int fd, int in, const char *path,
                   struct kiln_error **err)
{
        struct timespec ts[2];
        uid_t uid;
        gid_t gid;

        owner_of(c, &s->st, &uid, &gid);
        if (fchown(fd, uid, gid) < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "chown '/%s' to %u:%u", path,
                                        (unsigned) uid, (unsigned) gid);
        if (fchmod(fd, mode_of(c, &s->st)) < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "chmod '/%s'", path);
        if (in >= 0)
                copy_xattrs(in, fd);
        times_of(s, ts);
        if (futimens(fd, ts) < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "set times of '/%s'", path);
        return 0;
}

/* The same for a symlink or a node just made, by name, never following it. */
static int meta_at(const struct copier *c, const struct src *s, const struct dst *d,
                   struct kiln_error **err)
{
        struct timespec ts[2];
        uid_t uid;
        gid_t gid;

        owner_of(c, &s->st, &uid, &gid);
        if (fchownat(d->dirfd, d->name, uid, gid, AT_SYMLINK_NOFOLLOW) < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "chown '/%s' to %u:%u", d->path,
                                        (unsigned) uid, (unsigned) gid);
        /* A fifo or device node this copy just made, not a symlink: chmod may follow. */
        if (!S_ISLNK(s->st.st_mode) && fchmodat(d->dirfd, d->name, mode_of(c, &s->st), 0) < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "chmod '/%s'", d->path);
        times_of(s, ts);
        if (utimensat(d->dirfd, d->name, ts, AT_SYMLINK_NOFOLLOW) < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "set times of '/%s'", d->path);
        return 0;
}

/* A directory made for the destination (BuildKit's MkdirAll): 0755, the --chown ids or 0:0. */
static int meta_made_dir(const struct copier *c, int fd, bool chown_set, const char *path,
                         struct kiln_error **err)
{
        uid_t uid = chown_set ? c->uid : 0;
        gid_t gid = chown_set ? c->gid : 0;

        if (fchown(fd, uid, gid) < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "chown '/%s' to %u:%u", path,
                                        (unsigned) uid, (unsigned) gid);
        if (fchmod(fd, 0755) < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "chmod '/%s'", path);
        return 0;
}

/* ------------------------------------------------------------------------------------ */
/* Copying one entry                                                                      */
/* ------------------------------------------------------------------------------------ */

static int copy_entry(struct copier *c, const struct src *s, const struct dst *d, bool *ret_copied,
                      struct kiln_error **err);

/* Removes what is at the destination name for an entry that is not a directory. */
static int clear_target(const struct dst *d, struct kiln_error **err)
{
        struct stat st;

        if (fstatat(d->dirfd, d->name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
                if (errno == ENOENT)
                        return 0;
                return kiln_error_errno(err, KILN_ERR_IO, "stat '/%s'", d->path);
        }
        if (S_ISDIR(st.st_mode))
                return kiln_error_new(err, KILN_ERR_INVALID,
                                      "cannot replace directory '/%s' with a file", d->path);
        if (unlinkat(d->dirfd, d->name, 0) < 0 && errno != ENOENT)
                return kiln_error_errno(err, KILN_ERR_IO, "remove '/%s'", d->path);
        return 0;
}

/* Opens a source entry (never through a symlink) and checks it is still what was listed. */
static int open_src(const struct src *s, int flags, struct kiln_error **err)
{
        _cleanup_close_ int fd = openat(s->dirfd, s->name, flags | O_NOFOLLOW | O_CLOEXEC);
        struct stat st;

        if (fd < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "open '/%s'", s->path);
        if (fstat(fd, &st) < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "stat '/%s'", s->path);
        if (st.st_dev != s->st.st_dev || st.st_ino != s->st.st_ino)
                return kiln_error_new(err, KILN_ERR_IO, "'/%s' changed while being copied",
                                      s->path);
        return TAKE_FD(fd);
}

static int copy_data(struct copier *c, int in, int out, const char *path, struct kiln_error **err)
{
        bool plain = false;

        for (;;) {
                ssize_t n;

                if (!plain) {
                        n = copy_file_range(in, NULL, out, NULL, (size_t) 1 << 30, 0);
                        if (n < 0 && (errno == EXDEV || errno == EINVAL || errno == ENOSYS ||
                                      errno == EOPNOTSUPP || errno == EBADF || errno == EPERM)) {
                                plain = true;
                                continue;
                        }
                } else {
                        n = read(in, c->buf, CHUNK_SIZE);
                        if (n > 0 && kiln_write_all(out, c->buf, (size_t) n, NULL) < 0)
                                return kiln_error_errno(err, KILN_ERR_IO, "write '/%s'", path);
                }
                if (n == 0)
                        return 0;
                if (n < 0 && errno != EINTR)
                        return kiln_error_errno(err, KILN_ERR_IO, "copy '/%s'", path);
        }
}

/* A download's content, from offset 0 without moving the fd's offset (it may be copied again,
 * or by another process sharing it). */
static int copy_fetched(struct copier *c, int in, int out, const char *path,
                        struct kiln_error **err)
{
        loff_t off = 0;
        bool plain = false;

        for (;;) {
                ssize_t n;

                if (!plain) {
                        n = copy_file_range(in, &off, out, NULL, (size_t) 1 << 30, 0);
                        if (n < 0 && (errno == EXDEV || errno == EINVAL || errno == ENOSYS ||
                                      errno == EOPNOTSUPP || errno == EBADF || errno == EPERM)) {
                                plain = true;
                                continue;
                        }
                } else {
                        n = pread(in, c->buf, CHUNK_SIZE, off);
                        if (n > 0 && kiln_write_all(out, c->buf, (size_t) n, NULL) < 0)
                                return kiln_error_errno(err, KILN_ERR_IO, "write '/%s'", path);
                }
                if (n == 0)
                        return 0;
                if (n < 0 && errno != EINTR)
                        return kiln_error_errno(err, KILN_ERR_IO, "copy '/%s'", path);
                if (n > 0 && plain)
                        off += n;
        }
}

/* A file whose inode was copied already becomes a hardlink to that copy. 1 when linked. */
static int try_link(struct copier *c, const struct src *s, const struct dst *d,
                    struct kiln_error **err)
{
        const char *first = link_find(&c->links, &s->st);
        _cleanup_free_ char *parent = NULL;
        _cleanup_close_ int pfd = -1;

        if (!first)
                return 0;
        if (strcmp(first, d->path) == 0)
                return 1; /* the very same path, copied again */
        parent = xstrndup(first, (size_t) (base_name(first) - first));
        pfd = open_real(c->destroot, parent, O_PATH | O_DIRECTORY);
        if (pfd < 0)
                return 0;
        if (clear_target(d, err) < 0)
                return -1;
        return linkat(pfd, base_name(first), d->dirfd, d->name, 0) == 0;
}

static int copy_file(struct copier *c, const struct src *s, const struct dst *d,
                     struct kiln_error **err)
{
        _cleanup_close_ int in = -1, out = -1;
        int r;

        if (!s->data && s->st.st_nlink > 1) {
                r = try_link(c, s, d, err);
                if (r != 0)
                        return r < 0 ? -1 : 0;
        }
        if (clear_target(d, err) < 0)
                return -1;
        out = openat(d->dirfd, d->name,
                     O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC, 0600);
        if (out < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "create '/%s'", d->path);
        if (s->fetched) {
                if (copy_fetched(c, s->fetched->fd, out, d->path, err) < 0)
                        return -1;
        } else if (s->data) {
                if (kiln_write_all(out, s->data, s->len, NULL) < 0)
                        return kiln_error_errno(err, KILN_ERR_IO, "write '/%s'", d->path);
        } else {
                /* O_NONBLOCK: a fifo swapped in cannot block us (open_src checks the inode). */
                in = open_src(s, O_RDONLY | O_NONBLOCK | O_NOCTTY, err);
                if (in < 0 || copy_data(c, in, out, d->path, err) < 0)
                        return -1;
        }
        if (meta_fd(c, s, out, in, d->path, err) < 0)
                return -1;
        if (!s->data && s->st.st_nlink > 1)
                link_add(&c->links, &s->st, d->path);
        return 0;
}

static int copy_symlink(struct copier *c, const struct src *s, const struct dst *d,
                        struct kiln_error **err)
{
        _cleanup_free_ char *target = read_link(s->dirfd, s->name, (size_t) s->st.st_size);

        if (!target)
                return kiln_error_errno(err, KILN_ERR_IO, "readlink '/%s'", s->path);
        if (clear_target(d, err) < 0)
                return -1;
        if (symlinkat(target, d->dirfd, d->name) < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "symlink '/%s'", d->path);
        return meta_at(c, s, d, err);
}

static int copy_special(struct copier *c, const struct src *s, const struct dst *d,
                        struct kiln_error **err)
{
        if (clear_target(d, err) < 0)
                return -1;
        if (mknodat(d->dirfd, d->name, (s->st.st_mode & S_IFMT) | 0600, s->st.st_rdev) < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "mknod '/%s'", d->path);
        return meta_at(c, s, d, err);
}

/* Whether a matcher excludes `path`: 0 no, 1 yes, 2 yes but a directory to enter because "!"
 * patterns may bring some of its children back. */
static int ignored_by(const struct df_ignore *ig, const char *path, bool dir,
                      struct kiln_error **err)
{
        bool excluded = false;

        if (!ig || !path || !path[0])
                return 0;
        if (df_ignore_matches(ig, path, &excluded, err) < 0)
                return -1;
        if (!excluded)
                return 0;
        return dir && df_ignore_has_exclusions(ig) ? 2 : 1;
}

static int skip_child(const struct copier *c, struct src *s, struct kiln_error **err)
{
        bool dir = S_ISDIR(s->st.st_mode);
        int a, b;

        a = ignored_by(c->exclude, s->xpath, dir, err);
        if (a < 0 || a == 1)
                return a;
        b = ignored_by(c->ignore, s->path, dir, err);
        if (b < 0 || b == 1)
                return b;
        s->lazy = a == 2 || b == 2;
        return 0;
}

/* The names in a directory, sorted (Go's ReadDir order). */
static int list_dir(int dirfd, const char *path, struct names *ret, struct kiln_error **err)
{
        _cleanup_(closedirp) DIR *d = NULL;
        int fd = fcntl(dirfd, F_DUPFD_CLOEXEC, 3);

        if (fd < 0 || lseek(fd, 0, SEEK_SET) < 0 || !(d = fdopendir(fd))) {
                if (fd >= 0)
                        close(fd);
                return kiln_error_errno(err, KILN_ERR_IO, "list '/%s'", path);
        }
        for (;;) {
                struct dirent *de;

                errno = 0;
                de = readdir(d);
                if (!de) {
                        if (errno)
                                return kiln_error_errno(err, KILN_ERR_IO, "list '/%s'", path);
                        break;
                }
                if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
                        names_push(ret, xstrdup(de->d_name));
        }
        if (ret->n)
                qsort(ret->v, ret->n, sizeof(*ret->v), cmp_names);
        return 0;
}

/* Copies the entries of the source directory `in` into the destination directory `out`. */
static int copy_children(struct copier *c, int in, const char *path, const char *xpath, int out,
                         const char *dpath, bool *ret_copied, struct kiln_error **err)
{
        _cleanup_(names_release) struct names names = { 0 };
        size_t i;

        if (list_dir(in, path, &names, err) < 0)
                return -1;
        for (i = 0; i < names.n; i++) {
                _cleanup_free_ char *cpath = path_child(path, names.v[i]);
                _cleanup_free_ char *cxpath = path_child(xpath, names.v[i]);
                _cleanup_free_ char *cdpath = path_child(dpath, names.v[i]);
                struct src s = { .dirfd = in, .name = names.v[i], .path = cpath, .xpath = cxpath };
                struct dst d = { .dirfd = out, .name = names.v[i], .path = cdpath };
                bool copied = false;
                int r;

                if (fstatat(in, s.name, &s.st, AT_SYMLINK_NOFOLLOW) < 0) {
                        if (errno == ENOENT)
                                continue;
                        return kiln_error_errno(err, KILN_ERR_IO, "stat '/%s'", cpath);
                }
                r = skip_child(c, &s, err);
                if (r < 0)
                        return -1;
                if (r > 0)
                        continue;
                if (copy_entry(c, &s, &d, &copied, err) < 0)
                        return -1;
                if (copied && ret_copied)
                        *ret_copied = true;
        }
        return 0;
}

/* A directory below the copied source: made (or kept) with the source's metadata. */
static int copy_dir(struct copier *c, const struct src *s, const struct dst *d, bool *ret_copied,
                    struct kiln_error **err)
{
        _cleanup_close_ int in = -1, out = -1;
        bool created = false, copied = false;
        struct stat st;

        in = open_src(s, O_RDONLY | O_DIRECTORY, err);
        if (in < 0)
                return -1;
        if (fstatat(d->dirfd, d->name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
                if (errno != ENOENT)
                        return kiln_error_errno(err, KILN_ERR_IO, "stat '/%s'", d->path);
                if (mkdirat(d->dirfd, d->name, 0700) < 0)
                        return kiln_error_errno(err, KILN_ERR_IO, "mkdir '/%s'", d->path);
                created = true;
        } else if (!S_ISDIR(st.st_mode)) {
                return kiln_error_new(err, KILN_ERR_INVALID, "cannot copy to non-directory: '/%s'",
                                      d->path);
        }
        out = openat(d->dirfd, d->name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (out < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "open '/%s'", d->path);
        if (copy_children(c, in, s->path, s->xpath, out, d->path, &copied, err) < 0)
                return -1;
        if (s->lazy && !copied) {
                /* Nothing of an excluded directory came back: it is not there. */
                if (created && unlinkat(d->dirfd, d->name, AT_REMOVEDIR) < 0)
                        return kiln_error_errno(err, KILN_ERR_IO, "remove '/%s'", d->path);
                return 0;
        }
        *ret_copied = true;
        /* Metadata last: children change the mtime, and a read-only mode could stop them. */
        return meta_fd(c, s, out, in, d->path, err);
}

/* cp_walk(): an entry passed to the visitor instead of copied, then a directory's children. */
static int visit_entry(struct copier *c, const struct src *s, const struct cp_entry *top,
                       bool *ret_copied, struct kiln_error **err)
{
        mode_t type = s->st.st_mode & S_IFMT;
        _cleanup_free_ char *target = NULL;
        _cleanup_close_ int in = -1;
        struct cp_entry e = top ? *top : (struct cp_entry){ 0 };

        *ret_copied = false;
        if (type == S_IFSOCK)
                return 0; /* nothing a layer can hold: copy_entry() skips it */
        if (s->fetched)
                return kiln_error_new(err, KILN_ERR_UNSUPPORTED, "'%s': a download is not listed",
                                      s->fetched->src);
        e.path = s->data ? s->name : s->path;
        e.st = &s->st;
        e.mode = mode_of(c, &s->st);
        e.dirfd = s->data ? -1 : s->dirfd;
        e.name = s->name;
        e.data = s->data;
        e.len = s->len;
        e.is_inline = s->data != NULL;
        if (type == S_IFLNK) {
                target = read_link(s->dirfd, s->name, (size_t) s->st.st_size);
                if (!target)
                        return kiln_error_errno(err, KILN_ERR_IO, "readlink '/%s'", s->path);
                e.link = target;
        }
        /* as copy_file() links them: within one source, by inode */
        if (type == S_IFREG && !s->data && s->st.st_nlink > 1) {
                e.hardlink = link_find(&c->links, &s->st);
                if (!e.hardlink)
                        link_add(&c->links, &s->st, s->path);
        }
        if (c->visit(c->visit_ctx, &e, err) < 0)
                return -1;
        *ret_copied = true;
        if (type != S_IFDIR)
                return 0;
        in = open_src(s, O_RDONLY | O_DIRECTORY, err);
        if (in < 0)
                return -1;
        return copy_children(c, in, s->path, s->xpath, -1, "", NULL, err);
}

static int copy_entry(struct copier *c, const struct src *s, const struct dst *d, bool *ret_copied,
                      struct kiln_error **err)
{
        mode_t type = s->st.st_mode & S_IFMT;
        int r;

        if (c->visit)
                return visit_entry(c, s, NULL, ret_copied, err);
        *ret_copied = false;
        if (type == S_IFDIR)
                return copy_dir(c, s, d, ret_copied, err);
        if (type == S_IFREG)
                r = copy_file(c, s, d, err);
        else if (type == S_IFLNK)
                r = copy_symlink(c, s, d, err);
        else if (type == S_IFIFO || type == S_IFCHR || type == S_IFBLK)
                r = copy_special(c, s, d, err);
        else
                return 0; /* a socket: nothing a layer can hold */
        if (r < 0)
                return -1;
        *ret_copied = true;
        return 0;
}

/* ------------------------------------------------------------------------------------ */
/* Removing a scratch tree                                                                */
/* ------------------------------------------------------------------------------------ */

/* Removes `name` in `dirfd` and all below it, never following a symlink. */
static int remove_tree(int dirfd, const char *name, const char *path, struct kiln_error **err)
{
        _cleanup_(names_release) struct names names = { 0 };
        _cleanup_close_ int fd = -1;
        struct stat st;
        size_t i;

        if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                return errno == ENOENT ? 0
                                       : kiln_error_errno(err, KILN_ERR_IO, "remove '%s'", path);
        if (!S_ISDIR(st.st_mode)) {
                if (unlinkat(dirfd, name, 0) < 0 && errno != ENOENT)
                        return kiln_error_errno(err, KILN_ERR_IO, "remove '%s'", path);
                return 0;
        }
        fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0 || (fchmod(fd, 0700) < 0 && errno != EPERM) ||
            list_dir(fd, path, &names, NULL) < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "remove '%s'", path);
        for (i = 0; i < names.n; i++)
                if (remove_tree(fd, names.v[i], path, err) < 0)
                        return -1;
        if (unlinkat(dirfd, name, AT_REMOVEDIR) < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "remove '%s'", path);
        return 0;
}

static bool dir_is_empty(int fd)
{
        _cleanup_(names_release) struct names names = { 0 };

        return list_dir(fd, "", &names, NULL) == 0 && names.n == 0;
}

/* ------------------------------------------------------------------------------------ */
/* Sources                                                                                */
/* ------------------------------------------------------------------------------------ */

struct item {
        struct names comps; /* as written and cleaned, wildcards replaced by what they matched */
        size_t kept_from;   /* --parents: comps[kept_from..] are kept under the destination */
        char *real;         /* resolved in the source root */
        char *raw;          /* the source as written, for messages */
        struct stat st;
        bool lazy;
        bool literal;
        const char *data; /* inline content */
        size_t len;
        bool is_inline;                   /* inline content or a download */
        size_t source;                    /* which of the sources as written it came from */
        const struct cp_fetched *fetched; /* a download */
};

struct items {
        struct item *v;
        size_t n;
        size_t alloc;
};

static void items_release(struct items *items)
{
        size_t i;

        for (i = 0; i < items->n; i++) {
                names_release(&items->v[i].comps);
                free(items->v[i].real);
                free(items->v[i].raw);
        }
        free(items->v);
        *items = (struct items){ 0 };
}

static struct item *items_add(struct items *items, const char *raw)
{
        struct item *it;

        XGROW(items->v, items->n + 1, items->alloc);
        it = &items->v[items->n++];
        *it = (struct item){ .raw = xstrdup(raw) };
        return it;
}

/* The name an item has at the destination: the last component as written. */
static const char *item_name(const struct item *it)
{
        return it->comps.n ? it->comps.v[it->comps.n - 1] : "";
}

static void copy_comps(struct names *to, char *const *from, size_t n)
{
        size_t i;

        for (i = 0; i < n; i++)
                names_push(to, xstrdup(from[i]));
}

/* Collects the matches of pattern components pat[0..npat) below the directory `dirfd`, whose
 * written path is `prefix`. Only real directories are entered (filepath.Walk). */
static int glob_walk(int dirfd, const struct names *prefix, char *const *pat, size_t npat,
                     const char *raw, size_t kept_from, struct items *out, struct kiln_error **err)
{
        _cleanup_(names_release) struct names names = { 0 };
        size_t i;

        if (list_dir(dirfd, raw, &names, err) < 0)
                return -1;
        for (i = 0; i < names.n; i++) {
                _cleanup_(names_release) struct names here = { 0 };
                _cleanup_close_ int sub = -1;
                struct stat st;

                if (!glob_match(pat[0], names.v[i]))
                        continue;
                copy_comps(&here, prefix->v, prefix->n);
                names_push(&here, xstrdup(names.v[i]));
                if (npat == 1) {
                        struct item *it = items_add(out, raw);
                        it->comps = here;
                        here = (struct names){ 0 };
                        it->kept_from = kept_from;
                        continue;
                }
                if (fstatat(dirfd, names.v[i], &st, AT_SYMLINK_NOFOLLOW) < 0 ||
                    !S_ISDIR(st.st_mode))
                        continue;
                sub = openat(dirfd, names.v[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (sub < 0)
                        continue;
                if (glob_walk(sub, &here, pat + 1, npat - 1, raw, kept_from, out, err) < 0)
                        return -1;
        }
        return 0;
}

/* Expands a source with wildcards into items (none when nothing matches). */
static int expand_wildcards(const struct copier *c, const char *raw, struct names *comps, size_t w,
                            size_t kept_from, struct items *out, struct kiln_error **err)
{
        _cleanup_(resolved_release) struct resolved base = { 0 };
        _cleanup_free_ char *d1 = path_join(comps->v, 0, w), *real = NULL;
        _cleanup_close_ int fd = -1;
        struct names prefix = { .v = comps->v, .n = w };

        if (resolve(c->srcroot, d1, true, &base, err) < 0)
                return -1;
        if (base.existing < base.comps.n)
                return 0;
        real = path_join(base.comps.v, 0, base.comps.n);
        fd = open_real(c->srcroot, real, O_RDONLY | O_DIRECTORY);
        if (fd < 0)
                return 0; /* not a directory: nothing below it matches */
        return glob_walk(fd, &prefix, comps->v + w, comps->n - w, raw, kept_from, out, err);
}

/* Turns one source as written into items: inline content, a literal path or the matches of a
 * pattern. */
static int expand_source(const struct copier *c, const struct cp_opts *o, const char *raw,
                         bool *ret_pattern, struct items *out, struct kiln_error **err)
{
        _cleanup_(names_release) struct names comps = { 0 };
        const char *pivot = o->parents ? strstr(raw, "/./") : NULL;
        size_t i, w, kept_from = 0;
        struct item *it;

        *ret_pattern = false;
        for (i = 0; i < o->n_fetched; i++) {
                if (strcmp(raw, o->fetched[i].src) != 0)
                        continue;
                it = items_add(out, raw);
                names_push(&it->comps, xstrdup(o->fetched[i].name));
                it->is_inline = true;
                it->fetched = &o->fetched[i];
                return 0;
        }
        for (i = 0; i < o->n_inline; i++) {
                if (strcmp(raw, o->inline_names[i]) != 0)
                        continue;
                it = items_add(out, raw);
                path_clean(raw, strlen(raw), &it->comps);
                it->is_inline = true;
                it->data = o->inline_data[i] ? o->inline_data[i] : "";
                it->len = o->inline_len ? o->inline_len[i] : strlen(it->data);
                return 0;
        }
        if (pivot) {
                path_clean(raw, (size_t) (pivot - raw), &comps);
                kept_from = comps.n;
                path_clean(pivot, strlen(pivot), &comps);
                if (kept_from > comps.n)
                        kept_from = comps.n;
        } else {
                path_clean(raw, strlen(raw), &comps);
        }
        for (w = 0; w < comps.n && !has_wildcard(comps.v[w]); w++)
                ;
        if (w < comps.n) {
                *ret_pattern = true;
                return expand_wildcards(c, raw, &comps, w, kept_from, out, err);
        }
        it = items_add(out, raw);
        it->comps = comps;
        comps = (struct names){ 0 };
        it->kept_from = kept_from;
        it->literal = true;
        return 0;
}

/* Resolves an item in the source root and applies the ignore files. 1 when it is absent. */
static int resolve_item(const struct copier *c, struct item *it, struct kiln_error **err)
{
        _cleanup_(resolved_release) struct resolved r = { 0 };
        _cleanup_free_ char *lex = NULL, *parent = NULL;
        _cleanup_close_ int pfd = -1;
        int a, b;

        if (it->fetched) {
                it->st = (struct stat){ .st_mode = S_IFREG | 0600, .st_nlink = 1 };
                it->st.st_atim = it->st.st_mtim =
                        it->fetched->has_mtime ? it->fetched->mtime : c->now;
                return 0;
        }
        if (it->is_inline) {
                it->st = (struct stat){ .st_mode = S_IFREG | 0644, .st_nlink = 1 };
                it->st.st_atim = it->st.st_mtim = c->now;
                return 0;
        }
        lex = path_join(it->comps.v, 0, it->comps.n);
        if (resolve(c->srcroot, lex, true, &r, err) < 0)
                return -1;
        if (r.existing < r.comps.n)
                return 1;
        it->real = path_join(r.comps.v, 0, r.comps.n);
        parent = r.comps.n ? path_join(r.comps.v, 0, r.comps.n - 1) : xstrdup("");
        pfd = open_real(c->srcroot, parent, O_PATH | O_DIRECTORY);
        if (pfd < 0)
                return open_failed("open", parent, err);
        if (fstatat(pfd, r.comps.n ? r.comps.v[r.comps.n - 1] : ".", &it->st, AT_SYMLINK_NOFOLLOW) <
            0)
                return errno == ENOENT ? 1 : open_failed("stat", it->real, err);
        if (S_ISLNK(it->st.st_mode))
                return 1; /* replaced while being resolved */
        a = ignored_by(c->exclude, lex, S_ISDIR(it->st.st_mode), err);
        if (a < 0)
                return -1;
        b = a == 1 ? 1 : ignored_by(c->ignore, it->real, S_ISDIR(it->st.st_mode), err);
        if (b < 0)
                return -1;
        if (a == 1 || b == 1)
                return 1;
        it->lazy = a == 2 || b == 2;
        return 0;
}

/* Every source expanded and resolved; NOTFOUND for a literal one that is absent. */
static int collect_sources(const struct copier *c, const struct cp_opts *o, struct items *ret,
                           struct kiln_error **err)
{
        struct items all = { 0 };
        size_t i, j;
        bool pattern;
        int r = -1;

        for (i = 0; i < o->n_srcs; i++) {
                size_t first = all.n;

                if (expand_source(c, o, o->srcs[i], &pattern, &all, err) < 0)
                        goto out;
                for (j = first; j < all.n; j++) {
                        struct item *it = &all.v[j];
                        int absent = resolve_item(c, it, err);

                        if (absent < 0)
                                goto out;
                        if (absent && it->literal) {
                                kiln_error_new(err, KILN_ERR_NOTFOUND, "'%s': not found", it->raw);
                                goto out;
                        }
                        if (absent)
                                continue;
                        it->source = i;
                        XGROW(ret->v, ret->n + 1, ret->alloc);
                        ret->v[ret->n++] = *it;
                        *it = (struct item){ 0 };
                }
        }
        r = 0;
out:
        items_release(&all);
        return r;
}

/* ------------------------------------------------------------------------------------ */
/* Destinations                                                                           */
/* ------------------------------------------------------------------------------------ */

/* An open destination directory and its real path in the image. */
struct dest_dir {
        int fd;
        char *path;
};

static void dest_dir_release(struct dest_dir *d)
{
        closep(&d->fd);
        free(d->path);
        d->path = NULL;
}

/* Resolves `path` in the image to a directory, making what is missing (0755, the --chown ids
 * or 0:0): BuildKit's fs.RootPath and MkdirAll. */
static int ensure_dir(const struct copier *c, bool chown_set, const char *path,
                      struct dest_dir *ret, struct kiln_error **err)
{
        _cleanup_(resolved_release) struct resolved r = { 0 };
        _cleanup_free_ char *prefix = NULL;
        _cleanup_close_ int cur = -1;
        size_t i;

        if (resolve(c->destroot, path, true, &r, err) < 0)
                return -1;
        prefix = path_join(r.comps.v, 0, r.existing);
        cur = open_real(c->destroot, prefix, O_RDONLY | O_DIRECTORY);
        if (cur < 0) {
                if (errno == ENOTDIR)
                        return kiln_error_new(err, KILN_ERR_INVALID,
                                              "cannot copy to non-directory: '/%s'", prefix);
                return open_failed("open", prefix, err);
        }
        for (i = r.existing; i < r.comps.n; i++) {
                _cleanup_free_ char *made = path_join(r.comps.v, 0, i + 1);
                int next;

                if (mkdirat(cur, r.comps.v[i], 0700) < 0)
                        return kiln_error_errno(err, KILN_ERR_IO, "mkdir '/%s'", made);
                next = openat(cur, r.comps.v[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (next < 0)
                        return kiln_error_errno(err, KILN_ERR_IO, "open '/%s'", made);
                close(cur);
                cur = next;
                if (meta_made_dir(c, cur, chown_set, made, err) < 0)
                        return -1;
        }
        ret->fd = TAKE_FD(cur);
        ret->path = path_join(r.comps.v, 0, r.comps.n);
        return 0;
}

/* Opens `path` in the image if it is an existing directory (symlinks followed inside the
 * image). 1 when it is, 0 when not. */
static int existing_dir(const struct copier *c, const char *path, struct dest_dir *ret,
                        struct kiln_error **err)
{
        _cleanup_(resolved_release) struct resolved r = { 0 };
        _cleanup_free_ char *real = NULL;
        int fd;

        if (resolve(c->destroot, path, true, &r, err) < 0)
                return -1;
        if (r.existing < r.comps.n)
                return 0;
        real = path_join(r.comps.v, 0, r.comps.n);
        fd = open_real(c->destroot, real, O_RDONLY | O_DIRECTORY);
        if (fd < 0)
                return errno == ENOTDIR || errno == ENOENT ? 0 : open_failed("open", real, err);
        ret->fd = fd;
        ret->path = TAKE_PTR(real);
        return 1;
}

/* ------------------------------------------------------------------------------------ */
/* Placing one source                                                                     */
/* ------------------------------------------------------------------------------------ */

struct plan {
        const struct cp_opts *opts;
        char *dest;    /* absolute, as written (WORKDIR applied) */
        bool dir_mode; /* the destination is a directory */
};

/* Opens an item as a source entry: its parent directory and name. */
static int item_src(const struct copier *c, const struct item *it, struct src *s, int *ret_pfd,
                    struct kiln_error **err)
{
        const char *slash = it->real ? strrchr(it->real, '/') : NULL;
        _cleanup_free_ char *parent = NULL;

        *s = (struct src){ .path = it->real ? it->real : "", .st = it->st, .lazy = it->lazy };
        if (it->is_inline) {
                s->dirfd = -1;
                s->name = item_name(it);
                s->data = it->data;
                s->len = it->len;
                s->fetched = it->fetched;
                *ret_pfd = -1;
                return 0;
        }
        parent = slash ? xstrndup(it->real, (size_t) (slash - it->real)) : xstrdup("");
        *ret_pfd = open_real(c->srcroot, parent, O_PATH | O_DIRECTORY);
        if (*ret_pfd < 0)
                return open_failed("open", parent, err);
        s->dirfd = *ret_pfd;
        s->name = it->real[0] ? base_name(it->real) : ".";
        return 0;
}

/* Copies a source directory's contents into an open directory, which is left as it is. */
static int copy_contents(struct copier *c, const struct src *s, const struct dest_dir *d,
                         struct kiln_error **err)
{
        _cleanup_close_ int in = open_src(s, O_RDONLY | O_DIRECTORY, err);

        if (in < 0)
                return -1;
        return copy_children(c, in, s->path, "", d->fd, d->path, NULL, err);
}

/* The metadata of the source directory `lex` (a path as written), for a directory --parents
 * makes. */
static int stat_source_dir(const struct copier *c, const char *lex, struct stat *ret,
                           struct kiln_error **err)
{
        _cleanup_(resolved_release) struct resolved r = { 0 };
        _cleanup_free_ char *real = NULL;
        _cleanup_close_ int fd = -1;

        if (resolve(c->srcroot, lex, true, &r, err) < 0)
                return -1;
        real = path_join(r.comps.v, 0, r.comps.n);
        if (r.existing == r.comps.n)
                fd = open_real(c->srcroot, real, O_PATH | O_DIRECTORY);
        if (fd < 0 || fstat(fd, ret) < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "stat '%s'", lex);
        return 0;
}

/* Opens the directory `name` in `d` for --parents, making it like its source `lex` when it is
 * missing. */
static int parent_dir(struct copier *c, const struct dest_dir *d, const char *name, const char *lex,
                      const char *path, struct kiln_error **err)
{
        _cleanup_close_ int fd = -1;
        struct src s = { .path = lex };
        struct stat st;

        if (fstatat(d->fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
                if (!S_ISDIR(st.st_mode))
                        return kiln_error_new(err, KILN_ERR_INVALID,
                                              "cannot copy to non-directory: '/%s'", path);
        } else if (errno != ENOENT) {
                return kiln_error_errno(err, KILN_ERR_IO, "stat '/%s'", path);
        } else {
                if (stat_source_dir(c, lex, &s.st, err) < 0)
                        return -1;
                if (mkdirat(d->fd, name, 0700) < 0)
                        return kiln_error_errno(err, KILN_ERR_IO, "mkdir '/%s'", path);
        }
        fd = openat(d->fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "open '/%s'", path);
        if (S_ISDIR(s.st.st_mode) && meta_fd(c, &s, fd, -1, path, err) < 0)
                return -1;
        return TAKE_FD(fd);
}

/* --parents: makes the directories between the destination and the kept path, each with its
 * source directory's metadata when made (fsutil's createParentDirs); `d` moves down to the
 * last. */
static int parent_dirs(struct copier *c, const struct item *it, struct dest_dir *d,
                       struct kiln_error **err)
{
        size_t i;

        for (i = it->kept_from; i + 1 < it->comps.n; i++) {
                _cleanup_free_ char *lex = path_join(it->comps.v, 0, i + 1);
                char *path = path_child(d->path, it->comps.v[i]);
                int fd = parent_dir(c, d, it->comps.v[i], lex, path, err);

                if (fd < 0) {
                        free(path);
                        return -1;
                }
                close(d->fd);
                d->fd = fd;
                free(d->path);
                d->path = path;
        }
        return 0;
}

/* Copies an item into the destination directory `d`. */
static int place_in_dir(struct copier *c, const struct plan *p, const struct item *it,
                        const struct src *s, struct dest_dir *d, struct kiln_error **err)
{
        _cleanup_free_ char *path = NULL;
        struct dst dst = { .dirfd = d->fd };
        bool copied;

        if (p->opts->parents && !it->is_inline && it->kept_from < it->comps.n) {
                if (parent_dirs(c, it, d, err) < 0)
                        return -1;
        } else if (S_ISDIR(it->st.st_mode)) {
                return copy_contents(c, s, d, err);
        }
        dst.dirfd = d->fd;
        dst.name = item_name(it);
        dst.path = path = path_child(d->path, dst.name);
        return copy_entry(c, s, &dst, &copied, err);
}

/* A directory copied to a path that is not an existing directory: made there (0755, as
 * BuildKit's MkdirAll makes it), replacing a symlink, then filled. */
static int place_dir_at(struct copier *c, const struct plan *p, const struct src *s,
                        struct kiln_error **err)
{
        _cleanup_(dest_dir_release) struct dest_dir parent = { .fd = -1 };
        _cleanup_(dest_dir_release) struct dest_dir d = { .fd = -1 };
        _cleanup_(names_release) struct names comps = { 0 };
        _cleanup_free_ char *dir = NULL;
        const char *name;
        struct stat st;

        path_clean(p->dest, strlen(p->dest), &comps);
        if (comps.n == 0)
                return kiln_error_new(err, KILN_ERR_INVALID, "cannot replace the root");
        dir = path_join(comps.v, 0, comps.n - 1);
        name = comps.v[comps.n - 1];
        if (ensure_dir(c, p->opts->chown, dir, &parent, err) < 0)
                return -1;
        if (fstatat(parent.fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
                if (!S_ISLNK(st.st_mode))
                        return kiln_error_new(err, KILN_ERR_INVALID,
                                              "cannot copy to non-directory: '%s'", p->dest);
                if (unlinkat(parent.fd, name, 0) < 0)
                        return kiln_error_errno(err, KILN_ERR_IO, "remove '%s'", p->dest);
        }
        d.path = path_child(parent.path, name);
        if (mkdirat(parent.fd, name, 0700) < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "mkdir '/%s'", d.path);
        d.fd = openat(parent.fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (d.fd < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "open '/%s'", d.path);
        if (meta_made_dir(c, d.fd, p->opts->chown, d.path, err) < 0)
                return -1;
        return copy_contents(c, s, &d, err);
}

/* A single file (or symlink, or node) copied to a path that is not an existing directory. */
static int place_file_at(struct copier *c, const struct plan *p, const struct src *s,
                         struct kiln_error **err)
{
        _cleanup_(dest_dir_release) struct dest_dir parent = { .fd = -1 };
        _cleanup_(names_release) struct names comps = { 0 };
        _cleanup_free_ char *dir = NULL, *path = NULL;
        struct dst d;
        bool copied;

        path_clean(p->dest, strlen(p->dest), &comps);
        if (comps.n == 0)
                return kiln_error_new(err, KILN_ERR_INVALID, "cannot replace the root");
        dir = path_join(comps.v, 0, comps.n - 1);
        if (ensure_dir(c, p->opts->chown, dir, &parent, err) < 0)
                return -1;
        path = path_child(parent.path, comps.v[comps.n - 1]);
        d = (struct dst){ .dirfd = parent.fd, .name = comps.v[comps.n - 1], .path = path };
        return copy_entry(c, s, &d, &copied, err);
}

/* A fresh scratch directory at the top of the image, for unpacking an archive on the image's
 * filesystem; its name goes to `name`. */
static int make_scratch(int root, char name[static sizeof(SCRATCH_PREFIX) + 16],
                        struct kiln_error **err)
{
        uint8_t rnd[8];
        size_t i;
        int fd;

        if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t) sizeof(rnd))
                return kiln_error_errno(err, KILN_ERR_IO, "getrandom");
        strcpy(name, SCRATCH_PREFIX);
        for (i = 0; i < sizeof(rnd); i++)
                sprintf(name + strlen(SCRATCH_PREFIX) + 2 * i, "%02x", rnd[i]);
        if (mkdirat(root, name, 0700) < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "mkdir '/%s'", name);
        fd = openat(root, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) {
                kiln_error_errno(err, KILN_ERR_IO, "open '/%s'", name);
                unlinkat(root, name, AT_REMOVEDIR);
        }
        return fd;
}

/*
 * Unpacks `in` into `scratch`. 1 when it is an archive, 0 when not: a tar with no entry, or
 * one whose first header cannot be read (BuildKit's isArchivePath: tar.Next() must succeed).
 * A failure after that is the archive's error.
 */
static int unpack(const struct plan *p, const struct item *it, int in, int scratch,
                  struct kiln_error **err)
{
        _cleanup_(kiln_error_freep) struct kiln_error *xerr = NULL;
        struct layer_extract_opts xo = { .record_owner = p->opts->chown || p->opts->only_root };
        struct layer_extract_stats stats = { 0 };

        /* With --chown the archive's ids do not matter: record them rather than fail to set
         * them where they are not mapped. */
        if (layer_extract(scratch, in, it->raw, &xo, &stats, &xerr) == 0)
                return stats.entries > 0;
        if (xerr->kind == KILN_ERR_PARSE && dir_is_empty(scratch))
                return 0;
        if (err)
                *err = TAKE_PTR(xerr);
        return -1;
}

/* Copies an unpacked archive into the destination directory, with the archive's owners or the
 * --chown ids, without --chmod (BuildKit's unpack ignores it). */
static int place_unpacked(const struct copier *c, const struct plan *p, int scratch,
                          struct kiln_error **err)
{
        _cleanup_(dest_dir_release) struct dest_dir d = { .fd = -1 };
        struct copier sub = {
                .srcroot = scratch,
                .destroot = c->destroot,
                .owner = p->opts->chown ? OWNER_SET : OWNER_KEEP,
                .uid = c->uid,
                .gid = c->gid,
                .buf = c->buf,
                .now = c->now,
        };
        int r;

        r = ensure_dir(c, p->opts->chown, p->dest, &d, err);
        if (r == 0)
                r = copy_children(&sub, scratch, "", NULL, d.fd, d.path, NULL, err);
        link_map_release(&sub.links);
        return r;
}

/* ADD: extracts a local archive into the destination directory. 1 when it was one, 0 when it
 * is to be copied as a file. */
static int add_archive(struct copier *c, const struct plan *p, const struct item *it,
                       struct kiln_error **err)
{
        _cleanup_close_ int in = -1, root = -1, scratch = -1;
        char name[sizeof(SCRATCH_PREFIX) + 16];
        int r;

        in = open_real(c->srcroot, it->real, O_RDONLY | O_NONBLOCK | O_NOCTTY);
        if (in < 0)
                return open_failed("open", it->real, err);
        root = kiln_openat2_in_root(c->destroot, "", O_RDONLY | O_DIRECTORY, 0, 0);
        if (root < 0)
                return open_failed("open", "", err);
        scratch = make_scratch(root, name, err);
        if (scratch < 0)
                return -1;
        r = unpack(p, it, in, scratch, err);
        if (r > 0 && place_unpacked(c, p, scratch, err) < 0)
                r = -1;
        if (r < 0) {
                remove_tree(root, name, name, NULL);
                return -1;
        }
        if (remove_tree(root, name, name, err) < 0)
                return -1;
        return r;
}

static int place_item(struct copier *c, const struct plan *p, const struct item *it,
                      struct kiln_error **err)
{
        _cleanup_(dest_dir_release) struct dest_dir d = { .fd = -1 };
        _cleanup_close_ int pfd = -1;
        struct src s;
        int r;

        if (p->opts->add && !it->is_inline && S_ISREG(it->st.st_mode)) {
                r = add_archive(c, p, it, err);
                if (r != 0)
                        return r < 0 ? -1 : 0;
        }
        if (item_src(c, it, &s, &pfd, err) < 0)
                return -1;
        if (p->dir_mode)
                r = ensure_dir(c, p->opts->chown, p->dest, &d, err) < 0 ? -1 : 1;
        else
                r = existing_dir(c, p->dest, &d, err);
        if (r < 0)
                return -1;
        if (r > 0)
                return place_in_dir(c, p, it, &s, &d, err);
        if (S_ISDIR(it->st.st_mode))
                return place_dir_at(c, p, &s, err);
        return place_file_at(c, p, &s, err);
}

/* ------------------------------------------------------------------------------------ */
/* COPY                                                                                   */
/* ------------------------------------------------------------------------------------ */

/* Whether the destination as written names a directory: a trailing '/', or "." or "..". */
static bool dest_names_dir(const char *dest)
{
        size_t len = strlen(dest);
        const char *last = base_name(dest);

        return len == 0 || dest[len - 1] == '/' || strcmp(last, ".") == 0 ||
               strcmp(last, "..") == 0;
}

static int plan_dest(const struct cp_opts *o, size_t n_items, struct plan *ret,
                     struct kiln_error **err)
{
        const char *workdir = o->workdir && o->workdir[0] ? o->workdir : "/";
        const char *dest = o->dest ? o->dest : "";

        ret->opts = o;
        ret->dest = dest[0] == '/' ? xstrdup(dest) : xasprintf("%s/%s", workdir, dest);
        ret->dir_mode = dest_names_dir(dest) || o->parents;
        if (n_items > 1 && !ret->dir_mode)
                return kiln_error_new(err, KILN_ERR_INVALID,
                                      "cannot copy multiple sources to '%s': the destination "
                                      "must be a directory and end with a /",
                                      dest);
        return 0;
}

/* The sources and where they go, for copy_all() and walk_all(): -1 on error, 1 (an error
 * set, in Docker's wording, which already names the instruction) when nothing matched. */
static int plan_items(struct copier *c, const struct cp_opts *o, struct items *items, struct plan *p,
                      struct kiln_error **err)
{
        if (collect_sources(c, o, items, err) < 0)
                return -1;
        if (items->n == 0) {
                kiln_error_new(err, KILN_ERR_NOTFOUND, "%s failed: no source files were specified",
                               o->add ? "ADD" : "COPY");
                return 1;
        }
        return plan_dest(o, items->n, p, err);
}

static int copy_all(struct copier *c, const struct cp_opts *o, struct kiln_error **err)
{
        _cleanup_(items_release) struct items items = { 0 };
        struct plan p = { 0 };
        size_t i;
        int r;

        r = plan_items(c, o, &items, &p, err);
        if (r != 0)
                goto out;
        r = -1;
        for (i = 0; i < items.n; i++) {
                /* Each source as written is its own copy (BuildKit: one FileOp copy per
                 * source): hardlinks are kept within one, not between two. */
                if (i > 0 && items.v[i].source != items.v[i - 1].source)
                        link_map_release(&c->links);
                if (place_item(c, &p, &items.v[i], err) < 0)
                        goto out;
        }
        r = 0;
out:
        free(p.dest);
        return r;
}

/* --parents: the directories between the item's kept part and itself, each listed with its
 * source directory's metadata (parent_dirs() makes them so). */
static int walk_parents(struct copier *c, const struct item *it, const struct cp_entry *top,
                        struct kiln_error **err)
{
        size_t i;

        for (i = it->kept_from; i + 1 < it->comps.n; i++) {
                _cleanup_free_ char *lex = path_join(it->comps.v, 0, i + 1);
                struct cp_entry e = *top;
                struct stat st;

                if (stat_source_dir(c, lex, &st, err) < 0)
                        return -1;
                e.parent = true;
                e.path = lex;
                e.st = &st;
                e.mode = mode_of(c, &st);
                e.dirfd = -1;
                if (c->visit(c->visit_ctx, &e, err) < 0)
                        return -1;
        }
        return 0;
}

static int walk_all(struct copier *c, const struct cp_opts *o, struct kiln_error **err)
{
        _cleanup_(items_release) struct items items = { 0 };
        struct plan p = { 0 };
        size_t i;
        int r = -1;

        if (plan_items(c, o, &items, &p, err) != 0)
                goto out;
        for (i = 0; i < items.n; i++) {
                const struct item *it = &items.v[i];
                _cleanup_free_ char *top = path_join(it->comps.v, 0, it->comps.n);
                struct cp_entry e = { .top = top,
                                      .source = it->source,
                                      .kept_from = it->kept_from };
                _cleanup_close_ int pfd = -1;
                struct src s;
                bool copied;

                if (i > 0 && it->source != items.v[i - 1].source)
                        link_map_release(&c->links);
                if (o->parents && !it->is_inline && it->kept_from < it->comps.n &&
                    walk_parents(c, it, &e, err) < 0)
                        goto out;
                if (item_src(c, it, &s, &pfd, err) < 0 || visit_entry(c, &s, &e, &copied, err) < 0)
                        goto out;
        }
        r = 0;
out:
        free(p.dest);
        return r;
}

/* A copier for `src` and `opts`: its --chmod and --exclude parsed into `mode` and `exclude`. */
static int copier_init(struct copier *c, const struct cp_source *src, int destfd,
                       const struct cp_opts *opts, struct mode_spec *mode,
                       struct df_ignore **exclude, struct kiln_error **err)
{
        const char *what = opts->add ? "ADD" : "COPY";

        *c = (struct copier){
                .srcroot = src->rootfd,
                .destroot = destfd,
                .ignore = src->ignore,
                .owner = opts->chown                            ? OWNER_SET
                         : src->keep_owners && !opts->only_root ? OWNER_KEEP
                                                                : OWNER_ROOT,
                .uid = opts->uid,
                .gid = opts->gid,
        };
        if (opts->n_srcs == 0)
                return kiln_error_new(err, KILN_ERR_INVALID, "%s: no source given", what);
        if (opts->chmod && opts->chmod_spec) {
                if (mode_parse(opts->chmod_spec, mode, err) < 0)
                        return kiln_error_wrap(err, "%s", what);
                c->mode = mode;
        }
        if (opts->n_excludes) {
                if (df_ignore_new(opts->excludes, opts->n_excludes, exclude, err) < 0)
                        return kiln_error_wrap(err, "%s: --exclude", what);
                c->exclude = *exclude;
        }
        clock_gettime(CLOCK_REALTIME, &c->now);
        return 0;
}

int cp_walk(const struct cp_source *src, const struct cp_opts *opts,
            int (*fn)(void *ctx, const struct cp_entry *e, struct kiln_error **err), void *ctx,
            struct kiln_error **err)
{
        _cleanup_(df_ignore_freep) struct df_ignore *exclude = NULL;
        _cleanup_(mode_spec_release) struct mode_spec mode = { 0 };
        struct copier c;
        int r;

        if (copier_init(&c, src, -1, opts, &mode, &exclude, err) < 0)
                return -1;
        c.visit = fn;
        c.visit_ctx = ctx;
        r = walk_all(&c, opts, err);
        link_map_release(&c.links);
        if (r < 0)
                return kiln_error_wrap(err, "%s", opts->add ? "ADD" : "COPY");
        return 0;
}

int cp_copy(const struct cp_source *src, int destfd, const struct cp_opts *opts,
            struct kiln_error **err)
{
        _cleanup_(df_ignore_freep) struct df_ignore *exclude = NULL;
        _cleanup_(mode_spec_release) struct mode_spec mode = { 0 };
        _cleanup_free_ char *buf = xmalloc(CHUNK_SIZE);
        const char *what = opts->add ? "ADD" : "COPY";
        struct copier c;
        int r;

        if (copier_init(&c, src, destfd, opts, &mode, &exclude, err) < 0)
                return -1;
        c.buf = buf;
        r = copy_all(&c, opts, err);
        link_map_release(&c.links);
        if (r < 0)
                return kiln_error_wrap(err, "%s", what);
        return r > 0 ? -1 : 0;
}
