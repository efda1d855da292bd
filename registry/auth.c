/*
 * Authorized requests: anonymous first, then whatever the registry's WWW-Authenticate asks for
 * (Basic with stored credentials, or a Bearer token from the realm for the request's scope,
 * cached per scope until it expires), with retries and exponential backoff for transient
 * failures. Credentials and tokens never appear in messages.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "builder/common/json-util.h"
#include "builder/common/xalloc.h"
#include "registry/registry-internal.h"

#define MAX_BACKOFF_MS 10000
#define MAX_RETRY_AFTER 60

static int64_t now_seconds(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t) ts.tv_sec;
}

void reg_sleep_ms(uint64_t ms)
{
        struct timespec ts = { .tv_sec = (time_t) (ms / 1000), .tv_nsec = (long) (ms % 1000) * 1000000 };

        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
}

/* The scope string of a request: "repository:PATH:ACTIONS[ repository:FROM:pull]". */
static char *scope_of(const struct reg_scope *sc)
{
        if (sc->mount_from)
                return xasprintf("repository:%s:%s repository:%s:pull", sc->path, sc->actions,
                                 sc->mount_from);
        return xasprintf("repository:%s:%s", sc->path, sc->actions);
}

/* A cached Authorization value for (host, scope): "Bearer ..." or "Basic ...". The scope ""
 * holds what the host wants for everything (Basic) and the host's challenge is kept as the
 * entry "challenge". Caller frees. */
static char *cached_auth(struct reg_client *c, const char *host, const char *scope)
{
        char *out = NULL;
        size_t i;

        pthread_mutex_lock(&c->lock);
        for (i = 0; i < c->n_tokens; i++) {
                struct reg_token *t = &c->tokens[i];
                if (strcmp(t->host, host) != 0)
                        continue;
                if ((strcmp(t->scope, scope) == 0 || strcmp(t->scope, "") == 0) &&
                    (t->expires == 0 || t->expires > now_seconds())) {
                        out = xstrdup(t->token);
                        if (t->scope[0])
                                break; /* a scoped token beats a host-wide one */
                }
        }
        pthread_mutex_unlock(&c->lock);
        return out;
}

static void cache_auth(struct reg_client *c, const char *host, const char *scope, const char *value,
                       int64_t expires)
{
        size_t i;

        pthread_mutex_lock(&c->lock);
        for (i = 0; i < c->n_tokens; i++)
                if (strcmp(c->tokens[i].host, host) == 0 && strcmp(c->tokens[i].scope, scope) == 0)
                        break;
        if (i == c->n_tokens) {
                XGROW(c->tokens, c->n_tokens + 1, c->alloc_tokens);
                c->tokens[i].host = xstrdup(host);
                c->tokens[i].scope = xstrdup(scope);
                c->tokens[i].token = NULL;
                c->n_tokens++;
        }
        if (c->tokens[i].token)
                explicit_bzero(c->tokens[i].token, strlen(c->tokens[i].token));
        free(c->tokens[i].token);
        c->tokens[i].token = xstrdup(value);
        c->tokens[i].expires = expires;
        pthread_mutex_unlock(&c->lock);
}

static char *basic_value(const struct reg_credentials *cr)
{
        _cleanup_free_ char *pair = xasprintf("%s:%s", cr->username ? cr->username : "",
                                              cr->password ? cr->password : "");
        _cleanup_free_ char *b64 = layer_base64_encode(pair, strlen(pair));
        char *v = xasprintf("Basic %s", b64);

        explicit_bzero(pair, strlen(pair));
        return v;
}

/* The query of a token request: service and each space-separated scope, escaped. */
static char *token_query(const char *service, const char *scope)
{
        struct kiln_buf q = KILN_BUF_INIT;
        _cleanup_free_ char *scopes = xstrdup(scope);
        char *sc, *save = NULL;

        if (service) {
                _cleanup_free_ char *e = http_escape(service);
                kiln_buf_addf(&q, NULL, "service=%s", e);
        }
        for (sc = strtok_r(scopes, " ", &save); sc; sc = strtok_r(NULL, " ", &save)) {
                _cleanup_free_ char *e = http_escape(sc);
                kiln_buf_addf(&q, NULL, "%sscope=%s", q.len ? "&" : "", e);
        }
        return q.len ? kiln_buf_detach(&q, NULL) : xstrdup("");
}

static char *token_url(const char *realm, const char *query)
{
        if (!*query)
                return xstrdup(realm);
        return xasprintf("%s%s%s", realm, strchr(realm, '?') ? "&" : "?", query);
}

/*
 * Asks a token realm for a token for `scope` (NULL: none, as `login` asks), presenting `cr` as
 * Basic credentials when given. *ret_value gets "Bearer TOKEN", *ret_expires_in its lifetime.
 */
