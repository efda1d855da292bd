/*
 * The registry cache: what lets runners that share nothing but a registry reuse each other's
 * steps. --cache-to type=registry,ref=REF pushes an OCI manifest whose config (media type
 * application/vnd.kiln.cache.config.v1+json) holds {"kiln.cache.v1": {KEY: ENTRY}} and whose
 * layers are the entries' blobs; --cache-to type=inline puts the same object into the image's
 * own config (its layers are the image's). --cache-from reads either: the small config only, up
 * front; a layer is downloaded when a step has to run on top of it or the image needs it, so
 * a build whose early stages all hit never fetches their layers.
 *
 * Keys are the local cache's (builder/cache.c): digests of every input, so an entry from the
 * registry is as safe to use as a local one. Its blob is checked against its digest on the way
 * in, like any pulled blob.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "builder/builder-internal.h"
#include "builder/common/json-util.h"
#include "builder/common/xalloc.h"
#include "registry/registry.h"

#define CACHE_FIELD "kiln.cache.v1"
#define CACHE_CONFIG_TYPE "application/vnd.kiln.cache.config.v1+json"
#define OCI_MANIFEST_TYPE "application/vnd.oci.image.manifest.v1+json"

/* ---- specs ---- */

static int spec_error(struct kiln_error **err, const char *flag, const char *s, const char *why)
{
        return kiln_error_new(err, KILN_ERR_INVALID, "%s '%s': %s", flag, s, why);
}

int bld_cache_spec_parse(const char *s, bool to, struct bld_cache_spec *ret, struct kiln_error **err)
{
        const char *flag = to ? "--cache-to" : "--cache-from";
        _cleanup_free_ char *copy = xstrdup(s);
        char *field, *save = NULL;
        const char *type = NULL;

        *ret = (struct bld_cache_spec){ .kind = BLD_CACHE_REGISTRY };
        if (!strchr(s, '=')) {
                /* a bare reference: an image or a cache manifest to read */
                if (to || !*s)
                        return spec_error(err, flag, s, "wants type=registry,ref=REF or type=inline");
                ret->ref = xstrdup(s);
                goto check_ref;
        }
        /* the type first: type=local or type=gha is refused as such, not for its fields */
        for (type = s; type; type = strchr(type, ',') ? strchr(type, ',') + 1 : NULL)
                if (strncmp(type, "type=", 5) == 0)
                        break;
        if (type) {
                type += 5;
                if (!((strncmp(type, "registry", 8) == 0 && (type[8] == ',' || !type[8])) ||
                      (strncmp(type, "inline", 6) == 0 && (type[6] == ',' || !type[6]))))
                        return spec_error(err, flag, s, "kiln supports type=registry and type=inline");
        }
        for (field = strtok_r(copy, ",", &save); field; field = strtok_r(NULL, ",", &save)) {
                char *eq = strchr(field, '=');
                const char *v;

                if (!eq) {
                        bld_cache_spec_release(ret);
                        return spec_error(err, flag, s, "each field is key=value");
                }
                *eq = '\0';
                v = eq + 1;
                if (strcmp(field, "type") == 0) {
                        /* checked above */
                } else if (strcmp(field, "ref") == 0 && *v) {
                        free(ret->ref);
                        ret->ref = xstrdup(v);
                } else if (strcmp(field, "mode") == 0 && (strcmp(v, "min") == 0 || strcmp(v, "max") == 0)) {
                        ret->max = strcmp(v, "max") == 0;
                } else if (strcmp(field, "ignore-error") == 0 && (strcmp(v, "true") == 0 || strcmp(v, "false") == 0)) {
                        ret->ignore_error = strcmp(v, "true") == 0;
                } else if (strcmp(field, "image-manifest") == 0 || strcmp(field, "oci-mediatypes") == 0 ||
                           strcmp(field, "compression") == 0 || strcmp(field, "compression-level") == 0 ||
                           strcmp(field, "force-compression") == 0) {
                        /* BuildKit's knobs for its own format: kiln's cache is always an OCI
                         * image manifest, its layers as the build wrote them */
                } else {
                        _cleanup_free_ char *why = xasprintf("unknown or bad field '%s'", field);
                        bld_cache_spec_release(ret);
                        return spec_error(err, flag, s, why);
                }
        }
        if (type && strncmp(type, "inline", 6) == 0) {
                if (!to) {
                        bld_cache_spec_release(ret);
                        return spec_error(err, flag, s, "an inline cache is read by naming the image (--cache-from IMAGE)");
                }
                ret->kind = BLD_CACHE_INLINE;
                return 0;
        }
        if (!ret->ref)
                return spec_error(err, flag, s, "type=registry wants ref=REF");
check_ref:
        {
                struct reg_ref r = { 0 };
                int ok = reg_ref_parse(ret->ref, &r, err);
                reg_ref_release(&r);
                if (ok < 0) {
                        bld_cache_spec_release(ret);
                        return kiln_error_wrap(err, "%s", flag);
                }
        }
        return 0;
}

