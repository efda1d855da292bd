/* kiln context: the files of a build context that a build would see, after .dockerignore. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "builder/cli.h"
#include "builder/common/xalloc.h"

struct context_opts {
        const char *file;
        bool excluded;
};

static const struct option context_options[] = {
        { .name = "file", .has_arg = required_argument, .val = 'f' },
        { .name = "excluded", .has_arg = no_argument, .val = 'x' },
        {},
};

static int context_option(void *state, int opt, const char *arg, struct kiln_error **err)
{
        struct context_opts *o = state;

        switch (opt) {
        case 'f':
                o->file = arg;
                return 0;
        case 'x':
                o->excluded = true;
                return 0;
        default:
                kiln_error_new(err, KILN_ERR_INVALID, "unknown option");
                return CLI_USAGE;
        }
}

struct walk {
        const struct df_ignore *ignore;
        bool show_excluded;
        struct kiln_buf *out;
        size_t n_included, n_excluded;
};

static int cmp_names(const void *a, const void *b)
{
        return strcmp(*(char *const *) a, *(char *const *) b);
}

static void free_names(char **names, size_t n)
{
        size_t i;

        for (i = 0; i < n; i++)
                free(names[i]);
        free(names);
}

/* Sorted entry names of a directory, so the listing does not depend on readdir order. */
static int list_names(int dirfd, const char *shown, char ***ret, size_t *ret_n,
                      struct kiln_error **err)
{
        char **names = NULL;
        size_t n = 0, alloc = 0;
        struct dirent *de;
        DIR *d;
        int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);

        if (fd < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "open '%s'", shown);
        d = fdopendir(fd);
        if (!d) {
                close(fd);
                return kiln_error_errno(err, KILN_ERR_IO, "list '%s'", shown);
        }
        while ((de = readdir(d))) {
                if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                        continue;
                XGROW(names, n + 1, alloc);
                names[n++] = xstrdup(de->d_name);
        }
        closedir(d);
        qsort(names, n, sizeof(*names), cmp_names);
        *ret = names;
        *ret_n = n;
        return 0;
}

/* Walks `dirfd` (the directory `prefix` of the context) without following symlinks. */
static int walk_dir(struct walk *w, int dirfd, const char *prefix, unsigned depth,
                    struct kiln_error **err)
{
        char **names = NULL;
        size_t n = 0, i;
        int r = 0;

        if (depth > 4096)
                return kiln_error_new(err, KILN_ERR_LIMIT, "'%s' is nested too deeply", prefix);
        if (list_names(dirfd, prefix[0] ? prefix : ".", &names, &n, err) < 0)
                return -1;
        for (i = 0; r == 0 && i < n; i++) {
                _cleanup_free_ char *path =
                        prefix[0] ? xasprintf("%s/%s", prefix, names[i]) : xstrdup(names[i]);
                _cleanup_close_ int sub = -1;
                bool excluded = false;
                struct stat st;

                if (fstatat(dirfd, names[i], &st, AT_SYMLINK_NOFOLLOW) < 0) {
                        r = kiln_error_errno(err, KILN_ERR_IO, "stat '%s'", path);
                        break;
                }
                if (df_ignore_matches(w->ignore, path, &excluded, err) < 0) {
                        r = -1;
                        break;
                }
                if (excluded)
                        w->n_excluded++;
                else
                        w->n_included++;
                if (excluded == w->show_excluded)
                        kiln_buf_addf(w->out, NULL, "%s%s\n", path, S_ISDIR(st.st_mode) ? "/" : "");
                /* An excluded directory is only entered when a later "!" pattern may bring
                 * something inside it back. */
                if (!S_ISDIR(st.st_mode) || (excluded && !df_ignore_has_exclusions(w->ignore)))
                        continue;
                sub = openat(dirfd, names[i], O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (sub < 0)
                        r = kiln_error_errno(err, KILN_ERR_IO, "open '%s'", path);
                else
                        r = walk_dir(w, sub, path, depth + 1, err);
        }
        free_names(names, n);
        return r;
}

static int run_context(void *state, char **args, unsigned n_args, struct cli_ctx *ctx,
                       struct kiln_error **err)
{
        struct context_opts *o = state;
        _cleanup_(df_ignore_freep) struct df_ignore *ignore = NULL;
        _cleanup_free_ char *source = NULL, *default_file = NULL;
        const char *context = n_args ? args[0] : ".";
        const char *file = o->file;
        _cleanup_close_ int fd = open(context, O_PATH | O_DIRECTORY | O_CLOEXEC);
        struct walk w = { .show_excluded = o->excluded, .out = &ctx->out };

        if (fd < 0)
                return kiln_error_errno(err, errno == ENOENT ? KILN_ERR_NOTFOUND : KILN_ERR_IO,
                                        "build context '%s'", context);
        if (!file) {
                default_file = xasprintf("%s/Dockerfile", context);
                file = default_file;
        }
        if (df_ignore_load(fd, strcmp(file, "-") == 0 ? NULL : file, &ignore, &source, err) < 0)
                return -1;
        w.ignore = ignore;
        if (walk_dir(&w, fd, "", 0, err) < 0)
                return -1;
        cli_warn(ctx, "%s: %zu included, %zu excluded%s%s", context, w.n_included, w.n_excluded,
                 source ? " by " : " (no .dockerignore)", source ? source : "");
        return 0;
}

const struct cli_verb cli_verb_context = {
        .name = "context",
        .synopsis = "[-f FILE] [--excluded] [CONTEXT]",
        .summary = "list the files of a build context that .dockerignore lets through",
        .help = "Options:\n"
                "  -f, --file FILE   the Dockerfile; FILE.dockerignore beside it takes precedence\n"
                "                    over CONTEXT/.dockerignore\n"
                "  --excluded        list the excluded paths instead\n",
        .options = context_options,
        .shortopts = "f:",
        .min_args = 0,
        .max_args = 1,
        .state_size = sizeof(struct context_opts),
        .option = context_option,
        .run = run_context,
};
