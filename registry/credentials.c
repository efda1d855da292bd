/*
 * Registry credentials, where Docker and podman keep them: containers/image's auth.json
 * (REGISTRY_AUTH_FILE or $XDG_RUNTIME_DIR/containers/auth.json), then Docker's config.json
 * ($DOCKER_CONFIG/config.json or ~/.docker/config.json) with its credential helpers.
 *
 * Keys: Docker writes Docker Hub as "https://index.docker.io/v1/" and other registries as the
 * bare host; older tools wrote "http://host" or "https://host/v1/"; containers/image writes
 * "docker.io". A key matches a host after its scheme and path are stripped (Docker's
 * ConvertToHostname), with index.docker.io and registry-1.docker.io read as docker.io; an
 * exact key wins over one that only matches that way.
 *
 * Credential helpers are the docker-credential-helpers protocol: `docker-credential-NAME get`
 * reads the server URL on stdin and prints {"ServerURL","Username","Secret"}; `store` reads
 * that object; `erase` reads the URL. A helper reports a missing entry by printing
 * "credentials not found in native keychain" and failing.
 *
 * Secrets never reach an error message: JSON errors in these files lose jansson's text (which
 * quotes the input), a helper's output is only quoted with any known secret blanked out, and
 * buffers that held a secret are wiped before they are freed.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "builder/common/fd-util.h"
#include "builder/common/json-util.h"
#include "builder/common/strbuf.h"
#include "builder/common/xalloc.h"
#include "layers/layers.h"
#include "registry/registry.h"

#define CONFIG_MAX        (4u << 20) /* a config.json or auth.json */
#define HELPER_OUTPUT_MAX (1u << 20) /* a helper's stdout */
#define HELPER_STDERR_MAX 4096       /* what is kept of a helper's stderr */
#define HELPER_QUOTE_MAX  512        /* what of that an error message quotes */
#define HELPER_TIMEOUT_MS 30000
#define DOCKER_HUB_KEY    "https://index.docker.io/v1/"
#define DOCKER_HUB_HOST   "docker.io"
#define TOKEN_USERNAME    "<token>" /* docker-credential-helpers: the secret is a token */
#define NOT_FOUND_MESSAGE "credentials not found"

/* ------------------------------------------------------------------------------------ */
/* Secrets                                                                                */
/* ------------------------------------------------------------------------------------ */

static void wipe_free(char *s)
{
        if (s) {
                explicit_bzero(s, strlen(s));
                free(s);
        }
}

static void wipe_freep(char **s)
{
        wipe_free(*s);
}

#define _cleanup_wipe_ _cleanup_(wipe_freep)

void reg_credentials_release(struct reg_credentials *c)
{
        if (!c)
                return;
        wipe_free(c->username);
        wipe_free(c->password);
        wipe_free(c->identity_token);
        c->username = c->password = c->identity_token = NULL;
}

static void credentials_releasep(struct reg_credentials *c)
{
        reg_credentials_release(c);
}

/* ------------------------------------------------------------------------------------ */
/* Hosts and keys                                                                         */
/* ------------------------------------------------------------------------------------ */

/* "https://index.docker.io/v1/" -> "docker.io", "http://localhost:5000" -> "localhost:5000". */
static char *normalize_host(const char *key)
{
        size_t len;

        if (strncasecmp(key, "https://", 8) == 0)
                key += 8;
        else if (strncasecmp(key, "http://", 7) == 0)
                key += 7;
        len = strcspn(key, "/");
        if ((len == 15 && strncasecmp(key, "index.docker.io", 15) == 0) ||
            (len == 20 && strncasecmp(key, "registry-1.docker.io", 20) == 0))
                return xstrdup(DOCKER_HUB_HOST);
        return xstrndup(key, len);
}

static bool is_docker_hub(const char *host)
{
        return strcasecmp(host, DOCKER_HUB_HOST) == 0;
}

/* The key Docker writes and the URL it gives helpers. */
static const char *server_url(const char *host)
{
        return is_docker_hub(host) ? DOCKER_HUB_KEY : host;
}

static bool key_matches(const char *key, const char *host)
{
        _cleanup_free_ char *k = normalize_host(key);

        return strcasecmp(k, host) == 0;
}

