/*
 * kiln inspect: what a registry holds under a reference, without pulling it. By default a JSON
 * summary like `skopeo inspect` (the platform's manifest and its config); --raw prints the
 * manifest or index exactly as the registry sent it, --config the image config.
 */
#include <string.h>

#include "builder/cli.h"
#include "builder/common/json-util.h"
#include "builder/common/xalloc.h"
#include "registry/registry.h"

struct inspect_opts {
        const char *platform;
        bool raw, config;
        struct cli_registry reg;
};

static const struct option inspect_options[] = {
        CLI_REGISTRY_OPTIONS,
        { .name = "platform", .has_arg = required_argument, .val = 'P' },
        { .name = "raw", .has_arg = no_argument, .val = 'r' },
        { .name = "config", .has_arg = no_argument, .val = 'c' },
        {},
};

static int inspect_option(void *state, int opt, const char *arg, struct kiln_error **err)
{
        struct inspect_opts *o = state;
        int r = cli_registry_option(&o->reg, opt, arg, err);

        if (r != 0)
                return r < 0 ? r : 0;
        switch (opt) {
        case 'P':
                if (df_check_platform(arg, err) < 0)
                        return CLI_USAGE;
                o->platform = arg;
                return 0;
        case 'r':
                o->raw = true;
                return 0;
        case 'c':
                o->config = true;
                return 0;
        default:
                kiln_error_new(err, KILN_ERR_INVALID, "unknown option");
                return CLI_USAGE;
        }
}

static void copy_field(json_t *to, const char *to_key, json_t *from, const char *key)
{
        json_t *v = json_object_get(from, key);

        if (v && !json_is_null(v))
                json_object_set(to, to_key, v);
}

/* The summary: name, digests, platform, layers and the config's run settings. */
static int summary(const char *name, const struct reg_manifest *m, struct cli_ctx *ctx, struct kiln_error **err)
{
        _cleanup_json_ json_t *manifest = kiln_json_loadb(m->body, m->len, "manifest", err);
        _cleanup_json_ json_t *config = NULL, *out = json_object();
        json_t *layers = json_array(), *layers_data = json_array(), *run;
        _cleanup_free_ char *text = NULL;
        size_t i;

        if (!manifest) {
                json_decref(layers);
                json_decref(layers_data);
                return -1;
        }
        config = kiln_json_loadb(m->config, m->config_len, "image config", err);
        if (!config) {
                json_decref(layers);
                json_decref(layers_data);
                return -1;
        }
        run = json_object_get(config, "config");
        json_object_set_new(out, "Name", json_string(name));
        json_object_set_new(out, "Digest", json_string(m->digest));
        if (m->index_digest[0])
                json_object_set_new(out, "IndexDigest", json_string(m->index_digest));
        json_object_set_new(out, "MediaType", json_string(m->media_type));
        copy_field(out, "Created", config, "created");
        copy_field(out, "Os", config, "os");
        copy_field(out, "Architecture", config, "architecture");
        copy_field(out, "Variant", config, "variant");
        for (i = 0; i < json_array_size(json_object_get(manifest, "layers")); i++) {
                json_t *l = json_array_get(json_object_get(manifest, "layers"), i);
                json_array_append(layers, json_object_get(l, "digest"));
                json_array_append_new(layers_data, json_pack("{s:O?, s:O?, s:O?}", "MIMEType",
                                                             json_object_get(l, "mediaType"), "Digest",
                                                             json_object_get(l, "digest"), "Size",
                                                             json_object_get(l, "size")));
        }
        json_object_set_new(out, "Layers", layers);
        json_object_set_new(out, "LayersData", layers_data);
        copy_field(out, "Env", run, "Env");
        copy_field(out, "Entrypoint", run, "Entrypoint");
        copy_field(out, "Cmd", run, "Cmd");
        copy_field(out, "WorkingDir", run, "WorkingDir");
        copy_field(out, "User", run, "User");
        copy_field(out, "ExposedPorts", run, "ExposedPorts");
        copy_field(out, "Labels", run, "Labels");
        text = json_dumps(out, JSON_INDENT(4) | JSON_PRESERVE_ORDER);
        if (!text)
                return kiln_error_new(err, KILN_ERR_GENERIC, "cannot format the summary");
        return kiln_buf_addf(&ctx->out, err, "%s\n", text);
}

static int run_inspect(void *state, char **args, unsigned n_args, struct cli_ctx *ctx,
                       struct kiln_error **err)
{
        struct inspect_opts *o = state;
        _cleanup_(reg_client_freep) struct reg_client *client = NULL;
        struct reg_manifest m;
        struct reg_ref ref = { 0 };
        _cleanup_free_ char *name = NULL;
        int r;

        if (o->raw && o->config) {
                kiln_error_new(err, KILN_ERR_INVALID, "--raw and --config show different things; give one");
                return CLI_USAGE;
        }
        if (reg_ref_parse(args[0], &ref, err) < 0)
                return CLI_USAGE;
        name = reg_ref_repository(&ref);
        reg_ref_release(&ref);
        o->reg.quiet = true; /* one request or three: no progress */
        if (cli_registry_client(&o->reg, ctx, &client, err) < 0)
                return -1;
        /* --raw shows what the reference names, byte for byte (an index stays an index unless
         * --platform is given), so its sha256 is the digest. */
        if (reg_inspect(client, args[0], o->raw ? o->platform : (o->platform ? o->platform : cli_host_platform()),
                        !o->raw, &m, err) < 0)
                return -1;
        if (o->raw)
                r = kiln_buf_add(&ctx->out, m.body, m.len, err);
        else if (o->config)
                r = kiln_buf_add(&ctx->out, m.config, m.config_len, err);
        else
                r = summary(name, &m, ctx, err);
        reg_manifest_release(&m);
        return r;
}

static void release_inspect(void *state)
{
        struct inspect_opts *o = state;

        cli_registry_release(&o->reg);
}

const struct cli_verb cli_verb_inspect = {
        .name = "inspect",
        .synopsis = "[OPTIONS] REFERENCE",
        .summary = "show an image in a registry without pulling it",
        .help = "Options:\n"
                "  --raw                     print the manifest (or index) exactly as the registry\n"
                "                            sent it\n"
                "  --config                  print the image config\n"
                "  --platform OS/ARCH[/VARIANT]  the image to take from a multi-platform index\n"
                "                            (default: the host's)\n" CLI_REGISTRY_HELP,
        .options = inspect_options,
        .shortopts = "j:q",
        .min_args = 1,
        .max_args = 1,
        .state_size = sizeof(struct inspect_opts),
        .option = inspect_option,
        .run = run_inspect,
        .release = release_inspect,
};
