/*
 * One stage's instructions in order with BuildKit's scoping: a stage starts with only its
 * base image's environment; `ARG name` brings a global ARG (or --build-arg) into scope,
 * `ARG name=default` declares one, --build-arg overrides both, and ENV always wins over ARG.
 * Each instruction's expandable words are expanded with the scope before it.
 */
#include <stdlib.h>
#include <string.h>

#include "builder/common/xalloc.h"
#include "parser/parser-internal.h"

void df_eval_init(struct df_eval *ev, const struct df_graph *graph, size_t stage,
                  const char *const *base_env, size_t n_base_env)
{
        size_t i;

        memset(ev, 0, sizeof(*ev));
        ev->graph = graph;
        ev->stage = &graph->df->stages[stage];
        ev->escape = graph->df->syn->escape;
        for (i = 0; i < n_base_env; i++)
                df_vars_set_entry(&ev->env, base_env[i]);
}

void df_eval_release(struct df_eval *ev)
{
        df_vars_release(&ev->args);
        df_vars_release(&ev->env);
        df_vars_release(&ev->scope);
        kiln_arena_release(&ev->arena);
}

void df_eval_run_vars(const struct df_eval *ev, struct df_vars *ret)
{
        const struct df_vars *given = &ev->graph->build_args;
        size_t i;

        df_vars_release(ret);
        /* Proxy build args reach RUN without an ARG instruction, as in BuildKit. */
        for (i = 0; i < given->n; i++)
                if (df_is_proxy_arg(given->items[i].name))
                        df_vars_set(ret, given->items[i].name, given->items[i].value);
        for (i = 0; i < ev->args.n; i++)
                df_vars_set(ret, ev->args.items[i].name, ev->args.items[i].value);
        for (i = 0; i < ev->env.n; i++)
                df_vars_set(ret, ev->env.items[i].name, ev->env.items[i].value);
}

struct expander {
        struct df_eval *ev;
        const struct df_syntax *syn; /* what `in` was parsed from; NULL: no positions */
        const struct df_instr *in;
        struct kiln_error **err;
};

/* Expands one word; with `raw_quotes` (heredoc bodies) quotes are ordinary characters. */
static int expand(struct expander *x, struct df_word *w, unsigned flags)
{
        char *out;
        size_t len;

        if (!w->text)
                return 0;
        if (df_expand_word(w->text, strlen(w->text), x->ev->escape, flags, &x->ev->scope, &out,
                           &len, x->err) < 0) {
                if (x->err && *x->err)
                        df_error_locate(*x->err, x->syn, x->in->node, w->offset);
                return -1;
        }
        w->text = kiln_arena_memdup(&x->ev->arena, out, len);
        free(out);
        return 0;
}

static struct df_word *copy_words(struct kiln_arena *a, const struct df_word *w, size_t n)
{
        struct df_word *c = n ? kiln_arena_array(a, n, sizeof(*c)) : NULL;

        if (n)
                memcpy(c, w, n * sizeof(*c));
        return c;
}

static int locate(struct expander *x, size_t offset)
{
        if (x->err && *x->err)
                df_error_locate(*x->err, x->syn, x->in->node, offset);
        return -1;
}

static int eval_arg(struct expander *x, struct df_instr *out)
{
        struct df_eval *ev = x->ev;
        const struct df_graph *g = ev->graph;
        struct df_kv *items = kiln_arena_array(&ev->arena, out->kv.n, sizeof(*items));
        size_t k;

        memcpy(items, out->kv.items, out->kv.n * sizeof(*items));
        out->kv.items = items;
        for (k = 0; k < out->kv.n; k++) {
                struct df_kv *kv = &items[k];
                const struct df_var *v;

                if (expand(x, &kv->key, 0) < 0 || expand(x, &kv->value, 0) < 0)
                        return -1;
                v = df_vars_get(&g->build_args, kv->key.text);
                if (v) {
                        df_vars_set(&ev->args, kv->key.text, v->value);
                } else if (kv->value.text) {
                        df_vars_set(&ev->args, kv->key.text, kv->value.text);
                } else if ((v = df_vars_get(&g->global, kv->key.text))) {
                        /* "ARG name" without a value inherits the global one. */
                        df_vars_set(&ev->args, kv->key.text, v->value);
                } else {
                        /* Declared but unset: it stays unset. */
                        df_vars_unset(&ev->args, kv->key.text);
                }
        }
        return 0;
}

