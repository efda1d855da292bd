/*
 * The local build cache: one small JSON entry per step key under the store's .kiln/cache/,
 * naming the layer the step made. Keys chain: each step's key covers its parent's, so a
 * changed input misses there and at every step after it. A stale hit is the worst bug a
 * cache can have, so whatever is not understood is not cached (the chain breaks).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "builder/builder-internal.h"
#include "builder/common/fd-util.h"
#include "builder/common/json-util.h"
#include "builder/common/xalloc.h"

void bld_key_init(struct bld_key *k, const char *parent, const char *what)
{
        k->h = layer_sha256_new();
        k->fields = json_object();
        bld_key_addn(k, "kiln-cache-v2", strlen("kiln-cache-v2"));
        bld_key_field(k, "parent", parent ? parent : "");
        bld_key_field(k, "step", what);
}

void bld_key_addn(struct bld_key *k, const void *data, size_t len)
{
        uint64_t n = len;

        /* length-prefixed, so no two field lists hash alike */
        layer_sha256_update(k->h, &n, sizeof(n));
        layer_sha256_update(k->h, data, len);
}

void bld_key_field(struct bld_key *k, const char *name, const char *value)
{
        if (!value)
                value = "\xff(null)";
        bld_key_addn(k, name, strlen(name));
        bld_key_addn(k, value, strlen(value));
        json_object_set_new(k->fields, name, json_string(value));
}

void bld_key_field_json(struct bld_key *k, const char *name, json_t *j)
{
        char *s = json_dumps(j, JSON_SORT_KEYS | JSON_COMPACT | JSON_ENCODE_ANY);

        bld_key_field(k, name, s ? s : "null");
        free(s);
}

static int cmp_str(const void *a, const void *b)
{
        return strcmp(*(const char *const *) a, *(const char *const *) b);
}

/* Each member of `obj` as a field "<prefix><name>", in name order. */
static void fields_of(struct bld_key *k, const char *prefix, json_t *obj, const char *skip_object)
{
        const char *name;
        json_t *v;
        size_t n = 0, i;
        _cleanup_free_ const char **names = xcalloc(json_object_size(obj) + 1, sizeof(*names));

        json_object_foreach (obj, name, v)
                names[n++] = name;
        qsort(names, n, sizeof(*names), cmp_str);
        for (i = 0; i < n; i++) {
                _cleanup_free_ char *field = xasprintf("%s%s", prefix, names[i]);
                v = json_object_get(obj, names[i]);
                if (skip_object && strcmp(names[i], skip_object) == 0 && json_is_object(v))
                        fields_of(k, "config.", v, NULL);
                else
                        bld_key_field_json(k, field, v);
        }
}

void bld_key_config(struct bld_key *k, json_t *config)
{
        json_t *c = json_deep_copy(config);

        /* the history's timestamps say when, not what; the layers' diff_ids are what earlier
         * steps made, which their keys (the parent's) already stand for: a step whose output
         * varies (a timestamp, a random file) does not change the keys of the steps after it,
         * as in BuildKit, so a cache from elsewhere still fits after it ran again */
        json_object_del(c, "history");
        json_object_del(c, "created");
        json_object_del(c, "rootfs");
        /* one field per setting, so a miss can name the one that changed */
        fields_of(k, "image.", c, "config");
        json_decref(c);
}

void bld_key_final(struct bld_key *k, char out[LAYER_DIGEST_SIZE])
{
        layer_sha256_final(k->h, out);
        k->h = layer_sha256_free(k->h);
}

void bld_key_release(struct bld_key *k)
{
        if (k->h)
                k->h = layer_sha256_free(k->h);
        json_decref(k->fields);
        k->fields = NULL;
}

static char *entry_name(const char *key)
{
        return xasprintf("%s.json", key + strlen("sha256:"));
}

