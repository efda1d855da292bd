/*
 * kiln's Dockerfile front end: text -> syntax tree -> typed instructions -> stage graph.
 *
 * Semantics follow BuildKit's Dockerfile frontend: ../shared/conformance/buildkit holds the
 * cases the tests hold us to. Nothing here prints; errors carry FILE:LINE:COLUMN and the
 * offending source line, warnings are returned as values.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "builder/common/arena.h"
#include "builder/common/error.h"
#include "builder/common/strbuf.h"

/* ------------------------------------------------------------------------------------ */
/* Syntax tree (parser/syntax.c, parser/dump.c)                                           */
/* ------------------------------------------------------------------------------------ */

/** The longest physical line BuildKit accepts (bufio.MaxScanTokenSize - 1). */
#define DF_MAX_LINE 65535

struct df_heredoc {
        const char *name;    /* the delimiter word, quotes removed */
        const char *content; /* the body exactly as read, with its newlines */
        size_t content_len;
        unsigned fd;         /* the digit before "<<"; 0 when absent */
        bool expand;         /* no part of the delimiter was quoted: expand the body */
        bool chomp;          /* "<<-": the consumer strips leading tabs */
        unsigned start_line; /* line of the first body line */
};

/* A flag or argument word. `text` is NUL-terminated but may hold NUL bytes (JSON "\u0000"). */
struct df_arg {
        const char *text;
        size_t len;
        size_t offset; /* where it starts in the node's `original` (best effort) */
};

/* Maps a stretch of a node's joined text back to the physical line it came from. */
struct df_segment {
        size_t offset;      /* offset in `original` where this physical line's text starts */
        unsigned line;      /* 1-based source line */
        size_t line_offset; /* byte offset of that text within the source line */
};

/* One instruction in BuildKit's low-level form. */
struct df_node {
        const char *keyword;  /* as written, case kept ("from", "RUN", "foo") */
        const char *original; /* the instruction after joining continuation lines */
        size_t original_len;
        struct df_arg *flags; /* leading --name[=value] words, quotes removed */
        size_t n_flags;
        struct df_arg *args; /* argument words, formed by the instruction's rule */
        size_t n_args;
        struct df_node *trigger; /* ONBUILD's nested instruction, else NULL */
        struct df_heredoc *heredocs;
        size_t n_heredocs;
        bool json;           /* arguments came from a JSON array (exec form) */
        unsigned start_line; /* first and last physical line, heredoc bodies included */
        unsigned end_line;
        struct df_segment *segments;
        size_t n_segments;
        size_t args_offset; /* where the text after keyword and flags starts */
};

struct df_warning {
        const char *msg;
        unsigned line;
        unsigned column;
};

struct df_syntax {
        struct kiln_arena arena; /* owns everything below */
        const char *filename;    /* as given, for messages ("Dockerfile", "-") */
        const char *text;        /* the source, BOM included */
        size_t text_len;
        size_t *line_starts; /* byte offset of each line; index 0 is line 1 */
        size_t n_lines;
        struct df_node *nodes;
        size_t n_nodes;
        char escape;        /* '\\' or '`' */
        const char *syntax; /* value of "# syntax=" or NULL */
        const char *check;  /* value of "# check=" or NULL */
        struct df_warning *warnings;
        size_t n_warnings;
};

/**
 * Parses Dockerfile text (a copy is kept). `filename` is used in positions. Fails with PARSE
 * (positioned) on malformed input and LIMIT on a line longer than DF_MAX_LINE. The caller
 * frees the result with df_syntax_free().
 */
int df_parse(const char *filename, const char *text, size_t len, struct df_syntax **ret,
             struct kiln_error **err);

/** Frees a syntax tree; accepts NULL, returns NULL. */
struct df_syntax *df_syntax_free(struct df_syntax *syn);

/** Appends the tree in BuildKit's `result` format: one "(keyword ...)" line per instruction. */
int df_syntax_dump(const struct df_syntax *syn, struct kiln_buf *out, struct kiln_error **err);

/** Appends one node in the dump format, without a newline. */
int df_node_dump(const struct df_node *node, struct kiln_buf *out, struct kiln_error **err);