static int eval_kv(struct expander *x, struct df_instr *out, bool is_env)
{
        struct df_eval *ev = x->ev;
        struct df_kv *items = kiln_arena_array(&ev->arena, out->kv.n, sizeof(*items));
        size_t k;

        memcpy(items, out->kv.items, out->kv.n * sizeof(*items));
        out->kv.items = items;
        /* Every pair is expanded with the scope before the instruction (ENV a=1 b=$a uses the
         * old a), then applied. */
        for (k = 0; k < out->kv.n; k++)
                if (expand(x, &items[k].key, 0) < 0 || expand(x, &items[k].value, 0) < 0)
                        return -1;
        for (k = 0; is_env && k < out->kv.n; k++) {
                if (items[k].key.text[0] == '\0')
                        return locate(x, items[k].key.offset);
                df_vars_set(&ev->env, items[k].key.text, items[k].value.text);
        }
        return 0;
}

static int eval_copy(struct expander *x, struct df_instr *out)
{
        struct df_eval *ev = x->ev;
        struct df_copy *cp = &out->copy;
        size_t k;

        cp->srcs = copy_words(&ev->arena, cp->srcs, cp->n_srcs);
        cp->excludes = copy_words(&ev->arena, cp->excludes, cp->n_excludes);
        for (k = 0; k < cp->n_srcs; k++)
                if (expand(x, &cp->srcs[k], 0) < 0)
                        return -1;
        for (k = 0; k < cp->n_excludes; k++)
                if (expand(x, &cp->excludes[k], 0) < 0)
                        return -1;
        if (expand(x, &cp->dest, 0) < 0 || expand(x, &cp->chown, 0) < 0 ||
            expand(x, &cp->chmod, 0) < 0 || expand(x, &cp->checksum, 0) < 0)
                return -1;
        if (cp->chmod.text && df_check_chmod(cp->chmod.text, x->err) < 0)
                return locate(x, cp->chmod.offset);
        if (cp->n_heredocs) {
                struct df_heredoc *docs =
                        kiln_arena_array(&ev->arena, cp->n_heredocs, sizeof(*docs));
                for (k = 0; k < cp->n_heredocs; k++) {
                        _cleanup_free_ char *chomped = NULL, *expanded = NULL;
                        const char *body = cp->heredocs[k].content;
                        size_t len = cp->heredocs[k].content_len;

                        docs[k] = cp->heredocs[k];
                        if (docs[k].chomp) {
                                chomped = df_heredoc_chomp(body, len, &len);
                                body = chomped;
                        }
                        if (docs[k].expand) {
                                /* Quotes in a file body are text: BuildKit expands it raw. */
                                if (df_expand_word(body, len, ev->escape, DF_EXPAND_NO_QUOTES,
                                                   &ev->scope, &expanded, &len, x->err) < 0)
                                        return locate(x, 0);
                                body = expanded;
                        }
                        docs[k].content = kiln_arena_memdup(&ev->arena, body, len);
                        docs[k].content_len = len;
                }
                cp->heredocs = docs;
        }
        /* --from was resolved in the global scope by the graph. */
        return 0;
}

static int eval_run(struct expander *x, struct df_instr *out)
{
        struct df_eval *ev = x->ev;
        size_t k;

        for (k = 0; k < out->run.n_mounts; k++) {
                struct df_mount m;
                if (df_mount_parse(out->run.mounts[k].text, &ev->scope, ev->escape, &ev->arena, &m,
                                   x->err) < 0)
                        return locate(x, out->run.mounts[k].offset);
        }
        return 0;
}

