/*
 * The CLI's verb table. Each builder/cmd-<verb>.c defines one `struct cli_verb`; main.c
 * parses options with getopt_long, checks the positional count, runs the verb, and is the only
 * place that prints: verbs return their output in `cli_ctx`.
 */
#pragma once

#include <getopt.h>
#include <stdbool.h>
#include <stddef.h>

#include "builder/common/error.h"
#include "builder/common/strbuf.h"
#include "layers/layers.h"
#include "parser/parser.h"

/* Returned by an option handler or a verb for a usage error (exit code 2). */
#define CLI_USAGE (-2)

struct cli_ctx {
        struct kiln_buf out; /* printed to stdout after the verb returns */
        char **warnings;     /* printed to stderr, each on its own line */
        size_t n_warnings, alloc_warnings;
        /** Prints a progress line to stderr at once (main.c's printer); for long verbs. */
        void (*progress)(const char *msg);
        /** Asks the terminal for a secret without echo (main.c's); NULL when there is no
         * terminal. The caller wipes and frees the answer. */
        char *(*ask_secret)(const char *prompt);
};

/** Records a warning for main.c to print. */
void cli_warn(struct cli_ctx *ctx, const char *fmt, ...) _printf_(2, 3);

struct cli_verb {
        const char *name;
        const char *synopsis; /* arguments, e.g. "[--dump] FILE|-" */
        const char *summary;  /* one line for `kiln --help` */
        const char *help;     /* the options and what the verb does */
        const struct option *options;
        const char *shortopts;
        unsigned min_args, max_args;
        size_t state_size; /* the verb's option state, zeroed and passed around */
        /** Takes one parsed option; returns 0, or CLI_USAGE with *err set. */
        int (*option)(void *state, int opt, const char *arg, struct kiln_error **err);
        /** Runs the verb; returns 0, -1 (failure, exit 1) or CLI_USAGE. */
        int (*run)(void *state, char **args, unsigned n_args, struct cli_ctx *ctx,
                   struct kiln_error **err);
        /** Frees what the options allocated; main.c calls it whatever happened. May be NULL. */
        void (*release)(void *state);
};

/*
 * The front-end options every verb that reads a Dockerfile shares (docker buildx build's
 * spelling), and what loading them produces.
 */
struct cli_frontend {
        const char *file;          /* -f/--file: path or "-" */
        const char *target;        /* --target */
        const char *platform;      /* --platform */
        const char *file_source;   /* read the Dockerfile from here instead (a spooled stdin), */
        const char *file_label;    /* naming it this in messages */
        struct df_vars build_args; /* --build-arg */
        /* filled by cli_frontend_load() */
        char *dockerfile_name; /* as shown in messages */
        int context_fd;        /* O_PATH directory fd of the context, or -1 */
        struct df_syntax *syn;
        struct df_dockerfile *df;
        struct df_graph *graph;
        struct df_ignore *ignore;
        char *ignore_source; /* the .dockerignore used, or NULL */
};

#define CLI_FRONTEND_OPTIONS                                                       \
        { .name = "file", .has_arg = required_argument, .val = 'f' },              \
                { .name = "target", .has_arg = required_argument, .val = 'T' },    \
                { .name = "build-arg", .has_arg = required_argument, .val = 'B' }, \
        {                                                                          \
                .name = "platform", .has_arg = required_argument, .val = 'P'       \
        }

#define CLI_FRONTEND_HELP                                                                        \
        "Options:\n"                                                                             \
        "  -f, --file FILE        the Dockerfile (default: CONTEXT/Dockerfile; - for stdin)\n"   \
        "  --target STAGE         build only what STAGE needs (default: the last stage)\n"       \
        "  --build-arg K[=V]      set a build argument (K alone takes V from the environment)\n" \
        "  --platform OS/ARCH     the target platform (default: the host's)\n"

/** Takes one of CLI_FRONTEND_OPTIONS; CLI_USAGE for a bad value or another option. */
int cli_frontend_option(struct cli_frontend *fe, int opt, const char *arg, struct kiln_error **err);

/**
 * Opens the context, reads and parses the Dockerfile, types its instructions, loads the
 * .dockerignore and builds the stage graph. Parser warnings go to `ctx`.
 */
int cli_frontend_load(struct cli_frontend *fe, const char *context, struct cli_ctx *ctx,
                      struct kiln_error **err);

/** Hands the parser's warnings (positioned) to main.c through `ctx`. */
void cli_report_parse_warnings(const struct df_syntax *syn, struct cli_ctx *ctx);

/** Frees what cli_frontend_load() made and the build args. For _cleanup_ on a pointer. */
void cli_frontend_release(struct cli_frontend **fe);

/** The host's platform in OCI terms ("linux/amd64", "linux/arm64", "linux/arm/v7"). */
const char *cli_host_platform(void);

/* --root DIR: where the local store is (also KILN_ROOT). */
#define CLI_ROOT_OPTION                                                  \
        {                                                                \
                .name = "root", .has_arg = required_argument, .val = 'R' \
        }
