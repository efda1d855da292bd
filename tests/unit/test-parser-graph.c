/*
 * Typed instructions, the stage graph and ARG/ENV scoping: what each instruction accepts, the
 * errors and their positions, stage references, --target, and BuildKit's scoping rules.
 */
#include <stdlib.h>
#include <string.h>

#include "builder/common/xalloc.h"
#include "parser/parser.h"
#include "tests/unit/tap.h"

struct built {
        struct df_syntax *syn;
        struct df_dockerfile *df;
        struct df_graph *graph;
        struct kiln_error *err;
};

static void built_release(struct built *b)
{
        df_graph_free(b->graph);
        df_dockerfile_free(b->df);
        df_syntax_free(b->syn);
        kiln_error_free(b->err);
        memset(b, 0, sizeof(*b));
}

/* Parses, types and graphs `text`; build args are "K=V" strings, NULL-terminated. */
static int build(struct built *b, const char *text, const char *target,
                 const char *const *build_args)
{
        struct df_vars args = DF_VARS_INIT;
        struct df_graph_opts opts = { .target = target,
                                      .build_args = &args,
                                      .build_platform = "linux/amd64" };
        int r;

        memset(b, 0, sizeof(*b));
        for (; build_args && *build_args; build_args++)
                df_vars_set_entry(&args, *build_args);
        r = df_parse("Dockerfile", text, strlen(text), &b->syn, &b->err);
        if (r == 0)
                r = df_dockerfile_new(b->syn, &b->df, &b->err);
        if (r == 0)
                r = df_graph_new(b->df, &opts, &b->graph, &b->err);
        df_vars_release(&args);
        return r;
}

struct err_case {
        const char *text;
        unsigned line, column;
        const char *msg;
};