void bld_cache_spec_release(struct bld_cache_spec *s)
{
        free(s->ref);
        s->ref = NULL;
}

/* ---- import ---- */

/* One --cache-from: the entries its config carries, each checked. */
static int import_one(struct bld_build *b, const char *ref, size_t *ret_n, struct kiln_error **err)
{
        _cleanup_(reg_manifest_release) struct reg_manifest m = { 0 };
        _cleanup_json_ json_t *config = NULL;
        _cleanup_free_ char *repo = NULL;
        struct reg_ref r = { 0 };
        json_t *entries, *e;
        const char *key;
        size_t n = 0;

        *ret_n = 0;
        if (reg_inspect(b->o->registry, ref, b->o->platform, true, &m, err) < 0)
                return -1;
        /* its repository: where a push to another repository of that registry can mount from */
        if (reg_ref_parse(ref, &r, err) < 0)
                return -1;
        repo = reg_ref_repository(&r);
        reg_ref_release(&r);
        config = kiln_json_loadb(m.config, m.config_len, "cache config", err);
        if (!config)
                return -1;
        entries = json_object_get(config, CACHE_FIELD);
        if (!json_is_object(entries))
                return kiln_error_new(err, KILN_ERR_NOTFOUND, "no kiln cache in it (neither a cache manifest nor an image built with --cache-to type=inline)");
        json_object_foreach (entries, key, e) {
                struct bld_cache_entry ce;
                json_t *copy;

                if (strncmp(key, "sha256:", 7) != 0 || !layer_digest_valid(key) || !bld_cache_entry_parse(e, &ce))
                        continue; /* not understood: not used */
                copy = json_deep_copy(e);
                json_object_set_new(copy, "ref", json_string(ref));
                json_object_set_new(b->remote, key, copy);
                if (!ce.empty) {
                        bld_cache_note_blob(b, ce.digest, ref);
                        layer_store_note_source(b->o->store, ce.digest, repo);
                }
                n++;
        }
        *ret_n = n;
        return 0;
}

void bld_cache_import(struct bld_build *b)
{
        size_t i, n;

        b->remote = json_object();
        for (i = 0; i < b->o->n_cache_from; i++) {
                const char *ref = b->o->cache_from[i].ref;
                struct kiln_error *e = NULL;

                if (!b->o->registry) {
                        bld_build_event(b, BLD_EVENT_WARNING, "--cache-from %s: no registry client", ref);
                        continue;
                }
                if (import_one(b, ref, &n, &e) < 0) {
                        /* BuildKit's rule: a cache that cannot be read is only a slower build */
                        bld_build_event(b, BLD_EVENT_WARNING, "--cache-from %s: not used: %s", ref, e ? e->msg : "?");
                        kiln_error_free(e);
                        continue;
                }
                bld_build_event(b, BLD_EVENT_INFO, "cache: %zu entries from %s", n, ref);
        }
}

bool bld_cache_remote_get(struct bld_build *b, const char *key, struct bld_cache_entry *ret)
{
        json_t *e = b->remote ? json_object_get(b->remote, key) : NULL;

        /* its "ref" (set at import) goes into the local entry: a build here without
         * --cache-from still knows where the blob is */
        if (!e || !bld_cache_entry_parse(e, ret))
                return false;
        /* kept locally too: the next build here hits without the registry once the blob is in */
        bld_cache_put(b, key, ret, kiln_json_get_string(e, "created_by"));
        return true;
}

/* ---- blobs, on demand ---- */

void bld_cache_note_blob(struct bld_build *b, const char *digest, const char *ref)
{
        pthread_mutex_lock(&b->fetch_lock);
        if (!json_object_get(b->remote_blobs, digest))
                json_object_set_new(b->remote_blobs, digest, json_string(ref));
        pthread_mutex_unlock(&b->fetch_lock);
}

