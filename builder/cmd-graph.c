/* kiln graph: a Dockerfile's stages in build order, as text, Graphviz dot or JSON. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "builder/cli.h"
#include "builder/common/json-util.h"
#include "builder/common/xalloc.h"
#include "parser/parser.h"

enum graph_format { FORMAT_TEXT, FORMAT_DOT, FORMAT_JSON };

struct graph_opts {
        struct cli_frontend fe;
        enum graph_format format;
};

static const struct option graph_options[] = {
        CLI_FRONTEND_OPTIONS,
        { .name = "format", .has_arg = required_argument, .val = 'F' },
        {},
};

static int graph_option(void *state, int opt, const char *arg, struct kiln_error **err)
{
        struct graph_opts *o = state;

        if (opt == 'F') {
                if (strcmp(arg, "text") == 0)
                        o->format = FORMAT_TEXT;
                else if (strcmp(arg, "dot") == 0)
                        o->format = FORMAT_DOT;
                else if (strcmp(arg, "json") == 0)
                        o->format = FORMAT_JSON;
                else {
                        kiln_error_new(err, KILN_ERR_INVALID,
                                       "unknown --format '%s' (use text, dot or json)", arg);
                        return CLI_USAGE;
                }
                return 0;
        }
        return cli_frontend_option(&o->fe, opt, arg, err);
}

static const char *stage_label(const struct df_graph *g, size_t i, char *buf, size_t size)
{
        const char *name = g->stages[i].stage->name;

        if (name)
                snprintf(buf, size, "[%zu] %s", i, name);
        else
                snprintf(buf, size, "[%zu]", i);
        return buf;
}

static void text_stage(const struct df_graph *g, size_t i, struct kiln_buf *out)
{
        const struct df_gstage *gs = &g->stages[i];
        char label[256], dep[256];
        size_t k;

        kiln_buf_addf(out, NULL, "  %-20s FROM %s", stage_label(g, i, label, sizeof(label)),
                      gs->base);
        if (gs->base_kind == DF_BASE_STAGE)
                kiln_buf_addf(out, NULL, " (stage %zu)", gs->base_stage);
        else if (gs->base_kind != DF_BASE_SCRATCH)
                kiln_buf_addf(out, NULL, " (%s)", df_base_kind_name(gs->base_kind));
        if (gs->platform)
                kiln_buf_addf(out, NULL, " --platform=%s", gs->platform);
        kiln_buf_addc(out, '\n', NULL);
        for (k = 0; k < gs->n_edges; k++) {
                const struct df_edge *e = &gs->edges[k];
                if (e->kind == DF_EDGE_FROM)
                        continue;
                if (e->stage != SIZE_MAX)
                        kiln_buf_addf(out, NULL, "  %-20s needs %s (%s, line %u)\n", "",
                                      stage_label(g, e->stage, dep, sizeof(dep)),
                                      df_edge_kind_name(e->kind), e->instr->node->start_line);
                else
                        kiln_buf_addf(out, NULL, "  %-20s needs image %s (%s, line %u)\n", "",
                                      e->image, df_edge_kind_name(e->kind),
                                      e->instr->node->start_line);
        }
}

static void render_text(const struct df_graph *g, const char *dockerfile, struct kiln_buf *out)
{
        char label[256];
        unsigned w;
        size_t i;
        bool skipped = false;

        kiln_buf_addf(out, NULL,
                      "%s: %zu stage%s; target %s needs %zu, built in %u wave%s (a wave's stages "
                      "build in parallel)\n",
                      dockerfile, g->n_stages, g->n_stages == 1 ? "" : "s",
                      stage_label(g, g->target, label, sizeof(label)), g->n_order, g->n_waves,
                      g->n_waves == 1 ? "" : "s");
        for (w = 1; w <= g->n_waves; w++) {
                kiln_buf_addf(out, NULL, "wave %u:\n", w);
                for (i = 0; i < g->n_order; i++)
                        if (g->stages[g->order[i]].wave == w)
                                text_stage(g, g->order[i], out);
        }
        for (i = 0; i < g->n_stages; i++) {
                if (g->stages[i].needed)
                        continue;
                if (!skipped)
                        kiln_buf_adds(out, "skipped (not needed by the target):\n", NULL);
                skipped = true;
                text_stage(g, i, out);
        }
}

static void dot_quote(struct kiln_buf *out, const char *s)
{
        kiln_buf_addc(out, '"', NULL);
        for (; *s; s++) {
                if (*s == '"' || *s == '\\')
                        kiln_buf_addc(out, '\\', NULL);
                if (*s == '\n')
                        kiln_buf_adds(out, "\\n", NULL);
                else
                        kiln_buf_addc(out, *s, NULL);
        }
        kiln_buf_addc(out, '"', NULL);
}

static void render_dot(const struct df_graph *g, const char *dockerfile, struct kiln_buf *out)
{
        _cleanup_free_ const char **images = NULL;
        size_t n_images = 0, alloc = 0, i, k, m;
        char label[256];

        kiln_buf_adds(out, "digraph ", NULL);
        dot_quote(out, dockerfile);
        kiln_buf_adds(out, " {\n  rankdir=LR;\n  node [shape=box, style=rounded];\n", NULL);
        for (i = 0; i < g->n_stages; i++) {
                const struct df_gstage *gs = &g->stages[i];
                kiln_buf_addf(out, NULL, "  s%zu [label=", i);
                dot_quote(out, stage_label(g, i, label, sizeof(label)));
                if (i == g->target)
                        kiln_buf_adds(out, ", penwidth=2", NULL);
                else if (!gs->needed)
                        kiln_buf_adds(out, ", style=\"rounded,dashed\", color=gray, fontcolor=gray",
                                      NULL);
                kiln_buf_adds(out, "];\n", NULL);
        }
        for (i = 0; i < g->n_stages; i++) {
                const struct df_gstage *gs = &g->stages[i];
                for (k = 0; k < gs->n_edges; k++) {
                        const struct df_edge *e = &gs->edges[k];
                        if (e->stage != SIZE_MAX) {
                                kiln_buf_addf(out, NULL, "  s%zu -> s%zu [label=", e->stage, i);
                        } else {
                                for (m = 0; m < n_images; m++)
                                        if (strcmp(images[m], e->image) == 0)
                                                break;
                                if (m == n_images) {
                                        XGROW(images, n_images + 1, alloc);
                                        images[n_images++] = e->image;
                                        kiln_buf_addf(out, NULL,
                                                      "  i%zu [shape=ellipse, label=", m);
                                        dot_quote(out, e->image);
                                        kiln_buf_adds(out, "];\n", NULL);
                                }
                                kiln_buf_addf(out, NULL, "  i%zu -> s%zu [label=", m, i);
                        }
                        dot_quote(out, df_edge_kind_name(e->kind));
                        if (!gs->needed)
                                kiln_buf_adds(out, ", style=dashed, color=gray", NULL);
                        kiln_buf_adds(out, "];\n", NULL);
                }
        }
        kiln_buf_adds(out, "}\n", NULL);
}

/* The ARGs and ENVs each needed stage ends with, assuming an empty base image environment
 * (run_graph has already evaluated every needed stage without error). */
