/* Shared by the files of registry/; never included from outside this folder. */
#pragma once

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "builder/common/strbuf.h"
#include "registry/registry.h"

#define REG_MAX_MANIFEST (4u << 20)   /* a manifest or index */
#define REG_MAX_CONFIG (16u << 20)    /* an image config */
#define REG_MAX_LAYERS 1024u
#define REG_MAX_TOKEN (64u << 10)     /* a token response */
#define REG_MAX_ERROR_BODY (64u << 10)

#define MT_OCI_INDEX "application/vnd.oci.image.index.v1+json"
#define MT_OCI_MANIFEST "application/vnd.oci.image.manifest.v1+json"
#define MT_OCI_CONFIG "application/vnd.oci.image.config.v1+json"
#define MT_DOCKER_LIST "application/vnd.docker.distribution.manifest.list.v2+json"
#define MT_DOCKER_MANIFEST "application/vnd.docker.distribution.manifest.v2+json"
#define MT_DOCKER_CONFIG "application/vnd.docker.container.image.v1+json"

/* Where and how to reach a registry host. */
struct reg_endpoint {
        char *host;                 /* "127.0.0.1:5000", "registry-1.docker.io" */
        bool http;                  /* plain http */
        bool skip_verify;           /* https without certificate checks */
        char *ca_pem;               /* system CAs plus certs.d ones, or NULL for the defaults */
        size_t ca_len;
        char *client_cert, *client_key; /* from certs.d, or NULL */
};

/* A bearer token for (host, scope). */
struct reg_token {
        char *host;
        char *scope;
        char *token;
        int64_t expires;            /* monotonic seconds */
};

/* A registries.conf [[registry]] entry. */
struct reg_conf_entry {
        char *location;             /* host[/path prefix] */
        bool insecure;
        char **mirrors;
        bool *mirror_insecure;
        size_t n_mirrors;
};

struct reg_client {
        struct reg_client_opts opts;
        char **insecure;
        size_t n_insecure;
        char *certs_dirs;
        struct reg_conf_entry *conf;
        size_t n_conf;
        void *share;                /* CURLSH */
        pthread_mutex_t share_locks[8];
        pthread_mutex_t lock;       /* tokens, endpoints, progress */
        struct reg_token *tokens;
        size_t n_tokens, alloc_tokens;
        struct reg_endpoint *endpoints;
        size_t n_endpoints, alloc_endpoints;
};

/* ---- http.c: one exchange with libcurl ---- */

struct http_req {
        const char *method;         /* GET HEAD PUT POST PATCH */
        const char *url;
        const char *authorization;  /* full header value, or NULL */
        const char *accept;         /* Accept header value, or NULL */
        const char *content_type;
        const void *body;           /* request body in memory ... */
        size_t body_len;
        int body_fd;                /* ... or from a file (pread at body_offset); -1 */
        uint64_t body_offset;
        uint64_t body_size;
        const char *content_range;  /* for PATCH chunks */
        int64_t range_from;         /* Range: bytes=N- ; -1 none */
        bool follow_redirects;
        /* response body: to the sink when the status is 2xx, else collected (capped) */
        int (*sink)(void *ctx, const void *data, size_t len, struct kiln_error **err);
        void *sink_ctx;
        /* called before the body when a Range request got the whole body (200): start over */
        int (*restart)(void *ctx, struct kiln_error **err);
        size_t max_body;            /* cap for a collected 2xx body; 0: REG_MAX_MANIFEST */
};

struct http_resp {
        long status;
        struct kiln_buf body;       /* collected body (error bodies always) */
        char *location;
        char *www_authenticate;
        char *content_type;
        char *docker_content_digest;
        char *content_range;
        int64_t retry_after;        /* seconds, or -1 */
        int64_t chunk_min;          /* OCI-Chunk-Min-Length: the registry wants chunks; or -1 */
        int64_t content_length;     /* -1 when unknown */
        uint64_t sunk;              /* bytes handed to the sink */
        bool transport_error;       /* the exchange failed below HTTP (retryable) */
};

void http_global_init(void);
int http_share_new(struct reg_client *c);
void http_share_free(struct reg_client *c);

/** Performs one exchange. Returns 0 when an HTTP response arrived (any status), -1 with *err
 * for a transport failure (resp->transport_error set) or a sink failure. */
int http_do(struct reg_client *c, const struct reg_endpoint *ep, const struct http_req *req,
            struct http_resp *resp, struct kiln_error **err);
void http_resp_release(struct http_resp *r);

