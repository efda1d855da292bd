/*
 * The registry client's settings: how to reach each host (https, plain http for loopback and
 * insecure registries, CAs and client certificates from certs.d) and where to pull from
 * (mirrors from a registries.conf).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "builder/common/fd-util.h"
#include "builder/common/strbuf.h"
#include "builder/common/xalloc.h"
#include "registry/registry-internal.h"

#define DEFAULT_CERTS_DIRS "/etc/docker/certs.d:/etc/containers/certs.d"
#define SYSTEM_CA_BUNDLE "/etc/ssl/certs/ca-certificates.crt"

/* ---- registries.conf: the [[registry]] / [[registry.mirror]] subset of its TOML ---- */

static char *toml_string(const char *v, const char *path, unsigned line, struct kiln_error **err)
{
        size_t n = strlen(v);

        if (n >= 2 && (v[0] == '"' || v[0] == '\'') && v[n - 1] == v[0])
                return xstrndup(v + 1, n - 2);
        kiln_error_at(err, KILN_ERR_PARSE, path, line, 0, "expected a quoted string");
        return NULL;
}

static int parse_conf(struct reg_client *c, const char *path, const char *text,
                      struct kiln_error **err)
{
        _cleanup_free_ char *copy = xstrdup(text);
        char *line, *save = NULL;
        enum { NONE, REGISTRY, MIRROR, OTHER } section = NONE;
        unsigned lineno = 0;
        size_t alloc = 0;

        for (line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                char *key, *value, *eq, *hash;
                struct reg_conf_entry *e = c->n_conf ? &c->conf[c->n_conf - 1] : NULL;

                lineno++;
                hash = strchr(line, '#');
                if (hash && !strchr(line, '"'))
                        *hash = '\0';
                while (*line == ' ' || *line == '\t')
                        line++;
                for (char *end = line + strlen(line); end > line && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r');)
                        *--end = '\0';
                if (!*line)
                        continue;
                if (strcmp(line, "[[registry]]") == 0) {
                        XGROW(c->conf, c->n_conf + 1, alloc);
                        memset(&c->conf[c->n_conf++], 0, sizeof(*c->conf));
                        section = REGISTRY;
                        continue;
                }
                if (strcmp(line, "[[registry.mirror]]") == 0) {
                        if (!e)
                                return kiln_error_at(err, KILN_ERR_PARSE, path, lineno, 0,
                                                     "[[registry.mirror]] before any [[registry]]");
                        e->mirrors = xrealloc(e->mirrors, (e->n_mirrors + 1) * sizeof(char *));
                        e->mirror_insecure = xrealloc(e->mirror_insecure, (e->n_mirrors + 1) * sizeof(bool));
                        e->mirrors[e->n_mirrors] = NULL;
                        e->mirror_insecure[e->n_mirrors++] = false;
                        section = MIRROR;
                        continue;
                }
                if (line[0] == '[') {
                        section = OTHER; /* a table kiln does not use */
                        continue;
                }
                eq = strchr(line, '=');
                if (!eq)
                        return kiln_error_at(err, KILN_ERR_PARSE, path, lineno, 0, "expected key = value");
                *eq = '\0';
                key = line;
                value = eq + 1;
                for (char *end = key + strlen(key); end > key && (end[-1] == ' ' || end[-1] == '\t');)
                        *--end = '\0';
                while (*value == ' ' || *value == '\t')
                        value++;
                if (section != REGISTRY && section != MIRROR)
                        continue;
                if (strcmp(key, "location") == 0 || strcmp(key, "prefix") == 0) {
                        char *s = toml_string(value, path, lineno, err);
                        char **slot = section == REGISTRY ? &e->location : &e->mirrors[e->n_mirrors - 1];
                        if (!s)
                                return -1;
                        if (section == REGISTRY && strcmp(key, "prefix") == 0 && e->location) {
                                free(s); /* location wins when both are given */
                                continue;
                        }
                        free(*slot);
                        *slot = s;
                } else if (strcmp(key, "insecure") == 0) {
                        bool v;
                        if (strcmp(value, "true") == 0)
                                v = true;
                        else if (strcmp(value, "false") == 0)
                                v = false;
                        else
                                return kiln_error_at(err, KILN_ERR_PARSE, path, lineno, 0,
                                                     "insecure must be true or false");
                        if (section == REGISTRY)
                                e->insecure = v;
                        else
                                e->mirror_insecure[e->n_mirrors - 1] = v;
                }
        }
        for (size_t i = 0; i < c->n_conf; i++) {
                if (!c->conf[i].location)
                        return kiln_error_at(err, KILN_ERR_PARSE, path, 0, 0,
                                             "a [[registry]] has no location");
                for (size_t k = 0; k < c->conf[i].n_mirrors; k++)
                        if (!c->conf[i].mirrors[k])
                                return kiln_error_at(err, KILN_ERR_PARSE, path, 0, 0,
                                                     "a [[registry.mirror]] has no location");
        }
        return 0;
}

static int load_conf(struct reg_client *c, struct kiln_error **err)
{
        _cleanup_free_ char *user = NULL, *text = NULL;
        const char *env = getenv("KILN_REGISTRIES_CONF"), *xdg = getenv("XDG_CONFIG_HOME");
        const char *home = getenv("HOME");
        const char *candidates[3];
        size_t n = 0, i, len;

        if (c->opts.registries_conf) {
                candidates[n++] = c->opts.registries_conf;
        } else if (env && *env) {
                candidates[n++] = env;
        } else {
                if (xdg && *xdg)
                        user = xasprintf("%s/kiln/registries.conf", xdg);
                else if (home && *home)
                        user = xasprintf("%s/.config/kiln/registries.conf", home);
                if (user)
                        candidates[n++] = user;
                candidates[n++] = "/etc/kiln/registries.conf";
        }
        for (i = 0; i < n; i++) {
                _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
                if (kiln_read_file_at(AT_FDCWD, candidates[i], 1 << 20, &text, &len, &e) < 0) {
                        if (e->kind == KILN_ERR_NOTFOUND && !c->opts.registries_conf)
                                continue;
                        *err = TAKE_PTR(e);
                        return kiln_error_wrap(err, "registries configuration");
                }
                return parse_conf(c, candidates[i], text, err);
        }
        return 0;
}

/* ---- the client ---- */

int reg_client_new(const struct reg_client_opts *opts, struct reg_client **ret,
                   struct kiln_error **err)
{
        struct reg_client *c = xcalloc(1, sizeof(*c));
        const char *certs = opts->certs_dirs ? opts->certs_dirs : getenv("KILN_CERTS_DIRS");
        size_t i;

