/*
 * kiln build: the stages the target needs, in waves of the stage graph (a stage runs once
 * everything it needs is built; the stages of a wave run at once, up to --jobs), then the
 * target's config and manifest into the store. Events go to the caller one at a time.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "builder/builder-internal.h"
#include "builder/common/xalloc.h"

/* ---- events ---- */

static double seconds_since(const struct timespec *t0)
{
        struct timespec now;

        clock_gettime(CLOCK_MONOTONIC, &now);
        return (double) (now.tv_sec - t0->tv_sec) + (double) (now.tv_nsec - t0->tv_nsec) / 1e9;
}

static void emit(struct bld_build *b, struct bld_event *ev)
{
        if (b->o->event)
                b->o->event(b->o->event_ctx, ev);
}

void bld_build_event(struct bld_build *b, enum bld_event_kind kind, const char *fmt, ...)
{
        _cleanup_free_ char *msg = NULL;
        struct bld_event ev = { .kind = kind };
        va_list ap;

        va_start(ap, fmt);
        msg = xvasprintf(fmt, ap);
        va_end(ap);
        ev.text = msg;
        ev.len = strlen(msg);
        pthread_mutex_lock(&b->lock);
        emit(b, &ev);
        pthread_mutex_unlock(&b->lock);
}

void bld_step_event(struct bld_step *s, struct bld_event *ev)
{
        struct bld_build *b = s->st->b;

        ev->step = s->number;
        ev->stage = s->st->name;
        ev->index = s->index;
        ev->count = s->count;
        ev->elapsed = seconds_since(&s->start);
        pthread_mutex_lock(&b->lock);
        emit(b, ev);
        pthread_mutex_unlock(&b->lock);
}

void bld_step_start(struct bld_stage *st, struct bld_step *s, unsigned index, const struct df_instr *in,
                    unsigned count)
{
        struct bld_build *b = st->b;
        const struct df_node *node = in->node;
        struct bld_event ev = { .kind = BLD_EVENT_STEP_START, .text = node->original, .len = node->original_len };

        s->st = st;
        s->index = index;
        s->count = count;
        clock_gettime(CLOCK_MONOTONIC, &s->start);
        pthread_mutex_lock(&b->lock);
        s->number = ++b->next_step;
        pthread_mutex_unlock(&b->lock);
        bld_step_event(s, &ev);
}

void bld_step_done(struct bld_step *s)
{
        struct bld_event ev = { .kind = BLD_EVENT_STEP_DONE };

        bld_step_event(s, &ev);
}

void bld_step_cached(struct bld_step *s)
{
        struct bld_event ev = { .kind = BLD_EVENT_STEP_CACHED };

        bld_step_event(s, &ev);
}

void bld_step_miss(struct bld_step *s, const char *why)
{
        struct bld_event ev = { .kind = BLD_EVENT_STEP_MISS, .no_record = !why };

        ev.text = why ? why : "no earlier build of this step";
        ev.len = strlen(ev.text);
        bld_step_event(s, &ev);
}

void bld_step_error(struct bld_step *s, const struct kiln_error *e, const char *tail)
{
        struct bld_build *b = s->st->b;
        _cleanup_free_ char *text = NULL;
        struct bld_event ev = { .kind = BLD_EVENT_STEP_ERROR };

        pthread_mutex_lock(&b->lock);
        b->failed = true;
        pthread_mutex_unlock(&b->lock);
        text = xasprintf("%s%s%s", e ? e->msg : "failed", tail && *tail ? "\n" : "", tail ? tail : "");
        ev.text = text;
        ev.len = strlen(text);
        bld_step_event(s, &ev);
}

bool bld_build_has_ranges(const struct bld_build *b)
{
        return b->isolation == SB_ISOLATION_USERNS && b->env.n_uid_map > 0;
}

bool bld_build_failed(struct bld_build *b)
{
        bool failed;

        pthread_mutex_lock(&b->lock);
        failed = b->failed;
        pthread_mutex_unlock(&b->lock);
        return failed;
}

void bld_map_owners(const struct bld_build *b, struct layer_changes *changes)
{
        size_t i, k;

        if (b->isolation != SB_ISOLATION_USERNS)
                return;
        /* Files in the upper belong to the ids outside the namespace: record the inside ones. */
        for (i = 0; i < changes->n; i++) {
                struct stat *st = &changes->entries[i].st;
                bool uid_done = false, gid_done = false;
                for (k = 0; k < b->env.n_uid_map && !uid_done; k++) {
                        const struct sb_idmap *m = &b->env.uid_map[k];
                        if (st->st_uid >= m->outside && st->st_uid - m->outside < m->count) {
                                st->st_uid = st->st_uid - m->outside + m->inside;
                                uid_done = true;
                        }
                }
                for (k = 0; k < b->env.n_gid_map && !gid_done; k++) {
                        const struct sb_idmap *m = &b->env.gid_map[k];
                        if (st->st_gid >= m->outside && st->st_gid - m->outside < m->count) {
                                st->st_gid = st->st_gid - m->outside + m->inside;
                                gid_done = true;
                        }
                }
                if (b->env.n_uid_map == 0 && st->st_uid == geteuid())
                        st->st_uid = 0;
                if (b->env.n_gid_map == 0 && st->st_gid == getegid())
                        st->st_gid = 0;
        }
}

