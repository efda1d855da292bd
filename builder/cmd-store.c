/* kiln store fsck | path: checks the local store, or shows where it is. */
#include <string.h>

#include "builder/builder-internal.h"
#include "builder/cli.h"

struct store_opts {
        const char *root;
};

static const struct option store_options[] = {
        CLI_ROOT_OPTION,
        {},
};

static int store_option(void *state, int opt, const char *arg, struct kiln_error **err)
{
        struct store_opts *o = state;

        if (opt == 'R') {
                o->root = arg;
                return 0;
        }
        kiln_error_new(err, KILN_ERR_INVALID, "unknown option");
        return CLI_USAGE;
}

static int run_store(void *state, char **args, unsigned n_args, struct cli_ctx *ctx,
                     struct kiln_error **err)
{
        struct store_opts *o = state;
        _cleanup_(layer_store_freep) struct layer_store *store = NULL;
        struct layer_fsck_report rep;
        /* what the build cache keeps is not orphaned */
        struct bld_cache_gc cache = { .check_only = true, .keep_storage = -1 };
        struct layer_gc_roots roots = { .mark = bld_cache_gc_mark, .ctx = &cache };
        char size[32];
        size_t i;

        if (strcmp(args[0], "path") != 0 && strcmp(args[0], "fsck") != 0) {
                kiln_error_new(err, KILN_ERR_INVALID,
                               "unknown store command '%s' (use fsck or path)", args[0]);
                return CLI_USAGE;
        }
        if (cli_open_store(o->root, &store, err) < 0)
                return -1;
        if (strcmp(args[0], "path") == 0)
                return kiln_buf_addf(&ctx->out, err, "%s\n", layer_store_root(store));
        if (layer_store_fsck_roots(store, &roots, &rep, err) < 0)
                return -1;
        for (i = 0; i < rep.n_problems; i++)
                kiln_buf_addf(&ctx->out, NULL, "%s\n", rep.problems[i]);
        cli_human_size(rep.bytes_checked, size);
        kiln_buf_addf(&ctx->out, NULL, "%s: %llu blobs (%s) checked, %zu problem%s\n",
                      layer_store_root(store), (unsigned long long) rep.blobs_checked, size,
                      rep.n_problems, rep.n_problems == 1 ? "" : "s");
        if (rep.n_problems) {
                kiln_error_new(err, KILN_ERR_DIGEST, "the store '%s' has %zu problem%s",
                               layer_store_root(store), rep.n_problems,
                               rep.n_problems == 1 ? "" : "s");
                layer_fsck_report_release(&rep);
                return -1;
        }
        layer_fsck_report_release(&rep);
        return 0;
}

const struct cli_verb cli_verb_store = {
        .name = "store",
        .synopsis = "[--root DIR] fsck|path",
        .summary = "check the local store (fsck), or print where it is (path)",
        .help = "Options:\n" CLI_ROOT_HELP
                "\nfsck re-hashes every blob and reports corrupt, missing and orphaned blobs and\n"
                "stale temporary files; it exits 1 when it finds any.\n",
        .options = store_options,
        .min_args = 1,
        .max_args = 1,
        .state_size = sizeof(struct store_opts),
        .option = store_option,
        .run = run_store,
};