        http_global_init();
        c->opts = *opts;
        c->opts.insecure = NULL;
        c->opts.n_insecure = 0;
        c->opts.certs_dirs = NULL;
        c->opts.registries_conf = opts->registries_conf ? xstrdup(opts->registries_conf) : NULL;
        if (!c->opts.parallel)
                c->opts.parallel = 4;
        if (!c->opts.retries)
                c->opts.retries = 5;
        if (!c->opts.backoff_ms)
                c->opts.backoff_ms = 200;
        c->insecure = xcalloc(opts->n_insecure + 1, sizeof(char *));
        for (i = 0; i < opts->n_insecure; i++)
                c->insecure[i] = xstrdup(opts->insecure[i]);
        c->n_insecure = opts->n_insecure;
        c->certs_dirs = xstrdup(certs && *certs ? certs : DEFAULT_CERTS_DIRS);
        pthread_mutex_init(&c->lock, NULL);
        http_share_new(c);
        if (load_conf(c, err) < 0) {
                reg_client_free(c);
                return -1;
        }
        *ret = c;
        return 0;
}

static void endpoint_release(struct reg_endpoint *e)
{
        free(e->host);
        free(e->ca_pem);
        free(e->client_cert);
        free(e->client_key);
}

struct reg_client *reg_client_free(struct reg_client *c)
{
        size_t i, k;