/* The member of `obj` for `host`: the exact key first, then any key that normalises to it. */
static json_t *find_member(json_t *obj, const char *host, const char **ret_key)
{
        const char *exact[] = { server_url(host), host }, *key;
        json_t *v;
        size_t i;

        for (i = 0; i < ELEMENTSOF(exact); i++) {
                v = json_object_get(obj, exact[i]);
                if (v) {
                        *ret_key = exact[i];
                        return v;
                }
        }
        json_object_foreach(obj, key, v)
        {
                if (key_matches(key, host)) {
                        *ret_key = key;
                        return v;
                }
        }
        return NULL;
}

/* ------------------------------------------------------------------------------------ */
/* Files                                                                                  */
/* ------------------------------------------------------------------------------------ */

static char *auth_file_path(void)
{
        const char *p = getenv("REGISTRY_AUTH_FILE"), *run;

        if (p && *p)
                return xstrdup(p);
        run = getenv("XDG_RUNTIME_DIR");
        if (run && *run)
                return xasprintf("%s/containers/auth.json", run);
        return NULL;
}

static char *docker_config_dir(void)
{
        const char *p = getenv("DOCKER_CONFIG"), *home;

        if (p && *p)
                return xstrdup(p);
        home = getenv("HOME");
        if (home && *home)
                return xasprintf("%s/.docker", home);
        return NULL;
}

/*
 * Loads a credentials file into *ret, or NULL when it does not exist. jansson's message is
 * dropped (it quotes the text near the error, which may be a secret); the position stays.
 */
static int load_file(const char *path, json_t **ret, struct kiln_error **err)
{
        struct kiln_error *e = NULL;
        json_t *j = kiln_json_load_file(path, CONFIG_MAX, &e);

        if (!j) {
                if (e->kind == KILN_ERR_NOTFOUND) {
                        kiln_error_free(e);
                        *ret = NULL;
                        return 0;
                }
                if (e->kind == KILN_ERR_PARSE) {
                        free(e->msg);
                        e->msg = xstrdup("malformed JSON");
                }
                if (!err) {
                        kiln_error_free(e);
                        return -1;
                }
                kiln_error_free(*err);
                *err = e;
                return -1;
        }
        if (!json_is_object(j)) {
                json_decref(j);
                return kiln_error_new(err, KILN_ERR_PARSE, "'%s': not a JSON object", path);
        }
        *ret = j;
        return 0;
}

/* obj[name] as an object, or NULL when absent; PARSE when it is something else. */
static int get_object(json_t *obj, const char *name, const char *path, json_t **ret,
                      struct kiln_error **err)
{
        json_t *v = json_object_get(obj, name);

        if (v && !json_is_object(v))
                return kiln_error_new(err, KILN_ERR_PARSE, "'%s': '%s' is not an object", path,
                                      name);
        *ret = v;
        return 0;
}

static const char *nonempty_string(const json_t *obj, const char *key)
{
        const char *s = kiln_json_get_string(obj, key);

        return s && *s ? s : NULL;
}

/* Reads an auths entry. 1 with credentials, 0 when it holds none, -1 on error. */
static int read_entry(const json_t *entry, const char *path, const char *key,
                      struct reg_credentials *ret, struct kiln_error **err)
{
        _cleanup_(credentials_releasep) struct reg_credentials c = { 0 };
        const char *auth, *token;