static void error_cases(void)
{
        static const struct err_case cases[] = {
                /* instructions and flags */
                { "FROM a\nFROBNICATE x\n", 2, 1, "unknown instruction: FROBNICATE" },
                { "FROM a\nCOPPY a b\n", 2, 1, "did you mean COPY?" },
                { "RUN x\nFROM a\n", 1, 1, "only ARG may come before FROM" },
                { "ARG X\n", 1, 0, "no FROM instruction" },
                { "FROM a\nCOPY --chown a b\n", 2, 6, "missing a value on flag: chown" },
                { "FROM a\nCOPY --form=x a b\n", 2, 6,
                  "unknown flag: form (did you mean --from?)" },
                { "FROM a\nCOPY --link=maybe a b\n", 2, 6,
                  "expecting boolean value for flag link" },
                { "FROM a\nCOPY --link --link a b\n", 2, 13, "duplicate flag specified: link" },
                { "FROM a\nCOPY --chmod=999 a b\n", 2, 14, "invalid --chmod value '999'" },
                { "FROM a\nCOPY --chmod=u+q a b\n", 2, 14, "invalid --chmod value 'u+q'" },
                { "FROM a\nCOPY a\n", 2, 6, "COPY requires at least two arguments" },
                { "FROM a\nADD --checksum=md5:00 http://x/y /z\n", 2, 16, "invalid checksum" },
                { "FROM a\nCMD --x=1 true\n", 2, 5, "unknown flag: x (CMD takes no flags)" },
                { "FROM a\nRUN --network=bridge true\n", 2, 15,
                  "unsupported network mode 'bridge'" },
                { "FROM a\nRUN --security=lax true\n", 2, 16, "unsupported security mode 'lax'" },
                { "FROM a\nRUN --mount=type=cache,targt=/x true\n", 2, 13,
                  "unexpected key 'targt'" },
                { "FROM a\nRUN --mount=type=nfs,target=/x true\n", 2, 13,
                  "unsupported mount type 'nfs'" },
                { "FROM a\nRUN --mount=type=bind,target=/x,mode=0700 true\n", 2, 13,
                  "mode not allowed for 'bind' mounts" },
                { "FROM a\nRUN --mount=type=cache true\n", 2, 13,
                  "mount destination (target) not set" },
                { "FROM a\nRUN --mount=type=secret,from=x,id=a true\n", 2, 13,
                  "secret mount should not have a from" },
                { "FROM a\nRUN --mount=type=cache,target=/x,from=$S true\n", 2, 13,
                  "doesn't support variable expansion" },
                { "FROM a\nRUN --mount=type=tmpfs,target=/x,size=lots true\n", 2, 13,
                  "invalid value for size: lots" },
                { "FROM a\nRUN\n", 2, 4, "RUN requires at least one argument" },
                { "FROM a\nSHELL /bin/bash -c\n", 2, 7,
                  "SHELL requires the arguments to be in JSON form" },
                { "FROM a\nHEALTHCHECK --interval=5x CMD true\n", 2, 24,
                  "unknown unit in duration '5x'" },
                { "FROM a\nHEALTHCHECK --timeout=10 CMD true\n", 2, 23,
                  "missing unit in duration" },
                { "FROM a\nHEALTHCHECK --interval=10us CMD true\n", 2, 24,
                  "cannot be less than 1ms" },
                { "FROM a\nHEALTHCHECK --retries=-1 CMD true\n", 2, 23,
                  "--retries cannot be negative" },
                { "FROM a\nHEALTHCHECK NONE x\n", 2, 18, "HEALTHCHECK NONE takes no arguments" },
                { "FROM a\nHEALTHCHECK CONNECT TCP 7000\n", 2, 13, "unknown type 'CONNECT'" },
                { "FROM a\nHEALTHCHECK CMD\n", 2, 16, "missing command after HEALTHCHECK CMD" },
                { "FROM a\nHEALTHCHECK --start-period=1 CMD true\n", 2, 28, "missing unit" },
                { "FROM a\nEXPOSE 80/tcp 99999\n", 2, 15, "invalid port '99999'" },
                { "FROM a\nEXPOSE 80/icmp\n", 2, 8, "invalid proto 'icmp'" },
                { "FROM a\nSTOPSIGNAL SIGFOO\n", 2, 12, "invalid signal 'SIGFOO'" },
                { "FROM a\nUSER a b\n", 0, 0, "" }, /* USER takes the rest of the line: fine */
                { "FROM a\nWORKDIR\n", 2, 8, "WORKDIR requires exactly one argument" },
                { "FROM a\nONBUILD ONBUILD RUN x\n", 2, 9,
                  "ONBUILD isn't allowed as an ONBUILD trigger" },
                { "FROM a\nONBUILD FROM b\n", 2, 9, "FROM isn't allowed as an ONBUILD trigger" },
                { "FROM a\nONBUILD MAINTAINER me\n", 2, 9, "MAINTAINER isn't allowed" },
                { "FROM a\nONBUILD COPY --nope x y\n", 2, 14, "unknown flag: nope" },
                { "FROM a\nVOLUME [\"\"]\n", 2, 8, "VOLUME specified can not be an empty string" },
                { "FROM a\nARG =x\n", 2, 5, "ARG names can not be blank" },
                { "FROM a b\n", 1, 6, "FROM requires either one or three arguments" },
                { "FROM a AS 1st\n", 1, 11, "invalid name for build stage" },
                { "FROM --platform=linux a\n", 1, 17, "invalid platform 'linux'" },
                { "FROM a AS x\nFROM b AS X\n", 2, 11, "duplicate stage name 'x'" },
                /* stage references */
                { "FROM a AS one\nCOPY --from=two /a /b\nFROM b AS two\n", 2, 13,
                  "stage 'two' is defined later, on line 3" },
                { "FROM a AS one\nCOPY --from=one /a /b\n", 2, 13, "cannot depend on itself" },
                { "FROM a\nCOPY --from=0 /a /b\n", 2, 13, "cannot depend on itself" },
                { "FROM a\nCOPY --from=7 /a /b\n", 2, 13, "there is no stage 7" },
                { "FROM a\nRUN --mount=from=1,target=/x true\nFROM b\n", 2, 13,
                  "is defined later" },
                { "FROM later\nFROM b AS later\n", 1, 6,
                  "stage 'later' is defined later, on line 2" },
                { "ARG B=\nFROM $B\n", 2, 6, "FROM names no image" },
                { "ARG V\nFROM a:${V:?required}\n", 2, 8, "V: required" },
                { "ARG X=a\nFROM a AS a\nFROM b\nCOPY --from=${X:?} a b\n", 0, 0, "" },
        };
        size_t i;

        for (i = 0; i < ELEMENTSOF(cases); i++) {
                struct built b;
                int r = build(&b, cases[i].text, NULL, NULL);

                if (!cases[i].msg[0]) {
                        tap_ok(r == 0, "case %zu is accepted%s%s", i, b.err ? ": " : "",
                               b.err ? b.err->msg : "");
                        built_release(&b);
                        continue;
                }
                if (tap_ok(r < 0 && b.err, "case %zu fails: %s", i, cases[i].msg)) {
                        tap_ok(strstr(b.err->msg, cases[i].msg) != NULL, "case %zu message '%s'", i,
                               b.err->msg);
                        tap_ok(b.err->line == cases[i].line && b.err->column == cases[i].column,
                               "case %zu at %u:%u (got %u:%u)", i, cases[i].line, cases[i].column,
                               b.err->line, b.err->column);
                }
                built_release(&b);
        }
}

