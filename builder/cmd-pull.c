/* kiln pull: an image from a registry into the local store, named by its normalised reference. */
#include "builder/cli.h"
#include "builder/common/xalloc.h"
#include "registry/registry.h"

struct pull_opts {
        const char *root;
        const char *platform;
        struct cli_registry reg;
};

static const struct option pull_options[] = {
        CLI_ROOT_OPTION,
        CLI_REGISTRY_OPTIONS,
        { .name = "platform", .has_arg = required_argument, .val = 'P' },
        {},
};

static int pull_option(void *state, int opt, const char *arg, struct kiln_error **err)
{
        struct pull_opts *o = state;
        int r = cli_registry_option(&o->reg, opt, arg, err);

        if (r != 0)
                return r < 0 ? r : 0;
        switch (opt) {
        case 'R':
                o->root = arg;
                return 0;
        case 'P':
                if (df_check_platform(arg, err) < 0)
                        return CLI_USAGE;
                o->platform = arg;
                return 0;
        default:
                kiln_error_new(err, KILN_ERR_INVALID, "unknown option");
                return CLI_USAGE;
        }
}

static int run_pull(void *state, char **args, unsigned n_args, struct cli_ctx *ctx,
                    struct kiln_error **err)
{
        struct pull_opts *o = state;
        _cleanup_(layer_store_freep) struct layer_store *store = NULL;
        _cleanup_(reg_client_freep) struct reg_client *client = NULL;
        struct reg_pull_opts po = { .platform = o->platform ? o->platform : cli_host_platform() };
        struct reg_pull_result res;
        struct reg_ref ref = { 0 };
        _cleanup_free_ char *name = NULL;
        char size[32];

        /* A bad reference is a usage error, found before anything is opened. */
        if (reg_ref_parse(args[0], &ref, err) < 0)
                return CLI_USAGE;
        name = reg_ref_string(&ref);
        reg_ref_release(&ref);
        if (cli_open_store(o->root, &store, err) < 0 || cli_registry_client(&o->reg, ctx, &client, err) < 0)
                return -1;
        if (reg_pull(client, store, args[0], &po, &res, err) < 0)
                return -1;
        if (o->reg.quiet)
                return kiln_buf_addf(&ctx->out, err, "%s\n", res.manifest_digest);
        cli_human_size(res.bytes_fetched, size);
        return kiln_buf_addf(&ctx->out, err, "%s\nDigest: %s\n%u blobs fetched (%s), %u already present\n", name,
                             res.manifest_digest, res.blobs_fetched, size, res.blobs_present);
}

static void release_pull(void *state)
{
        struct pull_opts *o = state;

        cli_registry_release(&o->reg);
}

const struct cli_verb cli_verb_pull = {
        .name = "pull",
        .synopsis = "[OPTIONS] REFERENCE",
        .summary = "pull an image from a registry into the local store",
        .help = "The image is stored under its normalised reference (busybox is\n"
                "docker.io/library/busybox:latest). Blobs the store has are not fetched again.\n"
                "\n"
                "Options:\n"
                "  --platform OS/ARCH[/VARIANT]  the image to take from a multi-platform index\n"
                "                            (default: the host's)\n" CLI_REGISTRY_HELP CLI_ROOT_HELP,
        .options = pull_options,
        .shortopts = "j:q",
        .min_args = 1,
        .max_args = 1,
        .state_size = sizeof(struct pull_opts),
        .option = pull_option,
        .run = run_pull,
        .release = release_pull,
};