        if (!json_is_object(entry))
                return kiln_error_new(err, KILN_ERR_PARSE,
                                      "'%s': auths entry '%s' is not an object", path, key);
        auth = nonempty_string(entry, "auth");
        if (auth) {
                size_t len;
                void *data;
                char *plain, *colon;
                bool ok;

                if (layer_base64_decode(auth, &data, &len, NULL) < 0)
                        return kiln_error_new(err, KILN_ERR_PARSE,
                                              "'%s': auths entry '%s': \"auth\" is not base64",
                                              path, key);
                plain = data;
                colon = memchr(plain, ':', len);
                ok = colon && colon != plain && !memchr(plain, '\0', len);
                if (ok) {
                        c.username = xstrndup(plain, (size_t) (colon - plain));
                        c.password = xstrdup(colon + 1);
                }
                explicit_bzero(plain, len);
                free(plain);
                if (!ok)
                        return kiln_error_new(err, KILN_ERR_PARSE,
                                              "'%s': auths entry '%s': \"auth\" is not "
                                              "base64 of username:password",
                                              path, key);
        } else {
                const char *u = kiln_json_get_string(entry, "username");
                const char *p = kiln_json_get_string(entry, "password");

                if ((u && *u) || (p && *p)) {
                        c.username = xstrdup(u ? u : "");
                        c.password = xstrdup(p ? p : "");
                }
        }
        token = nonempty_string(entry, "identitytoken");
        if (token)
                c.identity_token = xstrdup(token);
        if (!c.username && !c.identity_token)
                return 0;
        if (!c.username)
                c.username = xstrdup("");
        if (!c.password)
                c.password = xstrdup("");
        *ret = c;
        memset(&c, 0, sizeof(c));
        return 1;
}

/* Looks `host` up in root["auths"]: 1 found, 0 not there, -1 on error. */
static int lookup_auths(json_t *root, const char *path, const char *host,
                        struct reg_credentials *ret, struct kiln_error **err)
{
        json_t *auths = NULL, *entry;
        const char *key;

        if (get_object(root, "auths", path, &auths, err) < 0)
                return -1;
        if (!auths)
                return 0;
        entry = find_member(auths, host, &key);
        if (!entry)
                return 0;
        return read_entry(entry, path, key, ret, err);
}

/* Docker's getConfiguredCredentialStore: credHelpers[host] (even ""), else credsStore. */
static int configured_helper(json_t *cfg, const char *path, const char *host, const char **ret,
                             struct kiln_error **err)
{
        json_t *helpers = NULL, *v;
        const char *key, *name;

        if (get_object(cfg, "credHelpers", path, &helpers, err) < 0)
                return -1;
        v = helpers ? find_member(helpers, host, &key) : NULL;
        if (v) {
                if (!json_is_string(v))
                        return kiln_error_new(err, KILN_ERR_PARSE,
                                              "'%s': credHelpers entry '%s' is not a string", path,
                                              key);
                name = json_string_value(v);
        } else {
                v = json_object_get(cfg, "credsStore");
                if (v && !json_is_string(v))
                        return kiln_error_new(err, KILN_ERR_PARSE,
                                              "'%s': credsStore is not a string", path);
                name = v ? json_string_value(v) : NULL;
        }
        if (name && !*name)
                name = NULL;
        if (name && strchr(name, '/'))
                return kiln_error_new(err, KILN_ERR_INVALID,
                                      "'%s': credential helper name '%s' contains '/'", path, name);
        *ret = name;
        return 0;
}

static int fsync_dir_of(const char *path, struct kiln_error **err)
{
        _cleanup_free_ char *dir = xstrdup(path);
        _cleanup_close_ int fd = -1;
        char *slash = strrchr(dir, '/');

        if (slash == dir)
                slash[1] = '\0';
        else if (slash)
                *slash = '\0';
        else
                strcpy(dir, ".");
        fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0 || fsync(fd) < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "fsync '%s'", dir);
        return 0;
}

/*
 * Writes the docker config atomically: a temporary file beside it, fsync, rename, fsync of the
 * directory. A config.json that is a symbolic link is written through (as Docker does), so a
 * link into a dotfiles checkout stays a link.
 */
