/*
 * The RUN sandbox (DESIGN.md "RUN, the fast path"; bubblewrap, crun and runc are the models).
 *
 * Four processes take part:
 *
 *   caller thread --fork--> keeper --fork--> init (pid 1) --fork--> command
 *
 * - The caller is multi-threaded, so it only forks (glibc's fork keeps malloc usable in the
 *   child) and everything else happens in single-threaded children.
 * - The keeper closes every descriptor it does not need (other threads' pipes would otherwise be
 *   held open), unshares the namespaces in one call (a user namespace needs a single-threaded
 *   process, which a fork is), waits until the caller has written its id maps and forks init.
 *   unshare(CLONE_NEWPID) only moves children, hence the extra process.
 * - init is pid 1 of the new pid namespace, so the procfs it mounts is the sandbox's. It mounts
 *   the overlay, /proc, /dev and the host files, pivots into the root, reports the mount stubs it
 *   had to make, forks the command, reaps every process and reports the command's wait status.
 *   When it exits the kernel kills whatever the command left running.
 * - The command enters its working directory, drops capabilities to Docker's default set and
 *   the user to USER, and execs.
 *
 * In a user namespace the caller writes the maps of the keeper (directly for its own id alone,
 * through newuidmap/newgidmap for ranges unless it is root) and the keeper then takes the ids
 * that are 0 inside. The overlay and everything it creates in the upper is therefore owned by
 * the outside ids mapped from 0 (the caller itself in the usual rootless maps), so the upper and
 * work directories and the lower layers must be owned by those ids too.
 *
 * Like Docker, the command keeps only Docker's default capabilities, and /proc/sys,
 * /proc/sysrq-trigger and a few more are read-only or masked: without that, root in a ROOT
 * sandbox could change the host's kernel settings.
 *
 * Every child reports over one pipe of fixed-size messages, each written atomically (at most
 * PIPE_BUF bytes); the write end is O_CLOEXEC, so a successful exec leaves no trace on it. The
 * command's stdout and stderr share a second pipe that the caller drains as it fills. The
 * parent-death signal chains: if the caller's thread dies, the keeper dies, init dies, and with
 * it the whole pid namespace.
 *
 * Mount targets are opened inside the merged root with RESOLVE_IN_ROOT, and every mount is made
 * with the new mount API onto those descriptors (open_tree, fsmount, move_mount), so a symlink
 * in the image (/dev -> /tmp, /etc/hosts -> /host/...) can never put a mount or a stub outside
 * the root. The overlay itself is attached over its own work directory: the one directory that
 * is ours and that nothing else looks at during the run (overlayfs holds its own references to
 * it), so nothing is created beside the upper. The mount API's "lowerdir+" (Linux 6.8) takes
 * one layer at a time; older kernels get mount(2) with a "lowerdir=a:b:c" string, which must fit
 * in a page.
 *
 * Stubs: a mount target missing from the image (/proc, /dev, /etc, /etc/hosts,
 * /etc/resolv.conf) is created, never through a symlink, and so is an /etc that only existed in
 * a lower layer (creating /etc/hosts copies it up). Init records, for each of these paths that
 * the upper did not have before it touched it, the inode and mode it has in the upper. After
 * the run the caller removes exactly those inodes again, files before their directories, with
 * dirfd-relative calls that never follow a symlink, and only when they are unchanged: a file
 * still empty, a directory still empty (rmdir refuses otherwise), both with the same inode and
 * mode. What the command did to them (an unmounted and rewritten /etc/hosts, a file added to
 * /etc, a chmod) therefore stays in the layer.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <linux/capability.h>
#include <linux/openat2.h>
#include <net/if.h>
#include <poll.h>
#include <pthread.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "builder/builder-internal.h"
#include "builder/common/fd-util.h"
#include "builder/common/strbuf.h"
#include "builder/common/xalloc.h"

/* The new mount API; declared here so that older C libraries build too. */
#ifndef FSOPEN_CLOEXEC
#define FSOPEN_CLOEXEC 0x00000001
#endif
#ifndef FSMOUNT_CLOEXEC
#define FSMOUNT_CLOEXEC 0x00000001
#endif
#ifndef FSCONFIG_SET_FLAG
#define FSCONFIG_SET_FLAG 0
#endif
#ifndef FSCONFIG_SET_STRING
#define FSCONFIG_SET_STRING 1
#endif
#ifndef FSCONFIG_CMD_CREATE
#define FSCONFIG_CMD_CREATE 6
#endif
#ifndef MOVE_MOUNT_F_EMPTY_PATH
#define MOVE_MOUNT_F_EMPTY_PATH 0x00000004
#endif
#ifndef MOVE_MOUNT_T_EMPTY_PATH
#define MOVE_MOUNT_T_EMPTY_PATH 0x00000040
#endif
#ifndef OPEN_TREE_CLONE
#define OPEN_TREE_CLONE 1
#endif
#ifndef MOUNT_ATTR_RDONLY
#define MOUNT_ATTR_RDONLY 0x00000001
#endif
#ifndef MOUNT_ATTR_NOSUID
#define MOUNT_ATTR_NOSUID 0x00000002
#endif
#ifndef MOUNT_ATTR_NODEV
#define MOUNT_ATTR_NODEV 0x00000004
#endif
#ifndef MOUNT_ATTR_NOEXEC
#define MOUNT_ATTR_NOEXEC 0x00000008
#endif

#define DEFAULT_PATH     "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define DEFAULT_HOSTNAME "kiln"
#define NEWUIDMAP        SB_NEWUIDMAP
#define NEWGIDMAP        SB_NEWGIDMAP
#define MAX_ID_LINES     340   /* the kernel's limit for uid_map and gid_map */
#define SUBID_MAX        65536 /* subordinate ids mapped from /etc/subuid and /etc/subgid */
#define OUTPUT_CHUNK     16384 /* the caller's read buffer for the command's output */
#define MSG_TEXT_MAX     2048

/* ------------------------------------------------------------------------------------ */
/* Stubs and messages                                                                     */
/* ------------------------------------------------------------------------------------ */

enum stub {
        STUB_PROC,
        STUB_DEV,
        STUB_ETC,
        STUB_HOSTS,
        STUB_RESOLV,
        _STUB_MAX,
        STUB_NONE = _STUB_MAX,
};

struct stub_def {
        const char *path; /* relative to the root, no symlinks */
        const char *name; /* the last component */
        enum stub parent; /* STUB_NONE: the root */
        bool dir;
        bool optional; /* skipped, not failed, when it cannot be made without a symlink */
};

static const struct stub_def stub_defs[_STUB_MAX] = {
        [STUB_PROC] = { "proc", "proc", STUB_NONE, true, false },
        [STUB_DEV] = { "dev", "dev", STUB_NONE, true, false },
        [STUB_ETC] = { "etc", "etc", STUB_NONE, true, true },
        [STUB_HOSTS] = { "etc/hosts", "hosts", STUB_ETC, false, true },
        [STUB_RESOLV] = { "etc/resolv.conf", "resolv.conf", STUB_ETC, false, true },
};

_Static_assert(_STUB_MAX == SB_STUBS_MAX, "sb_stub_state arrays hold every stub");

enum msg_type {
        MSG_NONE,
        MSG_READY,  /* keeper: the namespaces exist; write the id maps */
        MSG_STUBS,  /* init: the stubs it made */
        MSG_ERROR,  /* any child: a step failed */
        MSG_STATUS, /* init: the command's wait status (sb_call: fn succeeded) */
};

struct msg {
        uint32_t type;
        int32_t kind, errnum, status;
        struct sb_stub_state stubs[_STUB_MAX];
        char text[MSG_TEXT_MAX];
};

_Static_assert(sizeof(struct msg) <= PIPE_BUF, "a message must be written atomically");

/* What the children need; each child works on its own copy. */
struct child {
        const struct sb_rootfs *root;
        const struct sb_env *env;
        const struct sb_run *run; /* NULL for sb_call */
        int (*fn)(void *ctx, int rootfd, struct kiln_error **err);
        void *ctx;
        bool setgroups_denied; /* the gid map was written with setgroups "deny" */
        int report;            /* write end of the message pipe */
        int sync;              /* read end: the caller wrote the id maps (USERNS) */
        int out;               /* write end of the output pipe (sb_run) */
        int upperfd, rootfd;
        struct sb_stub_state stubs[_STUB_MAX];
        char **envp;    /* the command's environment with HOME added, or NULL: run->envp */
        struct msg err; /* the first failure, sent on exit */
};

/* ------------------------------------------------------------------------------------ */
/* System calls without a wrapper in every C library                                      */
/* ------------------------------------------------------------------------------------ */

struct sb_mount_attr {
        uint64_t attr_set, attr_clr, propagation, userns_fd;
};

static int sys_fsopen(const char *fsname, unsigned flags)
{
        return (int) syscall(SYS_fsopen, fsname, flags);
}

static int sys_fsconfig(int fd, unsigned cmd, const char *key, const void *value, int aux)
{
        return (int) syscall(SYS_fsconfig, fd, cmd, key, value, aux);
}

static int sys_fsmount(int fd, unsigned flags, unsigned attrs)
{
        return (int) syscall(SYS_fsmount, fd, flags, attrs);
}

static int sys_move_mount(int from_dfd, const char *from, int to_dfd, const char *to,
                          unsigned flags)
{
        return (int) syscall(SYS_move_mount, from_dfd, from, to_dfd, to, flags);
}

static int sys_open_tree(int dfd, const char *path, unsigned flags)
{
        return (int) syscall(SYS_open_tree, dfd, path, flags);
}

static int sys_mount_setattr(int dfd, const char *path, unsigned flags, uint64_t set)
{
        struct sb_mount_attr attr = { .attr_set = set };

        return (int) syscall(SYS_mount_setattr, dfd, path, flags, &attr, sizeof(attr));
}

static int sys_openat2(int dfd, const char *path, int flags, uint64_t resolve)
{
        struct open_how how = {
                .flags = (uint64_t) (flags | O_CLOEXEC),
                .resolve = resolve,
        };
        unsigned tries = 0;
        long fd;

        /* EAGAIN: a mount or rename elsewhere raced with a scoped lookup; the kernel asks for a
         * retry (kiln_openat2_in_root does the same) */
        while ((fd = syscall(SYS_openat2, dfd, path, &how, sizeof(how))) < 0 &&
               (errno == EAGAIN || errno == EINTR) && ++tries <= 64)
                ;
        return (int) fd;
}

/*
 * Threads of one build start sandboxes at once, and a child forked by one thread holds copies of
 * every descriptor the process had at that moment; the children of sb_call() and sb_unshare()
 * run without exec for as long as their work takes. If such a child caught the write end of
 * another sandbox's report or output pipe, that sandbox's caller would wait for an end of file
 * that only comes when the unrelated child exits. So pipes that carry an end of file are made,
 * handed to their child and closed on this side under one lock, and no fork happens meanwhile.
 */
static pthread_mutex_t spawn_lock = PTHREAD_MUTEX_INITIALIZER;

static int close_from(unsigned first)
{
        long max, fd;

        if (syscall(SYS_close_range, first, ~0U, 0) == 0)
                return 0;
        if (errno != ENOSYS)
                return -1;
        max = sysconf(_SC_OPEN_MAX);
        for (fd = first; fd < (max > 0 ? max : 65536); fd++)
                close((int) fd);
        return 0;
}

