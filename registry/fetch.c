/*
 * ADD <url>: the source's download, as BuildKit's HTTP source (source/http/httpsource.go) and
 * the Dockerfile frontend (dispatchCopy) do it. The body streams into an unnamed file in the
 * build's scratch directory while it is hashed, so memory stays flat whatever the size; the
 * caller copies that file into the image through cp_copy(). Redirects are followed (Go's
 * client: at most 10), only to http and https; a status outside 2xx after them is an error.
 * Proxies come from the environment (libcurl reads http_proxy, https_proxy, no_proxy,
 * all_proxy); the CAs are libcurl's default bundle, or SSL_CERT_FILE / SSL_CERT_DIR when set,
 * as Go (and so BuildKit) honours them. Not a registry exchange (no auth, no certs.d): the
 * module that owns HTTP holds it, beside http.c.
 */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "builder/common/cleanup.h"
#include "builder/common/fd-util.h"
#include "builder/common/xalloc.h"
#include "kiln-config.h"
#include "layers/layers.h"
#include "registry/registry.h"

#define UNNAMED "__unnamed__" /* BuildKit's name for a URL whose path has no last element */

DEFINE_TRIVIAL_CLEANUP_FUNC(CURL *, curl_easy_cleanup)
DEFINE_TRIVIAL_CLEANUP_FUNC(CURLU *, curl_url_cleanup)

static pthread_once_t global_once = PTHREAD_ONCE_INIT;

static void global_init(void)
{
        curl_global_init(CURL_GLOBAL_DEFAULT);
}

static bool has_prefix(const char *s, const char *prefix)
{
        return strncmp(s, prefix, strlen(prefix)) == 0;
}

bool reg_url_is_http(const char *s)
{
        return has_prefix(s, "http://") || has_prefix(s, "https://");
}

/* "user@host:path", BuildKit's implicit SSH transport (sshutil.IsImplicitSSHTransport). */
static bool is_scp_like(const char *s)
{
        size_t user = strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_");
        size_t host;

        if (user == 0 || s[user] != '@')
                return false;
        s += user + 1;
        host = strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.");
        return host > 0 && s[host] == ':';
}

bool reg_url_is_git(const char *s)
{
        size_t len;

        if (has_prefix(s, "git://") || has_prefix(s, "ssh://") || is_scp_like(s))
                return true;
        if (!reg_url_is_http(s))
                return false;
        /* An http(s) URL is a git repository when its path ends in ".git" (gitutil.ParseGitRef):
         * the path stops at the query or the fragment ("#ref:subdir"). */
        len = strcspn(s, "?#");
        return len >= 4 && strncmp(s + len - 4, ".git", 4) == 0;
}

char *reg_url_file_name(const char *url)
{
        _cleanup_(curl_url_cleanupp) CURLU *u = curl_url();
        char *path = NULL, *end, *base;
        char *name;

        if (!u)
                abort();
        if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
            curl_url_get(u, CURLUPART_PATH, &path, CURLU_URLDECODE) != CURLUE_OK)
                return xstrdup(UNNAMED);
        /* Go's path.Base of the decoded path: trailing slashes dropped, then the last element;
         * "." and "/" (and "..", which cannot name a file) mean there is none. */
        end = path + strlen(path);
        while (end > path && end[-1] == '/')
                end--;
        *end = '\0';
        base = strrchr(path, '/');
        base = base ? base + 1 : path;
        if (!*base || strcmp(base, ".") == 0 || strcmp(base, "..") == 0)
                name = xstrdup(UNNAMED);
        else
                name = xstrdup(base);
        curl_free(path);
        return name;
}

char *reg_url_redacted(const char *url)
{
        _cleanup_(curl_url_cleanupp) CURLU *u = curl_url();
        char *password = NULL, *text = NULL, *out;

        if (!u)
                abort();
        if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
            curl_url_get(u, CURLUPART_PASSWORD, &password, 0) != CURLUE_OK)
                return xstrdup(url); /* no password to hide */
        curl_free(password);
        /* Go's URL.Redacted(), as BuildKit's urlutil.RedactCredentials */
        if (curl_url_set(u, CURLUPART_PASSWORD, "xxxxx", 0) != CURLUE_OK ||
            curl_url_get(u, CURLUPART_URL, &text, 0) != CURLUE_OK)
                return xstrdup("<a URL with credentials>");
        out = xstrdup(text);
        curl_free(text);
        return out;
}

void reg_fetched_release(struct reg_fetched *f)
{
        if (!f)
                return;
        closep(&f->fd);
        f->fd = -1;
}

struct transfer {
        CURL *curl;
        int fd;
        struct layer_sha256 *hash;
        uint64_t size;
        long status;     /* the response a body arrived for, when it was not 2xx */
        int write_errno; /* the write that failed, or 0 */
};

static size_t on_body(char *buf, size_t size, size_t n, void *ctx)
{
        struct transfer *t = ctx;
        size_t len = size * n;
        long status = 0;

        curl_easy_getinfo(t->curl, CURLINFO_RESPONSE_CODE, &status);
        if (status < 200 || status >= 300) {
                /* an error page: not the file; the status says what went wrong */
                t->status = status;
                return 0;
        }
        if (kiln_write_all(t->fd, buf, len, NULL) < 0) {
                t->write_errno = errno ? errno : EIO;
                return 0;
        }
        layer_sha256_update(t->hash, buf, len);
        t->size += len;
        return len;
}

