/* Helpers shared by the files of layers/; never included from outside this folder. */
#pragma once

#include "layers/layers.h"

/* A streaming compressor that hands its output to a sink (layers/compress.c). */
struct compressor;

/** Starts compressing as `opts` says into `out` (which must outlive the compressor). */
struct compressor *compressor_new(const struct layer_write_opts *opts, const struct layer_sink *out,
                                  struct kiln_error **err);
int compressor_write(struct compressor *c, const void *data, size_t len, struct kiln_error **err);
/** Flushes the end of the stream to the sink. */
int compressor_finish(struct compressor *c, struct kiln_error **err);
struct compressor *compressor_free(struct compressor *c);

/**
 * Removes `name` in `dirfd` and everything below it, never following a symlink, with a bounded
 * number of open descriptors however deep the tree (layers/extract.c).
 */
int layer_remove_tree(int dirfd, const char *name, struct kiln_error **err);
