/*
 * FROM oci-layout://DIR[:TAG|@DIGEST]: an image read from an OCI image layout on disk
 * (oci-layout, index.json, blobs/sha256/). TAG is matched against the
 * org.opencontainers.image.ref.name annotation of index.json's entries ("latest" when none is
 * given); DIGEST names a manifest or an index blob directly. An index is followed to the
 * manifest of the build's platform. The manifest, config and layers are copied into kiln's store
 * (verified against their digests and sizes, layers streamed) and the image is then read from
 * the store like any other. Every blob is opened with RESOLVE_IN_ROOT under the layout's root,
 * so a symlink in blobs/ never reads outside it, and only regular files are read.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "builder/builder-internal.h"
#include "builder/common/fd-util.h"
#include "builder/common/strbuf.h"
#include "builder/common/xalloc.h"

#define LAYOUT_PREFIX "oci-layout://"
#define MAX_INDEX     (16u << 20) /* index.json, an index or a manifest */
#define MAX_CONFIG    (16u << 20) /* an image config */
#define MAX_DEPTH     4           /* indexes nested in indexes */

#define MT_OCI_INDEX   "application/vnd.oci.image.index.v1+json"
#define MT_DOCKER_LIST "application/vnd.docker.distribution.manifest.list.v2+json"

struct layout {
        struct layer_store *store;
        const char *dir; /* as written, for messages */
        int rootfd;      /* O_PATH directory */
};

/* "oci-layout://DIR[:TAG][@DIGEST]" -> DIR, TAG (NULL when absent), DIGEST (NULL when absent). A
 * ':' only starts a tag in the last path component. */
static int parse_ref(const char *ref, char **ret_dir, char **ret_tag, char **ret_digest,
                     struct kiln_error **err)
{
        _cleanup_free_ char *dir = xstrdup(ref + strlen(LAYOUT_PREFIX));
        char *at = strrchr(dir, '@'), *slash, *colon, *tag = NULL, *digest = NULL;

        if (at && strncmp(at + 1, "sha256:", 7) == 0) {
                *at = '\0';
                digest = at + 1;
                if (!layer_digest_valid(digest))
                        return kiln_error_new(err, KILN_ERR_INVALID,
                                              "'%s': '%s' is not a sha256 digest", ref, digest);
        }
        slash = strrchr(dir, '/');
        colon = strrchr(slash ? slash : dir, ':');
        if (colon) {
                *colon = '\0';
                tag = colon + 1;
                if (!*tag || strlen(tag) > 128 ||
                    strspn(tag, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                "0123456789_.-") != strlen(tag))
                        return kiln_error_new(err, KILN_ERR_INVALID,
                                              "'%s': '%s' is not a valid tag", ref, tag);
        }
        if (!*dir)
                return kiln_error_new(err, KILN_ERR_INVALID,
                                      "'%s' names no directory (oci-layout://DIR[:TAG])", ref);
        *ret_tag = tag ? xstrdup(tag) : NULL;
        *ret_digest = digest ? xstrdup(digest) : NULL;
        *ret_dir = TAKE_PTR(dir);
        return 0;
}

/* Opens a blob of the layout: a regular file under blobs/sha256/, resolved inside the root. */
static int open_blob(struct layout *l, const char *digest, uint64_t *ret_size,
                     struct kiln_error **err)
{
        _cleanup_free_ char *path = NULL;
        _cleanup_close_ int fd = -1;
        struct stat st;

        if (!layer_digest_valid(digest))
                return kiln_error_new(err, KILN_ERR_PARSE,
                                      "oci-layout '%s': '%s' is not a sha256 digest", l->dir,
                                      digest);
        path = xasprintf("blobs/sha256/%s", digest + 7);
        /* O_NONBLOCK: a FIFO planted in blobs/ must not hang the build; fstat rejects it. */
        fd = kiln_openat2_in_root(l->rootfd, path, O_RDONLY | O_NOCTTY | O_NONBLOCK, 0, 0);
        if (fd < 0) {
                if (errno == ENOENT || errno == ENOTDIR)
                        return kiln_error_new(err, KILN_ERR_NOTFOUND,
                                              "oci-layout '%s': blob %s is missing", l->dir,
                                              digest);
                return kiln_error_errno(err, KILN_ERR_IO, "oci-layout '%s': open %s", l->dir, path);
        }
        if (fstat(fd, &st) < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "oci-layout '%s': stat %s", l->dir, path);
        if (!S_ISREG(st.st_mode))
                return kiln_error_new(err, KILN_ERR_INVALID,
                                      "oci-layout '%s': blob %s is not a regular file", l->dir,
                                      digest);
        if (ret_size)
                *ret_size = (uint64_t) st.st_size;
        return TAKE_FD(fd);
}