/* An unnamed file in `dirfd` (a named one, unlinked at once, where O_TMPFILE is not there). */
static int temp_file(int dirfd, struct kiln_error **err)
{
        static unsigned counter;
        int fd = openat(dirfd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);

        if (fd >= 0 || (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL))
                goto out;
        for (unsigned tries = 0; tries < 100; tries++) {
                _cleanup_free_ char *name =
                        xasprintf(".fetch-%ld-%u", (long) getpid(),
                                  __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED));
                fd = openat(dirfd, name, O_CREAT | O_EXCL | O_RDWR | O_NOFOLLOW | O_CLOEXEC, 0600);
                if (fd >= 0) {
                        (void) unlinkat(dirfd, name, 0);
                        break;
                }
                if (errno != EEXIST)
                        break;
        }
out:
        if (fd < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "create a download file");
        return fd;
}

static void set_tls_env(CURL *curl)
{
        const char *file = getenv("SSL_CERT_FILE"), *dir = getenv("SSL_CERT_DIR");

        if (file && *file)
                curl_easy_setopt(curl, CURLOPT_CAINFO, file);
        if (dir && *dir)
                curl_easy_setopt(curl, CURLOPT_CAPATH, dir);
}

int reg_fetch_url(const char *url, int dirfd, const char *checksum, struct reg_fetched *ret,
                  struct kiln_error **err)
{
        char errbuf[CURL_ERROR_SIZE] = "";
        _cleanup_(curl_easy_cleanupp) CURL *curl = NULL;
        _cleanup_(layer_sha256_freep) struct layer_sha256 *hash = NULL;
        _cleanup_close_ int fd = -1;
        struct transfer t = { 0 };
        char digest[LAYER_DIGEST_SIZE];
        curl_off_t filetime = -1;
        long status = 0;
        CURLcode rc;

        if (checksum && !has_prefix(checksum, "sha256:"))
                return kiln_error_new(err, KILN_ERR_UNSUPPORTED,
                                      "--checksum=%s: only sha256 digests are supported", checksum);
        if (checksum && !layer_digest_valid(checksum))
                return kiln_error_new(err, KILN_ERR_INVALID,
                                      "invalid checksum '%s': expected sha256:<64 hex digits>",
                                      checksum);
        pthread_once(&global_once, global_init);
        fd = temp_file(dirfd, err);
        if (fd < 0)
                return -1;
        hash = layer_sha256_new();
        curl = curl_easy_init();
        if (!curl)
                abort();
        t = (struct transfer){ .curl = curl, .fd = fd, .hash = hash };
        curl_easy_setopt(curl, CURLOPT_URL, url);
        curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
        curl_easy_setopt(curl, CURLOPT_USERAGENT, "kiln/" KILN_VERSION);
        curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(curl, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 1L);
        curl_easy_setopt(curl, CURLOPT_MAXREDIRS, 10L);
        curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, 30L);
        /* A transfer that stalls below 1 byte/s for 60 s is dead. */
        curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
        curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, 60L);
        /* No Accept-Encoding is sent (a server answers with the file itself, as to Go's client
         * once it has decoded it), and an encoding sent anyway is kept: it is the file. */
        curl_easy_setopt(curl, CURLOPT_HTTP_CONTENT_DECODING, 0L);
        curl_easy_setopt(curl, CURLOPT_FILETIME, 1L); /* Last-Modified */
        curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(curl, CURLOPT_WRITEDATA, &t);
        set_tls_env(curl);
        rc = curl_easy_perform(curl);
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
        if (t.write_errno) {
                errno = t.write_errno;
                return kiln_error_errno(err, KILN_ERR_IO, "write the download");
        }
        if (t.status)
                status = t.status;
        if (status != 0 && (status < 200 || status >= 300))
                return kiln_error_new(err, KILN_ERR_NET, "HTTP %ld", status);
        if (rc != CURLE_OK)
                return kiln_error_new(err, KILN_ERR_NET, "%s",
                                      errbuf[0] ? errbuf : curl_easy_strerror(rc));
        layer_sha256_final(hash, digest);
        if (checksum && strcmp(checksum, digest) != 0)
                return kiln_error_new(err, KILN_ERR_DIGEST,
                                      "checksum mismatch: expected %s, got %s", checksum, digest);
        if (curl_easy_getinfo(curl, CURLINFO_FILETIME_T, &filetime) != CURLE_OK)
                filetime = -1;
        if (lseek(fd, 0, SEEK_SET) < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "rewind the download");
        *ret = (struct reg_fetched){ .fd = TAKE_FD(fd),
                                     .size = t.size,
                                     .has_mtime = filetime >= 0 };
        memcpy(ret->digest, digest, LAYER_DIGEST_SIZE);
        if (filetime >= 0)
                ret->mtime = (struct timespec){ .tv_sec = (time_t) filetime };
        return 0;
}
