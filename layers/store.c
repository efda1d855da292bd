/*
 * The local store: an OCI image layout (oci-layout, index.json, blobs/sha256/...) that skopeo
 * and umoci read as it is, plus kiln's private .kiln/ (temporary files, locks, unpacked layers).
 *
 * Crash safety: blobs are written to .kiln/tmp, fsync'd, verified and renamed into place;
 * index.json is rewritten to a temporary file and renamed over the old one while
 * .kiln/index.lock is held. A crash leaves at worst a stale temporary file, which prune and
 * fsck find. Garbage collection takes .kiln/gc.lock exclusively; every open store holds it
 * shared, so prune never removes a blob a running build has just written.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "builder/common/fd-util.h"
#include "builder/common/json-util.h"
#include "builder/common/strbuf.h"
#include "builder/common/xalloc.h"
#include "layers/layers-internal.h"

#define OCI_LAYOUT       "{\"imageLayoutVersion\":\"1.0.0\"}"
#define INDEX_MEDIA_TYPE "application/vnd.oci.image.index.v1+json"
#define REF_NAME         "org.opencontainers.image.ref.name"
#define MAX_INDEX        (64u << 20)
#define MAX_METADATA     (4u << 20) /* a manifest, index or config */
#define STALE_SECONDS    (24 * 3600)

struct layer_store {
        char *root;
        int rootfd;  /* the layout directory */
        int blobsfd; /* blobs/sha256 */
        int privfd;  /* .kiln */
        int tmpfd;   /* .kiln/tmp */
        int gcfd;    /* .kiln/gc.lock, held shared while the store is open */
};

struct layer_blob_writer {
        struct layer_store *store;
        int fd;
        char name[64];
        struct layer_sha256 *hash;
        uint64_t size;
};

char *layer_store_default_root(void)
{
        const char *xdg = getenv("XDG_DATA_HOME"), *home = getenv("HOME");

        if (geteuid() == 0)
                return xstrdup("/var/lib/kiln");
        if (xdg && xdg[0] == '/')
                return xasprintf("%s/kiln", xdg);
        return xasprintf("%s/.local/share/kiln", home && home[0] ? home : "/tmp");
}

/* mkdir -p for the store's own path (the caller's choice of location, not image content). */
static int mkdir_parents(const char *path, mode_t mode, struct kiln_error **err)
{
        _cleanup_free_ char *p = xstrdup(path);
        char *s;

        for (s = p + 1; *s; s++) {
                if (*s != '/')
                        continue;
                *s = '\0';
                if (mkdir(p, mode) < 0 && errno != EEXIST)
                        return kiln_error_errno(err, KILN_ERR_IO, "create '%s'", p);
                *s = '/';
        }
        if (mkdir(p, mode) < 0 && errno != EEXIST)
                return kiln_error_errno(err, KILN_ERR_IO, "create '%s'", p);
        return 0;
}

static int open_dir_at(int dirfd, const char *name, bool create, mode_t mode,
                       struct kiln_error **err)
{
        int fd;

        if (create && mkdirat(dirfd, name, mode) < 0 && errno != EEXIST)
                return kiln_error_errno(err, KILN_ERR_IO, "create '%s'", name);
        fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "open '%s'", name);
        return fd;
}

/* A name for a temporary file no other writer picks: pid, a counter and the clock. */
static void temp_name(char *buf, size_t size, const char *prefix)
{
        static unsigned counter;
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        snprintf(buf, size, "%s-%d-%u-%lx", prefix, (int) getpid(),
                 __atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED), (unsigned long) ts.tv_nsec);
}

/* Takes an exclusive lock on a file in .kiln; returns its fd (closing it unlocks). */
static int lock_file(struct layer_store *s, const char *name, struct kiln_error **err)
{
        int fd = openat(s->privfd, name, O_RDWR | O_CREAT | O_CLOEXEC, 0600);

        if (fd < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "open '%s/.kiln/%s'", s->root, name);
        while (flock(fd, LOCK_EX) < 0) {
                if (errno != EINTR) {
                        close(fd);
                        return kiln_error_errno(err, KILN_ERR_IO, "lock '%s/.kiln/%s'", s->root,
                                                name);
                }
        }
        return fd;
}

static int lock_index(struct layer_store *s, struct kiln_error **err)
{
        return lock_file(s, "index.lock", err);
}

/* Writes a small file atomically: temporary file in .kiln/tmp, fsync, rename. */
static int write_atomic(struct layer_store *s, int dirfd, const char *name, const void *data,
                        size_t len, struct kiln_error **err)
{
        char tmp[64];
        int fd, r = 0;

        temp_name(tmp, sizeof(tmp), "meta");
        fd = openat(s->tmpfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0)
                return kiln_error_errno(err, KILN_ERR_IO,
                                        "create a temporary file in '%s/.kiln/tmp'", s->root);
        if (kiln_write_all(fd, data, len, err) < 0)
                r = -1;
        else if (fsync(fd) < 0)
                r = kiln_error_errno(err, KILN_ERR_IO, "fsync '%s'", name);
        close(fd);
        if (r == 0 && renameat(s->tmpfd, tmp, dirfd, name) < 0)
                r = kiln_error_errno(err, KILN_ERR_IO, "rename into '%s'", name);
        if (r < 0) {
                unlinkat(s->tmpfd, tmp, 0);
                return -1;
        }
        if (fsync(dirfd) < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "fsync the directory of '%s'", name);
        return 0;
}

