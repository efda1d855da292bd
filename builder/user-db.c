/*
 * USER and --chown specs resolved against an image's /etc/passwd and /etc/group, with the rules of
 * Docker (moby/sys/user GetExecUser): a numeric user needs no passwd entry, the first matching
 * entry wins, an explicit group replaces the user's gid, and supplementary groups are only
 * looked up when no group was given. Both files are read inside the image root (RESOLVE_IN_ROOT),
 * so a symlinked /etc/passwd never reads the host's.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "builder/builder-internal.h"
#include "builder/common/fd-util.h"
#include "builder/common/xalloc.h"

/* passwd and group files are a few KiB; a bigger one is hostile, not a database. */
#define USER_DB_MAX (16u << 20)
/* Docker's range for ids (moby/sys/user minID/maxID) and the kernel's NGROUPS_MAX. */
#define USER_ID_MAX     INT32_MAX
#define USER_GROUPS_MAX 65536

struct user_spec {
        const char *user, *group; /* group NULL when the spec has none */
        bool user_numeric, group_numeric;
        uint32_t uid, gid;
};

/* An id in passwd, group or a USER spec: decimal, at most INT32_MAX (as Docker reads them). */
static bool parse_id(const char *s, uint32_t *ret)
{
        return bld_parse_u32(s, USER_ID_MAX, ret);
}

static bool all_digits(const char *s)
{
        return *s && strspn(s, "0123456789") == strlen(s);
}

/* Splits `copy` ("user" or "user:group") in place. */
static int parse_spec(char *copy, const char *spec, struct user_spec *ret, struct kiln_error **err)
{
        char *colon = strchr(copy, ':');

        *ret = (struct user_spec){ .user = copy };
        if (colon) {
                *colon = '\0';
                ret->group = colon + 1;
                if (!*ret->group || strchr(ret->group, ':'))
                        return kiln_error_new(err, KILN_ERR_INVALID, "invalid user spec '%s'",
                                              spec);
        }
        if (!*ret->user)
                return kiln_error_new(err, KILN_ERR_INVALID, "invalid user spec '%s'", spec);
        if (all_digits(ret->user)) {
                if (!parse_id(ret->user, &ret->uid))
                        return kiln_error_new(err, KILN_ERR_INVALID,
                                              "uid '%s' is out of range in user spec '%s'",
                                              ret->user, spec);
                ret->user_numeric = true;
        }
        if (ret->group && all_digits(ret->group)) {
                if (!parse_id(ret->group, &ret->gid))
                        return kiln_error_new(err, KILN_ERR_INVALID,
                                              "gid '%s' is out of range in user spec '%s'",
                                              ret->group, spec);
                ret->group_numeric = true;
        }
        return 0;
}

/* Reads a database file of the image; a missing one is empty (*ret NULL). */
static int read_db(int rootfd, const char *path, char **ret, struct kiln_error **err)
{
        _cleanup_(kiln_error_freep) struct kiln_error *e = NULL;
        char *data = NULL;

        if (kiln_read_file_in_root(rootfd, path, USER_DB_MAX, &data, NULL, &e) < 0) {
                if (e->kind == KILN_ERR_NOTFOUND) {
                        *ret = NULL;
                        return 0;
                }
                if (!err)
                        return -1;
                kiln_error_free(*err);
                *err = TAKE_PTR(e);
                return kiln_error_wrap(err, "read '%s' of the image", path);
        }
        *ret = data;
        return 0;
}

static void trim_end(char *s)
{
        size_t n = strlen(s);

        while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
                s[--n] = '\0';
}

/*
 * Returns the next line of a colon-separated database split into at most `max` fields (the last
 * keeps any further colons), or 0 at the end. Blank lines and NIS "+"/"-" entries are skipped.
 */
static size_t next_entry(char **cursor, char **fields, size_t max)
{
        while (*cursor && **cursor) {
                char *line = *cursor, *nl = strchr(line, '\n');
                size_t n = 0;

                *cursor = nl ? nl + 1 : NULL;
                if (nl)
                        *nl = '\0';
                line += strspn(line, " \t\r");
                trim_end(line);
                if (!*line || *line == '+' || *line == '-')
                        continue;
                fields[n++] = line;
                while (n < max && (line = strchr(line, ':'))) {
                        *line++ = '\0';
                        fields[n++] = line;
                }
                return n;
        }
        return 0;
}

/* Looks the user up in passwd: sets uid, gid and the matched name (NULL when no entry). */
static int lookup_passwd(char *passwd, const struct user_spec *s, uint32_t *uid, uint32_t *gid,
                         const char **ret_name, struct kiln_error **err)
{
        char *cursor = passwd, *f[5];
        size_t n;

        while ((n = next_entry(&cursor, f, ELEMENTSOF(f))) > 0) {
                uint32_t u, g;

                if (n < 4 || !parse_id(f[2], &u) || !parse_id(f[3], &g))
                        continue;
                if (s->user_numeric ? u != s->uid : strcmp(f[0], s->user) != 0)
                        continue;
                *uid = u;
                *gid = g;
                *ret_name = f[0];
                return 0;
        }
        if (!s->user_numeric)
                return kiln_error_new(err, KILN_ERR_NOTFOUND,
                                      "unable to find user %s: no matching entries in passwd file",
                                      s->user);
        *uid = s->uid;
        *gid = 0;
        *ret_name = NULL;
        return 0;
}

