/*
 * Typed Dockerfile -> stage graph: the global ARG scope, FROM and COPY --from expanded in it,
 * stage references resolved into edges, and the stages --target needs in dependency order,
 * grouped into waves that can build in parallel.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "builder/common/xalloc.h"
#include "parser/parser-internal.h"

/* Build args that are always allowed, reach RUN undeclared, and are never reported as
 * unused (BuildKit's list). */
static const char *const proxy_args[] = {
        "HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY",
        "ftp_proxy",  "NO_PROXY",   "no_proxy",    "ALL_PROXY",   "all_proxy",
};

bool df_is_proxy_arg(const char *name)
{
        size_t i;

        for (i = 0; i < ELEMENTSOF(proxy_args); i++)
                if (strcmp(name, proxy_args[i]) == 0)
                        return true;
        return false;
}

const char *df_base_kind_name(enum df_base_kind kind)
{
        static const char *const names[_DF_BASE_MAX] = {
                [DF_BASE_IMAGE] = "image",
                [DF_BASE_SCRATCH] = "scratch",
                [DF_BASE_STAGE] = "stage",
                [DF_BASE_LAYOUT] = "oci-layout",
        };
        return (unsigned) kind < _DF_BASE_MAX ? names[kind] : "?";
}

const char *df_edge_kind_name(enum df_edge_kind kind)
{
        static const char *const names[_DF_EDGE_MAX] = {
                [DF_EDGE_FROM] = "FROM",
                [DF_EDGE_COPY] = "COPY --from",
                [DF_EDGE_MOUNT] = "RUN --mount from",
        };
        return (unsigned) kind < _DF_EDGE_MAX ? names[kind] : "?";
}

/* Splits "os/arch[/variant]" into the predefined ARGs with `prefix` (TARGET or BUILD). */
static void set_platform_args(struct df_vars *vars, const char *prefix, const char *platform)
{
        _cleanup_free_ char *copy = xstrdup(platform);
        _cleanup_free_ char *k_platform = xasprintf("%sPLATFORM", prefix);
        _cleanup_free_ char *k_os = xasprintf("%sOS", prefix);
        _cleanup_free_ char *k_arch = xasprintf("%sARCH", prefix);
        _cleanup_free_ char *k_variant = xasprintf("%sVARIANT", prefix);
        char *arch = strchr(copy, '/'), *variant = NULL;

        if (arch) {
                *arch++ = '\0';
                variant = strchr(arch, '/');
                if (variant)
                        *variant++ = '\0';
        }
        df_vars_set(vars, k_platform, platform);
        df_vars_set(vars, k_os, copy);
        df_vars_set(vars, k_arch, arch ? arch : "");
        df_vars_set(vars, k_variant, variant ? variant : "");
}

static bool is_builtin_arg(const char *name)
{
        return df_is_proxy_arg(name) || strncmp(name, "BUILDKIT_", 9) == 0;
}

/* Expands a word of `in` in `scope`; errors are placed at the word. */
static int expand_at(const struct df_dockerfile *df, const struct df_instr *in, struct df_word w,
                     struct df_vars *scope, char **ret, struct kiln_error **err)
{
        if (df_expand_word(w.text, strlen(w.text), df->syn->escape, 0, scope, ret, NULL, err) < 0) {
                if (err && *err)
                        df_error_locate(*err, df->syn, in->node, w.offset);
                return -1;
        }
        return 0;
}

static int eval_global(struct df_graph *g, const struct df_graph_opts *opts,
                       struct kiln_error **err)
{
        const struct df_dockerfile *df = g->df;
        const char *build = opts->build_platform ? opts->build_platform : "linux/amd64";
        const char *target = opts->target_platform ? opts->target_platform : build;
        size_t i, k;

