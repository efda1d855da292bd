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

/* Returned by an option handler or a verb for a usage error (exit code 2). */
#define CLI_USAGE (-2)

struct cli_ctx {
        struct kiln_buf out;   /* printed to stdout after the verb returns */
        char **warnings;       /* printed to stderr, each on its own line */
        size_t n_warnings, alloc_warnings;
};

/** Records a warning for main.c to print. */
void cli_warn(struct cli_ctx *ctx, const char *fmt, ...) _printf_(2, 3);

struct cli_verb {
        const char *name;
        const char *synopsis;     /* arguments, e.g. "[--dump] FILE|-" */
        const char *summary;      /* one line for `kiln --help` */
        const char *help;         /* the options and what the verb does */
        const struct option *options;
        const char *shortopts;
        unsigned min_args, max_args;
        size_t state_size;        /* the verb's option state, zeroed and passed around */
        /** Takes one parsed option; returns 0, or CLI_USAGE with *err set. */
        int (*option)(void *state, int opt, const char *arg, struct kiln_error **err);
        /** Runs the verb; returns 0, -1 (failure, exit 1) or CLI_USAGE. */
        int (*run)(void *state, char **args, unsigned n_args, struct cli_ctx *ctx,
                   struct kiln_error **err);
};

extern const struct cli_verb cli_verb_version;
extern const struct cli_verb cli_verb_parse;
extern const struct cli_verb cli_verb_graph;

/** Reads a Dockerfile from a path or "-" (stdin); at most 16 MiB. */
int cli_read_dockerfile(const char *path, char **ret_text, size_t *ret_len, struct kiln_error **err);

/** Formats a positioned warning or error "FILE:LINE:COL: msg". */
char *cli_format_position(const char *file, unsigned line, unsigned column, const char *msg);