int bld_cache_fetch_layers(struct bld_build *b, const struct bld_layer *layers, size_t n, struct kiln_error **err)
{
        size_t i, j;
        int r = 0;

        if (!b->remote_blobs)
                return 0;
        pthread_mutex_lock(&b->fetch_lock);
        for (i = 0; i < n && r == 0; i++) {
                const char *ref = kiln_json_get_string(b->remote_blobs, layers[i].digest);
                _cleanup_free_ struct reg_blob_desc *want = NULL;
                size_t k = 0;
                uint64_t bytes = 0;

                if (!ref || layer_store_has(b->o->store, layers[i].digest))
                        continue;
                /* every missing layer this cache has, in one parallel fetch */
                want = xcalloc(n - i, sizeof(*want));
                for (j = i; j < n; j++) {
                        const char *other = kiln_json_get_string(b->remote_blobs, layers[j].digest);
                        if (other && strcmp(other, ref) == 0 && !layer_store_has(b->o->store, layers[j].digest))
                                want[k++] = (struct reg_blob_desc){ layers[j].digest, layers[j].size };
                }
                r = reg_fetch_blobs(b->o->registry, b->o->store, ref, want, k, &bytes, err);
                if (r == 0)
                        bld_build_event(b, BLD_EVENT_INFO, "cache: fetched %zu layer%s (%llu bytes) from %s", k, k == 1 ? "" : "s",
                             (unsigned long long) bytes, ref);
                else
                        kiln_error_wrap(err, "--cache-from %s", ref);
        }
        pthread_mutex_unlock(&b->fetch_lock);
        return r;
}

int bld_cache_lazy_image(struct bld_build *b, const char *ref, const char *platform, struct bld_image_layers *ret,
                         struct kiln_error **err)
{
        _cleanup_(reg_manifest_release) struct reg_manifest m = { 0 };
        _cleanup_json_ json_t *manifest = NULL, *config = NULL;
        size_t i;

        if (reg_inspect(b->o->registry, ref, platform, true, &m, err) < 0)
                return -1;
        manifest = kiln_json_loadb(m.body, m.len, ref, err);
        if (!manifest)
                return -1;
        config = kiln_json_loadb(m.config, m.config_len, ref, err);
        if (!config)
                return -1;
        if (bld_image_layers_parse(manifest, config, ref, ret, err) < 0)
                return -1;
        for (i = 0; i < ret->n; i++)
                bld_cache_note_blob(b, ret->digests[i], ref);
        bld_build_event(b, BLD_EVENT_INFO, "cache: %s resolved to %.19s; its %zu layers are fetched when needed", ref, m.digest, ret->n);
        return 0;
}

/* ---- export ---- */

void bld_cache_chain_add(struct bld_stage *st, const char *key, const struct bld_cache_entry *e,
                         const char *created_by)
{
        if (!key || !*key || st->b->o->n_cache_to == 0)
                return;
        json_t *j = bld_cache_entry_json(e, created_by);

        /* where this store got the blob is its own business, not the exported cache's */
        json_object_del(j, "ref");
        if (!st->chain)
                st->chain = json_object();
        json_object_set_new(st->chain, key, j);
}

void bld_cache_inline(struct bld_build *b, struct bld_stage *st)
{
        size_t i;

        for (i = 0; i < b->o->n_cache_to; i++)
                if (b->o->cache_to[i].kind == BLD_CACHE_INLINE && st->chain) {
                        json_object_set(st->config, CACHE_FIELD, st->chain);
                        return;
                }
}

/* The entries to export: the target's chain, or with mode=max every finished stage's. */
static json_t *export_entries(struct bld_build *b, struct bld_stage *target, bool max)
{
        json_t *all = json_object();
        size_t i;

        if (target->chain)
                json_object_update(all, target->chain);
        for (i = 0; max && i < b->o->graph->n_stages; i++)
                if (b->stages[i].done && b->stages[i].chain)
                        json_object_update(all, b->stages[i].chain);
        return all;
}

static int export_one(struct bld_build *b, const struct bld_cache_spec *spec, struct bld_stage *target,
                      struct kiln_error **err)
{
        _cleanup_json_ json_t *entries = export_entries(b, target, spec->max);
        _cleanup_json_ json_t *config = NULL, *manifest = NULL, *seen = json_object();
        _cleanup_free_ char *config_text = NULL, *manifest_text = NULL;
        _cleanup_free_ struct bld_layer *need = NULL;
        char config_digest[LAYER_DIGEST_SIZE];
        struct reg_push_result res;
        json_t *layers = json_array(), *e;
        const char *key;
        size_t n_need = 0;

