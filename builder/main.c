/*
 * kiln's entry point and its only printer: it picks the verb, parses the verb's options, checks
 * the argument count, runs it, and prints what the verb returned (output, warnings, the error
 * with its source line and a caret). Exit codes: 0 ok, 1 failed, 2 usage error.
 */
#include <fcntl.h>
#include <getopt.h>
#include <locale.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "builder/cli.h"
#include "builder/common/utf8.h"
#include "builder/common/xalloc.h"
#include "kiln-config.h"

static const struct cli_verb *const verbs[] = {
        &cli_verb_build,
        &cli_verb_parse,  &cli_verb_graph,  &cli_verb_context, &cli_verb_import, &cli_verb_images,
        &cli_verb_rmi,    &cli_verb_prune,  &cli_verb_store,   &cli_verb_layer,  &cli_verb_pull,
        &cli_verb_push,   &cli_verb_inspect, &cli_verb_login,  &cli_verb_logout, &cli_verb_unshare,
        &cli_verb_doctor, &cli_verb_version,
};

static const struct cli_verb *find_verb(const char *name)
{
        size_t i;

        for (i = 0; i < ELEMENTSOF(verbs); i++)
                if (strcmp(verbs[i]->name, name) == 0)
                        return verbs[i];
        return NULL;
}

static void print_main_help(FILE *f)
{
        size_t i;

        fprintf(f, "Usage: kiln [--help] [--version] VERB [ARGS...]\n"
                   "\n"
                   "kiln builds OCI images from Dockerfiles, without a daemon and without root.\n"
                   "\n"
                   "Verbs:\n");
        for (i = 0; i < ELEMENTSOF(verbs); i++)
                fprintf(f, "  %-10s %s\n", verbs[i]->name, verbs[i]->summary);
        fprintf(f, "  %-10s %s\n", "help", "show help for a verb");
        fprintf(f, "\nRun 'kiln help VERB' for a verb's options.\n");
}

static void print_verb_help(FILE *f, const struct cli_verb *v)
{
        fprintf(f, "Usage: kiln %s %s\n\n%s\n", v->name, v->synopsis, v->summary);
        if (v->help && v->help[0])
                fprintf(f, "\n%s", v->help);
}

/* Prints the source line an error points into, with a caret under its column. */
static void print_caret(const struct kiln_error *e)
{
        const char *s = e->source_line;
        size_t len, i = 0;
        unsigned col = 1;

        if (!s || !e->line || !e->column)
                return;
        len = strlen(s);
        fprintf(stderr, "%5u | %s\n      | ", e->line, s);
        while (i < len && col < e->column) {
                uint32_t r;
                size_t n = kiln_utf8_decode(s + i, len - i, &r);
                fputc(r == '\t' ? '\t' : ' ', stderr);
                i += n;
                col++;
        }
        fputs("^\n", stderr);
}

static void print_error(const struct kiln_error *e)
{
        _cleanup_free_ char *msg = kiln_error_format(e);

        if (e->file)
                fprintf(stderr, "%s\n", msg);
        else
                fprintf(stderr, "kiln: %s\n", msg);
        print_caret(e);
}

static void print_usage_error(const struct cli_verb *v, const char *msg)
{
        fprintf(stderr, "kiln: %s\n", msg);
        if (v)
                fprintf(stderr, "Usage: kiln %s %s\nRun 'kiln help %s' for more.\n", v->name,
                        v->synopsis, v->name);
        else
                fprintf(stderr, "Run 'kiln --help' for the list of verbs.\n");
}

static int usage_error(const struct cli_verb *v, const char *fmt, ...) _printf_(2, 3);

static int usage_error(const struct cli_verb *v, const char *fmt, ...)
{
        _cleanup_free_ char *msg = NULL;
        va_list ap;

        va_start(ap, fmt);
        msg = xvasprintf(fmt, ap);
        va_end(ap);
        print_usage_error(v, msg);
        return 2;
}

static void print_progress(const char *msg)
{
        fprintf(stderr, "%s\n", msg);
}

/* Reads a line from the terminal with echo off; NULL without a terminal. */
static char *ask_secret(const char *prompt)
{
        _cleanup_close_ int fd = open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC);
        struct termios old, quiet;
        char buf[1024];
        size_t len = 0;
        bool restore;

        if (fd < 0)
                return NULL;
        if (write(fd, prompt, strlen(prompt)) < 0)
                return NULL;
        restore = tcgetattr(fd, &old) == 0;
        if (restore) {
                quiet = old;
                quiet.c_lflag &= ~(tcflag_t) ECHO;
                tcsetattr(fd, TCSAFLUSH, &quiet);
        }
        while (len + 1 < sizeof(buf)) {
                char ch;
                if (read(fd, &ch, 1) != 1 || ch == '\n')
                        break;
                buf[len++] = ch;
        }
        buf[len] = '\0';
        if (restore)
                tcsetattr(fd, TCSAFLUSH, &old);
        if (write(fd, "\n", 1) < 0) {
                /* the answer counts even if the newline could not be shown */
        }
        {
                char *out = xstrdup(buf);
                explicit_bzero(buf, sizeof(buf));
                return out;
        }
}

