/*
 * The digests of the build context's files, kept between builds so that a rebuild does not read
 * what it read before: one record per context (by its absolute path) in the store's
 * .kiln/context/, mapping a file's path in the context to its stat (device, inode, size, mtime
 * and ctime in nanoseconds) and the sha256 of its content. A file whose stat still matches is
 * neither opened nor read; anything else is read and its entry replaced.
 *
 * A stat proves nothing about a file changed within the same timestamp tick as it was read (git's
 * "racily clean" entries): a file whose mtime or ctime is less than RACY_SECONDS before the read
 * began is hashed but not kept. Entries are only hints: one that matches nothing is read again,
 * so two builds writing the record at once (the last one wins) cannot make a wrong digest.
 * The record is loaded on the first file asked for and written back once, when the build ends.
 *
 * Entries of files that are gone must not pile up: each write of the record is a generation, an
 * entry notes the last one that used it (renewed every REFRESH generations, so a no-op rebuild
 * need not write), and one unused for KEEP generations is dropped.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "builder/builder-internal.h"
#include "builder/common/fd-util.h"
#include "builder/common/xalloc.h"

#define CHUNK_SIZE     (64 * 1024)
#define RACY_SECONDS   2
#define RECORD_VERSION 1
#define RECORD_MAX     (256 * 1024 * 1024)
#define REFRESH        8
#define KEEP           64

struct bld_context_sums {
        pthread_mutex_t lock;
        bool loaded;
        int dirfd;     /* the store's .kiln/context, or -1: nothing is kept between builds */
        char *name;    /* "<sha256 of the context's path>.json" */
        char *context; /* the context's absolute path */
        json_t *files; /* path -> [dev, ino, size, mtime_ns, ctime_ns, "sha256:...", gen] */
        json_int_t generation; /* this build's: the record's last one plus one */
        bool dirty;
};

static int64_t ns_of(const struct timespec *t)
{
        return (int64_t) t->tv_sec * 1000000000 + t->tv_nsec;
}

static struct bld_context_sums *sums_of(struct bld_build *b)
{
        struct bld_context_sums *s;

        pthread_mutex_lock(&b->lock);
        s = b->context_sums;
        if (!s) {
                s = xcalloc(1, sizeof(*s));
                pthread_mutex_init(&s->lock, NULL);
                s->dirfd = -1;
                b->context_sums = s;
        }
        pthread_mutex_unlock(&b->lock);
        return s;
}

/* The record's directory and name; none for a context that lives only for this build. */
static void record_open(struct bld_build *b, struct bld_context_sums *s)
{
        _cleanup_free_ char *link = xasprintf("/proc/self/fd/%d", b->o->context_fd);
        _cleanup_free_ char *kiln = xasprintf("%s/.kiln", layer_store_root(b->o->store));
        _cleanup_free_ char *dir = xasprintf("%s/context", kiln);
        _cleanup_(layer_sha256_freep) struct layer_sha256 *h = NULL;
        char path[4096], digest[LAYER_DIGEST_SIZE];
        ssize_t n;

        if (b->o->context_spooled)
                return;
        n = readlink(link, path, sizeof(path) - 1);
        if (n <= 0 || path[0] != '/')
                return;
        path[n] = '\0';
        h = layer_sha256_new();
        layer_sha256_update(h, path, (size_t) n);
        layer_sha256_final(h, digest);
        (void) mkdir(kiln, 0755);
        if (mkdir(dir, 0755) < 0 && errno != EEXIST)
                return;
        s->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (s->dirfd < 0)
                return;
        s->name = xasprintf("%s.json", digest + strlen("sha256:"));
        s->context = xstrdup(path);
}

/* Loads the record (best effort: a missing or unreadable one is an empty one). Under s->lock. */
static void sums_load(struct bld_build *b, struct bld_context_sums *s)
{
        _cleanup_close_ int fd = -1;
        _cleanup_free_ char *data = NULL;
        size_t len;
        json_t *j, *files;

        s->loaded = true;
        s->files = json_object();
        s->generation = 1;
        record_open(b, s);
        if (s->dirfd < 0)
                return;
        fd = openat(s->dirfd, s->name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0 || kiln_read_fd_all(fd, RECORD_MAX, &data, &len, NULL) < 0)
                return;
        j = json_loadb(data, len, 0, NULL);
        files = json_object_get(j, "files");
        if (json_integer_value(json_object_get(j, "version")) == RECORD_VERSION &&
            json_is_object(files) && json_is_string(json_object_get(j, "context")) &&
            strcmp(json_string_value(json_object_get(j, "context")), s->context) == 0) {
                json_decref(s->files);
                s->files = json_incref(files);
                s->generation = json_integer_value(json_object_get(j, "generation")) + 1;
        }
        json_decref(j);
}

static bool same_stat(json_t *entry, const struct stat *st, const char **ret_digest,
                      json_int_t *ret_gen)
{
        json_int_t dev, ino, size, mtime, ctime;
        const char *digest;

        if (json_unpack(entry, "[I, I, I, I, I, s, I]", &dev, &ino, &size, &mtime, &ctime, &digest,
                        ret_gen) < 0)
                return false;
        if ((uint64_t) dev != (uint64_t) st->st_dev || (uint64_t) ino != (uint64_t) st->st_ino ||
            size != (json_int_t) st->st_size || mtime != ns_of(&st->st_mtim) ||
            ctime != ns_of(&st->st_ctim) || !layer_digest_valid(digest))
                return false;
        *ret_digest = digest;
        return true;
}

