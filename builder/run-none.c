/*
 * --isolation none, as kaniko: no namespaces and no mounts, for containers that forbid them (a
 * Kubernetes pod under containerd's default seccomp profile). The stage that has RUN steps
 * takes over the container's own root: everything in `/` is deleted except what is kept (the
 * mount points, kiln's own directory, the store, the build context, /etc/resolv.conf,
 * /etc/hosts and /etc/hostname), the stage's layers are extracted into it, and each step is a
 * plain fork and exec (or, for COPY, ADD and WORKDIR, a call in this process) followed by a
 * stat-only diff of `/` against a snapshot taken before it, the kept paths left out. A stage
 * without RUN works the same way in a directory of the build's scratch space. Stages run one
 * at a time: only one can own `/`.
 *
 * Nothing here ever crosses a mount point: mount points are read from /proc/self/mountinfo
 * and kept, and removal never descends into a directory on another device.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "builder/builder-internal.h"
#include "builder/common/fd-util.h"
#include "builder/common/strbuf.h"
#include "builder/common/xalloc.h"

#define FORCE_VAR "KILN_ISOLATION_NONE_FORCE"
#define KEEP_VAR  "KILN_NONE_KEEP"
#define MAX_DEPTH 4096

extern char **environ;

struct bld_none {
        char **keep; /* absolute directories kiln needs (for messages) */
        size_t n_keep;
        char **exclude; /* relative to "/": kept, never snapshotted, never extracted over */
        size_t n_exclude;
        size_t owner; /* the stage whose root rootfd is; SIZE_MAX: none */
        int rootfd;
        bool slash; /* rootfd is "/" */
        dev_t root_dev;
        struct layer_snapshot *snap;
};

/* ---- where kiln runs ---- */

static bool file_has(const char *path, const char *const *words)
{
        _cleanup_free_ char *data = NULL;
        size_t len, i;

        if (kiln_read_file_at(AT_FDCWD, path, 1 << 20, &data, &len, NULL) < 0)
                return false;
        for (i = 0; words[i]; i++)
                if (strstr(data, words[i]))
                        return true;
        return false;
}

/* Whether the root mount is an overlay (a container's image), from mountinfo. */
static bool root_is_overlay(void)
{
        _cleanup_fclose_ FILE *f = fopen("/proc/self/mountinfo", "re");
        char line[4096];

        while (f && fgets(line, sizeof(line), f)) {
                char mnt[PATH_MAX], *sep;
                if (sscanf(line, "%*s %*s %*s %*s %4095s", mnt) != 1 || strcmp(mnt, "/") != 0)
                        continue;
                sep = strstr(line, " - ");
                if (sep && strncmp(sep + 3, "overlay ", 8) == 0)
                        return true;
        }
        return false;
}

/* Why this looks like a container, or NULL. */
static const char *container_reason(void)
{
        static const char *const cgroup_words[] = { "docker", "kubepods", "containerd", "libpod",
                                                    "crio",   "lxc",      NULL };
        const char *v;

        if (access("/.dockerenv", F_OK) == 0)
                return "/.dockerenv exists";
        if (access("/run/.containerenv", F_OK) == 0)
                return "/run/.containerenv exists";
        v = getenv("container");
        if (v && *v)
                return "$container is set";
        v = getenv("KUBERNETES_SERVICE_HOST");
        if (v && *v)
                return "$KUBERNETES_SERVICE_HOST is set";
        if (file_has("/proc/1/cgroup", cgroup_words))
                return "/proc/1/cgroup names a container";
        if (root_is_overlay())
                return "the root filesystem is an overlay";
        return NULL;
}

const char *bld_none_container_reason(void)
{
        return container_reason();
}

/* ---- what is kept ---- */