        /* the blobs, each once */
        need = xcalloc(json_object_size(entries) + 1, sizeof(*need));
        json_object_foreach (entries, key, e) {
                struct bld_cache_entry ce;
                if (!bld_cache_entry_parse(e, &ce) || ce.empty || json_object_get(seen, ce.digest))
                        continue;
                json_object_set_new(seen, ce.digest, json_true());
                json_array_append_new(layers, json_pack("{s:s, s:s, s:I}", "mediaType", ce.media_type, "digest",
                                                        ce.digest, "size", (json_int_t) ce.size));
                memcpy(need[n_need].digest, ce.digest, LAYER_DIGEST_SIZE);
                need[n_need++].size = ce.size;
        }
        config = json_pack("{s:O}", CACHE_FIELD, entries);
        config_text = json_dumps(config, JSON_COMPACT | JSON_SORT_KEYS);
        if (!config_text || layer_store_put(b->o->store, config_text, strlen(config_text), config_digest, err) < 0) {
                json_decref(layers);
                return kiln_error_wrap(err, "--cache-to %s: cache config", spec->ref);
        }
        manifest = json_pack("{s:i, s:s, s:{s:s, s:s, s:I}, s:o}", "schemaVersion", 2, "mediaType", OCI_MANIFEST_TYPE,
                             "config", "mediaType", CACHE_CONFIG_TYPE, "digest", config_digest, "size",
                             (json_int_t) strlen(config_text), "layers", layers);
        manifest_text = json_dumps(manifest, JSON_COMPACT);
        if (!manifest_text)
                return kiln_error_new(err, KILN_ERR_GENERIC, "--cache-to %s: cannot format the manifest", spec->ref);
        {
                /* blobs only a --cache-from had: fetched unless the destination has them (as
                 * when it is the cache the build read: then nothing moves) */
                size_t i, k = 0;
                for (i = 0; i < n_need; i++) {
                        int there;
                        if (layer_store_has(b->o->store, need[i].digest))
                                continue;
                        there = reg_blob_exists(b->o->registry, spec->ref, need[i].digest, err);
                        if (there < 0)
                                return kiln_error_wrap(err, "--cache-to %s", spec->ref);
                        if (!there)
                                need[k++] = need[i];
                }
                if (k > 0 && bld_cache_fetch_layers(b, need, k, err) < 0)
                        return kiln_error_wrap(err, "--cache-to %s", spec->ref);
        }
        if (reg_push_manifest(b->o->registry, b->o->store, spec->ref, manifest_text, strlen(manifest_text),
                              OCI_MANIFEST_TYPE, &res, err) < 0)
                return kiln_error_wrap(err, "--cache-to %s", spec->ref);
        bld_build_event(b, BLD_EVENT_INFO, "cache: %zu entries (%zu layers, %u sent, %u there already, %u mounted) to %s: %s",
             json_object_size(entries), n_need, res.blobs_sent, res.blobs_present, res.blobs_mounted, spec->ref,
             res.manifest_digest);
        return 0;
}

int bld_cache_export(struct bld_build *b, struct bld_stage *target, struct kiln_error **err)
{
        size_t i;

        for (i = 0; i < b->o->n_cache_to; i++) {
                const struct bld_cache_spec *spec = &b->o->cache_to[i];
                struct kiln_error *e = NULL;

                if (spec->kind != BLD_CACHE_REGISTRY)
                        continue;
                if (!b->cache) {
                        bld_build_event(b, BLD_EVENT_WARNING, "--cache-to %s: nothing to export (the cache is not used in this mode)", spec->ref);
                        continue;
                }
                if (!b->o->registry) {
                        kiln_error_new(err, KILN_ERR_INVALID, "--cache-to %s: no registry client", spec->ref);
                        return -1;
                }
                if (export_one(b, spec, target, &e) == 0)
                        continue;
                if (spec->ignore_error) {
                        bld_build_event(b, BLD_EVENT_WARNING, "%s", e ? e->msg : "--cache-to failed");
                        kiln_error_free(e);
                        continue;
                }
                *err = e;
                return -1;
        }
        return 0;
}
