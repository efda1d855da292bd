/*
 * kiln build: a Dockerfile and a context in, an image in the local store out (named by each
 * -t), optionally pushed. Progress is printed as the executor's events arrive, in BuildKit's
 * plain format: "#N [stage i/n] INSTRUCTION", the RUN output prefixed "#N", "#N DONE 1.2s".
 */
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "builder/builder.h"
#include "builder/cli.h"
#include "builder/common/fd-util.h"
#include "builder/common/xalloc.h"
#include "registry/registry.h"

enum progress_mode { PROGRESS_AUTO, PROGRESS_PLAIN, PROGRESS_TTY, PROGRESS_QUIET };

/* One -o: buildx's exporters but the registry one (which is --push). */
enum output_kind { OUTPUT_OCI, OUTPUT_DOCKER, OUTPUT_LOCAL };

struct output {
        enum output_kind kind;
        char *dest; /* a file, a directory, or "-" for stdout (oci, docker) */
        bool tar;   /* oci: a tar stream (default) or a layout directory */
        char *name; /* name=: the names inside the archive instead of the -t ones */
};

struct build_opts {
        struct cli_frontend fe;
        struct cli_registry reg;
        const char *root;
        const char **tags;
        size_t n_tags;
        bool push, pull, no_cache, explain_cache;
        const char **no_cache_filter; /* --no-cache-filter values, each a comma list */
        size_t n_no_cache_filter;
        const char *iidfile, *metadata_file;
        enum bld_isolation isolation;
        enum bld_network network;
        bool docker;
        enum layer_compression compression;
        unsigned jobs;
        enum progress_mode progress;
        int64_t source_date_epoch;
        bool epoch_set;
        struct output *outputs;
        size_t n_outputs;
        struct bld_cache_spec *cache_from, *cache_to;
        size_t n_cache_from, n_cache_to;
};

enum {
        OPT_PUSH = 0x200,
        OPT_OUTPUT,
        OPT_IIDFILE,
        OPT_METADATA,
        OPT_ISOLATION,
        OPT_NETWORK,
        OPT_FORMAT,
        OPT_COMPRESSION,
        OPT_PROGRESS,
        OPT_PULL,
        OPT_NO_CACHE,
        OPT_NO_CACHE_FILTER,
        OPT_EPOCH,
        OPT_EXPLAIN_CACHE,
        OPT_CACHE_FROM,
        OPT_CACHE_TO,
};

static const struct option build_options[] = {
        CLI_FRONTEND_OPTIONS,
        CLI_ROOT_OPTION,
        CLI_REGISTRY_CONN_OPTIONS,
        { .name = "tag", .has_arg = required_argument, .val = 't' },
        { .name = "push", .has_arg = no_argument, .val = OPT_PUSH },
        { .name = "output", .has_arg = required_argument, .val = 'o' },
        { .name = "iidfile", .has_arg = required_argument, .val = OPT_IIDFILE },
        { .name = "metadata-file", .has_arg = required_argument, .val = OPT_METADATA },
        { .name = "isolation", .has_arg = required_argument, .val = OPT_ISOLATION },
        { .name = "network", .has_arg = required_argument, .val = OPT_NETWORK },
        { .name = "format", .has_arg = required_argument, .val = OPT_FORMAT },
        { .name = "compression", .has_arg = required_argument, .val = OPT_COMPRESSION },
        { .name = "jobs", .has_arg = required_argument, .val = 'j' },
        { .name = "progress", .has_arg = required_argument, .val = OPT_PROGRESS },
        { .name = "pull", .has_arg = no_argument, .val = OPT_PULL },
        { .name = "no-cache", .has_arg = no_argument, .val = OPT_NO_CACHE },
        { .name = "explain-cache", .has_arg = no_argument, .val = OPT_EXPLAIN_CACHE },
        { .name = "cache-from", .has_arg = required_argument, .val = OPT_CACHE_FROM },
        { .name = "cache-to", .has_arg = required_argument, .val = OPT_CACHE_TO },
        { .name = "no-cache-filter", .has_arg = required_argument, .val = OPT_NO_CACHE_FILTER },
        { .name = "source-date-epoch", .has_arg = required_argument, .val = OPT_EPOCH },
        {},
};

static int usage(struct kiln_error **err, const char *fmt, ...) _printf_(2, 3);

static int usage(struct kiln_error **err, const char *fmt, ...)
{
        _cleanup_free_ char *msg = NULL;
        va_list ap;

        va_start(ap, fmt);
        msg = xvasprintf(fmt, ap);
        va_end(ap);
        kiln_error_new(err, KILN_ERR_INVALID, "%s", msg);
        return CLI_USAGE;
}

static int output_value(const char *field, const char *key, char **ret)
{
        size_t n = strlen(key);

        if (strncmp(field, key, n) != 0 || field[n] != '=')
                return 0;
        free(*ret);
        *ret = xstrdup(field + n + 1);
        return 1;
}