/* Reads exactly `len` bytes unless the end comes first; returns the bytes read or -1. */
static ssize_t read_full(int fd, void *buf, size_t len)
{
        size_t got = 0;

        while (got < len) {
                ssize_t n = read(fd, (char *) buf + got, len - got);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return -1;
                if (n == 0)
                        break;
                got += (size_t) n;
        }
        return (ssize_t) got;
}

static int write_full(int fd, const void *buf, size_t len)
{
        const char *p = buf;

        while (len > 0) {
                ssize_t n = write(fd, p, len);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return -1;
                p += n;
                len -= (size_t) n;
        }
        return 0;
}

/* ------------------------------------------------------------------------------------ */
/* Child-side reporting                                                                   */
/* ------------------------------------------------------------------------------------ */

/* Records the first failure of a child (with errno) and returns -1. */
static int fail(struct child *c, enum kiln_errkind kind, const char *fmt, ...) _printf_(3, 4);

static int fail(struct child *c, enum kiln_errkind kind, const char *fmt, ...)
{
        int saved = errno;
        va_list ap;

        if (c->err.type == MSG_ERROR)
                return -1;
        c->err.type = MSG_ERROR;
        c->err.kind = (int32_t) kind;
        c->err.errnum = saved;
        va_start(ap, fmt);
        vsnprintf(c->err.text, sizeof(c->err.text), fmt, ap);
        va_end(ap);
        errno = saved;
        return -1;
}

static void send_msg(const struct child *c, const struct msg *m)
{
        /* Nothing to do on failure: the caller then sees the end of the pipe. */
        (void) write_full(c->report, m, sizeof(*m));
}

static void send_stubs(const struct child *c)
{
        struct msg m = { .type = MSG_STUBS };

        memcpy(m.stubs, c->stubs, sizeof(m.stubs));
        send_msg(c, &m);
}

_noreturn_ static void child_exit(const struct child *c, int code)
{
        if (c->err.type == MSG_ERROR)
                send_msg(c, &c->err);
        _exit(code);
}

/* ------------------------------------------------------------------------------------ */
/* Mount helpers (init)                                                                   */
/* ------------------------------------------------------------------------------------ */

/* Attaches a detached mount onto an open target. */
static int attach(int mntfd, int targetfd)
{
        return sys_move_mount(mntfd, "", targetfd, "",
                              MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH);
}

/* A detached clone of a path (relative to `dfd`), read-only if asked. */
static int clone_tree(int dfd, const char *path, bool recursive, bool rdonly)
{
        unsigned rec = recursive ? AT_RECURSIVE : 0;
        int fd = sys_open_tree(dfd, path,
                               OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | rec | (*path ? 0 : AT_EMPTY_PATH));

        if (fd >= 0 && rdonly &&
            sys_mount_setattr(fd, "", AT_EMPTY_PATH | rec, MOUNT_ATTR_RDONLY) < 0) {
                int saved = errno;
                close(fd);
                errno = saved;
                return -1;
        }
        return fd;
}