/** Appends `s` quoted as Go's strconv.Quote does. */
int df_quote(const char *s, size_t len, struct kiln_buf *out, struct kiln_error **err);

/** The source position (1-based line, 1-based character column) of byte `offset` in a node. */
void df_node_position(const struct df_syntax *syn, const struct df_node *node, size_t offset,
                      unsigned *ret_line, unsigned *ret_column);

/** Returns the text of source line `line` (1-based) without its newline. */
const char *df_syntax_line(const struct df_syntax *syn, unsigned line, size_t *ret_len);

/**
 * Sets *err to an error positioned at `offset` in `node` (file, line, column, source line).
 * Returns -1.
 */
int df_error_at_node(struct kiln_error **err, const struct df_syntax *syn,
                     const struct df_node *node, size_t offset, enum kiln_errkind kind,
                     const char *fmt, ...) _printf_(6, 7);

/** Positions an error raised while handling `node` at `offset`, unless it has a position.
 * With `syn` NULL (a node parsed on its own, such as an ONBUILD trigger) it does nothing. */
void df_error_locate(struct kiln_error *e, const struct df_syntax *syn, const struct df_node *node,
                     size_t offset);

/** Strips leading tabs from every line of a "<<-" heredoc body. Caller frees. */
char *df_heredoc_chomp(const char *content, size_t len, size_t *ret_len);

/* ------------------------------------------------------------------------------------ */
/* Word expansion (parser/expand.c)                                                       */
/* ------------------------------------------------------------------------------------ */

/* A variable in scope. A variable that is declared but unset is simply not in the list. */
struct df_var {
        char *name;
        char *value;
        bool used; /* set when an expansion referenced it */
};

/* The variables an expansion sees, with lookup by exact name. Setting replaces. */
struct df_vars {
        struct df_var *items;
        size_t n;
        size_t alloc;
        char **unset_refs; /* names referenced while unset, each once, in order */
        size_t n_unset_refs;
        size_t alloc_unset_refs;
};

#define DF_VARS_INIT \
        {            \
                0    \
        }

void df_vars_set(struct df_vars *vars, const char *name, const char *value);
void df_vars_setn(struct df_vars *vars, const char *name, size_t name_len, const char *value,
                  size_t value_len);
/** Sets a variable from a "NAME=value" environment entry ("NAME" alone sets it empty). */
void df_vars_set_entry(struct df_vars *vars, const char *entry);
void df_vars_unset(struct df_vars *vars, const char *name);
/** Returns the variable or NULL when unset. */
struct df_var *df_vars_get(const struct df_vars *vars, const char *name);
/** Replaces dst's variables with copies of src's (usage marks are not copied). */
void df_vars_copy(struct df_vars *dst, const struct df_vars *src);
void df_vars_release(struct df_vars *vars);

enum df_expand_flags {
        DF_EXPAND_RAW_QUOTES = 1 << 0,  /* keep quote characters in the output */
        DF_EXPAND_RAW_ESCAPES = 1 << 1, /* keep escape characters in the output */
        DF_EXPAND_SKIP_UNSET = 1 << 2,  /* leave references to unset variables as written */
        DF_EXPAND_NO_QUOTES = 1 << 3,   /* quotes are ordinary characters */
};

/**
 * Expands one word as BuildKit's shell lexer does (quotes removed, escapes processed,
 * variables substituted, no splitting). `escape` is '\\' or '`'. Referenced variables are
 * marked used in `vars` (which may be NULL: nothing is set) and unset ones recorded.
 * On PARSE failure the error's column is the 1-based byte offset in `word` of the construct
 * that failed and its line is 0, for the caller to place with df_error_locate().
 * *ret is malloc'd and NUL-terminated; *ret_len may be NULL.
 */
int df_expand_word(const char *word, size_t len, char escape, unsigned flags, struct df_vars *vars,
                   char **ret, size_t *ret_len, struct kiln_error **err);

/**
 * Expands like df_expand_word(), then splits on whitespace that is not quoted (including
 * whitespace that came from an unquoted variable). *ret_words is a malloc'd array of
 * *ret_n malloc'd strings, NULL-terminated.
 */