/*
 * buildx's spellings: "type=oci,dest=F[,tar=false][,name=N]", "type=docker,dest=F",
 * "type=local,dest=DIR", "type=registry" (the same as --push); a bare path means type=local.
 */
static int parse_output(struct build_opts *o, const char *spec, struct kiln_error **err)
{
        _cleanup_free_ char *copy = xstrdup(spec);
        _cleanup_free_ char *type = NULL, *tar = NULL;
        struct output out = { .tar = true };
        char *save = NULL, *field;

        if (!strchr(spec, '=') && strcmp(spec, "-") != 0) {
                out = (struct output){ .kind = OUTPUT_LOCAL, .dest = xstrdup(spec) };
                goto add;
        }
        for (field = strtok_r(copy, ",", &save); field; field = strtok_r(NULL, ",", &save)) {
                if (output_value(field, "type", &type) || output_value(field, "dest", &out.dest) ||
                    output_value(field, "tar", &tar) || output_value(field, "name", &out.name))
                        continue;
                /* what buildx accepts and kiln has no use for */
                if (strncmp(field, "push=", 5) == 0 || strncmp(field, "compression=", 12) == 0 ||
                    strncmp(field, "oci-mediatypes=", 15) == 0)
                        continue;
                free(out.dest);
                free(out.name);
                return usage(err, "--output '%s': unknown field '%s'", spec, field);
        }
        if (type && strcmp(type, "registry") == 0) {
                free(out.dest);
                free(out.name);
                o->push = true;
                return 0;
        }
        if (type && strcmp(type, "oci") == 0)
                out.kind = OUTPUT_OCI;
        else if (type && strcmp(type, "docker") == 0)
                out.kind = OUTPUT_DOCKER;
        else if (type && strcmp(type, "local") == 0)
                out.kind = OUTPUT_LOCAL;
        else {
                free(out.dest);
                free(out.name);
                return usage(err, "--output '%s': type wants oci, docker, local or registry%s", spec,
                             type ? "" : " (type= is missing)");
        }
        if (tar && strcmp(tar, "false") == 0)
                out.tar = false;
        else if (tar && strcmp(tar, "true") != 0) {
                free(out.dest);
                free(out.name);
                return usage(err, "--output '%s': tar wants true or false", spec);
        }
        if (!out.dest || !*out.dest || (strcmp(out.dest, "-") == 0 && (out.kind == OUTPUT_LOCAL || !out.tar))) {
                free(out.dest);
                free(out.name);
                return usage(err, "--output '%s' needs dest=%s", spec,
                             out.kind == OUTPUT_LOCAL || !out.tar ? "DIR" : "FILE (or - for stdout)");
        }
add:
        o->outputs = xrealloc(o->outputs, (o->n_outputs + 1) * sizeof(*o->outputs));
        o->outputs[o->n_outputs++] = out;
        return 0;
}