static const struct df_gstage *stage_named(const struct df_graph *g, const char *name)
{
        size_t i;

        for (i = 0; i < g->n_stages; i++)
                if (g->stages[i].stage->name && strcmp(g->stages[i].stage->name, name) == 0)
                        return &g->stages[i];
        return NULL;
}

static void graph_cases(void)
{
        static const char *const text =
                "ARG TAG=3.19\n"
                "FROM alpine:${TAG} AS Base\n"
                "FROM golang AS build\n"
                "COPY --from=BASE /etc/os-release /x\n"
                "RUN --mount=type=cache,target=/c --mount=from=base,target=/b,source=/etc true\n"
                "FROM base AS test\n"
                "COPY --from=1 /a /b\n"
                "COPY --from=nginx:latest /etc/nginx /n\n"
                "FROM scratch AS final\n"
                "COPY --from=build /app /app\n"
                "FROM oci-layout:///srv/layouts/x:1 AS local\n";
        struct built b;
        const struct df_gstage *gs;

        int r = build(&b, text, "final", NULL);

        if (!tap_ok(r == 0, "graph builds%s%s", b.err ? ": " : "", b.err ? b.err->msg : "")) {
                built_release(&b);
                return;
        }
        tap_eq_int((long long) b.graph->target, 3, "target 'final' is stage 3");
        gs = stage_named(b.graph, "base");
        tap_ok(gs && gs->base_kind == DF_BASE_IMAGE && strcmp(gs->base, "alpine:3.19") == 0,
               "FROM expands global ARGs: alpine:3.19");
        gs = stage_named(b.graph, "build");
        tap_ok(gs && gs->n_edges == 3 && gs->edges[1].kind == DF_EDGE_COPY &&
                       gs->edges[1].stage == 0 && gs->edges[2].kind == DF_EDGE_MOUNT &&
                       gs->edges[2].stage == 0,
               "COPY --from=BASE and --mount from=base are edges to stage 0 (names ignore case)");
        gs = stage_named(b.graph, "test");
        tap_ok(gs && gs->base_kind == DF_BASE_STAGE && gs->base_stage == 0 && !gs->needed,
               "FROM base is a stage edge; 'test' is not needed by 'final'");
        tap_ok(gs && gs->n_edges == 3 && gs->edges[1].stage == 1 &&
                       gs->edges[2].stage == SIZE_MAX &&
                       strcmp(gs->edges[2].image, "nginx:latest") == 0,
               "COPY --from=1 is stage 1; COPY --from=nginx:latest is an image");
        gs = stage_named(b.graph, "final");
        tap_ok(gs && gs->base_kind == DF_BASE_SCRATCH && gs->needed && gs->wave == 3,
               "final: scratch, needed, third wave");
        tap_ok(stage_named(b.graph, "base")->wave == 1 &&
                       stage_named(b.graph, "build")->wave == 2 && b.graph->n_waves == 3,
               "base is wave 1; build copies from base, so wave 2");
        gs = stage_named(b.graph, "local");
        tap_ok(gs && gs->base_kind == DF_BASE_LAYOUT && !gs->needed, "oci-layout:// base, skipped");
        tap_eq_int((long long) b.graph->n_order, 3, "three stages are built");
        built_release(&b);

        tap_ok(build(&b, "FROM a AS x\nFROM b\n", NULL, NULL) == 0 && b.graph->target == 1 &&
                       b.graph->n_order == 1 && !b.graph->stages[0].needed,
               "without --target the last stage is built alone");
        built_release(&b);
        tap_ok(build(&b, "FROM a AS x\nFROM b\n", "nope", NULL) < 0 &&
                       b.err->kind == KILN_ERR_NOTFOUND &&
                       strstr(b.err->msg, "'nope' could not be found (stages: 'x')"),
               "an unknown --target is an error listing the stages");
        built_release(&b);
        tap_ok(build(&b, "FROM alpine AS alpine\n", NULL, NULL) == 0 &&
                       b.graph->stages[0].base_kind == DF_BASE_IMAGE,
               "FROM alpine AS alpine is the image, not a self reference");
        built_release(&b);
}

