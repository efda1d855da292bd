/*
 * kiln prune: removes blobs no image name reaches, and temporary files a crash left. The build
 * cache is a root too (as `docker image prune` keeps the build cache): its entries keep their
 * layers' blobs, and an entry whose blob is gone is dropped. `--cache` removes the entries as
 * well (all of them, or with `--keep-storage SIZE` the least recently used until the blobs only
 * the cache keeps fit in SIZE, as `docker builder prune --keep-storage`), then the blobs nothing
 * keeps. A rootless build with /etc/subuid ranges leaves unpacked root filesystems owned by
 * subordinate ids: then the prune runs inside the same user namespace, where those files are
 * removable.
 */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "builder/builder-internal.h"
#include "builder/cli.h"

enum {
        OPT_CACHE = 0x100,
        OPT_KEEP_STORAGE,
};

struct prune_opts {
        const char *root;
        bool cache;
        int64_t keep_storage; /* -1: not given */
        bool keep_storage_set;
};

static const struct option prune_options[] = {
        CLI_ROOT_OPTION,
        { .name = "cache", .has_arg = no_argument, .val = OPT_CACHE },
        { .name = "keep-storage", .has_arg = required_argument, .val = OPT_KEEP_STORAGE },
        {},
};

/* "500MB", "2GiB", "1g", "4096": kB/MB/GB/TB are powers of 1000 (as prune prints them), KiB/MiB/
 * GiB/TiB and a bare k/m/g/t (docker's spelling) powers of 1024; case does not matter. */
static int parse_size(const char *arg, int64_t *ret)
{
        static const char units[] = "kmgt";
        const char *u = NULL;
        char *end;
        unsigned long long n, base = 1024, mult = 1;
        unsigned i;

        if (!isdigit((unsigned char) arg[0]))
                return -1;
        errno = 0;
        n = strtoull(arg, &end, 10);
        if (errno)
                return -1;
        if (*end)
                u = strchr(units, tolower((unsigned char) *end));
        if (u && *u) {
                end++;
                if (strcasecmp(end, "b") == 0)
                        base = 1000;
                else if (*end && strcasecmp(end, "ib") != 0)
                        return -1;
                for (i = 0; i <= (unsigned) (u - units); i++)
                        mult *= base;
        } else if (*end && strcasecmp(end, "b") != 0) {
                return -1;
        }
        if (n > (unsigned long long) INT64_MAX / mult)
                return -1;
        *ret = (int64_t) (n * mult);
        return 0;
}

static int prune_option(void *state, int opt, const char *arg, struct kiln_error **err)
{
        struct prune_opts *o = state;

        switch (opt) {
        case 'R':
                o->root = arg;
                return 0;
        case OPT_CACHE:
                o->cache = true;
                return 0;
        case OPT_KEEP_STORAGE:
                if (parse_size(arg, &o->keep_storage) < 0) {
                        kiln_error_new(err, KILN_ERR_INVALID,
                                       "invalid --keep-storage '%s' (use 4096, 500MB, 2GiB, 1g)",
                                       arg);
                        return CLI_USAGE;
                }
                o->keep_storage_set = true;
                return 0;
        default:
                break;
        }
        kiln_error_new(err, KILN_ERR_INVALID, "unknown option");
        return CLI_USAGE;
}

struct prune_job {
        struct layer_store *store;
        struct bld_cache_gc cache;
};

struct prune_result {
        struct layer_prune_stats st;
        struct bld_cache_gc cache;
};

static int prune_store(void *ctx, void *result, struct kiln_error **err)
{
        struct prune_job *j = ctx;
        struct prune_result *res = result;
        struct layer_gc_roots roots = { .mark = bld_cache_gc_mark, .ctx = &j->cache };

        if (layer_store_prune_roots(j->store, &roots, &res->st, err) < 0)
                return -1;
        res->cache = j->cache;
        return 0;
}

/* Whether the store may hold files of subordinate ids: prune them from inside the namespace. */
static int prune(struct prune_job *j, struct prune_result *ret, struct kiln_error **err)
{
        struct sb_idmap *u = NULL, *g = NULL;
        size_t nu = 0, ng = 0;
        int r;

        *ret = (struct prune_result){ 0 };
        if (geteuid() != 0)
                sb_subid_maps(&u, &nu, &g, &ng);
        if (nu == 0 || ng == 0) {
                r = prune_store(j, ret, err);
        } else {
                struct sb_env env = {
                        .isolation = SB_ISOLATION_USERNS,
                        .uid_map = u,
                        .n_uid_map = nu,
                        .gid_map = g,
                        .n_gid_map = ng,
                };
                r = sb_unshare_into(&env, prune_store, j, ret, sizeof(*ret), err);
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
        struct prune_job j = { .cache = { .keep_storage = -1 } };
        struct prune_result res;
        char size[32], kept[32];

        if (o->keep_storage_set && !o->cache) {
                kiln_error_new(err, KILN_ERR_INVALID, "--keep-storage needs --cache");
                return CLI_USAGE;
        }
        if (o->cache && o->keep_storage_set)
                j.cache.keep_storage = o->keep_storage;
        else
                j.cache.all = o->cache;
        if (cli_open_store(o->root, &store, err) < 0)
                return -1;
        j.store = store;
        if (prune(&j, &res, err) < 0)
                return -1;
        cli_human_size(res.st.bytes_removed, size);
        cli_human_size(res.cache.bytes_kept, kept);
        res.st.temp_removed += res.cache.temp_removed;
        if (kiln_buf_addf(&ctx->out, err,
                          "removed %llu cache entr%s, %llu blob%s (%s) and %llu temporary file%s\n",
                          (unsigned long long) res.cache.entries_removed,
                          res.cache.entries_removed == 1 ? "y" : "ies",
                          (unsigned long long) res.st.blobs_removed,
                          res.st.blobs_removed == 1 ? "" : "s", size,
                          (unsigned long long) res.st.temp_removed,
                          res.st.temp_removed == 1 ? "" : "s") < 0)
                return -1;
        return kiln_buf_addf(&ctx->out, err, "kept %llu cache entr%s (%s only the cache uses)\n",
                             (unsigned long long) res.cache.entries_kept,
                             res.cache.entries_kept == 1 ? "y" : "ies", kept);
}

const struct cli_verb cli_verb_prune = {
        .name = "prune",
        .synopsis = "[--cache [--keep-storage SIZE]] [--root DIR]",
        .summary = "remove blobs no image uses from the local store",
        .help = "Blobs the build cache uses are kept (a rebuild still hits); cache entries whose\n"
                "blob is gone are dropped.\n"
                "Options:\n"
                "  --cache                remove the build cache's entries too, then their blobs\n"
                "  --keep-storage SIZE    with --cache: remove the least recently used entries\n"
                "                         only until the blobs only the cache uses fit in SIZE\n"
                "                         (4096, 500MB, 2GiB, 1g: kB/MB/GB powers of 1000,\n"
                "                         KiB/MiB/GiB and k/m/g powers of 1024)\n" CLI_ROOT_HELP,
        .options = prune_options,
        .min_args = 0,
        .max_args = 0,
        .state_size = sizeof(struct prune_opts),
        .option = prune_option,
        .run = run_prune,
};