static void add_exclude(struct bld_none *n, const char *abs)
{
        const char *rel = abs;
        size_t i, len;

        while (*rel == '/')
                rel++;
        len = strlen(rel);
        while (len && rel[len - 1] == '/')
                len--;
        if (!len)
                return;
        for (i = 0; i < n->n_exclude; i++)
                if (strlen(n->exclude[i]) == len && strncmp(n->exclude[i], rel, len) == 0)
                        return;
        n->exclude = xrealloc(n->exclude, (n->n_exclude + 2) * sizeof(char *));
        n->exclude[n->n_exclude++] = xstrndup(rel, len);
        n->exclude[n->n_exclude] = NULL;
}

/* Directories an image has of its own: keeping one would mix kiln's files with the image's. */
static bool system_dir(const char *rel)
{
        static const char *const dirs[] = {
                "",
                "bin",
                "sbin",
                "lib",
                "lib32",
                "lib64",
                "libx32",
                "usr",
                "usr/bin",
                "usr/sbin",
                "usr/lib",
                "usr/lib64",
                "usr/libexec",
                "usr/local",
                "usr/local/bin",
                "usr/local/sbin",
                "usr/local/lib",
                "usr/share",
                "etc",
                "var",
                "var/lib",
                "tmp",
                "root",
                "home",
                "opt",
                "run",
                "srv",
                "mnt",
                "media",
                NULL,
        };
        size_t i;

        for (i = 0; dirs[i]; i++)
                if (strcmp(rel, dirs[i]) == 0)
                        return true;
        return false;
}

static int add_keep(struct bld_none *n, const char *path, const char *what, struct kiln_error **err)
{
        char real[PATH_MAX];
        const char *rel;

        if (!realpath(path, real))
                return kiln_error_errno(err, KILN_ERR_IO, "--isolation none: %s '%s'", what, path);
        rel = real + strspn(real, "/");
        if (system_dir(rel))
                return kiln_error_new(err, KILN_ERR_UNSUPPORTED,
                                      "--isolation none: the %s '%s' is a directory images have: "
                                      "kiln must live in a directory of its own (as kaniko's "
                                      "/kaniko), set " KEEP_VAR " to it",
                                      what, real);
        n->keep = xrealloc(n->keep, (n->n_keep + 2) * sizeof(char *));
        n->keep[n->n_keep++] = xstrdup(real);
        n->keep[n->n_keep] = NULL;
        add_exclude(n, real);
        return 0;
}