/* Returns the value of `name` after evaluating stage `stage`, or NULL when unset. */
static char *eval_var(const struct df_graph *g, size_t stage, const char *name, bool run_scope,
                      const char *const *base_env, size_t n_env)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct df_eval ev;
        struct df_vars run = DF_VARS_INIT;
        const struct df_instr *in;
        const struct df_var *v;
        char *out = NULL;

        df_eval_init(&ev, g, stage, base_env, n_env);
        while (df_eval_next(&ev, &in, &err) == 0 && in)
                ;
        if (err) {
                tap_diag("eval error: %s", err->msg);
                df_eval_release(&ev);
                return xstrdup("(error)");
        }
        df_eval_run_vars(&ev, &run);
        v = df_vars_get(run_scope ? &run : &ev.args, name);
        if (v)
                out = xstrdup(v->value);
        df_vars_release(&run);
        df_eval_release(&ev);
        return out;
}

static void scoping_cases(void)
{
        static const char *const text =
                "ARG GLOBAL=g\n"
                "ARG BOTH=global\n"
                "ARG NODEFAULT\n"
                "FROM a\n"
                "ARG GLOBAL\n"            /* inherits g */
                "ARG BOTH=local\n"        /* own default wins */
                "ARG NODEFAULT\n"         /* stays unset */
                "ARG LOCAL=${GLOBAL}-x\n" /* expands with the stage scope */
                "ENV SHADOW=env\n"
                "ARG SHADOW=arg\n"        /* ENV wins over ARG */
                "ENV A=1 B=${A:-unset}\n" /* B sees the A from before this line */
                "ARG TARGETARCH\n"
                "FROM b\n"
                "ENV SEEN=${GLOBAL:-hidden}\n"; /* global ARGs are not visible inside */
        struct built b;
        char *v;

        if (!tap_ok(build(&b, text, "0", NULL) < 0,
                    "a numeric --target is a name, and '0' is none")) {
        }
        built_release(&b);
        if (!tap_ok(build(&b, text, NULL, NULL) == 0, "scoping Dockerfile builds")) {
                built_release(&b);
                return;
        }
        v = eval_var(b.graph, 0, "GLOBAL", false, NULL, 0);
        tap_eq_str(v, "g", "ARG NAME inherits the global default");
        free(v);
        v = eval_var(b.graph, 0, "BOTH", false, NULL, 0);
        tap_eq_str(v, "local", "a stage's own default wins over the global one");
        free(v);
        v = eval_var(b.graph, 0, "NODEFAULT", false, NULL, 0);
        tap_ok(v == NULL, "ARG without a default anywhere stays unset");
        free(v);
        v = eval_var(b.graph, 0, "LOCAL", false, NULL, 0);
        tap_eq_str(v, "g-x", "ARG defaults expand with the stage's scope");
        free(v);
        v = eval_var(b.graph, 0, "SHADOW", true, NULL, 0);
        tap_eq_str(v, "env", "ENV wins over an ARG of the same name");
        free(v);
        v = eval_var(b.graph, 0, "B", true, NULL, 0);
        tap_eq_str(v, "unset", "ENV A=1 B=$A expands B with the A from before the line");
        free(v);
        v = eval_var(b.graph, 0, "TARGETARCH", false, NULL, 0);
        tap_eq_str(v, "amd64", "ARG TARGETARCH brings in the predefined value");
        free(v);
        v = eval_var(b.graph, 1, "SEEN", true, NULL, 0);
        tap_eq_str(v, "hidden", "global ARGs are invisible in a stage that does not declare them");
        free(v);
        {
                static const char *const env[] = { "PATH=/usr/bin", "GLOBAL=from-image" };
                v = eval_var(b.graph, 1, "SEEN", true, env, 2);
                tap_eq_str(v, "from-image", "the base image's Env takes part in expansion");
                free(v);
        }
        tap_eq_int((long long) b.graph->n_unused_build_args, 0, "no build args, none unused");
        built_release(&b);

        {
                static const char *const args[] = { "GLOBAL=cli",          "BOTH=cli",
                                                    "NODEFAULT=cli",       "UNUSED=1",
                                                    "HTTP_PROXY=http://p", NULL };
                if (tap_ok(build(&b, text, NULL, args) == 0, "builds with --build-args")) {
                        v = eval_var(b.graph, 0, "GLOBAL", false, NULL, 0);
                        tap_eq_str(v, "cli", "--build-arg overrides the inherited global");
                        free(v);
                        v = eval_var(b.graph, 0, "BOTH", false, NULL, 0);
                        tap_eq_str(v, "cli", "--build-arg overrides a stage's own default");
                        free(v);
                        v = eval_var(b.graph, 0, "NODEFAULT", false, NULL, 0);
                        tap_eq_str(v, "cli", "--build-arg sets an ARG declared without a default");
                        free(v);
                        v = eval_var(b.graph, 0, "SHADOW", true, NULL, 0);
                        tap_eq_str(v, "env", "ENV still wins over a --build-arg");
                        free(v);
                        v = eval_var(b.graph, 0, "HTTP_PROXY", true, NULL, 0);
                        tap_eq_str(v, "http://p", "a proxy build arg reaches RUN without an ARG");
                        free(v);
                        v = eval_var(b.graph, 0, "UNUSED", true, NULL, 0);
                        tap_ok(v == NULL, "an undeclared build arg does not");
                        free(v);
                        tap_ok(b.graph->n_unused_build_args == 1 &&
                                       strcmp(b.graph->unused_build_args[0], "UNUSED") == 0,
                               "only UNUSED is reported unused (proxy args never are)");
                }
                built_release(&b);
        }
        {
                static const char *const args[] = { "TAG=edge", NULL };
                tap_ok(build(&b, "ARG TAG=3\nFROM alpine:$TAG\n", NULL, args) == 0 &&
                               strcmp(b.graph->stages[0].base, "alpine:edge") == 0,
                       "--build-arg overrides a global ARG used by FROM");
                built_release(&b);
                tap_ok(build(&b,
                             "FROM --platform=$BUILDPLATFORM golang AS b\nFROM "
                             "alpine:${TARGETARCH}\n",
                             NULL, NULL) == 0 &&
                               strcmp(b.graph->stages[0].platform, "linux/amd64") == 0 &&
                               strcmp(b.graph->stages[1].base, "alpine:amd64") == 0,
                       "platform ARGs are predefined in the global scope");
                built_release(&b);
                tap_ok(build(&b, "FROM a AS x\nARG Y=1\nFROM b\nCOPY --from=${Y:-x} a b\n", NULL,
                             NULL) == 0 &&
                               b.graph->stages[1].n_edges == 2 &&
                               b.graph->stages[1].edges[1].stage == 0,
                       "COPY --from expands in the global scope only (a stage ARG is invisible)");
                built_release(&b);
        }
}