        set_platform_args(&g->global, "BUILD", build);
        set_platform_args(&g->global, "TARGET", target);
        for (i = 0; i < df->n_meta_args; i++) {
                const struct df_instr *in = &df->meta_args[i];

                for (k = 0; k < in->kv.n; k++) {
                        const struct df_kv *kv = &in->kv.items[k];
                        _cleanup_free_ char *key = NULL, *value = NULL;
                        const struct df_var *given;

                        if (expand_at(df, in, kv->key, &g->global, &key, err) < 0)
                                return -1;
                        given = df_vars_get(&g->build_args, key);
                        if (given) {
                                df_vars_set(&g->global, key, given->value);
                                continue;
                        }
                        if (!kv->value.text) {
                                /* Declared without a value: unset, unless predefined. */
                                continue;
                        }
                        if (expand_at(df, in, kv->value, &g->global, &value, err) < 0)
                                return -1;
                        df_vars_set(&g->global, key, value);
                }
        }
        return 0;
}

static ssize_t stage_by_name(const struct df_dockerfile *df, const char *name)
{
        size_t i;

        for (i = 0; i < df->n_stages; i++)
                if (df->stages[i].name && strcasecmp(df->stages[i].name, name) == 0)
                        return (ssize_t) i;
        return -1;
}

static bool all_digits(const char *s)
{
        if (!*s)
                return false;
        for (; *s; s++)
                if (*s < '0' || *s > '9')
                        return false;
        return true;
}

static void add_edge(struct df_graph *g, struct df_gstage *gs, enum df_edge_kind kind, size_t stage,
                     const char *image, const struct df_instr *in)
{
        struct df_edge *e = kiln_arena_array(&g->arena, gs->n_edges + 1, sizeof(*e));

        if (gs->n_edges)
                memcpy(e, gs->edges, gs->n_edges * sizeof(*e));
        e[gs->n_edges] = (struct df_edge){
                .kind = kind,
                .stage = stage,
                .image = image ? kiln_arena_strdup(&g->arena, image) : NULL,
                .instr = in,
        };
        gs->edges = e;
        gs->n_edges++;
}

/*
 * Resolves a COPY --from or --mount from= reference made in stage `self`: an earlier stage by
 * name or index, or else an image. Later stages and the stage itself are errors.
 */
static int resolve_source(struct df_graph *g, size_t self, enum df_edge_kind kind, const char *ref,
                          const struct df_instr *in, size_t offset, struct kiln_error **err)
{
        const struct df_dockerfile *df = g->df;
        struct df_gstage *gs = &g->stages[self];
        ssize_t idx;

        if (all_digits(ref)) {
                unsigned long n = strtoul(ref, NULL, 10);
                if (n >= df->n_stages)
                        return df_error_at_node(
                                err, df->syn, in->node, offset, KILN_ERR_INVALID,
                                "%s=%s: there is no stage %s (the Dockerfile has %zu)",
                                kind == DF_EDGE_COPY ? "--from" : "from", ref, ref, df->n_stages);
                idx = (ssize_t) n;
        } else {
                idx = stage_by_name(df, ref);
                if (idx < 0) {
                        add_edge(g, gs, kind, SIZE_MAX, ref, in);
                        return 0;
                }
        }
        if ((size_t) idx == self)
                return df_error_at_node(err, df->syn, in->node, offset, KILN_ERR_INVALID,
                                        "stage '%s' cannot depend on itself (a cycle)", ref);
        if ((size_t) idx > self)
                return df_error_at_node(err, df->syn, in->node, offset, KILN_ERR_INVALID,
                                        "stage '%s' is defined later, on line %u: a stage can only "
                                        "use stages before it",
                                        ref, df->stages[idx].from->node->start_line);
        add_edge(g, gs, kind, (size_t) idx, NULL, in);
        return 0;
}

