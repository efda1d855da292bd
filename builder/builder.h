/*
 * The executor's public header. For now: assembling images (config, manifest) from layers in the
 * local store; `kiln build` grows here.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "builder/common/error.h"
#include "builder/common/json-util.h"
#include "layers/layers.h"
#include "parser/parser.h"
#include "registry/registry.h"

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

/* An image's layers as the store has them: blob digests with their diff_ids, bottom first,
 * and its config. */
struct bld_image_layers {
        char (*digests)[LAYER_DIGEST_SIZE];
        char (*diff_ids)[LAYER_DIGEST_SIZE];
        char **media_types;
        uint64_t *sizes;
        size_t n;
        json_t *config; /* the image config, owned */
};

/**
 * Reads a named image's manifest and config from the store and pairs its layers with their
 * diff_ids. PARSE for a manifest or config that does not make sense, NOTFOUND for a missing name.
 */
int bld_image_layers(struct layer_store *store, const char *name, struct bld_image_layers *ret,
                     struct kiln_error **err);
/** The same from a manifest and config already read (`config` is referenced, not taken);
 * `name` is for messages. */
int bld_image_layers_parse(json_t *manifest, json_t *config, const char *name,
                           struct bld_image_layers *ret, struct kiln_error **err);
void bld_image_layers_release(struct bld_image_layers *l);

/** "os/arch[/variant]" split into an image's fields (pointers into `platform`, modified). */
void bld_platform_split(char *platform, const char **ret_os, const char **ret_arch,
                        const char **ret_variant);

/** SOURCE_DATE_EPOCH from the environment, or -1 when unset or invalid. */
int64_t bld_source_date_epoch(void);

/* ------------------------------------------------------------------------------------ */
/* kiln build (builder/build.c and the files it uses)                                     */
/* ------------------------------------------------------------------------------------ */

enum bld_isolation {
        BLD_ISOLATION_AUTO,   /* probe: root when running as root, else a user namespace */
        BLD_ISOLATION_ROOT,   /* namespaces without a user namespace (needs root) */
        BLD_ISOLATION_USERNS, /* namespaces in a user namespace (rootless) */
        BLD_ISOLATION_NONE,   /* no namespaces: run in the current root, as kaniko */
        _BLD_ISOLATION_MAX,
};

enum bld_network {
        BLD_NETWORK_HOST,
        BLD_NETWORK_NONE,
        _BLD_NETWORK_MAX,
};

/* What the executor reports, for the CLI's progress printer (and, later, a live view). */
enum bld_event_kind {
        BLD_EVENT_INFO,        /* text: a message about the build as a whole */
        BLD_EVENT_WARNING,     /* text: a warning */
        BLD_EVENT_STEP_START,  /* text: the instruction, as written */
        BLD_EVENT_STEP_OUTPUT, /* text: one line of a RUN's output, without its newline */
        BLD_EVENT_STEP_DONE,   /* elapsed */
        BLD_EVENT_STEP_CACHED, /* the step's layer came from the cache: nothing ran */
        BLD_EVENT_STEP_MISS,   /* text: why the step missed the cache, against its most recent
                                * build ("RUN: build-arg VERSION changed (1.2 -> 1.3)");
                                * no_record: it has none to compare with */
        BLD_EVENT_STEP_ERROR,  /* text: what went wrong; elapsed */
        _BLD_EVENT_MAX,
};

struct bld_event {
        enum bld_event_kind kind;
        unsigned step;         /* #N, numbered as steps start; 0 for INFO and WARNING */
        const char *stage;     /* the stage's name ("build", "stage-0") */
        unsigned index, count; /* the instruction's place in its stage: FROM is 1 of count */
        const char *text;
        size_t len;
        double elapsed;        /* seconds since the step started */
        bool no_record;        /* STEP_MISS: no earlier build of the step was recorded */
};

/* A --cache-from or --cache-to (BuildKit's syntax). */
enum bld_cache_kind {
        BLD_CACHE_REGISTRY,   /* type=registry,ref=REF: a cache manifest (from: or an image's inline cache) */
        BLD_CACHE_INLINE,     /* type=inline (--cache-to only): the image's config carries its cache */
};

struct bld_cache_spec {
        enum bld_cache_kind kind;
        char *ref;
        bool max;             /* mode=max: every stage's steps; min (the default): the image's */
        bool ignore_error;    /* ignore-error=true: an export that fails is a warning */
};

/** Parses "type=registry,ref=R[,mode=min|max][,ignore-error=true]", "type=inline" (to) or a bare
 * reference (from: "type=registry,ref=R"). INVALID with a one-line message otherwise. */
int bld_cache_spec_parse(const char *s, bool to, struct bld_cache_spec *ret, struct kiln_error **err);
void bld_cache_spec_release(struct bld_cache_spec *s);

struct bld_build_opts {
        struct layer_store *store;
        struct reg_client *registry;     /* to pull base images the store lacks */
        const struct df_graph *graph;    /* the parsed Dockerfile, with --target and build args */
        int context_fd;                  /* O_PATH directory of the build context */
        const struct df_ignore *ignore;  /* its .dockerignore */
        bool context_spooled;            /* it lives for this build only (a tar on stdin): no
                                          * record of its files' digests is kept */
        const char *platform;            /* the target platform, "os/arch[/variant]" */
        enum bld_isolation isolation;
        enum bld_network network;
        enum layer_compression compression;
        bool docker;                     /* Docker schema2 media types instead of OCI */
        bool pull;                       /* pull base images even when the store has them */
        bool no_cache;                   /* run every step (entries are still written) */
        const char *cache_scope;         /* where the build comes from (the context's and the
                                          * Dockerfile's paths): with a stage and a step's place
                                          * in it, the identity under which each step's inputs
                                          * are recorded to explain its next miss; NULL: none */
        const struct bld_cache_spec *cache_from; /* registry caches to read (needs `registry`) */
        size_t n_cache_from;
        const struct bld_cache_spec *cache_to;   /* caches to write */
        size_t n_cache_to;
        const bool *no_cache_stages;     /* per graph stage: run its every step; may be NULL */
        unsigned jobs;                   /* stages built at once; 0: the number of CPUs */
        int64_t source_date_epoch;       /* -1: none */
        /** Called for every event, one at a time (never concurrently). */
        void (*event)(void *ctx, const struct bld_event *ev);
        void *event_ctx;
};

struct bld_build_result {
        char manifest_digest[LAYER_DIGEST_SIZE];
        char config_digest[LAYER_DIGEST_SIZE];
        uint64_t manifest_size;
        const char *manifest_media_type;
        char *isolation_why;             /* which isolation was used and why; caller frees */
};

/**
 * Builds the graph's target: the stages it needs in dependency order, independent ones at the
 * same time; RUN in the sandbox, COPY and ADD through root directory fds; each step's changes
 * a layer in the store. Stores the image's config and manifest (the caller names it with
 * layer_store_tag()). Errors carry the instruction's position ("Dockerfile:7:1: RUN: ...").
 */
int bld_build(const struct bld_build_opts *opts, struct bld_build_result *ret, struct kiln_error **err);
