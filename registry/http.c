/*
 * One HTTP exchange over libcurl: the only file of kiln that includes curl.h. Connections, DNS
 * and TLS sessions are shared between the threads' handles; request bodies stream from memory
 * or a file, response bodies stream into a sink (2xx) or are collected (capped).
 */
#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "builder/common/json-util.h"
#include "builder/common/xalloc.h"
#include "kiln-config.h"
#include "registry/registry-internal.h"

static pthread_once_t global_once = PTHREAD_ONCE_INIT;

static void global_init(void)
{
        curl_global_init(CURL_GLOBAL_DEFAULT);
}

void http_global_init(void)
{
        pthread_once(&global_once, global_init);
}

const char *reg_curl_version(void)
{
        return curl_version_info(CURLVERSION_NOW)->version;
}

static void share_lock(CURL *handle, curl_lock_data data, curl_lock_access access, void *ctx)
{
        struct reg_client *c = ctx;

        pthread_mutex_lock(&c->share_locks[(unsigned) data % ELEMENTSOF(c->share_locks)]);
}

static void share_unlock(CURL *handle, curl_lock_data data, void *ctx)
{
        struct reg_client *c = ctx;

        pthread_mutex_unlock(&c->share_locks[(unsigned) data % ELEMENTSOF(c->share_locks)]);
}