static int build_option(void *state, int opt, const char *arg, struct kiln_error **err)
{
        struct build_opts *o = state;
        char *end;
        int r = cli_registry_option(&o->reg, opt, arg, err);

        if (r != 0)
                return r < 0 ? r : 0;
        switch (opt) {
        case 'R':
                o->root = arg;
                return 0;
        case 't':
                o->tags = xrealloc(o->tags, (o->n_tags + 1) * sizeof(char *));
                o->tags[o->n_tags++] = arg;
                return 0;
        case OPT_PUSH:
                o->push = true;
                return 0;
        case OPT_PULL:
                o->pull = true;
                return 0;
        case OPT_NO_CACHE:
                o->no_cache = true;
                return 0;
        case OPT_EXPLAIN_CACHE:
                o->explain_cache = true;
                return 0;
        case OPT_NO_CACHE_FILTER:
                o->no_cache_filter =
                        xrealloc(o->no_cache_filter, (o->n_no_cache_filter + 1) * sizeof(char *));
                o->no_cache_filter[o->n_no_cache_filter++] = arg;
                return 0;
        case OPT_CACHE_FROM:
                o->cache_from = xrealloc(o->cache_from, (o->n_cache_from + 1) * sizeof(*o->cache_from));
                if (bld_cache_spec_parse(arg, false, &o->cache_from[o->n_cache_from], err) < 0)
                        return CLI_USAGE;
                o->n_cache_from++;
                return 0;
        case OPT_CACHE_TO:
                o->cache_to = xrealloc(o->cache_to, (o->n_cache_to + 1) * sizeof(*o->cache_to));
                if (bld_cache_spec_parse(arg, true, &o->cache_to[o->n_cache_to], err) < 0)
                        return CLI_USAGE;
                o->n_cache_to++;
                return 0;
        case 'o':
                return parse_output(o, arg, err);
        case OPT_IIDFILE:
                o->iidfile = arg;
                return 0;
        case OPT_METADATA:
                o->metadata_file = arg;
                return 0;
        case OPT_ISOLATION:
                if (strcmp(arg, "auto") == 0)
                        o->isolation = BLD_ISOLATION_AUTO;
                else if (strcmp(arg, "root") == 0)
                        o->isolation = BLD_ISOLATION_ROOT;
                else if (strcmp(arg, "userns") == 0)
                        o->isolation = BLD_ISOLATION_USERNS;
                else if (strcmp(arg, "none") == 0)
                        o->isolation = BLD_ISOLATION_NONE;
                else
                        return usage(err, "--isolation wants auto, userns, root or none, not '%s'", arg);
                return 0;
        case OPT_NETWORK:
                if (strcmp(arg, "host") == 0 || strcmp(arg, "default") == 0)
                        o->network = BLD_NETWORK_HOST;
                else if (strcmp(arg, "none") == 0)
                        o->network = BLD_NETWORK_NONE;
                else
                        return usage(err, "--network wants host or none, not '%s'", arg);
                return 0;
        case OPT_FORMAT:
                if (strcmp(arg, "oci") == 0)
                        o->docker = false;
                else if (strcmp(arg, "docker") == 0)
                        o->docker = true;
                else
                        return usage(err, "--format wants oci or docker, not '%s'", arg);
                return 0;
        case OPT_COMPRESSION:
                return cli_parse_compression(arg, &o->compression, err);
        case 'j': {
                unsigned long n = strtoul(arg, &end, 10);
                if (*arg < '0' || *arg > '9' || *end || n == 0 || n > 64)
                        return usage(err, "--jobs wants a number from 1 to 64, not '%s'", arg);
                o->jobs = (unsigned) n;
                return 0;
        }
        case OPT_PROGRESS:
                if (strcmp(arg, "auto") == 0)
                        o->progress = PROGRESS_AUTO;
                else if (strcmp(arg, "plain") == 0)
                        o->progress = PROGRESS_PLAIN;
                else if (strcmp(arg, "tty") == 0)
                        o->progress = PROGRESS_TTY; /* no live view yet: printed as auto */
                else if (strcmp(arg, "quiet") == 0)
                        o->progress = PROGRESS_QUIET;
                else
                        return usage(err, "--progress wants auto, plain, tty or quiet, not '%s'", arg);
                return 0;
        case OPT_EPOCH: {
                long long v = strtoll(arg, &end, 10);
                if (*arg < '0' || *arg > '9' || *end || v < 0)
                        return usage(err, "--source-date-epoch wants seconds since 1970, not '%s'", arg);
                o->source_date_epoch = v;
                o->epoch_set = true;
                return 0;
        }
        default:
                return cli_frontend_option(&o->fe, opt, arg, err);
        }
}

/* ---- progress ---- */

struct printer {
        struct cli_ctx *ctx;
        bool quiet;
        bool plain;   /* --progress plain: each miss says why */
        bool explain; /* --explain-cache: in any mode, also a step never built before */
};

static void print_line(struct printer *p, const char *fmt, ...) _printf_(2, 3);
static void print_info(struct printer *p, const char *fmt, ...) _printf_(2, 3);
static void vprint(struct printer *p, const char *fmt, va_list ap) _printf_(2, 0);

static void vprint(struct printer *p, const char *fmt, va_list ap)
{
        _cleanup_free_ char *line = xvasprintf(fmt, ap);

        if (p->ctx->progress)
                p->ctx->progress(line);
}

static void print_line(struct printer *p, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        vprint(p, fmt, ap);
        va_end(ap);
}

/* A "# ..." progress note: not with --progress quiet */
static void print_info(struct printer *p, const char *fmt, ...)
{
        va_list ap;

        if (p->quiet)
                return;
        va_start(ap, fmt);
        vprint(p, fmt, ap);
        va_end(ap);
}

/* The instruction on one line: continuation newlines become spaces. */
static char *one_line(const char *text, size_t len)
{
        char *s = xstrndup(text, len > 200 ? 200 : len);

        for (char *c = s; *c; c++)
                if (*c == '\n' || *c == '\r' || *c == '\t')
                        *c = ' ';
        return s;
}

