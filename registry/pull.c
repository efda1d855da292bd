/*
 * Pull: the manifest (the platform's, when the reference names an index), then the config and
 * layers the store lacks, in parallel, each streamed into the store and verified against its
 * digest and size before it is kept. Mirrors are tried first; a transfer that breaks resumes
 * with Range where the registry allows it.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "builder/common/json-util.h"
#include "builder/common/xalloc.h"
#include "registry/registry-internal.h"

#define ACCEPT_ALL MT_OCI_INDEX ", " MT_OCI_MANIFEST ", " MT_DOCKER_LIST ", " MT_DOCKER_MANIFEST

static bool is_index(const char *mt)
{
        return mt && (strcmp(mt, MT_OCI_INDEX) == 0 || strcmp(mt, MT_DOCKER_LIST) == 0);
}

static bool is_manifest(const char *mt)
{
        return mt && (strcmp(mt, MT_OCI_MANIFEST) == 0 || strcmp(mt, MT_DOCKER_MANIFEST) == 0);
}

/* ---- manifests ---- */

struct fetched {
        char *body;
        size_t len;
        char *media_type;
        char digest[LAYER_DIGEST_SIZE];
};

static void fetched_release(struct fetched *f)
{
        free(f->body);
        free(f->media_type);
        memset(f, 0, sizeof(*f));
}

/* GET /v2/PATH/manifests/REF, verified: the body's digest must be the one asked for (by digest)
 * and the one the registry says (Docker-Content-Digest). */
static int get_manifest(struct reg_client *c, const struct reg_scope *sc, const char *reference,
                        struct fetched *ret, struct kiln_error **err)
{
        _cleanup_free_ char *suffix = xasprintf("/manifests/%s", reference);
        _cleanup_free_ char *url = reg_url(sc->ep, sc->path, suffix);
        struct http_req req = { .method = "GET", .url = url, .accept = ACCEPT_ALL, .body_fd = -1,
                                .range_from = -1, .max_body = REG_MAX_MANIFEST };
        struct http_resp resp;
        _cleanup_(layer_sha256_freep) struct layer_sha256 *h = NULL;
        _cleanup_json_ json_t *j = NULL;
        const char *mt;
        int r = -1;

        if (reg_request(c, sc, &req, &resp, NULL, NULL, err) < 0)
                return kiln_error_wrap(err, "manifest %s/%s:%s", sc->domain, sc->path, reference);
        if (resp.status != 200) {
                reg_status_error(&resp, sc, "manifest", err);
                goto out;
        }
        h = layer_sha256_new();
        layer_sha256_update(h, resp.body.buf, resp.body.len);
        layer_sha256_final(h, ret->digest);
        if (strncmp(reference, "sha256:", 7) == 0 && strcmp(reference, ret->digest) != 0) {
                kiln_error_new(err, KILN_ERR_DIGEST, "manifest %s/%s@%s: the registry sent content with digest %s",
                               sc->domain, sc->path, reference, ret->digest);
                goto out;
        }
        if (resp.docker_content_digest && strncmp(resp.docker_content_digest, "sha256:", 7) == 0 &&
            strcmp(resp.docker_content_digest, ret->digest) != 0) {
                kiln_error_new(err, KILN_ERR_DIGEST,
                               "manifest %s/%s:%s: content has digest %s but the registry says %s",
                               sc->domain, sc->path, reference, ret->digest, resp.docker_content_digest);
                goto out;
        }
        j = kiln_json_loadb(resp.body.buf, resp.body.len, "manifest", err);
        if (!j) {
                kiln_error_wrap(err, "manifest %s/%s:%s", sc->domain, sc->path, reference);
                goto out;
        }
        mt = kiln_json_get_string(j, "mediaType");
        if (!mt && resp.content_type)
                mt = resp.content_type;
        if (!is_index(mt) && !is_manifest(mt)) {
                kiln_error_new(err, KILN_ERR_UNSUPPORTED, "manifest %s/%s:%s has media type '%s', which kiln does not read",
                               sc->domain, sc->path, reference, mt ? mt : "(none)");
                goto out;
        }
        ret->media_type = xstrdup(mt);
        ret->body = kiln_buf_detach(&resp.body, &ret->len);
        r = 0;
out:
        http_resp_release(&resp);
        return r;
}

