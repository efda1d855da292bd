/*
 * kiln's registry client: image references, credentials and auth, pull of images into the local
 * store and push out of it, over the OCI distribution protocol (libcurl, in registry/http.c only).
 * Nothing here prints; progress and warnings go to callbacks.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "builder/common/error.h"
#include "layers/layers.h"

/* ------------------------------------------------------------------------------------ */
/* Image references (registry/reference.c)                                                */
/* ------------------------------------------------------------------------------------ */

/* A normalised reference, as Docker normalises: "busybox" is docker.io/library/busybox:latest. */
struct reg_ref {
        char *domain;      /* "docker.io", "localhost:5000", "ghcr.io" */
        char *path;        /* "library/busybox", "app" */
        char *tag;         /* "latest"; NULL when only a digest was given */
        char *digest;      /* "sha256:..." or NULL */
};

/**
 * Parses and normalises a reference (name, name:tag, name@digest, name:tag@digest). A first
 * component with '.' or ':' or equal to "localhost" is a registry host; otherwise the domain is
 * docker.io, and single-component docker.io paths get "library/". "index.docker.io" is
 * docker.io. INVALID, naming what is wrong, for anything Docker rejects (upper case in the path,
 * a bad tag, a malformed digest, a name over 255 characters).
 */
int reg_ref_parse(const char *s, struct reg_ref *ret, struct kiln_error **err);

/** The normalised form: "docker.io/library/busybox:latest", "host/app@sha256:..."
 * (both tag and digest when both were given). Caller frees. */
char *reg_ref_string(const struct reg_ref *r);

/** "domain/path" without tag or digest. Caller frees. */
char *reg_ref_repository(const struct reg_ref *r);

/** The host to talk to: "registry-1.docker.io" for docker.io, else the domain. */
const char *reg_ref_endpoint(const struct reg_ref *r);

/** Frees the fields; leaves a zeroed struct. */
void reg_ref_release(struct reg_ref *r);

/** Whether `tag` is a valid tag: [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}. */
bool reg_tag_valid(const char *tag);

/* ------------------------------------------------------------------------------------ */
/* WWW-Authenticate challenges (registry/challenge.c)                                     */
/* ------------------------------------------------------------------------------------ */

struct reg_challenge {
        char *scheme;      /* lower case: "basic", "bearer" */
        char **keys;       /* lower case */
        char **values;     /* unquoted, escapes resolved */
        size_t n;
};

/**
 * Parses a WWW-Authenticate header value (RFC 7235): one or several challenges, each a scheme
 * and comma-separated auth-params, values as tokens or quoted strings with backslash escapes.
 * PARSE for what cannot be read. Returns the challenges in order.
 */
int reg_challenges_parse(const char *header, struct reg_challenge **ret, size_t *ret_n,
                         struct kiln_error **err);

/** A parameter's value (key compared case-insensitively), or NULL. */
const char *reg_challenge_param(const struct reg_challenge *c, const char *key);

void reg_challenges_free(struct reg_challenge *c, size_t n);

/* ------------------------------------------------------------------------------------ */
/* Credentials (registry/credentials.c)                                                   */
/* ------------------------------------------------------------------------------------ */

struct reg_credentials {
        char *username;
        char *password;
        char *identity_token;  /* an OAuth refresh token instead of a password, or NULL */
};

/**
 * Finds credentials for a registry host ("docker.io", "localhost:5000"). Looked up in order:
 * REGISTRY_AUTH_FILE or $XDG_RUNTIME_DIR/containers/auth.json; then $DOCKER_CONFIG/config.json
 * or ~/.docker/config.json: credHelpers[host] (running `docker-credential-NAME get`), else
 * credsStore, else auths[host] ("auth" base64 user:password, or username/password, and
 * identitytoken). docker.io also matches "https://index.docker.io/v1/", and an auths key may be
 * written with a scheme or a path. NOTFOUND when there are none; PARSE for a broken file.
 */
int reg_credentials_lookup(const char *host, struct reg_credentials *ret, struct kiln_error **err);

/**
 * Saves credentials for a host in the docker config (through credsStore / credHelpers when
 * configured, else as auths[host].auth), written atomically with mode 0600. For docker.io the
 * key is "https://index.docker.io/v1/".
 */