static void eval_cases(void)
{
        static const char *const text = "FROM a\n"
                                        "ARG DIR=/srv\n"
                                        "ENV NAME=kiln PORTS=\"80 443/udp\"\n"
                                        "WORKDIR $DIR/app\n"
                                        "EXPOSE $PORTS 8080\n"
                                        "COPY --chown=${NAME}:${NAME} src/ ${DIR}/\n"
                                        "COPY <<EOF <<'RAW' /etc/\n"
                                        "hello \"$NAME\"\n"
                                        "EOF\n"
                                        "keep $NAME\n"
                                        "RAW\n"
                                        "COPY <<-EOF /x\n"
                                        "\t\tindented $NAME\n"
                                        "\tEOF\n"
                                        "LABEL org.example.name=$NAME \"multi word\"=\"a b\"\n"
                                        "RUN --mount=type=cache,target=${DIR}/cache,id=$NAME true\n"
                                        "VOLUME $DIR/data\n"
                                        "STOPSIGNAL SIG${SIG:-TERM}\n"
                                        "CMD echo $NAME\n";
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        const struct df_instr *in;
        struct built b;
        struct df_eval ev;
        const struct df_instr *seen[32];
        size_t n = 0;

        int r = build(&b, text, NULL, NULL);

        if (!tap_ok(r == 0, "eval Dockerfile builds%s%s", b.err ? ": " : "",
                    b.err ? b.err->msg : "")) {
                built_release(&b);
                return;
        }
        df_eval_init(&ev, b.graph, 0, NULL, 0);
        while (n < 32 && df_eval_next(&ev, &in, &err) == 0 && in)
                seen[n++] = in;
        tap_ok(!err, "every instruction expands%s%s", err ? ": " : "", err ? err->msg : "");
        if (n == 12) {
                tap_eq_str(seen[2]->text.word.text, "/srv/app", "WORKDIR $DIR/app");
                tap_ok(seen[3]->list.n == 3 && strcmp(seen[3]->list.items[0].text, "80") == 0 &&
                               strcmp(seen[3]->list.items[1].text, "443/udp") == 0 &&
                               strcmp(seen[3]->list.items[2].text, "8080") == 0,
                       "EXPOSE splits a variable holding several ports");
                tap_eq_str(seen[4]->copy.chown.text, "kiln:kiln", "COPY --chown expands");
                tap_eq_str(seen[4]->copy.dest.text, "/srv/", "COPY destination expands");
                tap_ok(seen[5]->copy.n_heredocs == 2, "COPY with two heredocs");
                if (seen[5]->copy.n_heredocs == 2) {
                        tap_eq_str(seen[5]->copy.heredocs[0].content, "hello \"kiln\"\n",
                                   "an unquoted heredoc delimiter expands the body, quotes kept");
                        tap_eq_str(seen[5]->copy.heredocs[1].content, "keep $NAME\n",
                                   "a quoted heredoc delimiter keeps the body as written");
                }
                tap_ok(seen[6]->copy.n_heredocs == 1 &&
                               strcmp(seen[6]->copy.heredocs[0].content, "indented kiln\n") == 0,
                       "<<-EOF strips leading tabs, then expands");
                tap_ok(seen[7]->kv.n == 2 && strcmp(seen[7]->kv.items[0].value.text, "kiln") == 0 &&
                               strcmp(seen[7]->kv.items[1].key.text, "multi word") == 0 &&
                               strcmp(seen[7]->kv.items[1].value.text, "a b") == 0,
                       "LABEL keys and values expand and lose their quotes");
                tap_eq_str(seen[9]->list.items[0].text, "/srv/data", "VOLUME expands");
                tap_eq_str(seen[10]->text.word.text, "SIGTERM", "STOPSIGNAL expands");
                tap_eq_str(seen[11]->cmd.argv[0].text, "echo $NAME", "CMD is left to the shell");
        } else {
                tap_ok(false, "12 instructions evaluated (got %zu)", n);
        }
        df_eval_release(&ev);
        built_release(&b);

        /* Deferred checks fire once a variable is known. */
        {
                static const char *const bad[] = {
                        "FROM a\nARG P=99999\nEXPOSE $P\n",
                        "FROM a\nARG S=NOPE\nSTOPSIGNAL $S\n",
                        "FROM a\nARG M=abc\nCOPY --chmod=$M a b\n",
                        "FROM a\nARG T=weird\nRUN --mount=type=$T,target=/x true\n",
                        "FROM a\nARG U\nRUN --mount=type=cache,target=${T:?needT} true\n",
                };
                size_t i;

                for (i = 0; i < ELEMENTSOF(bad); i++) {
                        _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
                        struct built bb;
                        int rb = build(&bb, bad[i], NULL, NULL);

                        if (rb == 0) {
                                df_eval_init(&ev, bb.graph, 0, NULL, 0);
                                while ((rb = df_eval_next(&ev, &in, &e)) == 0 && in)
                                        ;
                                df_eval_release(&ev);
                        }
                        tap_ok(rb < 0 && e && e->line == 3,
                               "deferred check %zu fails on line 3: %s", i,
                               e ? e->msg : "(no error)");
                        built_release(&bb);
                }
        }
}

