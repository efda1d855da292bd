/*
 * Push: for each blob of the image (config and layers, in parallel) ask the registry whether it
 * has it (HEAD), else mount it from another repository of the same registry that kiln knows
 * holds it, else upload it (POST, then one PUT streamed from the store, or PATCH chunks when the
 * registry asks for them). The manifest goes last, under the tag: a tag never names an image
 * the registry cannot serve whole. A failed upload session is started over, not resumed blindly.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "builder/common/cleanup.h"
#include "builder/common/json-util.h"
#include "builder/common/xalloc.h"
#include "registry/registry-internal.h"

#define CHUNK_SIZE (16u << 20) /* when the registry wants chunks and names no larger minimum */

struct push {
        struct reg_client *c;
        struct layer_store *store;
        struct reg_scope sc;       /* the destination, "pull,push" */
        const char *domain;        /* for matching mount sources: "localhost:5000" */
        struct reg_blob *blobs;
        size_t n_blobs;
        pthread_mutex_t lock;
        struct reg_push_result *ret;
};

static void count(struct push *p, unsigned *counter, uint64_t bytes)
{
        pthread_mutex_lock(&p->lock);
        (*counter)++;
        p->ret->bytes_sent += bytes;
        pthread_mutex_unlock(&p->lock);
}

/* HEAD /v2/PATH/blobs/DIGEST: 1 present, 0 absent. */
static int head_blob(struct reg_client *c, const struct reg_scope *sc, const char *digest, struct kiln_error **err)
{
        _cleanup_free_ char *suffix = xasprintf("/blobs/%s", digest);
        _cleanup_free_ char *url = reg_url(sc->ep, sc->path, suffix);
        struct http_req req = { .method = "HEAD", .url = url, .body_fd = -1, .range_from = -1,
                                .follow_redirects = true };
        struct http_resp resp;
        int r;

        if (reg_request(c, sc, &req, &resp, NULL, NULL, err) < 0)
                return kiln_error_wrap(err, "blob %s", digest);
        if (resp.status == 200)
                r = 1;
        else if (resp.status == 404)
                r = 0;
        else
                r = reg_status_error(&resp, sc, "blob check", err);
        http_resp_release(&resp);
        return r;
}

static int blob_exists(struct push *p, const struct reg_blob *b, struct kiln_error **err)
{
        return head_blob(p->c, &p->sc, b->digest, err);
}

int reg_blob_exists(struct reg_client *c, const char *refstr, const char *digest, struct kiln_error **err)
{
        struct reg_ref ref = { 0 };
        struct reg_scope sc = { .actions = "pull" };
        int r = -1;

        if (reg_ref_parse(refstr, &ref, err) < 0)
                return -1;
        sc.ep = reg_endpoint_for(c, reg_ref_endpoint(&ref), err);
        if (sc.ep) {
                sc.domain = ref.domain;
                sc.path = ref.path;
                r = head_blob(c, &sc, digest, err);
        }
        reg_ref_release(&ref);
        return r;
}

static int start_upload(struct push *p, const struct reg_blob *b, const char *mount_from,
                        char **ret_location, int64_t *ret_chunk_min, struct kiln_error **err)
{
        _cleanup_free_ char *suffix = mount_from ? xasprintf("/blobs/uploads/?mount=%s&from=%s", b->digest, mount_from)
                                                 : xstrdup("/blobs/uploads/");
        _cleanup_free_ char *url = reg_url(p->sc.ep, p->sc.path, suffix);
        struct reg_scope sc = p->sc;
        struct http_req req = { .method = "POST", .url = url, .body_fd = -1, .range_from = -1 };
        struct http_resp resp;
        int r = -1;

        sc.mount_from = mount_from;
        if (reg_request(p->c, &sc, &req, &resp, NULL, NULL, err) < 0)
                return kiln_error_wrap(err, "upload of %s", b->digest);
        if (resp.status == 201 && mount_from) {
                r = 1;
        } else if (resp.status == 202) {
                if (!resp.location) {
                        kiln_error_new(err, KILN_ERR_PARSE, "%s/%s: the registry opened an upload without a Location",
                                       p->sc.domain, p->sc.path);
                } else {
                        *ret_location = http_url_resolve(url, resp.location, NULL, err);
                        *ret_chunk_min = resp.chunk_min;
                        r = *ret_location ? 0 : -1;
                }
        } else {
                reg_status_error(&resp, &sc, "upload", err);
                kiln_error_wrap(err, "%s", b->digest);
        }
        http_resp_release(&resp);
        return r;
}

