/*
 * kiln login: checks credentials against a registry, then saves them where docker and podman
 * look (the docker config, or its credential helper). The password comes from stdin
 * (--password-stdin), the terminal, or -p; it never reaches output or error messages.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "builder/cli.h"
#include "builder/common/fd-util.h"
#include "builder/common/xalloc.h"
#include "registry/registry.h"

struct login_opts {
        const char *username;
        const char *password;
        bool password_stdin;
        struct cli_registry reg;
};

static const struct option login_options[] = {
        CLI_REGISTRY_OPTIONS,
        { .name = "username", .has_arg = required_argument, .val = 'u' },
        { .name = "password", .has_arg = required_argument, .val = 'p' },
        { .name = "password-stdin", .has_arg = no_argument, .val = 'S' },
        {},
};

static int login_option(void *state, int opt, const char *arg, struct kiln_error **err)
{
        struct login_opts *o = state;
        int r = cli_registry_option(&o->reg, opt, arg, err);

        if (r != 0)
                return r < 0 ? r : 0;
        switch (opt) {
        case 'u':
                o->username = arg;
                return 0;
        case 'p':
                o->password = arg;
                return 0;
        case 'S':
                o->password_stdin = true;
                return 0;
        default:
                kiln_error_new(err, KILN_ERR_INVALID, "unknown option");
                return CLI_USAGE;
        }
}

/* The password from stdin: everything, without the trailing newline(s). */
static int read_password_stdin(char **ret, struct kiln_error **err)
{
        char *data;
        size_t len;

        if (kiln_read_fd_all(STDIN_FILENO, 64 << 10, &data, &len, err) < 0)
                return kiln_error_wrap(err, "reading the password from stdin");
        while (len && (data[len - 1] == '\n' || data[len - 1] == '\r'))
                data[--len] = '\0';
        *ret = data;
        return 0;
}

static void wipe_free(char *s)
{
        if (s) {
                explicit_bzero(s, strlen(s));
                free(s);
        }
}

static int run_login(void *state, char **args, unsigned n_args, struct cli_ctx *ctx,
                     struct kiln_error **err)
{
        struct login_opts *o = state;
        _cleanup_(reg_client_freep) struct reg_client *client = NULL;
        _cleanup_free_ char *host = NULL;
        char *password = NULL;
        int r = -1;

        if (cli_registry_host(n_args ? args[0] : NULL, &host, err) < 0)
                return CLI_USAGE;
        if (!o->username || !*o->username) {
                kiln_error_new(err, KILN_ERR_INVALID, "give the user name with -u USER");
                return CLI_USAGE;
        }
        if (o->password && o->password_stdin) {
                kiln_error_new(err, KILN_ERR_INVALID, "--password and --password-stdin both give the password; give one");
                return CLI_USAGE;
        }
        if (o->password_stdin) {
                if (read_password_stdin(&password, err) < 0)
                        return -1;
        } else if (o->password) {
                cli_warn(ctx, "warning: a password on the command line is visible to other users; use --password-stdin");
                password = xstrdup(o->password);
        } else if (ctx->ask_secret) {
                password = ctx->ask_secret("Password: ");
        }
        if (!password || !*password) {
                wipe_free(password);
                kiln_error_new(err, KILN_ERR_INVALID, "no password: pipe it to --password-stdin");
                return CLI_USAGE;
        }
        if (cli_registry_client(&o->reg, ctx, &client, err) < 0)
                goto out;
        if (reg_login_check(client, host, o->username, password, err) < 0) {
                kiln_error_wrap(err, "login to %s", host);
                goto out;
        }
        if (reg_credentials_store(host, o->username, password, err) < 0)
                goto out;
        r = kiln_buf_addf(&ctx->out, err, "Login Succeeded\n");
out:
        wipe_free(password);
        return r;
}

static void release_login(void *state)
{
        struct login_opts *o = state;

        cli_registry_release(&o->reg);
}

const struct cli_verb cli_verb_login = {
        .name = "login",
        .synopsis = "[OPTIONS] [HOST]",
        .summary = "check and save credentials for a registry",
        .help = "HOST defaults to docker.io. Credentials are saved in $DOCKER_CONFIG/config.json\n"
                "(default ~/.docker/config.json), through its credsStore or credHelpers when set.\n"
                "\n"
                "Options:\n"
                "  -u, --username USER       the user name\n"
                "  --password-stdin          read the password from stdin\n"
                "  -p, --password PASSWORD   the password (visible to other users; avoid)\n" CLI_REGISTRY_HELP,
        .options = login_options,
        .shortopts = "j:qu:p:",
        .min_args = 0,
        .max_args = 1,
        .state_size = sizeof(struct login_opts),
        .option = login_option,
        .run = run_login,
        .release = release_login,
};