/* ---- isolation ---- */

/* Where overlay cannot be mounted on the scratch directory, each stage works in a tree of its
 * own (builder/stage-tree.c); the isolation message says so. */
static int choose_overlay(struct bld_build *b, const char *overlay_fail, char **ret_why)
{
        char *why;

        if (!overlay_fail)
                return 0;
        why = xasprintf("%s; overlay cannot be mounted on '%s' (%s): each stage works in a copy of its root "
                        "filesystem, diffed after each step",
                        *ret_why, b->scratch_path, overlay_fail);
        free(*ret_why);
        *ret_why = why;
        b->trees = true;
        return 0;
}

int bld_isolation_auto(const char *dir, enum sb_isolation *ret, char **ret_why, char **ret_overlay_fail,
                       struct kiln_error **err)
{
        _cleanup_free_ char *why = NULL;
        enum sb_isolation probed;

        if (sb_probe_at(dir, &probed, &why, ret_overlay_fail, err) < 0)
                return kiln_error_wrap(err, "no isolation works here (in a container that forbids "
                                            "namespaces, --isolation none runs RUN in its own /, as kaniko)");
        *ret = probed;
        *ret_why = xasprintf("%s: %s", probed == SB_ISOLATION_ROOT ? "root" : "userns", why);
        return 0;
}

const char *bld_auto_none_reason(void)
{
        return geteuid() == 0 ? bld_none_container_reason() : NULL;
}

static int choose_isolation(struct bld_build *b, char **ret_why, struct kiln_error **err)
{
        _cleanup_free_ char *overlay_fail = NULL;

        switch (b->o->isolation) {
        case BLD_ISOLATION_ROOT:
                if (geteuid() != 0)
                        return kiln_error_new(err, KILN_ERR_UNSUPPORTED, "--isolation root needs root; use userns");
                b->isolation = SB_ISOLATION_ROOT;
                *ret_why = xstrdup("root (asked for)");
                if (sb_probe_overlay(b->isolation, b->scratch_path, &overlay_fail, err) < 0)
                        return -1;
                break;
        case BLD_ISOLATION_USERNS:
                b->isolation = SB_ISOLATION_USERNS;
                *ret_why = xstrdup("userns (asked for)");
                if (sb_probe_overlay(b->isolation, b->scratch_path, &overlay_fail, err) < 0)
                        return -1;
                break;
        case BLD_ISOLATION_AUTO:
                if (bld_isolation_auto(b->scratch_path, &b->isolation, ret_why, &overlay_fail, err) == 0)
                        break;
                /* No namespace works. In a container, as root, the kaniko way still does: the
                 * container exists for the build (a CI job, a pod), its / is the image's. */
                if (bld_auto_none_reason()) {
                        _cleanup_free_ char *probe = kiln_error_format(*err), *none_why = NULL;
                        *err = kiln_error_free(*err);
                        if (bld_none_setup(b, &none_why, err) < 0)
                                return -1;
                        *ret_why = xasprintf("%s (auto: no namespaces work here: %s)", none_why, probe);
                        break;
                }
                return -1;
        case BLD_ISOLATION_NONE:
                if (bld_none_setup(b, ret_why, err) < 0)
                        return -1;
                break;
        case _BLD_ISOLATION_MAX:
                return kiln_error_new(err, KILN_ERR_UNSUPPORTED, "unknown isolation");
        }
        if (b->isolation == SB_ISOLATION_USERNS) {
                struct sb_idmap *u = NULL, *g = NULL;
                size_t nu = 0, ng = 0;
                sb_subid_maps(&u, &nu, &g, &ng);
                b->env.uid_map = u;
                b->env.n_uid_map = nu;
                b->env.gid_map = g;
                b->env.n_gid_map = ng;
                b->userxattr = true;
                if (nu == 0 || ng == 0)
                        bld_build_event(b, BLD_EVENT_WARNING,
                                    "no /etc/subuid or /etc/subgid range for this user: only uid and gid 0 exist in "
                                    "RUN, so chown to other ids fails");
        }
        if (b->isolation == SB_ISOLATION_ROOT && !b->none && sb_nested_userns()) {
                b->userxattr = true;
                b->env.nested_userns = true;
        }
        if (!b->none)
                choose_overlay(b, overlay_fail, ret_why);
        b->env.isolation = b->isolation;
        b->env.network = b->o->network == BLD_NETWORK_NONE ? SB_NETWORK_NONE : SB_NETWORK_HOST;
        return 0;
}