/* Picks the manifest for `platform` ("os/arch[/variant]") from an index. */
static int choose_platform(const struct fetched *index, const char *platform, const char *what,
                           char ret[LAYER_DIGEST_SIZE], struct kiln_error **err)
{
        _cleanup_json_ json_t *j = kiln_json_loadb(index->body, index->len, "index", err);
        _cleanup_free_ char *want = xstrdup(platform);
        char *arch = strchr(want, '/'), *variant = NULL;
        struct kiln_buf have = KILN_BUF_INIT;
        json_t *m;
        size_t i;

        if (!j)
                return -1;
        if (arch) {
                *arch++ = '\0';
                variant = strchr(arch, '/');
                if (variant)
                        *variant++ = '\0';
        }
        m = json_object_get(j, "manifests");
        for (i = 0; i < json_array_size(m); i++) {
                json_t *d = json_array_get(m, i), *p = json_object_get(d, "platform");
                const char *os = kiln_json_get_string(p, "os"), *a = kiln_json_get_string(p, "architecture");
                const char *v = kiln_json_get_string(p, "variant"), *digest = kiln_json_get_string(d, "digest");

                if (!os || !a || !digest)
                        continue;
                kiln_buf_addf(&have, NULL, "%s%s/%s%s%s", have.len ? ", " : "", os, a, v ? "/" : "", v ? v : "");
                if (strcmp(os, want) != 0 || !arch || strcmp(a, arch) != 0)
                        continue;
                /* arm64 images often say v8 or nothing; an asked variant must match */
                if (variant && (!v || strcmp(v, variant) != 0) &&
                    !(strcmp(variant, "v8") == 0 && !v))
                        continue;
                if (!layer_digest_valid(digest)) {
                        kiln_buf_release(&have);
                        return kiln_error_new(err, KILN_ERR_PARSE, "%s: an index entry has a bad digest", what);
                }
                memcpy(ret, digest, LAYER_DIGEST_SIZE);
                kiln_buf_release(&have);
                return 0;
        }
        kiln_error_new(err, KILN_ERR_NOTFOUND, "%s has no image for %s (it has: %s)", what, platform,
                       have.len ? have.buf : "nothing");
        kiln_buf_release(&have);
        return -1;
}

/* ---- blobs ---- */

struct fetch {
        struct reg_client *c;
        struct layer_store *store;
        const struct reg_scope *scopes; /* the sources, best first */
        size_t n_scopes;
        struct reg_blob *jobs;
        size_t n_jobs;
        pthread_mutex_t lock;
        uint64_t bytes;
};

/* One blob's download, into a store writer. */
struct download {
        struct fetch *f;
        const struct reg_blob *job;
        struct layer_blob_writer *w;
        uint64_t got;
};

static int download_sink(void *ctx, const void *data, size_t len, struct kiln_error **err)
{
        struct download *d = ctx;

        if (d->got + len > d->job->size)
                return kiln_error_new(err, KILN_ERR_DIGEST, "blob %s: the registry sent more than its %llu bytes",
                                      d->job->digest, (unsigned long long) d->job->size);
        if (layer_blob_write(d->w, data, len, err) < 0)
                return -1;
        d->got += len;
        return 0;
}

static int download_restart(void *ctx, struct kiln_error **err)
{
        struct download *d = ctx;

        layer_blob_abort(d->w);
        d->w = NULL;
        d->got = 0;
        return layer_store_blob_begin(d->f->store, &d->w, err);
}

/* Before a retry: resume after what arrived, when anything did. */
static int download_rewind(void *ctx, struct http_req *req, const struct http_resp *failed)
{
        struct download *d = ctx;

        req->range_from = d->got > 0 ? (int64_t) d->got : -1;
        return 0;
}

static int fetch_blob(struct fetch *f, const struct reg_blob *job, const struct reg_scope *sc,
                      struct kiln_error **err)
{
        _cleanup_free_ char *suffix = xasprintf("/blobs/%s", job->digest);
        _cleanup_free_ char *url = reg_url(sc->ep, sc->path, suffix);
        struct download d = { .f = f, .job = job };
        struct http_req req = { .method = "GET", .url = url, .body_fd = -1, .range_from = -1,
                                .follow_redirects = true, .sink = download_sink, .sink_ctx = &d,
                                .restart = download_restart };
        struct http_resp resp;
        int r = -1;