static int write_config(const char *dir, const char *path, json_t *root, struct kiln_error **err)
{
        _cleanup_free_ char *target = NULL, *tmp = NULL;
        _cleanup_wipe_ char *text = NULL;
        _cleanup_close_ int fd = -1;
        char link[PATH_MAX];
        ssize_t n;
        int r = 0;

        if (mkdir(dir, 0700) < 0 && errno != EEXIST)
                return kiln_error_errno(err, KILN_ERR_IO, "mkdir '%s'", dir);
        n = readlink(path, link, sizeof(link) - 1);
        if (n > 0) {
                link[n] = '\0';
                target = link[0] == '/' ? xstrdup(link) : xasprintf("%s/%s", dir, link);
        } else {
                target = xstrdup(path);
        }
        text = json_dumps(root, JSON_INDENT(8));
        if (!text)
                return kiln_error_new(err, KILN_ERR_GENERIC, "cannot serialise '%s'", path);
        tmp = xasprintf("%s.XXXXXX", target);
        fd = mkostemp(tmp, O_CLOEXEC);
        if (fd < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "create a temporary file for '%s'",
                                        target);
        if (fchmod(fd, 0600) < 0)
                r = kiln_error_errno(err, KILN_ERR_IO, "chmod '%s'", tmp);
        else if (kiln_write_all(fd, text, strlen(text), err) < 0 ||
                 kiln_write_all(fd, "\n", 1, err) < 0)
                r = kiln_error_wrap(err, "write '%s'", tmp);
        else if (fsync(fd) < 0)
                r = kiln_error_errno(err, KILN_ERR_IO, "fsync '%s'", tmp);
        else if (close(TAKE_FD(fd)) < 0)
                r = kiln_error_errno(err, KILN_ERR_IO, "close '%s'", tmp);
        else if (rename(tmp, target) < 0)
                r = kiln_error_errno(err, KILN_ERR_IO, "rename '%s' to '%s'", tmp, target);
        if (r < 0) {
                unlink(tmp);
                return r;
        }
        return fsync_dir_of(target, err);
}

/* ------------------------------------------------------------------------------------ */
/* Credential helpers                                                                     */
/* ------------------------------------------------------------------------------------ */

