/* Shared by the executor's files in builder/; never included from outside this folder. */
#pragma once

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "builder/builder.h"
#include "builder/common/error.h"
#include "parser/parser.h"

/* ------------------------------------------------------------------------------------ */
/* The RUN sandbox (builder/run-sandbox.c)                                                */
/* ------------------------------------------------------------------------------------ */

enum sb_isolation {
        SB_ISOLATION_ROOT,   /* mount, pid, ipc, uts (and net) namespaces; needs real root */
        SB_ISOLATION_USERNS, /* the same inside a new user namespace; overlay with userxattr */
        _SB_ISOLATION_MAX,
};

enum sb_network {
        SB_NETWORK_HOST, /* share the host's network namespace */
        SB_NETWORK_NONE, /* a new network namespace with only loopback, up */
        _SB_NETWORK_MAX,
};

/* One line of /proc/PID/uid_map or gid_map: `count` ids from `inside` map to `outside`. */
struct sb_idmap {
        uint32_t inside, outside, count;
};

/* The root filesystem of a step: an overlay of read-only lower directories and a fresh upper,
 * or (where overlay cannot be mounted) one plain directory, changed in place. */
struct sb_rootfs {
        const char *const *lowers; /* absolute paths, TOP FIRST (the newest layer first) */
        size_t n_lowers;           /* at least 1 */
        const char *upper;         /* an empty directory: the step's changes land here */
        const char *work;          /* an empty directory on the upper's filesystem */
        const char *dir;           /* set: this directory (absolute) is bound as the root and
                                    * the fields above are ignored; stubs are made in it and
                                    * removed again as they are in an upper */
};

/* A mount stub (/proc, /dev, /etc, /etc/hosts, /etc/resolv.conf) made in a root directory:
 * removed later only if it still is that inode, unchanged. */
#define SB_STUBS_MAX 5
struct sb_stub_state {
        uint64_t ino;
        uint32_t mode;
        uint32_t made;
};

/* How the namespaces are made; shared by sb_run() and sb_call(). */
struct sb_env {
        enum sb_isolation isolation;
        enum sb_network network;
        /* USERNS only: the maps written for the child (newuidmap/newgidmap when more than the
         * caller's own id is mapped, else written directly with setgroups denied). n == 0:
         * the caller's uid and gid map to 0 alone. */
        const struct sb_idmap *uid_map, *gid_map;
        size_t n_uid_map, n_gid_map;
        /* ROOT run as root of a user namespace that is not the initial one (a container's, or
         * one unshare made; sb_nested_userns()): as with USERNS, overlay takes userxattr and
         * redirect_dir=nofollow (trusted.* xattrs and redirect_dir=off are refused) and devpts
         * no gid=5 (the tty group may not be mapped). */
        bool nested_userns;
};

/** Whether this process is in a user namespace other than the initial one (its uid_map is not
 * the whole identity map). */
bool sb_nested_userns(void);

/* A RUN step. */
struct sb_run {
        struct sb_rootfs root;
        struct sb_env env;
        const char *const *argv;   /* argv[0] is looked up in envp's PATH when it has no '/' */
        const char *const *envp;   /* the whole environment, "K=V" */
        const char *cwd;           /* absolute path in the image; made (0755, owned by 0:0 as
                                    * Docker does) when missing */
        const char *user;          /* "", "name", "uid", "name:group", "uid:gid"...: resolved
                                    * against the image's /etc/passwd and /etc/group after
                                    * pivot_root; supplementary groups from /etc/group. "" or
                                    * NULL: root */
        const char *hostname;      /* set in the new UTS namespace; NULL: "kiln" */
        /** The command's stdout and stderr, as they arrive (one pipe: their order is kept). */
        void (*output)(void *ctx, const char *data, size_t len);
        void *output_ctx;
};

/**
 * Runs one command in a fresh sandbox: new mount, pid, ipc and uts namespaces (user and net as
 * configured); the overlay mounted (index=off, metacopy=off, redirect_dir=off, userxattr in a
 * user namespace); /proc fresh; /dev a tmpfs with null, zero, full, random, urandom and tty
 * bound from the host, devpts (newinstance) with ptmx, and /dev/shm; the host's
 * /etc/resolv.conf and /etc/hosts bound read-only; pivot_root into it and the old root
 * detached; every fd but 0-2 closed (stdin is /dev/null); the working directory entered and
 * checked to be inside the root (CVE-2024-21626); the user dropped to; exec. Stubs the sandbox
 * had to create in the upper directory for its mounts (a missing /proc, /dev, /etc/hosts...)
 * are removed again afterwards, so the upper holds only what the command changed.
 * *ret_status gets the command's wait status. CHILD when the sandbox could not be set up
 * (with the step that failed: "mount overlay: Invalid argument"); UNSUPPORTED when the
 * isolation is not possible here.
 */
int sb_run(const struct sb_run *run, int *ret_status, struct kiln_error **err);