/* A new detached filesystem: options are "key=value" or "flag" strings, NULL-terminated. */
static int new_fs(const char *type, const char *const *opts, unsigned attrs)
{
        _cleanup_close_ int fs = sys_fsopen(type, FSOPEN_CLOEXEC);
        char key[64];

        if (fs < 0)
                return -1;
        for (; opts && *opts; opts++) {
                const char *eq = strchr(*opts, '=');
                int r;

                if (!eq) {
                        r = sys_fsconfig(fs, FSCONFIG_SET_FLAG, *opts, NULL, 0);
                } else {
                        snprintf(key, sizeof(key), "%.*s", (int) (eq - *opts), *opts);
                        r = sys_fsconfig(fs, FSCONFIG_SET_STRING, key, eq + 1, 0);
                }
                if (r < 0)
                        return -1;
        }
        if (sys_fsconfig(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
                return -1;
        return sys_fsmount(fs, FSMOUNT_CLOEXEC, attrs);
}

/* The kernel's last error message about a filesystem context ("overlayfs: ..."), if any. */
static void fs_log(int fs, char *buf, size_t size)
{
        char line[512];
        ssize_t n;

        buf[0] = '\0';
        while ((n = read(fs, line, sizeof(line) - 1)) > 0) {
                line[n] = '\0';
                if (line[0] == 'e' && line[1] == ' ')
                        snprintf(buf, size, "%.*s", (int) (size - 1), line + 2);
        }
}

static bool upper_has(const struct child *c, enum stub id)
{
        struct stat st;

        return fstatat(c->upperfd, stub_defs[id].path, &st, AT_SYMLINK_NOFOLLOW) == 0;
}

/* Remembers `id` as a stub when it appeared in the upper because of us. */
static void stub_note(struct child *c, enum stub id, bool had)
{
        struct stat st;

        if (had || c->stubs[id].made ||
            fstatat(c->upperfd, stub_defs[id].path, &st, AT_SYMLINK_NOFOLLOW) < 0)
                return;
        c->stubs[id] = (struct sb_stub_state){ .ino = st.st_ino, .mode = st.st_mode, .made = 1 };
}

static int target_open(struct child *c, enum stub id, int *ret_fd);

/* The directory a stub is made in, reached without following any symlink; -1 to skip. */
static int stub_parent(struct child *c, enum stub id, int *ret_fd)
{
        const struct stub_def *d = &stub_defs[id];
        int fd;

        if (d->parent == STUB_NONE) {
                *ret_fd = fcntl(c->rootfd, F_DUPFD_CLOEXEC, 3);
                return *ret_fd < 0 ? fail(c, KILN_ERR_CHILD, "sandbox: dup") : 0;
        }
        fd = sys_openat2(c->rootfd, stub_defs[d->parent].path, O_PATH | O_DIRECTORY,
                         RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS);
        if (fd >= 0 || errno != ENOENT) {
                if (fd < 0 && !d->optional)
                        return fail(c, KILN_ERR_CHILD, "sandbox: open '/%s'",
                                    stub_defs[d->parent].path);
                *ret_fd = fd;
                return 0;
        }
        return target_open(c, d->parent, ret_fd);
}

/* Makes a missing mount target. *ret_fd is -1 when an optional one cannot be made. */
static int target_make(struct child *c, enum stub id, int *ret_fd)
{
        const struct stub_def *d = &stub_defs[id];
        _cleanup_close_ int pfd = -1;
        bool had = upper_has(c, id);
        bool had_parent = d->parent != STUB_NONE && upper_has(c, d->parent);
        int r;

        *ret_fd = -1;
        if (stub_parent(c, id, &pfd) < 0)
                return -1;
        if (pfd < 0)
                return 0;
        if (d->dir)
                r = mkdirat(pfd, d->name, 0755);
        else
                r = openat(pfd, d->name, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC,
                           0644);
        if (r < 0) {
                /* EEXIST: a dangling symlink (creating through it would leave the root). */
                if (errno == EEXIST && d->optional)
                        return 0;
                return fail(c, KILN_ERR_CHILD, "sandbox: make mount point '/%s'", d->path);
        }
        if (!d->dir)
                close(r);
        stub_note(c, id, had);
        if (d->parent != STUB_NONE)
                stub_note(c, d->parent, had_parent);
        *ret_fd =
                openat(pfd, d->name, O_PATH | O_NOFOLLOW | O_CLOEXEC | (d->dir ? O_DIRECTORY : 0));
        if (*ret_fd < 0)
                return fail(c, KILN_ERR_CHILD, "sandbox: open '/%s'", d->path);
        return 0;
}

/*
 * Opens a mount target of the merged root: an existing one resolved inside the root (an image
 * may make /dev a symlink) and inside the overlay (not into the /proc or /dev mounted already),
 * a missing one made as a stub. *ret_fd is -1 to skip an optional one.
 */
static int target_open(struct child *c, enum stub id, int *ret_fd)
{
        const struct stub_def *d = &stub_defs[id];
        int fd = sys_openat2(c->rootfd, d->path, O_PATH | (d->dir ? O_DIRECTORY : 0),
                             RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV);

        *ret_fd = fd;
        if (fd >= 0 || (errno == EXDEV && d->optional))
                return 0;
        if (errno != ENOENT)
                return fail(c, KILN_ERR_CHILD, "sandbox: open '/%s'", d->path);
        return target_make(c, id, ret_fd);
}

/* ------------------------------------------------------------------------------------ */
/* The root filesystem (init)                                                             */
/* ------------------------------------------------------------------------------------ */

static bool is_userns(const struct child *c)
{
        return c->env->isolation == SB_ISOLATION_USERNS;
}

/* overlay's xattrs in the user.* namespace: in a new user namespace, or in ROOT already in one */
static bool ovl_userxattr(const struct child *c)
{
        return is_userns(c) || c->env->nested_userns;
}

static int overlay_fail(struct child *c, int fs)
{
        int saved = errno;
        char log[256];

        fs_log(fs, log, sizeof(log));
        errno = saved;
        return fail(c, is_userns(c) && errno == EPERM ? KILN_ERR_UNSUPPORTED : KILN_ERR_CHILD,
                    "sandbox: mount overlay on '%s'%s%s%s", c->root->work, log[0] ? " (" : "", log,
                    log[0] ? ")" : "");
}

/*
 * "off" means "follow" on kernels built with redirect_always_follow, which userxattr refuses:
 * in a user namespace redirects are neither made nor followed.
 */
static const char *redirect_mode(const struct child *c)
{
        return ovl_userxattr(c) ? "nofollow" : "off";
}

/* The mount API with "lowerdir+": the mount fd, -1 on failure, -2 to fall back to mount(2). */
static int overlay_fsmount(struct child *c)
{
        static const char *const off[] = { "index", "metacopy" };
        _cleanup_close_ int fs = sys_fsopen("overlay", FSOPEN_CLOEXEC);
        size_t i;
        int mnt;

        if (fs < 0)
                return errno == ENOSYS || errno == EPERM ? -2 : overlay_fail(c, -1);
        /* EINVAL: no "lowerdir+" (before 6.8), or a path longer than fsconfig's 255 bytes. */
        for (i = 0; i < c->root->n_lowers; i++)
                if (sys_fsconfig(fs, FSCONFIG_SET_STRING, "lowerdir+", c->root->lowers[i], 0) < 0)
                        return errno == EINVAL ? -2 : overlay_fail(c, fs);
        if (sys_fsconfig(fs, FSCONFIG_SET_STRING, "upperdir", c->root->upper, 0) < 0 ||
            sys_fsconfig(fs, FSCONFIG_SET_STRING, "workdir", c->root->work, 0) < 0)
                return errno == EINVAL ? -2 : overlay_fail(c, fs);
        for (i = 0; i < ELEMENTSOF(off); i++)
                (void) sys_fsconfig(fs, FSCONFIG_SET_STRING, off[i], "off", 0);
        (void) sys_fsconfig(fs, FSCONFIG_SET_STRING, "redirect_dir", redirect_mode(c), 0);
        if (ovl_userxattr(c) && sys_fsconfig(fs, FSCONFIG_SET_FLAG, "userxattr", NULL, 0) < 0)
                return overlay_fail(c, fs);
        if (sys_fsconfig(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
                return overlay_fail(c, fs);
        mnt = sys_fsmount(fs, FSMOUNT_CLOEXEC, 0);
        if (mnt < 0)
                return overlay_fail(c, fs);
        if (sys_move_mount(mnt, "", AT_FDCWD, c->root->work, MOVE_MOUNT_F_EMPTY_PATH) < 0) {
                fail(c, KILN_ERR_CHILD, "sandbox: attach the overlay on '%s'", c->root->work);
                close(mnt);
                return -1;
        }
        return mnt;
}

static int overlay_opt_path(struct child *c, struct kiln_buf *b, const char *path)
{
        if (strpbrk(path, ",:\\"))
                return fail(c, KILN_ERR_INVALID,
                            "sandbox: overlay path '%s' contains ',', ':' or '\\'", path);
        return kiln_buf_adds(b, path, NULL);
}

/* mount(2) with the whole option string: a page at most, so not too many layers. */
static int overlay_mount2(struct child *c)
{
        _cleanup_buf_ struct kiln_buf b = KILN_BUF_INIT;
        size_t i, len;

        kiln_buf_adds(&b, "lowerdir=", NULL);
        for (i = 0; i < c->root->n_lowers; i++) {
                if (i > 0)
                        kiln_buf_addc(&b, ':', NULL);
                if (overlay_opt_path(c, &b, c->root->lowers[i]) < 0)
                        return -1;
        }
        kiln_buf_adds(&b, ",upperdir=", NULL);
        if (overlay_opt_path(c, &b, c->root->upper) < 0)
                return -1;
        kiln_buf_adds(&b, ",workdir=", NULL);
        if (overlay_opt_path(c, &b, c->root->work) < 0)
                return -1;
        if (ovl_userxattr(c))
                kiln_buf_adds(&b, ",userxattr", NULL);
        if (b.len + 40 >= (size_t) sysconf(_SC_PAGESIZE)) {
                errno = 0;
                return fail(c, KILN_ERR_LIMIT,
                            "sandbox: %zu layers do not fit in mount(2)'s options (%zu bytes); "
                            "Linux 6.8 or newer is needed",
                            c->root->n_lowers, b.len);
        }
        len = b.len;
        kiln_buf_addf(&b, NULL, ",index=off,metacopy=off,redirect_dir=%s", redirect_mode(c));
        if (mount("overlay", c->root->work, "overlay", 0, b.buf) == 0)
                return 0;
        /* A kernel that does not know one of those options has it off anyway. */
        kiln_buf_truncate(&b, len);
        if (errno == EINVAL && mount("overlay", c->root->work, "overlay", 0, b.buf) == 0)
                return 0;
        return fail(c, is_userns(c) && errno == EPERM ? KILN_ERR_UNSUPPORTED : KILN_ERR_CHILD,
                    "sandbox: mount overlay on '%s'", c->root->work);
}

/* Where overlay cannot be mounted: the root directory itself, bound onto itself (pivot_root
 * needs a mount); the command's changes land in it, and its stubs are tracked as an upper's. */
static int mount_dir(struct child *c)
{
        int mnt;

        c->upperfd = open(c->root->dir, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (c->upperfd < 0)
                return fail(c, KILN_ERR_CHILD, "sandbox: open '%s'", c->root->dir);
        mnt = clone_tree(c->upperfd, "", false, false);
        if (mnt < 0)
                return fail(c, KILN_ERR_CHILD, "sandbox: bind '%s'", c->root->dir);
        if (sys_move_mount(mnt, "", c->upperfd, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0) {
                fail(c, KILN_ERR_CHILD, "sandbox: bind '%s' onto itself", c->root->dir);
                close(mnt);
                return -1;
        }
        c->rootfd = mnt;
        return 0;
}

static int mount_rootfs(struct child *c)
{
        int mnt;

        if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
                return fail(c, KILN_ERR_CHILD, "sandbox: make the mounts private");
        if (c->root->dir)
                return mount_dir(c);
        c->upperfd = open(c->root->upper, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (c->upperfd < 0)
                return fail(c, KILN_ERR_CHILD, "sandbox: open '%s'", c->root->upper);
        mnt = overlay_fsmount(c);
        if (mnt == -1)
                return -1;
        if (mnt >= 0) {
                c->rootfd = mnt;
                return 0;
        }
        if (overlay_mount2(c) < 0)
                return -1;
        c->rootfd = open(c->root->work, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (c->rootfd < 0)
                return fail(c, KILN_ERR_CHILD, "sandbox: open the overlay");
        return 0;
}

/*
 * Docker's masked and read-only parts of /proc (moby's default MaskedPaths and ReadonlyPaths):
 * without them root in a ROOT sandbox could write the host's sysctls. An entry this kernel does
 * not have is skipped, as runc does.
 */
static int proc_protect(struct child *c, int procfd)
{
        static const char *const masked[] = { "kcore",      "keys",        "latency_stats",
                                              "timer_list", "timer_stats", "sched_debug" };
        static const char *const readonly[] = { "bus", "fs", "irq", "sys", "sysrq-trigger" };
        size_t i;

        for (i = 0; i < ELEMENTSOF(masked); i++) {
                _cleanup_close_ int t = openat(procfd, masked[i], O_PATH | O_NOFOLLOW | O_CLOEXEC);
                _cleanup_close_ int null = -1;

                if (t < 0 && errno == ENOENT)
                        continue;
                if (t >= 0)
                        null = clone_tree(AT_FDCWD, "/dev/null", false, true);
                if (null < 0 || attach(null, t) < 0)
                        return fail(c, KILN_ERR_CHILD, "sandbox: mask '/proc/%s'", masked[i]);
        }
        for (i = 0; i < ELEMENTSOF(readonly); i++) {
                _cleanup_close_ int ro = clone_tree(procfd, readonly[i], true, true);
                _cleanup_close_ int t = -1;

                if (ro < 0 && errno == ENOENT)
                        continue;
                if (ro >= 0)
                        t = openat(procfd, readonly[i], O_PATH | O_NOFOLLOW | O_CLOEXEC);
                if (t < 0 || attach(ro, t) < 0)
                        return fail(c, KILN_ERR_CHILD, "sandbox: make '/proc/%s' read-only",
                                    readonly[i]);
        }
        return 0;
}

static int mount_proc(struct child *c)
{
        _cleanup_close_ int target = -1, mnt = -1;

        if (target_open(c, STUB_PROC, &target) < 0)
                return -1;
        mnt = new_fs("proc", NULL, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC);
        /* Refused when the outer /proc has parts masked (inside a container): show that one. */
        if (mnt < 0 && (errno == EPERM || errno == EACCES || errno == EBUSY))
                mnt = clone_tree(AT_FDCWD, "/proc", true, true);
        if (mnt < 0 || attach(mnt, target) < 0)
                return fail(c, KILN_ERR_CHILD, "sandbox: mount /proc");
        return proc_protect(c, mnt);
}

/* Binds a host device onto an empty file made in the sandbox's /dev. */
static int dev_node(struct child *c, int devfd, const char *name)
{
        char host[32];
        _cleanup_close_ int tree = -1, t = -1;

        snprintf(host, sizeof(host), "/dev/%s", name);
        tree = clone_tree(AT_FDCWD, host, false, false);
        if (tree < 0 && errno == ENOENT)
                return 0;
        if (tree >= 0)
                t = openat(devfd, name, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0666);
        if (t < 0 || attach(tree, t) < 0)
                return fail(c, KILN_ERR_CHILD, "sandbox: bind '%s'", host);
        return 0;
}

/* A new filesystem on a directory made in the sandbox's /dev. */
static int dev_mount(struct child *c, int devfd, const char *name, const char *type,
                     const char *const *opts, unsigned attrs)
{
        _cleanup_close_ int t = -1, mnt = -1;

        if (mkdirat(devfd, name, 0755) < 0 ||
            (t = openat(devfd, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0 ||
            (mnt = new_fs(type, opts, attrs)) < 0 || attach(mnt, t) < 0)
                return fail(c, KILN_ERR_CHILD, "sandbox: mount %s on /dev/%s", type, name);
        return 0;
}

static int mount_dev(struct child *c)
{
        static const char *const nodes[] = { "null", "zero", "full", "random", "urandom", "tty" };
        static const char *const links[][2] = {
                { "fd", "/proc/self/fd" },       { "stdin", "/proc/self/fd/0" },
                { "stdout", "/proc/self/fd/1" }, { "stderr", "/proc/self/fd/2" },
                { "ptmx", "pts/ptmx" },
        };
        static const char *const dev_opts[] = { "mode=0755", "size=65536k", NULL };
        static const char *const shm_opts[] = { "mode=1777", "size=65536k", NULL };
        const char *pts_opts[] = { "newinstance", "ptmxmode=0666", "mode=0620", NULL, NULL };
        const unsigned nosuid_noexec = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC;
        _cleanup_close_ int target = -1, dev = -1;
        size_t i;

        if (target_open(c, STUB_DEV, &target) < 0)
                return -1;
        dev = new_fs("tmpfs", dev_opts, MOUNT_ATTR_NOSUID);
        if (dev < 0 || attach(dev, target) < 0)
                return fail(c, KILN_ERR_CHILD, "sandbox: mount tmpfs on /dev");
        for (i = 0; i < ELEMENTSOF(nodes); i++)
                if (dev_node(c, dev, nodes[i]) < 0)
                        return -1;
        /* The tty group exists on the host side only when ids are not remapped. */
        if (!is_userns(c) && !c->env->nested_userns)
                pts_opts[3] = "gid=5";
        if (dev_mount(c, dev, "pts", "devpts", pts_opts, nosuid_noexec) < 0 ||
            dev_mount(c, dev, "shm", "tmpfs", shm_opts, nosuid_noexec | MOUNT_ATTR_NODEV) < 0)
                return -1;
        for (i = 0; i < ELEMENTSOF(links); i++)
                if (symlinkat(links[i][1], dev, links[i][0]) < 0)
                        return fail(c, KILN_ERR_CHILD, "sandbox: symlink /dev/%s", links[i][0]);
        return 0;
}

/* Binds a host file read-only over the image's (or a stub); skipped when the host has none. */
static int bind_host_file(struct child *c, enum stub id, const char *host)
{
        _cleanup_close_ int tree = clone_tree(AT_FDCWD, host, false, true), target = -1;

        if (tree < 0)
                return errno == ENOENT ? 0 : fail(c, KILN_ERR_CHILD, "sandbox: bind '%s'", host);
        if (target_open(c, id, &target) < 0)
                return -1;
        if (target >= 0 && attach(tree, target) < 0)
                return fail(c, KILN_ERR_CHILD, "sandbox: bind '%s' on '/%s'", host,
                            stub_defs[id].path);
        return 0;
}

static int loopback_up(struct child *c)
{
        _cleanup_close_ int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        struct ifreq ifr = { 0 };

        snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "lo");
        if (s < 0 || ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
                return fail(c, KILN_ERR_CHILD, "sandbox: read the flags of 'lo'");
        ifr.ifr_flags |= IFF_UP;
        if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
                return fail(c, KILN_ERR_CHILD, "sandbox: bring 'lo' up");
        return 0;
}

/* runc's trick: pivot_root(".", ".") stacks the old root on the new one; detach it. */
static int pivot(struct child *c)
{
        if (fchdir(c->rootfd) < 0)
                return fail(c, KILN_ERR_CHILD, "sandbox: enter the root");
        if (syscall(SYS_pivot_root, ".", ".") < 0)
                return fail(c, KILN_ERR_CHILD, "sandbox: pivot_root");
        if (umount2(".", MNT_DETACH) < 0)
                return fail(c, KILN_ERR_CHILD, "sandbox: detach the old root");
        if (chdir("/") < 0)
                return fail(c, KILN_ERR_CHILD, "sandbox: enter the new root");
        return 0;
}

static int setup_run(struct child *c)
{
        const char *hostname = c->run->hostname ? c->run->hostname : DEFAULT_HOSTNAME;

        if (mount_rootfs(c) < 0)
                return -1;
        if (c->env->network == SB_NETWORK_NONE && loopback_up(c) < 0)
                return -1;
        /* The UTS namespace is the sandbox's own either way; a container's seccomp profile may
         * refuse sethostname without CAP_SYS_ADMIN (podman's default does, while it allows
         * unshare and mount): RUN then keeps the container's name, not a reason to fail. */
        if (sethostname(hostname, strlen(hostname)) < 0 && (errno != EPERM || c->run->hostname))
                return fail(c, KILN_ERR_CHILD, "sandbox: set the hostname '%s'", hostname);
        if (mount_proc(c) < 0 || mount_dev(c) < 0 ||
            bind_host_file(c, STUB_HOSTS, "/etc/hosts") < 0 ||
            bind_host_file(c, STUB_RESOLV, "/etc/resolv.conf") < 0)
                return -1;
        return pivot(c);
}

/*
 * After the pivot: stdin is the sandbox's /dev/null, stdout and stderr the output pipe, fd 3
 * the message pipe (close-on-exec) and nothing else is open, so neither init nor the command
 * holds a host directory that /proc/self/fd/N could lead back to (CVE-2024-21626).
 */
static int init_fds(struct child *c)
{
        int null = open("/dev/null", O_RDWR | O_CLOEXEC);
        int fd;

        if (null < 0)
                return fail(c, KILN_ERR_CHILD, "sandbox: open /dev/null");
        if (dup2(null, 0) < 0 || dup2(c->out, 1) < 0 || dup2(c->out, 2) < 0)
                return fail(c, KILN_ERR_CHILD, "sandbox: set up stdio");
        for (fd = 0; fd <= 2; fd++)
                if (fcntl(fd, F_SETFD, 0) < 0)
                        return fail(c, KILN_ERR_CHILD, "sandbox: set up stdio");
        if (c->report != 3) {
                if (dup3(c->report, 3, O_CLOEXEC) < 0)
                        return fail(c, KILN_ERR_CHILD, "sandbox: move the message pipe");
                c->report = 3;
        }
        if (close_from(4) < 0)
                return fail(c, KILN_ERR_CHILD, "sandbox: close descriptors");
        c->out = c->rootfd = c->upperfd = -1;
        return 0;
}

/* ------------------------------------------------------------------------------------ */
/* The command                                                                            */
/* ------------------------------------------------------------------------------------ */

/* mkdir -p (0755, owned by root as Docker makes WORKDIR), then in, then check it is inside. */
static int enter_workdir(struct child *c)
{
        const char *cwd = c->run->cwd && *c->run->cwd ? c->run->cwd : "/";
        char path[PATH_MAX], *p;

        if (strlen(cwd) >= sizeof(path)) {
                errno = ENAMETOOLONG;
                return fail(c, KILN_ERR_CHILD, "working directory '%s'", cwd);
        }
        strcpy(path, cwd);
        for (p = path + 1;; p++) {
                char saved = *p;

                if (saved != '/' && saved != '\0')
                        continue;
                *p = '\0';
                if (mkdir(path, 0755) < 0 && errno != EEXIST)
                        return fail(c, KILN_ERR_CHILD, "make working directory '%s'", cwd);
                *p = saved;
                if (!saved)
                        break;
        }
        if (chdir(cwd) < 0)
                return fail(c, KILN_ERR_CHILD, "enter working directory '%s'", cwd);
        errno = 0;
        if (!getcwd(path, sizeof(path)) || path[0] != '/') {
                if (!errno)
                        errno = EXDEV;
                return fail(c, KILN_ERR_CHILD, "working directory '%s' is outside the root", cwd);
        }
        return 0;
}

/* Docker's default capability set; everything else leaves the bounding set before exec. */
static bool docker_cap(int cap)
{
        static const int caps[] = {
                CAP_CHOWN,   CAP_DAC_OVERRIDE, CAP_FSETID,           CAP_FOWNER,
                CAP_MKNOD,   CAP_NET_RAW,      CAP_SETGID,           CAP_SETUID,
                CAP_SETFCAP, CAP_SETPCAP,      CAP_NET_BIND_SERVICE, CAP_SYS_CHROOT,
                CAP_KILL,    CAP_AUDIT_WRITE,
        };
        size_t i;

        for (i = 0; i < ELEMENTSOF(caps); i++)
                if (caps[i] == cap)
                        return true;
        return false;
}

static int drop_capabilities(struct child *c)
{
        struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3 };
        struct __user_cap_data_struct d[2];
        int cap;

        for (cap = 0; cap < 64; cap++) {
                if (docker_cap(cap))
                        continue;
                if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0) {
                        if (errno == EINVAL) /* past the kernel's last capability */
                                break;
                        return fail(c, KILN_ERR_CHILD, "sandbox: drop capability %d", cap);
                }
        }
        /* Inheritable and ambient capabilities would survive exec for root: clear them. */
        if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
                return fail(c, KILN_ERR_CHILD, "sandbox: clear ambient capabilities");
        if (syscall(SYS_capget, &h, d) < 0)
                return fail(c, KILN_ERR_CHILD, "sandbox: read capabilities");
        d[0].inheritable = d[1].inheritable = 0;
        if (syscall(SYS_capset, &h, d) < 0)
                return fail(c, KILN_ERR_CHILD, "sandbox: clear inheritable capabilities");
        return 0;
}

/* EINVAL from setresuid() in a user namespace: the id has no mapping there. */
static const char *unmapped_hint(const struct child *c)
{
        return is_userns(c) && errno == EINVAL ? " (not mapped in the user namespace)" : "";
}

static int drop_privileges(struct child *c)
{
        const char *spec = c->run->user && *c->run->user ? c->run->user : "0";
        _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
        _cleanup_free_ uint32_t *groups = NULL;
        _cleanup_close_ int rootfd = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
        uint32_t uid, gid;
        size_t n = 0;

        _Static_assert(sizeof(gid_t) == sizeof(uint32_t), "gid_t is 32 bits");
        if (rootfd < 0)
                return fail(c, KILN_ERR_CHILD, "sandbox: open the root");
        if (bld_user_resolve(rootfd, spec, &uid, &gid, &groups, &n, &e) < 0) {
                errno = e->errnum;
                return fail(c, e->kind, "%s", e->msg);
        }
        /* no HOME in the environment: the user's from passwd, else "/" (as runc) */
        {
                _cleanup_free_ char *home = bld_user_home(rootfd, spec);
                c->envp = bld_env_with_home(c->run->envp, home);
        }
        if (drop_capabilities(c) < 0)
                return -1;
        /* A single-id user namespace denies setgroups: the groups cannot change there. */
        if (!c->setgroups_denied && setgroups(n, (const gid_t *) groups) < 0)
                return fail(c, KILN_ERR_CHILD, "set the supplementary groups of user '%s'", spec);
        if (setresgid(gid, gid, gid) < 0)
                return fail(c, KILN_ERR_CHILD, "set group %u of user '%s'%s", gid, spec,
                            unmapped_hint(c));
        if (setresuid(uid, uid, uid) < 0)
                return fail(c, KILN_ERR_CHILD, "set user %u of user '%s'%s", uid, spec,
                            unmapped_hint(c));
        return 0;
}

static const char *env_path(const char *const *envp)
{
        for (; envp && *envp; envp++)
                if (strncmp(*envp, "PATH=", 5) == 0)
                        return *envp + 5;
        return DEFAULT_PATH;
}

/* Errors after which execvpe goes on to the next directory of PATH. */
static bool search_goes_on(int e)
{
        return e == ENOENT || e == ENOTDIR || e == ESTALE || e == ENODEV || e == ETIMEDOUT;
}

/* execvpe's search, but in the command's environment rather than ours; returns on failure. */
static void exec_command(struct child *c)
{
        static const char *const empty[] = { NULL };
        const char *file = c->run->argv[0];
        char *const *argv = (char *const *) c->run->argv;
        char *const *envp = c->envp ? c->envp : (char *const *) (c->run->envp ? c->run->envp : empty);
        const char *p = env_path(c->run->envp);
        char buf[PATH_MAX];
        int e = ENOENT;

        if (*file && strchr(file, '/')) {
                execve(file, argv, envp);
                e = errno;
        }
        for (; *file && !strchr(file, '/'); p++) {
                size_t len = strcspn(p, ":");
                int n = snprintf(buf, sizeof(buf), "%.*s%s%s", (int) len, p, len ? "/" : "", file);

                if (n > 0 && (size_t) n < sizeof(buf)) {
                        execve(buf, argv, envp);
                        if (errno == EACCES)
                                e = EACCES;
                        else if (!search_goes_on(errno)) {
                                e = errno;
                                break;
                        }
                }
                p += len;
                if (!*p)
                        break;
        }
        errno = e;
        fail(c, KILN_ERR_CHILD, "exec '%s'", file);
}

static void reset_signals(void)
{
        struct sigaction sa = { .sa_handler = SIG_DFL };
        sigset_t none;
        int sig;

        for (sig = 1; sig < NSIG; sig++)
                if (sig != SIGKILL && sig != SIGSTOP)
                        (void) sigaction(sig, &sa, NULL);
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
}

_noreturn_ static void command_main(struct child *c)
{
        if (setsid() < 0)
                fail(c, KILN_ERR_CHILD, "sandbox: setsid");
        else if (enter_workdir(c) == 0 && drop_privileges(c) == 0)
                exec_command(c);
        child_exit(c, 127);
}

/* pid 1: reaps every process (orphans come to it) until the command itself has exited. */
static int run_command(struct child *c, int *ret_status)
{
        pid_t pid = fork();

        if (pid < 0)
                return fail(c, KILN_ERR_CHILD, "sandbox: fork the command");
        if (pid == 0)
                command_main(c);
        for (;;) {
                int st;
                pid_t p = waitpid(-1, &st, 0);

                if (p == pid) {
                        *ret_status = st;
                        return 0;
                }
                if (p < 0 && errno != EINTR)
                        return fail(c, KILN_ERR_CHILD, "sandbox: wait for the command");
        }
}

static int call_fn(struct child *c)
{
        _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;

        if (c->fn(c->ctx, c->rootfd, &e) == 0)
                return 0;
        errno = e ? e->errnum : 0;
        return fail(c, e ? e->kind : KILN_ERR_GENERIC, "%s",
                    e && e->msg ? e->msg : "failed without saying why");
}

_noreturn_ static void init_main(struct child *c)
{
        struct msg done = { .type = MSG_STATUS };
        int status = 0;

        if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0) {
                fail(c, KILN_ERR_CHILD, "sandbox: set the parent-death signal");
                child_exit(c, 1);
        }
        /* A container's umask, whatever the caller's is: layers must not depend on it. */
        umask(022);
        if (!c->root) {
                /* sb_unshare: only the namespaces, no root filesystem */
                if (call_fn(c) < 0)
                        child_exit(c, 1);
        } else if (!c->run) {
                if (mount_rootfs(c) < 0 || call_fn(c) < 0)
                        child_exit(c, 1);
        } else {
                if (setup_run(c) < 0) {
                        send_stubs(c);
                        child_exit(c, 1);
                }
                send_stubs(c);
                if (init_fds(c) < 0 || run_command(c, &status) < 0)
                        child_exit(c, 1);
        }
        done.status = status;
        send_msg(c, &done);
        _exit(0);
}

/* ------------------------------------------------------------------------------------ */
/* The keeper                                                                             */
/* ------------------------------------------------------------------------------------ */

/* Moves the descriptors the sandbox needs to 3, 4, 5 (close-on-exec) and closes the rest. */
static int keep_fds(struct child *c)
{
        int *fds[] = { &c->report, &c->out, &c->sync };
        int next = 3;
        size_t i;

        for (i = 0; i < ELEMENTSOF(fds); i++)
                if (*fds[i] >= 0 && (*fds[i] = fcntl(*fds[i], F_DUPFD_CLOEXEC, 16)) < 0)
                        return -1;
        for (i = 0; i < ELEMENTSOF(fds); i++)
                if (*fds[i] >= 0) {
                        if (dup3(*fds[i], next, O_CLOEXEC) < 0)
                                return -1;
                        *fds[i] = next++;
                }
        return close_from((unsigned) next);
}

static int unshare_all(struct child *c)
{
        int flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS;

        if (is_userns(c))
                flags |= CLONE_NEWUSER;
        if (c->env->network == SB_NETWORK_NONE)
                flags |= CLONE_NEWNET;
        if (unshare(flags) == 0)
                return 0;
        if (errno != EPERM && errno != EINVAL && errno != ENOSPC && errno != EUSERS &&
            errno != ENOSYS)
                return fail(c, KILN_ERR_CHILD, "sandbox: unshare");
        if (is_userns(c))
                return fail(c, KILN_ERR_UNSUPPORTED,
                            "sandbox: cannot create a user namespace (disabled by a sysctl, or "
                            "blocked by a seccomp profile)");
        return fail(c, KILN_ERR_UNSUPPORTED,
                    "sandbox: cannot create namespaces (root isolation needs CAP_SYS_ADMIN)");
}

/*
 * With the maps written, takes the ids that map to 0 inside: the caller's own ids stay unmapped
 * (and the process nobody) when a range map does not include them. Changing ids clears the
 * parent-death signal, so it is set again.
 */
static int become_root(struct child *c, pid_t caller)
{
        if (!c->setgroups_denied && setgroups(0, NULL) < 0)
                return fail(c, KILN_ERR_CHILD, "sandbox: drop the supplementary groups");
        if (setresgid(0, 0, 0) < 0 || setresuid(0, 0, 0) < 0)
                return fail(c, KILN_ERR_CHILD,
                            "sandbox: become root in the user namespace (the id maps must map "
                            "0)");
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != caller)
                _exit(1);
        return 0;
}

_noreturn_ static void keeper_main(struct child *c, pid_t caller)
{
        struct msg ready = { .type = MSG_READY };
        pid_t pid;
        char go;
        int st;

        if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != caller)
                _exit(1);
        /* forked while the caller held it: this process has no other thread to release it */
        spawn_lock = (pthread_mutex_t) PTHREAD_MUTEX_INITIALIZER;
        reset_signals();
        if (c->run && keep_fds(c) < 0) {
                fail(c, KILN_ERR_CHILD, "sandbox: arrange descriptors");
                child_exit(c, 1);
        }
        if (unshare_all(c) < 0)
                child_exit(c, 1);
        if (is_userns(c)) {
                send_msg(c, &ready);
                if (read_full(c->sync, &go, 1) != 1)
                        _exit(1); /* the caller gave up, and says why */
                close(c->sync);
                c->sync = -1;
                if (become_root(c, caller) < 0)
                        child_exit(c, 1);
        }
        pid = fork();
        if (pid < 0) {
                fail(c, KILN_ERR_CHILD, "sandbox: fork");
                child_exit(c, 1);
        }
        if (pid == 0)
                init_main(c);
        if (c->out >= 0)
                close(c->out);
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
                ;
        _exit(0);
}

/* ------------------------------------------------------------------------------------ */
/* The caller's side                                                                      */
/* ------------------------------------------------------------------------------------ */

struct outcome {
        struct msg err; /* type MSG_ERROR when a child failed */
        struct sb_stub_state stubs[_STUB_MAX];
        bool have_status;
        int status;
        int keeper_status;
};

static void closefd(int *fd)
{
        if (*fd >= 0)
                close(*fd);
        *fd = -1;
}

static void take_msg(struct outcome *o, const struct msg *m)
{
        switch ((enum msg_type) m->type) {
        case MSG_STUBS:
                memcpy(o->stubs, m->stubs, sizeof(o->stubs));
                break;
        case MSG_ERROR:
                if (o->err.type != MSG_ERROR)
                        o->err = *m;
                break;
        case MSG_STATUS:
                o->have_status = true;
                o->status = m->status;
                break;
        case MSG_NONE:
        case MSG_READY:
                break;
        }
}

static bool map_is_self(const struct sb_idmap *m, size_t n, uint32_t self)
{
        return n == 0 || (n == 1 && m[0].inside == 0 && m[0].outside == self && m[0].count == 1);
}

static int write_proc_file(pid_t pid, const char *name, const char *text, struct kiln_error **err)
{
        char path[64];
        _cleanup_close_ int fd = -1;
        size_t len = strlen(text);

        snprintf(path, sizeof(path), "/proc/%d/%s", (int) pid, name);
        errno = 0;
        fd = open(path, O_WRONLY | O_CLOEXEC);
        /* The kernel takes a map in one write only. */
        if (fd < 0 || write(fd, text, len) != (ssize_t) len) {
                if (fd >= 0 && errno == 0)
                        errno = EIO;
                return kiln_error_errno(err, KILN_ERR_CHILD, "sandbox: write '%s'", path);
        }
        return 0;
}

static int write_idmap(pid_t pid, const char *name, const struct sb_idmap *m, size_t n,
                       struct kiln_error **err)
{
        _cleanup_buf_ struct kiln_buf b = KILN_BUF_INIT;
        size_t i;

        for (i = 0; i < n; i++)
                kiln_buf_addf(&b, NULL, "%u %u %u\n", m[i].inside, m[i].outside, m[i].count);
        return write_proc_file(pid, name, b.buf, err);
}

/* newuidmap / newgidmap: the setuid helpers that may map /etc/subuid ranges for a user. */
static int run_idmap_helper(const char *prog, pid_t pid, const struct sb_idmap *m, size_t n,
                            struct kiln_error **err)
{
        _cleanup_(strv_freep) char **argv = xcalloc(3 * n + 3, sizeof(char *));
        _cleanup_close_ int out_r = -1, out_w = -1;
        posix_spawn_file_actions_t fa;
        char msg[512];
        ssize_t len;
        pid_t child;
        size_t i;
        int fds[2], r, st;

        argv[0] = xstrdup(prog);
        argv[1] = xasprintf("%d", (int) pid);
        for (i = 0; i < n; i++) {
                argv[2 + 3 * i] = xasprintf("%u", m[i].inside);
                argv[3 + 3 * i] = xasprintf("%u", m[i].outside);
                argv[4 + 3 * i] = xasprintf("%u", m[i].count);
        }
        pthread_mutex_lock(&spawn_lock);
        if (pipe2(fds, O_CLOEXEC) < 0) {
                pthread_mutex_unlock(&spawn_lock);
                return kiln_error_errno(err, KILN_ERR_IO, "sandbox: pipe");
        }
        out_r = fds[0];
        out_w = fds[1];
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
        posix_spawn_file_actions_adddup2(&fa, out_w, 1);
        posix_spawn_file_actions_adddup2(&fa, out_w, 2);
        r = posix_spawn(&child, prog, &fa, NULL, argv, environ);
        posix_spawn_file_actions_destroy(&fa);
        closefd(&out_w);
        pthread_mutex_unlock(&spawn_lock);
        if (r != 0) {
                errno = r;
                return kiln_error_errno(err, r == ENOENT ? KILN_ERR_UNSUPPORTED : KILN_ERR_CHILD,
                                        "sandbox: run '%s'%s", prog,
                                        r == ENOENT ? " (install the uidmap package to map "
                                                      "/etc/subuid ranges)"
                                                    : "");
        }
        len = read_full(out_r, msg, sizeof(msg) - 1);
        msg[len > 0 ? len : 0] = '\0';
        msg[strcspn(msg, "\n")] = '\0';
        while (waitpid(child, &st, 0) < 0)
                if (errno != EINTR)
                        return kiln_error_errno(err, KILN_ERR_CHILD, "sandbox: wait for '%s'",
                                                prog);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
                return kiln_error_new(err, KILN_ERR_CHILD, "sandbox: '%s' failed: %s", prog,
                                      msg[0] ? msg : "no message");
        return 0;
}

/*
 * The caller's own id alone is written directly (with setgroups denied for the gid, as the
 * kernel requires of an unprivileged writer). Wider maps need privilege: root writes them
 * itself, anyone else goes through newuidmap and newgidmap.
 */
static int write_maps(const struct sb_env *env, pid_t pid, struct kiln_error **err)
{
        uid_t uid = geteuid();
        gid_t gid = getegid();
        struct sb_idmap self_uid = { 0, uid, 1 }, self_gid = { 0, gid, 1 };
        bool root = uid == 0;

        if (map_is_self(env->gid_map, env->n_gid_map, gid)) {
                if (write_proc_file(pid, "setgroups", "deny\n", err) < 0 ||
                    write_idmap(pid, "gid_map", &self_gid, 1, err) < 0)
                        return -1;
        } else if (root) {
                if (write_idmap(pid, "gid_map", env->gid_map, env->n_gid_map, err) < 0)
                        return -1;
        } else if (run_idmap_helper(NEWGIDMAP, pid, env->gid_map, env->n_gid_map, err) < 0) {
                return -1;
        }
        if (map_is_self(env->uid_map, env->n_uid_map, uid))
                return write_idmap(pid, "uid_map", &self_uid, 1, err);
        if (root)
                return write_idmap(pid, "uid_map", env->uid_map, env->n_uid_map, err);
        return run_idmap_helper(NEWUIDMAP, pid, env->uid_map, env->n_uid_map, err);
}

/* USERNS: waits until the keeper has unshared, writes its maps, and lets it go on. */
static int handshake(const struct child *c, pid_t pid, int rep, int *sync_w, struct outcome *o,
                     struct kiln_error **err)
{
        struct msg m;

        if (read_full(rep, &m, sizeof(m)) != (ssize_t) sizeof(m))
                return 0; /* the keeper is gone; the outcome says so */
        if (m.type != MSG_READY) {
                take_msg(o, &m);
                return 0;
        }
        if (write_maps(c->env, pid, err) < 0)
                return -1;
        if (send(*sync_w, "1", 1, MSG_NOSIGNAL) != 1)
                return kiln_error_errno(err, KILN_ERR_CHILD, "sandbox: release the sandbox");
        closefd(sync_w);
        return 0;
}

/* Reads messages and output (handed to the callback as it comes) until both pipes end. */
static int drain(const struct child *c, int rep, int out, struct outcome *o,
                 struct kiln_error **err)
{
        struct pollfd p[2] = { { .fd = rep, .events = POLLIN }, { .fd = out, .events = POLLIN } };
        char buf[OUTPUT_CHUNK];
        struct msg m;

        while (p[0].fd >= 0 || p[1].fd >= 0) {
                if (poll(p, 2, -1) < 0) {
                        if (errno == EINTR)
                                continue;
                        return kiln_error_errno(err, KILN_ERR_IO, "sandbox: poll");
                }
                if (p[1].fd >= 0 && p[1].revents) {
                        ssize_t n = read(p[1].fd, buf, sizeof(buf));
                        if (n > 0 && c->run->output)
                                c->run->output(c->run->output_ctx, buf, (size_t) n);
                        else if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN))
                                p[1].fd = -1;
                }
                if (p[0].fd >= 0 && p[0].revents) {
                        if (read_full(p[0].fd, &m, sizeof(m)) == (ssize_t) sizeof(m))
                                take_msg(o, &m);
                        else
                                p[0].fd = -1;
                }
        }
        return 0;
}

static int make_pipe(int *r, int *w, struct kiln_error **err)
{
        int fds[2];

        if (pipe2(fds, O_CLOEXEC) < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "sandbox: pipe");
        *r = fds[0];
        *w = fds[1];
        return 0;
}

/* Forks the keeper and follows the sandbox to its end. */
static int spawn(struct child *c, struct outcome *o, struct kiln_error **err)
{
        _cleanup_close_ int rep_r = -1, rep_w = -1, out_r = -1, out_w = -1;
        _cleanup_close_ int sync_r = -1, sync_w = -1;
        _cleanup_pid_ pid_t pid = -1;
        pid_t self = getpid();
        int st, sv[2];

        pthread_mutex_lock(&spawn_lock);
        if (make_pipe(&rep_r, &rep_w, err) < 0 || (c->run && make_pipe(&out_r, &out_w, err) < 0)) {
                pthread_mutex_unlock(&spawn_lock);
                return -1;
        }
        if (is_userns(c)) {
                /* A socket, so that a dead keeper is EPIPE for us, not SIGPIPE. */
                if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
                        pthread_mutex_unlock(&spawn_lock);
                        return kiln_error_errno(err, KILN_ERR_IO, "sandbox: socketpair");
                }
                sync_r = sv[0];
                sync_w = sv[1];
        }
        c->report = rep_w;
        c->out = out_w;
        c->sync = sync_r;
        pid = fork();
        if (pid == 0)
                keeper_main(c, self);
        closefd(&rep_w);
        closefd(&out_w);
        closefd(&sync_r);
        pthread_mutex_unlock(&spawn_lock);
        if (pid < 0)
                return kiln_error_errno(err, KILN_ERR_CHILD, "sandbox: fork");
        if (is_userns(c) && handshake(c, pid, rep_r, &sync_w, o, err) < 0)
                return -1;
        closefd(&sync_w);
        if (drain(c, rep_r, out_r, o, err) < 0)
                return -1;
        while (waitpid(pid, &st, 0) < 0)
                if (errno != EINTR)
                        return kiln_error_errno(err, KILN_ERR_CHILD, "sandbox: wait");
        pid = -1;
        o->keeper_status = st;
        return 0;
}

/* Removes one stub from the upper if it is still the inode that was made, unchanged. */
static int remove_stub(const char *upper, int upperfd, enum stub id, const struct sb_stub_state *s,
                       struct kiln_error **err)
{
        const struct stub_def *d = &stub_defs[id];
        _cleanup_close_ int pfd = -1;
        int at = upperfd;
        struct stat st;

        if (d->parent != STUB_NONE) {
                pfd = sys_openat2(upperfd, stub_defs[d->parent].path, O_PATH | O_DIRECTORY,
                                  RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS |
                                          RESOLVE_NO_XDEV);
                if (pfd < 0)
                        return errno == ENOENT || errno == ELOOP || errno == ENOTDIR
                                       ? 0
                                       : kiln_error_errno(err, KILN_ERR_IO,
                                                          "sandbox: open '/%s' in '%s'",
                                                          stub_defs[d->parent].path, upper);
                at = pfd;
        }
        if (fstatat(at, d->name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                return errno == ENOENT
                               ? 0
                               : kiln_error_errno(err, KILN_ERR_IO,
                                                  "sandbox: stat '/%s' in the upper", d->path);
        if (st.st_ino != s->ino || st.st_mode != s->mode || (!d->dir && st.st_size != 0))
                return 0;
        if (unlinkat(at, d->name, d->dir ? AT_REMOVEDIR : 0) == 0 || errno == ENOENT ||
            errno == ENOTEMPTY || errno == EEXIST)
                return 0;
        return kiln_error_errno(err, KILN_ERR_IO, "sandbox: remove the stub '/%s' from '%s'",
                                d->path, upper);
}

static int remove_stubs(const char *upper, const struct sb_stub_state *stubs, struct kiln_error **err)
{
        _cleanup_close_ int fd = -1;
        int id;

        for (id = 0; id < _STUB_MAX && !stubs[id].made; id++)
                ;
        if (id == _STUB_MAX)
                return 0;
        fd = open(upper, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "sandbox: open '%s'", upper);
        /* Files before the directories they are in. */
        for (id = _STUB_MAX - 1; id >= 0; id--)
                if (stubs[id].made && remove_stub(upper, fd, (enum stub) id, &stubs[id], err) < 0)
                        return -1;
        return 0;
}

static int child_error(const struct msg *m, struct kiln_error **err)
{
        enum kiln_errkind kind = m->kind >= 0 && m->kind < _KILN_ERR_MAX
                                         ? (enum kiln_errkind) m->kind
                                         : KILN_ERR_CHILD;
        char text[MSG_TEXT_MAX];

        snprintf(text, sizeof(text), "%.*s", (int) sizeof(m->text), m->text);
        errno = m->errnum;
        return kiln_error_errno(err, kind, "%s", text);
}

static char *describe_status(int st)
{
        if (WIFEXITED(st))
                return xasprintf("exit status %d", WEXITSTATUS(st));
        if (WIFSIGNALED(st))
                return xasprintf("killed by signal %d", WTERMSIG(st));
        return xasprintf("wait status %#x", (unsigned) st);
}

static int finish(const struct child *c, const struct outcome *o, int *ret_status,
                  struct kiln_error **err)
{
        _cleanup_free_ char *how = NULL;

        const char *upper = c->root ? (c->root->dir ? c->root->dir : c->root->upper) : NULL;

        if (o->err.type == MSG_ERROR) {
                if (upper)
                        (void) remove_stubs(upper, o->stubs, NULL);
                return child_error(&o->err, err);
        }
        if (!o->have_status) {
                if (upper)
                        (void) remove_stubs(upper, o->stubs, NULL);
                how = describe_status(o->keeper_status);
                return kiln_error_new(err, KILN_ERR_CHILD,
                                      "sandbox: ended before its command did (%s)", how);
        }
        if (upper && remove_stubs(upper, o->stubs, err) < 0)
                return -1;
        if (ret_status)
                *ret_status = o->status;
        return 0;
}

static int check_path(const char *what, const char *path, struct kiln_error **err)
{
        if (!path || path[0] != '/')
                return kiln_error_new(err, KILN_ERR_INVALID, "sandbox: %s '%s' is not absolute",
                                      what, path ? path : "(null)");
        return 0;
}

static int check_setup(const struct sb_rootfs *root, const struct sb_env *env,
                       struct kiln_error **err)
{
        size_t i;

        if (root->dir) {
                if (check_path("root directory", root->dir, err) < 0)
                        return -1;
        } else {
                if (!root->lowers || root->n_lowers == 0)
                        return kiln_error_new(err, KILN_ERR_INVALID, "sandbox: no lower directory");
                for (i = 0; i < root->n_lowers; i++)
                        if (check_path("lower directory", root->lowers[i], err) < 0)
                                return -1;
                if (check_path("upper directory", root->upper, err) < 0 ||
                    check_path("work directory", root->work, err) < 0)
                        return -1;
        }
        if (env->n_uid_map > MAX_ID_LINES || env->n_gid_map > MAX_ID_LINES ||
            (env->n_uid_map && !env->uid_map) || (env->n_gid_map && !env->gid_map))
                return kiln_error_new(err, KILN_ERR_INVALID, "sandbox: invalid id maps");
        switch (env->network) {
        case SB_NETWORK_HOST:
        case SB_NETWORK_NONE:
                break;
        case _SB_NETWORK_MAX:
                return kiln_error_new(err, KILN_ERR_INVALID, "sandbox: invalid network mode");
        }
        switch (env->isolation) {
        case SB_ISOLATION_ROOT:
                if (geteuid() != 0)
                        return kiln_error_new(err, KILN_ERR_UNSUPPORTED,
                                              "sandbox: root isolation needs root (running as "
                                              "uid %u)",
                                              (unsigned) geteuid());
                return 0;
        case SB_ISOLATION_USERNS:
                return 0;
        case _SB_ISOLATION_MAX:
                break;
        }
        return kiln_error_new(err, KILN_ERR_INVALID, "sandbox: invalid isolation");
}

/* In a user namespace made with setgroups "deny" (unshare --map-root-user): inherited. */
static bool setgroups_denied_here(void)
{
        _cleanup_free_ char *v = NULL;

        return kiln_read_file_at(AT_FDCWD, "/proc/self/setgroups", 64, &v, NULL, NULL) == 0 &&
               strncmp(v, "deny", 4) == 0;
}

static struct child child_init(const struct sb_rootfs *root, const struct sb_env *env)
{
        return (struct child){
                .root = root,
                .env = env,
                .setgroups_denied = (env->isolation == SB_ISOLATION_USERNS &&
                                     map_is_self(env->gid_map, env->n_gid_map, getegid())) ||
                                    (env->nested_userns && setgroups_denied_here()),
                .report = -1,
                .sync = -1,
                .out = -1,
                .upperfd = -1,
                .rootfd = -1,
        };
}

int sb_run(const struct sb_run *run, int *ret_status, struct kiln_error **err)
{
        struct child c = child_init(&run->root, &run->env);
        struct outcome o = { .keeper_status = 0 };
        const char *host = run->hostname ? run->hostname : DEFAULT_HOSTNAME;

        if (check_setup(&run->root, &run->env, err) < 0)
                return -1;
        if (!run->argv || !run->argv[0])
                return kiln_error_new(err, KILN_ERR_INVALID, "sandbox: no command");
        if (run->cwd && *run->cwd && check_path("working directory", run->cwd, err) < 0)
                return -1;
        if (strlen(host) > 64)
                return kiln_error_new(err, KILN_ERR_INVALID, "sandbox: hostname '%s' is too long",
                                      host);
        c.run = run;
        if (spawn(&c, &o, err) < 0)
                return -1;
        return finish(&c, &o, ret_status, err);
}

int sb_call(const struct sb_rootfs *root, const struct sb_env *env,
            int (*fn)(void *ctx, int rootfd, struct kiln_error **err), void *ctx,
            struct kiln_error **err)
{
        struct child c = child_init(root, env);
        struct outcome o = { .keeper_status = 0 };

        if (check_setup(root, env, err) < 0)
                return -1;
        if (!fn)
                return kiln_error_new(err, KILN_ERR_INVALID, "sandbox: no function");
        c.fn = fn;
        c.ctx = ctx;
        if (spawn(&c, &o, err) < 0)
                return -1;
        return finish(&c, &o, NULL, err);
}

int sb_unshare(const struct sb_env *env, int (*fn)(void *ctx, int rootfd, struct kiln_error **err),
               void *ctx, struct kiln_error **err)
{
        struct child c = child_init(NULL, env);
        struct outcome o = { .keeper_status = 0 };

        if (env->n_uid_map > MAX_ID_LINES || env->n_gid_map > MAX_ID_LINES ||
            (env->n_uid_map && !env->uid_map) || (env->n_gid_map && !env->gid_map))
                return kiln_error_new(err, KILN_ERR_INVALID, "sandbox: invalid id maps");
        if (!fn)
                return kiln_error_new(err, KILN_ERR_INVALID, "sandbox: no function");
        c.fn = fn;
        c.ctx = ctx;
        if (spawn(&c, &o, err) < 0)
                return -1;
        return finish(&c, &o, NULL, err);
}

/* sb_unshare_into(): the caller's function and where its result goes in the child. */
struct shared_call {
        int (*fn)(void *ctx, void *result, struct kiln_error **err);
        void *ctx;
        void *result; /* shared with the caller */
};

static int call_with_result(void *ctx, int unused, struct kiln_error **err)
{
        struct shared_call *c = ctx;

        return c->fn(c->ctx, c->result, err);
}

int sb_unshare_into(const struct sb_env *env, int (*fn)(void *ctx, void *result, struct kiln_error **err),
                    void *ctx, void *result, size_t size, struct kiln_error **err)
{
        struct shared_call c = { .fn = fn, .ctx = ctx };
        int r;

        c.result = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (c.result == MAP_FAILED)
                return kiln_error_errno(err, KILN_ERR_IO, "sandbox: map a result");
        memcpy(c.result, result, size);
        r = sb_unshare(env, call_with_result, &c, err);
        memcpy(result, c.result, size);
        munmap(c.result, size);
        return r;
}

/* ------------------------------------------------------------------------------------ */
/* Probing                                                                                */
/* ------------------------------------------------------------------------------------ */

enum probe_step {
        PROBE_OK,
        PROBE_UNSHARE,
        PROBE_MAP,
        PROBE_PRIVATE,
        PROBE_MOUNT_API,
        PROBE_OVERLAY,
};

struct probe_result {
        int32_t step, errnum;
        char log[256]; /* the kernel's message about a refused overlay, if any */
};

static int probe_write(const char *path, const char *text)
{
        _cleanup_close_ int fd = open(path, O_WRONLY | O_CLOEXEC);

        return fd < 0 || write(fd, text, strlen(text)) < 0 ? -1 : 0;
}

/* In a fresh user namespace: the caller's ids alone, mapped to 0 (setgroups denied first, as
 * the kernel requires of an unprivileged writer). */
static int probe_map_self(uid_t uid, gid_t gid)
{
        char map[64];

        if (probe_write("/proc/self/setgroups", "deny\n") < 0)
                return -1;
        snprintf(map, sizeof(map), "0 %u 1\n", (unsigned) gid);
        if (probe_write("/proc/self/gid_map", map) < 0)
                return -1;
        snprintf(map, sizeof(map), "0 %u 1\n", (unsigned) uid);
        return probe_write("/proc/self/uid_map", map);
}

/* An overlay of dir/{lower,upper,work} attached on dir/merged; the kernel's complaint in `log`. */
static int probe_overlay_mount(const char *dir, bool userns, char *log, size_t size)
{
        static const char *const keys[] = { "lowerdir", "upperdir", "workdir" };
        static const char *const names[] = { "lower", "upper", "work" };
        _cleanup_close_ int fs = sys_fsopen("overlay", FSOPEN_CLOEXEC), mnt = -1;
        char path[PATH_MAX + 16];
        size_t i;

        if (fs < 0)
                return -1;
        for (i = 0; i < ELEMENTSOF(keys); i++) {
                snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
                if (sys_fsconfig(fs, FSCONFIG_SET_STRING, keys[i], path, 0) < 0)
                        goto fail;
        }
        (void) sys_fsconfig(fs, FSCONFIG_SET_STRING, "index", "off", 0);
        if (userns && sys_fsconfig(fs, FSCONFIG_SET_FLAG, "userxattr", NULL, 0) < 0)
                goto fail;
        if (sys_fsconfig(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
                goto fail;
        mnt = sys_fsmount(fs, FSMOUNT_CLOEXEC, 0);
        if (mnt < 0)
                goto fail;
        snprintf(path, sizeof(path), "%s/merged", dir);
        return sys_move_mount(mnt, "", AT_FDCWD, path, MOVE_MOUNT_F_EMPTY_PATH);
fail:
        i = (size_t) errno;
        fs_log(fs, log, size);
        errno = (int) i;
        return -1;
}

/* The steps sb_run() depends on, in a throw-away child: namespaces, maps, the mount API, overlay.
 */
static enum probe_step probe_steps(const char *dir, bool userns, uid_t uid, gid_t gid, char *log,
                                   size_t size)
{
        _cleanup_close_ int tree = -1;

        if (unshare(CLONE_NEWNS | (userns ? CLONE_NEWUSER : 0)) < 0)
                return PROBE_UNSHARE;
        if (userns && probe_map_self(uid, gid) < 0)
                return PROBE_MAP;
        if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
                return PROBE_PRIVATE;
        tree = clone_tree(AT_FDCWD, "/dev/null", false, true);
        if (tree < 0)
                return PROBE_MOUNT_API;
        if (probe_overlay_mount(dir, userns || sb_nested_userns(), log, size) < 0)
                return PROBE_OVERLAY;
        return PROBE_OK;
}

/* Removes the probe's small tree; best effort. */
static void remove_tree_at(int parent, const char *name, unsigned depth)
{
        _cleanup_close_ int fd = -1;
        struct dirent *de;
        DIR *d;

        if (unlinkat(parent, name, AT_REMOVEDIR) == 0 || errno != ENOTEMPTY || depth == 0)
                return;
        fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0 || !(d = fdopendir(fd)))
                return;
        fd = -1; /* now the DIR's */
        while ((de = readdir(d)))
                if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0 &&
                    unlinkat(dirfd(d), de->d_name, 0) < 0)
                        remove_tree_at(dirfd(d), de->d_name, depth - 1);
        closedir(d);
        (void) unlinkat(parent, name, AT_REMOVEDIR);
}

/* Why overlay failed in `dir`: the kernel's message when it gave one, and errno. */
static char *overlay_reason(const struct probe_result *r, bool userns)
{
        const char *e = strerror(r->errnum);
        char log[sizeof(r->log) + 1];

        snprintf(log, sizeof(log), "%.*s", (int) sizeof(r->log), r->log);
        log[strcspn(log, "\n")] = '\0';
        if (log[0])
                return xasprintf("%s: %s", log, e);
        if (userns)
                return xasprintf("%s; in a user namespace Linux 5.11 or newer is needed, with user "
                                 "xattrs on that filesystem",
                                 e);
        return xstrdup(e);
}

static char *probe_reason(const struct probe_result *r, bool userns, const char *dir)
{
        const char *e = strerror(r->errnum);
        _cleanup_free_ char *why = NULL;

        switch ((enum probe_step) r->step) {
        case PROBE_OK:
                return NULL;
        case PROBE_UNSHARE:
                return userns ? xasprintf("user namespaces are refused (unshare: %s)", e)
                              : xasprintf("mount namespaces are refused (unshare: %s)", e);
        case PROBE_MAP:
                return xasprintf("ids cannot be mapped in a user namespace (%s)", e);
        case PROBE_PRIVATE:
                return xasprintf("mounts cannot be made private (%s)", e);
        case PROBE_MOUNT_API:
                return xasprintf("the mount API is refused (open_tree: %s)", e);
        case PROBE_OVERLAY:
                why = overlay_reason(r, userns);
                return userns ? xasprintf("overlay cannot be mounted in a user namespace on '%s' (%s)", dir, why)
                              : xasprintf("overlay cannot be mounted on '%s' (%s)", dir, why);
        }
        return xasprintf("probe step %d failed (%s)", (int) r->step, e);
}

/* Tries the sandbox's steps in a child, in a directory made in `base`. */
static int probe(bool userns, const char *base, struct probe_result *ret, struct kiln_error **err)
{
        static const char *const dirs[] = { "lower", "upper", "work", "merged" };
        _cleanup_free_ char *dir = xasprintf("%s/kiln-probe-XXXXXX", base);
        _cleanup_close_ int dfd = -1, r = -1, w = -1;
        struct probe_result res = { PROBE_UNSHARE, ECHILD, "" };
        uid_t uid = geteuid();
        gid_t gid = getegid();
        pid_t pid;
        size_t i;

        if (!mkdtemp(dir))
                return kiln_error_errno(err, KILN_ERR_IO, "sandbox: make a directory in '%s'", base);
        dfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
        for (i = 0; dfd >= 0 && i < ELEMENTSOF(dirs); i++)
                if (mkdirat(dfd, dirs[i], 0755) < 0)
                        break;
        if (dfd < 0 || i < ELEMENTSOF(dirs) || make_pipe(&r, &w, err) < 0) {
                if (dfd < 0 || i < ELEMENTSOF(dirs))
                        kiln_error_errno(err, KILN_ERR_IO, "sandbox: make '%s'", dir);
                remove_tree_at(AT_FDCWD, dir, 2);
                return -1;
        }
        pid = fork();
        if (pid == 0) {
                (void) prctl(PR_SET_PDEATHSIG, SIGKILL);
                res.step = (int32_t) probe_steps(dir, userns, uid, gid, res.log, sizeof(res.log));
                res.errnum = errno;
                (void) write_full(w, &res, sizeof(res));
                _exit(0);
        }
        closefd(&w);
        if (pid > 0) {
                if (read_full(r, &res, sizeof(res)) != (ssize_t) sizeof(res))
                        res = (struct probe_result){ PROBE_UNSHARE, ECHILD, "" };
                while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
                        ;
        } else {
                res.errnum = errno;
        }
        /* The child's mount namespace is gone with it: nothing is mounted on merged now. */
        remove_tree_at(AT_FDCWD, dir, 3);
        *ret = res;
        return 0;
}

bool sb_nested_userns(void)
{
        _cleanup_free_ char *map = NULL;
        unsigned long inside, outside, count;

        if (kiln_read_file_at(AT_FDCWD, "/proc/self/uid_map", 4096, &map, NULL, NULL) < 0)
                return false;
        return sscanf(map, "%lu %lu %lu", &inside, &outside, &count) != 3 || inside != 0 || outside != 0 ||
               count != 4294967295UL;
}

/* Why user namespaces cannot work for an unprivileged user, without trying; NULL if they may. */
static char *userns_disabled(void)
{
        static const char *const knobs[] = { "/proc/sys/user/max_user_namespaces",
                                             "/proc/sys/kernel/unprivileged_userns_clone" };
        size_t i;

        for (i = 0; i < ELEMENTSOF(knobs); i++) {
                _cleanup_free_ char *v = NULL;

                if (kiln_read_file_at(AT_FDCWD, knobs[i], 64, &v, NULL, NULL) == 0 &&
                    strtol(v, NULL, 10) == 0 && v[0] == '0')
                        return xasprintf("unprivileged user namespaces are disabled: %s is 0",
                                         knobs[i]);
        }
        return NULL;
}

static char *userns_why(const char *root_fail)
{
        _cleanup_free_ struct sb_idmap *u = NULL, *g = NULL;
        _cleanup_free_ char *ids = NULL;
        size_t nu = 0, ng = 0;

        sb_subid_maps(&u, &nu, &g, &ng);
        if (nu && ng && (geteuid() == 0 || access(NEWUIDMAP, X_OK) == 0))
                ids = xstrdup("a user namespace with the /etc/subuid and /etc/subgid ranges");
        else if (nu && ng)
                ids = xstrdup("a user namespace with a single id: /etc/subuid has ranges, but "
                              "newuidmap is not installed (the uidmap package)");
        else
                ids = xasprintf("a user namespace with a single id (no /etc/subuid range for "
                                "uid %u): USER and chown to other ids will fail",
                                (unsigned) geteuid());
        if (root_fail)
                return xasprintf("running as root, but %s; using %s", root_fail, ids);
        return TAKE_PTR(ids);
}

int sb_probe_at(const char *dir, enum sb_isolation *ret, char **ret_why, char **ret_overlay_fail,
                struct kiln_error **err)
{
        _cleanup_free_ char *root_fail = NULL, *userns_fail = NULL;
        struct probe_result rr = { PROBE_UNSHARE, 0, "" }, ur = { PROBE_UNSHARE, 0, "" };
        bool root = geteuid() == 0, userns_tried = false;

        if (root) {
                if (probe(false, dir, &rr, err) < 0)
                        return -1;
                if (rr.step == PROBE_OK) {
                        *ret = SB_ISOLATION_ROOT;
                        *ret_why = xstrdup("running as root");
                        *ret_overlay_fail = NULL;
                        return 0;
                }
                root_fail = probe_reason(&rr, false, dir);
        }
        if (!root)
                userns_fail = userns_disabled();
        if (!userns_fail) {
                if (probe(true, dir, &ur, err) < 0)
                        return -1;
                userns_tried = true;
                userns_fail = probe_reason(&ur, true, dir);
        }
        if (!userns_fail) {
                *ret = SB_ISOLATION_USERNS;
                *ret_why = userns_why(root_fail);
                *ret_overlay_fail = NULL;
                return 0;
        }
        /* Namespaces work but overlay does not: the caller works without it. */
        if (root && rr.step == PROBE_OVERLAY) {
                *ret = SB_ISOLATION_ROOT;
                *ret_why = xstrdup("running as root");
                *ret_overlay_fail = overlay_reason(&rr, false);
                return 0;
        }
        if (userns_tried && ur.step == PROBE_OVERLAY) {
                *ret = SB_ISOLATION_USERNS;
                *ret_why = userns_why(root ? root_fail : NULL);
                *ret_overlay_fail = overlay_reason(&ur, true);
                return 0;
        }
        if (root_fail)
                return kiln_error_new(err, KILN_ERR_UNSUPPORTED, "running as root, but %s; and %s",
                                      root_fail, userns_fail);
        return kiln_error_new(err, KILN_ERR_UNSUPPORTED, "%s", userns_fail);
}

int sb_probe(enum sb_isolation *ret, char **ret_why, struct kiln_error **err)
{
        const char *tmp = getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
        _cleanup_free_ char *why = NULL, *overlay_fail = NULL;
        enum sb_isolation iso;

        if (sb_probe_at(tmp, &iso, &why, &overlay_fail, err) < 0)
                return -1;
        if (overlay_fail)
                return kiln_error_new(err, KILN_ERR_UNSUPPORTED, "overlay cannot be mounted on '%s' (%s)", tmp,
                                      overlay_fail);
        *ret = iso;
        *ret_why = TAKE_PTR(why);
        return 0;
}

int sb_probe_overlay(enum sb_isolation isolation, const char *dir, char **ret_fail, struct kiln_error **err)
{
        struct probe_result r;
        bool userns = isolation == SB_ISOLATION_USERNS;

        if (probe(userns, dir, &r, err) < 0)
                return -1;
        *ret_fail = r.step == PROBE_OVERLAY ? overlay_reason(&r, userns) : NULL;
        return 0;
}

static enum sb_probe_step public_step(int32_t step)
{
        switch ((enum probe_step) step) {
        case PROBE_OK:
                return SB_PROBE_OK;
        case PROBE_UNSHARE:
                return SB_PROBE_UNSHARE;
        case PROBE_MAP:
                return SB_PROBE_MAP;
        case PROBE_PRIVATE:
                return SB_PROBE_PRIVATE;
        case PROBE_MOUNT_API:
                return SB_PROBE_MOUNT_API;
        case PROBE_OVERLAY:
                return SB_PROBE_OVERLAY;
        }
        return SB_PROBE_UNSHARE;
}

int sb_probe_report(enum sb_isolation isolation, const char *dir, struct sb_probe_report *ret,
                    struct kiln_error **err)
{
        struct probe_result r;
        bool userns = isolation == SB_ISOLATION_USERNS;

        if (probe(userns, dir, &r, err) < 0)
                return -1;
        *ret = (struct sb_probe_report){
                .failed = public_step(r.step),
                .errnum = r.step == PROBE_OK ? 0 : r.errnum,
                .why = probe_reason(&r, userns, dir),
                .overlay_fail = r.step == PROBE_OVERLAY ? overlay_reason(&r, userns) : NULL,
        };
        return 0;
}

void sb_probe_report_release(struct sb_probe_report *r)
{
        free(r->why);
        free(r->overlay_fail);
        r->why = r->overlay_fail = NULL;
}

/* In a throw-away child: new namespaces, then procfs in a grandchild, pid 1 of the new pid
 * namespace (the one that may mount it). The failed step, errno set. */
static enum probe_step probe_proc_steps(bool userns, uid_t uid, gid_t gid, const char **ret_what)
{
        pid_t pid;
        int st;

        *ret_what = "unshare";
        if (unshare(CLONE_NEWNS | CLONE_NEWPID | (userns ? CLONE_NEWUSER : 0)) < 0)
                return PROBE_UNSHARE;
        *ret_what = "write the id maps";
        if (userns && probe_map_self(uid, gid) < 0)
                return PROBE_MAP;
        *ret_what = "mount proc";
        pid = fork();
        if (pid < 0)
                return PROBE_MOUNT_API;
        if (pid == 0) {
                int mnt = new_fs("proc", NULL, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC);

                _exit(mnt < 0 ? (errno > 0 && errno < 256 ? errno : EIO) : 0);
        }
        while (waitpid(pid, &st, 0) < 0)
                if (errno != EINTR)
                        return PROBE_MOUNT_API;
        if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
                return PROBE_OK;
        errno = WIFEXITED(st) ? WEXITSTATUS(st) : ECHILD;
        return PROBE_MOUNT_API;
}

int sb_probe_proc(enum sb_isolation isolation, bool *ret_unshared, char **ret_fail,
                  struct kiln_error **err)
{
        _cleanup_close_ int r = -1, w = -1;
        struct probe_result res = { PROBE_UNSHARE, ECHILD, "" };
        bool userns = isolation == SB_ISOLATION_USERNS;
        uid_t uid = geteuid();
        gid_t gid = getegid();
        pid_t pid;

        if (make_pipe(&r, &w, err) < 0)
                return -1;
        pid = fork();
        if (pid == 0) {
                const char *what = "";

                (void) prctl(PR_SET_PDEATHSIG, SIGKILL);
                res.step = (int32_t) probe_proc_steps(userns, uid, gid, &what);
                res.errnum = errno;
                snprintf(res.log, sizeof(res.log), "%s", what);
                (void) write_full(w, &res, sizeof(res));
                _exit(0);
        }
        closefd(&w);
        if (pid < 0)
                return kiln_error_errno(err, KILN_ERR_CHILD, "sandbox: fork");
        if (read_full(r, &res, sizeof(res)) != (ssize_t) sizeof(res))
                res = (struct probe_result){ PROBE_UNSHARE, ECHILD, "wait for the probe" };
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
                ;
        res.log[sizeof(res.log) - 1] = '\0';
        *ret_unshared = res.step != PROBE_UNSHARE && res.step != PROBE_MAP;
        *ret_fail = res.step == PROBE_OK ? NULL : xasprintf("%s: %s", res.log, strerror(res.errnum));
        return 0;
}

char *sb_userns_disabled(void)
{
        return userns_disabled();
}

/* ------------------------------------------------------------------------------------ */
/* Stubs in a root directory that outlives one step                                       */
/* ------------------------------------------------------------------------------------ */

int sb_stubs_make(const char *dir, struct sb_stub_state ret[SB_STUBS_MAX], struct kiln_error **err)
{
        static const struct {
                enum stub id;
                const char *host; /* made only when the host has it to bind */
        } want[] = {
                { STUB_PROC, NULL },
                { STUB_DEV, NULL },
                { STUB_HOSTS, "/etc/hosts" },
                { STUB_RESOLV, "/etc/resolv.conf" },
        };
        struct sb_rootfs root = { .dir = dir };
        struct sb_env env = { .isolation = SB_ISOLATION_ROOT };
        struct child c = child_init(&root, &env);
        size_t i;
        int r = 0;

        c.rootfd = open(dir, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (c.rootfd < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "sandbox: open '%s'", dir);
        c.upperfd = c.rootfd;
        for (i = 0; i < ELEMENTSOF(want) && r == 0; i++) {
                int fd = -1;

                if (want[i].host && access(want[i].host, F_OK) < 0)
                        continue;
                r = target_open(&c, want[i].id, &fd);
                if (fd >= 0)
                        close(fd);
        }
        close(c.rootfd);
        if (r < 0)
                return child_error(&c.err, err);
        memcpy(ret, c.stubs, sizeof(c.stubs));
        return 0;
}

int sb_stubs_remove(const char *dir, const struct sb_stub_state stubs[SB_STUBS_MAX], struct kiln_error **err)
{
        return remove_stubs(dir, stubs, err);
}

/* ------------------------------------------------------------------------------------ */
/* /etc/subuid and /etc/subgid                                                            */
/* ------------------------------------------------------------------------------------ */

/* "owner:start:count" lines whose owner is the user's name or uid; the caller's id maps to 0. */
static void subid_map(const char *file, const char *name, uid_t owner, uint32_t self,
                      struct sb_idmap **ret, size_t *ret_n)
{
        _cleanup_free_ char *data = NULL;
        _cleanup_free_ struct sb_idmap *m = NULL;
        char *line, *save = NULL, uidbuf[16];
        size_t n = 0, alloc = 0;
        uint32_t next = 1;

        *ret = NULL;
        *ret_n = 0;
        snprintf(uidbuf, sizeof(uidbuf), "%u", (unsigned) owner);
        if (kiln_read_file_at(AT_FDCWD, file, 1 << 20, &data, NULL, NULL) < 0)
                return;
        for (line = strtok_r(data, "\n", &save); line && next <= SUBID_MAX;
             line = strtok_r(NULL, "\n", &save)) {
                char *start = strchr(line, ':'), *count = start ? strchr(start + 1, ':') : NULL;
                uint32_t s, cnt;

                if (!count)
                        continue;
                *start++ = '\0';
                *count++ = '\0';
                if ((strcmp(line, name) != 0 && strcmp(line, uidbuf) != 0) ||
                    !bld_parse_u32(start, UINT32_MAX, &s) || !bld_parse_u32(count, UINT32_MAX, &cnt) || cnt == 0 ||
                    (uint64_t) s + cnt > (uint64_t) UINT32_MAX + 1)
                        continue;
                if (cnt > SUBID_MAX + 1 - next)
                        cnt = SUBID_MAX + 1 - next;
                XGROW(m, n + 2, alloc);
                if (n == 0)
                        m[n++] = (struct sb_idmap){ 0, self, 1 };
                m[n++] = (struct sb_idmap){ next, s, cnt };
                next += cnt;
        }
        *ret = TAKE_PTR(m);
        *ret_n = n;
}

void sb_subid_maps(struct sb_idmap **ret_uid, size_t *ret_n_uid, struct sb_idmap **ret_gid,
                   size_t *ret_n_gid)
{
        struct passwd pw, *found = NULL;
        char buf[4096];
        uid_t uid = getuid();
        const char *name = "";

        if (getpwuid_r(uid, &pw, buf, sizeof(buf), &found) == 0 && found)
                name = found->pw_name;
        subid_map("/etc/subuid", name, uid, uid, ret_uid, ret_n_uid);
        subid_map("/etc/subgid", name, uid, getgid(), ret_gid, ret_n_gid);
}