static void mount_cases(void)
{
        struct kiln_arena a = KILN_ARENA_INIT;
        struct kiln_error *err = NULL;
        struct df_mount m;

        tap_ok(df_mount_parse("type=cache,\"target=/x,y\",id=c,sharing=locked", NULL, '\\', &a, &m,
                              &err) == 0 &&
                       m.type == DF_MOUNT_CACHE && strcmp(m.target, "/x,y") == 0 &&
                       strcmp(m.id, "c") == 0 && m.sharing == DF_SHARING_LOCKED && !m.readonly,
               "a CSV-quoted field keeps its comma; cache mounts are writable");
        tap_ok(df_mount_parse("target=/src,from=build,source=/out", NULL, '\\', &a, &m, &err) ==
                               0 &&
                       m.type == DF_MOUNT_BIND && m.readonly && strcmp(m.from, "build") == 0,
               "bind is the default type and read-only by default");
        tap_ok(df_mount_parse("type=secret,id=tok,required,env=TOKEN", NULL, '\\', &a, &m, &err) ==
                               0 &&
                       m.required && strcmp(m.env, "TOKEN") == 0 && !m.target,
               "a secret mount needs no target");
        tap_ok(df_mount_parse("type=tmpfs,target=/t,size=64m,rw=false", NULL, '\\', &a, &m, &err) ==
                               0 &&
                       m.size == 64 << 20 && m.readonly,
               "tmpfs size in binary units; rw=false is read-only");
        tap_ok(df_mount_parse("type=cache,target=/x,mode=0750,uid=1000,gid=1000", NULL, '\\', &a,
                              &m, &err) == 0 &&
                       m.has_mode && m.mode == 0750 && m.uid == 1000,
               "cache mode, uid and gid");
        tap_ok(df_mount_parse("type=cache,target=\"/x", NULL, '\\', &a, &m, &err) < 0 && err &&
                       strstr(err->msg, "bare \""),
               "a bare quote is a CSV error");
        err = kiln_error_free(err);
        tap_ok(df_mount_parse("type=cache,\"target=/x", NULL, '\\', &a, &m, &err) < 0 && err &&
                       strstr(err->msg, "missing \""),
               "an unterminated quoted field is a CSV error");
        err = kiln_error_free(err);
        tap_ok(df_mount_parse("type=cache,target=/x,sharing=sometimes", NULL, '\\', &a, &m, &err) <
                               0 &&
                       err && strstr(err->msg, "unsupported sharing value"),
               "sharing takes shared, private or locked");
        err = kiln_error_free(err);
        kiln_arena_release(&a);
}

