/*
 * One stage of a build: its base (scratch, an image from the store or a registry, an earlier
 * stage), then each instruction in order, expanded with the stage's ARG and ENV scope. A step
 * that changes files (RUN, COPY, ADD, WORKDIR) runs over an overlay of the stage's directories
 * with a fresh upper directory; the upper becomes a layer in the store and the next step's top
 * lower directory, so a step costs what it changed, not what the image holds.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/mount.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include "builder/builder-internal.h"
#include "builder/common/fd-util.h"
#include "builder/common/strbuf.h"
#include "builder/common/xalloc.h"

#define TAIL_LINES 10

/* ---- the stage's directories and layers ---- */

static void add_lower(struct bld_stage *st, const char *path)
{
        XGROW(st->lowers, st->n_lowers + 1, st->alloc_lowers);
        st->lowers[st->n_lowers++] = xstrdup(path);
}

static void add_layer(struct bld_stage *st, const char *digest, const char *diff_id, uint64_t size,
                      const char *media_type)
{
        struct bld_layer *l;

        XGROW(st->layers, st->n_layers + 1, st->alloc_layers);
        l = &st->layers[st->n_layers++];
        memcpy(l->digest, digest, LAYER_DIGEST_SIZE);
        memcpy(l->diff_id, diff_id, LAYER_DIGEST_SIZE);
        l->size = size;
        l->media_type = xstrdup(media_type);
}

void bld_stage_add_layer(struct bld_stage *st, const char *digest, const char *diff_id, uint64_t size,
                         const char *media_type)
{
        add_layer(st, digest, diff_id, size, media_type);
}

void bld_stage_release(struct bld_stage *st)
{
        size_t i;

        for (i = 0; i < st->n_layers; i++)
                free(st->layers[i].media_type);
        free(st->layers);
        for (i = 0; i < st->n_lowers; i++)
                free(st->lowers[i]);
        free(st->lowers);
        json_decref(st->config);
        json_decref(st->triggers);
        json_decref(st->key_fields);
        free(st->upstream);
        json_decref(st->chain);
        st->chain = NULL;
        free(st->name);
        free(st->tree);
        st->tree = NULL;
        st->layers = NULL;
        st->lowers = NULL;
        st->config = NULL;
        st->triggers = NULL;
        st->key_fields = NULL;
        st->upstream = NULL;
        st->name = NULL;
}

/* The lower directories top first, as overlay wants them (a borrowed vector to free). */
static const char **lowers_top_first(const struct bld_stage *st)
{
        const char **v = xcalloc(st->n_lowers + 1, sizeof(char *));
        size_t i;

        for (i = 0; i < st->n_lowers; i++)
                v[i] = st->lowers[st->n_lowers - 1 - i];
        return v;
}

/* A fresh upper and work directory for a step: SCRATCH/<stage>-<n>/{upper,work}. */
static int step_dirs(struct bld_stage *st, char **ret_upper, char **ret_work, struct kiln_error **err)
{
        struct bld_build *b = st->b;
        _cleanup_free_ char *name = xasprintf("s%zu-%u", st->index, ++st->n_dirs);
        _cleanup_free_ char *upper = xasprintf("%s/upper", name), *work = xasprintf("%s/work", name);

        if (mkdirat(b->scratchfd, name, 0755) < 0 || mkdirat(b->scratchfd, upper, 0755) < 0 ||
            mkdirat(b->scratchfd, work, 0700) < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "make a step directory in '%s'", b->scratch_path);
        *ret_upper = xasprintf("%s/%s", b->scratch_path, upper);
        *ret_work = xasprintf("%s/%s", b->scratch_path, work);
        return 0;
}

/* The media type a layer written here gets. */
static const char *media_type_of(const struct bld_build *b)
{
        return layer_media_type(b->o->compression, b->o->docker);
}

/* Writing an upper directory's layer. */
struct upper_job {
        struct bld_build *b;
        const char *upper;
        bool map_owners; /* outside the namespace: stat shows outside ids */
        bool fingerprint; /* only hash the changes as a plain tar with every mtime 0 */
};

struct upper_result {
        bool empty;
        struct layer_desc desc;
};

int bld_write_layer(struct bld_build *b, struct layer_changes *changes, bool map_owners, bool *ret_empty,
                    struct layer_desc *ret, struct kiln_error **err)
{
        struct layer_write_opts wo = LAYER_WRITE_OPTS_DEFAULT;
        struct layer_blob_writer *w = NULL;
        struct layer_sink sink;

        *ret_empty = changes->n == 0;
        if (changes->n == 0)
                return 0;
        if (map_owners)
                bld_map_owners(b, changes);
        wo.compression = b->o->compression;
        wo.source_date_epoch = b->o->source_date_epoch;
        if (layer_store_blob_begin(b->o->store, &w, err) < 0)
                return -1;
        sink = layer_blob_sink(w);
        if (layer_write(changes, &wo, &sink, ret, err) < 0) {
                layer_blob_abort(w);
                return -1;
        }
        return layer_blob_commit(w, NULL, ret->digest, &ret->size, err);
}

static int discard(void *ctx, const void *data, size_t len, struct kiln_error **err)
{
        (void) ctx;
        (void) data;
        (void) len;
        (void) err;
        return 0;
}