struct verb_state {
        const struct cli_verb *verb;
        void *state;
};

static void verb_state_release(struct verb_state *vs)
{
        if (vs->verb->release)
                vs->verb->release(vs->state);
        free(vs->state);
}

static int run_verb(const struct cli_verb *v, int argc, char **argv)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        _cleanup_(verb_state_release) struct verb_state vs = {
                .verb = v, .state = xcalloc(1, v->state_size ? v->state_size : 1)
        };
        void *state = vs.state;
        struct option *longopts;
        struct cli_ctx ctx = { .out = KILN_BUF_INIT, .progress = print_progress, .ask_secret = ask_secret };
        size_t n_opts = 0, i;
        unsigned n_args;
        _cleanup_free_ char *shortopts = NULL;
        int r, c;

        /* Every verb takes --help; copy its table and add it. Options may follow arguments
         * (kiln graph . --target x), as with docker. */
        while (v->options && v->options[n_opts].name)
                n_opts++;
        longopts = xcalloc(n_opts + 2, sizeof(*longopts));
        if (n_opts)
                memcpy(longopts, v->options, n_opts * sizeof(*longopts));
        longopts[n_opts] = (struct option){ .name = "help", .has_arg = no_argument, .val = 'h' };
        shortopts = xasprintf(":h%s", v->shortopts ? v->shortopts : "");

        opterr = 0;
        optind = 1;
        while ((c = getopt_long(argc, argv, shortopts, longopts, NULL)) != -1) {
                if (c == 'h') {
                        print_verb_help(stdout, v);
                        free(longopts);
                        return 0;
                }
                if (c == '?') {
                        const char *bad = argv[optind - 1];
                        char shortbuf[3] = { '-', (char) optopt, '\0' };
                        free(longopts);
                        return usage_error(v, "unknown option '%s'", optopt ? shortbuf : bad);
                }
                if (c == ':') {
                        const char *bad = argv[optind - 1];
                        char shortbuf[3] = { '-', (char) optopt, '\0' };
                        free(longopts);
                        return usage_error(v, "option '%s' needs a value",
                                           (optopt && bad[1] != '-') ? shortbuf : bad);
                }
                r = v->option ? v->option(state, c, optarg, &err) : CLI_USAGE;
                if (r < 0) {
                        free(longopts);
                        print_usage_error(v, err ? err->msg : "invalid option");
                        return 2;
                }
        }
        free(longopts);
        n_args = (unsigned) (argc - optind);
        if (n_args < v->min_args)
                return usage_error(v, "'%s' needs more arguments", v->name);
        if (n_args > v->max_args)
                return usage_error(v, "unexpected argument '%s'", argv[optind + v->max_args]);

        r = v->run(state, argv + optind, n_args, &ctx, &err);
        for (i = 0; i < ctx.n_warnings; i++) {
                fprintf(stderr, "%s\n", ctx.warnings[i]);
                free(ctx.warnings[i]);
        }
        free(ctx.warnings);
        if (ctx.out.len)
                fwrite(ctx.out.buf, 1, ctx.out.len, stdout);
        kiln_buf_release(&ctx.out);
        if (fflush(stdout) != 0) {
                fprintf(stderr, "kiln: writing output failed\n");
                return 1;
        }
        if (r == CLI_USAGE) {
                print_usage_error(v, err ? err->msg : "invalid arguments");
                return 2;
        }
        if (r < 0) {
                if (err)
                        print_error(err);
                else
                        fprintf(stderr, "kiln: %s failed\n", v->name);
                return 1;
        }
        return 0;
}

int main(int argc, char **argv)
{
        const struct cli_verb *v;

        /* File names in images are UTF-8 bytes. libarchive converts names between the locale's
         * charset and the UTF-8 of PAX headers, and the C locale's ASCII refuses every non-ASCII
         * name (ca-certificates' links, for one): character types are UTF-8's, whatever the
         * environment says. Messages and collation stay C. */
        if (!setlocale(LC_CTYPE, "C.UTF-8"))
                (void) setlocale(LC_CTYPE, "C.utf8");

        if (argc < 2) {
                print_main_help(stderr);
                return 2;
        }
        if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
                print_main_help(stdout);
                return 0;
        }
        if (strcmp(argv[1], "--version") == 0)
                return run_verb(&cli_verb_version, 1, argv + 1);
        if (strcmp(argv[1], "help") == 0) {
                if (argc == 2) {
                        print_main_help(stdout);
                        return 0;
                }
                if (argc > 3)
                        return usage_error(NULL, "unexpected argument '%s'", argv[3]);
                v = find_verb(argv[2]);
                if (!v)
                        return usage_error(NULL, "unknown verb '%s'", argv[2]);
                print_verb_help(stdout, v);
                return 0;
        }
        if (argv[1][0] == '-')
                return usage_error(NULL, "unknown option '%s'", argv[1]);
        v = find_verb(argv[1]);
        if (!v)
                return usage_error(NULL, "unknown verb '%s'", argv[1]);
        return run_verb(v, argc - 1, argv + 1);
}