/* mountinfo escapes space, tab, newline and backslash as \ooo. */
static void unescape(char *s)
{
        char *o = s;

        for (; *s; s++) {
                if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' &&
                    s[3] >= '0' && s[3] <= '7') {
                        *o++ = (char) ((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
                        s += 3;
                } else {
                        *o++ = *s;
                }
        }
        *o = '\0';
}

static int add_mount_points(struct bld_none *n, struct kiln_error **err)
{
        _cleanup_fclose_ FILE *f = fopen("/proc/self/mountinfo", "re");
        char *line = NULL;
        size_t cap = 0;

        if (!f)
                return kiln_error_errno(
                        err, KILN_ERR_IO,
                        "--isolation none: read /proc/self/mountinfo (its mount points are kept)");
        while (getline(&line, &cap, f) > 0) {
                char *fields[5], *p = line, *save = NULL;
                size_t i;

                for (i = 0; i < 5; i++, p = NULL) {
                        fields[i] = strtok_r(p, " ", &save);
                        if (!fields[i])
                                break;
                }
                if (i < 5)
                        continue;
                unescape(fields[4]);
                if (strcmp(fields[4], "/") != 0)
                        add_exclude(n, fields[4]);
        }
        free(line);
        return 0;
}

int bld_none_setup(struct bld_build *b, char **ret_why, struct kiln_error **err)
{
        _cleanup_(bld_none_freep) struct bld_none *n = xcalloc(1, sizeof(*n));
        const char *reason = container_reason(), *force = getenv(FORCE_VAR),
                   *keep = getenv(KEEP_VAR);
        char exe[PATH_MAX], ctx[64];
        struct kiln_buf why = KILN_BUF_INIT;
        size_t i;

        n->rootfd = -1;
        n->owner = SIZE_MAX;
        if (geteuid() != 0)
                return kiln_error_new(
                        err, KILN_ERR_UNSUPPORTED,
                        "--isolation none needs uid 0: it replaces the files of / and "
                        "sets their owners (use --isolation userns without root)");
        if (!reason && !(force && strcmp(force, "1") == 0))
                return kiln_error_new(
                        err, KILN_ERR_UNSUPPORTED,
                        "--isolation none rewrites / itself: each stage with RUN deletes "
                        "everything in / but the mount points and kiln's own directories, "
                        "and unpacks its image there; this does not look like a throwaway "
                        "container (no /.dockerenv, /run/.containerenv, $container, "
                        "$KUBERNETES_SERVICE_HOST, container cgroup or overlay root), so "
                        "kiln refuses; set " FORCE_VAR "=1 to run it here anyway");
        if (keep && *keep) {
                _cleanup_free_ char *copy = xstrdup(keep);
                char *save = NULL, *p;
                for (p = strtok_r(copy, ":", &save); p; p = strtok_r(NULL, ":", &save))
                        if (*p && add_keep(n, p, KEEP_VAR " directory", err) < 0)
                                return -1;
        } else {
                ssize_t len = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
                char *slash;
                if (len <= 0)
                        return kiln_error_errno(err, KILN_ERR_IO,
                                                "--isolation none: readlink /proc/self/exe");
                exe[len] = '\0';
                slash = strrchr(exe, '/');
                if (slash)
                        *(slash == exe ? slash + 1 : slash) = '\0';
                if (add_keep(n, exe, "kiln executable's directory", err) < 0)
                        return -1;
        }
        if (add_keep(n, layer_store_root(b->o->store), "store", err) < 0)
                return -1;
        snprintf(ctx, sizeof(ctx), "/proc/self/fd/%d", b->o->context_fd);
        if (add_keep(n, ctx, "build context", err) < 0)
                return -1;
        if (add_mount_points(n, err) < 0)
                return -1;
        /* the container's, in use while RUN runs, never the image's */
        add_exclude(n, "/etc/resolv.conf");
        add_exclude(n, "/etc/hosts");
        add_exclude(n, "/etc/hostname");
        kiln_buf_addf(&why, NULL, "none (asked for): %s; RUN runs in / itself, keeping",
                      reason ? reason : FORCE_VAR "=1");
        for (i = 0; i < n->n_keep; i++)
                kiln_buf_addf(&why, NULL, "%s %s", i ? "," : "", n->keep[i]);
        kiln_buf_adds(&why, " and the mount points", NULL);
        b->none = TAKE_PTR(n);
        b->isolation = SB_ISOLATION_ROOT;
        *ret_why = kiln_buf_detach(&why, NULL);
        return 0;
}

struct bld_none *bld_none_free(struct bld_none *n)
{
        size_t i;

        if (!n)
                return NULL;
        for (i = 0; i < n->n_keep; i++)
                free(n->keep[i]);
        free(n->keep);
        for (i = 0; i < n->n_exclude; i++)
                free(n->exclude[i]);
        free(n->exclude);
        if (n->rootfd >= 0)
                close(n->rootfd);
        layer_snapshot_free(n->snap);
        free(n);
        return NULL;
}

/* ---- a stage's root ---- */

static bool is_excluded(const struct bld_none *n, const char *rel)
{
        size_t i;

        for (i = 0; i < n->n_exclude; i++)
                if (strcmp(n->exclude[i], rel) == 0)
                        return true;
        return false;
}

/* Whether something kept lies below `rel`: the directory stays, and only its other entries go. */
static bool holds_excluded(const struct bld_none *n, const char *rel)
{
        size_t i, len = strlen(rel);

        for (i = 0; i < n->n_exclude; i++)
                if (strncmp(n->exclude[i], rel, len) == 0 && n->exclude[i][len] == '/')
                        return true;
        return false;
}

/* Removes `name` in `dirfd` and everything below it, never following a symlink and never
 * entering a directory on another device than `dev` (a mount point mountinfo did not show:
 * it stays). */
static int remove_tree(int dirfd, const char *name, dev_t dev, unsigned depth,
                       struct kiln_error **err)
{
        _cleanup_close_ int fd = -1;
        struct stat st;
        DIR *d;
        struct dirent *de;
        int r = 0;

        if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                return errno == ENOENT ? 0 : kiln_error_errno(err, KILN_ERR_IO, "stat '%s'", name);
        if (!S_ISDIR(st.st_mode)) {
                if (unlinkat(dirfd, name, 0) < 0 && errno != ENOENT)
                        return kiln_error_errno(err, KILN_ERR_IO, "remove '%s'", name);
                return 0;
        }
        if (st.st_dev != dev)
                return 0;
        if (depth > MAX_DEPTH)
                return kiln_error_new(err, KILN_ERR_LIMIT, "remove '%s': nested too deep", name);
        fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "open '%s'", name);
        d = fdopendir(fcntl(fd, F_DUPFD_CLOEXEC, 3));
        if (!d)
                return kiln_error_errno(err, KILN_ERR_IO, "list '%s'", name);
        while (r == 0 && (de = readdir(d))) {
                if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                        continue;
                r = remove_tree(fd, de->d_name, dev, depth + 1, err);
        }
        closedir(d);
        if (r < 0)
                return kiln_error_wrap(err, "%s", name);
        if (unlinkat(dirfd, name, AT_REMOVEDIR) < 0 && errno != ENOENT && errno != EBUSY &&
            errno != ENOTEMPTY)
                return kiln_error_errno(err, KILN_ERR_IO, "remove '%s'", name);
        return 0;
}