static long long now_ms(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (long long) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Appends a helper's output for an error message: one line, bounded, `secret` blanked. */
static void quote_output(struct kiln_buf *b, const char *text, size_t len, const char *secret)
{
        _cleanup_wipe_ char *copy = xstrndup(text, len);
        size_t i, start, end, slen = secret ? strlen(secret) : 0;
        char *hit;

        if (slen > 0) {
                for (hit = strstr(copy, secret); hit; hit = strstr(hit + slen, secret))
                        memset(hit, '*', slen);
        }
        len = strlen(copy);
        for (i = 0; i < len; i++)
                if ((unsigned char) copy[i] < 0x20 || copy[i] == 0x7f)
                        copy[i] = ' ';
        for (start = 0; start < len && copy[start] == ' '; start++)
                ;
        for (end = len; end > start && copy[end - 1] == ' '; end--)
                ;
        if (end == start)
                return;
        if (end - start > HELPER_QUOTE_MAX)
                end = start + HELPER_QUOTE_MAX;
        kiln_buf_adds(b, ": ", NULL);
        kiln_buf_add(b, copy + start, end - start, NULL);
}

struct helper_run {
        const char *prog; /* "docker-credential-NAME" */
        const char *verb; /* get, store, erase */
        const char *host; /* for messages */
        const char *input;
        size_t input_len;
        const char *secret; /* blanked out of anything quoted, or NULL */
        char *out;          /* stdout, NUL-terminated; wiped by helper_run_release() */
        size_t out_len;
        char err_text[HELPER_STDERR_MAX + 1];
        size_t err_len;
        int status;
};

static void helper_run_release(struct helper_run *h)
{
        if (h->out) {
                explicit_bzero(h->out, h->out_len);
                free(h->out);
                h->out = NULL;
        }
}

static _noreturn_ void child_exec(const struct helper_run *h, int fds[3], int status_fd)
{
        char *argv[] = { (char *) h->prog, (char *) h->verb, NULL };
        struct sigaction sa = { .sa_handler = SIG_DFL };
        sigset_t none;
        int i, e;

        /* Move the three ends above 2 first, so that dup2 cannot clobber one with another. */
        for (i = 0; i < 3; i++) {
                if (fds[i] < 3) {
                        fds[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, 3);
                        if (fds[i] < 0)
                                goto fail;
                }
        }
        for (i = 0; i < 3; i++)
                if (dup2(fds[i], i) < 0)
                        goto fail;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        sigaction(SIGPIPE, &sa, NULL);
        execvp(h->prog, argv);
fail:
        e = errno;
        (void) !write(status_fd, &e, sizeof(e));
        _exit(127);
}

static void close_fdp_now(int *fd)
{
        if (*fd >= 0)
                close(TAKE_FD(*fd));
}

/*
 * Feeds the input, collects stdout and stderr and reaps the child, within the timeout. The
 * descriptors are the caller's and are closed here as each side finishes; on failure the
 * caller's _cleanup_pid_ kills the child.
 */
static int helper_communicate(struct helper_run *h, pid_t *pid, int *in_fd, int *out_fd,
                              int *err_fd, struct kiln_error **err)
{
        long long deadline = now_ms() + HELPER_TIMEOUT_MS;
        size_t written = 0;
        char sink[4096];

        h->out = xmalloc(HELPER_OUTPUT_MAX + 1);
        h->out[0] = '\0';
        if (h->input_len == 0)
                close_fdp_now(in_fd);
        while (*out_fd >= 0 || *err_fd >= 0) {
                struct pollfd p[3];
                long long left = deadline - now_ms();
                nfds_t n = 0;
                int in_i = -1, out_i = -1, err_i = -1;

                if (left <= 0)
                        goto timeout;
                if (*in_fd >= 0) {
                        in_i = (int) n;
                        p[n++] = (struct pollfd){ .fd = *in_fd, .events = POLLOUT };
                }
                if (*out_fd >= 0) {
                        out_i = (int) n;
                        p[n++] = (struct pollfd){ .fd = *out_fd, .events = POLLIN };
                }
                if (*err_fd >= 0) {
                        err_i = (int) n;
                        p[n++] = (struct pollfd){ .fd = *err_fd, .events = POLLIN };
                }
                if (poll(p, n, (int) left) < 0) {
                        if (errno == EINTR)
                                continue;
                        return kiln_error_errno(err, KILN_ERR_IO, "poll");
                }
                if (in_i >= 0 && p[in_i].revents) {
                        ssize_t k = send(*in_fd, h->input + written, h->input_len - written,
                                         MSG_NOSIGNAL | MSG_DONTWAIT);

                        if (k > 0)
                                written += (size_t) k;
                        /* A helper that exits without reading its input is its own business. */
                        if ((k < 0 && errno != EINTR && errno != EAGAIN) || written == h->input_len)
                                close_fdp_now(in_fd);
                }
                if (out_i >= 0 && p[out_i].revents) {
                        bool full = h->out_len == HELPER_OUTPUT_MAX;
                        ssize_t k = read(*out_fd, full ? sink : h->out + h->out_len,
                                         full ? 1 : HELPER_OUTPUT_MAX - h->out_len);

                        if (k > 0 && full)
                                return kiln_error_new(err, KILN_ERR_LIMIT,
                                                      "%s %s '%s': output exceeds %u bytes",
                                                      h->prog, h->verb, h->host, HELPER_OUTPUT_MAX);
                        if (k > 0)
                                h->out_len += (size_t) k;
                        else if (k == 0 || (errno != EINTR && errno != EAGAIN))
                                close_fdp_now(out_fd);
                }
                if (err_i >= 0 && p[err_i].revents) {
                        size_t room = HELPER_STDERR_MAX - h->err_len;
                        ssize_t k = read(*err_fd, room ? h->err_text + h->err_len : sink,
                                         room ? room : sizeof(sink));

                        if (k > 0 && room)
                                h->err_len += (size_t) k;
                        else if (k == 0 || (k < 0 && errno != EINTR && errno != EAGAIN))
                                close_fdp_now(err_fd);
                }
        }
        close_fdp_now(in_fd);
        h->out[h->out_len] = '\0';
        h->err_text[h->err_len] = '\0';
        for (;;) {
                pid_t r = waitpid(*pid, &h->status, WNOHANG);

                if (r == *pid) {
                        *pid = -1;
                        return 0;
                }
                if (r < 0 && errno != EINTR)
                        return kiln_error_errno(err, KILN_ERR_CHILD, "waitpid %s", h->prog);
                if (now_ms() >= deadline)
                        goto timeout;
                nanosleep(&(struct timespec){ .tv_nsec = 5 * 1000 * 1000 }, NULL);
        }
timeout:
        return kiln_error_new(err, KILN_ERR_CHILD, "%s %s '%s': no answer within %d s", h->prog,
                              h->verb, h->host, HELPER_TIMEOUT_MS / 1000);
}

/*
 * Runs `prog verb` with the input on stdin. 0 when it exits 0 (stdout in h->out); NOTFOUND
 * when it says it has no such credentials; CHILD when it cannot be run, fails or hangs.
 */
static int helper_run(struct helper_run *h, struct kiln_error **err)
{
        _cleanup_close_ int in_p = -1, in_c = -1, out_p = -1, out_c = -1, err_p = -1, err_c = -1,
                            st_p = -1, st_c = -1;
        _cleanup_pid_ pid_t pid = -1;
        _cleanup_buf_ struct kiln_buf msg = KILN_BUF_INIT;
        int sv[2], fds[3], exec_errno = 0;
        ssize_t n;

        /* The input is a socket, not a pipe, so that send() can refuse SIGPIPE. */
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "socketpair");
        in_p = sv[0];
        in_c = sv[1];
        if (pipe2(sv, O_CLOEXEC) < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "pipe");
        out_p = sv[0];
        out_c = sv[1];
        if (pipe2(sv, O_CLOEXEC) < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "pipe");
        err_p = sv[0];
        err_c = sv[1];
        if (pipe2(sv, O_CLOEXEC) < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "pipe");
        st_p = sv[0];
        st_c = sv[1];
        fds[0] = in_c;
        fds[1] = out_c;
        fds[2] = err_c;

        pid = fork();
        if (pid < 0)
                return kiln_error_errno(err, KILN_ERR_CHILD, "fork");
        if (pid == 0)
                child_exec(h, fds, st_c);
        close(TAKE_FD(in_c));
        close(TAKE_FD(out_c));
        close(TAKE_FD(err_c));
        close(TAKE_FD(st_c));

        /* EOF on the status pipe: exec worked (the pipe is O_CLOEXEC). */
        do
                n = read(st_p, &exec_errno, sizeof(exec_errno));
        while (n < 0 && errno == EINTR);
        if (n == (ssize_t) sizeof(exec_errno)) {
                errno = exec_errno;
                return kiln_error_errno(err, KILN_ERR_CHILD,
                                        exec_errno == ENOENT
                                                ? "credential helper '%s' is not in PATH"
                                                : "cannot run credential helper '%s'",
                                        h->prog);
        }
        if (helper_communicate(h, &pid, &in_p, &out_p, &err_p, err) < 0)
                return -1;
        if (WIFEXITED(h->status) && WEXITSTATUS(h->status) == 0)
                return 0;

        if (strcasestr(h->out, NOT_FOUND_MESSAGE) || strcasestr(h->err_text, NOT_FOUND_MESSAGE))
                return kiln_error_new(err, KILN_ERR_NOTFOUND, "%s %s '%s': credentials not found",
                                      h->prog, h->verb, h->host);
        kiln_buf_addf(&msg, NULL, "%s %s '%s': ", h->prog, h->verb, h->host);
        if (WIFEXITED(h->status))
                kiln_buf_addf(&msg, NULL, "exit status %d", WEXITSTATUS(h->status));
        else if (WIFSIGNALED(h->status))
                kiln_buf_addf(&msg, NULL, "killed by signal %d", WTERMSIG(h->status));
        else
                kiln_buf_adds(&msg, "failed", NULL);
        /* Helpers print their errors on stdout; stdout that looks like JSON may be a secret. */
        if (h->err_len > 0)
                quote_output(&msg, h->err_text, h->err_len, h->secret);
        else if (h->out_len > 0 && h->out[strspn(h->out, " \t\r\n")] != '{')
                quote_output(&msg, h->out, h->out_len, h->secret);
        return kiln_error_new(err, KILN_ERR_CHILD, "%s", msg.buf);
}

