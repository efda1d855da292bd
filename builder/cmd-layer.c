/*
 * kiln layer: the layer machinery on its own, for scripts and debugging.
 *   kiln layer snapshot DIR FILE        record DIR's state in FILE
 *   kiln layer create [--snapshot FILE | --upper [--userxattr]] DIR
 *                                       write a layer of DIR (all of it, what changed since
 *                                       the snapshot, or an overlayfs upper directory) into the
 *                                       store
 *   kiln layer extract DIGEST DIR       apply a layer from the store onto DIR
 *   kiln layer unpack IMAGE             unpack each layer of an image once into the store's
 *                                       cache (overlay lower directories) and list them
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "builder/builder.h"
#include "builder/cli.h"
#include "builder/common/fd-util.h"
#include "builder/common/xalloc.h"

struct layer_opts {
        const char *root;
        const char *snapshot;
        bool upper;
        bool userxattr;
        enum layer_compression compression;
};

static const struct option layer_options[] = {
        CLI_ROOT_OPTION,
        { .name = "snapshot", .has_arg = required_argument, .val = 's' },
        { .name = "upper", .has_arg = no_argument, .val = 'u' },
        { .name = "userxattr", .has_arg = no_argument, .val = 'x' },
        { .name = "compression", .has_arg = required_argument, .val = 'c' },
        {},
};

static int layer_option(void *state, int opt, const char *arg, struct kiln_error **err)
{
        struct layer_opts *o = state;
        switch (opt) {
        case 'R':
                o->root = arg;
                return 0;
        case 's':
                o->snapshot = arg;
                return 0;
        case 'u':
                o->upper = true;
                return 0;
        case 'x':
                o->userxattr = true;
                return 0;
        case 'c':
                return cli_parse_compression(arg, &o->compression, err);
        default:
                kiln_error_new(err, KILN_ERR_INVALID, "unknown option");
                return CLI_USAGE;
        }
}

static int open_dir(const char *path, struct kiln_error **err)
{
        int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

        if (fd < 0)
                return kiln_error_errno(err, errno == ENOENT ? KILN_ERR_NOTFOUND : KILN_ERR_IO,
                                        "open directory '%s'", path);
        return fd;
}

static int do_snapshot(char **args, struct kiln_error **err)
{
        _cleanup_close_ int dir = open_dir(args[1], err), out = -1;
        _cleanup_(layer_snapshot_freep) struct layer_snapshot *snap = NULL;
        _cleanup_free_ char *tmp = xasprintf("%s.tmp", args[2]);

        if (dir < 0 || layer_snapshot_take(dir, &snap, err) < 0)
                return -1;
        out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (out < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "create '%s'", tmp);
        if (layer_snapshot_save(snap, out, err) < 0 || fsync(out) < 0 || rename(tmp, args[2]) < 0) {
                unlink(tmp);
                if (err && !*err)
                        kiln_error_errno(err, KILN_ERR_IO, "write '%s'", args[2]);
                return -1;
        }
        return 0;
}

static int do_create(struct layer_opts *o, char **args, struct cli_ctx *ctx,
                     struct kiln_error **err)
{
        _cleanup_(layer_store_freep) struct layer_store *store = NULL;
        _cleanup_close_ int dir = open_dir(args[1], err);
        struct layer_changes changes = LAYER_CHANGES_INIT;
        struct layer_write_opts wo = LAYER_WRITE_OPTS_DEFAULT;
        struct layer_blob_writer *w = NULL;
        struct layer_sink sink;
        struct layer_desc d;
        char size[32];
        int r = -1;

        if (dir < 0)
                return -1;
        if (o->snapshot && o->upper) {
                kiln_error_new(err, KILN_ERR_INVALID, "--snapshot and --upper do not go together");
                return CLI_USAGE;
        }
        if (o->snapshot) {
                _cleanup_close_ int fd = open(o->snapshot, O_RDONLY | O_CLOEXEC);
                _cleanup_(layer_snapshot_freep) struct layer_snapshot *snap = NULL;
                if (fd < 0)
                        return kiln_error_errno(err, KILN_ERR_IO, "open '%s'", o->snapshot);
                if (layer_snapshot_load(fd, &snap, err) < 0)
                        return kiln_error_wrap(err, "snapshot '%s'", o->snapshot);
                if (layer_changes_from_snapshot(dir, snap, &changes, err) < 0)
                        return -1;
        } else if (o->upper) {
                if (layer_changes_from_upper(dir, o->userxattr, &changes, err) < 0)
                        return -1;
        } else if (layer_changes_from_tree(dir, &changes, err) < 0) {
                return -1;
        }
        wo.compression = o->compression;
        wo.source_date_epoch = bld_source_date_epoch();
        if (cli_open_store(o->root, &store, err) < 0 || layer_store_blob_begin(store, &w, err) < 0)
                goto out;
        sink = layer_blob_sink(w);
        if (layer_write(&changes, &wo, &sink, &d, err) < 0) {
                layer_blob_abort(w);
                goto out;
        }
        if (layer_blob_commit(w, d.digest, NULL, NULL, err) < 0)
                goto out;
        cli_human_size(d.size, size);
        kiln_buf_addf(&ctx->out, NULL, "%s\n", d.digest);
        cli_warn(ctx, "layer %s: diff_id %s, %zu entries, %s %s", d.digest, d.diff_id, changes.n,
                 size, layer_compression_name(d.compression));
        r = 0;
out:
        layer_changes_release(&changes);
        return r;
}

static void warn_to_ctx(void *c, const char *msg)
{
        cli_warn(c, "warning: %s", msg);
}

static int do_extract(struct layer_opts *o, char **args, struct cli_ctx *ctx,
                      struct kiln_error **err)
{
        _cleanup_(layer_store_freep) struct layer_store *store = NULL;
        _cleanup_close_ int blob = -1, dir = -1;
        struct layer_extract_opts xo = { .record_owner = geteuid() != 0,
                                         .warn = warn_to_ctx,
                                         .warn_ctx = ctx };
        struct layer_extract_stats st;

        if (mkdir(args[2], 0755) < 0 && errno != EEXIST)
                return kiln_error_errno(err, KILN_ERR_IO, "create '%s'", args[2]);
        if ((dir = open_dir(args[2], err)) < 0 || cli_open_store(o->root, &store, err) < 0 ||
            (blob = layer_store_open_blob(store, args[1], NULL, err)) < 0)
                return -1;
        if (layer_extract(dir, blob, args[1], &xo, &st, err) < 0)
                return -1;
        cli_warn(ctx, "%s: %llu entries, %llu bytes, %llu whiteouts, %llu skipped", args[1],
                 (unsigned long long) st.entries, (unsigned long long) st.bytes,
                 (unsigned long long) st.whiteouts, (unsigned long long) st.skipped);
        return 0;
}

static int do_unpack(struct layer_opts *o, char **args, struct cli_ctx *ctx,
                     struct kiln_error **err)
{
        _cleanup_(layer_store_freep) struct layer_store *store = NULL;
        struct layer_extract_opts xo = { .record_owner = geteuid() != 0,
                                         .warn = warn_to_ctx,
                                         .warn_ctx = ctx };
        struct bld_image_layers layers = { 0 };
        size_t i;
        int r = 0;

        if (cli_open_store(o->root, &store, err) < 0 ||
            bld_image_layers(store, args[1], &layers, err) < 0)
                return -1;
        for (i = 0; r == 0 && i < layers.n; i++) {
                _cleanup_free_ char *path = NULL;
                int fd = layer_store_unpack(store, layers.digests[i], layers.diff_ids[i], &xo,
                                            &path, err);
                if (fd < 0) {
                        r = -1;
                        break;
                }
                close(fd);
                kiln_buf_addf(&ctx->out, NULL, "%s\n", path);
        }
        bld_image_layers_release(&layers);
        return r;
}

static int run_layer(void *state, char **args, unsigned n_args, struct cli_ctx *ctx,
                     struct kiln_error **err)
{
        struct layer_opts *o = state;

        if (strcmp(args[0], "snapshot") == 0 && n_args == 3)
                return do_snapshot(args, err);
        if (strcmp(args[0], "create") == 0 && n_args == 2)
                return do_create(o, args, ctx, err);
        if (strcmp(args[0], "extract") == 0 && n_args == 3)
                return do_extract(o, args, ctx, err);
        if (strcmp(args[0], "unpack") == 0 && n_args == 2)
                return do_unpack(o, args, ctx, err);
        kiln_error_new(
                err, KILN_ERR_INVALID,
                "use: layer snapshot DIR FILE | layer create DIR | layer extract DIGEST DIR | "
                "layer unpack IMAGE");
        return CLI_USAGE;
}

const struct cli_verb cli_verb_layer = {
        .name = "layer",
        .synopsis = "snapshot DIR FILE | create [--snapshot FILE | --upper [--userxattr]] "
                    "[--compression C] DIR | extract DIGEST DIR | unpack IMAGE",
        .summary = "record a directory's state, make a layer of changes, apply or unpack layers",
        .help = "Options:\n" CLI_ROOT_HELP
                "  --snapshot FILE        create: only what changed since `kiln layer snapshot`\n"
                "  --upper                create: DIR is an overlayfs upper directory\n"
                "  --userxattr            create --upper: overlay ran with userxattr (rootless)\n"
                "  --compression C        create: gzip (default), zstd or none\n",
        .options = layer_options,
        .min_args = 2,
        .max_args = 3,
        .state_size = sizeof(struct layer_opts),
        .option = layer_option,
        .run = run_layer,
};