/* Empties `dirfd` (the directory `rel` of "/") but what is kept and the ways to it. */
static int wipe(struct bld_none *n, int dirfd, const char *rel, unsigned depth,
                struct kiln_error **err)
{
        DIR *d = fdopendir(fcntl(dirfd, F_DUPFD_CLOEXEC, 3));
        struct dirent *de;
        int r = 0;

        if (!d)
                return kiln_error_errno(err, KILN_ERR_IO, "list '/%s'", rel);
        rewinddir(d);
        while (r == 0 && (de = readdir(d))) {
                _cleanup_free_ char *path = NULL;
                struct stat st;

                if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                        continue;
                path = *rel ? xasprintf("%s/%s", rel, de->d_name) : xstrdup(de->d_name);
                if (is_excluded(n, path))
                        continue;
                if (fstatat(dirfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
                        if (errno != ENOENT)
                                r = kiln_error_errno(err, KILN_ERR_IO, "stat '/%s'", path);
                        continue;
                }
                if (S_ISDIR(st.st_mode) && holds_excluded(n, path)) {
                        _cleanup_close_ int sub = -1;
                        if (st.st_dev != n->root_dev || depth > MAX_DEPTH)
                                continue;
                        sub = openat(dirfd, de->d_name,
                                     O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                        if (sub < 0) {
                                r = kiln_error_errno(err, KILN_ERR_IO, "open '/%s'", path);
                                continue;
                        }
                        r = wipe(n, sub, path, depth + 1, err);
                        continue;
                }
                r = remove_tree(dirfd, de->d_name, n->root_dev, 0, err);
                if (r < 0)
                        kiln_error_wrap(err, "clear /%s", rel);
        }
        closedir(d);
        return r;
}

static bool stage_has_run(const struct bld_stage *st)
{
        const struct df_stage *ds = st->b->o->graph->stages[st->index].stage;
        size_t i;

        for (i = 0; i < ds->n_instrs; i++)
                if (ds->instrs[i].kind == DF_INSTR_RUN)
                        return true;
        for (i = 0; i < json_array_size(st->triggers); i++) {
                const char *t = json_string_value(json_array_get(st->triggers, i));
                if (!t)
                        continue;
                t += strspn(t, " \t");
                if (strncasecmp(t, "RUN", 3) == 0 && (t[3] == ' ' || t[3] == '\t'))
                        return true;
        }
        return false;
}

/* Makes the stage's root: `/` emptied (a stage with RUN) or a fresh scratch directory, with
 * its layers applied. */
static int take_root(struct bld_stage *st, struct kiln_error **err)
{
        struct bld_build *b = st->b;
        struct bld_none *n = b->none;
        struct layer_extract_opts xo = { 0 };
        struct stat rst;
        size_t i;

        /* layers a --cache-from named: fetched while the registry client is still whole
         * (its endpoints hold their CA certificates; / is about to be emptied) */
        if (bld_cache_fetch_layers(b, st->layers, st->n_layers, err) < 0)
                return -1;
        if (n->rootfd >= 0)
                close(n->rootfd);
        n->rootfd = -1;
        n->owner = SIZE_MAX;
        n->snap = layer_snapshot_free(n->snap);
        n->slash = stage_has_run(st);
        if (n->slash) {
                n->rootfd = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (n->rootfd < 0 || fstat(n->rootfd, &rst) < 0)
                        return kiln_error_errno(err, KILN_ERR_IO, "open '/'");
                n->root_dev = rst.st_dev;
                if (wipe(n, n->rootfd, "", 0, err) < 0)
                        return kiln_error_wrap(err, "--isolation none: empty / for stage '%s'",
                                               st->name);
                xo.skip = (const char *const *) n->exclude;
                xo.n_skip = n->n_exclude;
        } else {
                _cleanup_free_ char *name = xasprintf("none-%zu", st->index);
                if (mkdirat(b->scratchfd, name, 0755) < 0 && errno != EEXIST)
                        return kiln_error_errno(err, KILN_ERR_IO, "make '%s/%s'", b->scratch_path,
                                                name);
                n->rootfd =
                        openat(b->scratchfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (n->rootfd < 0)
                        return kiln_error_errno(err, KILN_ERR_IO, "open '%s/%s'", b->scratch_path,
                                                name);
        }
        for (i = 0; i < st->n_layers; i++) {
                _cleanup_close_ int blob =
                        layer_store_open_blob(b->o->store, st->layers[i].digest, NULL, err);
                if (blob < 0 ||
                    layer_extract(n->rootfd, blob, st->layers[i].digest, &xo, NULL, err) < 0)
                        return kiln_error_wrap(err, "--isolation none: unpack stage '%s'",
                                               st->name);
        }
        n->owner = st->index;
        return 0;
}

int bld_none_apply(struct bld_stage *st, const struct bld_layer *layer, struct kiln_error **err)
{
        struct bld_none *n = st->b->none;
        struct layer_extract_opts xo = { 0 };
        _cleanup_close_ int blob = -1;

        /* no root yet: take_root() extracts every layer of the stage, this one included */
        if (n->owner != st->index)
                return 0;
        if (bld_cache_fetch_layers(st->b, layer, 1, err) < 0)
                return -1;
        if (n->slash) {
                xo.skip = (const char *const *) n->exclude;
                xo.n_skip = n->n_exclude;
        }
        blob = layer_store_open_blob(st->b->o->store, layer->digest, NULL, err);
        if (blob < 0 || layer_extract(n->rootfd, blob, layer->digest, &xo, NULL, err) < 0)
                return kiln_error_wrap(err, "--isolation none: apply cached layer %.19s", layer->digest);
        return 0;
}

/* The stage's root, made on its first step, and a snapshot of it before the step. */
static int begin(struct bld_stage *st, struct kiln_error **err)
{
        struct bld_none *n = st->b->none;

        if (n->owner != st->index && take_root(st, err) < 0)
                return -1;
        n->snap = layer_snapshot_free(n->snap);
        if (n->slash)
                return layer_snapshot_take_excluding(n->rootfd, (const char *const *) n->exclude,
                                                     n->n_exclude, &n->snap, err);
        return layer_snapshot_take(n->rootfd, &n->snap, err);
}

int bld_none_call(struct bld_stage *st, int (*fn)(void *ctx, int rootfd, struct kiln_error **err),
                  void *ctx, struct kiln_error **err)
{
        _cleanup_close_ int root = -1;

        if (begin(st, err) < 0)
                return -1;
        root = fcntl(st->b->none->rootfd, F_DUPFD_CLOEXEC, 3);
        if (root < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "dup the root");
        return fn(ctx, root, err);
}

/* ---- RUN ---- */

/* The working directory, made (0755, 0:0) when missing, as Docker does. */
static int make_cwd(int rootfd, const char *cwd, struct kiln_error **err)
{
        _cleanup_free_ char *copy = xstrdup(cwd);
        char *p = copy, *slash;

        for (;;) {
                p += strspn(p, "/");
                if (!*p)
                        return 0;
                slash = strchr(p, '/');
                if (slash)
                        *slash = '\0';
                {
                        _cleanup_close_ int fd =
                                kiln_openat2_in_root(rootfd, copy, O_PATH | O_DIRECTORY, 0, 0);
                        if (fd < 0) {
                                _cleanup_close_ int parent = -1;
                                char *base = strrchr(copy, '/');
                                if (errno != ENOENT)
                                        return kiln_error_errno(err, KILN_ERR_IO,
                                                                "working directory '%s'", copy);
                                if (base)
                                        *base = '\0';
                                parent = kiln_openat2_in_root(rootfd, base ? copy : "",
                                                              O_PATH | O_DIRECTORY, 0, 0);
                                if (base)
                                        *base = '/';
                                if (parent < 0 ||
                                    (mkdirat(parent, base ? base + 1 : copy, 0755) < 0 &&
                                     errno != EEXIST))
                                        return kiln_error_errno(err, KILN_ERR_IO,
                                                                "make the working directory '%s'",
                                                                copy);
                        }
                }
                if (!slash)
                        return 0;
                *slash = '/';
                p = slash + 1;
        }
}

static void close_from(int first)
{
        int fd;

        if (syscall(SYS_close_range, first, ~0U, 0) == 0)
                return;
        for (fd = first; fd < 65536; fd++)
                close(fd);
}

/* The child: only async-signal-safe calls until exec (this process may have threads). */
_noreturn_ static void child(const struct sb_run *run, char **envp, int out, int null, uid_t uid, gid_t gid,
                             const gid_t *groups, size_t n_groups)
{
        static const char msg[] = "kiln: cannot start the command: ";
        const char *what = "";
        sigset_t none;

        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        setpgid(0, 0);
        if (dup2(null, 0) < 0 || dup2(out, 1) < 0 || dup2(out, 2) < 0)
                _exit(127);
        close_from(3);
        umask(022);
        if (chdir(run->cwd) < 0) {
                what = "chdir";
                goto fail;
        }
        if (setgroups(n_groups, groups) < 0 || setgid(gid) < 0 || setuid(uid) < 0) {
                what = "set the user";
                goto fail;
        }
        environ = envp ? envp : (char **) run->envp;
        execvp(run->argv[0], (char *const *) run->argv);
        what = run->argv[0];
fail : {
        int e = errno;
        const char *s = strerror(e);
        (void) !write(2, msg, sizeof(msg) - 1);
        (void) !write(2, what, strlen(what));
        (void) !write(2, ": ", 2);
        (void) !write(2, s, strlen(s));
        (void) !write(2, "\n", 1);
}
        _exit(127);
}

int bld_none_run(struct bld_stage *st, const struct sb_run *run, int *ret_status,
                 struct kiln_error **err)
{
        struct bld_none *n = st->b->none;
        _cleanup_free_ uint32_t *groups32 = NULL;
        _cleanup_free_ gid_t *groups = NULL;
        _cleanup_free_ char *home = NULL;
        _cleanup_(strv_freep) char **envp = NULL;
        _cleanup_close_ int null = -1, rd = -1, wr = -1;
        size_t n_groups = 0, i;
        uint32_t uid = 0, gid = 0;
        int fds[2], status;
        char buf[8192];
        pid_t pid;

        if (run->env.network == SB_NETWORK_NONE)
                return kiln_error_new(
                        err, KILN_ERR_UNSUPPORTED,
                        "--network=none needs a network namespace, which --isolation none does "
                        "not make");
        if (begin(st, err) < 0)
                return -1;
        if (!n->slash)
                return kiln_error_new(err, KILN_ERR_INVALID,
                                      "--isolation none: RUN in a stage that does not own /");
        if (run->user && *run->user &&
            bld_user_resolve(n->rootfd, run->user, &uid, &gid, &groups32, &n_groups, err) < 0)
                return -1;
        home = bld_user_home(n->rootfd, run->user);
        envp = bld_env_with_home(run->envp, home);
        groups = xcalloc(n_groups + 1, sizeof(gid_t));
        for (i = 0; i < n_groups; i++)
                groups[i] = (gid_t) groups32[i];
        if (make_cwd(n->rootfd, run->cwd, err) < 0)
                return -1;
        null = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (null < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "open /dev/null");
        if (pipe2(fds, O_CLOEXEC) < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "pipe");
        rd = fds[0];
        wr = fds[1];
        pid = fork();
        if (pid < 0)
                return kiln_error_errno(err, KILN_ERR_CHILD, "fork");
        if (pid == 0)
                child(run, envp, wr, null, (uid_t) uid, (gid_t) gid, groups, n_groups);
        close(wr);
        wr = -1;
        for (;;) {
                ssize_t k = read(rd, buf, sizeof(buf));
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0)
                        break;
                if (run->output)
                        run->output(run->output_ctx, buf, (size_t) k);
        }
        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR)
                        return kiln_error_errno(err, KILN_ERR_CHILD, "wait for the command");
        /* what it left running in its group would change / under the diff */
        kill(-pid, SIGKILL);
        *ret_status = status;
        return 0;
}

/* ---- the step's layer ---- */

static void add_layer(struct bld_stage *st, const struct layer_desc *desc, const char *media_type)
{
        struct bld_layer *l;

        XGROW(st->layers, st->n_layers + 1, st->alloc_layers);
        l = &st->layers[st->n_layers++];
        memcpy(l->digest, desc->digest, LAYER_DIGEST_SIZE);
        memcpy(l->diff_id, desc->diff_id, LAYER_DIGEST_SIZE);
        l->size = desc->size;
        l->media_type = xstrdup(media_type);
}

int bld_none_commit(struct bld_stage *st, const char *created_by, struct bld_cache_entry *made,
                    struct kiln_error **err)
{
        struct bld_build *b = st->b;
        struct bld_none *n = b->none;
        struct layer_changes changes = LAYER_CHANGES_INIT;
        struct layer_write_opts wo = LAYER_WRITE_OPTS_DEFAULT;
        struct layer_blob_writer *w = NULL;
        struct layer_sink sink;
        struct layer_desc desc;
        int r = -1;