static int write_upper(void *ctx, void *result, struct kiln_error **err)
{
        struct upper_job *j = ctx;
        struct upper_result *res = result;
        struct bld_build *b = j->b;
        struct layer_changes changes = LAYER_CHANGES_INIT;
        _cleanup_close_ int fd = open(j->upper, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        int r;

        if (fd < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "open '%s'", j->upper);
        if (layer_changes_from_upper(fd, b->userxattr, &changes, err) < 0)
                return -1;
        if (j->fingerprint) {
                struct layer_write_opts wo = LAYER_WRITE_OPTS_DEFAULT;
                struct layer_sink sink = { .write = discard, .ctx = NULL };
                res->empty = changes.n == 0;
                if (j->map_owners)
                        bld_map_owners(b, &changes);
                wo.compression = LAYER_COMPRESSION_NONE;
                wo.source_date_epoch = 0; /* what lands, not when it was touched */
                r = changes.n ? layer_write(&changes, &wo, &sink, &res->desc, err) : 0;
                layer_changes_release(&changes);
                return r;
        }
        r = bld_write_layer(b, &changes, j->map_owners, &res->empty, &res->desc, err);
        layer_changes_release(&changes);
        return r;
}

/*
 * A step's upper directory as a layer in the store, or (fingerprint) only its tar hashed.
 * In a user namespace the upper holds files of ids the caller cannot read (a 0700 home of a
 * mapped user, a mode 000 file): it is read from inside the namespace, as root there, where
 * stat shows the ids the layer records.
 */
static int upper_layer(struct bld_stage *st, const char *upper, bool fingerprint, struct upper_result *ret,
                       struct kiln_error **err)
{
        struct bld_build *b = st->b;
        struct upper_result res = { 0 };
        struct upper_job j = { .b = b, .upper = upper, .map_owners = true, .fingerprint = fingerprint };
        int r;

        if (b->isolation == SB_ISOLATION_USERNS) {
                j.map_owners = false;
                r = sb_unshare_into(&b->env, write_upper, &j, &res, sizeof(res), err);
        } else {
                r = write_upper(&j, &res, err);
        }
        if (r == 0)
                *ret = res;
        return r;
}

/* The upper's layer (none when nothing changed) added to the stage and made its top lower
 * directory; `made` (may be NULL) gets what was written, for a cache entry. */
static int commit_entry(struct bld_stage *st, const char *upper, const char *created_by,
                        struct bld_cache_entry *made, struct kiln_error **err)
{
        struct bld_build *b = st->b;
        struct upper_result out = { 0 }, *res = &out;
        int r = upper_layer(st, upper, false, &out, err);

        if (r == 0 && res->empty) {
                bld_config_add_history(st->config, b->created, created_by, true);
        } else if (r == 0) {
                add_layer(st, res->desc.digest, res->desc.diff_id, res->desc.size, media_type_of(b));
                bld_config_add_diff_id(st->config, res->desc.diff_id);
                bld_config_add_history(st->config, b->created, created_by, false);
                add_lower(st, upper);
        }
        if (r == 0 && made) {
                *made = (struct bld_cache_entry){ .empty = res->empty,
                                                  .size = res->desc.size,
                                                  .created = b->created };
                if (!res->empty) {
                        memcpy(made->digest, res->desc.digest, LAYER_DIGEST_SIZE);
                        memcpy(made->diff_id, res->desc.diff_id, LAYER_DIGEST_SIZE);
                        snprintf(made->media_type, sizeof(made->media_type), "%s", media_type_of(b));
                }
        }
        return r;
}

static void step_line(struct bld_step *s, const char *line, size_t len)
{
        struct bld_event ev = { .kind = BLD_EVENT_STEP_OUTPUT, .text = line, .len = len };

        free(s->tail[s->tail_next % TAIL_LINES]);
        s->tail[s->tail_next++ % TAIL_LINES] = xstrndup(line, len);
        bld_step_event(s, &ev);
}

static void step_output(void *ctx, const char *data, size_t len)
{
        struct bld_step *s = ctx;
        size_t i;

        for (i = 0; i < len; i++) {
                if (data[i] == '\n' || s->line_len == sizeof(s->line)) {
                        step_line(s, s->line, s->line_len);
                        s->line_len = 0;
                        if (data[i] == '\n')
                                continue;
                }
                s->line[s->line_len++] = data[i];
        }
}

static void step_flush(struct bld_step *s)
{
        if (s->line_len) {
                step_line(s, s->line, s->line_len);
                s->line_len = 0;
        }
}

/* The last lines of a step's output, for the error event. Caller frees. */
static char *step_tail(struct bld_step *s)
{
        struct kiln_buf t = KILN_BUF_INIT;
        unsigned i, first = s->tail_next > TAIL_LINES ? s->tail_next - TAIL_LINES : 0;

        for (i = first; i < s->tail_next; i++)
                kiln_buf_addf(&t, NULL, "%s\n", s->tail[i % TAIL_LINES]);
        return kiln_buf_detach(&t, NULL);
}

static void step_release(struct bld_step *s)
{
        unsigned i;

        for (i = 0; i < TAIL_LINES; i++)
                free(s->tail[i]);
}

/* ---- base images ---- */

/* An image from the store (the name as written, then its normalised reference) or, when the
 * store lacks it or --pull was given, from its registry. */
static int resolve_image(struct bld_build *b, const char *ref, const char *platform,
                         struct bld_image_layers *ret, struct kiln_error **err)
{
        struct reg_ref r = { 0 };
        struct layer_ref found = { 0 };
        _cleanup_free_ char *normal = NULL;
        struct reg_pull_opts po = { .platform = platform };
        struct reg_pull_result res;

        if (strncmp(ref, "oci-layout://", 13) == 0)
                return bld_layout_image(b->o->store, ref, platform, ret, err);
        if (reg_ref_parse(ref, &r, err) < 0)
                return -1;
        normal = reg_ref_string(&r);
        reg_ref_release(&r);
        /* --pull pulls once: after bld_prefetch_images() the store has it */
        if (!b->o->pull || b->prefetched) {
                if (layer_store_resolve(b->o->store, ref, &found, NULL) == 0) {
                        layer_ref_release(&found);
                        return bld_image_layers(b->o->store, ref, ret, err);
                }
                if (layer_store_resolve(b->o->store, normal, &found, NULL) == 0) {
                        layer_ref_release(&found);
                        return bld_image_layers(b->o->store, normal, ret, err);
                }
        }
        if (!b->o->registry)
                return kiln_error_new(err, KILN_ERR_NOTFOUND, "image '%s' is not in the store", ref);
        /* With a registry cache the manifest and config are enough to key the steps: the
         * layers come when a step runs on them or the image needs them. */
        if (b->remote)
                return bld_cache_lazy_image(b, ref, platform, ret, err);
        if (reg_pull(b->o->registry, b->o->store, ref, &po, &res, err) < 0)
                return -1;
        return bld_image_layers(b->o->store, normal, ret, err);
}

struct rootfs_job {
        struct layer_store *store;
        const struct bld_image_layers *img;
        struct layer_extract_opts xo;
        char *path;
};

static int make_rootfs(void *ctx, int unused, struct kiln_error **err)
{
        struct rootfs_job *j = ctx;
        int fd = layer_store_rootfs(j->store, (const char(*)[LAYER_DIGEST_SIZE]) j->img->digests,
                                    (const char(*)[LAYER_DIGEST_SIZE]) j->img->diff_ids, j->img->n, &j->xo,
                                    &j->path, err);

        if (fd < 0)
                return -1;
        close(fd);
        return 0;
}

/* The root filesystem directory of an image's layers (the empty directory for none). With
 * subordinate ids it is made inside the build's user namespace, so the files' owners are the
 * ids RUN will see; with a single id, owners are recorded (user.kiln.owner) instead. */
static int image_rootfs(struct bld_build *b, const struct bld_image_layers *img, char **ret_path,
                        struct kiln_error **err)
{
        struct rootfs_job j = { .store = b->o->store, .img = img };

        if (img->n == 0) {
                *ret_path = xstrdup(b->empty_dir);
                return 0;
        }
        {
                /* layers only a --cache-from or a lazily resolved base named: fetched now */
                _cleanup_free_ struct bld_layer *l = xcalloc(img->n, sizeof(*l));
                size_t i;
                for (i = 0; i < img->n; i++) {
                        memcpy(l[i].digest, img->digests[i], LAYER_DIGEST_SIZE);
                        l[i].size = img->sizes ? img->sizes[i] : 0;
                }
                if (bld_cache_fetch_layers(b, l, img->n, err) < 0)
                        return -1;
        }
        if (bld_build_has_ranges(b)) {
                if (sb_unshare(&b->env, make_rootfs, &j, err) < 0)
                        return -1;
                /* the child made it; find its path here */
                j.xo.record_owner = false;
        } else {
                j.xo.record_owner = b->isolation != SB_ISOLATION_ROOT;
        }
        if (make_rootfs(&j, -1, err) < 0)
                return -1;
        *ret_path = j.path;
        return 0;
}

/* ---- the cache ---- */

/* A step's key: its parent's, what it is, the config it sees, and how layers are written. */
static void key_begin(struct bld_stage *st, struct bld_key *k, const char *what)
{
        struct bld_build *b = st->b;
        char buf[128];

        bld_key_init(k, st->key, what);
        bld_key_config(k, st->config);
        snprintf(buf, sizeof(buf), "epoch=%lld compression=%d docker=%d isolation=%d ranges=%d network=%d",
                 (long long) b->o->source_date_epoch, (int) b->o->compression, (int) b->o->docker,
                 (int) b->isolation, (int) bld_build_has_ranges(b), (int) b->env.network);
        bld_key_field(k, "build", buf);
}

/* The key, and its inputs kept for step_lookup() (or the FROM's record) */
static void key_end(struct bld_stage *st, struct bld_key *k, char key[LAYER_DIGEST_SIZE])
{
        bld_key_final(k, key);
        json_decref(st->key_fields);
        st->key_fields = json_incref(k->fields);
        bld_key_release(k);
}

/* Who a step is from one build to the next, for its record: where the build comes from, the
 * stage, and the step's place in it (so an edited instruction compares with its old text) */
static char *step_id(const struct bld_stage *st, unsigned index)
{
        return xasprintf("kiln-step-v1\n%s\n%s\n%u", st->b->o->cache_scope, st->name, index);
}

/* A miss: why, against the step's most recent build, as an event */
static void explain_miss(struct bld_stage *st, struct bld_step *s, const char *id, json_t *fields,
                         const char *prefix)
{
        _cleanup_json_ json_t *old = bld_cache_record_get(st->b, id), *cur = NULL;
        _cleanup_free_ char *why = NULL;
        bool upstream = false;

        if (!old) {
                bld_step_miss(s, NULL);
                return;
        }
        cur = bld_cache_fields_short(fields);
        why = bld_cache_explain(old, cur, prefix, st->upstream, &upstream);
        if (!upstream) {
                /* from here on, an earlier step of the stage is what changed */
                free(st->upstream);
                st->upstream = NULL;
        }
        bld_step_miss(s, why);
}

static bool cache_lookup(struct bld_stage *st, const char *key, struct bld_cache_entry *ret);

/* Looks a step's key up as cache_lookup() does (its inputs from key_end()); a miss says why
 * (`prefix`: the instruction as its history shows it), and either way the step's inputs are
 * recorded as its most recent build. */
static bool step_lookup(struct bld_stage *st, struct bld_step *s, const char *key, const char *prefix,
                         struct bld_cache_entry *ret)
{
        struct bld_build *b = st->b;
        _cleanup_json_ json_t *fields = TAKE_PTR(st->key_fields);
        _cleanup_free_ char *id = NULL;
        bool hit = cache_lookup(st, key, ret);
        bool run_anyway = b->o->no_cache || (b->o->no_cache_stages && b->o->no_cache_stages[st->index]);

        if (!fields || !b->o->cache_scope || !s)
                return hit;
        id = step_id(st, s->index);
        /* --no-cache, --no-cache-filter: every step runs, nothing to explain */
        if (!hit && !run_anyway)
                explain_miss(st, s, id, fields, prefix);
        bld_cache_record_put(b, id, fields);
        return hit;
}

/* After FROM's key: whether the base changed since the stage's last build (st->upstream, said
 * by the misses it causes), and the FROM's record. */
static void from_record(struct bld_stage *st)
{
        struct bld_build *b = st->b;
        _cleanup_json_ json_t *fields = TAKE_PTR(st->key_fields), *old = NULL, *cur = NULL;
        _cleanup_free_ char *id = NULL;

        free(st->upstream);
        st->upstream = NULL;
        if (!fields || !b->o->cache_scope)
                return;
        id = step_id(st, 1);
        old = bld_cache_record_get(b, id);
        if (old) {
                cur = bld_cache_fields_short(fields);
                st->upstream = bld_cache_explain(old, cur, "FROM", NULL, NULL);
        }
        bld_cache_record_put(b, id, fields);
}

/* A cached layer was added: the stage's lower directories are one root filesystem of its
 * layers, made when a step next needs them (an unpacked layer alone would lose its
 * whiteouts). */
static int settle(struct bld_stage *st, struct kiln_error **err)
{
        struct bld_image_layers img = { 0 };
        _cleanup_free_ char *path = NULL;
        size_t i;
        int r;

        if (!st->unsettled)
                return 0;
        /* (image_rootfs() fetches the layers only a registry has) */
        img.n = st->n_layers;
        img.digests = xcalloc(img.n + 1, sizeof(*img.digests));
        img.diff_ids = xcalloc(img.n + 1, sizeof(*img.diff_ids));
        img.sizes = xcalloc(img.n + 1, sizeof(*img.sizes));
        for (i = 0; i < img.n; i++) {
                img.sizes[i] = st->layers[i].size;
                memcpy(img.digests[i], st->layers[i].digest, LAYER_DIGEST_SIZE);
                memcpy(img.diff_ids[i], st->layers[i].diff_id, LAYER_DIGEST_SIZE);
        }
        r = image_rootfs(st->b, &img, &path, err);
        free(img.digests);
        free(img.diff_ids);
        free(img.sizes);
        if (r < 0)
                return -1;
        for (i = 0; i < st->n_lowers; i++)
                free(st->lowers[i]);
        st->n_lowers = 0;
        add_lower(st, path);
        st->unsettled = false;
        return 0;
}

/* Settles an earlier stage a later one builds on or copies from (stages of a wave run at once). */
static int settle_other(struct bld_stage *st, struct kiln_error **err)
{
        int r;

        /* downloads first, outside the build's lock (events take it); that stage is done */
        if (st->unsettled && bld_cache_fetch_layers(st->b, st->layers, st->n_layers, err) < 0)
                return -1;
        pthread_mutex_lock(&st->b->lock);
        r = settle(st, err);
        pthread_mutex_unlock(&st->b->lock);
        return r;
}

/* The entry for a step's key, unless --no-cache or --no-cache-filter rules the stage out. */
static bool cache_lookup(struct bld_stage *st, const char *key, struct bld_cache_entry *ret)
{
        const bool *skip = st->b->o->no_cache_stages;

        if (skip && skip[st->index])
                return false;
        return bld_cache_get(st->b, key, ret);
}

/* Uses the cache entry of `key` for the step: its layer and history, nothing run; the stage's
 * key moves on. */
static int apply_hit(struct bld_stage *st, struct bld_step *s, const char *key, const struct bld_cache_entry *e,
                     const char *created_by, struct kiln_error **err)
{
        struct bld_build *b = st->b;
        /* the time the step first ran: a fully cached rebuild makes the same image */
        int64_t when = e->created >= 0 ? e->created : b->created;

        memmove(st->key, key, LAYER_DIGEST_SIZE);
        bld_cache_chain_add(st, key, e, created_by);
        if (s)
                s->cached = true;
        if (e->empty) {
                bld_config_add_history(st->config, when, created_by, true);
                return 0;
        }
        add_layer(st, e->digest, e->diff_id, e->size, e->media_type);
        bld_config_add_diff_id(st->config, e->diff_id);
        bld_config_add_history(st->config, when, created_by, false);
        /* overlay: the lowers are remade when a step needs them; a tree (or --isolation none's
         * root) gets the layer now */
        if (b->trees)
                return bld_tree_apply(st, &st->layers[st->n_layers - 1], err);
        if (b->none)
                return bld_none_apply(st, &st->layers[st->n_layers - 1], err);
        st->unsettled = true;
        return 0;
}

/* The key of a step whose effect is known only from what it wrote (COPY, ADD, WORKDIR): its
 * upper directory hashed as a tar without mtimes, so the files as they land (path, type,
 * content, link target, mode, owner) are the input. Empty: no key. */
static int result_key(struct bld_stage *st, const char *upper, const char *what, const char *created_by,
                      char key[LAYER_DIGEST_SIZE], struct kiln_error **err)
{
        struct upper_result res = { 0 };
        struct bld_key k;

        key[0] = '\0';
        if (!st->b->cache || !st->key[0])
                return 0;
        if (upper_layer(st, upper, true, &res, err) < 0)
                return -1;
        key_begin(st, &k, what);
        bld_key_field(&k, "instruction", created_by);
        bld_key_field(&k, "files", res.empty ? "empty" : res.desc.diff_id);
        key_end(st, &k, key);
        return 0;
}

/* After a step that ran: its entry, and the stage's key moves on. */
static void cache_record(struct bld_stage *st, const char *key, const struct bld_cache_entry *made,
                         const char *created_by)
{
        if (!key[0]) {
                st->key[0] = '\0';
                return;
        }
        bld_cache_put(st->b, key, made, created_by);
        bld_cache_chain_add(st, key, made, created_by);
        memcpy(st->key, key, LAYER_DIGEST_SIZE);
}

static int from_image(struct bld_stage *st, const char *ref, const char *platform, struct kiln_error **err)
{
        struct bld_build *b = st->b;
        struct bld_image_layers img = { 0 };
        _cleanup_free_ char *path = NULL;
        size_t i;
        int r = -1;

        if (resolve_image(b, ref, platform, &img, err) < 0)
                return -1;
        /* without overlay the stage's tree is made from the layers (stage-tree.c); with the
         * cache, its root filesystem when a step first needs it (settle): not when all hit */
        if (!b->trees && !b->cache && image_rootfs(b, &img, &path, err) < 0)
                goto out;
        st->config = json_incref(img.config);
        for (i = 0; i < img.n; i++)
                add_layer(st, img.digests[i], img.diff_ids[i], img.sizes[i], img.media_types[i]);
        if (path)
                add_lower(st, path);
        st->unsettled = !b->trees && b->cache;
        r = 0;
out:
        bld_image_layers_release(&img);
        return r;
}

/*
 * Pulls (or finds in the store) every image the needed stages name, FROM and COPY --from,
 * before any stage runs. With --isolation none the first stage with RUN empties /, and with it
 * the CA certificates and resolver configuration a later pull would need (kaniko's trap).
 */
int bld_prefetch_images(struct bld_build *b, struct kiln_error **err)
{
        const struct df_graph *g = b->o->graph;
        size_t k, e;

        for (k = 0; k < g->n_order; k++) {
                const struct df_gstage *gs = &g->stages[g->order[k]];
                struct bld_image_layers img = { 0 };

                if (gs->base_kind == DF_BASE_IMAGE || gs->base_kind == DF_BASE_LAYOUT) {
                        if (resolve_image(b, gs->base, gs->platform ? gs->platform : b->o->platform, &img, err) < 0)
                                return kiln_error_wrap(err, "FROM %s", gs->base);
                        bld_image_layers_release(&img);
                }
                for (e = 0; e < gs->n_edges; e++) {
                        const struct df_edge *ed = &gs->edges[e];
                        if (ed->kind != DF_EDGE_COPY || !ed->image)
                                continue;
                        if (resolve_image(b, ed->image, b->o->platform, &img, err) < 0)
                                return kiln_error_wrap(err, "COPY --from=%s", ed->image);
                        bld_image_layers_release(&img);
                }
        }
        b->prefetched = true;
        return 0;
}

static int from_stage(struct bld_stage *st, struct bld_stage *base, struct kiln_error **err)
{
        size_t i;

        /* with the cache, a base whose steps all hit has no root filesystem yet: this stage's is
         * made from the layers when a step of it first needs one (settle) */
        if (!st->b->cache && settle_other(base, err) < 0)
                return -1;
        if (base->chain)
                st->chain = json_deep_copy(base->chain);
        st->config = json_deep_copy(base->config);
        for (i = 0; i < base->n_layers; i++)
                add_layer(st, base->layers[i].digest, base->layers[i].diff_id, base->layers[i].size,
                          base->layers[i].media_type);
        pthread_mutex_lock(&st->b->lock);
        st->unsettled = base->unsettled;
        for (i = 0; !base->unsettled && i < base->n_lowers; i++)
                add_lower(st, base->lowers[i]);
        pthread_mutex_unlock(&st->b->lock);
        memcpy(st->key, base->key, LAYER_DIGEST_SIZE);
        /* a base stage that ran without the cache: this one runs on what it made, which its
         * key does not name */
        st->forced = st->forced || base->forced;
        if (base->forced)
                st->key[0] = '\0';
        return 0;
}

static int step_from(struct bld_stage *st, struct kiln_error **err)
{
        struct bld_build *b = st->b;
        const struct df_gstage *gs = &b->o->graph->stages[st->index];
        const char *platform = gs->platform ? gs->platform : b->o->platform;
        json_t *triggers;

        switch (gs->base_kind) {
        case DF_BASE_SCRATCH:
                st->config = bld_config_new(platform);
                add_lower(st, b->empty_dir);
                break;
        case DF_BASE_STAGE:
                if (from_stage(st, &b->stages[gs->base_stage], err) < 0)
                        return -1;
                break;
        case DF_BASE_IMAGE:
        case DF_BASE_LAYOUT: /* resolve_image() reads the layout */
                if (from_image(st, gs->base, platform, err) < 0)
                        return -1;
                break;
        case _DF_BASE_MAX:
                return kiln_error_new(err, KILN_ERR_INVALID, "FROM %s: unknown kind of base", gs->base);
        }
        bld_config_normalize(st->config);
        bld_config_default_path(st->config);
        st->cmd_inherited = json_object_get(bld_config_run(st->config), "Cmd") != NULL;
        /* The base's ONBUILD triggers run right after FROM and are not inherited (BuildKit
         * clears them); an earlier stage's config holds that stage's own ONBUILDs. */
        triggers = json_object_get(bld_config_run(st->config), "OnBuild");
        if (json_is_array(triggers) && json_array_size(triggers) > 0)
                st->triggers = json_incref(triggers);
        json_object_del(bld_config_run(st->config), "OnBuild");
        /* The root key: the base stage's key, or the base's layers and config */
        if (b->cache && (gs->base_kind != DF_BASE_STAGE || st->key[0])) {
                struct bld_key k;
                _cleanup_buf_ struct kiln_buf layers = KILN_BUF_INIT;
                size_t i;
                bld_key_init(&k, st->key, "FROM");
                for (i = 0; i < st->n_layers; i++)
                        kiln_buf_addf(&layers, NULL, "%s%s %s", i ? "," : "", st->layers[i].digest,
                                      st->layers[i].diff_id);
                bld_key_field(&k, "base.layers", layers.buf);
                bld_key_config(&k, st->config);
                bld_key_field_json(&k, "base.onbuild", triggers);
                key_end(st, &k, st->key);
                from_record(st);
        } else {
                st->key[0] = '\0';
        }
        return 0;
}

/* ---- RUN ---- */

/* The shell of the stage (SHELL, else /bin/sh -c), then `script`. */
static char **shell_argv(json_t *config, const char *script)
{
        json_t *shell = json_object_get(bld_config_run(config), "Shell");
        size_t n = json_is_array(shell) && json_array_size(shell) ? json_array_size(shell) : 0, i;
        char **argv = xcalloc(n + 4, sizeof(char *)); /* NULL-terminated */

        if (n == 0) {
                argv[0] = xstrdup("/bin/sh");
                argv[1] = xstrdup("-c");
                argv[2] = xstrdup(script);
                return argv;
        }
        for (i = 0; i < n; i++)
                argv[i] = xstrdup(json_string_value(json_array_get(shell, i)));
        argv[n] = xstrdup(script);
        return argv;
}

/* Whether a shell command is one heredoc word and nothing else ("<<EOF", "<<-'EOF'", "3<<EOF"),
 * as BuildKit's ParseHeredoc decides. */
static bool bare_heredoc(const char *s)
{
        const char *w;

        while (*s == ' ' || *s == '\t')
                s++;
        while (*s >= '0' && *s <= '9')
                s++;
        if (strncmp(s, "<<", 2) != 0)
                return false;
        s += 2;
        if (*s == '-')
                s++;
        while (*s == ' ' || *s == '\t')
                s++;
        w = s;
        /* one word: no blank outside quotes, no further '<' */
        for (char q = 0; *s; s++) {
                if (q) {
                        if (*s == q)
                                q = 0;
                } else if (*s == '\'' || *s == '"') {
                        q = *s;
                } else if (*s == '<') {
                        return false;
                } else if (*s == ' ' || *s == '\t' || *s == '\n') {
                        const char *t = s;
                        while (*t == ' ' || *t == '\t' || *t == '\n')
                                t++;
                        return *t == '\0' && s > w;
                }
        }
        return s > w;
}

/* A heredoc script with a shebang: BuildKit mounts it as a file and executes it. Here the shell
 * hands it to the interpreter on a descriptor, so nothing is written to the root. */
static char *shebang_script(const char *script)
{
        size_t first = strcspn(script, "\n"), len = strlen(script);
        _cleanup_free_ char *interp = xstrndup(script + 2, first - 2); /* script starts "#!" */

        return xasprintf("exec 3<<'KILN_HEREDOC_SCRIPT_EOF'\n%s%sKILN_HEREDOC_SCRIPT_EOF\nexec %s /dev/fd/3", script,
                         len && script[len - 1] == '\n' ? "" : "\n", interp);
}

static int run_argv(struct bld_stage *st, const struct df_instr *in, char ***ret, struct kiln_error **err)
{
        const struct df_run *run = &in->run;
        const char *script;
        size_t i;

        if (in->json) {
                char **argv = xcalloc(run->argc + 1, sizeof(char *));
                for (i = 0; i < run->argc; i++)
                        argv[i] = xstrdup(run->argv[i].text);
                *ret = argv;
                return 0;
        }
        script = run->argc ? run->argv[0].text : "";
        if (run->n_heredocs == 1 && bare_heredoc(script)) {
                /* RUN <<EOF: the body is the script; with a shebang, its interpreter runs it */
                script = run->heredocs[0].content;
                if (strncmp(script, "#!", 2) == 0) {
                        _cleanup_free_ char *wrapped = shebang_script(script);
                        *ret = shell_argv(st->config, wrapped);
                        return 0;
                }
        } else if (run->n_heredocs) {
                /* RUN cmd <<EOF ...: the shell gets the lines back, bodies and delimiters, and
                 * does the redirections and any expansion itself (BuildKit's dispatchRun) */
                struct kiln_buf full = KILN_BUF_INIT;
                kiln_buf_addf(&full, NULL, "%s", script);
                for (i = 0; i < run->n_heredocs; i++)
                        kiln_buf_addf(&full, NULL, "\n%.*s%s", (int) run->heredocs[i].content_len,
                                      run->heredocs[i].content, run->heredocs[i].name);
                *ret = shell_argv(st->config, full.buf);
                kiln_buf_release(&full);
                return 0;
        }
        *ret = shell_argv(st->config, script);
        return 0;
}

static char **run_env(struct df_eval *ev)
{
        struct df_vars vars = DF_VARS_INIT;
        char **envp;
        size_t i;

        df_eval_run_vars(ev, &vars);
        envp = xcalloc(vars.n + 1, sizeof(char *));
        for (i = 0; i < vars.n; i++)
                envp[i] = xasprintf("%s=%s", vars.items[i].name, vars.items[i].value);
        df_vars_release(&vars);
        return envp;
}

/* "RUN /bin/sh -c make" as history shows it: the command, never the build args' values. */
static char *run_history(char *const *argv)
{
        struct kiln_buf h = KILN_BUF_INIT;
        size_t i;

        kiln_buf_adds(&h, "RUN", NULL);
        for (i = 0; argv[i]; i++)
                kiln_buf_addf(&h, NULL, " %s", argv[i]);
        return kiln_buf_detach(&h, NULL);
}

static int step_run(struct bld_stage *st, struct bld_step *s, struct df_eval *ev, const struct df_instr *in,
                    struct kiln_error **err)
{
        struct bld_build *b = st->b;
        _cleanup_(strv_freep) char **argv = NULL, **envp = NULL;
        _cleanup_free_ char *upper = NULL, *work = NULL, *history = NULL;
        _cleanup_free_ const char **lowers = NULL;
        struct sb_run run = { 0 };
        int status = 0;

        char key[LAYER_DIGEST_SIZE] = "";
        struct bld_cache_entry made;

        if (run_argv(st, in, &argv, err) < 0)
                return -1;
        envp = run_env(ev);
        /* RUN --mount reads what kiln does not key yet: not cached, nor anything after it */
        if (b->cache && st->key[0] && in->run.n_mounts == 0) {
                struct bld_key k;
                json_t *args = json_array();
                size_t i;
                key_begin(st, &k, "RUN");
                for (i = 0; argv[i]; i++)
                        json_array_append_new(args, json_string(argv[i]));
                bld_key_field_json(&k, "argv", args);
                json_decref(args);
                for (i = 0; envp[i]; i++) {
                        const char *eq = strchr(envp[i], '=');
                        _cleanup_free_ char *name =
                                xasprintf("env.%.*s", (int) (eq ? eq - envp[i] : (ptrdiff_t) strlen(envp[i])),
                                          envp[i]);
                        bld_key_field(&k, name, eq ? eq + 1 : "");
                }
                bld_key_field(&k, "network", in->run.network.text);
                bld_key_field(&k, "security", in->run.security.text);
                key_end(st, &k, key);
                if (step_lookup(st, s, key, "RUN", &made)) {
                        history = run_history(argv);
                        return apply_hit(st, s, key, &made, history, err);
                }
        }
        if (!b->trees && !b->none && settle(st, err) < 0)
                return -1;
        if (b->trees) {
                if (bld_tree_begin(st, true, &run.root.dir, err) < 0)
                        return -1;
        } else {
                if (step_dirs(st, &upper, &work, err) < 0)
                        return -1;
                lowers = lowers_top_first(st);
                run.root = (struct sb_rootfs){
                        .lowers = lowers, .n_lowers = st->n_lowers, .upper = upper, .work = work
                };
        }
        run.env = b->env;
        if (in->run.network.text && strcmp(in->run.network.text, "none") == 0)
                run.env.network = SB_NETWORK_NONE;
        run.argv = (const char *const *) argv;
        run.envp = (const char *const *) envp;
        run.cwd = bld_config_string(st->config, "WorkingDir");
        if (!run.cwd || !*run.cwd)
                run.cwd = "/";
        run.user = bld_config_string(st->config, "User");
        run.output = step_output;
        run.output_ctx = s;
        if ((b->none ? bld_none_run(st, &run, &status, err) : sb_run(&run, &status, err)) < 0)
                return -1;
        step_flush(s);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
                _cleanup_free_ char *shown = run_history(argv);
                if (WIFSIGNALED(status))
                        return kiln_error_new(err, KILN_ERR_CHILD,
                                              "process \"%s\" did not complete successfully: killed by signal %d",
                                              shown + 4, WTERMSIG(status));
                return kiln_error_new(err, KILN_ERR_CHILD,
                                      "process \"%s\" did not complete successfully: exit code: %d", shown + 4,
                                      WEXITSTATUS(status));
        }
        history = run_history(argv);
        if (b->trees) {
                if (bld_tree_commit(st, history, &made, err) < 0)
                        return -1;
                if (b->cache)
                        cache_record(st, key, &made, history);
                return 0;
        }
        if (b->none ? bld_none_commit(st, history, &made, err) < 0 : commit_entry(st, upper, history, &made, err) < 0)
                return -1;
        if (b->cache)
                cache_record(st, key, &made, history);
        return 0;
}