static int helper_get(const char *name, const char *host, struct reg_credentials *ret,
                      struct kiln_error **err)
{
        _cleanup_free_ char *prog = xasprintf("docker-credential-%s", name);
        _cleanup_json_ json_t *j = NULL;
        _cleanup_(credentials_releasep) struct reg_credentials c = { 0 };
        const char *url = server_url(host), *user, *secret;
        struct helper_run h = {
                .prog = prog,
                .verb = "get",
                .host = host,
                .input = url,
                .input_len = strlen(url),
        };
        int r;

        r = helper_run(&h, err);
        if (r == 0) {
                json_error_t jerr;

                j = json_loadb(h.out, h.out_len, 0, &jerr);
                if (!j || !json_is_object(j))
                        r = kiln_error_new(err, KILN_ERR_PARSE,
                                           "%s get '%s': output is not a JSON object", prog, host);
        }
        helper_run_release(&h);
        if (r < 0)
                return -1;
        user = kiln_json_get_string(j, "Username");
        secret = kiln_json_get_string(j, "Secret");
        if ((!user || !*user) && (!secret || !*secret))
                return kiln_error_new(err, KILN_ERR_NOTFOUND, "%s get '%s': credentials not found",
                                      prog, host);
        if (user && strcmp(user, TOKEN_USERNAME) == 0) {
                c.username = xstrdup("");
                c.password = xstrdup("");
                c.identity_token = xstrdup(secret ? secret : "");
        } else {
                c.username = xstrdup(user ? user : "");
                c.password = xstrdup(secret ? secret : "");
        }
        *ret = c;
        memset(&c, 0, sizeof(c));
        return 0;
}