        if (!n->snap)
                return kiln_error_new(err, KILN_ERR_INVALID,
                                      "--isolation none: no snapshot before the step");
        if (layer_changes_from_snapshot_excluding(
                    n->rootfd, n->snap, n->slash ? (const char *const *) n->exclude : NULL,
                    n->slash ? n->n_exclude : 0, &changes, err) < 0)
                return -1;
        n->snap = layer_snapshot_free(n->snap);
        if (made)
                *made = (struct bld_cache_entry){ .empty = true, .created = b->created };
        if (changes.n == 0) {
                layer_changes_release(&changes);
                bld_config_add_history(st->config, b->created, created_by, true);
                return 0;
        }
        wo.compression = b->o->compression;
        wo.source_date_epoch = b->o->source_date_epoch;
        if (layer_store_blob_begin(b->o->store, &w, err) < 0)
                goto out;
        sink = layer_blob_sink(w);
        if (layer_write(&changes, &wo, &sink, &desc, err) < 0) {
                layer_blob_abort(w);
                goto out;
        }
        if (layer_blob_commit(w, NULL, desc.digest, &desc.size, err) < 0)
                goto out;
        add_layer(st, &desc, layer_media_type(b->o->compression, b->o->docker));
        if (made) {
                made->empty = false;
                made->size = desc.size;
                memcpy(made->digest, desc.digest, LAYER_DIGEST_SIZE);
                memcpy(made->diff_id, desc.diff_id, LAYER_DIGEST_SIZE);
                snprintf(made->media_type, sizeof(made->media_type), "%s",
                         layer_media_type(b->o->compression, b->o->docker));
        }
        bld_config_add_diff_id(st->config, desc.diff_id);
        bld_config_add_history(st->config, b->created, created_by, false);
        r = 0;
out:
        layer_changes_release(&changes);
        return r;
}

/* ---- after a stage ---- */

static bool stage_used_later(const struct bld_stage *st)
{
        const struct df_graph *g = st->b->o->graph;
        size_t i, k;

        for (i = 0; i < g->n_stages; i++)
                for (k = 0; k < g->stages[i].n_edges; k++)
                        if (g->stages[i].edges[k].stage == st->index)
                                return true;
        return false;
}

int bld_none_stage_done(struct bld_stage *st, struct kiln_error **err)
{
        struct bld_build *b = st->b;
        struct bld_none *n = b->none;
        _cleanup_free_ char(*digests)[LAYER_DIGEST_SIZE] = NULL;
        _cleanup_free_ char(*diff_ids)[LAYER_DIGEST_SIZE] = NULL;
        struct layer_extract_opts xo = { 0 };
        char *path = NULL;
        size_t i;
        int fd;

        n->snap = layer_snapshot_free(n->snap);
        if (!stage_used_later(st))
                return 0;
        /* Its files, for COPY --from in later stages, as one directory: `/` will be another
         * stage's, and an overlay of its steps cannot be mounted here. */
        if (st->n_layers == 0) {
                path = xstrdup(b->empty_dir);
        } else {
                if (bld_cache_fetch_layers(b, st->layers, st->n_layers, err) < 0)
                        return -1;
                digests = xcalloc(st->n_layers, sizeof(*digests));
                diff_ids = xcalloc(st->n_layers, sizeof(*diff_ids));
                for (i = 0; i < st->n_layers; i++) {
                        memcpy(digests[i], st->layers[i].digest, LAYER_DIGEST_SIZE);
                        memcpy(diff_ids[i], st->layers[i].diff_id, LAYER_DIGEST_SIZE);
                }
                fd = layer_store_rootfs(b->o->store, (const char(*)[LAYER_DIGEST_SIZE]) digests,
                                        (const char(*)[LAYER_DIGEST_SIZE]) diff_ids, st->n_layers,
                                        &xo, &path, err);
                if (fd < 0)
                        return kiln_error_wrap(err, "stage '%s'", st->name);
                close(fd);
        }
        for (i = 0; i < st->n_lowers; i++)
                free(st->lowers[i]);
        st->n_lowers = 0;
        XGROW(st->lowers, 1, st->alloc_lowers);
        st->lowers[st->n_lowers++] = path;
        return 0;
}