/** "unauthorized: authentication required" from a registry's JSON error body, else the
 * status line ("HTTP 500"). Caller frees. */
char *http_error_message(const struct http_resp *r);

/** Resolves a Location header against the URL it answered (relative or absolute) and appends
 * `query` ("digest=sha256:...", URL-encoded), when not NULL. Only http(s) results. */
char *http_url_resolve(const char *base, const char *location, const char *query,
                       struct kiln_error **err);

/** `s` percent-encoded for a URL query. Caller frees. */
char *http_escape(const char *s);

/** Whether `url` is on scheme://host exactly (credentials are sent only there). */
bool http_url_on_host(const char *url, const char *scheme, const char *host);


/* ---- client.c: endpoints, configuration ---- */

/** The endpoint for a host: scheme from --insecure-registry, registries.conf and loopback;
 * TLS material from certs.d. Owned by the client. */
const struct reg_endpoint *reg_endpoint_for(struct reg_client *c, const char *host,
                                            struct kiln_error **err);

/* Where to pull a repository from: a mirror (host and the path there) or the registry. */
struct reg_source {
        char *domain;   /* for credentials: the host as written in the configuration */
        char *host;     /* the endpoint host ("registry-1.docker.io" for docker.io) */
        char *path;     /* the repository path on that host */
};

/** The sources to try for a pull of domain/path: mirrors first (registries.conf), the registry
 * itself last. Free with reg_sources_free(). */
void reg_pull_sources(struct reg_client *c, const char *domain, const char *path,
                      struct reg_source **ret, size_t *ret_n);
void reg_sources_free(struct reg_source *s, size_t n);

void reg_progress(struct reg_client *c, const char *fmt, ...) _printf_(2, 3);

/**
 * Runs fn(ctx, i, err) for every i below n on up to `parallel` threads (at most 32). Stops
 * handing out work after the first failure and returns that error.
 */
int reg_run_parallel(unsigned parallel, size_t n, int (*fn)(void *ctx, size_t i, struct kiln_error **err),
                     void *ctx, struct kiln_error **err);

/* ---- manifest.c ---- */

/* A blob a manifest names. */
struct reg_blob {
        char digest[LAYER_DIGEST_SIZE];
        uint64_t size;
};

/** The config (first) and the layers of an image manifest, each blob once; PARSE for a bad
 * descriptor, LIMIT past REG_MAX_LAYERS or REG_MAX_CONFIG. */
int reg_manifest_blobs(const char *body, size_t len, const char *what, struct reg_blob **ret, size_t *ret_n,
                       struct kiln_error **err);

/* ---- auth.c: authorized requests with retries ---- */

/* What a request is for: a repository on an endpoint, with the actions it needs. */
struct reg_scope {
        const struct reg_endpoint *ep;
        const char *domain;         /* for credentials ("docker.io") */
        const char *path;           /* repository path */
        const char *actions;        /* "pull" or "pull,push" */
        const char *mount_from;     /* another repository to pull from (mounts), or NULL */
};

/**
 * Sends a request with the right Authorization, fetching a token or using Basic credentials
 * after a 401 challenge, and retrying transient failures (connection errors, 5xx, 429 with
 * Retry-After) with exponential backoff. `rewind` is called before each retry so a body sink
 * can start over (it may set req->range_from to resume); when it returns < 0 the retry is not
 * made and this attempt's outcome is returned. Returns 0 with the final response
 * (any status), -1 when every attempt failed.
 */
int reg_request(struct reg_client *c, const struct reg_scope *sc, struct http_req *req,
                struct http_resp *resp, int (*rewind)(void *ctx, struct http_req *req,
                                                      const struct http_resp *failed),
                void *rewind_ctx, struct kiln_error **err);

/** Checks explicit credentials against a 401 challenge from GET /v2/ (a token from the realm,
 * or GET /v2/ again with Basic): AUTH when refused. */
int reg_login_answer(struct reg_client *c, const struct reg_endpoint *ep, const char *domain,
                     const char *header, const char *username, const char *password,
                     struct kiln_error **err);

/** Sleeps (through signals) for a backoff. */
void reg_sleep_ms(uint64_t ms);

/** Turns a final non-success response into an error naming what and where. */
int reg_status_error(const struct http_resp *r, const struct reg_scope *sc, const char *what,
                     struct kiln_error **err);

/** The base URL "http[s]://host/v2/PATH". Caller frees. */
char *reg_url(const struct reg_endpoint *ep, const char *path, const char *suffix);