/**
 * Mounts the overlay in a child process in the same namespaces as sb_run() (without pivoting
 * or exec) and calls fn(ctx, rootfd, err) there, with an O_PATH directory fd of the merged
 * root, for work that must see the merged view and write into the upper directory (COPY, ADD,
 * WORKDIR). The child has every fd the caller had. fn's failure comes back as an error with
 * fn's kind and message. The upper is cleaned of the sandbox's own stubs as for sb_run().
 */
int sb_call(const struct sb_rootfs *root, const struct sb_env *env,
            int (*fn)(void *ctx, int rootfd, struct kiln_error **err), void *ctx,
            struct kiln_error **err);

/**
 * Calls fn(ctx, -1, err) in a child in the namespaces of `env` (a user namespace with its maps,
 * as root there) without any root filesystem: for work on files owned by subordinate ids, such
 * as extracting a base image so its owners land in the range, or removing a step's directories.
 * fn's failure comes back as for sb_call().
 */
int sb_unshare(const struct sb_env *env, int (*fn)(void *ctx, int rootfd, struct kiln_error **err),
               void *ctx, struct kiln_error **err);

/**
 * As sb_unshare(), for work whose result the caller needs: `size` bytes at `result` are shared
 * with the child, which finds them at fn's `result` (holding what the caller put there) and
 * whose writes are copied back to `result` when it ends, on success or failure.
 */
int sb_unshare_into(const struct sb_env *env, int (*fn)(void *ctx, void *result, struct kiln_error **err),
                    void *ctx, void *result, size_t size, struct kiln_error **err);

/** What this machine allows, with the reason in `why` ("running as root", "unprivileged user
 * namespaces are disabled: /proc/sys/user/max_user_namespaces is 0"); overlay is tried in
 * $TMPDIR and must work. */
int sb_probe(enum sb_isolation *ret, char **ret_why, struct kiln_error **err);

/**
 * The same with overlay tried in `dir` (a directory made and removed there): the isolation is
 * chosen by what namespaces allow, and *ret_overlay_fail (NULL when overlay works) says why
 * overlay cannot be mounted there ("filesystem on '...' not supported as upperdir: Invalid
 * argument"). UNSUPPORTED only when no namespaces work.
 */
int sb_probe_at(const char *dir, enum sb_isolation *ret, char **ret_why, char **ret_overlay_fail,
                struct kiln_error **err);

/** Whether overlay can be mounted in `dir` with `isolation` (in a user namespace with only the
 * caller's id mapped); *ret_fail is NULL when it can, or when the namespaces themselves fail
 * (the sandbox then says why). */
int sb_probe_overlay(enum sb_isolation isolation, const char *dir, char **ret_fail,
                     struct kiln_error **err);

/**
 * Makes the mount targets sb_run() needs in the root directory `dir` (/proc and /dev, and
 * /etc/hosts and /etc/resolv.conf when the host has them) where missing, never through a
 * symlink, in this process (call it as root of the build's user namespace, with umask 022).
 * ret[] records what was made, for sb_stubs_remove(). CHILD on failure.
 */
int sb_stubs_make(const char *dir, struct sb_stub_state ret[SB_STUBS_MAX], struct kiln_error **err);

/** Removes the stubs sb_stubs_make() made that are still as they were (never following a
 * symlink; a directory only when empty). IO on failure. */
int sb_stubs_remove(const char *dir, const struct sb_stub_state stubs[SB_STUBS_MAX],
                    struct kiln_error **err);

/* How far a probe of the sandbox's steps got (sb_probe_report()). */
enum sb_probe_step {
        SB_PROBE_OK,        /* every step worked */
        SB_PROBE_UNSHARE,   /* unshare(CLONE_NEWNS, with CLONE_NEWUSER for userns) was refused */
        SB_PROBE_MAP,       /* the id maps could not be written */
        SB_PROBE_PRIVATE,   /* the mounts could not be made private */
        SB_PROBE_MOUNT_API, /* open_tree was refused */
        SB_PROBE_OVERLAY,   /* overlay could not be mounted */
        _SB_PROBE_MAX,
};

/* What one probe found, for `kiln doctor`. */
struct sb_probe_report {
        enum sb_probe_step failed; /* SB_PROBE_OK when every step worked */
        int errnum;                /* the failed step's errno */
        char *why;                 /* the failure as sb_probe_at() words it; NULL when OK */
        char *overlay_fail;        /* failed == SB_PROBE_OVERLAY: why, as sb_probe_overlay() */
};

/** Runs the probe sb_probe_at() runs for one isolation (a user namespace with only the
 * caller's id mapped), in a directory made and removed in `dir`. Release with
 * sb_probe_report_release(). IO when `dir` is not usable. */
int sb_probe_report(enum sb_isolation isolation, const char *dir, struct sb_probe_report *ret,
                    struct kiln_error **err);
void sb_probe_report_release(struct sb_probe_report *r);