static int cache_dir(const struct bld_build *b, struct kiln_error **err)
{
        _cleanup_free_ char *kiln = xasprintf("%s/.kiln", layer_store_root(b->o->store));
        _cleanup_free_ char *path = xasprintf("%s/cache", kiln);
        int fd;

        (void) mkdir(kiln, 0755);
        if (mkdir(path, 0755) < 0 && errno != EEXIST)
                return kiln_error_errno(err, KILN_ERR_IO, "make '%s'", path);
        fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "open '%s'", path);
        return fd;
}

json_t *bld_cache_entry_json(const struct bld_cache_entry *e, const char *created_by)
{
        json_t *j = json_pack("{s:s, s:s, s:I, s:s, s:b, s:s}", "digest", e->empty ? "" : e->digest, "diff_id",
                              e->empty ? "" : e->diff_id, "size", (json_int_t) e->size, "media_type",
                              e->empty ? "" : e->media_type, "empty_layer", e->empty, "created_by",
                              created_by ? created_by : "");

        if (j && e->created > 0) /* else unknown: a hit takes the build's time */
                json_object_set_new(j, "created", json_integer((json_int_t) e->created));
        if (j && e->ref[0])
                json_object_set_new(j, "ref", json_string(e->ref));
        return j;
}

bool bld_cache_entry_parse(json_t *j, struct bld_cache_entry *ret)
{
        const char *digest, *diff_id, *mt;
        json_int_t size, created = -1;
        int empty = 0;

        if (json_unpack(j, "{s:s, s:s, s:I, s:s, s:b, s?I}", "digest", &digest, "diff_id", &diff_id, "size", &size,
                        "media_type", &mt, "empty_layer", &empty, "created", &created) < 0)
                return false;
        *ret = (struct bld_cache_entry){ .empty = empty, .created = created };
        {
                const char *ref = json_string_value(json_object_get(j, "ref"));
                if (ref && strlen(ref) < sizeof(ret->ref))
                        snprintf(ret->ref, sizeof(ret->ref), "%s", ref);
        }
        if (empty)
                return true;
        if (!layer_digest_valid(digest) || !layer_digest_valid(diff_id) || size < 0 || !bld_layer_media_type_known(mt))
                return false;
        snprintf(ret->digest, sizeof(ret->digest), "%s", digest);
        snprintf(ret->diff_id, sizeof(ret->diff_id), "%s", diff_id);
        ret->size = (uint64_t) size;
        snprintf(ret->media_type, sizeof(ret->media_type), "%s", mt);
        return true;
}

bool bld_layer_media_type_known(const char *mt)
{
        int c;

        for (c = 0; c < _LAYER_COMPRESSION_MAX; c++)
                if (strcmp(mt, layer_media_type((enum layer_compression) c, false)) == 0 ||
                    strcmp(mt, layer_media_type((enum layer_compression) c, true)) == 0)
                        return true;
        return false;
}

/* The entry in file `name` of the cache directory `dfd`, parsed and checked; its fd in
 * *ret_fd (may be NULL) for the caller to close. False when unreadable or not an entry. */
