/*
 * A stage without overlay (DESIGN.md "RUN, the fast path": "Without overlay: copy ... and diff").
 *
 * Where overlay cannot be mounted on the store's scratch directory (the store on an overlayfs
 * root, as in most containers; a kernel before 5.11 for rootless builds), each stage works in
 * one directory of its own, SCRATCH/tree-<index>: its layers are extracted there on its first
 * step, every RUN, COPY, ADD and WORKDIR runs with that directory itself as the root, and the
 * step's layer is what changed since a snapshot taken just before it (inode, ctime, mtime,
 * size, mode, owner, xattrs: nothing is hashed), plus the ancestors of every change, as an
 * overlay upper holds them after copy-up: the same Dockerfile makes the same layers either way.
 *
 * The mount stubs RUN needs (/proc, /dev, /etc/hosts, /etc/resolv.conf) are made before the
 * first RUN's snapshot and kept until the stage ends, so creating and removing them never
 * changes a directory between a snapshot and its diff. The host's resolv.conf and hosts are
 * bound read-only over them (or over the image's own files), so the tree's files never change.
 *
 * With a user namespace the tree holds files of ids the caller cannot read or search: it is
 * extracted (with /etc/subuid ranges), snapshotted and diffed inside the namespace, as root
 * there, as an upper is; the snapshot goes through a file in the scratch directory. This is
 * the simple variant: a copy-on-write one (reflinks, fuse-overlayfs) would replace it here.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "builder/builder-internal.h"
#include "builder/common/fd-util.h"
#include "builder/common/xalloc.h"

/* What a job in the namespace hands back: shared memory when it ran in a child. */
struct tree_result {
        bool empty;
        struct layer_desc desc;
        struct sb_stub_state stubs[SB_STUBS_MAX];
};

struct tree_job {
        struct bld_stage *st;
        char name[64]; /* the tree, in the scratch directory */
        char snap[64]; /* its snapshot file, in the scratch directory */
        const char *path;
        struct layer_extract_opts xo;
        const char *created_by;
        bool map_owners; /* outside the namespace: stat shows outside ids */
        struct tree_result *res;
};

/* in_namespace(): the step to run in the child, on the job whose result is shared. */
struct ns_call {
        struct tree_job *j;
        int (*fn)(void *ctx, int rootfd, struct kiln_error **err);
};

static int call_in_namespace(void *ctx, void *result, struct kiln_error **err)
{
        struct ns_call *c = ctx;

        c->j->res = result; /* the child's copy of the job: the caller's stays local */
        return c->fn(c->j, -1, err);
}

/* Runs fn in the build's user namespace (as root there), or here without one; `always`: in a
 * child in every case (umask 022, as the sandbox's). j->res gets what fn wrote either way. */
static int in_namespace(struct tree_job *j, bool always,
                        int (*fn)(void *ctx, int rootfd, struct kiln_error **err),
                        struct kiln_error **err)
{
        struct bld_build *b = j->st->b;
        struct ns_call c = { .j = j, .fn = fn };

        j->map_owners = b->isolation != SB_ISOLATION_USERNS && !always;
        if (!always && b->isolation != SB_ISOLATION_USERNS)
                return fn(j, -1, err);
        return sb_unshare_into(&b->env, call_in_namespace, &c, j->res, sizeof(*j->res), err);
}

static void job_init(struct tree_job *j, struct bld_stage *st, struct tree_result *res)
{
        *j = (struct tree_job){ .st = st, .path = st->tree, .res = res };
        snprintf(j->name, sizeof(j->name), "tree-%zu", st->index);
        snprintf(j->snap, sizeof(j->snap), "tree-%zu.snap", st->index);
}