int http_share_new(struct reg_client *c)
{
        CURLSH *sh = curl_share_init();
        size_t i;

        if (!sh)
                abort();
        for (i = 0; i < ELEMENTSOF(c->share_locks); i++)
                pthread_mutex_init(&c->share_locks[i], NULL);
        curl_share_setopt(sh, CURLSHOPT_LOCKFUNC, share_lock);
        curl_share_setopt(sh, CURLSHOPT_UNLOCKFUNC, share_unlock);
        curl_share_setopt(sh, CURLSHOPT_USERDATA, c);
        curl_share_setopt(sh, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT);
        curl_share_setopt(sh, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
        curl_share_setopt(sh, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
        c->share = sh;
        return 0;
}

void http_share_free(struct reg_client *c)
{
        size_t i;

        if (!c->share)
                return;
        curl_share_cleanup(c->share);
        c->share = NULL;
        for (i = 0; i < ELEMENTSOF(c->share_locks); i++)
                pthread_mutex_destroy(&c->share_locks[i]);
}

struct exchange {
        const struct http_req *req;
        struct http_resp *resp;
        CURL *curl;
        struct kiln_error **err;
        bool sink_failed;
        bool body_started;
};

static char *trimmed_value(const char *v, size_t len)
{
        while (len && (*v == ' ' || *v == '\t')) {
                v++;
                len--;
        }
        while (len && (v[len - 1] == '\r' || v[len - 1] == '\n' || v[len - 1] == ' '))
                len--;
        return xstrndup(v, len);
}

static void set_header(char **slot, const char *v, size_t len)
{
        free(*slot);
        *slot = trimmed_value(v, len);
}

static size_t on_header(char *buf, size_t size, size_t n, void *ctx)
{
        struct exchange *x = ctx;
        struct http_resp *r = x->resp;
        size_t len = size * n;
        const char *colon = memchr(buf, ':', len);
        size_t name_len, vlen;
        const char *v;

        if (len >= 5 && strncmp(buf, "HTTP/", 5) == 0) {
                /* A new response (after a redirect or 100-continue): forget the last headers. */
                free(r->location);
                free(r->www_authenticate);
                free(r->content_type);
                free(r->docker_content_digest);
                free(r->content_range);
                r->location = r->www_authenticate = r->content_type = NULL;
                r->docker_content_digest = r->content_range = NULL;
                r->retry_after = -1;
                return len;
        }
        if (!colon)
                return len;
        name_len = (size_t) (colon - buf);
        v = colon + 1;
        vlen = len - name_len - 1;
#define IS(name) (name_len == strlen(name) && strncasecmp(buf, name, name_len) == 0)
        if (IS("Location"))
                set_header(&r->location, v, vlen);
        else if (IS("WWW-Authenticate"))
                set_header(&r->www_authenticate, v, vlen);
        else if (IS("Content-Type"))
                set_header(&r->content_type, v, vlen);
        else if (IS("Docker-Content-Digest"))
                set_header(&r->docker_content_digest, v, vlen);
        else if (IS("Content-Range"))
                set_header(&r->content_range, v, vlen);
        else if (IS("OCI-Chunk-Min-Length")) {
                _cleanup_free_ char *s = trimmed_value(v, vlen);
                r->chunk_min = strtoll(s, NULL, 10);
        }
        else if (IS("Retry-After")) {
                _cleanup_free_ char *s = trimmed_value(v, vlen);
                char *end;
                long long secs = strtoll(s, &end, 10);
                if (*end == '\0' && secs >= 0) {
                        r->retry_after = secs;
                } else {
                        /* An HTTP date. */
                        struct tm tm = { 0 };
                        if (strptime(s, "%a, %d %b %Y %H:%M:%S GMT", &tm)) {
                                time_t when = timegm(&tm), now = time(NULL);
                                r->retry_after = when > now ? (int64_t) (when - now) : 0;
                        }
                }
        }
#undef IS
        return len;
}

static size_t on_body(char *buf, size_t size, size_t n, void *ctx)
{
        struct exchange *x = ctx;
        struct http_resp *r = x->resp;
        size_t len = size * n;
        long status = 0;

        curl_easy_getinfo(x->curl, CURLINFO_RESPONSE_CODE, &status);
        if (!x->body_started) {
                x->body_started = true;
                /* Asked for a range, got everything: the sink starts again from byte 0. */
                if (status == 200 && x->req->range_from > 0 && x->req->restart &&
                    x->req->restart(x->req->sink_ctx, x->err) < 0) {
                        x->sink_failed = true;
                        return 0;
                }
        }
        if (status >= 200 && status < 300 && x->req->sink) {
                if (x->req->sink(x->req->sink_ctx, buf, len, x->err) < 0) {
                        x->sink_failed = true;
                        return 0; /* aborts the transfer */
                }
                r->sunk += len;
                return len;
        }
        if (status < 200 || status >= 300) {
                /* An error body: keep what fits, for the message. */
                if (r->body.len < REG_MAX_ERROR_BODY)
                        kiln_buf_add(&r->body, buf, len < REG_MAX_ERROR_BODY - r->body.len
                                                            ? len
                                                            : REG_MAX_ERROR_BODY - r->body.len,
                                     NULL);
                return len;
        }
        if (kiln_buf_add(&r->body, buf, len, x->err) < 0) {
                x->sink_failed = true;
                return 0;
        }
        return len;
}

struct upload {
        const struct http_req *req;
        uint64_t pos;
};

static size_t on_read(char *buf, size_t size, size_t n, void *ctx)
{
        struct upload *u = ctx;
        const struct http_req *req = u->req;
        size_t want = size * n;
        uint64_t left;
        ssize_t got;

        if (req->body_fd < 0) {
                left = req->body_len - u->pos;
                if (want > left)
                        want = (size_t) left;
                if (want == 0)
                        return 0;
                memcpy(buf, (const char *) req->body + u->pos, want);
                u->pos += want;
                return want;
        }
        left = req->body_size - u->pos;
        if (want > left)
                want = (size_t) left;
        if (want == 0)
                return 0;
        do
                got = pread(req->body_fd, buf, want, (off_t) (req->body_offset + u->pos));
        while (got < 0 && errno == EINTR);
        if (got <= 0)
                return CURL_READFUNC_ABORT;
        u->pos += (uint64_t) got;
        return (size_t) got;
}

static int seek_cb(void *ctx, curl_off_t offset, int origin)
{
        struct upload *u = ctx;

        if (origin != SEEK_SET || offset < 0)
                return CURL_SEEKFUNC_CANTSEEK;
        u->pos = (uint64_t) offset;
        return CURL_SEEKFUNC_OK;
}

static bool transient_curl_error(CURLcode rc)
{
        static const CURLcode transient[] = {
                CURLE_COULDNT_RESOLVE_HOST, CURLE_COULDNT_CONNECT, CURLE_OPERATION_TIMEDOUT,
                CURLE_SEND_ERROR,           CURLE_RECV_ERROR,      CURLE_GOT_NOTHING,
                CURLE_PARTIAL_FILE,         CURLE_HTTP2,           CURLE_HTTP2_STREAM,
                CURLE_SSL_CONNECT_ERROR,
        };
        size_t i;

        for (i = 0; i < ELEMENTSOF(transient); i++)
                if (rc == transient[i])
                        return true;
        return false;
}

int http_do(struct reg_client *c, const struct reg_endpoint *ep, const struct http_req *req,
            struct http_resp *resp, struct kiln_error **err)
{
        char errbuf[CURL_ERROR_SIZE] = "";
        struct curl_slist *headers = NULL;
        struct exchange x = { .req = req, .resp = resp, .err = err };
        struct upload up = { .req = req };
        _cleanup_free_ char *h_auth = NULL, *h_accept = NULL, *h_ct = NULL, *h_cr = NULL;
        _cleanup_free_ char *range = NULL;
        CURLcode rc;
        CURL *curl;
        bool has_body = req->body || req->body_fd >= 0;
        uint64_t body_size = req->body_fd >= 0 ? req->body_size : req->body_len;

        memset(resp, 0, sizeof(*resp));
        kiln_buf_init(&resp->body, req->max_body ? req->max_body : REG_MAX_MANIFEST);
        resp->retry_after = -1;
        resp->chunk_min = -1;
        resp->content_length = -1;
        curl = curl_easy_init();
        if (!curl)
                abort();
        x.curl = curl;
        curl_easy_setopt(curl, CURLOPT_URL, req->url);
        curl_easy_setopt(curl, CURLOPT_SHARE, c->share);
        curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
        curl_easy_setopt(curl, CURLOPT_USERAGENT, "kiln/" KILN_VERSION);
        curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(curl, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, 30L);
        /* A transfer that stalls below 1 byte/s for 60 s is dead. */
        curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
        curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, 60L);
        curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(curl, CURLOPT_HEADERDATA, &x);
        curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(curl, CURLOPT_WRITEDATA, &x);
        curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, req->follow_redirects ? 1L : 0L);
        curl_easy_setopt(curl, CURLOPT_MAXREDIRS, 10L);
        if (!ep->http && ep->skip_verify) {
                curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, 0L);
                curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, 0L);
        }
        if (!ep->http && ep->ca_pem) {
                struct curl_blob blob = { .data = ep->ca_pem, .len = ep->ca_len,
                                          .flags = CURL_BLOB_NOCOPY };
                curl_easy_setopt(curl, CURLOPT_CAINFO_BLOB, &blob);
        }
        if (!ep->http && ep->client_cert && ep->client_key) {
                curl_easy_setopt(curl, CURLOPT_SSLCERT, ep->client_cert);
                curl_easy_setopt(curl, CURLOPT_SSLKEY, ep->client_key);
        }
        /* A custom Authorization header is not sent to another host on a redirect. */
        if (req->authorization) {
                h_auth = xasprintf("Authorization: %s", req->authorization);
                headers = curl_slist_append(headers, h_auth);
        }
        if (req->accept) {
                h_accept = xasprintf("Accept: %s", req->accept);
                headers = curl_slist_append(headers, h_accept);
        }
        if (req->content_type) {
                h_ct = xasprintf("Content-Type: %s", req->content_type);
                headers = curl_slist_append(headers, h_ct);
        }
        if (req->content_range) {
                h_cr = xasprintf("Content-Range: %s", req->content_range);
                headers = curl_slist_append(headers, h_cr);
        }
        headers = curl_slist_append(headers, "Expect:");
        if (req->range_from > 0) {
                range = xasprintf("%lld-", (long long) req->range_from);
                curl_easy_setopt(curl, CURLOPT_RANGE, range);
        }
        if (strcmp(req->method, "HEAD") == 0) {
                curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
        } else if (strcmp(req->method, "GET") != 0) {
                if (has_body || strcmp(req->method, "PUT") == 0 || strcmp(req->method, "PATCH") == 0) {
                        curl_easy_setopt(curl, CURLOPT_UPLOAD, 1L);
                        curl_easy_setopt(curl, CURLOPT_READFUNCTION, on_read);
                        curl_easy_setopt(curl, CURLOPT_READDATA, &up);
                        curl_easy_setopt(curl, CURLOPT_SEEKFUNCTION, seek_cb);
                        curl_easy_setopt(curl, CURLOPT_SEEKDATA, &up);
                        curl_easy_setopt(curl, CURLOPT_INFILESIZE_LARGE, (curl_off_t) body_size);
                } else {
                        curl_easy_setopt(curl, CURLOPT_POST, 1L);
                        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, 0L);
                        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, "");
                }
                curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, req->method);
        }
        curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
        rc = curl_easy_perform(curl);
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &resp->status);
        {
                curl_off_t cl = -1;
                if (curl_easy_getinfo(curl, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl) == CURLE_OK)
                        resp->content_length = cl;
        }
        curl_slist_free_all(headers);
        curl_easy_cleanup(curl);
        if (x.sink_failed)
                return -1; /* *err says why */
        if (rc != CURLE_OK) {
                resp->transport_error = transient_curl_error(rc) || resp->status == 0;
                return kiln_error_new(err, KILN_ERR_NET, "%s %s: %s", req->method, req->url,
                                      errbuf[0] ? errbuf : curl_easy_strerror(rc));
        }
        return 0;
}

