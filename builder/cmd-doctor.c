/*
 * kiln doctor: what this machine allows a build (user namespaces and the sysctls that govern
 * them, /etc/subuid ranges and the id map helpers, overlay and a fresh /proc where the store
 * is, openat2, cgroups, seccomp, a container's signs), which isolation modes work, what to
 * change for the ones that do not, and what `kiln build --isolation auto` picks. The probes
 * are the sandbox's own (builder/run-sandbox.c), run in the store's scratch directory as a
 * build runs them.
 */
#include <errno.h>
#include <jansson.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/utsname.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "builder/builder-internal.h"
#include "builder/cli.h"
#include "builder/common/fd-util.h"
#include "builder/common/xalloc.h"

#define FORCE_VAR "KILN_ISOLATION_NONE_FORCE"

struct doctor_opts {
        const char *root;
        bool json;
};

static const struct option doctor_options[] = {
        CLI_ROOT_OPTION,
        { .name = "format", .has_arg = required_argument, .val = 'F' },
        {},
};

static int doctor_option(void *state, int opt, const char *arg, struct kiln_error **err)
{
        struct doctor_opts *o = state;

        switch (opt) {
        case 'R':
                o->root = arg;
                return 0;
        case 'F':
                if (strcmp(arg, "text") == 0 || strcmp(arg, "json") == 0) {
                        o->json = strcmp(arg, "json") == 0;
                        return 0;
                }
                kiln_error_new(err, KILN_ERR_INVALID, "unknown --format '%s' (use text or json)",
                               arg);
                return CLI_USAGE;
        default:
                break;
        }
        kiln_error_new(err, KILN_ERR_INVALID, "unknown option");
        return CLI_USAGE;
}

/* ---- what was found ---- */

enum verdict { WORKS, LIMITED, FAILS };

enum mode_id { MODE_ROOT, MODE_USERNS, MODE_NONE, _MODE_MAX };

static const char *const mode_names[_MODE_MAX] = { "root", "userns", "none" };

struct mode {
        enum verdict verdict;
        const char *detail;  /* userns: "ranges" or "single id" */
        struct kiln_buf why; /* the limits, or why it does not work; "; " between */
        struct kiln_buf fix; /* what to change; "; " between */
};

struct helper {
        const char *path;
        bool present;
        const char *privilege; /* "setuid root", "file capabilities" or NULL */
};

struct probe_pair {
        bool tried;
        struct sb_probe_report r;
        bool proc_unshared;
        char *proc_fail; /* why a fresh procfs cannot be mounted, or NULL */
};

struct doctor {
        uid_t uid, euid;
        gid_t gid;
        char *user; /* the caller's name, or its uid */
        struct utsname uts;
        unsigned kmajor, kminor;
        const char *container;                      /* why this looks like one, or NULL */
        bool force_none;                            /* KILN_ISOLATION_NONE_FORCE=1 */
        long seccomp, nnp;                          /* from /proc/self/status; -1 unknown */
        long max_userns, userns_clone, aa_restrict; /* sysctls; -1 absent */
        char *userns_sysctl;                        /* a sysctl that disables them, or NULL */
        struct sb_idmap *uid_map, *gid_map;
        size_t n_uid_map, n_gid_map;
        struct helper newuidmap, newgidmap;
        char *ranges_fail; /* why a user namespace with the ranges could not be made */
        char *store_root, *store_error;
        char *dir; /* where the probes ran */
        const char *dir_fs;
        struct probe_pair probes[2]; /* SB_ISOLATION_ROOT, SB_ISOLATION_USERNS */
        int openat2_errno;           /* 0: works */
        int cgroup_version;          /* 2, 1 (v1 or hybrid), 0 (none) */
        const char *cgroup_fs;
        bool cgroup_hybrid;
        struct mode modes[_MODE_MAX];
        bool auto_ok;
        enum sb_isolation auto_isolation;
        char *auto_why, *auto_overlay_fail, *auto_error;
};

static void doctor_release(struct doctor *d)
{
        size_t i;

        free(d->user);
        free(d->userns_sysctl);
        free(d->uid_map);
        free(d->gid_map);
        free(d->ranges_fail);
        free(d->store_root);
        free(d->store_error);
        free(d->dir);
        for (i = 0; i < ELEMENTSOF(d->probes); i++) {
                sb_probe_report_release(&d->probes[i].r);
                free(d->probes[i].proc_fail);
        }
        for (i = 0; i < _MODE_MAX; i++) {
                kiln_buf_release(&d->modes[i].why);
                kiln_buf_release(&d->modes[i].fix);
        }
        free(d->auto_why);
        free(d->auto_overlay_fail);
        free(d->auto_error);
}