int df_expand_words(const char *word, size_t len, char escape, unsigned flags, struct df_vars *vars,
                    char ***ret_words, size_t *ret_n, struct kiln_error **err);

/** Frees a NULL-terminated string vector; accepts NULL, returns NULL. */
char **df_strv_free(char **v);

/* ------------------------------------------------------------------------------------ */
/* .dockerignore (parser/dockerignore.c)                                                  */
/* ------------------------------------------------------------------------------------ */

struct df_ignore;

/**
 * Turns .dockerignore text into its pattern list (BuildKit's ignorefile rules: BOM,
 * '#' comments, trimming, '!' split off, path cleaning, one leading '/' removed).
 * *ret_patterns is a NULL-terminated malloc'd vector of *ret_n strings.
 */
int df_ignore_read(const char *text, size_t len, char ***ret_patterns, size_t *ret_n,
                   struct kiln_error **err);

/** Compiles a pattern list. INVALID for a malformed pattern (a lone "!", an unclosed "["). */
int df_ignore_new(const char *const *patterns, size_t n, struct df_ignore **ret,
                  struct kiln_error **err);

/** Frees a matcher; accepts NULL, returns NULL. */
struct df_ignore *df_ignore_free(struct df_ignore *ig);

/**
 * Decides whether `path` (slash-separated, relative to the context) is excluded: a pattern
 * applies when it matches the path or any of its parent directories, the last applicable
 * pattern wins. INVALID when a pattern turns out to be malformed.
 */
int df_ignore_matches(const struct df_ignore *ig, const char *path, bool *ret_excluded,
                      struct kiln_error **err);

/** Number of patterns in use; whether any is an exclusion ("!..."). */
size_t df_ignore_count(const struct df_ignore *ig);
bool df_ignore_has_exclusions(const struct df_ignore *ig);

/**
 * Loads the ignore file that applies to a build: "<Dockerfile>.dockerignore" beside the
 * Dockerfile when it exists, else ".dockerignore" at the root of the context (read through
 * `context_fd` with RESOLVE_IN_ROOT). `dockerfile_path` may be NULL (e.g. stdin). With no
 * file, *ret is an empty matcher. *ret_source (may be NULL) names the file used, or NULL.
 */
int df_ignore_load(int context_fd, const char *dockerfile_path, struct df_ignore **ret,
                   char **ret_source, struct kiln_error **err);

/* ------------------------------------------------------------------------------------ */
/* Typed instructions (parser/instr.c)                                                    */
/* ------------------------------------------------------------------------------------ */

enum df_instr_kind {
        DF_INSTR_FROM,
        DF_INSTR_RUN,
        DF_INSTR_CMD,
        DF_INSTR_LABEL,
        DF_INSTR_MAINTAINER,
        DF_INSTR_EXPOSE,
        DF_INSTR_ENV,
        DF_INSTR_ADD,
        DF_INSTR_COPY,
        DF_INSTR_ENTRYPOINT,
        DF_INSTR_VOLUME,
        DF_INSTR_USER,
        DF_INSTR_WORKDIR,
        DF_INSTR_ARG,
        DF_INSTR_ONBUILD,
        DF_INSTR_STOPSIGNAL,
        DF_INSTR_HEALTHCHECK,
        DF_INSTR_SHELL,
        _DF_INSTR_MAX,
};

/** The instruction's keyword in upper case ("FROM"). */
const char *df_instr_name(enum df_instr_kind kind);

/* A word of an instruction as written (unexpanded). `text` is NULL when absent. */
struct df_word {
        const char *text;
        size_t offset; /* in the node's `original`, for error positions */
};

struct df_kv {
        struct df_word key;
        struct df_word value; /* ARG without "=": text is NULL */
};

enum df_mount_type {
        DF_MOUNT_BIND,
        DF_MOUNT_CACHE,
        DF_MOUNT_TMPFS,
        DF_MOUNT_SECRET,
        DF_MOUNT_SSH,
        _DF_MOUNT_MAX,
};

enum df_mount_sharing {
        DF_SHARING_SHARED,
        DF_SHARING_PRIVATE,
        DF_SHARING_LOCKED,
        _DF_SHARING_MAX,
};

