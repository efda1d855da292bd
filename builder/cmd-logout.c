/* kiln logout: removes a registry's saved credentials (from the docker config and its helper). */
#include <stdlib.h>

#include "builder/cli.h"
#include "builder/common/xalloc.h"
#include "registry/registry.h"

static int run_logout(void *state, char **args, unsigned n_args, struct cli_ctx *ctx,
                      struct kiln_error **err)
{
        _cleanup_free_ char *host = NULL;
        struct kiln_error *e = NULL;

        if (cli_registry_host(n_args ? args[0] : NULL, &host, err) < 0)
                return CLI_USAGE;
        if (reg_credentials_erase(host, &e) < 0) {
                if (e->kind != KILN_ERR_NOTFOUND) {
                        *err = e;
                        return -1;
                }
                kiln_error_free(e);
                /* As docker: not an error, there is nothing to undo. */
                return kiln_buf_addf(&ctx->out, err, "Not logged in to %s\n", host);
        }
        return kiln_buf_addf(&ctx->out, err, "Removing login credentials for %s\n", host);
}

const struct cli_verb cli_verb_logout = {
        .name = "logout",
        .synopsis = "[HOST]",
        .summary = "remove saved credentials for a registry",
        .help = "HOST defaults to docker.io.\n",
        .min_args = 0,
        .max_args = 1,
        .run = run_logout,
};
