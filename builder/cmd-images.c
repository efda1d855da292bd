/* kiln images: the names in the local store, with digests and sizes. */
#include <stdlib.h>
#include <string.h>

#include "builder/cli.h"
#include "builder/common/json-util.h"
#include "builder/common/xalloc.h"

struct images_opts {
        const char *root;
        bool full;
};

static const struct option images_options[] = {
        CLI_ROOT_OPTION,
        { .name = "no-trunc", .has_arg = no_argument, .val = 'n' },
        {},
};

static int images_option(void *state, int opt, const char *arg, struct kiln_error **err)
{
        struct images_opts *o = state;

        switch (opt) {
        case 'R':
                o->root = arg;
                return 0;
        case 'n':
                o->full = true;
                return 0;
        default:
                kiln_error_new(err, KILN_ERR_INVALID, "unknown option");
                return CLI_USAGE;
        }
}

/* The bytes an image takes in the store: manifest, config and layers (an index counts its
 * own size only). */
static uint64_t image_size(struct layer_store *store, const struct layer_ref *ref)
{
        _cleanup_free_ char *data = NULL;
        _cleanup_json_ json_t *m = NULL;
        json_t *layers;
        uint64_t total = ref->size;
        size_t len, i;

        if (layer_store_read(store, ref->digest, 4 << 20, &data, &len, NULL) < 0 ||
            !(m = kiln_json_loadb(data, len, ref->digest, NULL)))
                return total;
        total += (uint64_t) json_integer_value(
                json_object_get(json_object_get(m, "config"), "size"));
        layers = json_object_get(m, "layers");
        for (i = 0; i < json_array_size(layers); i++)
                total += (uint64_t) json_integer_value(
                        json_object_get(json_array_get(layers, i), "size"));
        return total;
}

static int run_images(void *state, char **args, unsigned n_args, struct cli_ctx *ctx,
                      struct kiln_error **err)
{
        struct images_opts *o = state;
        _cleanup_(layer_store_freep) struct layer_store *store = NULL;
        struct layer_ref *refs = NULL;
        size_t n, i, width = 4;

        if (cli_open_store(o->root, &store, err) < 0 || layer_store_list(store, &refs, &n, err) < 0)
                return -1;
        for (i = 0; i < n; i++)
                if (strlen(refs[i].name) > width)
                        width = strlen(refs[i].name);
        kiln_buf_addf(&ctx->out, NULL, "%-*s  %-*s  %s\n", (int) width, "NAME", o->full ? 71 : 19,
                      "DIGEST", "SIZE");
        for (i = 0; i < n; i++) {
                char size[32];
                cli_human_size(image_size(store, &refs[i]), size);
                kiln_buf_addf(&ctx->out, NULL, "%-*s  %-*.*s  %s\n", (int) width, refs[i].name,
                              o->full ? 71 : 19, o->full ? 71 : 19, refs[i].digest, size);
        }
        layer_refs_free(refs, n);
        return 0;
}

const struct cli_verb cli_verb_images = {
        .name = "images",
        .synopsis = "[--root DIR] [--no-trunc]",
        .summary = "list the images in the local store",
        .help = "Options:\n" CLI_ROOT_HELP "  --no-trunc             show whole digests\n",
        .options = images_options,
        .min_args = 0,
        .max_args = 0,
        .state_size = sizeof(struct images_opts),
        .option = images_option,
        .run = run_images,
};
