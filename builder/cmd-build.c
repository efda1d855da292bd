/*
 * kiln build: a Dockerfile and a context in, an image in the local store out (named by each
 * -t), optionally pushed. Progress is printed as the executor's events arrive, in BuildKit's
 * plain format: "#N [stage i/n] INSTRUCTION", the RUN output prefixed "#N", "#N DONE 1.2s".
 */
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "builder/builder.h"
#include "builder/cli.h"
#include "builder/common/fd-util.h"
#include "builder/common/xalloc.h"
#include "registry/registry.h"

enum progress_mode { PROGRESS_AUTO, PROGRESS_PLAIN, PROGRESS_QUIET };

struct build_opts {
        struct cli_frontend fe;
        struct cli_registry reg;
        const char *root;
        const char **tags;
        size_t n_tags;
        bool push, pull;
        const char *iidfile, *metadata_file;
        enum bld_isolation isolation;
        enum bld_network network;
        bool docker;
        enum layer_compression compression;
        unsigned jobs;
        enum progress_mode progress;
        int64_t source_date_epoch;
        bool epoch_set;
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
        OPT_EPOCH,
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

static int parse_output(struct build_opts *o, const char *spec, struct kiln_error **err)
{
        /* buildx's forms; this increment knows type=registry (the same as --push). */
        if (strcmp(spec, "type=registry") == 0 || strncmp(spec, "type=registry,", 14) == 0) {
                o->push = true;
                return 0;
        }
        return usage(err, "--output '%s' is not supported yet (type=registry is)", spec);
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
                else if (strcmp(arg, "plain") == 0 || strcmp(arg, "tty") == 0)
                        o->progress = PROGRESS_PLAIN;
                else if (strcmp(arg, "quiet") == 0)
                        o->progress = PROGRESS_QUIET;
                else
                        return usage(err, "--progress wants auto, plain or quiet, not '%s'", arg);
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
};

static void print_line(struct printer *p, const char *fmt, ...) _printf_(2, 3);

static void print_line(struct printer *p, const char *fmt, ...)
{
        _cleanup_free_ char *line = NULL;
        va_list ap;

        va_start(ap, fmt);
        line = xvasprintf(fmt, ap);
        va_end(ap);
        if (p->ctx->progress)
                p->ctx->progress(line);
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
                print_line(p, "# pushed %s %s", dest, res.manifest_digest);
        }
        return 0;
}

static int run_build(void *state, char **args, unsigned n_args, struct cli_ctx *ctx, struct kiln_error **err)
{
        struct build_opts *o = state;
        struct cli_frontend *fe = &o->fe;
        _cleanup_(layer_store_freep) struct layer_store *store = NULL;
        _cleanup_(reg_client_freep) struct reg_client *client = NULL;
        struct printer p = { .ctx = ctx, .quiet = o->progress == PROGRESS_QUIET };
        struct bld_build_opts bo = { 0 };
        struct bld_build_result res;
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
        if (strcmp(args[0], "-") == 0) {
                kiln_error_new(err, KILN_ERR_UNSUPPORTED, "a context on stdin is not supported yet");
                return -1;
        }
        if (cli_frontend_load(fe, args[0], ctx, err) < 0)
                return -1;
        for (i = 0; i < fe->graph->n_unused_build_args; i++)
                cli_warn(ctx, "warning: build-arg '%s' was not consumed by any ARG instruction",
                         fe->graph->unused_build_args[i]);
        if (cli_open_store(o->root, &store, err) < 0 || cli_registry_client(&o->reg, ctx, &client, err) < 0)
                return -1;
        bo = (struct bld_build_opts){
                .store = store,
                .registry = client,
                .graph = fe->graph,
                .context_fd = fe->context_fd,
                .ignore = fe->ignore,
                .platform = fe->platform ? fe->platform : cli_host_platform(),
                .isolation = o->isolation,
                .network = o->network,
                .compression = o->compression,
                .docker = o->docker,
                .pull = o->pull,
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
                print_line(&p, "# naming to %s", o->tags[i]);
        }
        if (o->push && push_tags(o, store, client, &p, err) < 0)
                return -1;
        if (o->iidfile && cli_write_file(o->iidfile, res.config_digest, err) < 0)
                return -1;
        if (o->metadata_file && write_metadata(o, &res, err) < 0)
                return -1;
        return kiln_buf_addf(&ctx->out, err, "%s\n", res.manifest_digest);
}

static void release_build(void *state)
{
        struct build_opts *o = state;
        struct cli_frontend *fe = &o->fe;

        free(o->tags);
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
                "  --pull                    pull base images even when the store has them\n"
                "  --iidfile FILE            write the image id (its config digest)\n"
                "  --metadata-file FILE      write buildx-style JSON (containerimage.digest, ...)\n"
                "  --isolation MODE          auto (default), root or userns\n"
                "  --network host|none       RUN's network (default: host)\n"
                "  --format oci|docker       media types of the image (default: oci)\n"
                "  --compression C           layers as gzip (default), zstd or none\n"
                "  -j, --jobs N              stages built at once (default: the CPUs)\n"
                "  --progress MODE           auto, plain or quiet (only the digest)\n"
                "  --source-date-epoch N     timestamps for a reproducible image (also\n"
                "                            $SOURCE_DATE_EPOCH)\n" CLI_REGISTRY_CONN_HELP CLI_ROOT_HELP,
        .options = build_options,
        .shortopts = "f:t:o:j:",
        .min_args = 1,
        .max_args = 1,
        .state_size = sizeof(struct build_opts),
        .option = build_option,
        .run = run_build,
        .release = release_build,
};