void http_resp_release(struct http_resp *r)
{
        kiln_buf_release(&r->body);
        free(r->location);
        free(r->www_authenticate);
        free(r->content_type);
        free(r->docker_content_digest);
        free(r->content_range);
        memset(r, 0, sizeof(*r));
}

char *http_error_message(const struct http_resp *r)
{
        _cleanup_json_ json_t *j = NULL;
        json_t *errors, *first;
        const char *code, *message;

        if (r->body.len)
                j = kiln_json_loadb(r->body.buf, r->body.len, "error", NULL);
        errors = j ? json_object_get(j, "errors") : NULL;
        first = json_array_get(errors, 0);
        code = kiln_json_get_string(first, "code");
        message = kiln_json_get_string(first, "message");
        if (code && message) {
                _cleanup_free_ char *lower = xstrdup(code);
                for (char *p = lower; *p; p++)
                        *p = (char) (*p >= 'A' && *p <= 'Z' ? *p - 'A' + 'a' : (*p == '_' ? ' ' : *p));
                return xasprintf("%s: %s", lower, message);
        }
        if (message)
                return xstrdup(message);
        return xasprintf("HTTP %ld", r->status);
}

char *http_url_resolve(const char *base, const char *location, const char *query,
                       struct kiln_error **err)
{
        CURLU *u = curl_url();
        char *out = NULL, *scheme = NULL, *copy = NULL;