/** Whether a fresh procfs can be mounted in new mount and pid namespaces (and a user namespace
 * for USERNS), as sb_run() tries before binding the outer /proc read-only: *ret_fail is NULL
 * when it can, else why ("mount proc: Operation not permitted"); *ret_unshared says whether
 * the namespaces themselves could be made. CHILD when no child can be forked. */
int sb_probe_proc(enum sb_isolation isolation, bool *ret_unshared, char **ret_fail,
                  struct kiln_error **err);

/** Why a sysctl disables unprivileged user namespaces ("... max_user_namespaces is 0"), without
 * trying; NULL when none does. Caller frees. */
char *sb_userns_disabled(void);

/* The id map helpers sb_run() runs for /etc/subuid ranges. */
#define SB_NEWUIDMAP "/usr/bin/newuidmap"
#define SB_NEWGIDMAP "/usr/bin/newgidmap"

/** The caller's /etc/subuid and /etc/subgid ranges as maps (caller -> 0, then the range from
 * 1); n == 0 when there are none. Caller frees. */
void sb_subid_maps(struct sb_idmap **ret_uid, size_t *ret_n_uid, struct sb_idmap **ret_gid,
                   size_t *ret_n_gid);

/* ------------------------------------------------------------------------------------ */
/* COPY and ADD into a root (builder/copy.c)                                              */
/* ------------------------------------------------------------------------------------ */

/* A file ADD downloaded (reg_fetch_url()), as a source of cp_copy(). */
struct cp_fetched {
        const char *src;            /* the URL as written (expanded) */
        const char *name;           /* its name in a destination directory (reg_url_file_name) */
        int fd;                     /* the content; read from offset 0 (shared, not moved) */
        bool has_mtime;             /* its mtime is `mtime` (Last-Modified), else the time of
                                     * the copy, as inline sources get */
        struct timespec mtime;
};

/* Where COPY's sources come from. */
struct cp_source {
        int rootfd;                 /* O_PATH directory: the context or another stage's root */
        const struct df_ignore *ignore; /* the context's .dockerignore; NULL for a stage */
        bool keep_owners;           /* a stage or image: its files keep their owners (BuildKit);
                                     * the context's are 0:0 */
};

struct cp_opts {
        const char *const *srcs;    /* as written after expansion: paths or wildcards,
                                     * relative to the source root ("/" is the root) */
        size_t n_srcs;
        const char *dest;           /* expanded; relative to `workdir` unless absolute; a
                                     * trailing '/' or several sources make it a directory */
        const char *workdir;        /* the stage's WORKDIR, absolute */
        bool chown;                 /* set every copied entry's owner to uid:gid */
        uint32_t uid, gid;
        bool chmod;                 /* set every copied entry's permission bits ... */
        const char *chmod_spec;     /* ... from an octal or symbolic spec (df_check_chmod) */
        const char *const *excludes; /* --exclude patterns (.dockerignore syntax) */
        size_t n_excludes;
        bool parents;               /* --parents: keep the source's directories */
        /* heredoc sources: name -> content (a source equal to a name takes its content) */
        const char *const *inline_names;
        const char *const *inline_data;
        const size_t *inline_len;
        size_t n_inline;
        /* ADD <url> sources, downloaded already: a source equal to one's `src` is its file */
        const struct cp_fetched *fetched;
        size_t n_fetched;
        bool add;                   /* ADD: a local tar archive (gzip, bzip2, xz, zstd, by
                                     * content) is extracted into the destination */
        bool only_root;             /* only id 0 exists (a single-id user namespace): copies
                                     * and archive entries become root's instead of failing */
};

/**
 * Copies as BuildKit's COPY does (builder/copy.c's header comment has the details), from `src`
 * into the image root `destfd` (an O_PATH directory fd of the merged view): wildcards (Go's
 * filepath.Match) per path component; a directory copies its contents; a file to a name
 * ending in '/' or to an existing directory lands in it; missing parents are made (0755,
 * owned by the --chown ids or 0:0). Copied entries keep their mode and mtime, owner 0:0 (or
 * the source's with keep_owners) unless chown. A source's last component is followed when it
 * is a symlink, inside the source root only; symlinks inside a copied directory are copied as
 * links. Every path on both sides resolves inside its root: a symlink in the destination image
 * never redirects a write outside it, one in the context never reads outside the context.
 * Excluded (.dockerignore, --exclude) files are not sources. NOTFOUND for a missing source
 * ("COPY: 'x': not found"), INVALID for several sources to a non-directory. Messages start with
 * "COPY: " or "ADD: ".
 */
int cp_copy(const struct cp_source *src, int destfd, const struct cp_opts *opts,
            struct kiln_error **err);