#define CLI_ROOT_HELP                                                                           \
        "  --root DIR             the local store (default: $KILN_ROOT, else /var/lib/kiln as " \
        "root,\n"                                                                               \
        "                         else ${XDG_DATA_HOME:-~/.local/share}/kiln)\n"

/** Opens the local store at `root`, or $KILN_ROOT, or the default. */
int cli_open_store(const char *root, struct layer_store **ret, struct kiln_error **err);

/** Parses --compression gzip|zstd|none; CLI_USAGE with *err set when unknown. */
int cli_parse_compression(const char *arg, enum layer_compression *ret, struct kiln_error **err);

/** Writes a small file whole or not at all (a temporary file renamed over it). */
int cli_write_file(const char *path, const char *text, struct kiln_error **err);

/** Formats a byte count for people ("12.3MB", "512B"). */
void cli_human_size(uint64_t bytes, char buf[32]);

/*
 * The registry options of pull, push, inspect and login: --insecure-registry HOST (repeatable),
 * --registries-conf FILE, --cert-dir DIR, --jobs N, -q/--quiet.
 */
struct cli_registry {
        const char **insecure;
        size_t n_insecure;
        const char *registries_conf;
        const char *certs_dir;
        unsigned jobs;
        bool quiet;
};

/* How to reach registries (also for kiln build's pulls and pushes). */
#define CLI_REGISTRY_CONN_OPTIONS                                                          \
        { .name = "insecure-registry", .has_arg = required_argument, .val = 0x100 },       \
                { .name = "registries-conf", .has_arg = required_argument, .val = 0x101 }, \
        {                                                                                  \
                .name = "cert-dir", .has_arg = required_argument, .val = 0x102             \
        }

#define CLI_REGISTRY_OPTIONS                                                  \
        CLI_REGISTRY_CONN_OPTIONS,                                            \
                { .name = "jobs", .has_arg = required_argument, .val = 'j' }, \
        {                                                                     \
                .name = "quiet", .has_arg = no_argument, .val = 'q'           \
        }

#define CLI_REGISTRY_CONN_HELP                                                                     \
        "  --insecure-registry HOST  reach HOST over plain http or unverified TLS (repeatable)\n" \
        "  --registries-conf FILE    mirrors and insecure hosts (default: $KILN_REGISTRIES_CONF,\n" \
        "                            ~/.config/kiln/registries.conf, /etc/kiln/registries.conf)\n" \
        "  --cert-dir DIR            certs.d-style CA and client certificates (HOST/*.crt,\n"      \
        "                            *.cert, *.key; default: /etc/docker/certs.d and\n"           \
        "                            /etc/containers/certs.d)\n"

#define CLI_REGISTRY_HELP                                                          \
        CLI_REGISTRY_CONN_HELP                                                     \
        "  -j, --jobs N              blobs transferred at once (default: 4)\n" \
        "  -q, --quiet               no progress on stderr\n"

/** Takes one of CLI_REGISTRY_OPTIONS: 1 when it was one, 0 when not, CLI_USAGE when bad. */
int cli_registry_option(struct cli_registry *o, int opt, const char *arg, struct kiln_error **err);

struct reg_client;

/** A registry client with these options, reporting progress through `ctx` unless quiet. */
int cli_registry_client(const struct cli_registry *o, struct cli_ctx *ctx, struct reg_client **ret,
                        struct kiln_error **err);

void cli_registry_release(struct cli_registry *o);

/** A registry host as login and logout take it ("https://index.docker.io/v1/" and no argument
 * are "docker.io"); CLI_USAGE when it is not one. */
int cli_registry_host(const char *arg, char **ret, struct kiln_error **err);

/** The store's name for an image given as on the command line: the name itself when the store
 * has it, else its normalised reference ("busybox" -> "docker.io/library/busybox:latest"). */
char *cli_local_image_name(struct layer_store *store, const char *name);

extern const struct cli_verb cli_verb_version;
extern const struct cli_verb cli_verb_parse;
extern const struct cli_verb cli_verb_graph;
extern const struct cli_verb cli_verb_context;
extern const struct cli_verb cli_verb_images;
extern const struct cli_verb cli_verb_rmi;
extern const struct cli_verb cli_verb_prune;
extern const struct cli_verb cli_verb_store;
extern const struct cli_verb cli_verb_import;
extern const struct cli_verb cli_verb_layer;
extern const struct cli_verb cli_verb_pull;
extern const struct cli_verb cli_verb_push;
extern const struct cli_verb cli_verb_inspect;
extern const struct cli_verb cli_verb_login;
extern const struct cli_verb cli_verb_logout;
extern const struct cli_verb cli_verb_build;
extern const struct cli_verb cli_verb_unshare;
extern const struct cli_verb cli_verb_doctor;

/** Reads a Dockerfile from a path or "-" (stdin); at most 16 MiB. */
int cli_read_dockerfile(const char *path, char **ret_text, size_t *ret_len,
                        struct kiln_error **err);

/** Formats a positioned warning or error "FILE:LINE:COL: msg". */
char *cli_format_position(const char *file, unsigned line, unsigned column, const char *msg);