/* A request with a body is resent after an authentication challenge, but not after a failure
 * mid-way: the session may hold part of it, so the whole upload starts over instead. */
static int no_resend(void *ctx, struct http_req *req, const struct http_resp *failed)
{
        return failed ? -1 : 0;
}

/* Sends a blob's bytes into an upload session and closes it with the digest. */
static int send_blob(struct push *p, const struct reg_blob *b, int fd, char *location, int64_t chunk_min,
                     struct kiln_error **err)
{
        _cleanup_free_ char *loc = location;
        uint64_t chunk = chunk_min > 0 ? ((uint64_t) chunk_min > CHUNK_SIZE ? (uint64_t) chunk_min : CHUNK_SIZE) : 0;
        uint64_t off = 0;
        struct http_resp resp;
        _cleanup_free_ char *query = xasprintf("digest=%s", b->digest), *url = NULL;

        /* The registry wants chunks: PATCH each with its Content-Range, following the Location. */
        while (chunk && off < b->size) {
                uint64_t len = b->size - off < chunk ? b->size - off : chunk;
                _cleanup_free_ char *range = xasprintf("%llu-%llu", (unsigned long long) off,
                                                       (unsigned long long) (off + len - 1));
                struct http_req req = { .method = "PATCH", .url = loc, .content_type = "application/octet-stream",
                                        .body_fd = fd, .body_offset = off, .body_size = len,
                                        .content_range = range, .range_from = -1 };
                char *next;

                if (reg_request(p->c, &p->sc, &req, &resp, no_resend, NULL, err) < 0)
                        return kiln_error_wrap(err, "upload of %s", b->digest);
                if (resp.status != 202 || !resp.location) {
                        if (resp.status == 202)
                                kiln_error_new(err, KILN_ERR_PARSE, "%s/%s: a chunk was accepted without a Location",
                                               p->sc.domain, p->sc.path);
                        else
                                reg_status_error(&resp, &p->sc, "upload", err);
                        http_resp_release(&resp);
                        return kiln_error_wrap(err, "%s", b->digest);
                }
                next = http_url_resolve(loc, resp.location, NULL, err);
                http_resp_release(&resp);
                if (!next)
                        return -1;
                free(loc);
                loc = next;
                off += len;
        }
        url = http_url_resolve(loc, loc, query, err);
        if (!url)
                return -1;
        {
                struct http_req req = { .method = "PUT", .url = url, .content_type = "application/octet-stream",
                                        .body_fd = chunk ? -1 : fd, .body_offset = 0,
                                        .body_size = chunk ? 0 : b->size, .range_from = -1 };
                int r = 0;

                if (reg_request(p->c, &p->sc, &req, &resp, no_resend, NULL, err) < 0)
                        return kiln_error_wrap(err, "upload of %s", b->digest);
                if (resp.status != 201 && resp.status != 204) {
                        reg_status_error(&resp, &p->sc, "upload", err);
                        r = kiln_error_wrap(err, "%s", b->digest);
                } else if (resp.docker_content_digest && strcmp(resp.docker_content_digest, b->digest) != 0) {
                        r = kiln_error_new(err, KILN_ERR_DIGEST, "%s/%s: uploaded %s but the registry stored %s",
                                           p->sc.domain, p->sc.path, b->digest, resp.docker_content_digest);
                }
                http_resp_release(&resp);
                return r;
        }
}

/* The other repositories of the destination registry that hold this blob, as paths there. */
static char **mount_candidates(struct push *p, const struct reg_blob *b)
{
        _cleanup_(strv_freep) char **known = layer_store_sources(p->store, b->digest);
        size_t dl = strlen(p->domain), i, n = 0;
        char **out = xcalloc(4, sizeof(char *));

        for (i = 0; known[i] && n < 3; i++)
                if (strncmp(known[i], p->domain, dl) == 0 && known[i][dl] == '/' &&
                    strcmp(known[i] + dl + 1, p->sc.path) != 0)
                        out[n++] = xstrdup(known[i] + dl + 1);
        return out;
}