        if (layer_store_blob_begin(f->store, &d.w, err) < 0)
                return -1;
        if (reg_request(f->c, sc, &req, &resp, download_rewind, &d, err) < 0)
                goto fail;
        if (resp.status != 200 && resp.status != 206) {
                reg_status_error(&resp, sc, "blob", err);
                kiln_error_wrap(err, "%s", job->digest);
                goto fail;
        }
        if (d.got != job->size) {
                kiln_error_new(err, KILN_ERR_DIGEST, "blob %s: got %llu bytes, the manifest says %llu",
                               job->digest, (unsigned long long) d.got, (unsigned long long) job->size);
                goto fail;
        }
        http_resp_release(&resp);
        /* Commit checks the digest: a flipped byte fails here and nothing is stored. */
        r = layer_blob_commit(d.w, job->digest, NULL, NULL, err);
        d.w = NULL;
        if (r == 0) {
                pthread_mutex_lock(&f->lock);
                f->bytes += job->size;
                pthread_mutex_unlock(&f->lock);
        }
        return r;
fail:
        http_resp_release(&resp);
        layer_blob_abort(d.w);
        return -1;
}

/* Fetches job i from the first source that serves it; a DIGEST error is not worth another try. */
static int fetch_job(void *ctx, size_t i, struct kiln_error **err)
{
        struct fetch *f = ctx;
        const struct reg_blob *job = &f->jobs[i];
        size_t s;

        reg_progress(f->c, "fetching %.19s (%llu bytes)", job->digest, (unsigned long long) job->size);
        for (s = 0; s < f->n_scopes; s++) {
                *err = kiln_error_free(*err);
                if (fetch_blob(f, job, &f->scopes[s], err) == 0)
                        return 0;
                if (*err && (*err)->kind == KILN_ERR_DIGEST)
                        break;
        }
        return -1;
}

/* The scopes for each source of a reference; endpoints resolved. */
static int pull_scopes(struct reg_client *c, const struct reg_ref *ref, struct reg_source **ret_src,
                       size_t *ret_n, struct reg_scope **ret, struct kiln_error **err)
{
        struct reg_source *src;
        struct reg_scope *sc;
        size_t n, i;

        reg_pull_sources(c, ref->domain, ref->path, &src, &n);
        sc = xcalloc(n, sizeof(*sc));
        for (i = 0; i < n; i++) {
                sc[i].ep = reg_endpoint_for(c, src[i].host, err);
                if (!sc[i].ep) {
                        reg_sources_free(src, n);
                        free(sc);
                        return -1;
                }
                sc[i].domain = src[i].domain;
                sc[i].path = src[i].path;
                sc[i].actions = "pull";
        }
        *ret_src = src;
        *ret_n = n;
        *ret = sc;
        return 0;
}

/* The manifest from the first source that has it; *ret_first says which source served it. */
static int resolve_manifest(struct reg_client *c, const struct reg_scope *sc, size_t n,
                            const char *reference, struct fetched *ret, size_t *ret_first,
                            struct kiln_error **err)
{
        size_t i;

        for (i = 0; i < n; i++) {
                struct kiln_error *e = NULL;
                if (get_manifest(c, &sc[i], reference, ret, &e) == 0) {
                        if (i > 0 || n > 1)
                                reg_progress(c, "manifest from %s", sc[i].ep->host);
                        *ret_first = i;
                        kiln_error_free(*err);
                        *err = NULL;
                        return 0;
                }
                /* Keep the registry's own answer (the last source) as the error to show. */
                kiln_error_free(*err);
                *err = e;
                if (i + 1 < n)
                        reg_progress(c, "mirror %s failed (%s); trying the next source", sc[i].ep->host,
                                     e ? e->msg : "?");
        }
        return -1;
}