static json_t *stage_scope(const struct df_graph *g, size_t i, json_t **ret_env)
{
        struct df_eval ev;
        const struct df_instr *in;
        json_t *args = json_object(), *env = json_object();
        size_t k;

        df_eval_init(&ev, g, i, NULL, 0);
        while (df_eval_next(&ev, &in, NULL) == 0 && in)
                ;
        for (k = 0; k < ev.args.n; k++)
                json_object_set_new(args, ev.args.items[k].name,
                                    json_string(ev.args.items[k].value));
        for (k = 0; k < ev.env.n; k++)
                json_object_set_new(env, ev.env.items[k].name, json_string(ev.env.items[k].value));
        df_eval_release(&ev);
        *ret_env = env;
        return args;
}

static int render_json(const struct df_graph *g, const char *dockerfile, struct kiln_buf *out,
                       struct kiln_error **err)
{
        _cleanup_json_ json_t *root = json_object();
        json_t *stages = json_array(), *order = json_array(), *global = json_object();
        _cleanup_free_ char *text = NULL;
        size_t i, k;

        for (i = 0; i < g->global.n; i++)
                json_object_set_new(global, g->global.items[i].name,
                                    json_string(g->global.items[i].value));
        for (i = 0; i < g->n_stages; i++) {
                const struct df_gstage *gs = &g->stages[i];
                json_t *st = json_object(), *needs = json_array();

                json_object_set_new(st, "index", json_integer((json_int_t) i));
                json_object_set_new(st, "name",
                                    gs->stage->name ? json_string(gs->stage->name) : json_null());
                json_object_set_new(st, "line", json_integer(gs->stage->from->node->start_line));
                json_object_set_new(st, "base", json_string(gs->base));
                json_object_set_new(st, "base_kind", json_string(df_base_kind_name(gs->base_kind)));
                json_object_set_new(st, "platform",
                                    gs->platform ? json_string(gs->platform) : json_null());
                json_object_set_new(st, "needed", json_boolean(gs->needed));
                json_object_set_new(st, "wave", json_integer(gs->wave));
                for (k = 0; k < gs->n_edges; k++) {
                        const struct df_edge *e = &gs->edges[k];
                        json_t *edge = json_object();
                        json_object_set_new(edge, "kind", json_string(df_edge_kind_name(e->kind)));
                        if (e->stage != SIZE_MAX)
                                json_object_set_new(edge, "stage",
                                                    json_integer((json_int_t) e->stage));
                        else
                                json_object_set_new(edge, "image", json_string(e->image));
                        json_object_set_new(edge, "line", json_integer(e->instr->node->start_line));
                        json_array_append_new(needs, edge);
                }
                json_object_set_new(st, "needs", needs);
                if (gs->needed) {
                        json_t *env;
                        json_object_set_new(st, "args", stage_scope(g, i, &env));
                        json_object_set_new(st, "env", env);
                }
                json_array_append_new(stages, st);
        }
        for (i = 0; i < g->n_order; i++)
                json_array_append_new(order, json_integer((json_int_t) g->order[i]));
        json_object_set_new(root, "dockerfile", json_string(dockerfile));
        json_object_set_new(root, "target", json_integer((json_int_t) g->target));
        json_object_set_new(root, "waves", json_integer(g->n_waves));
        json_object_set_new(root, "order", order);
        json_object_set_new(root, "global_args", global);
        json_object_set_new(root, "stages", stages);
        text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        if (!text)
                return kiln_error_new(err, KILN_ERR_GENERIC, "cannot format JSON");
        return kiln_buf_addf(out, err, "%s\n", text);
}