int reg_credentials_store(const char *host, const char *username, const char *password,
                          struct kiln_error **err);

/** Removes a host's credentials from the docker config (and the helper). NOTFOUND when absent. */
int reg_credentials_erase(const char *host, struct kiln_error **err);

/** Wipes and frees the fields. */
void reg_credentials_release(struct reg_credentials *c);

/* ------------------------------------------------------------------------------------ */
/* The client (registry/client.c, http.c, auth.c, pull.c, push.c)                         */
/* ------------------------------------------------------------------------------------ */

struct reg_client;

struct reg_client_opts {
        const char *const *insecure;     /* hosts reached over plain http or unverified TLS */
        size_t n_insecure;
        const char *certs_dirs;          /* ':'-separated certs.d roots; NULL:
                                          * /etc/docker/certs.d:/etc/containers/certs.d */
        const char *registries_conf;     /* mirrors and insecure hosts; NULL: the defaults */
        unsigned parallel;               /* concurrent blob transfers; 0: 4 */
        unsigned retries;                /* attempts for a transient failure; 0: 5 */
        unsigned backoff_ms;             /* first retry delay, doubling; 0: 200 */
        /** Progress: a line of text, for the CLI to print. May be NULL. */
        void (*progress)(void *ctx, const char *msg);
        void *progress_ctx;
};

/** A client with its connection cache, token cache and settings. */
int reg_client_new(const struct reg_client_opts *opts, struct reg_client **ret,
                   struct kiln_error **err);
struct reg_client *reg_client_free(struct reg_client *c);

struct reg_pull_opts {
        const char *platform;            /* "os/arch[/variant]" to take from an index; NULL:
                                          * linux/amd64 (the CLI passes the host's) */
        const char *local_name;          /* name in the store; NULL: the normalised reference */
};

struct reg_pull_result {
        char manifest_digest[LAYER_DIGEST_SIZE];   /* the platform's manifest */
        char index_digest[LAYER_DIGEST_SIZE];      /* the index it came from, or "" */
        uint64_t bytes_fetched;
        unsigned blobs_fetched, blobs_present;
};

/**
 * Pulls an image into the store and names it: the manifest (choosing the platform from an
 * index), then the config and layers not already there, verified while streaming. NOTFOUND
 * when the registry has no such image or no entry for the platform; AUTH when refused.
 */
int reg_pull(struct reg_client *c, struct layer_store *store, const char *ref,
             const struct reg_pull_opts *opts, struct reg_pull_result *ret, struct kiln_error **err);

enum reg_push_format {
        REG_FORMAT_KEEP,                 /* the manifest as the store has it */
        REG_FORMAT_OCI,                  /* OCI media types */
        REG_FORMAT_DOCKER,               /* Docker schema2 media types */
};

struct reg_push_opts {
        enum reg_push_format format;     /* converting changes the manifest's digest */
        const char *const *tags;         /* more tags in the destination repository */
        size_t n_tags;
};

struct reg_push_result {
        char manifest_digest[LAYER_DIGEST_SIZE];
        uint64_t bytes_sent;
        unsigned blobs_sent, blobs_present, blobs_mounted;
};

/**
 * Pushes the image the store names `local` to `dest` (a reference with a tag, a digest or
 * both): blobs the registry lacks (mounted from another repository when kiln knows one holds
 * them), then the manifest under the tag and each of opts->tags. Never reports success for an
 * incomplete push. INVALID for a bad extra tag.
 */
int reg_push(struct reg_client *c, struct layer_store *store, const char *local, const char *dest,
             const struct reg_push_opts *opts, struct reg_push_result *ret, struct kiln_error **err);

/**
 * Pushes a manifest given as bytes (an image manifest naming blobs the store holds: a build
 * cache's, say) to `dest`: its blobs first (skipped when present, mounted when kiln knows
 * another repository there has them), then the manifest under dest's tag or digest.
 */
int reg_push_manifest(struct reg_client *c, struct layer_store *store, const char *dest, const char *body,
                      size_t len, const char *media_type, struct reg_push_result *ret, struct kiln_error **err);