static void on_event(void *ctx, const struct bld_event *ev)
{
        struct printer *p = ctx;

        switch (ev->kind) {
        case BLD_EVENT_INFO:
                if (!p->quiet)
                        print_line(p, "# %.*s", (int) ev->len, ev->text);
                break;
        case BLD_EVENT_WARNING:
                print_line(p, "warning: %.*s", (int) ev->len, ev->text);
                break;
        case BLD_EVENT_STEP_START:
                if (!p->quiet) {
                        _cleanup_free_ char *s = one_line(ev->text, ev->len);
                        print_line(p, "#%u [%s %u/%u] %s", ev->step, ev->stage, ev->index, ev->count, s);
                }
                break;
        case BLD_EVENT_STEP_OUTPUT:
                if (!p->quiet)
                        print_line(p, "#%u %.3f %.*s", ev->step, ev->elapsed, (int) ev->len, ev->text);
                break;
        case BLD_EVENT_STEP_DONE:
                if (!p->quiet)
                        print_line(p, "#%u DONE %.1fs", ev->step, ev->elapsed);
                break;
        case BLD_EVENT_STEP_CACHED:
                if (!p->quiet)
                        print_line(p, "#%u CACHED", ev->step);
                break;
        case BLD_EVENT_STEP_MISS:
                if (!p->quiet && (p->explain || (p->plain && !ev->no_record))) {
                        _cleanup_free_ char *s = one_line(ev->text, ev->len);
                        print_line(p, "#%u cache miss: %s", ev->step, s);
                }
                break;
        case BLD_EVENT_STEP_ERROR: {
                const char *nl = memchr(ev->text, '\n', ev->len);
                size_t first = nl ? (size_t) (nl - ev->text) : ev->len;
                print_line(p, "#%u ERROR: %.*s", ev->step, (int) first, ev->text);
                /* the output was shown as it came, unless quiet: then its last lines */
                if (p->quiet && nl)
                        print_line(p, "%.*s", (int) (ev->len - first - 1), nl + 1);
                break;
        }
        case _BLD_EVENT_MAX:
                break;
        }
}

/* ---- results ---- */

static int write_metadata(const struct build_opts *o, const struct bld_build_result *res, struct kiln_error **err)
{
        _cleanup_json_ json_t *j = json_pack("{s:s, s:s}", "containerimage.digest", res->manifest_digest,
                                             "containerimage.config.digest", res->config_digest);
        _cleanup_free_ char *text = NULL;
        struct kiln_buf names = KILN_BUF_INIT;
        size_t i;

        for (i = 0; i < o->n_tags; i++)
                kiln_buf_addf(&names, NULL, "%s%s", i ? "," : "", o->tags[i]);
        if (o->n_tags)
                json_object_set_new(j, "image.name", json_string(names.buf));
        kiln_buf_release(&names);
        text = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        return cli_write_file(o->metadata_file, text, err);
}

static int push_tags(struct build_opts *o, struct layer_store *store, struct reg_client *client,
                     struct printer *p, struct kiln_error **err)
{
        struct reg_push_opts po = { .format = REG_FORMAT_KEEP };
        size_t i;

        for (i = 0; i < o->n_tags; i++) {
                struct reg_push_result res;
                struct reg_ref ref = { 0 };
                _cleanup_free_ char *dest = NULL;

                if (reg_ref_parse(o->tags[i], &ref, err) < 0)
                        return kiln_error_wrap(err, "--push");
                dest = reg_ref_string(&ref);
                reg_ref_release(&ref);
                if (reg_push(client, store, o->tags[i], dest, &po, &res, err) < 0)
                        return -1;
                print_info(p, "# pushed %s %s", dest, res.manifest_digest);
        }
        return 0;
}

/* ---- outputs ---- */

struct export_names {
        struct layer_export_name *names;
        char **strings;
        size_t n, n_strings;
};

static void export_names_release(struct export_names *en)
{
        for (size_t i = 0; i < en->n_strings; i++)
                free(en->strings[i]);
        free(en->strings);
        free(en->names);
}

static char *keep(struct export_names *en, char *s)
{
        en->strings = xrealloc(en->strings, (en->n_strings + 1) * sizeof(char *));
        en->strings[en->n_strings++] = s;
        return s;
}

/* The names in an archive: name= of the output, else every -t. */
static int export_names(const struct build_opts *o, const struct output *out, struct export_names *en,
                        struct kiln_error **err)
{
        const char *const *list = (const char *const *) o->tags;
        size_t n = o->n_tags;

        if (out->name) {
                list = (const char *const *) &out->name;
                n = 1;
        }
        en->names = xcalloc(n ? n : 1, sizeof(*en->names));
        for (size_t i = 0; i < n; i++) {
                struct reg_ref ref = { 0 };
                char *full, *familiar;

                if (reg_ref_parse(list[i], &ref, err) < 0)
                        return kiln_error_wrap(err, "--output name");
                full = keep(en, reg_ref_string(&ref));
                /* Docker's short form: docker.io/library/app:1 is app:1 */
                familiar = full;
                if (strncmp(familiar, "docker.io/", 10) == 0)
                        familiar += 10;
                if (strncmp(familiar, "library/", 8) == 0 && familiar != full)
                        familiar += 8;
                en->names[i] = (struct layer_export_name){
                        .full = full,
                        .ref_name = keep(en, xstrdup(ref.tag ? ref.tag : "latest")),
                        .familiar = familiar,
                };
                reg_ref_release(&ref);
        }
        en->n = n;
        return 0;
}

