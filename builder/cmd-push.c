/*
 * kiln push: an image from the local store to a registry. DEST defaults to the image's own
 * name; --tag adds tags in the same repository; the manifest digest is printed (and written to
 * --digestfile), so a CI job can deploy exactly what it pushed.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "builder/cli.h"
#include "builder/common/fd-util.h"
#include "builder/common/xalloc.h"
#include "registry/registry.h"

struct push_opts {
        const char *root;
        enum reg_push_format format;
        const char **tags;
        size_t n_tags;
        const char *digestfile;
        struct cli_registry reg;
};

static const struct option push_options[] = {
        CLI_ROOT_OPTION,
        CLI_REGISTRY_OPTIONS,
        { .name = "format", .has_arg = required_argument, .val = 'F' },
        { .name = "tag", .has_arg = required_argument, .val = 't' },
        { .name = "digestfile", .has_arg = required_argument, .val = 'D' },
        {},
};

static int push_option(void *state, int opt, const char *arg, struct kiln_error **err)
{
        struct push_opts *o = state;
        int r = cli_registry_option(&o->reg, opt, arg, err);

        if (r != 0)
                return r < 0 ? r : 0;
        switch (opt) {
        case 'R':
                o->root = arg;
                return 0;
        case 'F':
                if (strcmp(arg, "oci") == 0)
                        o->format = REG_FORMAT_OCI;
                else if (strcmp(arg, "docker") == 0)
                        o->format = REG_FORMAT_DOCKER;
                else {
                        kiln_error_new(err, KILN_ERR_INVALID, "--format wants oci or docker, not '%s'", arg);
                        return CLI_USAGE;
                }
                return 0;
        case 't':
                if (!reg_tag_valid(arg)) {
                        kiln_error_new(err, KILN_ERR_INVALID, "--tag '%s' is not a valid tag", arg);
                        return CLI_USAGE;
                }
                o->tags = xrealloc(o->tags, (o->n_tags + 1) * sizeof(char *));
                o->tags[o->n_tags++] = arg;
                return 0;
        case 'D':
                o->digestfile = arg;
                return 0;
        default:
                kiln_error_new(err, KILN_ERR_INVALID, "unknown option");
                return CLI_USAGE;
        }
}

static int run_push(void *state, char **args, unsigned n_args, struct cli_ctx *ctx,
                    struct kiln_error **err)
{
        struct push_opts *o = state;
        _cleanup_(layer_store_freep) struct layer_store *store = NULL;
        _cleanup_(reg_client_freep) struct reg_client *client = NULL;
        struct reg_push_opts po = { .format = o->format, .tags = o->tags, .n_tags = o->n_tags };
        struct reg_push_result res;
        struct reg_ref ref = { 0 };
        _cleanup_free_ char *local = NULL, *dest = NULL;
        char size[32];

        if (reg_ref_parse(n_args > 1 ? args[1] : args[0], &ref, err) < 0) {
                kiln_error_wrap(err, "%s", n_args > 1 ? "destination" : "the image name as a destination");
                return CLI_USAGE;
        }
        dest = reg_ref_string(&ref);
        reg_ref_release(&ref);
        if (cli_open_store(o->root, &store, err) < 0 || cli_registry_client(&o->reg, ctx, &client, err) < 0)
                return -1;
        local = cli_local_image_name(store, args[0]);
        if (reg_push(client, store, local, dest, &po, &res, err) < 0)
                return -1;
        if (o->digestfile && cli_write_file(o->digestfile, res.manifest_digest, err) < 0)
                return -1;
        if (o->reg.quiet)
                return kiln_buf_addf(&ctx->out, err, "%s\n", res.manifest_digest);
        cli_human_size(res.bytes_sent, size);
        return kiln_buf_addf(&ctx->out, err, "%s\nDigest: %s\n%u blobs sent (%s), %u already there, %u mounted\n",
                             dest, res.manifest_digest, res.blobs_sent, size, res.blobs_present,
                             res.blobs_mounted);
}

static void release_push(void *state)
{
        struct push_opts *o = state;

        free(o->tags);
        cli_registry_release(&o->reg);
}

const struct cli_verb cli_verb_push = {
        .name = "push",
        .synopsis = "[OPTIONS] IMAGE [DESTINATION]",
        .summary = "push an image from the local store to a registry",
        .help = "DESTINATION is a reference (127.0.0.1:5000/app:1.0); it defaults to IMAGE.\n"
                "Blobs the registry has are skipped, blobs another repository of the same\n"
                "registry holds are mounted, the rest uploaded; the manifest goes last.\n"
                "\n"
                "Options:\n"
                "  --format oci|docker       media types of the pushed manifest (default: as stored;\n"
                "                            converting changes the digest)\n"
                "  -t, --tag TAG             also tag the manifest TAG in the same repository\n"
                "                            (repeatable)\n"
                "  --digestfile FILE         write the manifest digest to FILE\n" CLI_REGISTRY_HELP CLI_ROOT_HELP,
        .options = push_options,
        .shortopts = "j:qt:",
        .min_args = 1,
        .max_args = 2,
        .state_size = sizeof(struct push_opts),
        .option = push_option,
        .run = run_push,
        .release = release_push,
};