/* One entry cp_copy() would copy, as cp_walk() finds it. */
struct cp_entry {
        const char *top;       /* an item, a source as written expanded: its cleaned path
                                * (wildcards replaced by their match); NULL below an item */
        size_t source;         /* which of opts->srcs it comes from */
        size_t kept_from;      /* --parents: top's components from this one are kept */
        bool parent;           /* --parents: a directory made above the item, with `st` */
        const char *path;      /* its real path in the source root ("" the root); an inline
                                * source's name */
        const struct stat *st; /* its type and permission bits as found */
        mode_t mode;           /* the permission bits it lands with (--chmod applied) */
        const char *link;      /* a symlink's target */
        const char *hardlink;  /* a file already listed for this source with the same inode:
                                * copied as a hardlink to it; else NULL */
        int dirfd;             /* a regular file: `name` in `dirfd` (open it O_NOFOLLOW and
                                * check the inode), ... */
        const char *name;
        const char *data; /* ... or inline content (is_inline) */
        size_t len;
        bool is_inline;
};

/**
 * Lists what cp_copy() with the same `src` and `opts` would copy, without a destination and
 * without reading any file: each item (a source as written, expanded) then, for a directory,
 * every entry below it that is not excluded, in the order cp_copy() copies them, each passed
 * to fn. Selection is cp_copy()'s own code (wildcards, symlinks followed, .dockerignore,
 * --exclude and "!" patterns, --parents); an excluded directory entered for "!" patterns is
 * listed even when nothing in it is copied. Sockets are not listed. Raises what cp_copy()
 * would for a missing source or several sources to a non-directory; UNSUPPORTED for a
 * downloaded source; fn's errors.
 */
int cp_walk(const struct cp_source *src, const struct cp_opts *opts,
            int (*fn)(void *ctx, const struct cp_entry *e, struct kiln_error **err), void *ctx,
            struct kiln_error **err);

/* ------------------------------------------------------------------------------------ */
/* Users and groups of an image (builder/user-db.c)                                       */
/* ------------------------------------------------------------------------------------ */

/** The home directory of USER `spec`'s user in the image's /etc/passwd (name or uid), "/" when
 * it has none: the HOME a RUN gets when its environment has none (runc's rule). Caller frees. */
char *bld_user_home(int rootfd, const char *spec);

/** `envp` plus HOME=`home` when it has no HOME; NULL when it has one. Caller frees (strv_free). */
char **bld_env_with_home(const char *const *envp, const char *home);

/**
 * Resolves a USER or --chown spec ("name", "uid", "name:group", "uid:gid", "name:gid",
 * "uid:group") against the image root's /etc/passwd and /etc/group, read through `rootfd`
 * with RESOLVE_IN_ROOT (a missing file is an empty database). Docker's rules: a numeric user
 * needs no passwd entry (gid then 0, or the entry's gid when there is one); a named user's gid
 * is its passwd gid unless a group is given. *ret_groups (may be NULL) gets the supplementary
 * groups listing the user by name in /etc/group (only when no group was given). NOTFOUND
 * naming the unknown user or group ("unable to find user app: no matching entries in passwd
 * file"); INVALID for a malformed spec.
 */
int bld_user_resolve(int rootfd, const char *spec, uint32_t *ret_uid, uint32_t *ret_gid,
                     uint32_t **ret_groups, size_t *ret_n_groups, struct kiln_error **err);

/** A decimal id ("1000") no larger than `max`; false for anything else ("", "-1", "1e3"). */
bool bld_parse_u32(const char *s, uint32_t max, uint32_t *ret);

/* ------------------------------------------------------------------------------------ */
/* The image config as the build changes it (builder/image-config.c)                      */
/* ------------------------------------------------------------------------------------ */

/** A config for FROM scratch: os/architecture/variant from `platform`, empty otherwise. */
json_t *bld_config_new(const char *platform);

/** Makes sure "config", "rootfs" (type layers, diff_ids) and "history" exist. */
void bld_config_normalize(json_t *config);

/** The "config" member (Env, Cmd, ...), made when missing. Borrowed. */
json_t *bld_config_run(json_t *config);

/** A string of "config" ("User", "WorkingDir"), or NULL. */
const char *bld_config_string(json_t *config, const char *key);

/** Sets NAME=VALUE in Env, replacing an earlier NAME. */
void bld_config_set_env(json_t *config, const char *name, const char *value);

/** Adds the default PATH when Env has none. */
void bld_config_default_path(json_t *config);

/** Env as a vector of borrowed strings (free the vector only). */
const char **bld_config_env(json_t *config, size_t *ret_n);

/* A history entry's time, decided when the image is stored (bld_config_settle_times()). */
#define BLD_TIME_PENDING INT64_MIN

void bld_config_add_history(json_t *config, int64_t created, const char *created_by, bool empty_layer);
void bld_config_add_diff_id(json_t *config, const char *diff_id);
void bld_config_set_created(json_t *config, int64_t created);
/**
 * Gives each BLD_TIME_PENDING history entry (a metadata instruction: it makes nothing of its
 * own) the time of the next entry with one, else of the previous, else `fallback`; and sets
 * the config's "created" to the newest history time (else `fallback`). A cache hit keeps the
 * time its step first ran, so a fully cached rebuild makes the very same image, while one that
 * ran a step is as new as that step.
 */
void bld_config_settle_times(json_t *config, int64_t fallback);