static int resolve_from(struct df_graph *g, size_t i, struct kiln_error **err)
{
        const struct df_dockerfile *df = g->df;
        const struct df_instr *from = df->stages[i].from;
        struct df_gstage *gs = &g->stages[i];
        _cleanup_free_ char *base = NULL, *platform = NULL;
        ssize_t idx;

        if (expand_at(df, from, from->from.image, &g->global, &base, err) < 0)
                return -1;
        if (base[0] == '\0')
                return df_error_at_node(
                        err, df->syn, from->node, from->from.image.offset, KILN_ERR_INVALID,
                        "FROM names no image: '%s' expands to nothing", from->from.image.text);
        if (from->from.platform.text) {
                if (expand_at(df, from, from->from.platform, &g->global, &platform, err) < 0)
                        return -1;
                if (df_check_platform(platform, err) < 0) {
                        df_error_locate(*err, df->syn, from->node, from->from.platform.offset);
                        return -1;
                }
                gs->platform = kiln_arena_strdup(&g->arena, platform);
        }
        gs->base = kiln_arena_strdup(&g->arena, base);
        idx = stage_by_name(df, base);
        if (idx >= 0 && (size_t) idx < i) {
                gs->base_kind = DF_BASE_STAGE;
                gs->base_stage = (size_t) idx;
                add_edge(g, gs, DF_EDGE_FROM, (size_t) idx, NULL, from);
        } else if (idx >= 0 && (size_t) idx > i) {
                return df_error_at_node(err, df->syn, from->node, from->from.image.offset,
                                        KILN_ERR_INVALID,
                                        "stage '%s' is defined later, on line %u: a stage can only "
                                        "build on stages before it",
                                        base, df->stages[idx].from->node->start_line);
        } else if (strcmp(base, "scratch") == 0) {
                gs->base_kind = DF_BASE_SCRATCH;
        } else if (strncmp(base, "oci-layout://", 13) == 0) {
                gs->base_kind = DF_BASE_LAYOUT;
                add_edge(g, gs, DF_EDGE_FROM, SIZE_MAX, base, from);
        } else {
                gs->base_kind = DF_BASE_IMAGE;
                add_edge(g, gs, DF_EDGE_FROM, SIZE_MAX, base, from);
        }
        return 0;
}

static int resolve_stage(struct df_graph *g, size_t i, struct kiln_error **err)
{
        const struct df_dockerfile *df = g->df;
        const struct df_stage *st = &df->stages[i];
        size_t k, m;

        g->stages[i].stage = st;
        if (resolve_from(g, i, err) < 0)
                return -1;
        for (k = 0; k < st->n_instrs; k++) {
                const struct df_instr *in = &st->instrs[k];

                if (in->kind == DF_INSTR_COPY && in->copy.from.text) {
                        _cleanup_free_ char *ref = NULL;
                        /* BuildKit expands --from in the global scope only. */
                        if (expand_at(df, in, in->copy.from, &g->global, &ref, err) < 0)
                                return -1;
                        if (resolve_source(g, i, DF_EDGE_COPY, ref, in, in->copy.from.offset, err) <
                            0)
                                return -1;
                }
                if (in->kind == DF_INSTR_RUN) {
                        for (m = 0; m < in->run.n_mounts; m++) {
                                _cleanup_free_ char *ref = NULL;
                                if (df_mount_get_from(in->run.mounts[m].text, &ref, err) < 0) {
                                        df_error_locate(*err, df->syn, in->node,
                                                        in->run.mounts[m].offset);
                                        return -1;
                                }
                                if (ref && resolve_source(g, i, DF_EDGE_MOUNT, ref, in,
                                                          in->run.mounts[m].offset, err) < 0)
                                        return -1;
                        }
                }
        }
        return 0;
}

static int find_target(struct df_graph *g, const char *target, struct kiln_error **err)
{
        const struct df_dockerfile *df = g->df;
        ssize_t idx;

        if (!target || !*target) {
                g->target = df->n_stages - 1;
                return 0;
        }
        idx = stage_by_name(df, target);
        if (idx < 0) {
                _cleanup_free_ const char **names = xcalloc(df->n_stages + 1, sizeof(char *));
                struct kiln_buf list = KILN_BUF_INIT;
                size_t i, n = 0;

                for (i = 0; i < df->n_stages; i++)
                        if (df->stages[i].name) {
                                kiln_buf_addf(&list, NULL, "%s'%s'", n ? ", " : "",
                                              df->stages[i].name);
                                names[n++] = df->stages[i].name;
                        }
                kiln_error_new(err, KILN_ERR_NOTFOUND, "target stage '%s' could not be found%s%s%s",
                               target, n ? " (stages: " : " (no stage has a name)", list.buf,
                               n ? ")" : "");
                kiln_buf_release(&list);
                return -1;
        }
        g->target = (size_t) idx;
        return 0;
}

