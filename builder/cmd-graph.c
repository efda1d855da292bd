/* kiln graph: the build's stages in dependency order (placeholder until graph.c lands). */
#include "builder/cli.h"

static int run_graph(void *state, char **args, unsigned n_args, struct cli_ctx *ctx,
                     struct kiln_error **err)
{
        return kiln_error_new(err, KILN_ERR_UNSUPPORTED, "not yet");
}

const struct cli_verb cli_verb_graph = {
        .name = "graph",
        .synopsis = "[-f FILE] [CONTEXT]",
        .summary = "show a Dockerfile's stages in build order",
        .min_args = 0,
        .max_args = 1,
        .run = run_graph,
};