int reg_pull(struct reg_client *c, struct layer_store *store, const char *refstr,
             const struct reg_pull_opts *opts, struct reg_pull_result *ret, struct kiln_error **err)
{
        struct reg_ref ref = { 0 };
        struct reg_source *src = NULL;
        struct reg_scope *sc = NULL;
        struct fetched top = { 0 }, platform = { 0 };
        struct fetch f = { 0 };
        struct reg_blob *jobs = NULL;
        _cleanup_free_ char *name = NULL, *what = NULL;
        const char *want = opts && opts->platform ? opts->platform : "linux/amd64";
        const struct fetched *manifest = &top;
        size_t n_src = 0, first = 0, n_jobs = 0, i;
        int r = -1;

        memset(ret, 0, sizeof(*ret));
        if (reg_ref_parse(refstr, &ref, err) < 0)
                return -1;
        what = reg_ref_string(&ref);
        if (pull_scopes(c, &ref, &src, &n_src, &sc, err) < 0)
                goto out;
        reg_progress(c, "pulling %s", what);
        if (resolve_manifest(c, sc, n_src, ref.digest ? ref.digest : ref.tag, &top, &first, err) < 0)
                goto out;
        if (is_index(top.media_type)) {
                char digest[LAYER_DIGEST_SIZE];
                if (choose_platform(&top, want, what, digest, err) < 0 ||
                    get_manifest(c, &sc[first], digest, &platform, err) < 0)
                        goto out;
                if (!is_manifest(platform.media_type)) {
                        kiln_error_new(err, KILN_ERR_UNSUPPORTED, "%s: the %s entry is not an image manifest",
                                       what, want);
                        goto out;
                }
                /* The index is not stored: the name points at this platform's image, and an
                 * index naming blobs the store lacks would only be an orphan to fsck. */
                memcpy(ret->index_digest, top.digest, LAYER_DIGEST_SIZE);
                manifest = &platform;
        }
        if (reg_manifest_blobs(manifest->body, manifest->len, what, &jobs, &n_jobs, err) < 0)
                goto out;
        /* Only what the store lacks is fetched. */
        f.jobs = xcalloc(n_jobs + 1, sizeof(*f.jobs));
        for (i = 0; i < n_jobs; i++) {
                if (layer_store_has(store, jobs[i].digest)) {
                        ret->blobs_present++;
                        continue;
                }
                f.jobs[f.n_jobs++] = jobs[i];
        }
        f.c = c;
        f.store = store;
        f.scopes = sc + first;
        f.n_scopes = n_src - first;
        pthread_mutex_init(&f.lock, NULL);
        r = reg_run_parallel(c->opts.parallel, f.n_jobs, fetch_job, &f, err);
        pthread_mutex_destroy(&f.lock);
        if (r < 0) {
                r = -1;
                kiln_error_wrap(err, "pull %s", what);
                goto out;
        }
        ret->blobs_fetched = (unsigned) f.n_jobs;
        ret->bytes_fetched = f.bytes;
        /* The manifest last: a name never points at an image with missing parts. */
        if (layer_store_put(store, manifest->body, manifest->len, ret->manifest_digest, err) < 0)
                goto out;
        name = xstrdup(opts && opts->local_name ? opts->local_name : what);
        if (layer_store_tag(store, name, ret->manifest_digest, manifest->media_type, manifest->len, err) < 0)
                goto out;
        {
                /* remember the repository (for mounts when pushing to the same registry) */
                _cleanup_free_ char *repo = reg_ref_repository(&ref);
                for (i = 0; i < n_jobs; i++)
                        layer_store_note_source(store, jobs[i].digest, repo);
        }
        reg_progress(c, "pulled %s: %s", what, ret->manifest_digest);
        r = 0;
out:
        free(jobs);
        free(f.jobs);
        fetched_release(&top);
        fetched_release(&platform);
        free(sc);
        reg_sources_free(src, n_src);
        reg_ref_release(&ref);
        return r;
}

/* A small blob (a config) into memory, verified against its digest. */
static int get_small_blob(struct reg_client *c, const struct reg_scope *sc, const char *digest, size_t max,
                          char **ret, size_t *ret_len, struct kiln_error **err)
{
        _cleanup_free_ char *suffix = xasprintf("/blobs/%s", digest);
        _cleanup_free_ char *url = reg_url(sc->ep, sc->path, suffix);
        struct http_req req = { .method = "GET", .url = url, .body_fd = -1, .range_from = -1,
                                .follow_redirects = true, .max_body = max };
        struct http_resp resp;
        _cleanup_(layer_sha256_freep) struct layer_sha256 *h = NULL;
        char got[LAYER_DIGEST_SIZE];
        int r = -1;

        if (reg_request(c, sc, &req, &resp, NULL, NULL, err) < 0)
                return kiln_error_wrap(err, "blob %s", digest);
        if (resp.status != 200) {
                reg_status_error(&resp, sc, "blob", err);
                goto out;
        }
        h = layer_sha256_new();
        layer_sha256_update(h, resp.body.buf, resp.body.len);
        layer_sha256_final(h, got);
        if (strcmp(got, digest) != 0) {
                kiln_error_new(err, KILN_ERR_DIGEST, "blob %s: the registry sent content with digest %s", digest, got);
                goto out;
        }
        *ret = kiln_buf_detach(&resp.body, ret_len);
        r = 0;
out:
        http_resp_release(&resp);
        return r;
}

int reg_inspect(struct reg_client *c, const char *refstr, const char *platform, bool want_config,
                struct reg_manifest *ret, struct kiln_error **err)
{
        struct reg_ref ref = { 0 };
        struct reg_source *src = NULL;
        struct reg_scope *sc = NULL;
        struct fetched m = { 0 }, chosen = { 0 };
        _cleanup_free_ char *what = NULL;
        const struct fetched *out = &m;
        size_t n = 0, first;
        int r = -1;