static int push_one(void *ctx, size_t i, struct kiln_error **err)
{
        struct push *p = ctx;
        const struct reg_blob *b = &p->blobs[i];
        _cleanup_(strv_freep) char **mounts = NULL;
        _cleanup_close_ int fd = -1;
        uint64_t size = 0;
        unsigned attempt;
        size_t m;
        int r;

        r = blob_exists(p, b, err);
        if (r < 0)
                return -1;
        if (r > 0) {
                count(p, &p->ret->blobs_present, 0);
                return 0;
        }
        mounts = mount_candidates(p, b);
        for (m = 0; mounts[m]; m++) {
                char *location = NULL;
                int64_t chunk_min = -1;
                struct kiln_error *e = NULL;

                r = start_upload(p, b, mounts[m], &location, &chunk_min, &e);
                if (r > 0) {
                        reg_progress(p->c, "mounted %.19s from %s", b->digest, mounts[m]);
                        count(p, &p->ret->blobs_mounted, 0);
                        return 0;
                }
                /* Refused (no access to the other repository, gone from it): upload instead. */
                free(location);
                kiln_error_free(e);
        }
        fd = layer_store_open_blob(p->store, b->digest, &size, err);
        if (fd < 0)
                return -1;
        if (size != b->size)
                return kiln_error_new(err, KILN_ERR_DIGEST, "blob %s in the store has %llu bytes, the manifest says %llu",
                                      b->digest, (unsigned long long) size, (unsigned long long) b->size);
        reg_progress(p->c, "pushing %.19s (%llu bytes)", b->digest, (unsigned long long) b->size);
        for (attempt = 1;; attempt++) {
                char *location = NULL;
                int64_t chunk_min = -1;

                *err = kiln_error_free(*err);
                r = start_upload(p, b, NULL, &location, &chunk_min, err);
                if (r == 0)
                        r = send_blob(p, b, fd, location, chunk_min, err);
                if (r == 0)
                        break;
                /* A broken connection or a server error spoils the session: start a new one. */
                if (!*err || (*err)->kind != KILN_ERR_NET || attempt >= p->c->opts.retries)
                        return -1;
                reg_progress(p->c, "upload of %.19s failed (%s); starting it again", b->digest, (*err)->msg);
                reg_sleep_ms((uint64_t) p->c->opts.backoff_ms << (attempt - 1 > 5 ? 5 : attempt - 1));
        }
        count(p, &p->ret->blobs_sent, b->size);
        return 0;
}

/* ---- the manifest ---- */

/* The media type of a layer in the other format (OCI <-> Docker), or NULL when there is none. */
static const char *convert_layer_type(const char *mt, bool to_docker)
{
        int c;

        for (c = 0; c < _LAYER_COMPRESSION_MAX; c++) {
                if (strcmp(mt, layer_media_type((enum layer_compression) c, to_docker)) == 0)
                        return mt;
                if (strcmp(mt, layer_media_type((enum layer_compression) c, !to_docker)) == 0)
                        return layer_media_type((enum layer_compression) c, to_docker);
        }
        return NULL;
}

/* Rewrites a manifest's media types for the asked format; NULL *ret when it already is. */
static int convert_manifest(json_t *m, bool to_docker, const char *what, bool *ret_changed,
                            struct kiln_error **err)
{
        const char *mt = kiln_json_get_string(m, "mediaType");
        json_t *layers = json_object_get(m, "layers"), *config = json_object_get(m, "config");
        const char *want = to_docker ? MT_DOCKER_MANIFEST : MT_OCI_MANIFEST;
        size_t i;

        *ret_changed = !mt || strcmp(mt, want) != 0;
        if (!*ret_changed)
                return 0;
        if (to_docker && json_object_get(m, "subject"))
                return kiln_error_new(err, KILN_ERR_UNSUPPORTED, "%s has a subject, which Docker manifests cannot carry",
                                      what);
        json_object_set_new(m, "mediaType", json_string(want));
        json_object_set_new(config, "mediaType", json_string(to_docker ? MT_DOCKER_CONFIG : MT_OCI_CONFIG));
        for (i = 0; i < json_array_size(layers); i++) {
                json_t *l = json_array_get(layers, i);
                const char *lt = kiln_json_get_string(l, "mediaType");
                const char *nt = lt ? convert_layer_type(lt, to_docker) : NULL;

                if (!nt)
                        return kiln_error_new(err, KILN_ERR_UNSUPPORTED, "%s: layer %zu has media type '%s', which has no %s form",
                                              what, i + 1, lt ? lt : "(none)", to_docker ? "Docker" : "OCI");
                json_object_set_new(l, "mediaType", json_string(nt));
        }
        if (to_docker)
                json_object_del(m, "annotations");
        return 0;
}