        if (!u)
                abort();
        /* Setting a relative URL over an absolute one resolves it, as a redirect would. */
        if (curl_url_set(u, CURLUPART_URL, base, 0) != CURLUE_OK ||
            curl_url_set(u, CURLUPART_URL, location, 0) != CURLUE_OK ||
            curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
            (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0)) {
                kiln_error_new(err, KILN_ERR_PARSE, "the registry answered with an unusable location '%s'",
                               location);
                goto out;
        }
        if (query && curl_url_set(u, CURLUPART_QUERY, query, CURLU_APPENDQUERY | CURLU_URLENCODE) != CURLUE_OK) {
                kiln_error_new(err, KILN_ERR_PARSE, "cannot add '%s' to '%s'", query, location);
                goto out;
        }
        if (curl_url_get(u, CURLUPART_URL, &copy, 0) != CURLUE_OK) {
                kiln_error_new(err, KILN_ERR_PARSE, "the registry answered with an unusable location '%s'",
                               location);
                goto out;
        }
        out = xstrdup(copy);
out:
        curl_free(copy);
        curl_free(scheme);
        curl_url_cleanup(u);
        return out;
}

bool http_url_on_host(const char *url, const char *scheme, const char *host)
{
        size_t ls = strlen(scheme), lh = strlen(host);

        return strncmp(url, scheme, ls) == 0 && strncmp(url + ls, "://", 3) == 0 &&
               strncasecmp(url + ls + 3, host, lh) == 0 &&
               (url[ls + 3 + lh] == '/' || url[ls + 3 + lh] == '?' || url[ls + 3 + lh] == '\0');
}

char *http_escape(const char *s)
{
        char *e = curl_easy_escape(NULL, s, 0), *out;

        if (!e)
                abort();
        out = xstrdup(e);
        curl_free(e);
        return out;
}