        memset(ret, 0, sizeof(*ret));
        if (reg_ref_parse(refstr, &ref, err) < 0)
                return -1;
        what = reg_ref_string(&ref);
        if (pull_scopes(c, &ref, &src, &n, &sc, err) < 0)
                goto out;
        if (resolve_manifest(c, sc, n, ref.digest ? ref.digest : ref.tag, &m, &first, err) < 0)
                goto out;
        if (is_index(m.media_type) && (platform || want_config)) {
                char digest[LAYER_DIGEST_SIZE];
                if (choose_platform(&m, platform ? platform : "linux/amd64", what, digest, err) < 0 ||
                    get_manifest(c, &sc[first], digest, &chosen, err) < 0)
                        goto out;
                memcpy(ret->index_digest, m.digest, LAYER_DIGEST_SIZE);
                out = &chosen;
        }
        if (want_config) {
                _cleanup_json_ json_t *j = kiln_json_loadb(out->body, out->len, "manifest", err);
                json_t *config = j ? json_object_get(j, "config") : NULL;
                const char *digest = kiln_json_get_string(config, "digest");

                if (!j)
                        goto out;
                if (!digest || !layer_digest_valid(digest)) {
                        kiln_error_new(err, KILN_ERR_PARSE, "%s: the manifest has no valid config digest", what);
                        goto out;
                }
                if (get_small_blob(c, &sc[first], digest, REG_MAX_CONFIG, &ret->config, &ret->config_len, err) < 0)
                        goto out;
        }
        ret->body = xmemdup(out->body, out->len);
        ret->len = out->len;
        ret->media_type = xstrdup(out->media_type);
        memcpy(ret->digest, out->digest, LAYER_DIGEST_SIZE);
        r = 0;
out:
        if (r < 0)
                reg_manifest_release(ret);
        fetched_release(&m);
        fetched_release(&chosen);
        free(sc);
        reg_sources_free(src, n);
        reg_ref_release(&ref);
        return r;
}

void reg_manifest_release(struct reg_manifest *m)
{
        free(m->body);
        free(m->media_type);
        free(m->config);
        memset(m, 0, sizeof(*m));
}

int reg_fetch_blobs(struct reg_client *c, struct layer_store *store, const char *refstr,
                    const struct reg_blob_desc *blobs, size_t n, uint64_t *ret_bytes, struct kiln_error **err)
{
        struct reg_ref ref = { 0 };
        struct reg_source *src = NULL;
        struct reg_scope *sc = NULL;
        struct fetch f = { 0 };
        _cleanup_free_ char *what = NULL, *repo = NULL;
        size_t n_src = 0, i, j;
        int r = -1;

        if (ret_bytes)
                *ret_bytes = 0;
        if (reg_ref_parse(refstr, &ref, err) < 0)
                return -1;
        what = reg_ref_string(&ref);
        repo = reg_ref_repository(&ref);
        f.jobs = xcalloc(n + 1, sizeof(*f.jobs));
        for (i = 0; i < n; i++) {
                if (!layer_digest_valid(blobs[i].digest)) {
                        kiln_error_new(err, KILN_ERR_PARSE, "%s: '%s' is not a digest", what, blobs[i].digest);
                        goto out;
                }
                if (layer_store_has(store, blobs[i].digest))
                        continue;
                for (j = 0; j < f.n_jobs; j++)
                        if (strcmp(f.jobs[j].digest, blobs[i].digest) == 0)
                                break;
                if (j < f.n_jobs)
                        continue;
                snprintf(f.jobs[f.n_jobs].digest, LAYER_DIGEST_SIZE, "%s", blobs[i].digest);
                f.jobs[f.n_jobs++].size = blobs[i].size;
        }
        if (f.n_jobs == 0) {
                r = 0;
                goto out;
        }
        if (pull_scopes(c, &ref, &src, &n_src, &sc, err) < 0)
                goto out;
        f.c = c;
        f.store = store;
        f.scopes = sc;
        f.n_scopes = n_src;
        pthread_mutex_init(&f.lock, NULL);
        r = reg_run_parallel(c->opts.parallel, f.n_jobs, fetch_job, &f, err);
        pthread_mutex_destroy(&f.lock);
        if (r < 0) {
                r = -1;
                kiln_error_wrap(err, "fetch from %s", what);
                goto out;
        }
        for (i = 0; i < f.n_jobs; i++)
                layer_store_note_source(store, f.jobs[i].digest, repo);
        if (ret_bytes)
                *ret_bytes = f.bytes;
        r = 0;
out:
        free(f.jobs);
        free(sc);
        reg_sources_free(src, n_src);
        reg_ref_release(&ref);
        return r;
}