static int put_manifest(struct push *p, const char *reference, const char *body, size_t len,
                        const char *media_type, const char *digest, struct kiln_error **err)
{
        _cleanup_free_ char *suffix = xasprintf("/manifests/%s", reference);
        _cleanup_free_ char *url = reg_url(p->sc.ep, p->sc.path, suffix);
        struct http_req req = { .method = "PUT", .url = url, .content_type = media_type, .body = body,
                                .body_len = len, .body_fd = -1, .range_from = -1 };
        struct http_resp resp;
        int r = 0;

        if (reg_request(p->c, &p->sc, &req, &resp, NULL, NULL, err) < 0)
                return kiln_error_wrap(err, "manifest %s/%s:%s", p->sc.domain, p->sc.path, reference);
        if (resp.status != 201 && resp.status != 200 && resp.status != 204) {
                reg_status_error(&resp, &p->sc, "manifest", err);
                r = kiln_error_wrap(err, "%s", reference);
        } else if (resp.docker_content_digest && strcmp(resp.docker_content_digest, digest) != 0) {
                r = kiln_error_new(err, KILN_ERR_DIGEST, "manifest %s/%s:%s: sent %s but the registry says %s",
                                   p->sc.domain, p->sc.path, reference, digest, resp.docker_content_digest);
        }
        http_resp_release(&resp);
        return r;
}

/* Pushes the blobs a manifest names (from the store), then the manifest under the reference's
 * tag or digest and the extra tags. */
static int push_manifest(struct reg_client *c, struct layer_store *store, const struct reg_ref *ref, const char *local,
                         const char *text, size_t len, const char *media_type, const struct reg_push_opts *opts,
                         struct reg_push_result *ret, struct kiln_error **err)
{
        struct push p = { .c = c, .store = store, .ret = ret };
        _cleanup_free_ char *what = reg_ref_string(ref), *repo = reg_ref_repository(ref);
        size_t i;
        int r = -1;

        if (reg_manifest_blobs(text, len, local, &p.blobs, &p.n_blobs, err) < 0)
                goto out;
        p.sc.ep = reg_endpoint_for(c, reg_ref_endpoint(ref), err);
        if (!p.sc.ep)
                goto out;
        p.sc.domain = ref->domain;
        p.sc.path = ref->path;
        p.sc.actions = "pull,push";
        p.domain = ref->domain;
        reg_progress(c, "pushing %s to %s", local, what);
        pthread_mutex_init(&p.lock, NULL);
        r = reg_run_parallel(c->opts.parallel, p.n_blobs, push_one, &p, err);
        pthread_mutex_destroy(&p.lock);
        if (r < 0) {
                kiln_error_wrap(err, "push %s", what);
                goto out;
        }
        r = -1;
        if (put_manifest(&p, ref->digest ? ref->digest : ref->tag, text, len, media_type, ret->manifest_digest, err) < 0)
                goto out;
        /* When a digest and a tag were both given, the tag is set too; then the extra tags. */
        if (ref->digest && ref->tag &&
            put_manifest(&p, ref->tag, text, len, media_type, ret->manifest_digest, err) < 0)
                goto out;
        for (i = 0; opts && i < opts->n_tags; i++)
                if (put_manifest(&p, opts->tags[i], text, len, media_type, ret->manifest_digest, err) < 0)
                        goto out;
        for (i = 0; i < p.n_blobs; i++)
                layer_store_note_source(store, p.blobs[i].digest, repo);
        reg_progress(c, "pushed %s: %s", what, ret->manifest_digest);
        r = 0;
out:
        free(p.blobs);
        return r;
}