static const char *fs_name(unsigned long type)
{
        static const struct {
                unsigned long magic;
                const char *name;
        } names[] = {
                { 0x794c7630, "overlayfs" }, { 0xef53, "ext4" },         { 0x58465342, "xfs" },
                { 0x9123683e, "btrfs" },     { 0x01021994, "tmpfs" },    { 0x2fc12fc1, "zfs" },
                { 0xf2f52010, "f2fs" },      { 0x6969, "nfs" },          { 0x65735546, "fuse" },
                { 0x01021997, "9p" },        { 0xff534d42, "cifs" },     { 0xfe534d42, "smb2" },
                { 0x73717368, "squashfs" },  { 0x858458f6, "ramfs" },    { 0x63677270, "cgroup2" },
                { 0x27e0eb, "cgroup" },      { 0x9fa0, "proc" },         { 0x62656572, "sysfs" },
                { 0xf15f, "ecryptfs" },      { 0x6a656a63, "virtiofs" }, { 0x4d44, "vfat" },
        };
        size_t i;

        for (i = 0; i < ELEMENTSOF(names); i++)
                if (names[i].magic == (type & 0xffffffffUL))
                        return names[i].name;
        return "unknown";
}

static const char *path_fs(const char *path)
{
        struct statfs sf;

        if (statfs(path, &sf) < 0)
                return NULL;
        return fs_name((unsigned long) sf.f_type);
}

/* A number from a /proc file, -1 when it is absent or not a number. */
static long read_number(const char *path)
{
        _cleanup_free_ char *v = NULL;
        char *end;
        long n;

        if (kiln_read_file_at(AT_FDCWD, path, 64, &v, NULL, NULL) < 0)
                return -1;
        errno = 0;
        n = strtol(v, &end, 10);
        if (errno || end == v)
                return -1;
        return n;
}