/* ---- the image ---- */

/* A layer's media type in the build's format (OCI or Docker), keeping its compression. */
static const char *layer_type_for(const char *mt, bool docker)
{
        int c;

        for (c = 0; c < _LAYER_COMPRESSION_MAX; c++)
                if (strcmp(mt, layer_media_type((enum layer_compression) c, false)) == 0 ||
                    strcmp(mt, layer_media_type((enum layer_compression) c, true)) == 0)
                        return layer_media_type((enum layer_compression) c, docker);
        return mt;
}

static int store_json(struct layer_store *store, json_t *j, char digest[LAYER_DIGEST_SIZE], uint64_t *ret_size,
                      struct kiln_error **err)
{
        _cleanup_free_ char *text = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);

        if (!text)
                return kiln_error_new(err, KILN_ERR_GENERIC, "cannot format JSON");
        *ret_size = strlen(text);
        return layer_store_put(store, text, strlen(text), digest, err);
}

static int store_image(struct bld_build *b, struct bld_stage *st, struct bld_build_result *ret,
                       struct kiln_error **err)
{
        bool docker = b->o->docker;
        _cleanup_json_ json_t *manifest = NULL;
        json_t *layers = json_array();
        uint64_t config_size;
        size_t i;

        if (b->o->source_date_epoch >= 0)
                bld_config_set_created(st->config, b->created);
        else
                bld_config_settle_times(st->config, b->created);
        if (store_json(b->o->store, st->config, ret->config_digest, &config_size, err) < 0) {
                json_decref(layers);
                return kiln_error_wrap(err, "image config");
        }
        for (i = 0; i < st->n_layers; i++)
                json_array_append_new(layers, json_pack("{s:s, s:s, s:I}", "mediaType",
                                                        layer_type_for(st->layers[i].media_type, docker), "digest",
                                                        st->layers[i].digest, "size",
                                                        (json_int_t) st->layers[i].size));
        ret->manifest_media_type = docker ? BLD_DOCKER_MANIFEST : BLD_OCI_MANIFEST;
        manifest = json_pack("{s:i, s:s, s:{s:s, s:s, s:I}, s:o}", "schemaVersion", 2, "mediaType",
                             ret->manifest_media_type, "config", "mediaType",
                             docker ? BLD_DOCKER_CONFIG : BLD_OCI_CONFIG, "digest", ret->config_digest, "size",
                             (json_int_t) config_size, "layers", layers);
        if (store_json(b->o->store, manifest, ret->manifest_digest, &ret->manifest_size, err) < 0)
                return kiln_error_wrap(err, "image manifest");
        return 0;
}

/* ---- stages in waves ---- */

struct wave {
        struct bld_build *b;
        size_t *stages;
        size_t n, next;
        pthread_mutex_t lock;
        struct kiln_error *first_err;
};

static void *wave_worker(void *arg)
{
        struct wave *w = arg;

        for (;;) {
                struct kiln_error *e = NULL;
                size_t i;

                pthread_mutex_lock(&w->lock);
                if (w->next >= w->n) {
                        pthread_mutex_unlock(&w->lock);
                        return NULL;
                }
                i = w->stages[w->next++];
                pthread_mutex_unlock(&w->lock);
                if (bld_stage_run(&w->b->stages[i], &e) == 0 &&
                    (!w->b->none || bld_none_stage_done(&w->b->stages[i], &e) == 0)) {
                        w->b->stages[i].done = true;
                        continue;
                }
                pthread_mutex_lock(&w->lock);
                if (!w->first_err || (w->first_err->kind == KILN_ERR_GENERIC && e && e->kind != KILN_ERR_GENERIC)) {
                        kiln_error_free(w->first_err);
                        w->first_err = TAKE_PTR(e);
                }
                pthread_mutex_unlock(&w->lock);
                pthread_mutex_lock(&w->b->lock);
                w->b->failed = true;
                pthread_mutex_unlock(&w->b->lock);
                kiln_error_free(e);
        }
}