/* COPY, ADD, WORKDIR after their work: keyed by what they wrote; a hit takes the cached
 * layer (same files, earlier mtimes) so later steps' keys and lowers match it. */
static int commit_cached(struct bld_stage *st, struct bld_step *s, const char *upper, const char *what,
                         const char *history, struct kiln_error **err)
{
        char key[LAYER_DIGEST_SIZE];
        struct bld_cache_entry made;

        if (result_key(st, upper, what, history, key, err) < 0)
                return -1;
        if (key[0] && step_lookup(st, s, key, history, &made))
                return apply_hit(st, s, key, &made, history, err);
        if (commit_entry(st, upper, history, &made, err) < 0)
                return -1;
        if (st->b->cache)
                cache_record(st, key, &made, history);
        return 0;
}

/* ---- COPY, ADD, WORKDIR: work in the merged view, in the sandbox's namespaces ---- */

/* A read-only overlay of `lowers` (top first), as a detached mount: an O_PATH-able root fd. */
static int mount_readonly(const char *const *lowers, size_t n, bool userxattr, struct kiln_error **err)
{
        _cleanup_close_ int fs = -1;
        size_t i;
        int mnt;

        if (n == 1) {
                /* kiln's own directory in the store: a plain open */
                int fd = open(lowers[0], O_PATH | O_DIRECTORY | O_CLOEXEC);
                if (fd < 0)
                        return kiln_error_errno(err, KILN_ERR_IO, "open '%s'", lowers[0]);
                return fd;
        }
        fs = (int) syscall(SYS_fsopen, "overlay", FSOPEN_CLOEXEC);
        if (fs < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "fsopen overlay");
        for (i = 0; i < n; i++)
                if (syscall(SYS_fsconfig, fs, FSCONFIG_SET_STRING, "lowerdir+", lowers[i], 0) < 0)
                        return kiln_error_errno(err, KILN_ERR_IO, "overlay lowerdir+ '%s'", lowers[i]);
        if (userxattr && syscall(SYS_fsconfig, fs, FSCONFIG_SET_FLAG, "userxattr", NULL, 0) < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "overlay userxattr");
        if (syscall(SYS_fsconfig, fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "mount a read-only overlay");
        mnt = (int) syscall(SYS_fsmount, fs, FSMOUNT_CLOEXEC, MOUNT_ATTR_RDONLY);
        if (mnt < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "fsmount overlay");
        return mnt;
}

struct copy_job {
        struct bld_stage *st;
        struct cp_opts opts;
        int context_fd;
        const struct df_ignore *ignore;
        const char **src_lowers; /* top first; NULL: the context */
        size_t n_src_lowers;
        const char *chown;
};

/* The owner BuildKit gives what COPY --chown and WORKDIR make (llb.WithUser, the file op's
 * readUser): a name takes its passwd entry's uid and gid, a bare numeric uid is also the gid
 * (`--chown=1001` is 1001:1001 even when passwd gives 1001 another group), a group replaces it. */
static int owner_resolve(int rootfd, const char *spec, uint32_t *uid, uint32_t *gid,
                         struct kiln_error **err)
{
        if (bld_user_resolve(rootfd, spec, uid, gid, NULL, NULL, err) < 0)
                return -1;
        if (!strchr(spec, ':') && strspn(spec, "0123456789") == strlen(spec))
                *gid = *uid;
        return 0;
}

static int copy_in_sandbox(void *ctx, int rootfd, struct kiln_error **err)
{
        struct copy_job *j = ctx;
        struct cp_source src = { .rootfd = j->context_fd, .ignore = j->ignore };
        _cleanup_close_ int srcfd = -1;

        if (j->chown && *j->chown) {
                if (owner_resolve(rootfd, j->chown, &j->opts.uid, &j->opts.gid, err) < 0)
                        return -1;
                j->opts.chown = true;
        }
        if (j->src_lowers) {
                srcfd = mount_readonly(j->src_lowers, j->n_src_lowers, j->st->b->userxattr, err);
                if (srcfd < 0)
                        return -1;
                src.rootfd = srcfd;
                src.ignore = NULL;
                src.keep_owners = true;
        }
        return cp_copy(&src, rootfd, &j->opts, err);
}

/* ADD's downloads, for one step. */
struct fetches {
        struct reg_fetched *files;
        struct cp_fetched *srcs;
        char **names;
        size_t n;
};

static void fetches_release(struct fetches *f)
{
        size_t i;

        for (i = 0; i < f->n; i++) {
                reg_fetched_release(&f->files[i]);
                free(f->names[i]);
        }
        free(f->files);
        free(f->srcs);
        free(f->names);
        *f = (struct fetches){ 0 };
}

/* Checks COPY's and ADD's sources for URLs and downloads ADD's into the scratch directory
 * (BuildKit's dispatchCopy: COPY takes no URL, ADD of a git repository is not done here,
 * --checksum only goes with URLs). */
static int fetch_sources(struct bld_stage *st, const struct df_instr *in, struct fetches *ret,
                         struct kiln_error **err)
{
        const struct df_copy *c = &in->copy;
        const char *checksum = c->checksum.text && *c->checksum.text ? c->checksum.text : NULL;
        struct reg_fetched *f;
        size_t i;

        for (i = 0; i < c->n_srcs; i++) {
                const char *src = c->srcs[i].text;
                _cleanup_free_ char *shown = NULL;

                if (in->kind == DF_INSTR_COPY) {
                        if (reg_url_is_http(src))
                                return kiln_error_new(err, KILN_ERR_INVALID, "COPY %s: source can't be a URL for COPY",
                                                      shown = reg_url_redacted(src));
                        continue;
                }
                if (reg_url_is_git(src))
                        return kiln_error_new(err, KILN_ERR_UNSUPPORTED, "ADD %s: git repositories are not supported",
                                              shown = reg_url_redacted(src));
                if (!reg_url_is_http(src)) {
                        if (checksum)
                                return kiln_error_new(err, KILN_ERR_INVALID,
                                                      "ADD %s: checksum can't be specified for "
                                                      "non-HTTP(S) sources", src);
                        continue;
                }
                shown = reg_url_redacted(src);
                if (c->unpack == 1)
                        return kiln_error_new(err, KILN_ERR_UNSUPPORTED,
                                              "ADD %s: --unpack of a URL is not supported yet", shown);
                if (!ret->files) {
                        ret->files = xcalloc(c->n_srcs, sizeof(*ret->files));
                        ret->srcs = xcalloc(c->n_srcs, sizeof(*ret->srcs));
                        ret->names = xcalloc(c->n_srcs, sizeof(*ret->names));
                }
                f = &ret->files[ret->n];
                if (reg_fetch_url(src, st->b->scratchfd, checksum, f, err) < 0)
                        return kiln_error_wrap(err, "ADD %s", shown);
                ret->names[ret->n] = reg_url_file_name(src);
                ret->srcs[ret->n] = (struct cp_fetched){
                        .src = src,
                        .name = ret->names[ret->n],
                        .fd = f->fd,
                        .has_mtime = f->has_mtime,
                        .mtime = f->mtime,
                };
                ret->n++;
        }
        return 0;
}

/* A source "<<EOF" (or "<<-EOF", "<<'EOF'") names a heredoc: its name, else the source. */
static const char *heredoc_source(const struct df_copy *c, const char *src)
{
        const char *p = src;
        size_t i, n;

        if (strncmp(p, "<<", 2) != 0)
                return src;
        p += 2;
        if (*p == '-')
                p++;
        if (*p == '"' || *p == '\'')
                p++;
        n = strcspn(p, "\"'");
        for (i = 0; i < c->n_heredocs; i++)
                if (strlen(c->heredocs[i].name) == n && strncmp(c->heredocs[i].name, p, n) == 0)
                        return c->heredocs[i].name;
        return src;
}

static char *copy_history(const struct df_instr *in)
{
        struct kiln_buf h = KILN_BUF_INIT;
        size_t i;

        kiln_buf_adds(&h, df_instr_name(in->kind), NULL);
        if (in->copy.from.text)
                kiln_buf_addf(&h, NULL, " --from=%s", in->copy.from.text);
        for (i = 0; i < in->copy.n_srcs; i++)
                kiln_buf_addf(&h, NULL, " %s", in->copy.srcs[i].text);
        kiln_buf_addf(&h, NULL, " %s", in->copy.dest.text);
        return kiln_buf_detach(&h, NULL);
}

/* The graph's edge of a COPY --from: an earlier stage or an image; NULL when it has none. */
static const struct df_edge *copy_edge(struct bld_stage *st, const struct df_instr *in)
{
        const struct df_gstage *gs = &st->b->o->graph->stages[st->index];
        size_t i;

        for (i = 0; i < gs->n_edges; i++)
                if (gs->edges[i].instr->node == in->node && gs->edges[i].kind == DF_EDGE_COPY)
                        return &gs->edges[i];
        return NULL;
}

/* COPY --from: an earlier stage by name or index, else an image (`img`, unless the key has
 * resolved it already). */
static int copy_source(struct bld_stage *st, const struct df_instr *in, struct bld_image_layers *img,
                       const char ***ret_lowers, size_t *ret_n, char **ret_rootfs, struct kiln_error **err)
{
        struct bld_build *b = st->b;
        const struct df_edge *e = copy_edge(st, in);

        if (!e)
                return kiln_error_new(err, KILN_ERR_INVALID,
                                      "COPY --from=%s: the stage graph has no such source",
                                      in->copy.from.text);
        if (e->stage != SIZE_MAX && b->trees) {
                /* its tree, final since that stage is done (bld_tree_stage_done) */
                if (!b->stages[e->stage].tree)
                        return kiln_error_new(err, KILN_ERR_INVALID,
                                              "COPY --from=%s: the stage has no tree",
                                              in->copy.from.text);
                *ret_lowers = xcalloc(2, sizeof(char *));
                (*ret_lowers)[0] = b->stages[e->stage].tree;
                *ret_n = 1;
                return 0;
        }
        if (e->stage != SIZE_MAX) {
                if (settle_other(&b->stages[e->stage], err) < 0)
                        return -1;
                *ret_lowers = lowers_top_first(&b->stages[e->stage]);
                *ret_n = b->stages[e->stage].n_lowers;
                return 0;
        }
        if ((!img->config && resolve_image(b, e->image, b->o->platform, img, err) < 0) ||
            image_rootfs(b, img, ret_rootfs, err) < 0)
                return -1;
        *ret_lowers = xcalloc(2, sizeof(char *));
        (*ret_lowers)[0] = *ret_rootfs;
        *ret_n = 1;
        return 0;
}

/* The instruction as far as it decides what lands, given the sources: every flag that
 * changes the result, the sources as written (expanded) and the destination. */
static void key_instruction(struct bld_key *k, const struct df_instr *in, const struct cp_opts *o)
{
        const struct df_copy *c = &in->copy;
        json_t *j = json_object(), *srcs = json_array(), *excludes = json_array();
        size_t i;

        for (i = 0; i < o->n_srcs; i++)
                json_array_append_new(srcs, json_string(o->srcs[i]));
        for (i = 0; i < o->n_excludes; i++)
                json_array_append_new(excludes, json_string(o->excludes[i]));
        json_object_set_new(j, "srcs", srcs);
        json_object_set_new(j, "dest", json_string(o->dest ? o->dest : ""));
        json_object_set_new(j, "excludes", excludes);
        json_object_set_new(j, "from", c->from.text ? json_string(c->from.text) : json_null());
        json_object_set_new(j, "chown", c->chown.text ? json_string(c->chown.text) : json_null());
        json_object_set_new(j, "chmod", c->chmod.text ? json_string(c->chmod.text) : json_null());
        json_object_set_new(j, "checksum",
                            c->checksum.text ? json_string(c->checksum.text) : json_null());
        json_object_set_new(j, "link", json_boolean(c->link));
        json_object_set_new(j, "parents", json_boolean(c->parents));
        json_object_set_new(j, "keep_git_dir", json_boolean(c->keep_git_dir));
        json_object_set_new(j, "unpack", json_integer(c->unpack));
        json_object_set_new(j, "add", json_boolean(o->add));
        bld_key_field_json(k, "instruction", j);
        json_decref(j);
}

/*
 * The context's files may change between the key and the copy: the entry recorded under a key
 * must hold what the key says. The key's walk notes every entry's stat, and a second walk after
 * the copy (stat only) must find the same; a file changed too recently for its stat to prove
 * anything (as context-hash.c's racily clean files) is read again and its digest compared.
 */
struct source_check {
        char stats[LAYER_DIGEST_SIZE]; /* the entries' stats; "" when not from the context */
        int64_t racy_after;            /* ns: files changed since then are read again */
};

struct key_walk {
        struct bld_stage *st;
        struct bld_key *k; /* NULL: only the stats (the check after the copy) */
        struct layer_sha256 *stats;
        int64_t racy_after;
};

static int64_t ns_of(const struct timespec *t)
{
        return (int64_t) t->tv_sec * 1000000000 + t->tv_nsec;
}

static void stats_add(struct layer_sha256 *h, const void *data, size_t len)
{
        uint64_t n = len;

        layer_sha256_update(h, &n, sizeof(n));
        layer_sha256_update(h, data, len);
}

/* Notes an entry's stat for the check, and a racily changed file's digest (read if NULL). */
static int note_stat(struct key_walk *w, const struct cp_entry *e, const char *digest,
                     struct kiln_error **err)
{
        const struct stat *st = e->st;
        int64_t newest = ns_of(&st->st_mtim) > ns_of(&st->st_ctim) ? ns_of(&st->st_mtim)
                                                                   : ns_of(&st->st_ctim);
        char buf[256], read_digest[LAYER_DIGEST_SIZE];
        int n;

        if (e->is_inline)
                return 0;
        stats_add(w->stats, e->path, strlen(e->path));
        n = snprintf(buf, sizeof(buf), "%d %o %llu %llu %lld %lld %lld", (int) e->parent,
                     (unsigned) st->st_mode, (unsigned long long) st->st_dev,
                     (unsigned long long) st->st_ino, (long long) st->st_size,
                     (long long) ns_of(&st->st_mtim), (long long) ns_of(&st->st_ctim));
        stats_add(w->stats, buf, (size_t) n);
        if (S_ISREG(st->st_mode) && !e->hardlink && !e->parent && newest >= w->racy_after) {
                if (!digest) {
                        if (bld_context_hash_file(e, read_digest, err) < 0)
                                return -1;
                        digest = read_digest;
                }
                stats_add(w->stats, digest, strlen(digest));
        }
        return 0;
}

/* One entry of COPY's sources as a key field: what it is and how it lands, never its times. */
static int key_entry(void *ctx, const struct cp_entry *e, struct kiln_error **err)
{
        struct key_walk *w = ctx;
        mode_t type = e->st->st_mode & S_IFMT;
        char digest[LAYER_DIGEST_SIZE] = "";
        _cleanup_free_ char *name = NULL, *value = NULL;

        if (!w->k)
                return note_stat(w, e, NULL, err);
        if (e->top && !e->parent) {
                /* which source matched what: the names the entries get at the destination */
                _cleanup_free_ char *item = xasprintf("item:%zu:%s", e->source, e->top);
                _cleanup_free_ char *what = xasprintf(
                        "%s%s kept_from=%zu", e->is_inline ? "inline " : "", e->path, e->kept_from);
                bld_key_field(w->k, item, what);
        }
        if (e->is_inline) {
                _cleanup_(layer_sha256_freep) struct layer_sha256 *h = layer_sha256_new();
                layer_sha256_update(h, e->data, e->len);
                layer_sha256_final(h, digest);
                name = xasprintf("heredoc:%s", e->path);
                value = xasprintf("file %04o %s", (unsigned) e->mode, digest);
                bld_key_field(w->k, name, value);
                return 0;
        }
        name = xasprintf("%s:%s", e->parent ? "parent" : "file", e->path[0] ? e->path : ".");
        switch (type) {
        case S_IFDIR:
                value = xasprintf("dir %04o", (unsigned) e->mode);
                break;
        case S_IFREG:
                if (e->hardlink) {
                        value = xasprintf("file %04o hardlink %s", (unsigned) e->mode, e->hardlink);
                        break;
                }
                if (bld_context_digest(w->st->b, e, digest, err) < 0)
                        return -1;
                value = xasprintf("file %04o %s", (unsigned) e->mode, digest);
                break;
        case S_IFLNK:
                value = xasprintf("symlink %s", e->link);
                break;
        case S_IFIFO:
                value = xasprintf("fifo %04o", (unsigned) e->mode);
                break;
        case S_IFCHR:
        case S_IFBLK:
                value = xasprintf("%s %04o %u:%u", type == S_IFCHR ? "chr" : "blk",
                                  (unsigned) e->mode, major(e->st->st_rdev), minor(e->st->st_rdev));
                break;
        default:
                return kiln_error_new(err, KILN_ERR_UNSUPPORTED, "'/%s': an unexpected type",
                                      e->path);
        }
        bld_key_field(w->k, name, value);
        return note_stat(w, e, digest[0] ? digest : NULL, err);
}

static void context_source(struct bld_build *b, struct cp_source *ret)
{
        *ret = (struct cp_source){ .rootfd = b->o->context_fd, .ignore = b->o->ignore };
}

/* After the copy: whether the context's entries are still those the key was made of. */
static bool sources_unchanged(struct bld_stage *st, const struct cp_opts *o,
                              const struct source_check *check)
{
        _cleanup_(kiln_error_freep) struct kiln_error *werr = NULL;
        struct key_walk w = { .st = st, .racy_after = check->racy_after };
        char stats[LAYER_DIGEST_SIZE];
        struct cp_source src;
        int r;

        if (!check->stats[0])
                return true;
        context_source(st->b, &src);
        w.stats = layer_sha256_new();
        r = cp_walk(&src, o, key_entry, &w, &werr);
        layer_sha256_final(w.stats, stats);
        layer_sha256_free(w.stats);
        return r == 0 && strcmp(stats, check->stats) == 0;
}

/*
 * COPY's and ADD's key from their sources, before anything is copied: the instruction and,
 * from the context, every entry it would copy (the type, the mode it lands with, the content's
 * digest or the link's target; owners follow from --chown); from a stage, that stage's key;
 * from an image, its layers. No key (key[0] == '\0') when a source cannot be keyed: a download,
 * a stage without a key, or sources that cannot be listed (the copy then raises the error).
 * `img` gets an image --from names, for the copy; an image that cannot be found is the error.
 * `check` gets what sources_unchanged() needs.
 */
static int source_key(struct bld_stage *st, const struct df_instr *in, const struct cp_opts *o,
                      struct bld_image_layers *img, char key[LAYER_DIGEST_SIZE],
                      struct source_check *check, struct kiln_error **err)
{
        struct bld_build *b = st->b;
        struct bld_key k;
        bool ok = true;

        key[0] = '\0';
        check->stats[0] = '\0';
        if (!b->cache || !st->key[0] || o->n_fetched)
                return 0;
        key_begin(st, &k, df_instr_name(in->kind));
        key_instruction(&k, in, o);
        if (in->copy.from.text) {
                const struct df_edge *e = copy_edge(st, in);
                if (!e) {
                        ok = false;
                } else if (e->stage != SIZE_MAX) {
                        /* a stage that ran without the cache: keyed by what is copied instead */
                        ok = b->stages[e->stage].key[0] != '\0' && !b->stages[e->stage].forced;
                        bld_key_field(&k, "from.stage", b->stages[e->stage].key);
                } else if (resolve_image(b, e->image, b->o->platform, img, err) < 0) {
                        bld_key_release(&k);
                        return -1;
                } else {
                        _cleanup_buf_ struct kiln_buf layers = KILN_BUF_INIT;
                        size_t i;
                        for (i = 0; i < img->n; i++)
                                kiln_buf_addf(&layers, NULL, "%s%s %s", i ? "," : "",
                                              img->digests[i], img->diff_ids[i]);
                        bld_key_field(&k, "from.image", layers.buf);
                }
        } else {
                struct key_walk w = { .st = st, .k = &k };
                _cleanup_(kiln_error_freep) struct kiln_error *werr = NULL;
                struct cp_source src;
                struct timespec now;
                clock_gettime(CLOCK_REALTIME, &now);
                /* the margin context-hash.c gives racily clean files, and the clock's tick */
                w.racy_after = check->racy_after = ns_of(&now) - (int64_t) 3 * 1000000000;
                w.stats = layer_sha256_new();
                context_source(b, &src);
                /* a source that cannot be listed is not keyed: the copy says what is wrong */
                ok = cp_walk(&src, o, key_entry, &w, &werr) == 0;
                layer_sha256_final(w.stats, check->stats);
                layer_sha256_free(w.stats);
        }
        if (ok)
                key_end(st, &k, key);
        else
                bld_key_release(&k);
        return 0;
}

static int step_copy(struct bld_stage *st, struct bld_step *s, const struct df_instr *in, struct kiln_error **err)
{
        struct bld_build *b = st->b;
        const struct df_copy *c = &in->copy;
        struct copy_job j = { .st = st, .context_fd = b->o->context_fd, .ignore = b->o->ignore };
        struct bld_image_layers img = { 0 };
        _cleanup_free_ char *upper = NULL, *work = NULL, *history = NULL, *rootfs = NULL;
        _cleanup_free_ const char **lowers = NULL, **srcs = NULL, **excludes = NULL, **names = NULL,
                                  **datas = NULL;
        _cleanup_free_ size_t *lens = NULL;
        _cleanup_(strv_freep) char **inline_bodies = NULL;
        _cleanup_(fetches_release) struct fetches fetched = { 0 };
        struct sb_rootfs root;
        char key[LAYER_DIGEST_SIZE] = "";
        struct source_check check = { .stats = "" };
        struct bld_cache_entry made;
        size_t i;
        int r = -1;

        if (fetch_sources(st, in, &fetched, err) < 0)
                return -1;
        srcs = xcalloc(c->n_srcs + 1, sizeof(char *));
        for (i = 0; i < c->n_srcs; i++)
                srcs[i] = heredoc_source(c, c->srcs[i].text);
        excludes = xcalloc(c->n_excludes + 1, sizeof(char *));
        for (i = 0; i < c->n_excludes; i++)
                excludes[i] = c->excludes[i].text;
        names = xcalloc(c->n_heredocs + 1, sizeof(char *));
        datas = xcalloc(c->n_heredocs + 1, sizeof(char *));
        lens = xcalloc(c->n_heredocs + 1, sizeof(size_t));
        for (i = 0; i < c->n_heredocs; i++) {
                names[i] = c->heredocs[i].name;
                datas[i] = c->heredocs[i].content;
                lens[i] = c->heredocs[i].content_len;
        }
        j.opts = (struct cp_opts){
                .srcs = srcs, .n_srcs = c->n_srcs, .dest = c->dest.text,
                .workdir = bld_config_string(st->config, "WorkingDir"),
                .chmod = c->chmod.text != NULL, .chmod_spec = c->chmod.text,
                .excludes = excludes, .n_excludes = c->n_excludes, .parents = c->parents,
                .inline_names = names, .inline_data = datas, .inline_len = lens, .n_inline = c->n_heredocs,
                .fetched = fetched.srcs, .n_fetched = fetched.n,
                .add = in->kind == DF_INSTR_ADD && c->unpack != 0,
                .only_root = b->isolation == SB_ISOLATION_USERNS && b->env.n_uid_map == 0,
        };
        if (!j.opts.workdir || !*j.opts.workdir)
                j.opts.workdir = "/";
        j.chown = c->chown.text;
        history = copy_history(in);
        if (b->cache) {
                if (source_key(st, in, &j.opts, &img, key, &check, err) < 0)
                        goto out;
                if (key[0] && step_lookup(st, s, key, history, &made)) {
                        /* nothing copied, and no root filesystem made for it */
                        r = apply_hit(st, s, key, &made, history, err);
                        goto out;
                }
        }
        if (c->from.text && copy_source(st, in, &img, &j.src_lowers, &j.n_src_lowers, &rootfs, err) < 0)
                goto out;
        if (b->none || b->trees) {
                if (b->none) {
                        if (bld_none_call(st, copy_in_sandbox, &j, err) < 0 ||
                            bld_none_commit(st, history, &made, err) < 0)
                                goto out;
                } else {
                        root = (struct sb_rootfs){ 0 };
                        if (bld_tree_begin(st, false, &root.dir, err) < 0 ||
                            sb_call(&root, &b->env, copy_in_sandbox, &j, err) < 0 ||
                            bld_tree_commit(st, history, &made, err) < 0)
                                goto out;
                }
                r = 0;
                if (key[0] && sources_unchanged(st, &j.opts, &check))
                        cache_record(st, key, &made, history);
                else /* no upper directory to key by here: nothing after this is cached */
                        st->key[0] = '\0';
                goto out;
        }
        if (settle(st, err) < 0 || step_dirs(st, &upper, &work, err) < 0)
                goto out;
        lowers = lowers_top_first(st);
        root = (struct sb_rootfs){ .lowers = lowers, .n_lowers = st->n_lowers, .upper = upper, .work = work };
        if (sb_call(&root, &b->env, copy_in_sandbox, &j, err) < 0)
                goto out;
        if (key[0] && !sources_unchanged(st, &j.opts, &check))
                key[0] = '\0'; /* what was copied may not be what the key says */
        if (!key[0]) {
                /* not keyed by its sources: keyed by what it wrote */
                r = commit_cached(st, s, upper, df_instr_name(in->kind), history, err);
                goto out;
        }
        if (commit_entry(st, upper, history, &made, err) < 0)
                goto out;
        cache_record(st, key, &made, history);
        r = 0;
out:
        if (j.src_lowers)
                free(j.src_lowers);
        bld_image_layers_release(&img);
        return r;
}

/* WORKDIR: the path (relative to the previous one) becomes the working directory, made when
 * missing, as BuildKit does: each directory it makes 0755 and owned by the stage's USER
 * (dockerfile2llb's dispatchWorkdir passes llb.WithUser to the mkdir), root's without one. */
struct workdir_job {
        const char *path;
        const char *user; /* the config's User, NULL or "" for root */
};

static int mkdir_in_sandbox(void *ctx, int rootfd, struct kiln_error **err)
{
        const struct workdir_job *j = ctx;
        _cleanup_free_ char *copy = xstrdup(j->path);
        char *p = copy, *slash;
        uint32_t uid = 0, gid = 0;

        if (j->user && *j->user && owner_resolve(rootfd, j->user, &uid, &gid, err) < 0)
                return -1;

        for (;;) {
                slash = strchr(p + 1, '/');
                if (slash)
                        *slash = '\0';
                if (*copy && strcmp(copy, "/") != 0) {
                        _cleanup_close_ int fd = kiln_open_in_root(rootfd, copy, O_PATH | O_DIRECTORY, 0, NULL);
                        if (fd < 0) {
                                _cleanup_free_ char *parent = NULL;
                                _cleanup_close_ int pfd = -1;
                                const char *base = strrchr(copy, '/');
                                parent = base && base != copy ? xstrndup(copy, (size_t) (base - copy)) : xstrdup("/");
                                pfd = kiln_open_in_root(rootfd, parent, O_PATH | O_DIRECTORY, 0, err);
                                if (pfd < 0)
                                        return -1;
                                const char *name = base ? base + 1 : copy;
                                if (mkdirat(pfd, name, 0755) < 0) {
                                        if (errno != EEXIST)
                                                return kiln_error_errno(err, KILN_ERR_IO,
                                                                        "WORKDIR: mkdir '%s'", copy);
                                } else if ((uid || gid) &&
                                           fchownat(pfd, name, uid, gid, AT_SYMLINK_NOFOLLOW) < 0) {
                                        return kiln_error_errno(err, KILN_ERR_IO,
                                                                "WORKDIR: chown '%s' to %u:%u", copy,
                                                                uid, gid);
                                }
                        }
                }
                if (!slash)
                        return 0;
                *slash = '/';
                p = slash;
        }
}

static char *join_path(const char *base, const char *path)
{
        if (path[0] == '/')
                return xstrdup(path);
        if (!base || !*base)
                return xasprintf("/%s", path);
        return xasprintf("%s%s%s", base, base[strlen(base) - 1] == '/' ? "" : "/", path);
}

static int step_workdir(struct bld_stage *st, struct bld_step *s, const struct df_instr *in, struct kiln_error **err)
{
        struct bld_build *b = st->b;
        _cleanup_free_ char *path = join_path(bld_config_string(st->config, "WorkingDir"), in->text.word.text);
        _cleanup_free_ char *upper = NULL, *work = NULL, *history = NULL;
        _cleanup_free_ const char **lowers = NULL;
        struct sb_rootfs root;
        struct workdir_job job = { .path = path,
                                   .user = bld_config_string(st->config, "User") };

        char key[LAYER_DIGEST_SIZE] = "";
        struct bld_cache_entry made;

        json_object_set_new(bld_config_run(st->config), "WorkingDir", json_string(path));
        history = xasprintf("WORKDIR %s", path);
        /* What WORKDIR makes follows from the stage so far, the path and USER (both in the
         * config the key covers): keyed before it runs, as RUN is. */
        if (b->cache && st->key[0]) {
                struct bld_key k;
                key_begin(st, &k, "WORKDIR");
                bld_key_field(&k, "path", path);
                key_end(st, &k, key);
                if (step_lookup(st, s, key, history, &made))
                        return apply_hit(st, s, key, &made, history, err);
        }
        if (b->none) {
                if (bld_none_call(st, mkdir_in_sandbox, &job, err) < 0 ||
                    bld_none_commit(st, history, &made, err) < 0)
                        return -1;
        } else if (b->trees) {
                root = (struct sb_rootfs){ 0 };
                if (bld_tree_begin(st, false, &root.dir, err) < 0 ||
                    sb_call(&root, &b->env, mkdir_in_sandbox, &job, err) < 0 ||
                    bld_tree_commit(st, history, &made, err) < 0)
                        return -1;
        } else {
                if (settle(st, err) < 0 || step_dirs(st, &upper, &work, err) < 0)
                        return -1;
                lowers = lowers_top_first(st);
                root = (struct sb_rootfs){ .lowers = lowers, .n_lowers = st->n_lowers, .upper = upper, .work = work };
                if (sb_call(&root, &b->env, mkdir_in_sandbox, &job, err) < 0 ||
                    commit_entry(st, upper, history, &made, err) < 0)
                        return -1;
        }
        if (b->cache)
                cache_record(st, key, &made, history);
        return 0;
}

/* ---- the stage ---- */

static int step(struct bld_stage *st, struct bld_step *s, struct df_eval *ev, const struct df_instr *in,
                struct kiln_error **err)
{
        _cleanup_free_ char *history = NULL;

        switch (in->kind) {
        case DF_INSTR_RUN:
                return step_run(st, s, ev, in, err);
        case DF_INSTR_COPY:
        case DF_INSTR_ADD:
                return step_copy(st, s, in, err);
        case DF_INSTR_WORKDIR:
                return step_workdir(st, s, in, err);
        case DF_INSTR_ARG:
                return 0; /* scoping only: df_eval has applied it, and its value is never kept */
        case DF_INSTR_ENV:
        case DF_INSTR_LABEL:
        case DF_INSTR_EXPOSE:
        case DF_INSTR_CMD:
        case DF_INSTR_ENTRYPOINT:
        case DF_INSTR_USER:
        case DF_INSTR_VOLUME:
        case DF_INSTR_STOPSIGNAL:
        case DF_INSTR_HEALTHCHECK:
        case DF_INSTR_SHELL:
        case DF_INSTR_ONBUILD:
        case DF_INSTR_MAINTAINER:
                if (bld_config_apply(st->config, in, &st->cmd_inherited, &history, err) < 0)
                        return -1;
                /* without SOURCE_DATE_EPOCH it takes a neighbouring step's time (a hit's
                 * is that of its first run), so a fully cached rebuild keeps the image id */
                bld_config_add_history(st->config,
                                       st->b->o->source_date_epoch >= 0 ? st->b->created
                                                                        : BLD_TIME_PENDING,
                                       history, true);
                return 0;
        case DF_INSTR_FROM:
        case _DF_INSTR_MAX:
                break;
        }
        return kiln_error_new(err, KILN_ERR_INVALID, "unexpected %s", df_instr_name(in->kind));
}

static bool is_step(enum df_instr_kind kind)
{
        return kind == DF_INSTR_RUN || kind == DF_INSTR_COPY || kind == DF_INSTR_ADD || kind == DF_INSTR_WORKDIR;
}

/* Places an error at the instruction unless it has a position. */
static int locate(struct bld_stage *st, const struct df_instr *in, struct kiln_error **err)
{
        const char *name = df_instr_name(in->kind);

        if (*err && !(*err)->file) {
                /* COPY's own messages already say "COPY: " */
                if (strncmp((*err)->msg, name, strlen(name)) != 0)
                        kiln_error_wrap(err, "%s", name);
                df_error_locate(*err, st->b->o->graph->df->syn, in->node, 0);
        }
        return -1;
}

/* Places an error raised by an ONBUILD trigger at the stage's FROM, as BuildKit does: the
 * trigger's own text is not in the Dockerfile, so a position inside it means nothing there. */
static int locate_trigger(struct bld_stage *st, const char *expression, struct kiln_error **err)
{
        struct kiln_error *e = *err;

        if (!e)
                return -1;
        free(e->file);
        free(e->source_line);
        e->file = e->source_line = NULL;
        e->line = e->column = 0;
        kiln_error_wrap(err, "ONBUILD trigger '%s'", expression);
        df_error_locate(*err, st->b->o->graph->df->syn, st->b->o->graph->stages[st->index].stage->from->node,
                        0);
        return -1;
}

/* Runs one expanded instruction: metadata into the config, or a step with its events. Errors
 * are placed at the instruction, or at FROM for a trigger (`trigger`: its expression). */
static int exec_instr(struct bld_stage *st, struct df_eval *ev, const struct df_instr *in, const char *trigger,
                      unsigned *index, unsigned count, struct kiln_error **err)
{
        struct bld_step cur = { 0 };
        int r;

        if (!is_step(in->kind)) {
                if (step(st, &cur, ev, in, err) == 0)
                        return 0;
                return trigger ? locate_trigger(st, trigger, err) : locate(st, in, err);
        }
        bld_step_start(st, &cur, ++*index, in, count);
        r = step(st, &cur, ev, in, err);
        if (r < 0) {
                _cleanup_free_ char *tail = step_tail(&cur);
                if (trigger)
                        locate_trigger(st, trigger, err);
                else
                        locate(st, in, err);
                bld_step_error(&cur, *err, tail);
        } else if (cur.cached) {
                bld_step_cached(&cur);
        } else {
                bld_step_done(&cur);
        }
        step_release(&cur);
        return r;
}

/* The base's ONBUILD triggers: all parsed first (none runs when one is bad), then each expanded
 * in the stage's scope and run as if written right after FROM. */
static int run_triggers(struct bld_stage *st, struct df_eval *ev, unsigned *index, unsigned *count,
                        struct kiln_error **err)
{
        size_t n = json_array_size(st->triggers), i;
        struct df_trigger **t = xcalloc(n + 1, sizeof(*t));
        const char *expr = NULL;
        int r = -1;

        for (i = 0; i < n; i++) {
                const struct df_instr *in;

                expr = json_string_value(json_array_get(st->triggers, i));
                if (!expr) {
                        kiln_error_new(err, KILN_ERR_PARSE, "the base image's OnBuild entry %zu is not a string",
                                       i + 1);
                        df_error_locate(*err, st->b->o->graph->df->syn,
                                        st->b->o->graph->stages[st->index].stage->from->node, 0);
                        goto out;
                }
                if (df_trigger_parse(expr, &t[i], err) < 0)
                        goto fail;
                in = &t[i]->instr;
                /* The stage graph is planned before base images are read, so a trigger cannot
                 * add a dependency (BuildKit only learned this in Dockerfile 1.11). */
                if ((in->kind == DF_INSTR_COPY || in->kind == DF_INSTR_ADD) && in->copy.from.text) {
                        kiln_error_new(err, KILN_ERR_UNSUPPORTED,
                                       "%s --from is not supported in a trigger: kiln plans the stages "
                                       "before it reads base images",
                                       df_instr_name(in->kind));
                        goto fail;
                }
                *count += is_step(in->kind);
        }
        for (i = 0; i < n; i++) {
                const struct df_instr *in;

                expr = json_string_value(json_array_get(st->triggers, i));
                if (bld_build_failed(st->b)) {
                        kiln_error_new(err, KILN_ERR_GENERIC, "stopped: another stage failed");
                        goto out;
                }
                if (df_eval_instr(ev, NULL, &t[i]->instr, &in, err) < 0)
                        goto fail;
                if (exec_instr(st, ev, in, expr, index, *count, err) < 0)
                        goto out;
        }
        r = 0;
        goto out;
fail:
        locate_trigger(st, expr, err);
out:
        for (i = 0; i < n; i++)
                df_trigger_free(t[i]);
        free(t);
        return r;
}

int bld_stage_run(struct bld_stage *st, struct kiln_error **err)
{
        struct bld_build *b = st->b;
        const struct df_gstage *gs = &b->o->graph->stages[st->index];
        const struct df_stage *ds = gs->stage;
        struct bld_step s = { 0 };
        struct df_eval ev;
        const struct df_instr *in;
        _cleanup_free_ const char **env = NULL;
        size_t n_env = 0;
        unsigned count = 1, index = 1;
        size_t i;
        int r = -1;

        /* Steps are what changes files, as BuildKit shows them; metadata is not a step. */
        for (i = 0; i < ds->n_instrs; i++)
                count += is_step(ds->instrs[i].kind);

        bld_step_start(st, &s, index, ds->from, count);
        if (b->o->no_cache_stages && b->o->no_cache_stages[st->index])
                st->forced = true;
        if (step_from(st, err) < 0) {
                locate(st, ds->from, err);
                bld_step_error(&s, *err, NULL);
                step_release(&s);
                return -1;
        }
        bld_step_done(&s);
        step_release(&s);
        env = bld_config_env(st->config, &n_env);
        df_eval_init(&ev, b->o->graph, st->index, env, n_env);
        if (st->triggers && run_triggers(st, &ev, &index, &count, err) < 0) {
                df_eval_release(&ev);
                return -1;
        }
        for (;;) {
                if (bld_build_failed(b)) {
                        r = kiln_error_new(err, KILN_ERR_GENERIC, "stopped: another stage failed");
                        break;
                }
                if (df_eval_next(&ev, &in, err) < 0)
                        break;
                if (!in) {
                        r = 0;
                        break;
                }
                if (exec_instr(st, &ev, in, NULL, &index, count, err) < 0)
                        break;
        }
        df_eval_release(&ev);
        if (r == 0 && b->trees)
                r = bld_tree_stage_done(st, err);
        return r;
}
