/*
 * kiln unshare -- CMD...: runs a command in the user namespace rootless builds use (root in it,
 * the caller's /etc/subuid ranges mapped), as `podman unshare` does: the way to look at or remove
 * files a rootless build left owned by subordinate ids (a store's unpacked images).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "builder/builder-internal.h"
#include "builder/cli.h"
#include "builder/common/xalloc.h"

static int exec_command(void *ctx, int unused, struct kiln_error **err)
{
        char **argv = ctx;
        pid_t pid = fork();
        int st;

        if (pid < 0)
                return kiln_error_errno(err, KILN_ERR_CHILD, "fork");
        if (pid == 0) {
                execvp(argv[0], argv);
                _exit(127);
        }
        while (waitpid(pid, &st, 0) < 0)
                if (errno != EINTR)
                        return kiln_error_errno(err, KILN_ERR_CHILD, "wait for '%s'", argv[0]);
        if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
                return 0;
        if (WIFEXITED(st) && WEXITSTATUS(st) == 127)
                return kiln_error_new(err, KILN_ERR_CHILD, "'%s' could not be run", argv[0]);
        return kiln_error_new(err, KILN_ERR_CHILD, "'%s' failed (%s %d)", argv[0],
                              WIFEXITED(st) ? "exit code" : "signal",
                              WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
}

static int run_unshare(void *state, char **args, unsigned n_args, struct cli_ctx *ctx, struct kiln_error **err)
{
        _cleanup_free_ char **argv = xcalloc(n_args + 1, sizeof(char *));
        struct sb_idmap *u = NULL, *g = NULL;
        struct sb_env env = { .isolation = geteuid() == 0 ? SB_ISOLATION_ROOT : SB_ISOLATION_USERNS };
        size_t nu = 0, ng = 0;
        unsigned i;
        int r;

        for (i = 0; i < n_args; i++)
                argv[i] = args[i];
        if (env.isolation == SB_ISOLATION_USERNS) {
                sb_subid_maps(&u, &nu, &g, &ng);
                env.uid_map = u;
                env.n_uid_map = nu;
                env.gid_map = g;
                env.n_gid_map = ng;
        }
        r = sb_unshare(&env, exec_command, argv, err);
        free(u);
        free(g);
        return r;
}

const struct cli_verb cli_verb_unshare = {
        .name = "unshare",
        .synopsis = "-- COMMAND [ARGS...]",
        .summary = "run a command in the user namespace of rootless builds",
        .help = "As `podman unshare`: root inside, the caller's /etc/subuid and /etc/subgid ranges\n"
                "mapped, so files a rootless build made with other owners can be read or removed:\n"
                "  kiln unshare -- rm -rf ~/.local/share/kiln\n",
        .min_args = 1,
        .max_args = 4096,
        .run = run_unshare,
};
