/* Image config and manifest JSON for layers in the store (jansson; never hand-written JSON). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "builder/builder.h"
#include "builder/common/json-util.h"
#include "builder/common/xalloc.h"

static char *iso8601(int64_t t)
{
        char buf[64];
        time_t tt = (time_t) t;
        struct tm tm;

        gmtime_r(&tt, &tm);
        strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
        return strdup(buf);
}

static int store_json(struct layer_store *store, json_t *j, char digest[LAYER_DIGEST_SIZE],
                      uint64_t *ret_size, struct kiln_error **err)
{
        _cleanup_free_ char *text = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);

        if (!text)
                return kiln_error_new(err, KILN_ERR_GENERIC, "cannot format JSON");
        if (ret_size)
                *ret_size = strlen(text);
        return layer_store_put(store, text, strlen(text), digest, err);
}

int bld_image_store(struct layer_store *store, const struct bld_image *img,
                    struct bld_image_ref *ret, struct kiln_error **err)
{
        _cleanup_free_ char *created = iso8601(img->created);
        _cleanup_json_ json_t *config = NULL, *manifest = NULL;
        json_t *diff_ids = json_array(), *history = json_array(), *layers = json_array();
        uint64_t config_size;
        size_t i;

        for (i = 0; i < img->n_layers; i++) {
                const struct layer_desc *l = &img->layers[i];
                json_array_append_new(diff_ids, json_string(l->diff_id));
                json_array_append_new(history,
                                      json_pack("{s:s, s:s}", "created", created, "created_by",
                                                img->created_by ? img->created_by : ""));
                json_array_append_new(layers,
                                      json_pack("{s:s, s:s, s:I}", "mediaType",
                                                layer_media_type(l->compression, img->docker),
                                                "digest", l->digest, "size", (json_int_t) l->size));
        }
        config = json_pack("{s:s, s:s, s:s}", "created", created, "architecture", img->architecture,
                           "os", img->os);
        if (img->variant && img->variant[0])
                json_object_set_new(config, "variant", json_string(img->variant));
        json_object_set_new(config, "config", json_object());
        json_object_set_new(config, "rootfs",
                            json_pack("{s:s, s:o}", "type", "layers", "diff_ids", diff_ids));
        json_object_set_new(config, "history", history);
        if (store_json(store, config, ret->config_digest, &config_size, err) < 0) {
                json_decref(layers);
                return kiln_error_wrap(err, "image config");
        }
        ret->manifest_media_type = img->docker ? BLD_DOCKER_MANIFEST : BLD_OCI_MANIFEST;
        manifest =
                json_pack("{s:i, s:s, s:{s:s, s:s, s:I}, s:o}", "schemaVersion", 2, "mediaType",
                          ret->manifest_media_type, "config", "mediaType",
                          img->docker ? BLD_DOCKER_CONFIG : BLD_OCI_CONFIG, "digest",
                          ret->config_digest, "size", (json_int_t) config_size, "layers", layers);
        if (store_json(store, manifest, ret->manifest_digest, &ret->manifest_size, err) < 0)
                return kiln_error_wrap(err, "image manifest");
        return 0;
}

void bld_platform_split(char *platform, const char **ret_os, const char **ret_arch,
                        const char **ret_variant)
{
        char *arch = strchr(platform, '/'), *variant = NULL;

        if (arch) {
                *arch++ = '\0';
                variant = strchr(arch, '/');
                if (variant)
                        *variant++ = '\0';
        }
        *ret_os = platform;
        *ret_arch = arch ? arch : "";
        *ret_variant = variant;
}

int64_t bld_source_date_epoch(void)
{
        const char *s = getenv("SOURCE_DATE_EPOCH");
        char *end;
        long long v;

        if (!s || !*s)
                return -1;
        errno = 0;
        v = strtoll(s, &end, 10);
        if (*end || errno || v < 0)
                return -1;
        return v;
}

int bld_image_layers(struct layer_store *store, const char *name, struct bld_image_layers *ret,
                     struct kiln_error **err)
{
        struct layer_ref ref;
        _cleanup_free_ char *mdata = NULL, *cdata = NULL;
        _cleanup_json_ json_t *manifest = NULL, *config = NULL;
        const char *config_digest;
        size_t mlen, clen;

        if (layer_store_resolve(store, name, &ref, err) < 0)
                return -1;
        if (layer_store_read(store, ref.digest, 4 << 20, &mdata, &mlen, err) < 0) {
                layer_ref_release(&ref);
                return -1;
        }
        manifest = kiln_json_loadb(mdata, mlen, ref.digest, err);
        layer_ref_release(&ref);
        if (!manifest)
                return kiln_error_wrap(err, "image '%s': manifest", name);
        config_digest = kiln_json_get_string(json_object_get(manifest, "config"), "digest");
        if (!config_digest)
                return kiln_error_new(err, KILN_ERR_PARSE, "image '%s': not an image manifest",
                                      name);
        if (layer_store_read(store, config_digest, 16 << 20, &cdata, &clen, err) < 0)
                return kiln_error_wrap(err, "image '%s': config", name);
        if (!(config = kiln_json_loadb(cdata, clen, config_digest, err)))
                return kiln_error_wrap(err, "image '%s': config", name);
        return bld_image_layers_parse(manifest, config, name, ret, err);
}

int bld_image_layers_parse(json_t *manifest, json_t *config, const char *name,
                           struct bld_image_layers *ret, struct kiln_error **err)
{
        json_t *layers = json_object_get(manifest, "layers"), *diff_ids;
        size_t i, n;

        if (!json_is_array(layers))
                return kiln_error_new(err, KILN_ERR_PARSE, "image '%s': not an image manifest",
                                      name);
        diff_ids = json_object_get(json_object_get(config, "rootfs"), "diff_ids");
        n = json_array_size(layers);
        if (!json_is_array(diff_ids) || json_array_size(diff_ids) != n)
                return kiln_error_new(err, KILN_ERR_PARSE,
                                      "image '%s': the config lists %zu diff_ids for %zu layers",
                                      name, json_array_size(diff_ids), n);
        ret->digests = xcalloc(n + 1, sizeof(*ret->digests));
        ret->diff_ids = xcalloc(n + 1, sizeof(*ret->diff_ids));
        ret->media_types = xcalloc(n + 1, sizeof(*ret->media_types));
        ret->sizes = xcalloc(n + 1, sizeof(*ret->sizes));
        ret->n = n;
        ret->config = json_incref(config);
        for (i = 0; i < n; i++) {
                json_t *l = json_array_get(layers, i);
                const char *d = kiln_json_get_string(l, "digest");
                const char *id = json_string_value(json_array_get(diff_ids, i));
                const char *mt = kiln_json_get_string(l, "mediaType");
                ret->media_types[i] = xstrdup(mt ? mt : "application/vnd.oci.image.layer.v1.tar+gzip");
                ret->sizes[i] = (uint64_t) json_integer_value(json_object_get(l, "size"));
                if (!layer_digest_valid(d) || !layer_digest_valid(id)) {
                        bld_image_layers_release(ret);
                        return kiln_error_new(err, KILN_ERR_PARSE,
                                              "image '%s': layer %zu has a bad digest", name,
                                              i + 1);
                }
                memcpy(ret->digests[i], d, LAYER_DIGEST_SIZE);
                memcpy(ret->diff_ids[i], id, LAYER_DIGEST_SIZE);
        }
        return 0;
}

void bld_image_layers_release(struct bld_image_layers *l)
{
        size_t i;

        for (i = 0; l->media_types && i < l->n; i++)
                free(l->media_types[i]);
        free(l->media_types);
        free(l->sizes);
        json_decref(l->config);
        free(l->digests);
        free(l->diff_ids);
        memset(l, 0, sizeof(*l));
}