/* A RUN --mount, parsed from its CSV value (after expansion, except `from`). */
struct df_mount {
        enum df_mount_type type;
        const char *from; /* stage name or index, or image; never expanded */
        const char *source;
        const char *target;
        const char *id;
        const char *env; /* secret: the environment variable to set */
        enum df_mount_sharing sharing;
        bool readonly;
        bool required;
        bool has_mode, has_uid, has_gid;
        uint32_t mode, uid, gid;
        int64_t size; /* tmpfs size in bytes; 0 when unset */
};

struct df_run {
        struct df_word *argv; /* exec form: the argv; shell form: one word, the script */
        size_t argc;
        struct df_word *mounts; /* raw --mount values */
        size_t n_mounts;
        struct df_word network;  /* default|none|host */
        struct df_word security; /* sandbox|insecure */
        const struct df_heredoc *heredocs;
        size_t n_heredocs;
};

/* CMD, ENTRYPOINT, SHELL: an argv (exec form) or one shell-form string. */
struct df_cmdline {
        struct df_word *argv;
        size_t argc;
};

/* ENV, LABEL, ARG. */
struct df_kvlist {
        struct df_kv *items;
        size_t n;
};

/* COPY and ADD. With heredocs, sources named by a heredoc take their content from it. */
struct df_copy {
        struct df_word *srcs;
        size_t n_srcs;
        struct df_word dest;
        struct df_word from; /* COPY --from */
        struct df_word chown;
        struct df_word chmod;
        struct df_word checksum; /* ADD --checksum */
        struct df_word *excludes;
        size_t n_excludes;
        bool link;
        bool parents;                      /* COPY --parents */
        bool keep_git_dir;                 /* ADD --keep-git-dir */
        int unpack;                        /* ADD --unpack: -1 unset, 0 false, 1 true */
        const struct df_heredoc *heredocs; /* sources given inline; expanded (and chomped) by
                                            * df_eval_next() */
        size_t n_heredocs;
};

/* EXPOSE and VOLUME. */
struct df_wordlist {
        struct df_word *items;
        size_t n;
};

/* USER, WORKDIR, STOPSIGNAL, MAINTAINER. */
struct df_text {
        struct df_word word;
};

struct df_healthcheck {
        bool none;            /* HEALTHCHECK NONE */
        bool shell;           /* CMD in shell form: the test is CMD-SHELL */
        struct df_word *test; /* the command after CMD */
        size_t n_test;
        int64_t interval_ns, timeout_ns, start_period_ns, start_interval_ns; /* 0: unset */
        int retries;                                                         /* -1: unset */
};

struct df_instr;

struct df_onbuild {
        struct df_instr *trigger; /* the typed trigger, validated */
        const char *expression;   /* the trigger as written, stored in the image config */
};

struct df_instr {
        enum df_instr_kind kind;
        const struct df_node *node;
        bool json; /* exec (JSON) form */
        union {
                struct {
                        struct df_word image;
                        struct df_word name; /* the name after AS, as written */
                        struct df_word platform;
                } from;
                struct df_run run;
                struct df_cmdline cmd;   /* CMD, ENTRYPOINT, SHELL */
                struct df_kvlist kv;     /* ENV, LABEL, ARG */
                struct df_copy copy;     /* COPY, ADD */
                struct df_wordlist list; /* EXPOSE, VOLUME */
                struct df_text text;     /* USER, WORKDIR, STOPSIGNAL, MAINTAINER */
                struct df_onbuild onbuild;
                struct df_healthcheck health;
        };
};

struct df_stage {
        size_t index;
        const char *name; /* lower-cased AS name, or NULL */
        struct df_instr *from;
        struct df_instr *instrs; /* the instructions after FROM */
        size_t n_instrs;
};

/* A Dockerfile as typed instructions grouped into stages. */
struct df_dockerfile {
        struct kiln_arena arena;
        const struct df_syntax *syn; /* borrowed: must outlive this */
        struct df_instr *meta_args;  /* the ARGs before the first FROM */
        size_t n_meta_args;
        struct df_stage *stages;
        size_t n_stages;
};

/**
 * Types and checks every instruction of a syntax tree: known keyword, the flags BuildKit
 * accepts with typed values (booleans, durations, octal modes, mount specs...), argument
 * counts, ONBUILD triggers. Errors are PARSE or INVALID, positioned at the offending word.
 */
