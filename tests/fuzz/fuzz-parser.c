/* Fuzzes the whole front end: parse, dump, type instructions, build the graph, evaluate. */
#include <stdint.h>
#include <stdlib.h>

#include "parser/parser.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void evaluate(const struct df_graph *g)
{
        static const char *const base_env[] = { "PATH=/usr/bin", "HOME=/root" };
        size_t i;

        for (i = 0; i < g->n_order; i++) {
                struct kiln_error *err = NULL;
                const struct df_instr *in;
                struct df_eval ev;
                struct df_vars run = DF_VARS_INIT;

                df_eval_init(&ev, g, g->order[i], base_env, 2);
                while (df_eval_next(&ev, &in, &err) == 0 && in)
                        ;
                df_eval_run_vars(&ev, &run);
                df_vars_release(&run);
                df_eval_release(&ev);
                kiln_error_free(err);
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct kiln_error *err = NULL;
        struct df_syntax *syn = NULL;
        struct df_dockerfile *df = NULL;
        struct df_graph *g = NULL;
        struct kiln_buf out = KILN_BUF_INIT;
        struct df_vars args = DF_VARS_INIT;
        struct df_graph_opts opts = { .build_args = &args, .build_platform = "linux/arm64" };
        size_t i;

        if (size > 1 << 20)
                return 0;
        if (df_parse("Dockerfile", (const char *) data, size, &syn, &err) < 0)
                goto out;
        df_syntax_dump(syn, &out, NULL);
        for (i = 0; i < syn->n_nodes; i++) {
                unsigned line, col;
                df_node_position(syn, &syn->nodes[i], syn->nodes[i].original_len, &line, &col);
        }
        if (df_dockerfile_new(syn, &df, &err) < 0)
                goto out;
        df_vars_set(&args, "VERSION", "1.0");
        if (df_graph_new(df, &opts, &g, &err) < 0)
                goto out;
        evaluate(g);
out:
        df_graph_free(g);
        df_dockerfile_free(df);
        df_syntax_free(syn);
        kiln_error_free(err);
        kiln_buf_release(&out);
        df_vars_release(&args);
        return 0;
}