static int token_exchange(struct reg_client *c, const struct reg_endpoint *ep, const char *domain,
                          const struct reg_challenge *ch, const char *scope, const struct reg_credentials *cr,
                          char **ret_value, int64_t *ret_expires_in, struct kiln_error **err)
{
        const char *realm = reg_challenge_param(ch, "realm"), *service = reg_challenge_param(ch, "service");
        _cleanup_free_ char *url = NULL, *basic = NULL, *query = NULL, *form = NULL;
        struct http_req req = { .method = "GET", .body_fd = -1, .range_from = -1,
                                .follow_redirects = true, .max_body = REG_MAX_TOKEN };
        struct http_resp resp;
        _cleanup_json_ json_t *j = NULL;
        const char *token;
        int r = -1;

        if (!realm || (strncmp(realm, "https://", 8) != 0 && strncmp(realm, "http://", 7) != 0))
                return kiln_error_new(err, KILN_ERR_AUTH, "%s: the registry's token realm is not an http(s) URL",
                                      ep->host);
        query = token_query(service, scope ? scope : "");
        if (cr && cr->identity_token && *cr->identity_token) {
                /* An OAuth2 refresh token (what `docker login` keeps for some registries):
                 * POST it as a form to the realm. */
                _cleanup_free_ char *rt = http_escape(cr->identity_token);
                form = xasprintf("grant_type=refresh_token&client_id=kiln&refresh_token=%s%s%s", rt,
                                 *query ? "&" : "", query);
                req.method = "POST";
                req.body = form;
                req.body_len = strlen(form);
                req.content_type = "application/x-www-form-urlencoded";
                url = xstrdup(realm);
        } else {
                if (cr)
                        basic = basic_value(cr);
                if (!scope && cr && cr->username) {
                        _cleanup_free_ char *account = http_escape(cr->username);
                        char *with = xasprintf("%s%saccount=%s", query, *query ? "&" : "", account);
                        free(query);
                        query = with;
                }
                url = token_url(realm, query);
        }
        req.url = url;
        req.authorization = basic;
        /* The realm is its own host, trusted as the registry's endpoint says (certs.d, http). */
        if (http_do(c, ep, &req, &resp, err) < 0) {
                http_resp_release(&resp);
                if (basic)
                        explicit_bzero(basic, strlen(basic));
                if (form)
                        explicit_bzero(form, strlen(form));
                return kiln_error_wrap(err, "token for %s", ep->host);
        }
        if (basic)
                explicit_bzero(basic, strlen(basic));
        if (form)
                explicit_bzero(form, strlen(form));
        if (resp.status == 401 || resp.status == 403) {
                _cleanup_free_ char *msg = http_error_message(&resp);
                kiln_error_new(err, KILN_ERR_AUTH, "%s: the token service refused %s: %s (try: kiln login %s)",
                               ep->host, cr ? "the credentials" : "anonymous access", msg, domain);
                goto out;
        }
        if (resp.status != 200) {
                _cleanup_free_ char *msg = http_error_message(&resp);
                kiln_error_new(err, KILN_ERR_AUTH, "%s: token service: %s", ep->host, msg);
                goto out;
        }
        j = kiln_json_loadb(resp.body.buf, resp.body.len, "token response", err);
        if (!j)
                goto out;
        token = kiln_json_get_string(j, "token");
        if (!token || !*token)
                token = kiln_json_get_string(j, "access_token");
        if (!token || !*token) {
                kiln_error_new(err, KILN_ERR_AUTH, "%s: the token service answered without a token", ep->host);
                goto out;
        }
        *ret_expires_in = 60;
        if (json_is_integer(json_object_get(j, "expires_in")) &&
            json_integer_value(json_object_get(j, "expires_in")) > 0)
                *ret_expires_in = json_integer_value(json_object_get(j, "expires_in"));
        *ret_value = xasprintf("Bearer %s", token);
        r = 0;
out:
        if (resp.body.len)
                explicit_bzero(resp.body.buf, resp.body.len);
        http_resp_release(&resp);
        return r;
}

/* The stored credentials for a request's registry: *ret_have false when there are none; a
 * broken configuration or a failing helper is an error, not anonymous access. */
static int lookup_credentials(const struct reg_scope *sc, struct reg_credentials *cr, bool *ret_have,
                              struct kiln_error **err)
{
        struct kiln_error *e = NULL;

        *ret_have = false;
        if (reg_credentials_lookup(sc->domain, cr, &e) == 0) {
                *ret_have = true;
                return 0;
        }
        if (e && e->kind == KILN_ERR_NOTFOUND) {
                kiln_error_free(e);
                return 0;
        }
        *err = e;
        return kiln_error_wrap(err, "credentials for %s", sc->domain);
}