/* A file written next to its destination and renamed over it: never half an archive. */
static int export_tar_file(struct layer_store *store, const struct layer_export_image *img,
                           const struct layer_export_opts *eo, const char *dest, struct kiln_error **err)
{
        _cleanup_free_ char *tmp = NULL;
        _cleanup_close_ int fd = -1;

        if (strcmp(dest, "-") == 0)
                return layer_export_tar(store, img, eo, STDOUT_FILENO, err);
        tmp = xasprintf("%s.kiln-XXXXXX", dest);
        fd = mkostemp(tmp, O_CLOEXEC);
        if (fd < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "--output: create '%s'", tmp);
        if (layer_export_tar(store, img, eo, fd, err) < 0 || fchmod(fd, 0644) < 0 || fsync(fd) < 0 ||
            rename(tmp, dest) < 0) {
                if (!err || !*err)
                        kiln_error_errno(err, KILN_ERR_IO, "--output: write '%s'", dest);
                unlink(tmp);
                return -1;
        }
        return 0;
}

static void export_warning(void *ctx, const char *msg)
{
        cli_warn(ctx, "warning: --output: %s", msg);
}

static int export_outputs(struct build_opts *o, struct layer_store *store, const struct bld_build_result *res,
                          struct printer *p, struct kiln_error **err)
{
        const struct layer_export_image img = {
                .digest = res->manifest_digest,
                .media_type = res->manifest_media_type,
                .size = res->manifest_size,
        };

        for (size_t i = 0; i < o->n_outputs; i++) {
                const struct output *out = &o->outputs[i];
                _cleanup_(export_names_release) struct export_names en = { 0 };
                struct layer_export_opts eo = {
                        .kind = out->kind == OUTPUT_DOCKER ? LAYER_EXPORT_DOCKER : LAYER_EXPORT_OCI,
                        .mtime = o->epoch_set ? o->source_date_epoch : bld_source_date_epoch(),
                };
                int r;

                if (eo.mtime < 0)
                        eo.mtime = (int64_t) time(NULL);
                if (out->kind == OUTPUT_LOCAL) {
                        struct layer_extract_opts xo = {
                                .ignore_owner = geteuid() != 0,
                                .warn = export_warning,
                                .warn_ctx = p->ctx,
                        };
                        print_info(p, "# exporting the root filesystem to %s", out->dest);
                        r = layer_export_rootfs(store, res->manifest_digest, out->dest, &xo, err);
                } else {
                        if (export_names(o, out, &en, err) < 0)
                                return -1;
                        eo.names = en.names;
                        eo.n_names = en.n;
                        print_info(p, "# exporting to %s (%s%s)", strcmp(out->dest, "-") ? out->dest : "stdout",
                                   out->kind == OUTPUT_DOCKER ? "docker archive" : "oci layout",
                                   out->kind == OUTPUT_OCI && !out->tar ? " directory" : "");
                        r = out->tar ? export_tar_file(store, &img, &eo, out->dest, err)
                                     : layer_export_dir(store, &img, &eo, out->dest, err);
                }
                if (r < 0)
                        return kiln_error_wrap(err, "--output %s", out->dest);
        }
        return 0;
}

static bool writes_stdout(const struct build_opts *o)
{
        for (size_t i = 0; i < o->n_outputs; i++)
                if (strcmp(o->outputs[i].dest, "-") == 0)
                        return true;
        return false;
}

/* ---- a context on stdin ---- */

struct scratch {
        struct layer_store *store;
        char *name;
        int fd;
};

static void scratch_removep(struct scratch *s)
{
        if (s->fd >= 0)
                close(s->fd);
        if (s->name)
                layer_store_scratch_remove(s->store, s->name);
        free(s->name);
}

static bool looks_like_archive(const unsigned char *b, size_t n)
{
        static const struct {
                size_t off, len;
                const char *magic;
        } magics[] = {
                { 0, 2, "\x1f\x8b" },                 /* gzip */
                { 0, 3, "BZh" },                       /* bzip2 */
                { 0, 6, "\xfd" "7zXZ\x00" },          /* xz */
                { 0, 4, "\x28\xb5\x2f\xfd" },         /* zstd */
                { 257, 5, "ustar" },                   /* tar */
        };

        for (size_t i = 0; i < ELEMENTSOF(magics); i++)
                if (n >= magics[i].off + magics[i].len &&
                    memcmp(b + magics[i].off, magics[i].magic, magics[i].len) == 0)
                        return true;
        return false;
}

/*
 * `kiln build -`, as docker build: stdin is either a tar archive of the context (compressed
 * or not; -f names the Dockerfile inside it) or a Dockerfile alone, with an empty context.
 * It is spooled into a scratch directory of the store, removed after the build.
 */