/* Expands every instruction of the needed stages, so that errors such as ${X:?msg} show now
 * rather than at build time. The base images' environments are not known yet: empty. */
static int evaluate_needed(const struct df_graph *g, struct kiln_error **err)
{
        size_t i;

        for (i = 0; i < g->n_order; i++) {
                const struct df_instr *in;
                struct df_eval ev;
                int r;

                df_eval_init(&ev, g, g->order[i], NULL, 0);
                while ((r = df_eval_next(&ev, &in, err)) == 0 && in)
                        ;
                df_eval_release(&ev);
                if (r < 0)
                        return -1;
        }
        return 0;
}

static int run_graph(void *state, char **args, unsigned n_args, struct cli_ctx *ctx,
                     struct kiln_error **err)
{
        struct graph_opts *o = state;
        struct cli_frontend *fe = &o->fe;
        size_t i;

        if (cli_frontend_load(fe, n_args ? args[0] : ".", ctx, err) < 0)
                return -1;
        if (evaluate_needed(fe->graph, err) < 0)
                return -1;
        for (i = 0; i < fe->graph->n_unused_build_args; i++)
                cli_warn(ctx, "warning: build-arg '%s' was not consumed by any ARG instruction",
                         fe->graph->unused_build_args[i]);
        switch (o->format) {
        case FORMAT_TEXT:
                render_text(fe->graph, fe->dockerfile_name, &ctx->out);
                return 0;
        case FORMAT_DOT:
                render_dot(fe->graph, fe->dockerfile_name, &ctx->out);
                return 0;
        case FORMAT_JSON:
                return render_json(fe->graph, fe->dockerfile_name, &ctx->out, err);
        }
        return 0;
}

static void graph_release(void *state)
{
        struct graph_opts *o = state;
        struct cli_frontend *fe = &o->fe;

        cli_frontend_release(&fe);
}

const struct cli_verb cli_verb_graph = {
        .name = "graph",
        .synopsis = "[-f FILE] [--target STAGE] [--build-arg K[=V]]... [--platform P] [--format "
                    "text|dot|json] [CONTEXT]",
        .summary = "show a Dockerfile's stages in build order and what each one needs",
        .help = CLI_FRONTEND_HELP
        "  --format F             text (default), dot (Graphviz: kiln graph --format dot | dot "
        "-Tsvg)\n"
        "                         or json (with each needed stage's ARG and ENV values)\n",
        .options = graph_options,
        .shortopts = "f:",
        .min_args = 0,
        .max_args = 1,
        .state_size = sizeof(struct graph_opts),
        .option = graph_option,
        .run = run_graph,
        .release = graph_release,
};