int df_eval_next(struct df_eval *ev, const struct df_instr **ret, struct kiln_error **err)
{
        if (ev->next >= ev->stage->n_instrs) {
                *ret = NULL;
                return 0;
        }
        return df_eval_instr(ev, ev->graph->df->syn, &ev->stage->instrs[ev->next++], ret, err);
}

int df_eval_instr(struct df_eval *ev, const struct df_syntax *syn, const struct df_instr *in,
                  const struct df_instr **ret, struct kiln_error **err)
{
        struct df_instr *out;
        struct expander x = { .ev = ev, .syn = syn, .in = in, .err = err };
        size_t k;
        int signo;

        out = kiln_arena_alloc(&ev->arena, sizeof(*out));
        *out = *in;
        df_eval_run_vars(ev, &ev->scope);

        switch (in->kind) {
        case DF_INSTR_ARG:
                if (eval_arg(&x, out) < 0)
                        return -1;
                break;
        case DF_INSTR_ENV:
        case DF_INSTR_LABEL:
                if (eval_kv(&x, out, in->kind == DF_INSTR_ENV) < 0)
                        return -1;
                break;
        case DF_INSTR_ADD:
        case DF_INSTR_COPY:
                if (eval_copy(&x, out) < 0)
                        return -1;
                break;
        case DF_INSTR_RUN:
                if (eval_run(&x, out) < 0)
                        return -1;
                break;
        case DF_INSTR_EXPOSE: {
                /* A variable may hold several ports: split the expansion on whitespace. */
                struct df_word *ports = NULL;
                size_t n = 0, alloc = 0;

                for (k = 0; k < in->list.n; k++) {
                        char **words = NULL;
                        size_t nw = 0, j;
                        const struct df_word *w = &in->list.items[k];

                        if (df_expand_words(w->text, strlen(w->text), ev->escape, 0, &ev->scope,
                                            &words, &nw, err) < 0) {
                                free(ports);
                                return locate(&x, w->offset);
                        }
                        for (j = 0; j < nw; j++) {
                                if (df_check_port(words[j], err) < 0) {
                                        df_strv_free(words);
                                        free(ports);
                                        return locate(&x, w->offset);
                                }
                                XGROW(ports, n + 1, alloc);
                                ports[n].text = kiln_arena_strdup(&ev->arena, words[j]);
                                ports[n++].offset = w->offset;
                        }
                        df_strv_free(words);
                }
                out->list.items = copy_words(&ev->arena, ports, n);
                out->list.n = n;
                free(ports);
                break;
        }
        case DF_INSTR_VOLUME:
                out->list.items = copy_words(&ev->arena, in->list.items, in->list.n);
                for (k = 0; k < out->list.n; k++) {
                        if (expand(&x, &out->list.items[k], 0) < 0)
                                return -1;
                        if (out->list.items[k].text[0] == '\0')
                                return df_error_at_node(
                                        err, syn, in->node,
                                        out->list.items[k].offset, KILN_ERR_INVALID,
                                        "VOLUME specified can not be an empty string");
                }
                break;
        case DF_INSTR_USER:
        case DF_INSTR_WORKDIR:
        case DF_INSTR_STOPSIGNAL:
                if (expand(&x, &out->text.word, 0) < 0)
                        return -1;
                if (in->kind == DF_INSTR_STOPSIGNAL &&
                    df_parse_signal(out->text.word.text, &signo, err) < 0)
                        return locate(&x, in->text.word.offset);
                if (out->text.word.text[0] == '\0')
                        return df_error_at_node(err, syn, in->node,
                                                in->text.word.offset, KILN_ERR_INVALID,
                                                "%s expands to an empty string",
                                                df_instr_name(in->kind));
                break;
        case DF_INSTR_FROM:
        case DF_INSTR_CMD:
        case DF_INSTR_ENTRYPOINT:
        case DF_INSTR_SHELL:
        case DF_INSTR_MAINTAINER:
        case DF_INSTR_ONBUILD:
        case DF_INSTR_HEALTHCHECK:
        case _DF_INSTR_MAX:
                /* Not expanded: the shell (or the child build) sees them as written. */
                break;
        }
        *ret = out;
        return 0;
}