/**
 * Applies a metadata instruction (expanded) to the config, as Docker does; *ret_history gets
 * its history text ("ENV A=b"). *ret_cmd_reset is true while the stage's Cmd is inherited:
 * ENTRYPOINT then clears it, and CMD or ENTRYPOINT makes it false. INVALID for an instruction
 * that is not metadata or a bad EXPOSE port.
 */
int bld_config_apply(json_t *config, const struct df_instr *in, bool *ret_cmd_reset, char **ret_history,
                     struct kiln_error **err);

/* ------------------------------------------------------------------------------------ */
/* FROM oci-layout:// (builder/oci-layout.c)                                              */
/* ------------------------------------------------------------------------------------ */

/**
 * The image `ref` ("oci-layout://DIR[:TAG|@DIGEST]") names in an OCI image layout on disk: DIR
 * relative to the working directory, TAG matched against index.json's
 * org.opencontainers.image.ref.name ("latest" by default; a layout of one unnamed image needs
 * none), DIGEST a manifest or index blob; an index is followed to `platform`'s manifest. Its
 * layers are copied into `store` (streamed), every blob's digest and size verified, and *ret
 * filled as bld_image_layers() does. NOTFOUND for a missing directory, tag, blob or
 * platform; INVALID for a directory that is not a layout; PARSE for bad JSON; DIGEST for content
 * that does not match its descriptor.
 */
int bld_layout_image(struct layer_store *store, const char *ref, const char *platform, struct bld_image_layers *ret,
                     struct kiln_error **err);

/* ------------------------------------------------------------------------------------ */
/* A build and its stages (builder/build.c, builder/stage.c)                              */
/* ------------------------------------------------------------------------------------ */

/* A layer of the image a stage builds. */
struct bld_layer {
        char digest[LAYER_DIGEST_SIZE];
        char diff_id[LAYER_DIGEST_SIZE];
        uint64_t size;
        char *media_type;
};

struct bld_build;
struct bld_context_sums;
struct bld_none;
struct bld_cache_entry;

struct bld_stage {
        struct bld_build *b;
        size_t index;                 /* in the graph */
        char *name;                   /* its AS name, or "stage-N" */
        json_t *config;               /* the image config as built so far */
        struct bld_layer *layers;     /* bottom first */
        size_t n_layers, alloc_layers;
        char **lowers;                /* its directories, bottom first: the base's, then each step's */
        size_t n_lowers, alloc_lowers;
        unsigned n_dirs;              /* step directories made */
        bool cmd_inherited;           /* Cmd came from the base (ENTRYPOINT resets it) */
        json_t *triggers;             /* the base's OnBuild, taken out of the config at FROM */
        bool done;
        /* Without overlay (b->trees): the stage's root, made on its first step */
        char *tree;                   /* SCRATCH/tree-<index>; NULL until made */
        struct sb_stub_state stubs[SB_STUBS_MAX]; /* mount stubs made in it for RUN */
        bool stubs_made;
        /* The cache key of the stage so far (the last step's, or its base's); "" once an
         * input kiln cannot key was seen: nothing after it is cached */
        char key[LAYER_DIGEST_SIZE];
        bool unsettled;               /* cached layers were added: lowers are to be remade */
        json_t *key_fields;           /* the inputs of the key just made, for its lookup */
        char *upstream;               /* why its FROM missed ("FROM: base image digest
                                       * changed") until a step misses for its own inputs */
        json_t *chain;                /* key -> entry of each keyed step so far (its base's too) */
        bool forced;                  /* its steps (or its base stage's) ran without the cache
                                       * (--no-cache-filter): what it made may differ from what
                                       * its keys name, so no later stage keys by them */
};

struct bld_build {
        const struct bld_build_opts *o;
        enum sb_isolation isolation;
        struct sb_env env;
        bool userxattr;
        char *scratch_name, *scratch_path;
        int scratchfd;
        char *empty_dir;              /* the lower directory of FROM scratch */
        struct bld_stage *stages;     /* one per graph stage */
        int64_t created;              /* timestamps written into the image */
        struct bld_context_sums *context_sums; /* the context's file digests; NULL until used */
        pthread_mutex_t lock;         /* events, step numbers, failure */
        unsigned next_step;
        bool failed;
        struct timespec started;
        struct bld_none *none;        /* --isolation none; NULL otherwise */
        bool trees;                   /* overlay cannot be mounted on the scratch directory:
                                       * stages work in trees of their own (stage-tree.c) */
        bool prefetched;              /* every image is in the store: --pull is done */
        bool cache;                   /* the local cache is consulted and written (overlay only) */
        json_t *remote;               /* --cache-from entries: key -> entry with "ref" */
        json_t *remote_blobs;         /* their blobs: digest -> the reference that has it */
        pthread_mutex_t fetch_lock;   /* one fetch of the caches' blobs at a time */
};

/* A step being run, for its events. */
struct bld_step {
        struct bld_stage *st;
        unsigned number, index, count;
        struct timespec start;
        char line[4096];
        size_t line_len;
        char *tail[10];
        unsigned tail_next;
        bool cached;                  /* its result came from the cache */
};

