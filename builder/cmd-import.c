/*
 * kiln import: an image from a root filesystem, given as a directory or a tarball (plain,
 * gzip or zstd), like `docker import`. A tarball is first extracted safely into the store's
 * scratch space, so the layer kiln writes is normalized and reproducible either way.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "builder/builder.h"
#include "builder/cli.h"
#include "builder/common/xalloc.h"

struct import_opts {
        const char *root;
        const char **tags;
        size_t n_tags;
        enum layer_compression compression;
        const char *platform;
        const char *message;
};

static const struct option import_options[] = {
        CLI_ROOT_OPTION,
        { .name = "tag", .has_arg = required_argument, .val = 't' },
        { .name = "compression", .has_arg = required_argument, .val = 'c' },
        { .name = "platform", .has_arg = required_argument, .val = 'P' },
        { .name = "message", .has_arg = required_argument, .val = 'm' },
        {},
};

static int import_option(void *state, int opt, const char *arg, struct kiln_error **err)
{
        struct import_opts *o = state;
        switch (opt) {
        case 'R':
                o->root = arg;
                return 0;
        case 't':
                o->tags = xrealloc(o->tags, (o->n_tags + 1) * sizeof(char *));
                o->tags[o->n_tags++] = arg;
                return 0;
        case 'c':
                return cli_parse_compression(arg, &o->compression, err);
        case 'P':
                o->platform = arg;
                return 0;
        case 'm':
                o->message = arg;
                return 0;
        default:
                kiln_error_new(err, KILN_ERR_INVALID, "unknown option");
                return CLI_USAGE;
        }
}

static void warn_to_ctx(void *c, const char *msg)
{
        cli_warn(c, "warning: %s", msg);
}

/* The changes that make up the imported layer: a directory as it is, or a tarball unpacked. */
static int source_changes(struct layer_store *store, const char *source, struct cli_ctx *ctx,
                          char **ret_scratch, struct layer_changes *ret, struct kiln_error **err)
{
        _cleanup_close_ int fd = open(source, O_RDONLY | O_CLOEXEC);
        _cleanup_close_ int scratch = -1;
        struct layer_extract_opts xo = { .record_owner = geteuid() != 0,
                                         .warn = warn_to_ctx,
                                         .warn_ctx = ctx };
        struct stat st;

        if (fd < 0)
                return kiln_error_errno(err, errno == ENOENT ? KILN_ERR_NOTFOUND : KILN_ERR_IO,
                                        "open '%s'", source);
        if (fstat(fd, &st) < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "stat '%s'", source);
        if (S_ISDIR(st.st_mode))
                return layer_changes_from_tree(fd, ret, err);
        if ((scratch = layer_store_scratch(store, ret_scratch, err)) < 0)
                return -1;
        if (layer_extract(scratch, fd, source, &xo, NULL, err) < 0)
                return -1;
        return layer_changes_from_tree(scratch, ret, err);
}

/* Rootless: the files the caller owns are root's in the image, as in a user namespace that maps
 * the caller to 0 (rootless podman and buildah do the same). Recorded owners are kept. */
static void map_caller_to_root(struct layer_changes *changes)
{
        uid_t uid = geteuid();
        gid_t gid = getegid();
        size_t i;

        for (i = 0; i < changes->n; i++) {
                if (changes->entries[i].st.st_uid == uid)
                        changes->entries[i].st.st_uid = 0;
                if (changes->entries[i].st.st_gid == gid)
                        changes->entries[i].st.st_gid = 0;
        }
}

static int run_import(void *state, char **args, unsigned n_args, struct cli_ctx *ctx,
                      struct kiln_error **err)
{
        struct import_opts *o = state;
        _cleanup_(layer_store_freep) struct layer_store *store = NULL;
        _cleanup_free_ char *scratch = NULL,
                            *platform = xstrdup(o->platform ? o->platform : cli_host_platform());
        _cleanup_free_ char *created_by = xasprintf("kiln import %s", args[0]);
        struct layer_changes changes = LAYER_CHANGES_INIT;
        struct layer_write_opts wo = LAYER_WRITE_OPTS_DEFAULT;
        struct layer_blob_writer *w = NULL;
        struct layer_sink sink;
        struct layer_desc layer;
        struct bld_image img = { 0 };
        struct bld_image_ref ref;
        int64_t epoch = bld_source_date_epoch();
        size_t i;
        int r = -1;

        if (o->n_tags == 0) {
                kiln_error_new(err, KILN_ERR_INVALID, "give the image a name with -t NAME");
                return CLI_USAGE;
        }
        if (df_check_platform(platform, err) < 0)
                return CLI_USAGE;
        if (cli_open_store(o->root, &store, err) < 0)
                return -1;
        if (source_changes(store, args[0], ctx, &scratch, &changes, err) < 0)
                goto out;
        if (geteuid() != 0)
                map_caller_to_root(&changes);
        wo.compression = o->compression;
        wo.source_date_epoch = epoch;
        if (layer_store_blob_begin(store, &w, err) < 0)
                goto out;
        sink = layer_blob_sink(w);
        if (layer_write(&changes, &wo, &sink, &layer, err) < 0) {
                layer_blob_abort(w);
                goto out;
        }
        if (layer_blob_commit(w, layer.digest, NULL, NULL, err) < 0)
                goto out;
        img.created = epoch >= 0 ? epoch : (int64_t) time(NULL);
        img.created_by = o->message ? o->message : created_by;
        img.layers = &layer;
        img.n_layers = 1;
        bld_platform_split(platform, &img.os, &img.architecture, &img.variant);
        if (bld_image_store(store, &img, &ref, err) < 0)
                goto out;
        for (i = 0; i < o->n_tags; i++)
                if (layer_store_tag(store, o->tags[i], ref.manifest_digest, ref.manifest_media_type,
                                    ref.manifest_size, err) < 0)
                        goto out;
        kiln_buf_addf(&ctx->out, NULL, "%s\n", ref.manifest_digest);
        r = 0;
out:
        layer_changes_release(&changes);
        if (scratch)
                layer_store_scratch_remove(store, scratch);
        return r;
}

static void import_release(void *state)
{
        struct import_opts *o = state;

        free(o->tags);
}

const struct cli_verb cli_verb_import = {
        .name = "import",
        .synopsis = "[--root DIR] -t NAME... [--compression C] [--platform P] DIR|TARBALL",
        .summary = "make an image of a root filesystem (a directory or a tarball)",
        .help = "Options:\n" CLI_ROOT_HELP
                "  -t, --tag NAME         name the image in the local store (repeatable)\n"
                "  --compression C        gzip (default), zstd or none\n"
                "  --platform OS/ARCH     the image's platform (default: the host's)\n"
                "  -m, --message TEXT     the history entry (default: kiln import SOURCE)\n"
                "\nSOURCE_DATE_EPOCH, when set, is the image's creation time and clamps file "
                "times.\n",
        .options = import_options,
        .shortopts = "t:m:",
        .min_args = 1,
        .max_args = 1,
        .state_size = sizeof(struct import_opts),
        .option = import_option,
        .run = run_import,
        .release = import_release,
};