static bool same_file(const struct stat *a, const struct stat *b)
{
        return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
               ns_of(&a->st_mtim) == ns_of(&b->st_mtim) &&
               ns_of(&a->st_ctim) == ns_of(&b->st_ctim) && a->st_mode == b->st_mode;
}

/* Reads the file and hashes it; *ret_st is its stat before the read. */
static int hash_file(const struct cp_entry *e, struct stat *ret_st, char ret[LAYER_DIGEST_SIZE],
                     struct kiln_error **err)
{
        _cleanup_close_ int fd = -1;
        _cleanup_(layer_sha256_freep) struct layer_sha256 *h = NULL;
        _cleanup_free_ char *buf = NULL;
        struct stat before, after;

        /* O_NONBLOCK: a fifo swapped in cannot block us (the inode is checked) */
        fd = openat(e->dirfd, e->name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
        if (fd < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "open '/%s'", e->path);
        if (fstat(fd, &before) < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "stat '/%s'", e->path);
        if (!same_file(&before, e->st))
                return kiln_error_new(err, KILN_ERR_IO, "'/%s' changed while being read", e->path);
        h = layer_sha256_new();
        buf = xmalloc(CHUNK_SIZE);
        for (;;) {
                ssize_t n = read(fd, buf, CHUNK_SIZE);

                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return kiln_error_errno(err, KILN_ERR_IO, "read '/%s'", e->path);
                if (n == 0)
                        break;
                layer_sha256_update(h, buf, (size_t) n);
        }
        if (fstat(fd, &after) < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "stat '/%s'", e->path);
        if (!same_file(&before, &after))
                return kiln_error_new(err, KILN_ERR_IO, "'/%s' changed while being read", e->path);
        layer_sha256_final(h, ret);
        *ret_st = before;
        return 0;
}

int bld_context_hash_file(const struct cp_entry *e, char ret[LAYER_DIGEST_SIZE],
                          struct kiln_error **err)
{
        struct stat st;

        return hash_file(e, &st, ret, err);
}

int bld_context_digest(struct bld_build *b, const struct cp_entry *e, char ret[LAYER_DIGEST_SIZE],
                       struct kiln_error **err)
{
        struct bld_context_sums *s = sums_of(b);
        struct timespec now;
        struct stat st = { 0 };
        const char *known = NULL;
        json_t *entry;
        json_int_t gen = 0;
        int64_t newest;

        pthread_mutex_lock(&s->lock);
        if (!s->loaded)
                sums_load(b, s);
        entry = json_object_get(s->files, e->path);
        if (same_stat(entry, e->st, &known, &gen)) {
                snprintf(ret, LAYER_DIGEST_SIZE, "%s", known);
                if (gen + REFRESH <= s->generation) {
                        json_array_set_new(entry, 6, json_integer(s->generation));
                        s->dirty = true;
                }
        }
        pthread_mutex_unlock(&s->lock);
        if (known)
                return 0;

        clock_gettime(CLOCK_REALTIME, &now);
        if (hash_file(e, &st, ret, err) < 0)
                return -1;
        newest = ns_of(&st.st_mtim) > ns_of(&st.st_ctim) ? ns_of(&st.st_mtim) : ns_of(&st.st_ctim);
        if (newest + (int64_t) RACY_SECONDS * 1000000000 >= ns_of(&now))
                return 0; /* racily clean: its stat cannot vouch for its content next time */
        pthread_mutex_lock(&s->lock);
        json_object_set_new(s->files, e->path,
                            json_pack("[I, I, I, I, I, s, I]", (json_int_t) st.st_dev,
                                      (json_int_t) st.st_ino, (json_int_t) st.st_size,
                                      (json_int_t) ns_of(&st.st_mtim),
                                      (json_int_t) ns_of(&st.st_ctim), ret, s->generation));
        s->dirty = true;
        pthread_mutex_unlock(&s->lock);
        return 0;
}

static atomic_uint tmp_seq;

/* Writes the record back (temp file, fsync, rename): best effort, a lost record costs reads. */
static void sums_save(struct bld_context_sums *s)
{
        _cleanup_free_ char *tmp = NULL, *data = NULL;
        const char *path;
        json_t *j, *entry;
        void *iter;
        int fd;

        if (!s->dirty || s->dirfd < 0)
                return;
        json_object_foreach_safe(s->files, iter, path,
                                 entry) if (json_integer_value(json_array_get(entry, 6)) + KEEP <
                                            s->generation) json_object_del(s->files, path);
        j = json_pack("{s:i, s:s, s:I, s:O}", "version", RECORD_VERSION, "context", s->context,
                      "generation", s->generation, "files", s->files);
        data = j ? json_dumps(j, JSON_COMPACT) : NULL;
        json_decref(j);
        if (!data)
                return;
        /* unique per process and call: builds of one context may end at once */
        tmp = xasprintf(".tmp-%s-%d-%u", s->name, (int) getpid(), atomic_fetch_add(&tmp_seq, 1));
        fd = openat(s->dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (fd < 0)
                return;
        if (kiln_write_all(fd, data, strlen(data), NULL) < 0 || fsync(fd) < 0 ||
            renameat(s->dirfd, tmp, s->dirfd, s->name) < 0)
                (void) unlinkat(s->dirfd, tmp, 0);
        close(fd);
        s->dirty = false;
}

void bld_context_sums_close(struct bld_build *b)
{
        struct bld_context_sums *s = b->context_sums;

        if (!s)
                return;
        sums_save(s);
        if (s->dirfd >= 0)
                close(s->dirfd);
        json_decref(s->files);
        free(s->name);
        free(s->context);
        pthread_mutex_destroy(&s->lock);
        free(s);
        b->context_sums = NULL;
}
