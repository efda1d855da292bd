/* kiln rmi: removes names from the local store (kiln prune frees the space). */
#include "builder/cli.h"

struct rmi_opts {
        const char *root;
};

static const struct option rmi_options[] = {
        CLI_ROOT_OPTION,
        {},
};

static int rmi_option(void *state, int opt, const char *arg, struct kiln_error **err)
{
        struct rmi_opts *o = state;

        if (opt == 'R') {
                o->root = arg;
                return 0;
        }
        kiln_error_new(err, KILN_ERR_INVALID, "unknown option");
        return CLI_USAGE;
}

static int run_rmi(void *state, char **args, unsigned n_args, struct cli_ctx *ctx,
                   struct kiln_error **err)
{
        struct rmi_opts *o = state;
        _cleanup_(layer_store_freep) struct layer_store *store = NULL;
        unsigned i;

        if (cli_open_store(o->root, &store, err) < 0)
                return -1;
        for (i = 0; i < n_args; i++) {
                if (layer_store_untag(store, args[i], err) < 0)
                        return -1;
                kiln_buf_addf(&ctx->out, NULL, "untagged %s\n", args[i]);
        }
        return 0;
}

const struct cli_verb cli_verb_rmi = {
        .name = "rmi",
        .synopsis = "[--root DIR] NAME...",
        .summary = "remove image names from the local store",
        .help = "Options:\n" CLI_ROOT_HELP,
        .options = rmi_options,
        .min_args = 1,
        .max_args = 1024,
        .state_size = sizeof(struct rmi_opts),
        .option = rmi_option,
        .run = run_rmi,
};