static bool entry_read(int dfd, const char *name, struct bld_cache_entry *ret, int *ret_fd)
{
        _cleanup_close_ int fd = openat(dfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        _cleanup_json_ json_t *j = NULL;

        if (fd < 0)
                return false;
        j = json_loadfd(fd, 0, NULL);
        if (!j || !bld_cache_entry_parse(j, ret))
                return false;
        if (ret_fd)
                *ret_fd = TAKE_FD(fd);
        return true;
}

/* Whether an entry's blob is in the store: 1 whole (or the entry has none), 0 absent (prune or
 * a user removed it), -1 there with another size. */
static int entry_blob(struct layer_store *store, const struct bld_cache_entry *e)
{
        uint64_t have = 0;
        int fd;

        if (e->empty)
                return 1;
        fd = layer_store_open_blob(store, e->digest, &have, NULL);
        if (fd < 0)
                return 0;
        close(fd);
        return have == e->size ? 1 : -1;
}

/* The local entry for `key`, when its blob is in the store with its size (or, for one a
 * --cache-from brought, still in that registry). */
static bool local_get(struct bld_build *b, const char *key, struct bld_cache_entry *ret)
{
        _cleanup_close_ int dfd = -1, fd = -1;
        _cleanup_free_ char *name = NULL;
        int blob;

        dfd = cache_dir(b, NULL);
        if (dfd < 0)
                return false;
        name = entry_name(key);
        if (!entry_read(dfd, name, ret, &fd))
                return false;
        blob = entry_blob(b->o->store, ret);
        if (blob == 0 && ret->ref[0] && b->o->registry)
                bld_cache_note_blob(b, ret->digest, ret->ref);
        else if (blob != 1)
                return false;
        /* used: the entry's mtime says when, for prune --keep-storage (least recently used
         * first); best effort */
        (void) futimens(fd, NULL);
        return true;
}

bool bld_cache_get(struct bld_build *b, const char *key, struct bld_cache_entry *ret)
{
        if (!key || !*key || b->o->no_cache)
                return false;
        if (local_get(b, key, ret))
                return true;
        return bld_cache_remote_get(b, key, ret);
}

static atomic_uint tmp_seq;

/* `j` as the file `name` in `dfd`, whole or not at all: a temporary name unique per process
 * and per call (stages of one build, and other builds, may write at once), then a rename. */
static void write_json_at(int dfd, const char *name, json_t *j, mode_t mode, bool sync)
{
        _cleanup_free_ char *tmp =
                xasprintf(".tmp-%s-%d-%u", name, (int) getpid(), atomic_fetch_add(&tmp_seq, 1));
        int fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
        bool good;

        if (fd < 0)
                return;
        good = json_dumpfd(j, fd, JSON_SORT_KEYS | JSON_COMPACT) == 0 && (!sync || fsync(fd) == 0);
        close(fd);
        if (!good || renameat(dfd, tmp, dfd, name) < 0)
                (void) unlinkat(dfd, tmp, 0);
}

void bld_cache_put(struct bld_build *b, const char *key, const struct bld_cache_entry *e,
                   const char *created_by)
{
        _cleanup_close_ int dfd = -1;
        _cleanup_free_ char *name = NULL;
        json_t *j;

        /* best effort: a cache that cannot be written only costs time */
        if (!key || !*key)
                return;
        dfd = cache_dir(b, NULL);
        if (dfd < 0)
                return;
        name = entry_name(key);
        j = bld_cache_entry_json(e, created_by);
        if (!j)
                return;
        write_json_at(dfd, name, j, 0644, true);
        json_decref(j);
}

/* ---- the most recent build of each step, to explain a miss ---- */

/* A record's format: another is read as none */
#define RECORD_VERSION 1

/* .kiln/cache/steps/, made when `make` */
static int steps_dir(struct bld_build *b, bool make)
{
        _cleanup_close_ int dfd = cache_dir(b, NULL);
        int fd;

        if (dfd < 0)
                return -1;
        if (make && mkdirat(dfd, "steps", 0700) < 0 && errno != EEXIST)
                return -1;
        fd = openat(dfd, "steps", O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
        return fd;
}

/* A record's file name: the step's identity hashed */
static char *record_name(const char *id)
{
        _cleanup_(layer_sha256_freep) struct layer_sha256 *h = layer_sha256_new();
        char digest[LAYER_DIGEST_SIZE];

        layer_sha256_update(h, id, strlen(id));
        layer_sha256_final(h, digest);
        return xasprintf("%s.json", digest + strlen("sha256:"));
}

json_t *bld_cache_record_get(struct bld_build *b, const char *id)
{
        _cleanup_close_ int dfd = steps_dir(b, false), fd = -1;
        _cleanup_free_ char *name = NULL;
        json_t *j, *fields, *v;
        const char *k;

        if (dfd < 0)
                return NULL;
        name = record_name(id);
        fd = openat(dfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return NULL;
        j = json_loadfd(fd, 0, NULL);
        if (json_integer_value(json_object_get(j, "version")) == RECORD_VERSION)
                fields = json_incref(json_object_get(j, "fields"));
        else
                fields = NULL;
        json_decref(j);
        /* a record of another version, or damaged: as if there were none */
        if (!json_is_object(fields)) {
                json_decref(fields);
                return NULL;
        }
        json_object_foreach (fields, k, v)
                if (!json_is_string(v)) {
                        json_decref(fields);
                        return NULL;
                }
        return fields;
}

void bld_cache_record_put(struct bld_build *b, const char *id, json_t *fields)
{
        _cleanup_close_ int dfd = steps_dir(b, true);
        _cleanup_free_ char *name = NULL;
        json_t *j;

        /* best effort: without it a miss is only not explained. 0600: build-args' values. */
        if (dfd < 0)
                return;
        name = record_name(id);
        j = json_pack("{s:i, s:o}", "version", RECORD_VERSION, "fields", bld_cache_fields_short(fields));
        if (j)
                write_json_at(dfd, name, j, 0600, false);
        json_decref(j);
}

/* ---- the cache as a garbage collection root (kiln prune, kiln store fsck) ---- */

struct gc_entry {
        char name[80];
        struct timespec used;           /* mtime: written or last hit */
        char digest[LAYER_DIGEST_SIZE]; /* "" for an empty layer */
        uint64_t size;
        size_t blob; /* index of its blob among the cache-only blobs; SIZE_MAX: none */
        bool removed;
};

static int cmp_used(const void *a, const void *b)
{
        const struct gc_entry *x = a, *y = b;

        if (x->used.tv_sec != y->used.tv_sec)
                return x->used.tv_sec < y->used.tv_sec ? -1 : 1;
        if (x->used.tv_nsec != y->used.tv_nsec)
                return x->used.tv_nsec < y->used.tv_nsec ? -1 : 1;
        return strcmp(x->name, y->name);
}

static int cmp_digest(const void *a, const void *b)
{
        const struct gc_entry *const *x = a, *const *y = b;

        return strcmp((*x)->digest, (*y)->digest);
}

/* Reads an entry for the GC: false when it is not usable (unreadable, or its blob is gone). */
static bool gc_read(struct layer_store *store, int dfd, struct gc_entry *e)
{
        struct bld_cache_entry ce;

        if (!entry_read(dfd, e->name, &ce, NULL) || entry_blob(store, &ce) != 1)
                return false;
        if (!ce.empty) {
                snprintf(e->digest, sizeof(e->digest), "%s", ce.digest);
                e->size = ce.size;
        }
        return true;
}

static void gc_remove(struct bld_cache_gc *o, int dfd, struct gc_entry *e)
{
        if (e->removed)
                return;
        e->removed = true;
        if (o->check_only)
                return;
        if (unlinkat(dfd, e->name, 0) == 0)
                o->entries_removed++;
}

/* Removes the regular files of the directory `name` under `dfd` (best effort). */
static void remove_records(int dfd, const char *name)
{
        int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        struct dirent *de;
        DIR *d;

        if (fd < 0)
                return;
        d = fdopendir(fd);
        if (!d) {
                close(fd);
                return;
        }
        while ((de = readdir(d)))
                if (de->d_name[0] != '.' || strncmp(de->d_name, ".tmp", 4) == 0)
                        (void) unlinkat(dirfd(d), de->d_name, 0);
        closedir(d);
}

int bld_cache_gc_mark(struct layer_store *store, struct layer_gc *gc, void *ctx,
                      struct kiln_error **err)
{
        struct bld_cache_gc *o = ctx;
        _cleanup_close_ int dfd = -1;
        _cleanup_free_ struct gc_entry *v = NULL;
        _cleanup_free_ struct gc_entry **by_digest = NULL;
        _cleanup_free_ uint64_t *refs = NULL;
        size_t n = 0, alloc = 0, n_blobs = 0, i;
        uint64_t total = 0;
        struct dirent *de;
        DIR *d;

        o->entries_removed = o->entries_kept = o->bytes_kept = o->temp_removed = 0;
        {
                _cleanup_free_ char *path = xasprintf("%s/.kiln/cache", layer_store_root(store));
                dfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (dfd < 0 && errno == ENOENT)
                        return 0; /* no cache yet */
                if (dfd < 0)
                        return kiln_error_errno(err, KILN_ERR_IO, "open '%s'", path);
        }
        {
                int lfd = fcntl(dfd, F_DUPFD_CLOEXEC, 3);
                d = lfd >= 0 ? fdopendir(lfd) : NULL;
                if (!d) {
                        kiln_error_errno(err, KILN_ERR_IO, "list '%s/.kiln/cache'",
                                         layer_store_root(store));
                        if (lfd >= 0)
                                close(lfd);
                        return -1;
                }
        }
        while ((de = readdir(d))) {
                size_t len = strlen(de->d_name);
                struct stat st;

                /* a write a crash interrupted: nobody writes while the GC lock is held */
                if (strncmp(de->d_name, ".tmp-", 5) == 0) {
                        if (!o->check_only && unlinkat(dfd, de->d_name, 0) == 0)
                                o->temp_removed++;
                        continue;
                }
                /* entries only: "<hex>.json" (other records may live beside them) */
                if (len < 6 || len >= sizeof(v->name) ||
                    strcmp(de->d_name + len - 5, ".json") != 0 ||
                    fstatat(dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
                        continue;
                XGROW(v, n + 1, alloc);
                v[n] = (struct gc_entry){ .used = st.st_mtim, .blob = SIZE_MAX };
                memcpy(v[n].name, de->d_name, len + 1);
                n++;
        }
        closedir(d);

        /* an entry whose blob is gone only misses: drop it */
        for (i = 0; i < n; i++)
                if (!gc_read(store, dfd, &v[i]) || o->all)
                        gc_remove(o, dfd, &v[i]);
        /* prune --cache: the steps' records (what misses are explained against) and the
         * contexts' file digests go too */
        if (o->all && !o->check_only) {
                _cleanup_free_ char *kiln = xasprintf("%s/.kiln", layer_store_root(store));
                _cleanup_close_ int kfd = open(kiln, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                remove_records(dfd, "steps");
                if (kfd >= 0)
                        remove_records(kfd, "context");
        }

        /* the blobs only the cache keeps, each once, and how many entries name each */
        by_digest = xcalloc(n + 1, sizeof(*by_digest));
        for (i = 0; i < n; i++)
                if (!v[i].removed && v[i].digest[0] && !layer_gc_reached(gc, v[i].digest))
                        by_digest[n_blobs++] = &v[i];
        qsort(by_digest, n_blobs, sizeof(*by_digest), cmp_digest);
        refs = xcalloc(n_blobs + 1, sizeof(*refs));
        {
                size_t blob = SIZE_MAX;
                for (i = 0; i < n_blobs; i++) {
                        if (i == 0 || strcmp(by_digest[i]->digest, by_digest[i - 1]->digest) != 0) {
                                blob = i;
                                total += by_digest[i]->size;
                        }
                        by_digest[i]->blob = blob;
                        refs[blob]++;
                }
        }

        /* least recently used first, until what only the cache keeps fits; an entry whose
         * blob an image keeps (or that has none) frees nothing and stays */
        if (o->keep_storage >= 0) {
                qsort(v, n, sizeof(*v), cmp_used); /* by_digest is stale from here on */
                for (i = 0; i < n && total > (uint64_t) o->keep_storage; i++) {
                        if (v[i].removed || v[i].blob == SIZE_MAX)
                                continue;
                        gc_remove(o, dfd, &v[i]);
                        if (--refs[v[i].blob] == 0)
                                total -= v[i].size;
                }
        }

        /* the entries' removal is durable before any blob goes */
        if (!o->check_only && o->entries_removed)
                (void) fsync(dfd);
        for (i = 0; i < n; i++) {
                if (v[i].removed)
                        continue;
                o->entries_kept++;
                if (v[i].digest[0])
                        layer_gc_keep(gc, v[i].digest);
        }
        o->bytes_kept = total;
        return 0;
}