/* The explicit group of the spec. */
static int lookup_group(char *group, const struct user_spec *s, uint32_t *gid,
                        struct kiln_error **err)
{
        char *cursor = group, *f[4];
        size_t n;

        while ((n = next_entry(&cursor, f, ELEMENTSOF(f))) > 0) {
                uint32_t g;

                if (n < 3 || !parse_id(f[2], &g))
                        continue;
                if (s->group_numeric ? g == s->gid : strcmp(f[0], s->group) == 0) {
                        *gid = g;
                        return 0;
                }
        }
        if (!s->group_numeric)
                return kiln_error_new(err, KILN_ERR_NOTFOUND,
                                      "unable to find group %s: no matching entries in group file",
                                      s->group);
        *gid = s->gid;
        return 0;
}

static bool list_has(char *members, const char *name)
{
        char *save = NULL, *m;

        for (m = strtok_r(members, ",", &save); m; m = strtok_r(NULL, ",", &save))
                if (strcmp(m + strspn(m, " \t"), name) == 0)
                        return true;
        return false;
}

/* Every group listing `name` as a member, in file order. */
static int lookup_supplementary(char *group, const char *name, uint32_t **ret, size_t *ret_n,
                                struct kiln_error **err)
{
        _cleanup_free_ uint32_t *v = NULL;
        char *cursor = group, *f[4];
        size_t n, nr = 0, alloc = 0;

        while ((n = next_entry(&cursor, f, ELEMENTSOF(f))) > 0) {
                uint32_t g;

                if (n < 4 || !parse_id(f[2], &g) || !list_has(f[3], name))
                        continue;
                if (nr == USER_GROUPS_MAX)
                        return kiln_error_new(err, KILN_ERR_LIMIT,
                                              "user %s is in more than %d groups", name,
                                              USER_GROUPS_MAX);
                XGROW(v, nr + 1, alloc);
                v[nr++] = g;
        }
        *ret = TAKE_PTR(v);
        *ret_n = nr;
        return 0;
}

int bld_user_resolve(int rootfd, const char *spec, uint32_t *ret_uid, uint32_t *ret_gid,
                     uint32_t **ret_groups, size_t *ret_n_groups, struct kiln_error **err)
{
        _cleanup_free_ char *copy = NULL, *passwd = NULL, *group = NULL;
        _cleanup_free_ uint32_t *groups = NULL;
        struct user_spec s;
        const char *name = NULL;
        uint32_t uid = 0, gid = 0;
        size_t n_groups = 0;

        if (!spec)
                return kiln_error_new(err, KILN_ERR_INVALID, "no user spec");
        copy = xstrdup(spec);
        if (parse_spec(copy, spec, &s, err) < 0)
                return -1;
        if (read_db(rootfd, "/etc/passwd", &passwd, err) < 0 ||
            lookup_passwd(passwd, &s, &uid, &gid, &name, err) < 0)
                return -1;
        if (s.group || (name && ret_groups)) {
                if (read_db(rootfd, "/etc/group", &group, err) < 0)
                        return -1;
                if (s.group && lookup_group(group, &s, &gid, err) < 0)
                        return -1;
                if (!s.group && lookup_supplementary(group, name, &groups, &n_groups, err) < 0)
                        return -1;
        }
        *ret_uid = uid;
        *ret_gid = gid;
        if (ret_groups) {
                *ret_groups = TAKE_PTR(groups);
                *ret_n_groups = n_groups;
        }
        return 0;
}

char *bld_user_home(int rootfd, const char *spec)
{
        _cleanup_free_ char *copy = xstrdup(spec && *spec ? spec : "0"), *passwd = NULL;
        char *cursor, *f[7];
        struct user_spec s;
        size_t n;

        if (parse_spec(copy, spec && *spec ? spec : "0", &s, NULL) < 0 ||
            read_db(rootfd, "/etc/passwd", &passwd, NULL) < 0)
                return xstrdup("/");
        cursor = passwd;
        while ((n = next_entry(&cursor, f, ELEMENTSOF(f))) > 0) {
                uint32_t u;

                if (n < 6 || !parse_id(f[2], &u))
                        continue;
                if (s.user_numeric ? u == s.uid : strcmp(f[0], s.user) == 0)
                        return xstrdup(*f[5] ? f[5] : "/");
        }
        return xstrdup("/");
}

char **bld_env_with_home(const char *const *envp, const char *home)
{
        size_t n = 0;
        char **v;

        for (; envp && envp[n]; n++)
                if (strncmp(envp[n], "HOME=", 5) == 0)
                        return NULL;
        v = xcalloc(n + 2, sizeof(char *));
        for (size_t i = 0; i < n; i++)
                v[i] = xstrdup(envp[i]);
        v[n] = xasprintf("HOME=%s", home);
        return v;
}

bool bld_parse_u32(const char *s, uint32_t max, uint32_t *ret)
{
        uint64_t v = 0;

        if (!*s)
                return false;
        for (; *s; s++) {
                if (*s < '0' || *s > '9')
                        return false;
                v = v * 10 + (uint64_t) (*s - '0');
                if (v > max)
                        return false;
        }
        *ret = (uint32_t) v;
        return true;
}
