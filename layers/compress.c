/*
 * The compressors behind layer_write(): gzip through libarchive's gzip filter (there is no
 * zlib in kiln's library set), zstd through libzstd with worker threads, or none. Each turns
 * tar bytes into compressed chunks handed to a layer_sink, deterministically: the gzip header
 * carries no timestamp, and zstd always runs in its multi-threaded mode, whose output does not
 * depend on the number of workers.
 */
#include <archive.h>
#include <archive_entry.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zstd.h>

#include "builder/common/xalloc.h"
#include "layers/layers-internal.h"

#define ZSTD_JOB_SIZE (2 << 20)

struct compressor {
        enum layer_compression kind;
        const struct layer_sink *out;
        struct kiln_error **err; /* where a sink error went (set per call) */
        int failed;
        /* gzip */
        struct archive *gz;
        /* zstd */
        ZSTD_CCtx *zs;
        void *zbuf;
        size_t zbuf_size;
};

const char *layer_compression_name(enum layer_compression c)
{
        switch (c) {
        case LAYER_COMPRESSION_GZIP:
                return "gzip";
        case LAYER_COMPRESSION_ZSTD:
                return "zstd";
        case LAYER_COMPRESSION_NONE:
                return "none";
        case _LAYER_COMPRESSION_MAX:
                break;
        }
        return "?";
}

int layer_compression_from_name(const char *name)
{
        int c;

        for (c = 0; c < _LAYER_COMPRESSION_MAX; c++)
                if (strcmp(name, layer_compression_name((enum layer_compression) c)) == 0)
                        return c;
        return -1;
}

const char *layer_media_type(enum layer_compression c, bool docker)
{
        switch (c) {
        case LAYER_COMPRESSION_GZIP:
                return docker ? "application/vnd.docker.image.rootfs.diff.tar.gzip"
                              : "application/vnd.oci.image.layer.v1.tar+gzip";
        case LAYER_COMPRESSION_ZSTD:
                return docker ? "application/vnd.docker.image.rootfs.diff.tar.zstd"
                              : "application/vnd.oci.image.layer.v1.tar+zstd";
        case LAYER_COMPRESSION_NONE:
                return docker ? "application/vnd.docker.image.rootfs.diff.tar"
                              : "application/vnd.oci.image.layer.v1.tar";
        case _LAYER_COMPRESSION_MAX:
                break;
        }
        return "application/octet-stream";
}

static int emit(struct compressor *c, const void *data, size_t len, struct kiln_error **err)
{
        if (len == 0)
                return 0;
        return c->out->write(c->out->ctx, data, len, err);
}

/* libarchive hands the gzip filter's output here. */
static la_ssize_t gz_write(struct archive *a, void *ctx, const void *buf, size_t len)
{
        struct compressor *c = ctx;

        if (emit(c, buf, len, c->err) < 0) {
                c->failed = 1;
                archive_set_error(a, EIO, "layer sink failed");
                return -1;
        }
        return (la_ssize_t) len;
}

static int gz_fail(struct compressor *c, const char *what, struct kiln_error **err)
{
        if (c->failed)
                return -1; /* the sink's error is already in *err */
        return kiln_error_new(err, KILN_ERR_IO, "gzip: %s: %s", what, archive_error_string(c->gz));
}

static unsigned cpu_count(void)
{
        long n = sysconf(_SC_NPROCESSORS_ONLN);

        return n > 0 ? (unsigned) n : 1;
}

struct compressor *compressor_new(const struct layer_write_opts *opts, const struct layer_sink *out,
                                  struct kiln_error **err)
{
        struct compressor *c = xcalloc(1, sizeof(*c));
        char level[16];
        size_t r;