static int stdin_context(struct build_opts *o, struct scratch *sc, char **ret_context, char **ret_dockerfile,
                         struct kiln_error **err)
{
        _cleanup_close_ int spool = -1, ctxfd = -1;
        int dirfd;
        unsigned char head[512];
        ssize_t n;
        size_t got = 0;

        if (o->fe.file && strcmp(o->fe.file, "-") == 0) {
                kiln_error_new(err, KILN_ERR_INVALID, "the context and the Dockerfile cannot both come from stdin");
                return CLI_USAGE;
        }
        sc->fd = dirfd = layer_store_scratch(sc->store, &sc->name, err);
        if (dirfd < 0)
                return -1;
        spool = openat(dirfd, "stdin", O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (spool < 0 || mkdirat(dirfd, "context", 0755) < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "spool the context from stdin");
        {
                _cleanup_free_ char *buf = xmalloc(1 << 16);
                while ((n = read(STDIN_FILENO, buf, 1 << 16)) != 0) {
                        if (n < 0) {
                                if (errno == EINTR)
                                        continue;
                                return kiln_error_errno(err, KILN_ERR_IO, "read the context from stdin");
                        }
                        if (got < sizeof(head))
                                memcpy(head + got, buf, (size_t) n < sizeof(head) - got ? (size_t) n : sizeof(head) - got);
                        got += (size_t) n;
                        if (kiln_write_all(spool, buf, (size_t) n, err) < 0)
                                return kiln_error_wrap(err, "spool the context from stdin");
                }
        }
        *ret_context = xasprintf("/proc/self/fd/%d/context", dirfd);
        if (!looks_like_archive(head, got < sizeof(head) ? got : sizeof(head))) {
                /* a Dockerfile alone */
                if (o->fe.file) {
                        kiln_error_new(err, KILN_ERR_INVALID,
                                       "-f names a file in the context, but stdin holds a Dockerfile, not a tar archive");
                        return CLI_USAGE;
                }
                *ret_dockerfile = xasprintf("/proc/self/fd/%d/stdin", dirfd);
                o->fe.file_label = "-";
        } else {
                struct layer_extract_opts xo = { .ignore_owner = true };

                if (lseek(spool, 0, SEEK_SET) < 0)
                        return kiln_error_errno(err, KILN_ERR_IO, "spool the context from stdin");
                ctxfd = openat(dirfd, "context", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (ctxfd < 0 || layer_extract(ctxfd, spool, "the context on stdin", &xo, NULL, err) < 0)
                        return ctxfd < 0 ? kiln_error_errno(err, KILN_ERR_IO, "open the context") : -1;
                /* -f is a path inside the archive */
                o->fe.file_label = o->fe.file ? o->fe.file : "Dockerfile";
                if (o->fe.file && (o->fe.file[0] == '/' || strstr(o->fe.file, ".."))) {
                        kiln_error_new(err, KILN_ERR_INVALID, "-f '%s' must be a relative path inside the context on stdin",
                                       o->fe.file);
                        return CLI_USAGE;
                }
                *ret_dockerfile = xasprintf("/proc/self/fd/%d/context/%s", dirfd, o->fe.file_label);
        }
        return 0;
}

/* Where the build comes from, the same from one build of it to the next: the context's absolute
 * path ("-" for stdin) and the Dockerfile's. */
static char *cache_scope(const char *context, const struct cli_frontend *fe)
{
        _cleanup_free_ char *ctx_path = NULL, *df_path = NULL;
        bool from_stdin = strcmp(context, "-") == 0;

        if (!from_stdin)
                ctx_path = realpath(context, NULL);
        /* a Dockerfile in a context on stdin is named by its path in the archive */
        if (!from_stdin && strcmp(fe->dockerfile_name, "-") != 0)
                df_path = realpath(fe->dockerfile_name, NULL);
        return xasprintf("%s\n%s", from_stdin ? "-" : ctx_path ? ctx_path : context,
                         df_path ? df_path : fe->dockerfile_name);
}

/* --no-cache-filter: the stages (names, as --target takes them, or indexes) that run every step.
 * *ret (n_stages flags) stays NULL when none was given. NOTFOUND for a stage the Dockerfile
 * lacks. */
static int no_cache_stages(const struct build_opts *o, const struct df_graph *g, bool **ret,
                           struct kiln_error **err)
{
        _cleanup_free_ bool *v = NULL;
        size_t i, k;

        if (o->n_no_cache_filter == 0)
                return 0;
        v = xcalloc(g->n_stages + 1, sizeof(*v));
        for (i = 0; i < o->n_no_cache_filter; i++) {
                _cleanup_free_ char *list = xstrdup(o->no_cache_filter[i]);
                char *save = NULL, *name;

                for (name = strtok_r(list, ",", &save); name; name = strtok_r(NULL, ",", &save)) {
                        char *end;
                        unsigned long idx;
                        bool found = false;

                        name += strspn(name, " \t");
                        name[strcspn(name, " \t")] = '\0';
                        if (!*name)
                                continue;
                        for (k = 0; k < g->n_stages; k++)
                                if (g->stages[k].stage->name &&
                                    strcasecmp(g->stages[k].stage->name, name) == 0) {
                                        v[k] = found = true;
                                        break;
                                }
                        errno = 0;
                        idx = strtoul(name, &end, 10);
                        if (!found && name[0] >= '0' && name[0] <= '9' && !*end && !errno &&
                            idx < g->n_stages)
                                v[idx] = found = true;
                        if (!found) {
                                _cleanup_buf_ struct kiln_buf names = KILN_BUF_INIT;
                                for (k = 0; k < g->n_stages; k++)
                                        if (g->stages[k].stage->name)
                                                kiln_buf_addf(&names, NULL, "%s'%s'",
                                                              names.len ? ", " : "",
                                                              g->stages[k].stage->name);
                                return kiln_error_new(err, KILN_ERR_NOTFOUND,
                                                      "--no-cache-filter: stage '%s' could not be "
                                                      "found (stages: %s%s)",
                                                      name, names.len ? names.buf : "",
                                                      names.len ? "" : "none named; use an index");
                        }
                }
        }
        *ret = TAKE_PTR(v);
        return 0;
}

static int run_build(void *state, char **args, unsigned n_args, struct cli_ctx *ctx, struct kiln_error **err)
{
        struct build_opts *o = state;
        struct cli_frontend *fe = &o->fe;
        _cleanup_(layer_store_freep) struct layer_store *store = NULL;
        _cleanup_(reg_client_freep) struct reg_client *client = NULL;
        struct printer p = {
                .ctx = ctx,
                .quiet = o->progress == PROGRESS_QUIET,
                .plain = o->progress == PROGRESS_PLAIN,
                .explain = o->explain_cache,
        };
        struct bld_build_opts bo = { 0 };
        struct bld_build_result res;
        _cleanup_free_ char *context = NULL, *spooled = NULL, *scope = NULL;
        _cleanup_free_ bool *no_cache = NULL;
        _cleanup_(scratch_removep) struct scratch scratch = { .fd = -1 };
        size_t i;

        if (o->push && o->n_tags == 0) {
                kiln_error_new(err, KILN_ERR_INVALID, "--push needs a name to push to: give -t REF");
                return CLI_USAGE;
        }
        for (i = 0; i < o->n_tags; i++) {
                struct reg_ref ref = { 0 };
                if (reg_ref_parse(o->tags[i], &ref, err) < 0) {
                        kiln_error_wrap(err, "-t");
                        return CLI_USAGE;
                }
                reg_ref_release(&ref);
        }
        if (cli_open_store(o->root, &store, err) < 0)
                return -1;
        if (strcmp(args[0], "-") == 0) {
                int r;
                scratch.store = store;
                r = stdin_context(o, &scratch, &context, &spooled, err);
                if (r != 0)
                        return r;
                fe->file_source = spooled;
        }
        if (cli_frontend_load(fe, context ? context : args[0], ctx, err) < 0)
                return -1;
        for (i = 0; i < fe->graph->n_unused_build_args; i++)
                cli_warn(ctx, "warning: build-arg '%s' was not consumed by any ARG instruction",
                         fe->graph->unused_build_args[i]);
        if (no_cache_stages(o, fe->graph, &no_cache, err) < 0)
                return -1;
        if (cli_registry_client(&o->reg, ctx, &client, err) < 0)
                return -1;
        scope = cache_scope(args[0], fe);
        bo = (struct bld_build_opts){
                .store = store,
                .registry = client,
                .graph = fe->graph,
                .context_fd = fe->context_fd,
                .ignore = fe->ignore,
                .context_spooled = context != NULL,
                .platform = fe->platform ? fe->platform : cli_host_platform(),
                .isolation = o->isolation,
                .network = o->network,
                .compression = o->compression,
                .docker = o->docker,
                .pull = o->pull,
                .no_cache = o->no_cache,
                .cache_scope = scope,
                .cache_from = o->cache_from,
                .n_cache_from = o->n_cache_from,
                .cache_to = o->cache_to,
                .n_cache_to = o->n_cache_to,
                .no_cache_stages = no_cache,
                .jobs = o->jobs,
                .source_date_epoch = o->epoch_set ? o->source_date_epoch : bld_source_date_epoch(),
                .event = on_event,
                .event_ctx = &p,
        };
        if (bld_build(&bo, &res, err) < 0) {
                free(res.isolation_why);
                return -1;
        }
        free(res.isolation_why);
        /* Names: each -t, or the digest itself so the image stays reachable. */
        if (o->n_tags == 0 &&
            layer_store_tag(store, res.manifest_digest, res.manifest_digest, res.manifest_media_type,
                            res.manifest_size, err) < 0)
                return -1;
        for (i = 0; i < o->n_tags; i++) {
                if (layer_store_tag(store, o->tags[i], res.manifest_digest, res.manifest_media_type,
                                    res.manifest_size, err) < 0)
                        return -1;
                print_info(&p, "# naming to %s", o->tags[i]);
        }
        if (o->push && push_tags(o, store, client, &p, err) < 0)
                return -1;
        if (o->iidfile && cli_write_file(o->iidfile, res.config_digest, err) < 0)
                return -1;
        if (o->metadata_file && write_metadata(o, &res, err) < 0)
                return -1;
        if (export_outputs(o, store, &res, &p, err) < 0)
                return -1;
        /* stdout carries the archive then, not the digest */
        if (writes_stdout(o))
                return 0;
        return kiln_buf_addf(&ctx->out, err, "%s\n", res.manifest_digest);
}

static void release_build(void *state)
{
        struct build_opts *o = state;
        struct cli_frontend *fe = &o->fe;

        free(o->tags);
        free(o->no_cache_filter);
        for (size_t i = 0; i < o->n_outputs; i++) {
                free(o->outputs[i].dest);
                free(o->outputs[i].name);
        }
        free(o->outputs);
        for (size_t i = 0; i < o->n_cache_from; i++)
                bld_cache_spec_release(&o->cache_from[i]);
        free(o->cache_from);
        for (size_t i = 0; i < o->n_cache_to; i++)
                bld_cache_spec_release(&o->cache_to[i]);
        free(o->cache_to);
        cli_registry_release(&o->reg);
        cli_frontend_release(&fe);
}

const struct cli_verb cli_verb_build = {
        .name = "build",
        .synopsis = "[OPTIONS] CONTEXT",
        .summary = "build an image from a Dockerfile",
        .help = CLI_FRONTEND_HELP
                "  -t, --tag NAME            name the image in the store (repeatable); with --push,\n"
                "                            a registry reference\n"
                "  --push                    push every -t name (also: -o type=registry)\n"
                "  -o, --output SPEC         also write the image out (repeatable):\n"
                "                              type=oci,dest=FILE|-[,tar=false][,name=REF]\n"
                "                              type=docker,dest=FILE|-  (docker load, podman load)\n"
                "                              type=local,dest=DIR      (the root filesystem)\n"
                "                              DIR                      (the same as type=local)\n"
                "  --pull                    pull base images even when the store has them\n"
                "  --no-cache                run every step (the local cache is still written)\n"
                "  --explain-cache           say why each step missed the cache (always with\n"
                "                            --progress plain, which leaves out steps never\n"
                "                            built before)\n"
                "  --cache-from SPEC         reuse steps from a registry cache: type=registry,ref=REF,\n"
                "                            or an IMAGE built with --cache-to type=inline (repeatable)\n"
                "  --cache-to SPEC           export the cache: type=registry,ref=REF[,mode=min|max]\n"
                "                            [,ignore-error=true], or type=inline (into the image)\n"
                "  --no-cache-filter STAGES  run every step of these stages (names or indexes,\n"
                "                            comma-separated or repeated); others use the cache\n"
                "  --iidfile FILE            write the image id (its config digest)\n"
                "  --metadata-file FILE      write buildx-style JSON (containerimage.digest, ...)\n"
                "  --isolation MODE          auto (default), root, userns, or none (in a throwaway\n"
                "                            container only: RUN in its own /, which it rewrites;\n"
                "                            auto picks it as root in a container where no\n"
                "                            namespace works)\n"
                "  --network host|none       RUN's network (default: host)\n"
                "  --format oci|docker       media types of the image (default: oci)\n"
                "  --compression C           layers as gzip (default), zstd or none\n"
                "  -j, --jobs N              stages built at once (default: the CPUs)\n"
                "  --progress MODE           auto, plain, tty or quiet (only the digest)\n"
                "  --source-date-epoch N     timestamps for a reproducible image (also\n"
                "                            $SOURCE_DATE_EPOCH)\n" CLI_REGISTRY_CONN_HELP CLI_ROOT_HELP
                "\nFROM takes an image (the store's, else pulled), scratch, an earlier stage, or\n"
                "oci-layout://DIR[:TAG|@DIGEST]: an OCI image layout on disk, DIR relative to the\n"
                "current directory, TAG its org.opencontainers.image.ref.name (default latest).\n"
                "A base's ONBUILD triggers run right after FROM and are not inherited.\n"
                "CONTEXT is a directory, or - for a tar archive of one on stdin (plain, gzip,\n"
                "bzip2, xz or zstd; -f then names a file in it) or a lone Dockerfile.\n",
        .options = build_options,
        .shortopts = "f:t:o:j:",
        .min_args = 1,
        .max_args = 1,
        .state_size = sizeof(struct build_opts),
        .option = build_option,
        .run = run_build,
        .release = release_build,
};