int df_dockerfile_new(const struct df_syntax *syn, struct df_dockerfile **ret,
                      struct kiln_error **err);

/** Frees a typed Dockerfile (not its syntax tree); accepts NULL, returns NULL. */
struct df_dockerfile *df_dockerfile_free(struct df_dockerfile *df);

/* An ONBUILD trigger read from a base image's config ("RUN make"), parsed and typed alone. */
struct df_trigger {
        struct df_syntax *syn; /* the expression as a one-line Dockerfile */
        struct kiln_arena arena;
        struct df_instr instr; /* its node lives in `syn` */
};

/**
 * Parses one trigger expression as BuildKit does (a Dockerfile of exactly one instruction,
 * typed with the same rules as ONBUILD's own trigger). PARSE for malformed text, more than one
 * instruction, or FROM, ONBUILD and MAINTAINER, which may not be triggers. Positions in errors
 * refer to the expression (file "ONBUILD trigger"); callers usually replace them. Free with
 * df_trigger_free().
 */
int df_trigger_parse(const char *expression, struct df_trigger **ret, struct kiln_error **err);

/** Frees a trigger; accepts NULL, returns NULL. */
struct df_trigger *df_trigger_free(struct df_trigger *t);

/**
 * Parses a RUN --mount value (BuildKit's CSV form) into `ret`, whose strings are allocated in
 * `arena`. With `vars`, each field's value is expanded first (escape character `escape`);
 * `from=` never is, and may not contain variables.
 */
int df_mount_parse(const char *spec, struct df_vars *vars, char escape, struct kiln_arena *arena,
                   struct df_mount *ret, struct kiln_error **err);

/** Parses a Go duration ("1m30s", "250ms") into nanoseconds. INVALID when malformed. */
int df_parse_duration(const char *s, int64_t *ret_ns, struct kiln_error **err);

/** Checks an EXPOSE port spec ("80", "80/tcp", "8000-8010/udp"). */
int df_check_port(const char *spec, struct kiln_error **err);

/** Checks a STOPSIGNAL value ("SIGTERM", "TERM", "15"); *ret_signo gets the number. */
int df_parse_signal(const char *s, int *ret_signo, struct kiln_error **err);

/** Checks a --chmod value: octal (at most 07777) or symbolic ("u+x,go-w"). */
int df_check_chmod(const char *s, struct kiln_error **err);

/** Checks a platform "os/arch[/variant]" (lower case, no empty parts). */
int df_check_platform(const char *s, struct kiln_error **err);

/* ------------------------------------------------------------------------------------ */
/* Stage graph (parser/graph.c) and ARG/ENV evaluation (parser/eval.c)                    */
/* ------------------------------------------------------------------------------------ */

struct df_graph_opts {
        const char *target;               /* stage name; NULL or "": the last stage */
        const struct df_vars *build_args; /* --build-arg values; may be NULL */
        const char *build_platform;       /* "linux/amd64"; NULL: linux/amd64 */
        const char *target_platform;      /* NULL: the build platform */
};

enum df_base_kind {
        DF_BASE_IMAGE,   /* a registry image reference */
        DF_BASE_SCRATCH, /* FROM scratch */
        DF_BASE_STAGE,   /* an earlier stage */
        DF_BASE_LAYOUT,  /* oci-layout://DIR[:TAG] */
        _DF_BASE_MAX,
};

enum df_edge_kind {
        DF_EDGE_FROM,  /* FROM <stage> */
        DF_EDGE_COPY,  /* COPY --from */
        DF_EDGE_MOUNT, /* RUN --mount from= */
        _DF_EDGE_MAX,
};

/* Something a stage needs: another stage, or an image (stage == SIZE_MAX). */
struct df_edge {
        enum df_edge_kind kind;
        size_t stage;
        const char *image;
        const struct df_instr *instr;
};

