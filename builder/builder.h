/*
 * The executor's public header. For now: assembling images (config, manifest) from layers in the
 * local store; `kiln build` grows here.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "builder/common/error.h"
#include "layers/layers.h"

#define BLD_OCI_MANIFEST    "application/vnd.oci.image.manifest.v1+json"
#define BLD_OCI_CONFIG      "application/vnd.oci.image.config.v1+json"
#define BLD_DOCKER_MANIFEST "application/vnd.docker.distribution.manifest.v2+json"
#define BLD_DOCKER_CONFIG   "application/vnd.docker.container.image.v1+json"

/* An image being assembled: its layers (bottom first) and config fields. */
struct bld_image {
        const char *os;           /* "linux" */
        const char *architecture; /* "amd64" */
        const char *variant;      /* NULL or "v7" */
        int64_t created;          /* seconds since the epoch */
        const char *created_by;   /* history text for each layer */
        const struct layer_desc *layers;
        size_t n_layers;
        bool docker; /* Docker schema2 media types instead of OCI */
};

/* What was stored. */
struct bld_image_ref {
        char manifest_digest[LAYER_DIGEST_SIZE];
        char config_digest[LAYER_DIGEST_SIZE];
        uint64_t manifest_size;
        const char *manifest_media_type;
};

/**
 * Writes the image's config and manifest into the store (the layers must already be there) and
 * returns their digests. Names are given with layer_store_tag().
 */
int bld_image_store(struct layer_store *store, const struct bld_image *img,
                    struct bld_image_ref *ret, struct kiln_error **err);

/* An image's layers as the store has them: blob digests with their diff_ids, bottom first. */
struct bld_image_layers {
        char (*digests)[LAYER_DIGEST_SIZE];
        char (*diff_ids)[LAYER_DIGEST_SIZE];
        size_t n;
};

/**
 * Reads a named image's manifest and config from the store and pairs its layers with their
 * diff_ids. PARSE for a manifest or config that does not make sense, NOTFOUND for a missing name.
 */
int bld_image_layers(struct layer_store *store, const char *name, struct bld_image_layers *ret,
                     struct kiln_error **err);
void bld_image_layers_release(struct bld_image_layers *l);

/** "os/arch[/variant]" split into an image's fields (pointers into `platform`, modified). */
void bld_platform_split(char *platform, const char **ret_os, const char **ret_arch,
                        const char **ret_variant);

/** SOURCE_DATE_EPOCH from the environment, or -1 when unset or invalid. */
int64_t bld_source_date_epoch(void);