static int helper_store(const char *name, const char *host, const char *username,
                        const char *password, struct kiln_error **err)
{
        _cleanup_free_ char *prog = xasprintf("docker-credential-%s", name);
        _cleanup_json_ json_t *j = NULL;
        _cleanup_wipe_ char *input = NULL;
        struct helper_run h = {
                .prog = prog,
                .verb = "store",
                .host = host,
                .secret = password,
        };
        int r;

        j = json_pack("{s:s, s:s, s:s}", "ServerURL", server_url(host), "Username", username,
                      "Secret", password);
        if (!j)
                return kiln_error_new(err, KILN_ERR_INVALID,
                                      "credentials for '%s' are not valid UTF-8", host);
        input = json_dumps(j, JSON_COMPACT);
        if (!input)
                return kiln_error_new(err, KILN_ERR_GENERIC, "cannot serialise credentials");
        h.input = input;
        h.input_len = strlen(input);
        r = helper_run(&h, err);
        helper_run_release(&h);
        return r;
}

static int helper_erase(const char *name, const char *host, struct kiln_error **err)
{
        _cleanup_free_ char *prog = xasprintf("docker-credential-%s", name);
        const char *url = server_url(host);
        struct helper_run h = {
                .prog = prog,
                .verb = "erase",
                .host = host,
                .input = url,
                .input_len = strlen(url),
        };
        int r = helper_run(&h, err);

        helper_run_release(&h);
        return r;
}

/* ------------------------------------------------------------------------------------ */
/* The API                                                                                */
/* ------------------------------------------------------------------------------------ */

static int check_host(const char *host, struct kiln_error **err)
{
        if (!host || !*host)
                return kiln_error_new(err, KILN_ERR_INVALID, "no registry host");
        return 0;
}

int reg_credentials_lookup(const char *host, struct reg_credentials *ret, struct kiln_error **err)
{
        _cleanup_free_ char *h = NULL, *auth_path = NULL, *dir = NULL, *cfg_path = NULL;
        _cleanup_json_ json_t *auth = NULL, *cfg = NULL;
        const char *helper;
        int r;

        if (check_host(host, err) < 0)
                return -1;
        h = normalize_host(host);

        auth_path = auth_file_path();
        if (auth_path) {
                if (load_file(auth_path, &auth, err) < 0)
                        return -1;
                if (auth) {
                        r = lookup_auths(auth, auth_path, h, ret, err);
                        if (r != 0)
                                return r < 0 ? -1 : 0;
                }
        }

        dir = docker_config_dir();
        if (dir) {
                cfg_path = xasprintf("%s/config.json", dir);
                if (load_file(cfg_path, &cfg, err) < 0)
                        return -1;
        }
        if (cfg) {
                if (configured_helper(cfg, cfg_path, h, &helper, err) < 0)
                        return -1;
                if (helper)
                        return helper_get(helper, h, ret, err);
                r = lookup_auths(cfg, cfg_path, h, ret, err);
                if (r != 0)
                        return r < 0 ? -1 : 0;
        }
        return kiln_error_new(err, KILN_ERR_NOTFOUND, "no credentials for '%s'", host);
}

