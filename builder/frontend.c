/* The shared Dockerfile front end of the CLI: options, loading, and the host platform. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "builder/cli.h"
#include "builder/common/xalloc.h"

int cli_frontend_option(struct cli_frontend *fe, int opt, const char *arg, struct kiln_error **err)
{
        const char *eq, *env;

        switch (opt) {
        case 'f':
                fe->file = arg;
                return 0;
        case 'T':
                fe->target = arg;
                return 0;
        case 'P':
                if (df_check_platform(arg, err) < 0)
                        return CLI_USAGE;
                fe->platform = arg;
                return 0;
        case 'B':
                eq = strchr(arg, '=');
                if (eq == arg) {
                        kiln_error_new(err, KILN_ERR_INVALID, "--build-arg '%s' has no name", arg);
                        return CLI_USAGE;
                }
                if (eq) {
                        df_vars_setn(&fe->build_args, arg, (size_t) (eq - arg), eq + 1,
                                     strlen(eq + 1));
                        return 0;
                }
                /* docker build: a bare name takes its value from the environment, if set. */
                env = getenv(arg);
                if (env)
                        df_vars_set(&fe->build_args, arg, env);
                return 0;
        default:
                kiln_error_new(err, KILN_ERR_INVALID, "unknown option");
                return CLI_USAGE;
        }
}

const char *cli_host_platform(void)
{
        static const struct {
                const char *machine;
                const char *platform;
        } map[] = {
                { "x86_64", "linux/amd64" },
                { "amd64", "linux/amd64" },
                { "aarch64", "linux/arm64" },
                { "arm64", "linux/arm64" },
                { "armv7l", "linux/arm/v7" },
                { "armv6l", "linux/arm/v6" },
                { "i686", "linux/386" },
                { "i386", "linux/386" },
                { "ppc64le", "linux/ppc64le" },
                { "s390x", "linux/s390x" },
                { "riscv64", "linux/riscv64" },
                { "mips64", "linux/mips64" },
                { "loongarch64", "linux/loong64" },
        };
        struct utsname u;
        size_t i;

        if (uname(&u) == 0)
                for (i = 0; i < ELEMENTSOF(map); i++)
                        if (strcmp(u.machine, map[i].machine) == 0)
                                return map[i].platform;
        return "linux/amd64";
}

void cli_report_parse_warnings(const struct df_syntax *syn, struct cli_ctx *ctx)
{
        size_t i;

        for (i = 0; i < syn->n_warnings; i++) {
                _cleanup_free_ char *w = cli_format_position(
                        syn->warnings[i].line ? syn->filename : NULL, syn->warnings[i].line,
                        syn->warnings[i].column, syn->warnings[i].msg);
                cli_warn(ctx, "warning: %s", w);
        }
}

int cli_frontend_load(struct cli_frontend *fe, const char *context, struct cli_ctx *ctx,
                      struct kiln_error **err)
{
        _cleanup_free_ char *text = NULL;
        _cleanup_free_ char *default_path = NULL;
        const char *path = fe->file;
        struct df_graph_opts gopts = {
                .target = fe->target,
                .build_args = &fe->build_args,
                .build_platform = cli_host_platform(),
                .target_platform = fe->platform,
        };
        size_t len;

        fe->context_fd = open(context, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (fe->context_fd < 0)
                return kiln_error_errno(err, errno == ENOENT ? KILN_ERR_NOTFOUND : KILN_ERR_IO,
                                        "build context '%s'", context);
        if (!path) {
                default_path = xasprintf("%s/Dockerfile", context);
                path = default_path;
        }
        if (fe->file_source)
                path = fe->file_label;
        fe->dockerfile_name = xstrdup(path);
        if (cli_read_dockerfile(fe->file_source ? fe->file_source : path, &text, &len, err) < 0)
                return -1;
        if (df_parse(path, text, len, &fe->syn, err) < 0)
                return -1;
        cli_report_parse_warnings(fe->syn, ctx);
        if (df_dockerfile_new(fe->syn, &fe->df, err) < 0)
                return -1;
        if (df_ignore_load(fe->context_fd, strcmp(path, "-") == 0 ? NULL : path, &fe->ignore,
                           &fe->ignore_source, err) < 0)
                return -1;
        return df_graph_new(fe->df, &gopts, &fe->graph, err);
}

void cli_frontend_release(struct cli_frontend **pfe)
{
        struct cli_frontend *fe = *pfe;

        if (!fe)
                return;
        fe->graph = df_graph_free(fe->graph);
        fe->df = df_dockerfile_free(fe->df);
        fe->syn = df_syntax_free(fe->syn);
        fe->ignore = df_ignore_free(fe->ignore);
        free(fe->ignore_source);
        fe->ignore_source = NULL;
        free(fe->dockerfile_name);
        fe->dockerfile_name = NULL;
        if (fe->context_fd > 0)
                close(fe->context_fd);
        fe->context_fd = -1;
        df_vars_release(&fe->build_args);
}