/** A build-wide event (INFO, WARNING) with a formatted text, under the build's lock: not to be
 * called with it held. */
void bld_build_event(struct bld_build *b, enum bld_event_kind kind, const char *fmt, ...) _printf_(3, 4);

void bld_step_start(struct bld_stage *st, struct bld_step *s, unsigned index, const struct df_instr *in,
                    unsigned count);
void bld_step_event(struct bld_step *s, struct bld_event *ev);
void bld_step_done(struct bld_step *s);
/** The step's result came from the cache (instead of bld_step_done()). */
void bld_step_cached(struct bld_step *s);
/** Why the step missed the cache (NULL `why`: no earlier build of it was recorded). */
void bld_step_miss(struct bld_step *s, const char *why);
void bld_step_error(struct bld_step *s, const struct kiln_error *e, const char *tail);
bool bld_build_failed(struct bld_build *b);
/** Whether RUN has subordinate ids (a user namespace with /etc/subuid ranges). */
bool bld_build_has_ranges(const struct bld_build *b);

/** Maps the owners recorded in a step's changes back to the ids inside the build's user
 * namespace (identity outside one). */
void bld_map_owners(const struct bld_build *b, struct layer_changes *changes);

/* ------------------------------------------------------------------------------------ */
/* --isolation none: no namespaces, the container's own / (builder/run-none.c)            */
/* ------------------------------------------------------------------------------------ */

/**
 * Checks that --isolation none may run here (uid 0, and a container by its signs or
 * KILN_ISOLATION_NONE_FORCE=1), works out what in / is kept (the mount points, kiln's directory
 * or KILN_NONE_KEEP, the store, the context, /etc/resolv.conf, /etc/hosts, /etc/hostname) and sets
 * b->none. *ret_why says why and what is kept. UNSUPPORTED when it may not run, with the reason.
 */
int bld_none_setup(struct bld_build *b, char **ret_why, struct kiln_error **err);
/** Why this looks like a container ("/.dockerenv exists"), or NULL: what --isolation none
 * needs (or KILN_ISOLATION_NONE_FORCE=1). */
const char *bld_none_container_reason(void);
/** Why --isolation auto may fall back to none when no namespace works (root in a container),
 * or NULL when it may not. */
const char *bld_auto_none_reason(void);
struct bld_none *bld_none_free(struct bld_none *n);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct bld_none *, bld_none_free)

/** Makes the stage's root on its first step (a stage with RUN empties / and unpacks its layers
 * there; one without uses a scratch directory), snapshots it, and calls fn(ctx, rootfd, err) in
 * this process: COPY, ADD and WORKDIR. bld_none_commit() then makes the step's layer. */
int bld_none_call(struct bld_stage *st, int (*fn)(void *ctx, int rootfd, struct kiln_error **err), void *ctx,
                  struct kiln_error **err);

/** The same for RUN: `run` (its root ignored) runs with fork and exec in /, as USER, in its cwd;
 * *ret_status gets its wait status. UNSUPPORTED for --network=none. */
int bld_none_run(struct bld_stage *st, const struct sb_run *run, int *ret_status, struct kiln_error **err);

/** The step's layer: what changed in the stage's root since the snapshot (nothing: an empty
 * history entry), added to the stage's layers and config. */
int bld_none_commit(struct bld_stage *st, const char *created_by, struct bld_cache_entry *made,
                    struct kiln_error **err);
/** A cached layer added to the stage: extracted into its root when the stage has taken it,
 * else nothing (the root is made from every layer of the stage on its first step). */
int bld_none_apply(struct bld_stage *st, const struct bld_layer *layer, struct kiln_error **err);

/** After a stage: when later stages use it, its files as one directory (its only lower). */
int bld_none_stage_done(struct bld_stage *st, struct kiln_error **err);

/** Adds a layer to the stage's list (not to its config). */
void bld_stage_add_layer(struct bld_stage *st, const char *digest, const char *diff_id, uint64_t size,
                         const char *media_type);

/** Writes `changes` as a layer blob into the store (*ret_empty when there are none); with
 * `map_owners` the owners are mapped as bld_map_owners() does first. */
int bld_write_layer(struct bld_build *b, struct layer_changes *changes, bool map_owners, bool *ret_empty,
                    struct layer_desc *ret, struct kiln_error **err);

/* ------------------------------------------------------------------------------------ */
/* Without overlay: a stage's own tree, diffed after each step (builder/stage-tree.c)     */
/* ------------------------------------------------------------------------------------ */

/**
 * Before a step: makes the stage's tree on its first step (its layers extracted in order, in
 * the build's user namespace with subordinate ids, owners recorded with a single id), for RUN
 * its mount stubs (kept until the stage ends, so they never show in a diff), and a snapshot of
 * it. *ret_dir (borrowed) is the tree, the step's sb_rootfs.dir.
 */
int bld_tree_begin(struct bld_stage *st, bool run, const char **ret_dir, struct kiln_error **err);

