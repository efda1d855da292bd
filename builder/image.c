/* Image config and manifest JSON for layers in the store (jansson; never hand-written JSON). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "builder/builder.h"
#include "builder/common/json-util.h"

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