/* The expected size of a descriptor, or -1 when it gives none. */
static json_int_t desc_size(json_t *desc)
{
        json_t *v = json_object_get(desc, "size");

        return json_is_integer(v) ? json_integer_value(v) : -1;
}

static int check_size(struct layout *l, const char *digest, json_int_t want, uint64_t have,
                      struct kiln_error **err)
{
        if (want >= 0 && (uint64_t) want != have)
                return kiln_error_new(
                        err, KILN_ERR_DIGEST,
                        "oci-layout '%s': blob %s has %llu bytes, its descriptor says %lld", l->dir,
                        digest, (unsigned long long) have, (long long) want);
        return 0;
}

/* Reads a small blob (an index, a manifest, a config) and verifies its digest and size. */
static int read_blob(struct layout *l, const char *digest, json_int_t want_size, size_t max,
                     char **ret_data, size_t *ret_len, struct kiln_error **err)
{
        _cleanup_close_ int fd = open_blob(l, digest, NULL, err);
        _cleanup_free_ char *data = NULL;
        _cleanup_(layer_sha256_freep) struct layer_sha256 *h = NULL;
        char have[LAYER_DIGEST_SIZE];
        size_t len;

        if (fd < 0)
                return -1;
        if (kiln_read_fd_all(fd, max, &data, &len, err) < 0)
                return kiln_error_wrap(err, "oci-layout '%s': blob %s", l->dir, digest);
        h = layer_sha256_new();
        layer_sha256_update(h, data, len);
        layer_sha256_final(h, have);
        if (strcmp(have, digest) != 0)
                return kiln_error_new(err, KILN_ERR_DIGEST,
                                      "oci-layout '%s': blob %s has digest %s", l->dir, digest,
                                      have);
        if (check_size(l, digest, want_size, len, err) < 0)
                return -1;
        *ret_data = TAKE_PTR(data);
        *ret_len = len;
        return 0;
}

/* Streams a layer into the store; the store checks the digest before the blob gets its name. */
static int copy_layer(struct layout *l, json_t *desc, struct kiln_error **err)
{
        const char *digest = kiln_json_get_string(desc, "digest");
        struct layer_blob_writer *w = NULL;
        _cleanup_close_ int fd = -1;
        _cleanup_free_ char *buf = NULL;
        uint64_t size = 0, copied = 0;

        if (!digest)
                return kiln_error_new(err, KILN_ERR_PARSE, "oci-layout '%s': a layer has no digest",
                                      l->dir);
        if (layer_store_has(l->store, digest))
                return 0;
        fd = open_blob(l, digest, &size, err);
        if (fd < 0)
                return -1;
        if (check_size(l, digest, desc_size(desc), size, err) < 0)
                return -1;
        if (layer_store_blob_begin(l->store, &w, err) < 0)
                return -1;
        buf = xmalloc(1u << 20);
        for (;;) {
                ssize_t n = read(fd, buf, 1u << 20);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0) {
                        layer_blob_abort(w);
                        return kiln_error_errno(err, KILN_ERR_IO, "oci-layout '%s': read blob %s",
                                                l->dir, digest);
                }
                if (n == 0)
                        break;
                if (layer_blob_write(w, buf, (size_t) n, err) < 0) {
                        layer_blob_abort(w);
                        return -1;
                }
                copied += (uint64_t) n;
        }
        if (check_size(l, digest, desc_size(desc), copied, err) < 0) {
                layer_blob_abort(w);
                return -1;
        }
        if (layer_blob_commit(w, digest, NULL, NULL, err) < 0)
                return kiln_error_wrap(err, "oci-layout '%s'", l->dir);
        return 0;
}

static bool is_index(json_t *j, const char *media_type)
{
        const char *mt = kiln_json_get_string(j, "mediaType");

        if (!mt)
                mt = media_type;
        if (mt)
                return strcmp(mt, MT_OCI_INDEX) == 0 || strcmp(mt, MT_DOCKER_LIST) == 0;
        return json_is_array(json_object_get(j, "manifests"));
}

/* The entry of an index for `platform` ("os/arch[/variant]"); an index of a single entry
 * without a platform is that entry. */
static json_t *choose_platform(struct layout *l, json_t *index, const char *platform,
                               struct kiln_error **err)
{
        _cleanup_free_ char *want = xstrdup(platform);
        json_t *m = json_object_get(index, "manifests");
        struct kiln_buf have = KILN_BUF_INIT;
        const char *os, *arch, *variant;
        size_t i;