        if (!c)
                return NULL;
        http_share_free(c);
        for (i = 0; i < c->n_insecure; i++)
                free(c->insecure[i]);
        free(c->insecure);
        free(c->certs_dirs);
        free((char *) c->opts.registries_conf);
        for (i = 0; i < c->n_conf; i++) {
                free(c->conf[i].location);
                for (k = 0; k < c->conf[i].n_mirrors; k++)
                        free(c->conf[i].mirrors[k]);
                free(c->conf[i].mirrors);
                free(c->conf[i].mirror_insecure);
        }
        free(c->conf);
        for (i = 0; i < c->n_tokens; i++) {
                free(c->tokens[i].host);
                free(c->tokens[i].scope);
                if (c->tokens[i].token)
                        explicit_bzero(c->tokens[i].token, strlen(c->tokens[i].token));
                free(c->tokens[i].token);
        }
        free(c->tokens);
        for (i = 0; i < c->n_endpoints; i++)
                endpoint_release(&c->endpoints[i]);
        free(c->endpoints);
        pthread_mutex_destroy(&c->lock);
        free(c);
        return NULL;
}

/* "127.0.0.1:5000", "[::1]:5000", "localhost" ... are loopback: plain http, as Docker does. */
static bool is_loopback(const char *host)
{
        _cleanup_free_ char *h = NULL;
        char *colon;

        if (host[0] == '[') {
                const char *end = strchr(host, ']');
                h = end ? xstrndup(host + 1, (size_t) (end - host - 1)) : xstrdup(host);
        } else {
                h = xstrdup(host);
                colon = strchr(h, ':');
                if (colon)
                        *colon = '\0';
        }
        return strcasecmp(h, "localhost") == 0 || strcmp(h, "::1") == 0 ||
               (strncmp(h, "127.", 4) == 0 && strspn(h, "0123456789.") == strlen(h));
}

static bool listed_insecure(struct reg_client *c, const char *host)
{
        size_t i, k;

        for (i = 0; i < c->n_insecure; i++)
                if (strcmp(c->insecure[i], host) == 0)
                        return true;
        for (i = 0; i < c->n_conf; i++) {
                if (strcmp(c->conf[i].location, host) == 0 && c->conf[i].insecure)
                        return true;
                for (k = 0; k < c->conf[i].n_mirrors; k++) {
                        const char *m = c->conf[i].mirrors[k];
                        size_t hl = strlen(host);
                        if (c->conf[i].mirror_insecure[k] && strncmp(m, host, hl) == 0 &&
                            (m[hl] == '\0' || m[hl] == '/'))
                                return true;
                }
        }
        return false;
}

/* certs.d/HOST: *.crt are CAs (added to the system ones), *.cert + *.key a client pair. */
static int load_certs(struct reg_client *c, struct reg_endpoint *ep, struct kiln_error **err)
{
        _cleanup_free_ char *dirs = xstrdup(c->certs_dirs);
        struct kiln_buf cas = KILN_BUF_INIT;
        char *dir, *save = NULL;
        bool any = false;

        for (dir = strtok_r(dirs, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
                _cleanup_free_ char *hostdir = xasprintf("%s/%s", dir, ep->host);
                struct dirent **names = NULL;
                int n = scandir(hostdir, &names, NULL, alphasort), i;

                for (i = 0; i < n; i++) {
                        const char *name = names[i]->d_name;
                        size_t len = strlen(name);
                        _cleanup_free_ char *path = xasprintf("%s/%s", hostdir, name);

                        if (len > 4 && strcmp(name + len - 4, ".crt") == 0) {
                                _cleanup_free_ char *pem = NULL;
                                size_t plen;
                                if (kiln_read_file_at(AT_FDCWD, path, 1 << 20, &pem, &plen, err) < 0) {
                                        for (; i < n; i++)
                                                free(names[i]);
                                        free(names);
                                        kiln_buf_release(&cas);
                                        return kiln_error_wrap(err, "registry CA");
                                }
                                kiln_buf_add(&cas, pem, plen, NULL);
                                kiln_buf_addc(&cas, '\n', NULL);
                                any = true;
                        } else if (len > 5 && strcmp(name + len - 5, ".cert") == 0) {
                                _cleanup_free_ char *key = xasprintf("%.*s.key", (int) (strlen(path) - 5), path);
                                struct stat st;
                                if (stat(key, &st) == 0) {
                                        free(ep->client_cert);
                                        free(ep->client_key);
                                        ep->client_cert = xstrdup(path);
                                        ep->client_key = TAKE_PTR(key);
                                }
                        }
                        free(names[i]);
                }
                free(names);
        }
        if (any) {
                _cleanup_free_ char *system = NULL;
                size_t slen;
                /* The host's CAs still count, as with Docker. */
                if (kiln_read_file_at(AT_FDCWD, SYSTEM_CA_BUNDLE, 16 << 20, &system, &slen, NULL) == 0)
                        kiln_buf_add(&cas, system, slen, NULL);
                ep->ca_pem = kiln_buf_detach(&cas, &ep->ca_len);
        }
        kiln_buf_release(&cas);
        return 0;
}

/* An insecure host may speak https (unverified) or plain http: ask it once. */
static void probe_scheme(struct reg_client *c, struct reg_endpoint *ep)
{
        _cleanup_free_ char *url = xasprintf("https://%s/v2/", ep->host);
        struct http_req req = { .method = "GET", .url = url, .body_fd = -1, .range_from = -1 };
        struct http_resp resp;
        struct kiln_error *e = NULL;

        ep->http = false;
        ep->skip_verify = true;
        if (http_do(c, ep, &req, &resp, &e) < 0)
                ep->http = true;
        kiln_error_free(e);
        http_resp_release(&resp);
}

const struct reg_endpoint *reg_endpoint_for(struct reg_client *c, const char *host,
                                            struct kiln_error **err)
{
        struct reg_endpoint ep = { 0 };
        size_t i;

        pthread_mutex_lock(&c->lock);
        for (i = 0; i < c->n_endpoints; i++)
                if (strcmp(c->endpoints[i].host, host) == 0) {
                        pthread_mutex_unlock(&c->lock);
                        return &c->endpoints[i];
                }
        pthread_mutex_unlock(&c->lock);

        ep.host = xstrdup(host);
        if (listed_insecure(c, host)) {
                probe_scheme(c, &ep);
        } else if (load_certs(c, &ep, err) < 0) {
                endpoint_release(&ep);
                return NULL;
        } else if (is_loopback(host) && !ep.ca_pem && !ep.client_cert) {
                /* Loopback is plain http, as with Docker, unless certs.d says how to trust it. */
                ep.http = true;
        }
        pthread_mutex_lock(&c->lock);
        for (i = 0; i < c->n_endpoints; i++)
                if (strcmp(c->endpoints[i].host, host) == 0) {
                        pthread_mutex_unlock(&c->lock);
                        endpoint_release(&ep);
                        return &c->endpoints[i];
                }
        /* Endpoints are handed out by pointer: the array never moves once used. */
        if (c->n_endpoints == c->alloc_endpoints) {
                if (c->alloc_endpoints == 0) {
                        c->alloc_endpoints = 64;
                        c->endpoints = xcalloc(c->alloc_endpoints, sizeof(*c->endpoints));
                } else {
                        pthread_mutex_unlock(&c->lock);
                        endpoint_release(&ep);
                        kiln_error_new(err, KILN_ERR_LIMIT, "too many registries in one run");
                        return NULL;
                }
        }
        c->endpoints[c->n_endpoints] = ep;
        pthread_mutex_unlock(&c->lock);
        return &c->endpoints[c->n_endpoints++];
}

void reg_pull_sources(struct reg_client *c, const char *domain, const char *path,
                      struct reg_source **ret, size_t *ret_n)
{
        struct reg_source *s = NULL;
        size_t n = 0, alloc = 0, i, k;
        _cleanup_free_ char *full = xasprintf("%s/%s", domain, path);

        for (i = 0; i < c->n_conf; i++) {
                const char *loc = c->conf[i].location;
                size_t ll = strlen(loc);
                const char *rest;

                /* location is "host" or "host/prefix": the image must be under it */
                if (strncmp(full, loc, ll) != 0 || (full[ll] != '/' && full[ll] != '\0'))
                        continue;
                rest = full[ll] == '/' ? full + ll + 1 : "";
                for (k = 0; k < c->conf[i].n_mirrors; k++) {
                        const char *m = c->conf[i].mirrors[k];
                        const char *slash = strchr(m, '/');
                        XGROW(s, n + 1, alloc);
                        s[n].domain = slash ? xstrndup(m, (size_t) (slash - m)) : xstrdup(m);
                        s[n].host = xstrdup(s[n].domain);
                        if (slash)
                                s[n].path = rest[0] ? xasprintf("%s/%s", slash + 1, rest) : xstrdup(slash + 1);
                        else
                                s[n].path = xstrdup(rest);
                        n++;
                }
                break;
        }
        XGROW(s, n + 1, alloc);
        s[n].domain = xstrdup(domain);
        s[n].host = xstrdup(strcmp(domain, "docker.io") == 0 ? "registry-1.docker.io" : domain);
        s[n].path = xstrdup(path);
        n++;
        *ret = s;
        *ret_n = n;
}

void reg_sources_free(struct reg_source *s, size_t n)
{
        size_t i;

        for (i = 0; s && i < n; i++) {
                free(s[i].domain);
                free(s[i].host);
                free(s[i].path);
        }
        free(s);
}

void reg_progress(struct reg_client *c, const char *fmt, ...)
{
        _cleanup_free_ char *msg = NULL;
        va_list ap;

        if (!c->opts.progress)
                return;
        va_start(ap, fmt);
        msg = xvasprintf(fmt, ap);
        va_end(ap);
        pthread_mutex_lock(&c->lock);
        c->opts.progress(c->opts.progress_ctx, msg);
        pthread_mutex_unlock(&c->lock);
}

char *reg_url(const struct reg_endpoint *ep, const char *path, const char *suffix)
{
        return xasprintf("%s://%s/v2/%s%s", ep->http ? "http" : "https", ep->host, path, suffix);
}