struct df_gstage {
        const struct df_stage *stage;
        enum df_base_kind base_kind;
        const char *base;      /* the FROM reference after expansion */
        size_t base_stage;     /* for DF_BASE_STAGE */
        const char *platform;  /* FROM --platform after expansion, or NULL */
        struct df_edge *edges; /* FROM, COPY --from and --mount from= sources */
        size_t n_edges;
        bool needed;   /* the target needs it */
        unsigned wave; /* 1 + the highest wave it needs; 0 when skipped */
};

struct df_graph {
        struct kiln_arena arena;
        const struct df_dockerfile *df; /* borrowed */
        struct df_gstage *stages;
        size_t n_stages;
        size_t target;
        size_t *order; /* the needed stages, each after what it needs */
        size_t n_order;
        unsigned n_waves;
        struct df_vars global;     /* global scope: platform ARGs and the ARGs before FROM */
        struct df_vars build_args; /* a copy of the options' build args */
        char **unused_build_args;  /* --build-arg names no ARG declares */
        size_t n_unused_build_args;
};

/**
 * Builds the stage graph: evaluates the ARGs before the first FROM (with --build-arg
 * overrides and the predefined platform ARGs), expands each FROM and COPY --from in that
 * global scope, resolves stage references (case-insensitive names, indexes), and keeps the
 * stages --target needs. Forward references, self references and unknown targets are errors
 * positioned at the instruction.
 */
int df_graph_new(const struct df_dockerfile *df, const struct df_graph_opts *opts,
                 struct df_graph **ret, struct kiln_error **err);

/** Frees a graph; accepts NULL, returns NULL. */
struct df_graph *df_graph_free(struct df_graph *g);

/** Names for the enums, for output ("image", "COPY --from"). */
const char *df_base_kind_name(enum df_base_kind kind);
const char *df_edge_kind_name(enum df_edge_kind kind);

/* Walks one stage's instructions in order, keeping BuildKit's ARG and ENV scoping, and
 * expands each instruction's words. */
struct df_eval {
        const struct df_graph *graph;
        const struct df_stage *stage;
        size_t next; /* index of the next instruction */
        char escape;
        struct df_vars args;     /* ARGs declared in this stage so far */
        struct df_vars env;      /* the base image's Env, then ENV instructions */
        struct df_vars scope;    /* what the last instruction was expanded with */
        struct kiln_arena arena; /* expanded instructions */
};

/**
 * Starts evaluating stage `stage` of `graph`. `base_env` is the base image's Env list
 * ("K=V" entries, may be NULL).
 */
void df_eval_init(struct df_eval *ev, const struct df_graph *graph, size_t stage,
                  const char *const *base_env, size_t n_base_env);

/**
 * Expands the next instruction into *ret (valid until df_eval_release) and applies ARG and
 * ENV to the scope. Sets *ret to NULL after the last one. Errors are positioned.
 */
int df_eval_next(struct df_eval *ev, const struct df_instr **ret, struct kiln_error **err);

/**
 * Expands an instruction that is not one of the stage's own (an ONBUILD trigger of the base
 * image, from df_trigger_parse()) in the current scope, exactly as df_eval_next() expands the
 * next one, and applies ARG and ENV. `syn` is the tree `in` belongs to, for error positions;
 * NULL leaves errors unpositioned for the caller to place. *ret is valid until df_eval_release.
 */
int df_eval_instr(struct df_eval *ev, const struct df_syntax *syn, const struct df_instr *in,
                  const struct df_instr **ret, struct kiln_error **err);

/** The variables a RUN sees now: proxy build args, the stage's ARGs, then ENV over them. */
void df_eval_run_vars(const struct df_eval *ev, struct df_vars *ret);

void df_eval_release(struct df_eval *ev);

DEFINE_TRIVIAL_CLEANUP_FUNC(struct df_syntax *, df_syntax_free)
DEFINE_TRIVIAL_CLEANUP_FUNC(struct df_ignore *, df_ignore_free)
DEFINE_TRIVIAL_CLEANUP_FUNC(char **, df_strv_free)
DEFINE_TRIVIAL_CLEANUP_FUNC(struct df_dockerfile *, df_dockerfile_free)
DEFINE_TRIVIAL_CLEANUP_FUNC(struct df_trigger *, df_trigger_free)
DEFINE_TRIVIAL_CLEANUP_FUNC(struct df_graph *, df_graph_free)