int reg_credentials_store(const char *host, const char *username, const char *password,
                          struct kiln_error **err)
{
        _cleanup_free_ char *h = NULL, *dir = NULL, *path = NULL, *b64 = NULL;
        _cleanup_wipe_ char *plain = NULL;
        _cleanup_json_ json_t *cfg = NULL;
        json_t *auths = NULL;
        const char *helper;

        if (check_host(host, err) < 0)
                return -1;
        if (!username || !password)
                return kiln_error_new(err, KILN_ERR_INVALID, "no username or password");
        if (strchr(username, ':'))
                return kiln_error_new(err, KILN_ERR_INVALID, "username '%s' contains ':'",
                                      username);
        h = normalize_host(host);
        dir = docker_config_dir();
        if (!dir)
                return kiln_error_new(err, KILN_ERR_INVALID,
                                      "cannot find the docker config: neither DOCKER_CONFIG nor "
                                      "HOME is set");
        path = xasprintf("%s/config.json", dir);
        if (load_file(path, &cfg, err) < 0)
                return -1;
        if (!cfg)
                cfg = json_object();
        if (configured_helper(cfg, path, h, &helper, err) < 0)
                return -1;
        if (helper)
                return helper_store(helper, h, username, password, err);

        if (get_object(cfg, "auths", path, &auths, err) < 0)
                return -1;
        if (!auths) {
                auths = json_object();
                json_object_set_new(cfg, "auths", auths);
        }
        plain = xasprintf("%s:%s", username, password);
        b64 = layer_base64_encode(plain, strlen(plain));
        /* Docker replaces the whole entry, so an old identity token cannot outlive a login. */
        if (json_object_set_new(auths, server_url(h), json_pack("{s:s}", "auth", b64)) < 0)
                return kiln_error_new(err, KILN_ERR_INVALID,
                                      "registry host '%s' or its credentials are not UTF-8", host);
        explicit_bzero(b64, strlen(b64));
        return write_config(dir, path, cfg, err);
}

int reg_credentials_erase(const char *host, struct kiln_error **err)
{
        _cleanup_free_ char *h = NULL, *dir = NULL, *path = NULL;
        _cleanup_json_ json_t *cfg = NULL;
        json_t *auths = NULL, *v;
        const char *helper, *key;
        bool found = false, changed = false;
        void *tmp;

        if (check_host(host, err) < 0)
                return -1;
        h = normalize_host(host);
        dir = docker_config_dir();
        if (dir) {
                path = xasprintf("%s/config.json", dir);
                if (load_file(path, &cfg, err) < 0)
                        return -1;
        }
        if (!cfg)
                return kiln_error_new(err, KILN_ERR_NOTFOUND, "no credentials for '%s'", host);

        if (configured_helper(cfg, path, h, &helper, err) < 0)
                return -1;
        if (helper) {
                struct kiln_error *e = NULL;

                if (helper_erase(helper, h, &e) == 0) {
                        found = true;
                } else if (e->kind != KILN_ERR_NOTFOUND) {
                        if (err) {
                                kiln_error_free(*err);
                                *err = e;
                        } else {
                                kiln_error_free(e);
                        }
                        return -1;
                } else {
                        kiln_error_free(e);
                }
        }

        /* Every key for the host goes, or a stale "http://host" would answer the next lookup. */
        if (get_object(cfg, "auths", path, &auths, err) < 0)
                return -1;
        if (auths) {
                json_object_foreach_safe(auths, tmp, key, v)
                {
                        if (key_matches(key, h)) {
                                json_object_del(auths, key);
                                found = changed = true;
                        }
                }
        }
        if (changed && write_config(dir, path, cfg, err) < 0)
                return -1;
        if (!found)
                return kiln_error_new(err, KILN_ERR_NOTFOUND, "no credentials for '%s'", host);
        return 0;
}