/* "Key:\tvalue" of /proc/self/status as a number; -1 when missing. */
static long status_field(const char *status, const char *key)
{
        size_t len = strlen(key);
        const char *p;

        for (p = status; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
                if (strncmp(p, key, len) == 0 && p[len] == ':')
                        return strtol(p + len + 1, NULL, 10);
        return -1;
}

static void find_helper(struct helper *h, const char *path)
{
        struct stat st;

        h->path = path;
        h->present = stat(path, &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 0111);
        h->privilege = NULL;
        if (!h->present)
                return;
        if ((st.st_mode & S_ISUID) && st.st_uid == 0)
                h->privilege = "setuid root";
        else if (getxattr(path, "security.capability", NULL, 0) > 0)
                h->privilege = "file capabilities";
}

static int noop(void *ctx, int rootfd, struct kiln_error **err)
{
        return 0;
}

/* Whether a user namespace with the /etc/subuid ranges can be made, as a build makes it. */
static void try_ranges(struct doctor *d)
{
        struct kiln_error *e = NULL;
        struct sb_env env = {
                .isolation = SB_ISOLATION_USERNS,
                .uid_map = d->uid_map,
                .n_uid_map = d->n_uid_map,
                .gid_map = d->gid_map,
                .n_gid_map = d->n_gid_map,
        };

        if (sb_unshare(&env, noop, NULL, &e) < 0) {
                d->ranges_fail = kiln_error_format(e);
                kiln_error_free(e);
        }
}

/* The store's scratch directory, as a build makes it; $TMPDIR when the store cannot be used. */
static void probe_store(struct doctor *d, const char *root, struct layer_store **ret_store,
                        char **ret_scratch)
{
        struct kiln_error *e = NULL;
        struct layer_store *store = NULL;
        const char *tmp = getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
        char *name = NULL;
        int fd;

        *ret_store = NULL;
        *ret_scratch = NULL;
        if (cli_open_store(root, &store, &e) == 0) {
                d->store_root = xstrdup(layer_store_root(store));
                fd = layer_store_scratch(store, &name, &e);
                if (fd >= 0) {
                        close(fd);
                        d->dir = xasprintf("%s/.kiln/tmp/%s", d->store_root, name);
                        *ret_store = store;
                        *ret_scratch = name;
                        d->dir_fs = path_fs(d->dir);
                        return;
                }
                layer_store_free(store);
        }
        d->store_error = kiln_error_format(e);
        kiln_error_free(e);
        d->dir = xstrdup(tmp);
        d->dir_fs = path_fs(d->dir);
}

static void gather(struct doctor *d, struct layer_store *store)
{
        struct passwd pw, *found = NULL;
        char buf[4096];
        _cleanup_free_ char *status = NULL;
        struct statfs sf;
        int fd;
        size_t i;

        d->uid = getuid();
        d->euid = geteuid();
        d->gid = getgid();
        if (getpwuid_r(d->uid, &pw, buf, sizeof(buf), &found) == 0 && found)
                d->user = xstrdup(found->pw_name);
        else
                d->user = xasprintf("%u", (unsigned) d->uid);
        if (uname(&d->uts) < 0)
                memset(&d->uts, 0, sizeof(d->uts));
        if (sscanf(d->uts.release, "%u.%u", &d->kmajor, &d->kminor) != 2)
                d->kmajor = d->kminor = 0;
        d->container = bld_none_container_reason();
        d->force_none = getenv(FORCE_VAR) && strcmp(getenv(FORCE_VAR), "1") == 0;
        d->seccomp = d->nnp = -1;
        if (kiln_read_file_at(AT_FDCWD, "/proc/self/status", 1 << 16, &status, NULL, NULL) == 0) {
                d->seccomp = status_field(status, "Seccomp");
                d->nnp = status_field(status, "NoNewPrivs");
        }
        d->max_userns = read_number("/proc/sys/user/max_user_namespaces");
        d->userns_clone = read_number("/proc/sys/kernel/unprivileged_userns_clone");
        d->aa_restrict = read_number("/proc/sys/kernel/apparmor_restrict_unprivileged_userns");
        d->userns_sysctl = sb_userns_disabled();
        sb_subid_maps(&d->uid_map, &d->n_uid_map, &d->gid_map, &d->n_gid_map);
        find_helper(&d->newuidmap, SB_NEWUIDMAP);
        find_helper(&d->newgidmap, SB_NEWGIDMAP);

        for (i = 0; i < ELEMENTSOF(d->probes); i++) {
                enum sb_isolation iso = i == 0 ? SB_ISOLATION_ROOT : SB_ISOLATION_USERNS;
                struct probe_pair *p = &d->probes[i];
                struct kiln_error *e = NULL;

                if (iso == SB_ISOLATION_ROOT && d->euid != 0)
                        continue;
                if (sb_probe_report(iso, d->dir, &p->r, &e) < 0 ||
                    sb_probe_proc(iso, &p->proc_unshared, &p->proc_fail, &e) < 0) {
                        sb_probe_report_release(&p->r);
                        p->r = (struct sb_probe_report){ .failed = SB_PROBE_UNSHARE,
                                                         .errnum = e ? e->errnum : 0,
                                                         .why = kiln_error_format(e) };
                        kiln_error_free(e);
                }
                p->tried = true;
        }
        if (d->n_uid_map && d->n_gid_map && d->probes[1].r.failed != SB_PROBE_UNSHARE &&
            d->probes[1].r.failed != SB_PROBE_MAP)
                try_ranges(d);

        fd = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (fd >= 0) {
                int t = kiln_openat2_in_root(fd, "etc", O_PATH, 0, 0);

                d->openat2_errno = t >= 0 || errno == ENOENT ? 0 : errno;
                if (t >= 0)
                        close(t);
                close(fd);
        } else {
                d->openat2_errno = errno;
        }

        if (statfs("/sys/fs/cgroup", &sf) == 0) {
                d->cgroup_fs = fs_name((unsigned long) sf.f_type);
                if (strcmp(d->cgroup_fs, "cgroup2") == 0) {
                        d->cgroup_version = 2;
                } else if (strcmp(d->cgroup_fs, "tmpfs") == 0 ||
                           strcmp(d->cgroup_fs, "cgroup") == 0) {
                        d->cgroup_version = 1;
                        d->cgroup_hybrid =
                                statfs("/sys/fs/cgroup/unified", &sf) == 0 &&
                                strcmp(fs_name((unsigned long) sf.f_type), "cgroup2") == 0;
                }
        }

        if (store) {
                struct kiln_error *e = NULL;

                if (bld_isolation_auto(d->dir, &d->auto_isolation, &d->auto_why,
                                       &d->auto_overlay_fail, &e) == 0) {
                        d->auto_ok = true;
                } else {
                        d->auto_error = kiln_error_format(e);
                        kiln_error_free(e);
                }
        }
}

/* ---- the verdicts ---- */

static void addv(struct kiln_buf *b, const char *fmt, va_list ap)
{
        if (b->len)
                kiln_buf_adds(b, "; ", NULL);
        kiln_buf_vaddf(b, NULL, fmt, ap);
}

static void why(struct mode *m, enum verdict v, const char *fmt, ...) _printf_(3, 4);
static void why(struct mode *m, enum verdict v, const char *fmt, ...)
{
        va_list ap;

        if (v > m->verdict)
                m->verdict = v;
        va_start(ap, fmt);
        addv(&m->why, fmt, ap);
        va_end(ap);
}

static void fix(struct mode *m, const char *fmt, ...) _printf_(2, 3);
static void fix(struct mode *m, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        addv(&m->fix, fmt, ap);
        va_end(ap);
}

static bool kernel_at_least(const struct doctor *d, unsigned major, unsigned minor)
{
        return d->kmajor > major || (d->kmajor == major && d->kminor >= minor);
}

/* What to change when namespaces (or mounts in them) are refused. */
static void namespace_fix(const struct doctor *d, struct mode *m, bool userns)
{
        if (userns && d->euid != 0 && d->userns_clone == 0)
                fix(m, "sysctl kernel.unprivileged_userns_clone=1");
        if (userns && d->max_userns == 0)
                fix(m, "sysctl user.max_user_namespaces=15000");
        if (userns && d->euid != 0 && d->aa_restrict == 1)
                fix(m, "sysctl kernel.apparmor_restrict_unprivileged_userns=0, or an AppArmor "
                       "profile for "
                       "kiln that allows user namespaces");
        if (m->fix.len)
                return;
        if (d->seccomp == 2)
                fix(m, "run the pod (or container) with a seccomp profile that allows unshare and "
                       "mount "
                       "(Unconfined), or use --isolation none");
        else if (d->container)
                fix(m, "run the container with unshare and mount allowed (podman --security-opt "
                       "seccomp=unconfined,apparmor=unconfined, or privileged), or use --isolation "
                       "none");
        else if (!userns)
                fix(m, "root isolation needs CAP_SYS_ADMIN in the initial namespaces; use userns");
        else
                fix(m,
                    "allow unprivileged user namespaces here (a sysctl, AppArmor or SELinux policy "
                    "refuses them)");
}

/* A mode whose namespaces work: what overlay and /proc leave out. */
static void mount_limits(const struct doctor *d, struct mode *m, const struct probe_pair *p,
                         bool userns)
{
        if (p->r.failed == SB_PROBE_OVERLAY) {
                why(m, LIMITED,
                    "overlay cannot be mounted on the store's %s (%s): kiln copies each stage's "
                    "root "
                    "filesystem instead, diffed after each step (slower)",
                    d->dir_fs ? d->dir_fs : "filesystem", p->r.overlay_fail);
                if (userns && !kernel_at_least(d, 5, 11))
                        fix(m, "Linux 5.11 or newer mounts overlay in a user namespace");
                else
                        fix(m, "put the store on a volume (ext4/xfs) with --root or KILN_ROOT, for "
                               "speed");
        }
        if (p->proc_fail && p->proc_unshared) {
                why(m, LIMITED,
                    "a fresh /proc cannot be mounted (%s): RUN sees the outer /proc, read-only",
                    p->proc_fail);
                fix(m,
                    "unmask /proc in the container (docker --security-opt systempaths=unconfined, "
                    "Kubernetes procMount: Unmasked)");
        } else if (p->proc_fail) {
                why(m, FAILS, "pid namespaces are refused (%s)", p->proc_fail);
                namespace_fix(d, m, userns);
        }
}

static void judge_root(struct doctor *d)
{
        struct mode *m = &d->modes[MODE_ROOT];
        const struct probe_pair *p = &d->probes[0];

        if (d->euid != 0) {
                why(m, FAILS, "it needs root (uid 0)");
                fix(m, "run kiln as root, or use userns");
                return;
        }
        if (p->r.failed != SB_PROBE_OK && p->r.failed != SB_PROBE_OVERLAY) {
                why(m, FAILS, "%s", p->r.why);
                namespace_fix(d, m, false);
                return;
        }
        mount_limits(d, m, p, false);
}

static void judge_userns(struct doctor *d)
{
        struct mode *m = &d->modes[MODE_USERNS];
        const struct probe_pair *p = &d->probes[1];
        const char *user = d->user;

        if (p->r.failed != SB_PROBE_OK && p->r.failed != SB_PROBE_OVERLAY) {
                why(m, FAILS, "%s", d->euid != 0 && d->userns_sysctl ? d->userns_sysctl : p->r.why);
                namespace_fix(d, m, true);
                return;
        }
        if (d->n_uid_map && d->n_gid_map && !d->ranges_fail) {
                m->detail = "ranges";
        } else if (d->n_uid_map && d->n_gid_map) {
                m->detail = "ranges";
                why(m, FAILS,
                    "%s has /etc/subuid and /etc/subgid ranges, but a user namespace with them "
                    "cannot be made (%s)",
                    user, d->ranges_fail);
                if (d->euid != 0 && !d->newuidmap.present)
                        fix(m, "install uidmap (apt-get install uidmap; newuidmap and newgidmap "
                               "map the "
                               "ranges)");
                else if (d->euid != 0 && (!d->newuidmap.privilege || !d->newgidmap.privilege))
                        fix(m,
                            "give newuidmap and newgidmap their privilege back (chmod u+s %s %s, "
                            "or "
                            "reinstall uidmap)",
                            SB_NEWUIDMAP, SB_NEWGIDMAP);
                else if (d->euid != 0 && d->nnp == 1)
                        fix(m,
                            "no_new_privs is set, so setuid newuidmap cannot help: allow privilege "
                            "escalation (Kubernetes allowPrivilegeEscalation: true)");
                fix(m,
                    "or remove %s's ranges from /etc/subuid and /etc/subgid to work with a single "
                    "id",
                    user);
                return;
        } else {
                m->detail = "single id";
                why(m, LIMITED,
                    "a single id (no /etc/subuid and /etc/subgid range for %s): only uid and gid 0 "
                    "exist "
                    "in RUN, so USER and chown to other ids fail",
                    user);
                fix(m,
                    "add a range for %s to /etc/subuid and /etc/subgid: usermod --add-subuids "
                    "100000-165535 --add-subgids 100000-165535 %s",
                    user, user);
                if (!d->newuidmap.present && d->euid != 0)
                        fix(m, "install uidmap (newuidmap and newgidmap map the ranges)");
        }
        mount_limits(d, m, p, true);
}

static void judge_none(struct doctor *d)
{
        struct mode *m = &d->modes[MODE_NONE];

        if (d->euid != 0) {
                why(m, FAILS, "it needs uid 0 (it replaces the files of / and sets their owners)");
                fix(m, "run kiln as uid 0 in a throwaway container");
                return;
        }
        if (!d->container && !d->force_none) {
                why(m, FAILS,
                    "this does not look like a throwaway container, and --isolation none empties / "
                    "for each stage with RUN");
                fix(m, "run kiln in a container, or set " FORCE_VAR "=1 where / may be emptied");
                return;
        }
        why(m, LIMITED,
            "no isolation: RUN runs in %s own /, which each stage with RUN empties; stages run one "
            "at "
            "a time; no --network none",
            d->container ? "the container's" : "this machine's");
}

/* ---- output ---- */

static const char *verdict_name(enum verdict v)
{
        switch (v) {
        case WORKS:
                return "works";
        case LIMITED:
                return "works, with limits";
        case FAILS:
                return "does not work";
        }
        return "?";
}

static const char *step_name(enum sb_probe_step s)
{
        switch (s) {
        case SB_PROBE_OK:
                return "ok";
        case SB_PROBE_UNSHARE:
                return "unshare";
        case SB_PROBE_MAP:
                return "map";
        case SB_PROBE_PRIVATE:
                return "private";
        case SB_PROBE_MOUNT_API:
                return "mount_api";
        case SB_PROBE_OVERLAY:
                return "overlay";
        case _SB_PROBE_MAX:
                break;
        }
        return "?";
}

static const char *seccomp_name(long mode)
{
        return mode == 0 ? "disabled" : mode == 1 ? "strict" : mode == 2 ? "filter" : "unknown";
}

static const char *isolation_name(enum sb_isolation iso)
{
        return iso == SB_ISOLATION_ROOT ? "root" : "userns";
}

static void ranges_text(struct kiln_buf *b, const struct sb_idmap *m, size_t n)
{
        size_t i;

        if (n == 0) {
                kiln_buf_adds(b, "none", NULL);
                return;
        }
        for (i = 1; i < n; i++)
                kiln_buf_addf(b, NULL, "%s%u-%u", i > 1 ? "," : "", m[i].outside,
                              m[i].outside + m[i].count - 1);
}

/* The subordinate uids a build maps (the caller's own id not counted). */
static unsigned ranges_count(const struct doctor *d)
{
        unsigned n = 0;
        size_t i;

        for (i = 1; i < d->n_uid_map; i++)
                n += d->uid_map[i].count;
        return n;
}

static void row(struct kiln_buf *out, const char *label, const char *fmt, ...) _printf_(3, 4);
static void row(struct kiln_buf *out, const char *label, const char *fmt, ...)
{
        va_list ap;

        kiln_buf_addf(out, NULL, "%-18s ", label);
        va_start(ap, fmt);
        kiln_buf_vaddf(out, NULL, fmt, ap);
        va_end(ap);
        kiln_buf_addc(out, '\n', NULL);
}

static void helper_text(struct kiln_buf *out, const char *label, const struct helper *h)
{
        if (!h->present)
                row(out, label, "%s missing (package uidmap)", h->path);
        else
                row(out, label, "%s (%s)", h->path,
                    h->privilege ? h->privilege : "neither setuid nor file capabilities");
}

/* "works", or how far the probe got. */
static const char *probe_text(const struct probe_pair *p, enum sb_probe_step step, char *buf,
                              size_t size)
{
        if (!p->tried)
                return "not tried (not root)";
        if (p->r.failed == SB_PROBE_OK || p->r.failed > step)
                return "works";
        if (p->r.failed < step)
                return "not reached";
        snprintf(buf, size, "fails (%s)",
                 p->r.failed == SB_PROBE_OVERLAY ? p->r.overlay_fail : p->r.why);
        return buf;
}

static void render_text(const struct doctor *d, struct kiln_buf *out)
{
        const struct probe_pair *rp = &d->probes[0], *up = &d->probes[1];
        struct kiln_buf s = KILN_BUF_INIT;
        char a[1024], b[1024];
        size_t i;

        row(out, "user", "%s (uid %u, euid %u%s)", d->user, (unsigned) d->uid, (unsigned) d->euid,
            d->euid == 0 ? ": root" : "");
        row(out, "kernel", "%s %s", d->uts.sysname, d->uts.release);
        row(out, "container", "%s", d->container ? d->container : "no sign of one");
        row(out, "seccomp", "%s; no_new_privs %s", seccomp_name(d->seccomp),
            d->nnp == 1   ? "set"
            : d->nnp == 0 ? "off"
                          : "unknown");
        kiln_buf_addf(&s, NULL, "max_user_namespaces %ld", d->max_userns);
        if (d->userns_clone >= 0)
                kiln_buf_addf(&s, NULL, ", unprivileged_userns_clone %ld", d->userns_clone);
        if (d->aa_restrict >= 0)
                kiln_buf_addf(&s, NULL, ", apparmor_restrict_unprivileged_userns %ld",
                              d->aa_restrict);
        row(out, "user namespaces", "%s; unshare(CLONE_NEWUSER) %s", s.buf,
            up->r.failed == SB_PROBE_UNSHARE ? "fails" : "works");
        kiln_buf_reset(&s);
        ranges_text(&s, d->uid_map, d->n_uid_map);
        kiln_buf_adds(&s, " / ", NULL);
        ranges_text(&s, d->gid_map, d->n_gid_map);
        row(out, "subuid / subgid", "%s (for %s)%s%s", s.buf, d->user,
            d->ranges_fail ? ": cannot be mapped: " : "", d->ranges_fail ? d->ranges_fail : "");
        helper_text(out, "newuidmap", &d->newuidmap);
        helper_text(out, "newgidmap", &d->newgidmap);
        if (d->store_root)
                row(out, "store", "%s on %s", d->store_root, d->dir_fs ? d->dir_fs : "unknown");
        else
                row(out, "store", "cannot be used (%s); probed in %s on %s", d->store_error, d->dir,
                    d->dir_fs ? d->dir_fs : "unknown");
        row(out, "mount namespace", "as root: %s; in a user namespace: %s",
            probe_text(rp, SB_PROBE_UNSHARE, a, sizeof(a)),
            probe_text(up, SB_PROBE_UNSHARE, b, sizeof(b)));
        row(out, "overlay", "as root: %s; in a user namespace: %s",
            probe_text(rp, SB_PROBE_OVERLAY, a, sizeof(a)),
            probe_text(up, SB_PROBE_OVERLAY, b, sizeof(b)));
        snprintf(a, sizeof(a), "%s",
                 !rp->tried           ? "not tried (not root)"
                 : !rp->proc_unshared ? "not reached"
                 : rp->proc_fail      ? rp->proc_fail
                                      : "works");
        snprintf(b, sizeof(b), "%s",
                 !up->proc_unshared ? "not reached"
                 : up->proc_fail    ? up->proc_fail
                                    : "works");
        row(out, "fresh /proc", "as root: %s; in a user namespace: %s", a, b);
        if (d->openat2_errno == 0)
                row(out, "openat2", "RESOLVE_IN_ROOT works");
        else
                row(out, "openat2", "fails (%s)%s", strerror(d->openat2_errno),
                    d->openat2_errno == ENOSYS ? ": Linux 5.6 or newer is needed" : "");
        if (d->cgroup_version == 2)
                row(out, "cgroup", "v2 (/sys/fs/cgroup is cgroup2)");
        else if (d->cgroup_version == 1)
                row(out, "cgroup", "v1%s (/sys/fs/cgroup is %s)",
                    d->cgroup_hybrid ? ", hybrid" : " or hybrid", d->cgroup_fs);
        else
                row(out, "cgroup", "none (/sys/fs/cgroup %s)",
                    d->cgroup_fs ? d->cgroup_fs : "is missing");
        kiln_buf_release(&s);

        kiln_buf_adds(out, "\nisolation\n", NULL);
        for (i = 0; i < _MODE_MAX; i++) {
                const struct mode *m = &d->modes[i];

                kiln_buf_addf(out, NULL, "  %-16s %s", mode_names[i], verdict_name(m->verdict));
                if (i == MODE_USERNS && m->verdict != FAILS && d->n_uid_map > 1 && !d->ranges_fail)
                        kiln_buf_addf(out, NULL, " (with ranges: %u subordinate uids)",
                                      ranges_count(d));
                if (m->why.len)
                        kiln_buf_addf(out, NULL, ": %s", m->why.buf);
                kiln_buf_addc(out, '\n', NULL);
                if (m->fix.len)
                        kiln_buf_addf(out, NULL, "  %-16s to fix: %s\n", "", m->fix.buf);
        }
        kiln_buf_adds(out, "\n", NULL);
        if (d->auto_ok)
                row(out, "auto picks", "%s%s", d->auto_why,
                    d->auto_overlay_fail
                            ? "; without overlay: each stage works in a copy of its root filesystem"
                            : "");
        else if (d->modes[MODE_NONE].verdict != FAILS && bld_auto_none_reason())
                row(out, "auto picks", "none: no namespaces work here, and this is a container (%s)",
                    bld_auto_none_reason());
        else if (d->modes[MODE_NONE].verdict != FAILS)
                row(out, "auto picks", "nothing: no namespaces work here; use --isolation none");
        else
                row(out, "auto picks", "nothing (%s)",
                    d->auto_error ? d->auto_error : "the store cannot be used");
}

static json_t *str_or_null(const char *s)
{
        return s ? json_string(s) : json_null();
}

static json_t *ranges_json(const struct sb_idmap *m, size_t n)
{
        json_t *a = json_array();
        size_t i;

        for (i = 1; i < n; i++)
                json_array_append_new(a, json_pack("{s:I,s:I}", "start", (json_int_t) m[i].outside,
                                                   "count", (json_int_t) m[i].count));
        return a;
}

static json_t *helper_json(const struct helper *h)
{
        return json_pack("{s:s,s:b,s:o}", "path", h->path, "present", h->present, "privilege",
                         str_or_null(h->privilege));
}

static json_t *probe_json(const struct probe_pair *p)
{
        if (!p->tried)
                return json_null();
        return json_pack("{s:b,s:s,s:o,s:b,s:o,s:b,s:o}", "works", p->r.failed == SB_PROBE_OK,
                         "failed_step", step_name(p->r.failed), "error", str_or_null(p->r.why),
                         "overlay", p->r.failed == SB_PROBE_OK, "overlay_error",
                         str_or_null(p->r.overlay_fail), "fresh_proc", p->proc_fail == NULL,
                         "fresh_proc_error", str_or_null(p->proc_fail));
}

static json_t *sysctl_json(long v)
{
        return v < 0 ? json_null() : json_integer(v);
}

static int render_json(const struct doctor *d, struct kiln_buf *out, struct kiln_error **err)
{
        _cleanup_(json_decrefp) json_t *root = json_object();
        json_t *modes = json_object();
        _cleanup_free_ char *text = NULL;
        size_t i;

        json_object_set_new(root, "user",
                            json_pack("{s:s,s:I,s:I,s:I,s:b}", "name", d->user, "uid",
                                      (json_int_t) d->uid, "euid", (json_int_t) d->euid, "gid",
                                      (json_int_t) d->gid, "root", d->euid == 0));
        json_object_set_new(
                root, "kernel",
                json_pack("{s:s,s:s}", "sysname", d->uts.sysname, "release", d->uts.release));
        json_object_set_new(root, "container",
                            json_pack("{s:b,s:o}", "detected", d->container != NULL, "reason",
                                      str_or_null(d->container)));
        json_object_set_new(root, "seccomp",
                            json_pack("{s:s,s:o}", "mode", seccomp_name(d->seccomp), "no_new_privs",
                                      d->nnp < 0 ? json_null() : json_boolean(d->nnp == 1)));
        json_object_set_new(
                root, "user_namespaces",
                json_pack("{s:o,s:o,s:o,s:o,s:b}", "max_user_namespaces",
                          sysctl_json(d->max_userns), "unprivileged_userns_clone",
                          sysctl_json(d->userns_clone), "apparmor_restrict_unprivileged_userns",
                          sysctl_json(d->aa_restrict), "disabled_by", str_or_null(d->userns_sysctl),
                          "unshare", d->probes[1].r.failed != SB_PROBE_UNSHARE));
        json_object_set_new(root, "subids",
                            json_pack("{s:s,s:o,s:o,s:o,s:o,s:o}", "user", d->user, "subuid",
                                      ranges_json(d->uid_map, d->n_uid_map), "subgid",
                                      ranges_json(d->gid_map, d->n_gid_map), "mapping_error",
                                      str_or_null(d->ranges_fail), "newuidmap",
                                      helper_json(&d->newuidmap), "newgidmap",
                                      helper_json(&d->newgidmap)));
        json_object_set_new(root, "store",
                            json_pack("{s:o,s:o,s:s,s:o}", "root", str_or_null(d->store_root),
                                      "error", str_or_null(d->store_error), "probe_dir", d->dir,
                                      "filesystem", str_or_null(d->dir_fs)));
        json_object_set_new(root, "probes",
                            json_pack("{s:o,s:o}", "root", probe_json(&d->probes[0]), "userns",
                                      probe_json(&d->probes[1])));
        json_object_set_new(root, "openat2",
                            json_pack("{s:b,s:o}", "resolve_in_root", d->openat2_errno == 0,
                                      "error",
                                      d->openat2_errno ? json_string(strerror(d->openat2_errno))
                                                       : json_null()));
        json_object_set_new(root, "cgroup",
                            json_pack("{s:i,s:o,s:b}", "version", d->cgroup_version, "filesystem",
                                      str_or_null(d->cgroup_fs), "hybrid", d->cgroup_hybrid));
        for (i = 0; i < _MODE_MAX; i++) {
                const struct mode *m = &d->modes[i];
                static const char *const names[] = { "works", "limited", "fails" };

                json_object_set_new(
                        modes, mode_names[i],
                        json_pack("{s:s,s:b,s:o,s:o,s:o}", "verdict", names[m->verdict], "works",
                                  m->verdict != FAILS, "ids", str_or_null(m->detail), "reason",
                                  m->why.len ? json_string(m->why.buf) : json_null(), "fix",
                                  m->fix.len ? json_string(m->fix.buf) : json_null()));
        }
        json_object_set_new(root, "isolation", modes);
        json_object_set_new(
                root, "auto",
                json_pack("{s:o,s:o,s:b,s:o}", "isolation",
                          d->auto_ok ? json_string(isolation_name(d->auto_isolation))
                          : d->modes[MODE_NONE].verdict != FAILS && bld_auto_none_reason() ? json_string("none")
                                                                                          : json_null(),
                          "why", str_or_null(d->auto_ok ? d->auto_why : d->auto_error), "overlay",
                          d->auto_ok && !d->auto_overlay_fail, "overlay_error",
                          str_or_null(d->auto_overlay_fail)));
        text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        if (!text)
                return kiln_error_new(err, KILN_ERR_GENERIC, "cannot format JSON");
        return kiln_buf_addf(out, err, "%s\n", text);
}

static int run_doctor(void *state, char **args, unsigned n_args, struct cli_ctx *ctx,
                      struct kiln_error **err)
{
        struct doctor_opts *o = state;
        struct doctor d = { 0 };
        struct layer_store *store = NULL;
        char *scratch = NULL;
        int r;
        size_t i;

        for (i = 0; i < _MODE_MAX; i++) {
                kiln_buf_init(&d.modes[i].why, 0);
                kiln_buf_init(&d.modes[i].fix, 0);
        }
        probe_store(&d, o->root, &store, &scratch);
        gather(&d, store);
        if (store) {
                layer_store_scratch_remove(store, scratch);
                layer_store_free(store);
                free(scratch);
        }
        judge_root(&d);
        judge_userns(&d);
        judge_none(&d);
        r = o->json ? render_json(&d, &ctx->out, err) : (render_text(&d, &ctx->out), 0);
        if (r == 0 && d.modes[MODE_ROOT].verdict == FAILS &&
            d.modes[MODE_USERNS].verdict == FAILS && d.modes[MODE_NONE].verdict == FAILS)
                r = kiln_error_new(err, KILN_ERR_UNSUPPORTED, "no isolation works here");
        doctor_release(&d);
        return r;
}

const struct cli_verb cli_verb_doctor = {
        .name = "doctor",
        .synopsis = "[--root DIR] [--format text|json]",
        .summary = "probe what this machine allows and which isolation modes work",
        .help = "Options:\n" CLI_ROOT_HELP "  --format F             text (default) or json\n"
                "\n"
                "Probes user namespaces, /etc/subuid ranges, newuidmap, overlay and a fresh /proc "
                "in\n"
                "the store's directory, openat2, cgroups, seccomp and a container's signs, then "
                "says\n"
                "which isolation modes work (root, userns, none), what to change for the others, "
                "and\n"
                "what kiln build --isolation auto picks. Exit 1 when no mode works.\n",
        .options = doctor_options,
        .min_args = 0,
        .max_args = 0,
        .state_size = sizeof(struct doctor_opts),
        .option = doctor_option,
        .run = run_doctor,
};
