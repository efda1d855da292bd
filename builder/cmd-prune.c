/*
 * kiln prune: removes blobs no image name reaches, and temporary files a crash left. A rootless
 * build with /etc/subuid ranges leaves unpacked root filesystems owned by subordinate ids: then
 * the prune runs inside the same user namespace, where those files are removable.
 */
#include <unistd.h>

#include "builder/builder-internal.h"
#include "builder/cli.h"

struct prune_opts {
        const char *root;
};

static const struct option prune_options[] = {
        CLI_ROOT_OPTION,
        {},
};

static int prune_option(void *state, int opt, const char *arg, struct kiln_error **err)
{
        struct prune_opts *o = state;

        if (opt == 'R') {
                o->root = arg;
                return 0;
        }
        kiln_error_new(err, KILN_ERR_INVALID, "unknown option");
        return CLI_USAGE;
}

static int prune_in_userns(void *ctx, void *result, struct kiln_error **err)
{
        return layer_store_prune(ctx, result, err);
}

/* Whether the store may hold files of subordinate ids: prune them from inside the namespace. */
static int prune(struct layer_store *store, struct layer_prune_stats *ret, struct kiln_error **err)
{
        struct sb_idmap *u = NULL, *g = NULL;
        size_t nu = 0, ng = 0;
        int r;

        if (geteuid() != 0)
                sb_subid_maps(&u, &nu, &g, &ng);
        if (nu == 0 || ng == 0) {
                r = layer_store_prune(store, ret, err);
        } else {
                struct sb_env env = {
                        .isolation = SB_ISOLATION_USERNS,
                        .uid_map = u,
                        .n_uid_map = nu,
                        .gid_map = g,
                        .n_gid_map = ng,
                };
                *ret = (struct layer_prune_stats){ 0 };
                r = sb_unshare_into(&env, prune_in_userns, store, ret, sizeof(*ret), err);
        }
        free(u);
        free(g);
        return r;
}

static int run_prune(void *state, char **args, unsigned n_args, struct cli_ctx *ctx,
                     struct kiln_error **err)
{
        struct prune_opts *o = state;
        _cleanup_(layer_store_freep) struct layer_store *store = NULL;
        struct layer_prune_stats st;
        char size[32];

        if (cli_open_store(o->root, &store, err) < 0 || prune(store, &st, err) < 0)
                return -1;
        cli_human_size(st.bytes_removed, size);
        return kiln_buf_addf(&ctx->out, err, "removed %llu blob%s (%s) and %llu temporary file%s\n",
                             (unsigned long long) st.blobs_removed,
                             st.blobs_removed == 1 ? "" : "s", size,
                             (unsigned long long) st.temp_removed, st.temp_removed == 1 ? "" : "s");
}

const struct cli_verb cli_verb_prune = {
        .name = "prune",
        .synopsis = "[--root DIR]",
        .summary = "remove blobs no image uses from the local store",
        .help = "Options:\n" CLI_ROOT_HELP,
        .options = prune_options,
        .min_args = 0,
        .max_args = 0,
        .state_size = sizeof(struct prune_opts),
        .option = prune_option,
        .run = run_prune,
};