static int init_layout(struct layer_store *s, struct kiln_error **err)
{
        _cleanup_free_ char *layout = NULL;
        size_t len;
        struct stat st;

        if (kiln_read_file_at(s->rootfd, "oci-layout", 4096, &layout, &len, NULL) == 0) {
                _cleanup_json_ json_t *j = kiln_json_loadb(layout, len, "oci-layout", err);
                const char *v = j ? kiln_json_get_string(j, "imageLayoutVersion") : NULL;
                if (!v || strncmp(v, "1.", 2) != 0)
                        return kiln_error_new(err, KILN_ERR_INVALID,
                                              "'%s' has an oci-layout kiln does not understand",
                                              s->root);
                return 0;
        }
        /* A fresh store, or a directory that is not one. */
        {
                DIR *d;
                struct dirent *de;
                int fd = openat(s->rootfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                bool empty = true;

                if (fd < 0)
                        return kiln_error_errno(err, KILN_ERR_IO, "open '%s'", s->root);
                d = fdopendir(fd);
                if (!d) {
                        close(fd);
                        return kiln_error_errno(err, KILN_ERR_IO, "list '%s'", s->root);
                }
                while ((de = readdir(d)))
                        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0 &&
                            strcmp(de->d_name, ".kiln") != 0 && strcmp(de->d_name, "blobs") != 0 &&
                            strcmp(de->d_name, "index.json") != 0)
                                empty = false; /* (a crash may leave an index.json alone) */
                closedir(d);
                if (!empty)
                        return kiln_error_new(err, KILN_ERR_INVALID,
                                              "'%s' is not empty and not an OCI image layout",
                                              s->root);
        }
        if (fstatat(s->rootfd, "index.json", &st, AT_SYMLINK_NOFOLLOW) < 0) {
                static const char index[] = "{\"schemaVersion\":2,\"mediaType\":\"" INDEX_MEDIA_TYPE
                                            "\",\"manifests\":[]}";
                if (write_atomic(s, s->rootfd, "index.json", index, sizeof(index) - 1, err) < 0)
                        return -1;
        }
        /* oci-layout last: its presence says the layout is complete. */
        return write_atomic(s, s->rootfd, "oci-layout", OCI_LAYOUT, sizeof(OCI_LAYOUT) - 1, err);
}