/* Fetches and caches a token for a request's scope, with the stored credentials if any. */
static int fetch_token(struct reg_client *c, const struct reg_scope *sc, const struct reg_challenge *ch,
                       const char *scope, struct kiln_error **err)
{
        struct reg_credentials cr = { 0 };
        _cleanup_free_ char *value = NULL;
        int64_t expires_in = 0;
        bool have;
        int r;

        if (lookup_credentials(sc, &cr, &have, err) < 0)
                return -1;

        r = token_exchange(c, sc->ep, sc->domain, ch, scope, have ? &cr : NULL, &value, &expires_in, err);
        reg_credentials_release(&cr);
        if (r < 0)
                return -1;
        /* Renew a little early so a long transfer does not start with a dying token. */
        cache_auth(c, sc->ep->host, scope, value,
                   now_seconds() + (expires_in > 20 ? expires_in - 10 : expires_in / 2 + 1));
        explicit_bzero(value, strlen(value));
        return 0;
}

int reg_login_answer(struct reg_client *c, const struct reg_endpoint *ep, const char *domain,
                     const char *header, const char *username, const char *password,
                     struct kiln_error **err)
{
        struct reg_credentials cr = { .username = (char *) username, .password = (char *) password };
        struct reg_challenge *ch = NULL;
        size_t n = 0, i;
        int r = -1;

        if (!header)
                return kiln_error_new(err, KILN_ERR_AUTH, "%s: the registry refuses access and says not how to log in",
                                      domain);
        if (reg_challenges_parse(header, &ch, &n, err) < 0)
                return kiln_error_wrap(err, "%s", ep->host);
        for (i = 0; i < n; i++)
                if (strcmp(ch[i].scheme, "bearer") == 0) {
                        _cleanup_free_ char *value = NULL;
                        int64_t expires_in;
                        r = token_exchange(c, ep, domain, &ch[i], NULL, &cr, &value, &expires_in, err);
                        if (value)
                                explicit_bzero(value, strlen(value));
                        goto out;
                }
        for (i = 0; i < n; i++)
                if (strcmp(ch[i].scheme, "basic") == 0) {
                        _cleanup_free_ char *value = basic_value(&cr), *url = NULL;
                        struct http_req req = { .method = "GET", .body_fd = -1, .range_from = -1 };
                        struct http_resp resp;

                        url = xasprintf("%s://%s/v2/", ep->http ? "http" : "https", ep->host);
                        req.url = url;
                        req.authorization = value;
                        r = http_do(c, ep, &req, &resp, err);
                        explicit_bzero(value, strlen(value));
                        if (r == 0 && resp.status != 200) {
                                _cleanup_free_ char *msg = http_error_message(&resp);
                                r = kiln_error_new(err, resp.status == 401 || resp.status == 403 ? KILN_ERR_AUTH
                                                                                                  : KILN_ERR_NET,
                                                   "%s: %s", domain, msg);
                        }
                        http_resp_release(&resp);
                        goto out;
                }
        kiln_error_new(err, KILN_ERR_AUTH, "%s: no authentication scheme kiln knows (%s)", ep->host,
                       n ? ch[0].scheme : "none");
out:
        reg_challenges_free(ch, n);
        return r;
}

/* Learns from a 401: caches what to send next time. */
static int answer_challenge(struct reg_client *c, const struct reg_scope *sc, const char *header,
                            const char *scope, struct kiln_error **err)
{
        struct reg_challenge *ch = NULL;
        size_t n = 0, i;
        int r = -1;

        if (!header)
                return kiln_error_new(err, KILN_ERR_AUTH, "%s/%s: unauthorized, and the registry says not how to authenticate",
                                      sc->domain, sc->path);
        if (reg_challenges_parse(header, &ch, &n, err) < 0)
                return kiln_error_wrap(err, "%s", sc->ep->host);
        for (i = 0; i < n; i++)
                if (strcmp(ch[i].scheme, "bearer") == 0) {
                        r = fetch_token(c, sc, &ch[i], scope, err);
                        goto out;
                }
        for (i = 0; i < n; i++)
                if (strcmp(ch[i].scheme, "basic") == 0) {
                        struct reg_credentials cr = { 0 };
                        _cleanup_free_ char *value = NULL;
                        bool have;
                        if (lookup_credentials(sc, &cr, &have, err) < 0)
                                goto out;
                        if (!have) {
                                kiln_error_new(err, KILN_ERR_AUTH,
                                               "%s/%s: unauthorized: authentication required (try: kiln login %s)",
                                               sc->domain, sc->path, sc->domain);
                                goto out;
                        }
                        value = basic_value(&cr);
                        reg_credentials_release(&cr);
                        cache_auth(c, sc->ep->host, "", value, 0);
                        explicit_bzero(value, strlen(value));
                        r = 0;
                        goto out;
                }
        kiln_error_new(err, KILN_ERR_AUTH, "%s: no authentication scheme kiln knows (%s)", sc->ep->host,
                       n ? ch[0].scheme : "none");
out:
        reg_challenges_free(ch, n);
        return r;
}

