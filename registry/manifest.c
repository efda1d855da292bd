/* What an image manifest names: its config and layers, checked against kiln's limits. */
#include <stdlib.h>
#include <string.h>

#include "builder/common/json-util.h"
#include "builder/common/xalloc.h"
#include "registry/registry-internal.h"

int reg_manifest_blobs(const char *body, size_t len, const char *what, struct reg_blob **ret, size_t *ret_n,
                       struct kiln_error **err)
{
        _cleanup_json_ json_t *j = kiln_json_loadb(body, len, "manifest", err);
        json_t *layers, *config;
        struct reg_blob *v;
        size_t n, i, k, out = 0;

        if (!j)
                return kiln_error_wrap(err, "%s", what);
        config = json_object_get(j, "config");
        layers = json_object_get(j, "layers");
        if (!json_is_object(config) || !json_is_array(layers))
                return kiln_error_new(err, KILN_ERR_PARSE, "%s: the manifest has no config or layers", what);
        n = json_array_size(layers);
        if (n > REG_MAX_LAYERS)
                return kiln_error_new(err, KILN_ERR_LIMIT, "%s: %zu layers is more than kiln's limit of %u", what, n,
                                      REG_MAX_LAYERS);
        v = xcalloc(n + 1, sizeof(*v));
        for (i = 0; i <= n; i++) {
                json_t *d = i == 0 ? config : json_array_get(layers, i - 1);
                const char *digest = kiln_json_get_string(d, "digest");
                json_t *size = json_object_get(d, "size");

                if (!layer_digest_valid(digest) || !json_is_integer(size) || json_integer_value(size) < 0) {
                        free(v);
                        return kiln_error_new(err, KILN_ERR_PARSE, "%s: %s %zu has a bad digest or size", what,
                                              i == 0 ? "the config" : "layer", i);
                }
                if (i == 0 && json_integer_value(size) > REG_MAX_CONFIG) {
                        free(v);
                        return kiln_error_new(err, KILN_ERR_LIMIT, "%s: the config is larger than %u bytes", what,
                                              REG_MAX_CONFIG);
                }
                for (k = 0; k < out; k++)
                        if (strcmp(v[k].digest, digest) == 0)
                                break;
                if (k < out)
                        continue; /* the same layer twice is one blob */
                memcpy(v[out].digest, digest, LAYER_DIGEST_SIZE);
                v[out].size = (uint64_t) json_integer_value(size);
                out++;
        }
        *ret = v;
        *ret_n = out;
        return 0;
}