int reg_push(struct reg_client *c, struct layer_store *store, const char *local, const char *dest,
             const struct reg_push_opts *opts, struct reg_push_result *ret, struct kiln_error **err)
{
        struct reg_ref ref = { 0 };
        struct layer_ref lref = { 0 };
        _cleanup_free_ char *what = NULL, *data = NULL, *text = NULL;
        _cleanup_json_ json_t *m = NULL;
        const char *media_type;
        size_t len, i;
        bool changed = false;
        int r = -1;

        memset(ret, 0, sizeof(*ret));
        if (reg_ref_parse(dest, &ref, err) < 0)
                return -1;
        what = reg_ref_string(&ref);
        for (i = 0; opts && i < opts->n_tags; i++)
                if (!reg_tag_valid(opts->tags[i])) {
                        kiln_error_new(err, KILN_ERR_INVALID, "'%s' is not a valid tag (up to 128 of [A-Za-z0-9_.-], "
                                       "not starting with '.' or '-')", opts->tags[i]);
                        goto out;
                }
        if (layer_store_resolve(store, local, &lref, err) < 0)
                goto out;
        if (strcmp(lref.media_type, MT_OCI_MANIFEST) != 0 && strcmp(lref.media_type, MT_DOCKER_MANIFEST) != 0) {
                kiln_error_new(err, KILN_ERR_UNSUPPORTED, "%s is a %s; kiln pushes single-platform images for now",
                               local, lref.media_type);
                goto out;
        }
        if (layer_store_read(store, lref.digest, REG_MAX_MANIFEST, &data, &len, err) < 0 ||
            !(m = kiln_json_loadb(data, len, "manifest", err))) {
                kiln_error_wrap(err, "%s", local);
                goto out;
        }
        media_type = lref.media_type;
        if (opts && opts->format != REG_FORMAT_KEEP) {
                if (convert_manifest(m, opts->format == REG_FORMAT_DOCKER, local, &changed, err) < 0)
                        goto out;
                if (changed)
                        media_type = opts->format == REG_FORMAT_DOCKER ? MT_DOCKER_MANIFEST : MT_OCI_MANIFEST;
        }
        if (changed) {
                text = json_dumps(m, JSON_COMPACT | JSON_PRESERVE_ORDER);
                if (!text) {
                        kiln_error_new(err, KILN_ERR_GENERIC, "cannot format the manifest");
                        goto out;
                }
                len = strlen(text);
        } else {
                text = TAKE_PTR(data); /* the stored bytes, so the digest stays the same */
        }
        {
                _cleanup_(layer_sha256_freep) struct layer_sha256 *h = layer_sha256_new();
                layer_sha256_update(h, text, len);
                layer_sha256_final(h, ret->manifest_digest);
        }
        if (ref.digest && strcmp(ref.digest, ret->manifest_digest) != 0) {
                kiln_error_new(err, KILN_ERR_INVALID, "%s: the image's manifest has digest %s, not the one named",
                               what, ret->manifest_digest);
                goto out;
        }
        r = push_manifest(c, store, &ref, local, text, len, media_type, opts, ret, err);
out:
        layer_ref_release(&lref);
        reg_ref_release(&ref);
        return r;
}

int reg_push_manifest(struct reg_client *c, struct layer_store *store, const char *dest, const char *body,
                      size_t len, const char *media_type, struct reg_push_result *ret, struct kiln_error **err)
{
        struct reg_ref ref = { 0 };
        _cleanup_free_ char *what = NULL;
        int r;

        memset(ret, 0, sizeof(*ret));
        if (reg_ref_parse(dest, &ref, err) < 0)
                return -1;
        {
                _cleanup_(layer_sha256_freep) struct layer_sha256 *h = layer_sha256_new();
                layer_sha256_update(h, body, len);
                layer_sha256_final(h, ret->manifest_digest);
        }
        what = reg_ref_string(&ref);
        r = push_manifest(c, store, &ref, what, body, len, media_type, NULL, ret, err);
        reg_ref_release(&ref);
        return r;
}

int reg_login_check(struct reg_client *c, const char *host, const char *username, const char *password,
                    struct kiln_error **err)
{
        const struct reg_endpoint *ep = reg_endpoint_for(c, strcmp(host, "docker.io") == 0 ? "registry-1.docker.io" : host, err);
        _cleanup_free_ char *url = NULL;
        struct http_req req = { .method = "GET", .body_fd = -1, .range_from = -1 };
        struct http_resp resp;
        int r = 0;

        if (!ep)
                return -1;
        url = xasprintf("%s://%s/v2/", ep->http ? "http" : "https", ep->host);
        req.url = url;
        /* Ask anonymously first: the answer's challenge says how to present the credentials. */
        if (http_do(c, ep, &req, &resp, err) < 0) {
                http_resp_release(&resp);
                return kiln_error_wrap(err, "%s", host);
        }
        if (resp.status == 401)
                r = reg_login_answer(c, ep, host, resp.www_authenticate, username, password, err);
        else if (resp.status != 200) {
                _cleanup_free_ char *msg = http_error_message(&resp);
                r = kiln_error_new(err, KILN_ERR_NET, "%s: %s", host, msg);
        }
        http_resp_release(&resp);
        return r;
}
