/* kiln version: kiln's own version and the versions of the libraries it runs on. */
#include "builder/cli.h"
#include "builder/common/json-util.h"
#include "kiln-config.h"
#include "registry/registry.h"

static int run_version(void *state, char **args, unsigned n_args, struct cli_ctx *ctx,
                       struct kiln_error **err)
{
        return kiln_buf_addf(&ctx->out, err,
                             "kiln %s\n"
                             "%s\n"
                             "%s\n"
                             "jansson %s\n"
                             "zstd %s\n"
                             "libcurl %s\n",
                             KILN_VERSION, layer_archive_version(), layer_crypto_version(),
                             kiln_json_library_version(), layer_zstd_version(), reg_curl_version());
}

const struct cli_verb cli_verb_version = {
        .name = "version",
        .synopsis = "",
        .summary = "show the version of kiln and of the libraries it uses",
        .help = "",
        .min_args = 0,
        .max_args = 0,
        .run = run_version,
};