static bool retryable_status(long status)
{
        return status == 429 || status == 408 || (status >= 500 && status != 501 && status != 505);
}

int reg_request(struct reg_client *c, const struct reg_scope *sc, struct http_req *req,
                struct http_resp *resp, int (*rewind)(void *ctx, struct http_req *req,
                                                      const struct http_resp *failed),
                void *rewind_ctx, struct kiln_error **err)
{
        _cleanup_free_ char *scope = scope_of(sc);
        unsigned attempt = 0;
        bool answered = false;

        for (;;) {
                /* Credentials go to the registry only, never to a host it sends us on to
                 * (an upload location on a storage service). */
                _cleanup_free_ char *auth = http_url_on_host(req->url, sc->ep->http ? "http" : "https",
                                                             sc->ep->host)
                                                    ? cached_auth(c, sc->ep->host, scope)
                                                    : NULL;
                struct kiln_error *e = NULL;
                uint64_t delay;
                int r;

                req->authorization = auth;
                r = http_do(c, sc->ep, req, resp, &e);
                req->authorization = NULL;
                if (auth)
                        explicit_bzero(auth, strlen(auth));
                if (r < 0 && !resp->transport_error) {
                        *err = e; /* a sink failed: not for retrying */
                        return -1;
                }
                if (r == 0 && resp->status == 401 && !answered) {
                        answered = true;
                        if (answer_challenge(c, sc, resp->www_authenticate, scope, err) < 0) {
                                http_resp_release(resp);
                                return -1;
                        }
                        http_resp_release(resp);
                        if (rewind && rewind(rewind_ctx, req, NULL) < 0)
                                return kiln_error_new(err, KILN_ERR_NET, "%s %s: cannot resend after authenticating",
                                                      req->method, sc->path);
                        continue;
                }
                if (r == 0 && !retryable_status(resp->status)) {
                        kiln_error_free(e);
                        return 0;
                }
                /* transient: a dropped connection, 5xx, 429 */
                if (++attempt >= c->opts.retries) {
                        if (r < 0) {
                                *err = e;
                                return kiln_error_wrap(err, "after %u attempts", attempt);
                        }
                        return 0; /* the caller reports the last status */
                }
                delay = (uint64_t) c->opts.backoff_ms << (attempt - 1);
                if (delay > MAX_BACKOFF_MS)
                        delay = MAX_BACKOFF_MS;
                if (r == 0 && resp->retry_after >= 0)
                        delay = (uint64_t) (resp->retry_after > MAX_RETRY_AFTER ? MAX_RETRY_AFTER
                                                                                : resp->retry_after) *
                                1000;
                /* The caller may refuse a retry (an upload whose session a failure spoiled):
                 * it then gets this attempt's outcome. */
                if (rewind && rewind(rewind_ctx, req, resp) < 0) {
                        if (r < 0) {
                                *err = e;
                                return -1;
                        }
                        return 0;
                }
                reg_progress(c, "retrying %s %s in %llu ms (%s)", req->method, sc->path,
                             (unsigned long long) delay,
                             r < 0 ? e->msg : (resp->status == 429 ? "too many requests" : "server error"));
                kiln_error_free(e);
                http_resp_release(resp);
                reg_sleep_ms(delay);
        }
}

int reg_status_error(const struct http_resp *r, const struct reg_scope *sc, const char *what,
                     struct kiln_error **err)
{
        _cleanup_free_ char *msg = http_error_message(r);
        enum kiln_errkind kind = KILN_ERR_NET;

        if (r->status == 401 || r->status == 403)
                kind = KILN_ERR_AUTH;
        else if (r->status == 404)
                kind = KILN_ERR_NOTFOUND;
        else if (r->status >= 400 && r->status < 500 && r->status != 429)
                kind = KILN_ERR_INVALID;
        if (r->status == 401)
                return kiln_error_new(err, kind, "%s %s/%s: %s (try: kiln login %s)", what, sc->domain,
                                      sc->path, msg, sc->domain);
        if (r->status == 400 && sc->ep->http && r->body.len &&
            memmem(r->body.buf, r->body.len, "HTTPS server", 12))
                return kiln_error_new(err, KILN_ERR_NET,
                                      "%s answers https, not http: trust its CA with --cert-dir DIR (holding "
                                      "DIR/%s/ca.crt), or use --insecure-registry %s",
                                      sc->ep->host, sc->ep->host, sc->ep->host);
        return kiln_error_new(err, kind, "%s %s/%s: %s", what, sc->domain, sc->path, msg);
}