        c->kind = opts->compression;
        c->out = out;
        c->err = err;
        switch (opts->compression) {
        case LAYER_COMPRESSION_NONE:
                return c;
        case LAYER_COMPRESSION_GZIP: {
                struct archive_entry *e;

                snprintf(level, sizeof(level), "%d", opts->level > 0 ? opts->level : 6);
                c->gz = archive_write_new();
                if (!c->gz)
                        abort();
                /* One "raw" entry through the gzip filter: libarchive as a streaming gzip. */
                if (archive_write_set_format_raw(c->gz) != ARCHIVE_OK ||
                    archive_write_add_filter_gzip(c->gz) != ARCHIVE_OK ||
                    archive_write_set_filter_option(c->gz, "gzip", "compression-level", level) !=
                            ARCHIVE_OK ||
                    archive_write_set_filter_option(c->gz, "gzip", "timestamp", NULL) !=
                            ARCHIVE_OK ||
                    archive_write_set_bytes_per_block(c->gz, 65536) != ARCHIVE_OK ||
                    archive_write_set_bytes_in_last_block(c->gz, 1) != ARCHIVE_OK ||
                    archive_write_open2(c->gz, c, NULL, gz_write, NULL, NULL) != ARCHIVE_OK) {
                        gz_fail(c, "setup", err);
                        compressor_free(c);
                        return NULL;
                }
                e = archive_entry_new();
                archive_entry_set_filetype(e, AE_IFREG);
                archive_entry_set_pathname(e, "layer.tar");
                if (archive_write_header(c->gz, e) != ARCHIVE_OK) {
                        archive_entry_free(e);
                        gz_fail(c, "setup", err);
                        compressor_free(c);
                        return NULL;
                }
                archive_entry_free(e);
                return c;
        }
        case LAYER_COMPRESSION_ZSTD:
                c->zs = ZSTD_createCCtx();
                if (!c->zs)
                        abort();
                r = ZSTD_CCtx_setParameter(c->zs, ZSTD_c_compressionLevel,
                                           opts->level > 0 ? opts->level : 3);
                if (!ZSTD_isError(r))
                        r = ZSTD_CCtx_setParameter(
                                c->zs, ZSTD_c_nbWorkers,
                                (int) (opts->threads ? opts->threads : cpu_count()));
                /* A fixed job size keeps the output independent of the machine and the memory
                 * bounded: with the default (4 windows) two workers need ~80 MiB. */
                if (!ZSTD_isError(r))
                        r = ZSTD_CCtx_setParameter(c->zs, ZSTD_c_jobSize, ZSTD_JOB_SIZE);
                if (ZSTD_isError(r)) {
                        kiln_error_new(err, KILN_ERR_UNSUPPORTED, "zstd: %s", ZSTD_getErrorName(r));
                        compressor_free(c);
                        return NULL;
                }
                c->zbuf_size = ZSTD_CStreamOutSize();
                c->zbuf = xmalloc(c->zbuf_size);
                return c;
        case _LAYER_COMPRESSION_MAX:
                break;
        }
        kiln_error_new(err, KILN_ERR_INVALID, "unknown compression");
        compressor_free(c);
        return NULL;
}

static int zstd_run(struct compressor *c, const void *data, size_t len, ZSTD_EndDirective mode,
                    struct kiln_error **err)
{
        ZSTD_inBuffer in = { .src = data, .size = len, .pos = 0 };
        size_t remaining;

        do {
                ZSTD_outBuffer out = { .dst = c->zbuf, .size = c->zbuf_size, .pos = 0 };
                remaining = ZSTD_compressStream2(c->zs, &out, &in, mode);
                if (ZSTD_isError(remaining))
                        return kiln_error_new(err, KILN_ERR_IO, "zstd: %s",
                                              ZSTD_getErrorName(remaining));
                if (emit(c, c->zbuf, out.pos, err) < 0)
                        return -1;
        } while (mode == ZSTD_e_end ? remaining != 0 : in.pos < in.size);
        return 0;
}

int compressor_write(struct compressor *c, const void *data, size_t len, struct kiln_error **err)
{
        c->err = err;
        switch (c->kind) {
        case LAYER_COMPRESSION_NONE:
                return emit(c, data, len, err);
        case LAYER_COMPRESSION_GZIP:
                if (archive_write_data(c->gz, data, len) != (la_ssize_t) len)
                        return gz_fail(c, "compress", err);
                return 0;
        case LAYER_COMPRESSION_ZSTD:
                return zstd_run(c, data, len, ZSTD_e_continue, err);
        case _LAYER_COMPRESSION_MAX:
                break;
        }
        return kiln_error_new(err, KILN_ERR_INVALID, "unknown compression");
}

int compressor_finish(struct compressor *c, struct kiln_error **err)
{
        c->err = err;
        switch (c->kind) {
        case LAYER_COMPRESSION_NONE:
                return 0;
        case LAYER_COMPRESSION_GZIP:
                if (archive_write_close(c->gz) != ARCHIVE_OK)
                        return gz_fail(c, "finish", err);
                return 0;
        case LAYER_COMPRESSION_ZSTD:
                return zstd_run(c, NULL, 0, ZSTD_e_end, err);
        case _LAYER_COMPRESSION_MAX:
                break;
        }
        return kiln_error_new(err, KILN_ERR_INVALID, "unknown compression");
}

struct compressor *compressor_free(struct compressor *c)
{
        if (!c)
                return NULL;
        if (c->gz)
                archive_write_free(c->gz);
        ZSTD_freeCCtx(c->zs);
        free(c->zbuf);
        free(c);
        return NULL;
}

const char *layer_zstd_version(void)
{
        return ZSTD_versionString();
}