static int tree_open(const struct tree_job *j, struct kiln_error **err)
{
        int fd = openat(j->st->b->scratchfd, j->name,
                        O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

        if (fd < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "open '%s/%s'", j->st->b->scratch_path,
                                        j->name);
        return fd;
}

/* ---- the tree ---- */

static int extract_layers(void *ctx, int unused, struct kiln_error **err)
{
        struct tree_job *j = ctx;
        struct bld_stage *st = j->st;
        struct bld_build *b = st->b;
        _cleanup_close_ int rootfd = -1;
        size_t i;

        if (mkdirat(b->scratchfd, j->name, 0755) < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "make '%s/%s'", b->scratch_path, j->name);
        rootfd = tree_open(j, err);
        if (rootfd < 0)
                return -1;
        /* whatever the umask: a USER other than root must reach the files */
        if (fchmod(rootfd, 0755) < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "chmod '%s/%s'", b->scratch_path,
                                        j->name);
        for (i = 0; i < st->n_layers; i++) {
                _cleanup_close_ int blob =
                        layer_store_open_blob(b->o->store, st->layers[i].digest, NULL, err);

                if (blob < 0 ||
                    layer_extract(rootfd, blob, st->layers[i].digest, &j->xo, NULL, err) < 0)
                        return -1;
        }
        return 0;
}

/* The stage's layers applied in order to a fresh directory. With subordinate ids in the user
 * namespace, so owners land in the range; with a single id, owners are recorded as xattrs
 * (layer_extract's record_owner), as image_rootfs() makes the overlay's lower directories. */
static int make_tree(struct bld_stage *st, struct kiln_error **err)
{
        struct bld_build *b = st->b;
        struct tree_result local = { 0 };
        struct tree_job j;
        int r;

        /* layers a --cache-from named: fetched before anything is extracted */
        if (bld_cache_fetch_layers(b, st->layers, st->n_layers, err) < 0)
                return -1;
        job_init(&j, st, &local);
        if (bld_build_has_ranges(b)) {
                r = in_namespace(&j, false, extract_layers, err);
        } else {
                j.xo.record_owner = b->isolation != SB_ISOLATION_ROOT;
                r = extract_layers(&j, -1, err);
        }
        if (r < 0)
                return kiln_error_wrap(err, "make the stage's root filesystem");
        st->tree = xasprintf("%s/%s", b->scratch_path, j.name);
        return 0;
}

static int tree_make_stubs(void *ctx, int unused, struct kiln_error **err)
{
        struct tree_job *j = ctx;

        return sb_stubs_make(j->path, j->res->stubs, err);
}

static int tree_remove_stubs(void *ctx, int unused, struct kiln_error **err)
{
        struct tree_job *j = ctx;

        return sb_stubs_remove(j->path, j->st->stubs, err);
}

/* ---- snapshots and layers ---- */

static int take_snapshot(void *ctx, int unused, struct kiln_error **err)
{
        struct tree_job *j = ctx;
        struct bld_build *b = j->st->b;
        _cleanup_(layer_snapshot_freep) struct layer_snapshot *snap = NULL;
        _cleanup_close_ int fd = tree_open(j, err), out = -1;

        if (fd < 0 || layer_snapshot_take(fd, &snap, err) < 0)
                return -1;
        out = openat(b->scratchfd, j->snap, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC,
                     0600);
        if (out < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "write '%s/%s'", b->scratch_path,
                                        j->snap);
        return layer_snapshot_save(snap, out, err);
}

static int write_layer(void *ctx, int unused, struct kiln_error **err)
{
        struct tree_job *j = ctx;
        struct bld_build *b = j->st->b;
        _cleanup_(layer_snapshot_freep) struct layer_snapshot *snap = NULL;
        _cleanup_(layer_changes_release) struct layer_changes changes = LAYER_CHANGES_INIT;
        _cleanup_close_ int fd = tree_open(j, err), in = -1;

        if (fd < 0)
                return -1;
        in = openat(b->scratchfd, j->snap, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        if (in < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "open '%s/%s'", b->scratch_path, j->snap);
        if (layer_snapshot_load(in, &snap, err) < 0 ||
            layer_changes_from_snapshot(fd, snap, &changes, err) < 0 ||
            layer_changes_add_parents(&changes, err) < 0)
                return -1;
        return bld_write_layer(b, &changes, j->map_owners, &j->res->empty, &j->res->desc, err);
}

static int extract_one(void *ctx, int unused, struct kiln_error **err)
{
        struct tree_job *j = ctx;
        struct bld_build *b = j->st->b;
        _cleanup_close_ int rootfd = tree_open(j, err), blob = -1;

        if (rootfd < 0)
                return -1;
        blob = layer_store_open_blob(b->o->store, j->created_by, NULL, err);
        if (blob < 0)
                return -1;
        return layer_extract(rootfd, blob, j->created_by, &j->xo, NULL, err);
}

int bld_tree_apply(struct bld_stage *st, const struct bld_layer *layer, struct kiln_error **err)
{
        struct bld_build *b = st->b;
        struct tree_result local = { 0 };
        struct tree_job j;
        int r;

        /* no tree yet: it is made from every layer, this one included, when a step needs it */
        if (!st->tree)
                return 0;
        if (bld_cache_fetch_layers(b, layer, 1, err) < 0)
                return -1;
        job_init(&j, st, &local);
        j.created_by = layer->digest; /* the blob to extract, for extract_one() */
        if (bld_build_has_ranges(b)) {
                r = in_namespace(&j, false, extract_one, err);
        } else {
                j.xo.record_owner = b->isolation != SB_ISOLATION_ROOT;
                r = extract_one(&j, -1, err);
        }
        if (r < 0)
                return kiln_error_wrap(err, "apply cached layer %.19s to the stage's root filesystem", layer->digest);
        return 0;
}

int bld_tree_begin(struct bld_stage *st, bool run, const char **ret_dir, struct kiln_error **err)
{
        struct tree_result local = { 0 };
        struct tree_job j;
        int r;

        if (!st->tree && make_tree(st, err) < 0)
                return -1;
        if (run && !st->stubs_made) {
                job_init(&j, st, &local);
                r = in_namespace(&j, true, tree_make_stubs, err);
                if (r < 0)
                        return -1;
                memcpy(st->stubs, local.stubs, sizeof(st->stubs));
                st->stubs_made = true;
        }
        job_init(&j, st, &local);
        r = in_namespace(&j, false, take_snapshot, err);
        if (r < 0)
                return kiln_error_wrap(err, "snapshot the stage's root filesystem");
        *ret_dir = st->tree;
        return 0;
}

int bld_tree_commit(struct bld_stage *st, const char *created_by, struct bld_cache_entry *made,
                    struct kiln_error **err)
{
        struct bld_build *b = st->b;
        struct tree_result local = { 0 };
        struct tree_job j;
        int r;

        job_init(&j, st, &local);
        j.created_by = created_by;
        r = in_namespace(&j, false, write_layer, err);
        if (r < 0)
                return -1;
        if (made) {
                *made = (struct bld_cache_entry){ .empty = local.empty, .size = local.desc.size, .created = b->created };
                if (!local.empty) {
                        memcpy(made->digest, local.desc.digest, LAYER_DIGEST_SIZE);
                        memcpy(made->diff_id, local.desc.diff_id, LAYER_DIGEST_SIZE);
                        snprintf(made->media_type, sizeof(made->media_type), "%s",
                                 layer_media_type(b->o->compression, b->o->docker));
                }
        }
        if (local.empty) {
                bld_config_add_history(st->config, b->created, created_by, true);
                return 0;
        }
        bld_stage_add_layer(st, local.desc.digest, local.desc.diff_id, local.desc.size,
                            layer_media_type(b->o->compression, b->o->docker));
        bld_config_add_diff_id(st->config, local.desc.diff_id);
        bld_config_add_history(st->config, b->created, created_by, false);
        return 0;
}

/* Whether a later stage copies from this one (COPY --from, RUN --mount from=). */
static bool copied_from(const struct bld_stage *st)
{
        const struct df_graph *g = st->b->o->graph;
        size_t i, e;

        for (i = 0; i < g->n_stages; i++)
                for (e = 0; e < g->stages[i].n_edges; e++)
                        if (g->stages[i].edges[e].stage == st->index &&
                            g->stages[i].edges[e].kind != DF_EDGE_FROM)
                                return true;
        return false;
}

int bld_tree_stage_done(struct bld_stage *st, struct kiln_error **err)
{
        struct tree_result local = { 0 };
        struct tree_job j;
        int r;

        job_init(&j, st, &local);
        if (st->stubs_made) {
                r = in_namespace(&j, false, tree_remove_stubs, err);
                if (r < 0)
                        return -1;
                st->stubs_made = false;
        }
        (void) unlinkat(st->b->scratchfd, j.snap, 0);
        if (!st->tree && copied_from(st))
                return make_tree(st, err);
        return 0;
}
