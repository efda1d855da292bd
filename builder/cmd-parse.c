/* kiln parse: checks a Dockerfile, or dumps its syntax tree in BuildKit's `result` format. */
#include <stdbool.h>
#include <stdlib.h>

#include "builder/cli.h"
#include "builder/common/xalloc.h"
#include "parser/parser.h"

struct parse_opts {
        bool dump;
};

static const struct option parse_options[] = {
        { .name = "dump", .has_arg = no_argument, .val = 'd' },
        {},
};

static int parse_option(void *state, int opt, const char *arg, struct kiln_error **err)
{
        struct parse_opts *o = state;

        switch (opt) {
        case 'd':
                o->dump = true;
                return 0;
        default:
                kiln_error_new(err, KILN_ERR_INVALID, "unknown option");
                return CLI_USAGE;
        }
}

static int run_parse(void *state, char **args, unsigned n_args, struct cli_ctx *ctx,
                     struct kiln_error **err)
{
        struct parse_opts *o = state;
        _cleanup_(df_syntax_freep) struct df_syntax *syn = NULL;
        _cleanup_(df_dockerfile_freep) struct df_dockerfile *df = NULL;
        _cleanup_free_ char *text = NULL;
        const char *path = args[0];
        size_t len;

        if (cli_read_dockerfile(path, &text, &len, err) < 0)
                return -1;
        if (df_parse(path, text, len, &syn, err) < 0)
                return -1;
        cli_report_parse_warnings(syn, ctx);
        /* The dump is the raw tree (BuildKit dumps instructions it would reject); checking
         * also types every instruction. */
        if (o->dump)
                return df_syntax_dump(syn, &ctx->out, err);
        if (df_dockerfile_new(syn, &df, err) < 0)
                return -1;
        return kiln_buf_addf(&ctx->out, err, "%s: %zu instructions in %zu stage%s\n", path,
                             syn->n_nodes, df->n_stages, df->n_stages == 1 ? "" : "s");
}

const struct cli_verb cli_verb_parse = {
        .name = "parse",
        .synopsis = "[--dump] FILE|-",
        .summary = "check a Dockerfile (syntax and every instruction), or dump its syntax tree",
        .help = "Options:\n"
                "  --dump    print the syntax tree in BuildKit's result format, one\n"
                "            (instruction ...) line per instruction, without checking the\n"
                "            instructions\n",
        .options = parse_options,
        .min_args = 1,
        .max_args = 1,
        .state_size = sizeof(struct parse_opts),
        .option = parse_option,
        .run = run_parse,
};