/** After a step: what changed in the tree since bld_tree_begin() (with the ancestors an
 * overlay upper would hold) as the step's layer; nothing: an empty history entry. */
int bld_tree_commit(struct bld_stage *st, const char *created_by, struct bld_cache_entry *made,
                    struct kiln_error **err);
/** A cached layer added to the stage: applied to its tree when it has one (whiteouts
 * included), else nothing (the tree is made from all the stage's layers when needed). */
int bld_tree_apply(struct bld_stage *st, const struct bld_layer *layer, struct kiln_error **err);

/** After a stage: its stubs removed; its tree made when a later stage copies from it. */
int bld_tree_stage_done(struct bld_stage *st, struct kiln_error **err);

/**
 * What `kiln build --isolation auto` picks when the steps' directories are in `dir` (the
 * store's scratch directory): sb_probe_at()'s choice, *ret_why naming it ("root: running as
 * root"), *ret_overlay_fail why overlay cannot be mounted there (NULL when it can). Shared by
 * the build and `kiln doctor`. UNSUPPORTED when no namespaces work.
 */
int bld_isolation_auto(const char *dir, enum sb_isolation *ret, char **ret_why, char **ret_overlay_fail,
                       struct kiln_error **err);

/* ------------------------------------------------------------------------------------ */
/* The local build cache (builder/cache.c)                                                */
/* ------------------------------------------------------------------------------------ */

/* A step key being computed: sha256 over length-prefixed named fields. The fields are kept
 * too (name -> value), so a miss can be explained against the inputs of an earlier build.
 * Field names: "parent" (the previous step's key), "step" (its kind), "image.<key>" and
 * "config.<Key>" (the image config it sees, one field per setting), "build" (how layers are
 * written), and per kind: RUN "argv", "env.<NAME>", "network", "security"; FROM "base.layers",
 * "base.onbuild"; COPY/ADD "instruction" and either "files" (what it wrote) or, by its sources,
 * "from.stage", "from.image", or per entry from the context "item:<n>:<source as matched>",
 * "file:<path>" ("<type> <mode> <sha256 | link target>"), "parent:<path>", "heredoc:<name>". */
struct bld_key {
        struct layer_sha256 *h;
        json_t *fields;
};

/** Starts a key from its parent's key and what kind of step it is. */
void bld_key_init(struct bld_key *k, const char *parent, const char *what);
/** Adds one named input. Names are unique within a key. */
void bld_key_field(struct bld_key *k, const char *name, const char *value);
/** A JSON value, canonically (sorted keys, compact). */
void bld_key_field_json(struct bld_key *k, const char *name, json_t *j);
/** Raw bytes into the digest, unnamed (a separator); prefer bld_key_field(). */
void bld_key_addn(struct bld_key *k, const void *data, size_t len);
/** An image config without its history and creation time, one field per setting. */
void bld_key_config(struct bld_key *k, json_t *config);
/** The key; the fields stay until bld_key_release(). */
void bld_key_final(struct bld_key *k, char out[LAYER_DIGEST_SIZE]);
void bld_key_release(struct bld_key *k);

/* What a cached step made. */
struct bld_cache_entry {
        bool empty; /* no files changed: an empty_layer history entry */
        char digest[LAYER_DIGEST_SIZE];
        char diff_id[LAYER_DIGEST_SIZE];
        uint64_t size;
        char media_type[128];
        int64_t created; /* when the step ran (seconds since the epoch); -1: unknown */
        char ref[512];   /* a --cache-from's reference that holds the blob, or "" */
};

/** The entry for `key`: a local one whose blob is in the store with its size (or, for one a
 * --cache-from brought, in its registry), else one a --cache-from imported (its blob is
 * fetched when a step or the image needs it); false
 * otherwise (and always with --no-cache). */
bool bld_cache_get(struct bld_build *b, const char *key, struct bld_cache_entry *ret);
/** An entry as JSON (the local entry's and the exported cache's form), and back: false when
 * a field is missing or bad (a digest, a media type that is not a layer's). */
json_t *bld_cache_entry_json(const struct bld_cache_entry *e, const char *created_by);
bool bld_cache_entry_parse(json_t *j, struct bld_cache_entry *ret);
bool bld_layer_media_type_known(const char *mt);

/* ---- the registry cache (builder/cache-remote.c): --cache-from, --cache-to ---- */

/** Reads every --cache-from's entries (a cache manifest's or an image's inline ones) into
 * b->remote. A reference that is missing or unreadable is a warning: the build goes on. */
void bld_cache_import(struct bld_build *b);
/** The imported entry for `key`, also written as a local entry; false when none. */
bool bld_cache_remote_get(struct bld_build *b, const char *key, struct bld_cache_entry *ret);
/** Notes that the registry `ref` holds blob `digest`: fetched from there when needed. */
void bld_cache_note_blob(struct bld_build *b, const char *digest, const char *ref);
/** Fetches the blobs of `layers` the store lacks from the caches that named them. */
int bld_cache_fetch_layers(struct bld_build *b, const struct bld_layer *layers, size_t n, struct kiln_error **err);
/** A base image the store lacks, resolved from its manifest and config only (with a
 * --cache-from): its layers are registered to be fetched when needed. */