        bld_platform_split(want, &os, &arch, &variant);
        if (json_array_size(m) == 1 && !json_object_get(json_array_get(m, 0), "platform"))
                return json_array_get(m, 0);
        for (i = 0; i < json_array_size(m); i++) {
                json_t *d = json_array_get(m, i), *p = json_object_get(d, "platform");
                const char *o = kiln_json_get_string(p, "os"),
                           *a = kiln_json_get_string(p, "architecture");
                const char *v = kiln_json_get_string(p, "variant");

                if (!o || !a)
                        continue;
                kiln_buf_addf(&have, NULL, "%s%s/%s%s%s", have.len ? ", " : "", o, a, v ? "/" : "",
                              v ? v : "");
                if (strcmp(o, os) != 0 || strcmp(a, arch) != 0)
                        continue;
                /* arm64 images often say v8 or nothing; an asked variant must match */
                if (variant && *variant && (!v || strcmp(v, variant) != 0) &&
                    !(strcmp(variant, "v8") == 0 && !v))
                        continue;
                kiln_buf_release(&have);
                return d;
        }
        kiln_error_new(err, KILN_ERR_NOTFOUND, "oci-layout '%s': no image for %s (it has: %s)",
                       l->dir, platform, have.len ? have.buf : "nothing");
        kiln_buf_release(&have);
        return NULL;
}

/* index.json's entry named `tag` ("latest" when NULL; then a lone unnamed entry also does). */
static json_t *find_tag(struct layout *l, json_t *index, const char *tag, struct kiln_error **err)
{
        json_t *m = json_object_get(index, "manifests");
        struct kiln_buf have = KILN_BUF_INIT;
        size_t i;

        if (!json_is_array(m)) {
                kiln_error_new(err, KILN_ERR_PARSE, "oci-layout '%s': index.json has no manifests",
                               l->dir);
                return NULL;
        }
        for (i = 0; i < json_array_size(m); i++) {
                json_t *d = json_array_get(m, i);
                const char *name = kiln_json_get_string(json_object_get(d, "annotations"),
                                                        "org.opencontainers.image.ref.name");
                if (name && strcmp(name, tag ? tag : "latest") == 0) {
                        kiln_buf_release(&have);
                        return d;
                }
                if (name)
                        kiln_buf_addf(&have, NULL, "%s'%s'", have.len ? ", " : "", name);
        }
        if (!tag && json_array_size(m) == 1 && have.len == 0)
                return json_array_get(m, 0);
        kiln_error_new(err, KILN_ERR_NOTFOUND, "oci-layout '%s': no image tagged '%s' (it has: %s)",
                       l->dir, tag ? tag : "latest", have.len ? have.buf : "no tags");
        kiln_buf_release(&have);
        return NULL;
}

/* The JSON of a blob of the layout; errors name the blob's path. */
static json_t *load_json(struct layout *l, const char *digest, const char *data, size_t len,
                         struct kiln_error **err)
{
        _cleanup_free_ char *what = xasprintf("%s/blobs/sha256/%s", l->dir, digest + 7);

        return kiln_json_loadb(data, len, what, err);
}

/* From a descriptor (or a digest) to the manifest for `platform` and its config (both returned),
 * with its layers copied into the store. Only layers are stored: the image built on them names
 * them, while a manifest and config of their own would be orphans in the store. */