/* Marks what the target needs and orders it; stages only ever need earlier stages, so
 * source order restricted to the needed stages is a dependency order. */
static void mark_needed(struct df_graph *g)
{
        size_t i, k, n = 0;

        g->stages[g->target].needed = true;
        for (i = g->target + 1; i > 0; i--) {
                struct df_gstage *gs = &g->stages[i - 1];
                if (!gs->needed)
                        continue;
                for (k = 0; k < gs->n_edges; k++)
                        if (gs->edges[k].stage != SIZE_MAX)
                                g->stages[gs->edges[k].stage].needed = true;
        }
        g->order = kiln_arena_array(&g->arena, g->n_stages, sizeof(size_t));
        for (i = 0; i < g->n_stages; i++) {
                struct df_gstage *gs = &g->stages[i];
                unsigned wave = 1;

                if (!gs->needed)
                        continue;
                for (k = 0; k < gs->n_edges; k++)
                        if (gs->edges[k].stage != SIZE_MAX &&
                            g->stages[gs->edges[k].stage].wave + 1 > wave)
                                wave = g->stages[gs->edges[k].stage].wave + 1;
                gs->wave = wave;
                if (wave > g->n_waves)
                        g->n_waves = wave;
                g->order[n++] = i;
        }
        g->n_order = n;
}

static bool declared_in(const struct df_instr *instrs, size_t n, const char *name)
{
        size_t i, k;

        for (i = 0; i < n; i++) {
                if (instrs[i].kind != DF_INSTR_ARG)
                        continue;
                for (k = 0; k < instrs[i].kv.n; k++)
                        if (strcmp(instrs[i].kv.items[k].key.text, name) == 0)
                                return true;
        }
        return false;
}

static void find_unused_build_args(struct df_graph *g)
{
        const struct df_dockerfile *df = g->df;
        size_t i, k, alloc = 0;

        for (i = 0; i < g->build_args.n; i++) {
                const char *name = g->build_args.items[i].name;
                bool used =
                        is_builtin_arg(name) || declared_in(df->meta_args, df->n_meta_args, name);

                for (k = 0; !used && k < g->n_order; k++) {
                        const struct df_stage *st = &df->stages[g->order[k]];
                        used = declared_in(st->instrs, st->n_instrs, name);
                }
                if (used)
                        continue;
                XGROW(g->unused_build_args, g->n_unused_build_args + 1, alloc);
                g->unused_build_args[g->n_unused_build_args++] = xstrdup(name);
        }
}

int df_graph_new(const struct df_dockerfile *df, const struct df_graph_opts *opts,
                 struct df_graph **ret, struct kiln_error **err)
{
        _cleanup_(df_graph_freep) struct df_graph *g = xcalloc(1, sizeof(*g));
        size_t i;

        g->df = df;
        g->n_stages = df->n_stages;
        g->stages = kiln_arena_array(&g->arena, df->n_stages, sizeof(*g->stages));
        if (opts->build_args)
                df_vars_copy(&g->build_args, opts->build_args);
        if (opts->build_platform && df_check_platform(opts->build_platform, err) < 0)
                return -1;
        if (opts->target_platform && df_check_platform(opts->target_platform, err) < 0)
                return -1;
        if (eval_global(g, opts, err) < 0)
                return -1;
        for (i = 0; i < df->n_stages; i++)
                if (resolve_stage(g, i, err) < 0)
                        return -1;
        if (find_target(g, opts->target, err) < 0)
                return -1;
        mark_needed(g);
        find_unused_build_args(g);
        *ret = TAKE_PTR(g);
        return 0;
}

struct df_graph *df_graph_free(struct df_graph *g)
{
        size_t i;

        if (!g)
                return NULL;
        for (i = 0; i < g->n_unused_build_args; i++)
                free(g->unused_build_args[i]);
        free(g->unused_build_args);
        df_vars_release(&g->global);
        df_vars_release(&g->build_args);
        kiln_arena_release(&g->arena);
        free(g);
        return NULL;
}