/* ONBUILD triggers read back from an image config: parsed alone, expanded in a stage's scope. */
static void trigger_cases(void)
{
        static const struct {
                const char *expr;
                const char *msg; /* NULL: parses */
        } cases[] = {
                { "RUN make", NULL },
                { "COPY --chown=$U src/ /app/", NULL },
                { "FROM busybox", "FROM isn't allowed as an ONBUILD trigger" },
                { "MAINTAINER me", "MAINTAINER isn't allowed as an ONBUILD trigger" },
                { "ONBUILD RUN x", "ONBUILD isn't allowed as an ONBUILD trigger" },
                { "NOPE x", "unknown instruction: NOPE" },
                { "RUN a\nRUN b", "an ONBUILD trigger must be a single instruction, not 2" },
                { "", "no instructions" },
        };
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct df_trigger *t = NULL;
        const struct df_instr *in = NULL;
        struct built b;
        struct df_eval ev;
        static const char *const env[] = { "U=app" };
        size_t i;

        for (i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
                int r = df_trigger_parse(cases[i].expr, &t, &e);

                if (!cases[i].msg)
                        tap_ok(r == 0 && t && t->instr.node, "trigger '%s' parses", cases[i].expr);
                else
                        tap_ok(r < 0 && e && strstr(e->msg, cases[i].msg), "trigger '%s': %s (got: %s)",
                               cases[i].expr, cases[i].msg, e ? e->msg : "success");
                t = df_trigger_free(t);
        }
        if (build(&b, "FROM a\nRUN x\n", NULL, NULL) < 0 ||
            df_trigger_parse("COPY --chown=$U src/ /app/", &t, &err) < 0) {
                tap_ok(false, "trigger eval setup%s%s", err ? ": " : "", err ? err->msg : "");
                built_release(&b);
                return;
        }
        df_eval_init(&ev, b.graph, 0, env, 1);
        tap_ok(df_eval_instr(&ev, NULL, &t->instr, &in, &err) == 0 && in &&
                       strcmp(in->copy.chown.text, "app") == 0,
               "a trigger expands in the stage's scope (--chown=$U -> app)");
        tap_ok(df_eval_next(&ev, &in, &err) == 0 && in && in->kind == DF_INSTR_RUN,
               "and the stage's own instructions follow");
        df_eval_release(&ev);
        df_trigger_free(t);
        built_release(&b);
}

int main(void)
{
        error_cases();
        trigger_cases();
        mount_cases();
        graph_cases();
        scoping_cases();
        eval_cases();
        return tap_done();
}