static int run_wave(struct bld_build *b, unsigned wave, struct kiln_error **err)
{
        const struct df_graph *g = b->o->graph;
        struct wave w = { .b = b };
        pthread_t threads[64];
        unsigned jobs = b->o->jobs ? b->o->jobs : (unsigned) sysconf(_SC_NPROCESSORS_ONLN), started = 0, i;
        size_t k;

        /* --isolation none: only one stage can own / at a time */
        if (b->none)
                jobs = 1;

        w.stages = xcalloc(g->n_stages + 1, sizeof(size_t));
        for (k = 0; k < g->n_order; k++)
                if (g->stages[g->order[k]].wave == wave)
                        w.stages[w.n++] = g->order[k];
        if (jobs > w.n)
                jobs = (unsigned) w.n;
        if (jobs > 64)
                jobs = 64;
        pthread_mutex_init(&w.lock, NULL);
        for (i = 1; i < jobs; i++)
                if (pthread_create(&threads[started], NULL, wave_worker, &w) == 0)
                        started++;
        wave_worker(&w);
        for (i = 0; i < started; i++)
                pthread_join(threads[i], NULL);
        pthread_mutex_destroy(&w.lock);
        free(w.stages);
        if (w.first_err) {
                *err = w.first_err;
                return -1;
        }
        return 0;
}

struct scratch_job {
        struct layer_store *store;
        const char *name;
};

static int remove_scratch(void *ctx, int unused, struct kiln_error **err)
{
        struct scratch_job *j = ctx;

        layer_store_scratch_remove(j->store, j->name);
        return 0;
}

static void build_release(struct bld_build *b)
{
        struct scratch_job j = { .store = b->o->store, .name = b->scratch_name };
        size_t i;

        bld_context_sums_close(b);
        for (i = 0; b->stages && i < b->o->graph->n_stages; i++)
                bld_stage_release(&b->stages[i]);
        free(b->stages);
        if (b->scratchfd >= 0)
                close(b->scratchfd);
        /* Steps' files may belong to subordinate ids: removed from inside the namespace. */
        if (b->scratch_name && bld_build_has_ranges(b))
                (void) sb_unshare(&b->env, remove_scratch, &j, NULL);
        if (b->scratch_name)
                layer_store_scratch_remove(b->o->store, b->scratch_name);
        free(b->scratch_name);
        free(b->scratch_path);
        free(b->empty_dir);
        free((void *) b->env.uid_map);
        free((void *) b->env.gid_map);
        b->none = bld_none_free(b->none);
        json_decref(b->remote);
        json_decref(b->remote_blobs);
        pthread_mutex_destroy(&b->fetch_lock);
        pthread_mutex_destroy(&b->lock);
}

int bld_build(const struct bld_build_opts *opts, struct bld_build_result *ret, struct kiln_error **err)
{
        const struct df_graph *g = opts->graph;
        struct bld_build b = { .o = opts, .scratchfd = -1 };
        struct bld_stage *target;
        unsigned wave;
        size_t i;
        int r = -1;

        memset(ret, 0, sizeof(*ret));
        pthread_mutex_init(&b.lock, NULL);
        pthread_mutex_init(&b.fetch_lock, NULL);
        clock_gettime(CLOCK_MONOTONIC, &b.started);
        b.created = opts->source_date_epoch >= 0 ? opts->source_date_epoch : (int64_t) time(NULL);
        /* The scratch directory first: overlay is tried where the steps' directories will be. */
        b.scratchfd = layer_store_scratch(opts->store, &b.scratch_name, err);
        if (b.scratchfd < 0)
                goto out;
        b.scratch_path = xasprintf("%s/.kiln/tmp/%s", layer_store_root(opts->store), b.scratch_name);
        b.empty_dir = xasprintf("%s/empty", b.scratch_path);
        if (mkdirat(b.scratchfd, "empty", 0755) < 0) {
                kiln_error_errno(err, KILN_ERR_IO, "make '%s'", b.empty_dir);
                goto out;
        }
        if (choose_isolation(&b, &ret->isolation_why, err) < 0)
                goto out;
        bld_build_event(&b, BLD_EVENT_INFO, "isolation: %s", ret->isolation_why);
        b.cache = true;
        b.stages = xcalloc(g->n_stages, sizeof(*b.stages));
        for (i = 0; i < g->n_stages; i++) {
                b.stages[i].b = &b;
                b.stages[i].index = i;
                b.stages[i].name = g->stages[i].stage->name ? xstrdup(g->stages[i].stage->name)
                                                           : xasprintf("stage-%zu", i);
        }
        if (b.none && bld_prefetch_images(&b, err) < 0)
                goto out;
        /* blobs a registry holds for the build: --cache-from's, lazily resolved bases' */
        b.remote_blobs = json_object();
        if (b.cache && opts->n_cache_from > 0)
                bld_cache_import(&b);
        for (wave = 1; wave <= g->n_waves; wave++)
                if (run_wave(&b, wave, err) < 0)
                        goto out;
        target = &b.stages[g->target];
        /* the image's layers a --cache-from named and no step needed: fetched now */
        if (bld_cache_fetch_layers(&b, target->layers, target->n_layers, err) < 0)
                goto out;
        bld_cache_inline(&b, target);
        if (store_image(&b, target, ret, err) < 0)
                goto out;
        if (bld_cache_export(&b, target, err) < 0)
                goto out;
        r = 0;
out:
        build_release(&b);
        return r;
}