int layer_store_open(const char *root, struct layer_store **ret, struct kiln_error **err)
{
        _cleanup_(layer_store_freep) struct layer_store *s = xcalloc(1, sizeof(*s));
        _cleanup_close_ int blobs = -1, lock = -1;
        mode_t mode = geteuid() == 0 ? 0755 : 0700;

        s->rootfd = s->blobsfd = s->privfd = s->tmpfd = s->gcfd = -1;
        if (mkdir_parents(root, mode, err) < 0)
                return kiln_error_wrap(err, "store");
        s->rootfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (s->rootfd < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "open the store '%s'", root);
        /* Paths under the root go to mount(2) and to children in other directories: absolute. */
        s->root = realpath(root, NULL);
        if (!s->root)
                return kiln_error_errno(err, KILN_ERR_IO, "resolve the store '%s'", root);
        root = s->root;
        if ((s->privfd = open_dir_at(s->rootfd, ".kiln", true, 0700, err)) < 0 ||
            (s->tmpfd = open_dir_at(s->privfd, "tmp", true, 0700, err)) < 0)
                return kiln_error_wrap(err, "store '%s'", root);
        /* Processes opening a fresh store at once: one creates the layout, the rest wait. */
        if ((lock = lock_file(s, "index.lock", err)) < 0 || init_layout(s, err) < 0)
                return -1;
        close(TAKE_FD(lock));
        if ((blobs = open_dir_at(s->rootfd, "blobs", true, 0755, err)) < 0 ||
            (s->blobsfd = open_dir_at(blobs, "sha256", true, 0755, err)) < 0)
                return kiln_error_wrap(err, "store '%s'", root);
        s->gcfd = openat(s->privfd, "gc.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (s->gcfd < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "open '%s/.kiln/gc.lock'", root);
        while (flock(s->gcfd, LOCK_SH) < 0)
                if (errno != EINTR)
                        return kiln_error_errno(err, KILN_ERR_IO, "lock '%s/.kiln/gc.lock'", root);
        *ret = TAKE_PTR(s);
        return 0;
}

struct layer_store *layer_store_free(struct layer_store *s)
{
        if (!s)
                return NULL;
        if (s->gcfd >= 0)
                close(s->gcfd);
        if (s->tmpfd >= 0)
                close(s->tmpfd);
        if (s->privfd >= 0)
                close(s->privfd);
        if (s->blobsfd >= 0)
                close(s->blobsfd);
        if (s->rootfd >= 0)
                close(s->rootfd);
        free(s->root);
        free(s);
        return NULL;
}

const char *layer_store_root(const struct layer_store *s)
{
        return s->root;
}

/* ---- blobs ---- */

int layer_store_blob_begin(struct layer_store *s, struct layer_blob_writer **ret,
                           struct kiln_error **err)
{
        struct layer_blob_writer *w = xcalloc(1, sizeof(*w));
        unsigned attempt;

        w->store = s;
        for (attempt = 0; attempt < 100; attempt++) {
                temp_name(w->name, sizeof(w->name), "blob");
                w->fd = openat(s->tmpfd, w->name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
                if (w->fd >= 0 || errno != EEXIST)
                        break;
        }
        if (w->fd < 0) {
                free(w);
                return kiln_error_errno(err, KILN_ERR_IO, "create a blob in '%s/.kiln/tmp'",
                                        s->root);
        }
        /* The lock says "in use" to prune and fsck, which only remove temporaries they can lock. */
        flock(w->fd, LOCK_EX);
        w->hash = layer_sha256_new();
        *ret = w;
        return 0;
}

int layer_blob_write(struct layer_blob_writer *w, const void *data, size_t len,
                     struct kiln_error **err)
{
        if (kiln_write_all(w->fd, data, len, err) < 0)
                return kiln_error_wrap(err, "store blob");
        layer_sha256_update(w->hash, data, len);
        w->size += len;
        return 0;
}

static int sink_write(void *ctx, const void *data, size_t len, struct kiln_error **err)
{
        return layer_blob_write(ctx, data, len, err);
}

struct layer_sink layer_blob_sink(struct layer_blob_writer *w)
{
        return (struct layer_sink){ .write = sink_write, .ctx = w };
}

void layer_blob_abort(struct layer_blob_writer *w)
{
        if (!w)
                return;
        unlinkat(w->store->tmpfd, w->name, 0);
        close(w->fd);
        layer_sha256_free(w->hash);
        free(w);
}

int layer_blob_commit(struct layer_blob_writer *w, const char *expected,
                      char ret_digest[LAYER_DIGEST_SIZE], uint64_t *ret_size,
                      struct kiln_error **err)
{
        char digest[LAYER_DIGEST_SIZE];
        int r = 0;

        layer_sha256_final(w->hash, digest);
        if (expected && strcmp(expected, digest) != 0)
                r = kiln_error_new(err, KILN_ERR_DIGEST, "blob digest is %s, expected %s", digest,
                                   expected);
        else if (fsync(w->fd) < 0)
                r = kiln_error_errno(err, KILN_ERR_IO, "fsync a blob");
        else if (renameat(w->store->tmpfd, w->name, w->store->blobsfd, digest + 7) < 0)
                r = kiln_error_errno(err, KILN_ERR_IO, "store blob %s", digest);
        else if (fsync(w->store->blobsfd) < 0)
                r = kiln_error_errno(err, KILN_ERR_IO, "fsync '%s/blobs/sha256'", w->store->root);
        if (r < 0) {
                layer_blob_abort(w);
                return -1;
        }
        if (ret_digest)
                memcpy(ret_digest, digest, LAYER_DIGEST_SIZE);
        if (ret_size)
                *ret_size = w->size;
        close(w->fd);
        layer_sha256_free(w->hash);
        free(w);
        return 0;
}

int layer_store_put(struct layer_store *s, const void *data, size_t len,
                    char ret_digest[LAYER_DIGEST_SIZE], struct kiln_error **err)
{
        struct layer_blob_writer *w;

        if (layer_store_blob_begin(s, &w, err) < 0)
                return -1;
        if (layer_blob_write(w, data, len, err) < 0) {
                layer_blob_abort(w);
                return -1;
        }
        return layer_blob_commit(w, NULL, ret_digest, NULL, err);
}

bool layer_store_has(const struct layer_store *s, const char *digest)
{
        struct stat st;

        return layer_digest_valid(digest) &&
               fstatat(s->blobsfd, digest + 7, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
               S_ISREG(st.st_mode);
}

int layer_store_open_blob(const struct layer_store *s, const char *digest, uint64_t *ret_size,
                          struct kiln_error **err)
{
        struct stat st;
        int fd;

        if (!layer_digest_valid(digest))
                return kiln_error_new(err, KILN_ERR_INVALID, "'%s' is not a sha256 digest", digest);
        fd = openat(s->blobsfd, digest + 7, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return kiln_error_errno(err, errno == ENOENT ? KILN_ERR_NOTFOUND : KILN_ERR_IO,
                                        "blob %s", digest);
        if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
                close(fd);
                return kiln_error_new(err, KILN_ERR_IO, "blob %s is not a regular file", digest);
        }
        if (ret_size)
                *ret_size = (uint64_t) st.st_size;
        return fd;
}

int layer_store_read(const struct layer_store *s, const char *digest, size_t max, char **ret_data,
                     size_t *ret_len, struct kiln_error **err)
{
        _cleanup_close_ int fd = layer_store_open_blob(s, digest, NULL, err);
        _cleanup_(layer_sha256_freep) struct layer_sha256 *h = NULL;
        char got[LAYER_DIGEST_SIZE];
        char *data;
        size_t len;

        if (fd < 0)
                return -1;
        if (kiln_read_fd_all(fd, max, &data, &len, err) < 0)
                return kiln_error_wrap(err, "blob %s", digest);
        h = layer_sha256_new();
        layer_sha256_update(h, data, len);
        layer_sha256_final(h, got);
        if (strcmp(got, digest) != 0) {
                free(data);
                return kiln_error_new(err, KILN_ERR_DIGEST,
                                      "blob %s is corrupt (its content hashes to %s)", digest, got);
        }
        *ret_data = data;
        *ret_len = len;
        return 0;
}

/* ---- index.json ---- */

static json_t *read_index(struct layer_store *s, struct kiln_error **err)
{
        _cleanup_free_ char *data = NULL;
        size_t len;
        json_t *j, *m;

        if (kiln_read_file_at(s->rootfd, "index.json", MAX_INDEX, &data, &len, err) < 0)
                return NULL;
        j = kiln_json_loadb(data, len, "index.json", err);
        if (!j)
                return NULL;
        m = json_object_get(j, "manifests");
        if (!json_is_object(j) || (m && !json_is_array(m))) {
                json_decref(j);
                kiln_error_new(err, KILN_ERR_PARSE, "'%s/index.json' is not an OCI image index",
                               s->root);
                return NULL;
        }
        if (!m)
                json_object_set_new(j, "manifests", json_array());
        return j;
}

static int write_index(struct layer_store *s, json_t *index, struct kiln_error **err)
{
        _cleanup_free_ char *text = json_dumps(index, JSON_COMPACT | JSON_PRESERVE_ORDER);

        if (!text)
                return kiln_error_new(err, KILN_ERR_GENERIC, "cannot format index.json");
        return write_atomic(s, s->rootfd, "index.json", text, strlen(text), err);
}

static const char *ref_name_of(json_t *desc)
{
        return kiln_json_get_string(json_object_get(desc, "annotations"), REF_NAME);
}

static bool valid_name(const char *name)
{
        size_t i, n = strlen(name);

        if (n == 0 || n > 512)
                return false;
        for (i = 0; i < n; i++) {
                char c = name[i];
                if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '.' || c == '_' || c == '-' || c == ':' || c == '/' || c == '@'))
                        return false;
        }
        return true;
}

int layer_store_tag(struct layer_store *s, const char *name, const char *digest,
                    const char *media_type, uint64_t size, struct kiln_error **err)
{
        _cleanup_close_ int lock = -1;
        _cleanup_json_ json_t *index = NULL;
        json_t *manifests, *desc;
        size_t i;

        if (!valid_name(name))
                return kiln_error_new(err, KILN_ERR_INVALID, "invalid image name '%s'", name);
        if (!layer_store_has(s, digest))
                return kiln_error_new(err, KILN_ERR_NOTFOUND,
                                      "cannot name '%s': blob %s is not in the store", name,
                                      digest);
        if ((lock = lock_index(s, err)) < 0 || !(index = read_index(s, err)))
                return -1;
        manifests = json_object_get(index, "manifests");
        for (i = json_array_size(manifests); i > 0; i--) {
                const char *n = ref_name_of(json_array_get(manifests, i - 1));
                if (n && strcmp(n, name) == 0)
                        json_array_remove(manifests, i - 1);
        }
        desc = json_pack("{s:s, s:s, s:I, s:{s:s}}", "mediaType", media_type, "digest", digest,
                         "size", (json_int_t) size, "annotations", REF_NAME, name);
        if (!desc)
                return kiln_error_new(err, KILN_ERR_GENERIC, "cannot build an index entry");
        json_array_append_new(manifests, desc);
        return write_index(s, index, err);
}

int layer_store_untag(struct layer_store *s, const char *name, struct kiln_error **err)
{
        _cleanup_close_ int lock = -1;
        _cleanup_json_ json_t *index = NULL;
        json_t *manifests;
        bool found = false;
        size_t i;

        if ((lock = lock_index(s, err)) < 0 || !(index = read_index(s, err)))
                return -1;
        manifests = json_object_get(index, "manifests");
        for (i = json_array_size(manifests); i > 0; i--) {
                const char *n = ref_name_of(json_array_get(manifests, i - 1));
                if (n && strcmp(n, name) == 0) {
                        json_array_remove(manifests, i - 1);
                        found = true;
                }
        }
        if (!found)
                return kiln_error_new(err, KILN_ERR_NOTFOUND, "no image named '%s' in the store",
                                      name);
        return write_index(s, index, err);
}

void layer_ref_release(struct layer_ref *ref)
{
        free(ref->name);
        free(ref->digest);
        free(ref->media_type);
        memset(ref, 0, sizeof(*ref));
}

void layer_refs_free(struct layer_ref *refs, size_t n)
{
        size_t i;

        for (i = 0; refs && i < n; i++)
                layer_ref_release(&refs[i]);
        free(refs);
}

static int cmp_refs(const void *a, const void *b)
{
        return strcmp(((const struct layer_ref *) a)->name, ((const struct layer_ref *) b)->name);
}

int layer_store_list(struct layer_store *s, struct layer_ref **ret, size_t *ret_n,
                     struct kiln_error **err)
{
        _cleanup_json_ json_t *index = read_index(s, err);
        struct layer_ref *refs;
        json_t *manifests;
        size_t i, n = 0;

        if (!index)
                return -1;
        manifests = json_object_get(index, "manifests");
        refs = xcalloc(json_array_size(manifests) + 1, sizeof(*refs));
        for (i = 0; i < json_array_size(manifests); i++) {
                json_t *d = json_array_get(manifests, i);
                const char *name = ref_name_of(d), *digest = kiln_json_get_string(d, "digest");
                const char *mt = kiln_json_get_string(d, "mediaType");

                if (!name || !digest)
                        continue;
                refs[n].name = xstrdup(name);
                refs[n].digest = xstrdup(digest);
                refs[n].media_type = xstrdup(mt ? mt : "");
                refs[n].size = (uint64_t) json_integer_value(json_object_get(d, "size"));
                n++;
        }
        qsort(refs, n, sizeof(*refs), cmp_refs);
        *ret = refs;
        *ret_n = n;
        return 0;
}

int layer_store_resolve(struct layer_store *s, const char *name, struct layer_ref *ret,
                        struct kiln_error **err)
{
        struct layer_ref *refs;
        size_t n, i;

        if (layer_store_list(s, &refs, &n, err) < 0)
                return -1;
        for (i = 0; i < n; i++) {
                if (strcmp(refs[i].name, name) == 0) {
                        *ret = refs[i];
                        memset(&refs[i], 0, sizeof(refs[i]));
                        layer_refs_free(refs, n);
                        return 0;
                }
        }
        layer_refs_free(refs, n);
        return kiln_error_new(err, KILN_ERR_NOTFOUND, "no image named '%s' in the store", name);
}

/* ---- reachability ---- */

struct digest_set {
        char **v;
        size_t n, alloc;
};

static bool set_has(const struct digest_set *set, const char *d)
{
        size_t i;

        for (i = 0; i < set->n; i++)
                if (strcmp(set->v[i], d) == 0)
                        return true;
        return false;
}

static bool set_add(struct digest_set *set, const char *d)
{
        if (set_has(set, d))
                return false;
        XGROW(set->v, set->n + 1, set->alloc);
        set->v[set->n++] = xstrdup(d);
        return true;
}

static void set_release(struct digest_set *set)
{
        size_t i;

        for (i = 0; i < set->n; i++)
                free(set->v[i]);
        free(set->v);
        memset(set, 0, sizeof(*set));
}

/*
 * Marks what a descriptor reaches: an index's manifests, a manifest's config and layers, a
 * config's diff_ids (for unpacked layers). Missing or unreadable blobs are collected as
 * problems for fsck; prune keeps going.
 */
static void mark(struct layer_store *s, json_t *desc, struct digest_set *blobs,
                 struct digest_set *diff_ids, struct digest_set *missing, unsigned depth)
{
        const char *digest = kiln_json_get_string(desc, "digest");
        const char *mt = kiln_json_get_string(desc, "mediaType");
        _cleanup_free_ char *data = NULL;
        _cleanup_json_ json_t *j = NULL;
        size_t len, i;

        if (!digest || !layer_digest_valid(digest) || depth > 8 || !set_add(blobs, digest))
                return;
        if (!layer_store_has(s, digest)) {
                set_add(missing, digest);
                return;
        }
        if (!mt || (!strstr(mt, "manifest") && !strstr(mt, "index") && !strstr(mt, "config") &&
                    !strstr(mt, "container.image")))
                return; /* a layer */
        if (layer_store_read(s, digest, MAX_METADATA, &data, &len, NULL) < 0 ||
            !(j = kiln_json_loadb(data, len, digest, NULL)))
                return;
        if (json_is_array(json_object_get(j, "manifests"))) {
                json_t *m = json_object_get(j, "manifests");
                for (i = 0; i < json_array_size(m); i++)
                        mark(s, json_array_get(m, i), blobs, diff_ids, missing, depth + 1);
        }
        if (json_is_object(json_object_get(j, "config"))) {
                json_t *config = json_object_get(j, "config"),
                       *layers = json_object_get(j, "layers");
                const char *cd = kiln_json_get_string(config, "digest");
                if (cd && layer_digest_valid(cd) && set_add(blobs, cd)) {
                        _cleanup_free_ char *cdata = NULL;
                        _cleanup_json_ json_t *cj = NULL;
                        size_t clen;
                        if (!layer_store_has(s, cd))
                                set_add(missing, cd);
                        else if (layer_store_read(s, cd, MAX_METADATA, &cdata, &clen, NULL) == 0 &&
                                 (cj = kiln_json_loadb(cdata, clen, cd, NULL))) {
                                json_t *ids =
                                        json_object_get(json_object_get(cj, "rootfs"), "diff_ids");
                                char chain[LAYER_DIGEST_SIZE] = "";
                                /* The diff_ids keep unpacked layers; their chain ids keep the
                                 * root filesystems made of them. */
                                for (i = 0; i < json_array_size(ids); i++) {
                                        const char *id = json_string_value(json_array_get(ids, i));
                                        if (!id || !layer_digest_valid(id))
                                                break;
                                        set_add(diff_ids, id);
                                        layer_chain_id(chain, id, chain);
                                        set_add(diff_ids, chain);
                                }
                        }
                }
                for (i = 0; i < json_array_size(layers); i++) {
                        const char *ld = kiln_json_get_string(json_array_get(layers, i), "digest");
                        if (ld && layer_digest_valid(ld) && set_add(blobs, ld) &&
                            !layer_store_has(s, ld))
                                set_add(missing, ld);
                }
        }
}

static int reachable(struct layer_store *s, struct digest_set *blobs, struct digest_set *diff_ids,
                     struct digest_set *missing, struct kiln_error **err)
{
        _cleanup_json_ json_t *index = read_index(s, err);
        json_t *m;
        size_t i;

        if (!index)
                return -1;
        m = json_object_get(index, "manifests");
        for (i = 0; i < json_array_size(m); i++)
                mark(s, json_array_get(m, i), blobs, diff_ids, missing, 0);
        return 0;
}

struct layer_gc {
        struct digest_set *blobs;
};

bool layer_gc_reached(const struct layer_gc *gc, const char *digest)
{
        return set_has(gc->blobs, digest);
}

void layer_gc_keep(struct layer_gc *gc, const char *digest)
{
        if (digest && layer_digest_valid(digest))
                set_add(gc->blobs, digest);
}

/* What the images reach, then what the further roots keep. */
static int mark_all(struct layer_store *s, const struct layer_gc_roots *roots,
                    struct digest_set *blobs, struct digest_set *diff_ids,
                    struct digest_set *missing, struct kiln_error **err)
{
        struct layer_gc gc = { .blobs = blobs };

        if (reachable(s, blobs, diff_ids, missing, err) < 0)
                return -1;
        if (roots && roots->mark && roots->mark(s, &gc, roots->ctx, err) < 0)
                return -1;
        return 0;
}

typedef int (*entry_fn)(struct layer_store *s, int dirfd, const char *name, void *ctx,
                        struct kiln_error **err);

/* Calls fn for each entry of a directory except "." and "..". */
static int each_entry(struct layer_store *s, int dirfd, entry_fn fn, void *ctx,
                      struct kiln_error **err)
{
        int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        struct dirent *de;
        DIR *d;
        int r = 0;

        if (fd < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "open a directory of '%s'", s->root);
        d = fdopendir(fd);
        if (!d) {
                close(fd);
                return kiln_error_errno(err, KILN_ERR_IO, "list a directory of '%s'", s->root);
        }
        while (r == 0 && (de = readdir(d)))
                if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
                        r = fn(s, dirfd, de->d_name, ctx, err);
        closedir(d);
        return r;
}

/* A temporary file nobody holds a lock on, older than a day, is left over from a crash. */
static bool temp_is_stale(int dirfd, const char *name)
{
        struct stat st;
        int fd, locked;

        if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                return false;
        if (S_ISREG(st.st_mode)) {
                fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
                if (fd < 0)
                        return false;
                locked = flock(fd, LOCK_EX | LOCK_NB);
                close(fd);
                if (locked < 0)
                        return false; /* a writer holds it */
        }
        return time(NULL) - st.st_mtime > STALE_SECONDS;
}

struct sweep {
        const struct digest_set *keep;
        const struct digest_set *keep_diff_ids;
        struct layer_prune_stats *stats;
        struct layer_fsck_report *report; /* fsck: report instead of removing */
};

static void report(struct layer_fsck_report *r, const char *fmt, ...) _printf_(2, 3);

static void report(struct layer_fsck_report *r, const char *fmt, ...)
{
        va_list ap;
        char *msg;

        va_start(ap, fmt);
        msg = xvasprintf(fmt, ap);
        va_end(ap);
        r->problems = xrealloc(r->problems, (r->n_problems + 1) * sizeof(char *));
        r->problems[r->n_problems++] = msg;
}

static int sweep_blob(struct layer_store *s, int dirfd, const char *name, void *ctx,
                      struct kiln_error **err)
{
        struct sweep *sw = ctx;
        _cleanup_free_ char *digest = xasprintf("sha256:%s", name);
        struct stat st;

        if (!layer_digest_valid(digest)) {
                if (sw->report)
                        report(sw->report, "unexpected file 'blobs/sha256/%s'", name);
                return 0;
        }
        if (set_has(sw->keep, digest))
                return 0;
        if (sw->report) {
                report(sw->report, "orphaned blob %s (no image reaches it; kiln prune removes it)",
                       digest);
                return 0;
        }
        if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && unlinkat(dirfd, name, 0) == 0) {
                int sources = openat(s->privfd, "sources", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                sw->stats->blobs_removed++;
                sw->stats->bytes_removed += (uint64_t) st.st_size;
                if (sources >= 0) {
                        unlinkat(sources, name, 0);
                        close(sources);
                }
        }
        return 0;
}

static int sweep_temp(struct layer_store *s, int dirfd, const char *name, void *ctx,
                      struct kiln_error **err)
{
        struct sweep *sw = ctx;

        if (!temp_is_stale(dirfd, name))
                return 0;
        if (sw->report) {
                report(sw->report, "stale temporary file '.kiln/tmp/%s' (kiln prune removes it)",
                       name);
                return 0;
        }
        if (layer_remove_tree(dirfd, name, NULL) == 0)
                sw->stats->temp_removed++;
        return 0;
}

static int sweep_unpacked(struct layer_store *s, int dirfd, const char *name, void *ctx,
                          struct kiln_error **err)
{
        struct sweep *sw = ctx;
        _cleanup_free_ char *diff_id = xasprintf("sha256:%s", name);

        if (name[0] == '.') {
                /* an unpack in progress, or one a crash interrupted */
                if (!sw->report && temp_is_stale(dirfd, name) &&
                    layer_remove_tree(dirfd, name, NULL) == 0)
                        sw->stats->temp_removed++;
                return 0;
        }
        if (set_has(sw->keep_diff_ids, diff_id) || sw->report)
                return 0;
        layer_remove_tree(dirfd, name, NULL);
        return 0;
}

int layer_store_prune(struct layer_store *s, struct layer_prune_stats *ret, struct kiln_error **err)
{
        return layer_store_prune_roots(s, NULL, ret, err);
}

int layer_store_prune_roots(struct layer_store *s, const struct layer_gc_roots *roots,
                            struct layer_prune_stats *ret, struct kiln_error **err)
{
        struct digest_set keep = { 0 }, diff_ids = { 0 }, missing = { 0 };
        struct layer_prune_stats stats = { 0 };
        struct sweep sw = { .keep = &keep, .keep_diff_ids = &diff_ids, .stats = &stats };
        _cleanup_close_ int lock = -1, unpacked = -1, rootfs = -1;
        int r;

        /* Exclusive GC lock: no other kiln process has the store open for writing. */
        if (flock(s->gcfd, LOCK_EX | LOCK_NB) < 0)
                return kiln_error_new(err, KILN_ERR_GENERIC,
                                      "the store '%s' is in use by another kiln process; try again "
                                      "when it is done",
                                      s->root);
        if ((lock = lock_index(s, err)) < 0)
                r = -1;
        else
                r = mark_all(s, roots, &keep, &diff_ids, &missing, err);
        if (r == 0)
                r = each_entry(s, s->blobsfd, sweep_blob, &sw, err);
        if (r == 0)
                r = each_entry(s, s->tmpfd, sweep_temp, &sw, err);
        unpacked = openat(s->privfd, "unpacked", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (r == 0 && unpacked >= 0)
                r = each_entry(s, unpacked, sweep_unpacked, &sw, err);
        rootfs = openat(s->privfd, "rootfs", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (r == 0 && rootfs >= 0)
                r = each_entry(s, rootfs, sweep_unpacked, &sw, err);
        if (r == 0)
                fsync(s->blobsfd);
        flock(s->gcfd, LOCK_SH);
        set_release(&keep);
        set_release(&diff_ids);
        set_release(&missing);
        if (r == 0 && ret)
                *ret = stats;
        return r;
}

/* ---- fsck ---- */

struct fsck_ctx {
        struct layer_fsck_report *r;
};

static int check_blob(struct layer_store *s, int dirfd, const char *name, void *ctx,
                      struct kiln_error **err)
{
        struct layer_fsck_report *r = ctx;
        _cleanup_free_ char *digest = xasprintf("sha256:%s", name);
        _cleanup_(layer_sha256_freep) struct layer_sha256 *h = NULL;
        _cleanup_close_ int fd = -1;
        char got[LAYER_DIGEST_SIZE];
        char buf[1 << 16];
        ssize_t n;

        if (!layer_digest_valid(digest))
                return 0; /* reported by the sweep */
        fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) {
                report(r, "unreadable blob %s: %s", digest, strerror(errno));
                return 0;
        }
        h = layer_sha256_new();
        while ((n = read(fd, buf, sizeof(buf))) > 0) {
                layer_sha256_update(h, buf, (size_t) n);
                r->bytes_checked += (uint64_t) n;
        }
        if (n < 0) {
                report(r, "unreadable blob %s: %s", digest, strerror(errno));
                return 0;
        }
        layer_sha256_final(h, got);
        r->blobs_checked++;
        if (strcmp(got, digest) != 0)
                report(r, "corrupt blob %s (its content hashes to %s)", digest, got);
        return 0;
}

int layer_store_fsck(struct layer_store *s, struct layer_fsck_report *ret, struct kiln_error **err)
{
        return layer_store_fsck_roots(s, NULL, ret, err);
}

int layer_store_fsck_roots(struct layer_store *s, const struct layer_gc_roots *roots,
                           struct layer_fsck_report *ret, struct kiln_error **err)
{
        struct digest_set keep = { 0 }, diff_ids = { 0 }, missing = { 0 };
        struct layer_fsck_report rep = { 0 };
        struct layer_prune_stats unused = { 0 };
        struct sweep sw = {
                .keep = &keep, .keep_diff_ids = &diff_ids, .stats = &unused, .report = &rep
        };
        size_t i;
        int r;

        r = mark_all(s, roots, &keep, &diff_ids, &missing, err);
        for (i = 0; r == 0 && i < missing.n; i++)
                report(&rep, "missing blob %s (an image refers to it)", missing.v[i]);
        if (r == 0)
                r = each_entry(s, s->blobsfd, check_blob, &rep, err);
        if (r == 0)
                r = each_entry(s, s->blobsfd, sweep_blob, &sw, err);
        if (r == 0)
                r = each_entry(s, s->tmpfd, sweep_temp, &sw, err);
        set_release(&keep);
        set_release(&diff_ids);
        set_release(&missing);
        if (r < 0) {
                layer_fsck_report_release(&rep);
                return -1;
        }
        *ret = rep;
        return 0;
}

void layer_fsck_report_release(struct layer_fsck_report *r)
{
        size_t i;

        for (i = 0; i < r->n_problems; i++)
                free(r->problems[i]);
        free(r->problems);
        memset(r, 0, sizeof(*r));
}

/* ---- unpacked layers ---- */

int layer_store_unpack(struct layer_store *s, const char *digest, const char *diff_id,
                       const struct layer_extract_opts *opts, char **ret_path,
                       struct kiln_error **err)
{
        _cleanup_close_ int unpacked = -1, blob = -1, tmp = -1;
        char tmpname[64];
        int fd;

        if (!layer_digest_valid(diff_id))
                return kiln_error_new(err, KILN_ERR_INVALID, "'%s' is not a sha256 diff_id",
                                      diff_id);
        if ((unpacked = open_dir_at(s->privfd, "unpacked", true, 0755, err)) < 0)
                return -1;
        fd = openat(unpacked, diff_id + 7, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd >= 0)
                goto done;
        if ((blob = layer_store_open_blob(s, digest, NULL, err)) < 0)
                return -1;
        temp_name(tmpname, sizeof(tmpname), ".tmp");
        if ((tmp = open_dir_at(unpacked, tmpname, true, 0755, err)) < 0)
                return -1;
        if (layer_extract(tmp, blob, digest, opts, NULL, err) < 0) {
                layer_remove_tree(unpacked, tmpname, NULL);
                return -1;
        }
        if (syncfs(tmp) < 0) {
                layer_remove_tree(unpacked, tmpname, NULL);
                return kiln_error_errno(err, KILN_ERR_IO, "sync an unpacked layer");
        }
        if (renameat(unpacked, tmpname, unpacked, diff_id + 7) < 0) {
                /* Another process finished first: use its copy. */
                int saved = errno;
                layer_remove_tree(unpacked, tmpname, NULL);
                if (saved != EEXIST && saved != ENOTEMPTY) {
                        errno = saved;
                        return kiln_error_errno(err, KILN_ERR_IO, "store unpacked layer %s",
                                                diff_id);
                }
        }
        fsync(unpacked);
        fd = openat(unpacked, diff_id + 7, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "open unpacked layer %s", diff_id);
done:
        if (ret_path)
                *ret_path = xasprintf("%s/.kiln/unpacked/%s", s->root, diff_id + 7);
        return fd;
}

int layer_store_rootfs(struct layer_store *s, const char (*digests)[LAYER_DIGEST_SIZE],
                       const char (*diff_ids)[LAYER_DIGEST_SIZE], size_t n,
                       const struct layer_extract_opts *opts, char **ret_path, struct kiln_error **err)
{
        _cleanup_close_ int dir = -1, tmp = -1;
        char chain[LAYER_DIGEST_SIZE] = "", tmpname[64];
        size_t i;
        int fd;

        if (n == 0)
                return kiln_error_new(err, KILN_ERR_INVALID, "an image without layers has no root filesystem to make");
        for (i = 0; i < n; i++) {
                if (!layer_digest_valid(diff_ids[i]))
                        return kiln_error_new(err, KILN_ERR_INVALID, "'%s' is not a sha256 diff_id", diff_ids[i]);
                layer_chain_id(chain, diff_ids[i], chain);
        }
        if ((dir = open_dir_at(s->privfd, "rootfs", true, 0755, err)) < 0)
                return -1;
        fd = openat(dir, chain + 7, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd >= 0)
                goto done;
        temp_name(tmpname, sizeof(tmpname), ".tmp");
        if ((tmp = open_dir_at(dir, tmpname, true, 0755, err)) < 0)
                return -1;
        for (i = 0; i < n; i++) {
                _cleanup_close_ int blob = layer_store_open_blob(s, digests[i], NULL, err);
                if (blob < 0 || layer_extract(tmp, blob, digests[i], opts, NULL, err) < 0) {
                        layer_remove_tree(dir, tmpname, NULL);
                        return -1;
                }
        }
        if (syncfs(tmp) < 0) {
                layer_remove_tree(dir, tmpname, NULL);
                return kiln_error_errno(err, KILN_ERR_IO, "sync a root filesystem");
        }
        if (renameat(dir, tmpname, dir, chain + 7) < 0) {
                int saved = errno;
                layer_remove_tree(dir, tmpname, NULL);
                if (saved != EEXIST && saved != ENOTEMPTY) {
                        errno = saved;
                        return kiln_error_errno(err, KILN_ERR_IO, "store root filesystem %s", chain);
                }
        }
        fsync(dir);
        fd = openat(dir, chain + 7, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "open root filesystem %s", chain);
done:
        if (ret_path)
                *ret_path = xasprintf("%s/.kiln/rootfs/%s", s->root, chain + 7);
        return fd;
}

int layer_store_scratch(struct layer_store *s, char **ret_name, struct kiln_error **err)
{
        char name[64];
        int fd;

        temp_name(name, sizeof(name), "scratch");
        fd = open_dir_at(s->tmpfd, name, true, 0755, err);
        if (fd < 0)
                return -1;
        *ret_name = xstrdup(name);
        return fd;
}

void layer_store_scratch_remove(struct layer_store *s, const char *name)
{
        if (name && strchr(name, '/') == NULL)
                layer_remove_tree(s->tmpfd, name, NULL);
}

#define MAX_SOURCES 16

void layer_store_note_source(struct layer_store *s, const char *digest, const char *repo)
{
        char **known;
        _cleanup_close_ int dir = -1, fd = -1;
        _cleanup_free_ char *line = NULL;
        size_t n;

        if (!layer_digest_valid(digest) || strchr(repo, '\n'))
                return;
        known = layer_store_sources(s, digest);
        for (n = 0; known[n]; n++)
                if (strcmp(known[n], repo) == 0)
                        break;
        if (known[n] || n >= MAX_SOURCES) {
                strv_free(known);
                return;
        }
        strv_free(known);
        dir = open_dir_at(s->privfd, "sources", true, 0700, NULL);
        if (dir < 0)
                return;
        /* One short O_APPEND write per line: concurrent writers interleave whole lines. */
        fd = openat(dir, digest + 7, O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0)
                return;
        line = xasprintf("%s\n", repo);
        if (write(fd, line, strlen(line)) < 0)
                return;
}

char **layer_store_sources(struct layer_store *s, const char *digest)
{
        _cleanup_close_ int dir = -1;
        _cleanup_free_ char *text = NULL;
        char **v = xcalloc(MAX_SOURCES + 2, sizeof(char *));
        char *line, *save = NULL;
        size_t len, n = 0;

        if (!layer_digest_valid(digest))
                return v;
        dir = openat(s->privfd, "sources", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (dir < 0 || kiln_read_file_at(dir, digest + 7, 64 << 10, &text, &len, NULL) < 0)
                return v;
        for (line = strtok_r(text, "\n", &save); line && n <= MAX_SOURCES; line = strtok_r(NULL, "\n", &save))
                v[n++] = xstrdup(line);
        return v;
}