/** Whether the repository `ref` names holds blob `digest` (HEAD): 1 yes, 0 no, -1 error. */
int reg_blob_exists(struct reg_client *c, const char *ref, const char *digest, struct kiln_error **err);

/* A blob to fetch: its digest and size. */
struct reg_blob_desc {
        const char *digest;
        uint64_t size;
};

/**
 * Fetches blobs of the repository `ref` names (its tag or digest is not used) into the store,
 * in parallel, each verified against its digest; blobs the store has are skipped. *ret_bytes
 * (may be NULL): bytes downloaded.
 */
int reg_fetch_blobs(struct reg_client *c, struct layer_store *store, const char *ref,
                    const struct reg_blob_desc *blobs, size_t n, uint64_t *ret_bytes, struct kiln_error **err);

/* What `kiln inspect` shows: a manifest or index as the registry sent it, and the config. */
struct reg_manifest {
        char *body;                      /* the manifest or index, verbatim */
        size_t len;
        char *media_type;
        char digest[LAYER_DIGEST_SIZE];
        char index_digest[LAYER_DIGEST_SIZE]; /* the index it was chosen from, or "" */
        char *config;                    /* the image config, when asked for; else NULL */
        size_t config_len;
};

/**
 * Fetches a manifest without storing anything. With `platform`, an index is resolved to that
 * platform's manifest; with `want_config`, the config blob is fetched too (verified), from the
 * manifest of `platform` (NULL: linux/amd64) when the reference names an index.
 */
int reg_inspect(struct reg_client *c, const char *ref, const char *platform, bool want_config,
                struct reg_manifest *ret, struct kiln_error **err);
void reg_manifest_release(struct reg_manifest *m);

/** Checks credentials against a registry (GET /v2/ with them): AUTH when refused. */
int reg_login_check(struct reg_client *c, const char *host, const char *username,
                    const char *password, struct kiln_error **err);

/** libcurl's version, for `kiln version`. */
const char *reg_curl_version(void);

DEFINE_TRIVIAL_CLEANUP_FUNC(struct reg_client *, reg_client_free)

/* ------------------------------------------------------------------------------------ */
/* Downloads for ADD <url> (registry/fetch.c)                                            */
/* ------------------------------------------------------------------------------------ */

/** Whether an ADD source is an http:// or https:// URL (a git one included). */
bool reg_url_is_http(const char *s);

/** Whether an ADD source names a git repository, as BuildKit's gitutil.ParseGitRef decides:
 * git://, ssh://, "user@host:path", or an http(s) URL whose path ends in ".git". */
bool reg_url_is_git(const char *s);

/** The file name a downloaded URL gets (BuildKit): the last element of its decoded path, or
 * "__unnamed__" when there is none ("http://host/", "http://host?q"). Caller frees. */
char *reg_url_file_name(const char *url);

/** The URL for messages: a password in it becomes "xxxxx" (as BuildKit shows it). Caller
 * frees. */
char *reg_url_redacted(const char *url);

/* A download. */
struct reg_fetched {
        int fd;                        /* an unnamed file (O_RDWR, O_CLOEXEC), at offset 0 */
        uint64_t size;
        char digest[LAYER_DIGEST_SIZE];
        bool has_mtime;                /* the response had a Last-Modified header: `mtime` */
        struct timespec mtime;
};

/**
 * Downloads `url` (http or https, following redirects) into an unnamed file in the directory
 * `dirfd`, hashing it with SHA-256 as it streams, and checks `checksum` ("sha256:<hex>", or
 * NULL) against it. Messages do not name the URL: the caller does. NET for a transfer that
 * failed or a status outside 2xx ("HTTP 404"), DIGEST for a checksum mismatch ("checksum
 * mismatch: expected sha256:..., got sha256:..."), UNSUPPORTED for another algorithm than
 * sha256, IO. On success *ret owns the fd (reg_fetched_release()).
 */
int reg_fetch_url(const char *url, int dirfd, const char *checksum, struct reg_fetched *ret,
                  struct kiln_error **err);

/** Closes a download's file; accepts NULL. */
void reg_fetched_release(struct reg_fetched *f);
