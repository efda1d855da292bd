/*
 * kiln prune: removes blobs no image name reaches, and temporary files a crash left. A rootless
 * build with /etc/subuid ranges leaves unpacked root filesystems owned by subordinate ids: then
 * the prune runs inside the same user namespace, where those files are removable.
 */
#include <sys/mman.h>
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

struct prune_job {
        struct layer_store *store;
        struct layer_prune_stats *stats; /* shared with the child */
};

static int prune_in_userns(void *ctx, int unused, struct kiln_error **err)
{
        struct prune_job *j = ctx;

        return layer_store_prune(j->store, j->stats, err);
}

/* Whether the store may hold files of subordinate ids: prune them from inside the namespace. */
static int prune(struct layer_store *store, struct layer_prune_stats *ret, struct kiln_error **err)
{
        struct sb_idmap *u = NULL, *g = NULL;
        size_t nu = 0, ng = 0;
        struct layer_prune_stats *shared;
        struct prune_job j = { .store = store };
        int r;

        if (geteuid() != 0)
                sb_subid_maps(&u, &nu, &g, &ng);
        if (nu == 0 || ng == 0) {
                free(u);
                free(g);
                return layer_store_prune(store, ret, err);
        }
        shared = mmap(NULL, sizeof(*shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1,
                      0);
        if (shared == MAP_FAILED) {
                free(u);
                free(g);
                return kiln_error_errno(err, KILN_ERR_IO, "prune: mmap");
        }
        *shared = (struct layer_prune_stats){ 0 };
        j.stats = shared;
        {
                struct sb_env env = {
                        .isolation = SB_ISOLATION_USERNS,
                        .uid_map = u,
                        .n_uid_map = nu,
                        .gid_map = g,
                        .n_gid_map = ng,
                };
                r = sb_unshare(&env, prune_in_userns, &j, err);
        }
        *ret = *shared;
        munmap(shared, sizeof(*shared));
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
