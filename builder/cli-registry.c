/* The options pull, push, inspect and login share, and the registry client they make. */
#include <stdlib.h>
#include <string.h>

#include "builder/cli.h"
#include "builder/common/xalloc.h"
#include "registry/registry.h"

int cli_registry_option(struct cli_registry *o, int opt, const char *arg, struct kiln_error **err)
{
        char *end;
        unsigned long n;

        switch (opt) {
        case 0x100:
                if (!*arg || strchr(arg, '/')) {
                        kiln_error_new(err, KILN_ERR_INVALID, "--insecure-registry wants a host[:port], not '%s'",
                                       arg);
                        return CLI_USAGE;
                }
                o->insecure = xrealloc(o->insecure, (o->n_insecure + 1) * sizeof(char *));
                o->insecure[o->n_insecure++] = arg;
                return 1;
        case 0x101:
                o->registries_conf = arg;
                return 1;
        case 0x102:
                o->certs_dir = arg;
                return 1;
        case 'j':
                n = strtoul(arg, &end, 10);
                if (*arg < '0' || *arg > '9' || *end || n == 0 || n > 32) {
                        kiln_error_new(err, KILN_ERR_INVALID, "--jobs wants a number from 1 to 32, not '%s'", arg);
                        return CLI_USAGE;
                }
                o->jobs = (unsigned) n;
                return 1;
        case 'q':
                o->quiet = true;
                return 1;
        default:
                return 0;
        }
}

static void progress_to_ctx(void *c, const char *msg)
{
        struct cli_ctx *ctx = c;

        if (ctx->progress)
                ctx->progress(msg);
}

int cli_registry_client(const struct cli_registry *o, struct cli_ctx *ctx, struct reg_client **ret,
                        struct kiln_error **err)
{
        struct reg_client_opts opts = {
                .insecure = o->insecure,
                .n_insecure = o->n_insecure,
                .certs_dirs = o->certs_dir,
                .registries_conf = o->registries_conf,
                .parallel = o->jobs,
                .progress = o->quiet ? NULL : progress_to_ctx,
                .progress_ctx = ctx,
        };

        return reg_client_new(&opts, ret, err);
}

void cli_registry_release(struct cli_registry *o)
{
        free(o->insecure);
        o->insecure = NULL;
        o->n_insecure = 0;
}

char *cli_local_image_name(struct layer_store *store, const char *name)
{
        struct layer_ref ref = { 0 };
        struct reg_ref r = { 0 };
        char *normal;

        if (layer_store_resolve(store, name, &ref, NULL) == 0) {
                layer_ref_release(&ref);
                return xstrdup(name);
        }
        if (reg_ref_parse(name, &r, NULL) < 0)
                return xstrdup(name);
        normal = reg_ref_string(&r);
        reg_ref_release(&r);
        if (layer_store_resolve(store, normal, &ref, NULL) == 0) {
                layer_ref_release(&ref);
                return normal;
        }
        free(normal);
        return xstrdup(name); /* the error will name it as the user wrote it */
}

int cli_registry_host(const char *arg, char **ret, struct kiln_error **err)
{
        const char *s = arg ? arg : "docker.io";
        size_t n;
        char *host;

        if (strncmp(s, "https://", 8) == 0)
                s += 8;
        else if (strncmp(s, "http://", 7) == 0)
                s += 7;
        n = strcspn(s, "/");
        if (n == 0 || s[strcspn(s, " \t\n@")] != '\0') {
                kiln_error_new(err, KILN_ERR_INVALID, "'%s' is not a registry host", arg);
                return CLI_USAGE;
        }
        host = xstrndup(s, n);
        if (strcmp(host, "index.docker.io") == 0 || strcmp(host, "registry-1.docker.io") == 0) {
                free(host);
                host = xstrdup("docker.io");
        }
        *ret = host;
        return 0;
}