int bld_cache_lazy_image(struct bld_build *b, const char *ref, const char *platform, struct bld_image_layers *ret,
                         struct kiln_error **err);
/** Notes a keyed step's entry in the stage's chain (what --cache-to exports). */
void bld_cache_chain_add(struct bld_stage *st, const char *key, const struct bld_cache_entry *e,
                         const char *created_by);
/** The inline cache of the image built from `st` (--cache-to type=inline), into its config. */
void bld_cache_inline(struct bld_build *b, struct bld_stage *st);
/** Pushes every --cache-to type=registry: the target's chain (mode=min) or every stage's. */
int bld_cache_export(struct bld_build *b, struct bld_stage *target, struct kiln_error **err);
/** Records an entry (temp file and rename); best effort. */
void bld_cache_put(struct bld_build *b, const char *key, const struct bld_cache_entry *e, const char *created_by);

/** The fields recorded for the step named `id` (its identity: where the build comes from,
 * the stage and the step's place in it) at its most recent build, as bld_cache_fields_short()
 * made them; NULL when there is none. New reference. */
json_t *bld_cache_record_get(struct bld_build *b, const char *id);
/** Records a step's key fields (shortened) as its most recent build: temp file and rename,
 * mode 0600 (they hold build-args' values); best effort. */
void bld_cache_record_put(struct bld_build *b, const char *id, json_t *fields);

/* Why a step missed (builder/cache-explain.c) */

/** Key fields as a record keeps them: values longer than 100 bytes (Env and Labels: 4096)
 * become a prefix and their digest. A new object. */
json_t *bld_cache_fields_short(json_t *fields);

/**
 * Why a step whose key fields are `cur` missed, against `old`, those of its most recent build
 * (both shortened alike): "PREFIX: what changed" naming the step's own inputs first (up to
 * three, then "and N more"): "RUN: build-arg VERSION changed (1.2 -> 1.3)", "COPY . /app:
 * app/main.py changed", "RUN: USER changed (a -> b)"; for FROM fields "FROM: base image digest
 * changed". When only what earlier steps made differs: `upstream` (the stage's FROM changed;
 * *ret_upstream set) or "an earlier step changed". Caller frees.
 */
char *bld_cache_explain(json_t *old, json_t *cur, const char *prefix, const char *upstream, bool *ret_upstream);
/* The cache as a garbage collection root (kiln prune, kiln store fsck): prune keeps the
 * blobs entries name and drops entries whose blob is gone. */
struct bld_cache_gc {
        bool check_only; /* fsck: remove nothing */
        bool all;        /* prune --cache: every entry goes */
        /* prune --cache --keep-storage: the least recently used entries go until the blobs
         * only entries keep total at most this (one whose blob an image keeps frees nothing
         * and stays); -1: no limit */
        int64_t keep_storage;
        /* results */
        uint64_t entries_removed, entries_kept;
        uint64_t bytes_kept; /* of the blobs only entries keep */
        uint64_t temp_removed;
};

/** A layer_gc_roots mark function; ctx is a struct bld_cache_gc. Entries go before any
 * blob (the cache directory is fsync'd), so no entry outlives its blob. IO when the cache
 * cannot be read. */
int bld_cache_gc_mark(struct layer_store *store, struct layer_gc *gc, void *ctx,
                      struct kiln_error **err);

/* ------------------------------------------------------------------------------------ */
/* Digests of the build context's files, kept between builds (builder/context-hash.c)     */
/* ------------------------------------------------------------------------------------ */

/**
 * The sha256 of a regular file of the build context as cp_walk() lists it (e->dirfd, e->name;
 * e->path its path in the context, e->st its stat): the one the store's record for the context
 * holds when the file's device, inode, size, mtime and ctime still match, so it is not opened;
 * else read (bounded memory) and recorded. Safe from several stages at once. IO when the file
 * cannot be read or changed while it was read.
 */
int bld_context_digest(struct bld_build *b, const struct cp_entry *e, char ret[LAYER_DIGEST_SIZE],
                       struct kiln_error **err);

/** The same read every time, never from or into the record. */
int bld_context_hash_file(const struct cp_entry *e, char ret[LAYER_DIGEST_SIZE],
                          struct kiln_error **err);

/** At the end of a build: writes the record back when it changed (temp file, fsync, rename;
 * best effort) and frees it. */
void bld_context_sums_close(struct bld_build *b);

/** Runs a stage from FROM to its last instruction. */
int bld_stage_run(struct bld_stage *st, struct kiln_error **err);

/** Pulls or finds every image the needed stages name (FROM, COPY --from) before any runs. */
int bld_prefetch_images(struct bld_build *b, struct kiln_error **err);
void bld_stage_release(struct bld_stage *st);