static int fetch_image(struct layout *l, const char *digest, json_int_t size,
                       const char *media_type, const char *platform, json_t **ret_manifest,
                       json_t **ret_config, struct kiln_error **err)
{
        _cleanup_free_ char *mdata = NULL, *cdata = NULL, *want = xstrdup(digest), *want_mt = NULL;
        _cleanup_json_ json_t *manifest = NULL, *cjson = NULL;
        json_t *config, *layers;
        const char *config_digest;
        size_t mlen, clen, i;
        unsigned depth;

        want_mt = media_type ? xstrdup(media_type) : NULL;
        for (depth = 0;; depth++) {
                json_t *d;

                free(TAKE_PTR(mdata));
                json_decref(TAKE_PTR(manifest));
                if (read_blob(l, want, size, MAX_INDEX, &mdata, &mlen, err) < 0)
                        return -1;
                manifest = load_json(l, want, mdata, mlen, err);
                if (!manifest)
                        return -1;
                if (!is_index(manifest, want_mt))
                        break;
                if (depth == MAX_DEPTH)
                        return kiln_error_new(err, KILN_ERR_LIMIT,
                                              "oci-layout '%s': indexes nested too deep", l->dir);
                d = choose_platform(l, manifest, platform, err);
                if (!d)
                        return -1;
                if (!kiln_json_get_string(d, "digest"))
                        return kiln_error_new(err, KILN_ERR_PARSE,
                                              "oci-layout '%s': an index entry has no digest",
                                              l->dir);
                free(want);
                free(want_mt);
                want = xstrdup(kiln_json_get_string(d, "digest"));
                want_mt = kiln_json_get_string(d, "mediaType")
                                  ? xstrdup(kiln_json_get_string(d, "mediaType"))
                                  : NULL;
                size = desc_size(d);
        }
        config = json_object_get(manifest, "config");
        layers = json_object_get(manifest, "layers");
        config_digest = kiln_json_get_string(config, "digest");
        if (!config_digest || !json_is_array(layers))
                return kiln_error_new(err, KILN_ERR_PARSE,
                                      "oci-layout '%s': %s is not an image manifest", l->dir, want);
        if (read_blob(l, config_digest, desc_size(config), MAX_CONFIG, &cdata, &clen, err) < 0)
                return -1;
        cjson = load_json(l, config_digest, cdata, clen, err);
        if (!cjson)
                return -1;
        if (!json_is_object(cjson))
                return kiln_error_new(err, KILN_ERR_PARSE,
                                      "oci-layout '%s': config %s is not an object", l->dir,
                                      config_digest);
        for (i = 0; i < json_array_size(layers); i++)
                if (copy_layer(l, json_array_get(layers, i), err) < 0)
                        return -1;
        *ret_manifest = TAKE_PTR(manifest);
        *ret_config = TAKE_PTR(cjson);
        return 0;
}

int bld_layout_image(struct layer_store *store, const char *ref, const char *platform,
                     struct bld_image_layers *ret, struct kiln_error **err)
{
        _cleanup_free_ char *dir = NULL, *tag = NULL, *digest = NULL, *idata = NULL, *marker = NULL;
        _cleanup_free_ char *index_path = NULL;
        _cleanup_json_ json_t *index = NULL, *version = NULL, *manifest = NULL, *config = NULL;
        _cleanup_close_ int rootfd = -1;
        struct layout l = { .store = store };
        size_t ilen, mlen;

        if (parse_ref(ref, &dir, &tag, &digest, err) < 0)
                return -1;
        l.dir = dir;
        rootfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (rootfd < 0) {
                if (errno == ENOENT || errno == ENOTDIR)
                        return kiln_error_new(err, KILN_ERR_NOTFOUND,
                                              "oci-layout '%s': no such directory", dir);
                return kiln_error_errno(err, KILN_ERR_IO, "oci-layout '%s'", dir);
        }
        l.rootfd = rootfd;
        if (kiln_read_file_in_root(rootfd, "oci-layout", 4096, &marker, &mlen, NULL) < 0)
                return kiln_error_new(
                        err, KILN_ERR_INVALID,
                        "oci-layout '%s': not an OCI image layout (it has no oci-layout file)",
                        dir);
        index_path = xasprintf("%s/oci-layout", dir);
        version = kiln_json_loadb(marker, mlen, index_path, err);
        free(TAKE_PTR(index_path));
        if (!version)
                return -1;
        if (!kiln_json_get_string(version, "imageLayoutVersion"))
                return kiln_error_new(
                        err, KILN_ERR_INVALID,
                        "oci-layout '%s': its oci-layout file has no imageLayoutVersion", dir);
        if (digest) {
                /* A digest names a blob of the layout, listed in index.json or not. */
                if (fetch_image(&l, digest, -1, NULL, platform, &manifest, &config, err) < 0)
                        return -1;
        } else {
                json_t *d;

                if (kiln_read_file_in_root(rootfd, "index.json", MAX_INDEX, &idata, &ilen, err) < 0)
                        return kiln_error_wrap(err, "oci-layout '%s'", dir);
                index_path = xasprintf("%s/index.json", dir);
                index = kiln_json_loadb(idata, ilen, index_path, err);
                if (!index)
                        return -1;
                d = find_tag(&l, index, tag, err);
                if (!d)
                        return -1;
                if (fetch_image(&l,
                                kiln_json_get_string(d, "digest")
                                        ? kiln_json_get_string(d, "digest")
                                        : "",
                                desc_size(d), kiln_json_get_string(d, "mediaType"), platform,
                                &manifest, &config, err) < 0)
                        return -1;
        }
        return bld_image_layers_parse(manifest, config, ref, ret, err);
}
