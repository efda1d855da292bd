/*
 * A change list -> a reproducible PAX tar, streamed through two hashes and a compressor.
 *
 * Reproducible: entries in the list's order (sorted, parents first), numeric ids without
 * names, mtimes truncated to seconds (as Docker does) and clamped to SOURCE_DATE_EPOCH when
 * set, no atime/ctime, hardlinks to the first path, whiteouts as empty files with mode 0 and
 * mtime 0, and libarchive's PAX headers without process ids.
 */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "builder/common/fd-util.h"
#include "builder/common/xalloc.h"
#include "layers/layers-internal.h"

#define READ_CHUNK (1u << 20)

/* (dev, inode) -> the first path written for it, for hardlinks. */
struct link_slot {
        dev_t dev;
        ino_t ino;
        const char *path;
};

struct link_map {
        struct link_slot *slots;
        size_t cap, n;
};

static size_t link_hash(dev_t dev, ino_t ino, size_t cap)
{
        uint64_t h =
                ((uint64_t) dev * 0x9E3779B97F4A7C15ull) ^ ((uint64_t) ino * 0xC2B2AE3D27D4EB4Full);

        return (size_t) (h ^ (h >> 29)) & (cap - 1);
}

/* Returns the first path for (dev, ino), recording `path` as it when there is none yet. */
static const char *link_first(struct link_map *m, dev_t dev, ino_t ino, const char *path)
{
        size_t i;

        if ((m->n + 1) * 2 > m->cap) {
                struct link_map bigger = { .cap = m->cap ? m->cap * 2 : 64 };
                bigger.slots = xcalloc(bigger.cap, sizeof(*bigger.slots));
                for (i = 0; i < m->cap; i++) {
                        if (m->slots[i].path) {
                                size_t k = link_hash(m->slots[i].dev, m->slots[i].ino, bigger.cap);
                                while (bigger.slots[k].path)
                                        k = (k + 1) & (bigger.cap - 1);
                                bigger.slots[k] = m->slots[i];
                        }
                }
                bigger.n = m->n;
                free(m->slots);
                *m = bigger;
        }
        for (i = link_hash(dev, ino, m->cap); m->slots[i].path; i = (i + 1) & (m->cap - 1))
                if (m->slots[i].dev == dev && m->slots[i].ino == ino)
                        return m->slots[i].path;
        m->slots[i] = (struct link_slot){ .dev = dev, .ino = ino, .path = path };
        m->n++;
        return NULL;
}

/*
 * Compressed bytes go to the sink on a thread of their own (hashed there too), so that the
 * main thread keeps reading, framing and feeding the compressor. A few fixed buffers bound
 * the memory.
 */
#define OUT_SLOTS     4
#define OUT_SLOT_SIZE (1u << 20)

struct out_slot {
        char *data;
        size_t len;
};

struct out_queue {
        pthread_t thread;
        pthread_mutex_t lock;
        pthread_cond_t cond;
        struct out_slot slots[OUT_SLOTS];
        unsigned head, count;    /* slots[head] is the next to write; count are full */
        struct out_slot filling; /* the slot the main thread appends to */
        bool done;               /* no more data will come */
        bool failed;             /* the sink failed: err holds why */
        struct kiln_error *err;
        const struct layer_sink *sink;
        struct layer_sha256 *hash;
        uint64_t size;
};

static void *out_thread(void *arg)
{
        struct out_queue *q = arg;

        pthread_mutex_lock(&q->lock);
        for (;;) {
                struct out_slot slot;

                while (q->count == 0 && !q->done)
                        pthread_cond_wait(&q->cond, &q->lock);
                if (q->count == 0)
                        break;
                slot = q->slots[q->head];
                pthread_mutex_unlock(&q->lock);
                if (q->hash)
                        layer_sha256_update(q->hash, slot.data, slot.len);
                q->size += slot.len;
                if (!q->failed && q->sink->write(q->sink->ctx, slot.data, slot.len, &q->err) < 0)
                        q->failed = true;
                pthread_mutex_lock(&q->lock);
                q->head = (q->head + 1) % OUT_SLOTS;
                q->count--;
                pthread_cond_broadcast(&q->cond);
        }
        pthread_mutex_unlock(&q->lock);
        return NULL;
}

/* Hands the filling slot to the writer thread, waiting for a free one. */
static void out_flush(struct out_queue *q)
{
        if (q->filling.len == 0)
                return;
        pthread_mutex_lock(&q->lock);
        while (q->count == OUT_SLOTS)
                pthread_cond_wait(&q->cond, &q->lock);
        q->slots[(q->head + q->count) % OUT_SLOTS].len = q->filling.len;
        /* swap buffers: the queue keeps the full one, we take its old (written) one */
        {
                unsigned i = (q->head + q->count) % OUT_SLOTS;
                char *full = q->filling.data;
                q->filling.data = q->slots[i].data;
                q->slots[i].data = full;
        }
        q->count++;
        q->filling.len = 0;
        pthread_cond_broadcast(&q->cond);
        pthread_mutex_unlock(&q->lock);
}

static int out_write(void *ctx, const void *data, size_t len, struct kiln_error **err)
{
        struct out_queue *q = ctx;
        const char *p = data;

        if (q->failed)
                return kiln_error_new(err, KILN_ERR_IO, "layer output failed");
        while (len > 0) {
                size_t n = OUT_SLOT_SIZE - q->filling.len;
                if (n > len)
                        n = len;
                memcpy(q->filling.data + q->filling.len, p, n);
                q->filling.len += n;
                p += n;
                len -= n;
                if (q->filling.len == OUT_SLOT_SIZE)
                        out_flush(q);
        }
        return 0;
}

static void out_start(struct out_queue *q, const struct layer_sink *sink, bool hash)
{
        unsigned i;

        memset(q, 0, sizeof(*q));
        pthread_mutex_init(&q->lock, NULL);
        pthread_cond_init(&q->cond, NULL);
        for (i = 0; i < OUT_SLOTS; i++)
                q->slots[i].data = xmalloc(OUT_SLOT_SIZE);
        q->filling.data = xmalloc(OUT_SLOT_SIZE);
        q->sink = sink;
        q->hash = hash ? layer_sha256_new() : NULL;
        if (pthread_create(&q->thread, NULL, out_thread, q) != 0)
                abort();
}

/* Flushes, waits for the writer thread and frees the queue; -1 when the sink failed. */
static int out_finish(struct out_queue *q, struct kiln_error **err)
{
        unsigned i;
        int r = 0;

        out_flush(q);
        pthread_mutex_lock(&q->lock);
        q->done = true;
        pthread_cond_broadcast(&q->cond);
        pthread_mutex_unlock(&q->lock);
        pthread_join(q->thread, NULL);
        if (q->failed) {
                if (err && !*err)
                        *err = q->err;
                else
                        kiln_error_free(q->err);
                q->err = NULL;
                r = -1;
        }
        for (i = 0; i < OUT_SLOTS; i++)
                free(q->slots[i].data);
        free(q->filling.data);
        pthread_mutex_destroy(&q->lock);
        pthread_cond_destroy(&q->cond);
        return r;
}

struct writer {
        struct archive *tar;
        struct layer_sha256 *diff_hash;
        struct compressor *comp;
        struct out_queue queue;   /* hashes the compressed bytes and calls the sink */
        struct layer_sink queued; /* writes into `queue` */
        struct kiln_error **err;
        bool failed; /* a callback set *err */
        uint64_t tar_size;
        char *buf;
};

static la_ssize_t tar_write(struct archive *a, void *ctx, const void *buf, size_t len)
{
        struct writer *w = ctx;

        layer_sha256_update(w->diff_hash, buf, len);
        w->tar_size += len;
        if (compressor_write(w->comp, buf, len, w->err) < 0) {
                w->failed = true;
                archive_set_error(a, EIO, "compressor failed");
                return -1;
        }
        return (la_ssize_t) len;
}

static int tar_fail(struct writer *w, const char *path, struct kiln_error **err)
{
        if (w->failed)
                return kiln_error_wrap(err, "layer entry '%s'", path);
        return kiln_error_new(err, KILN_ERR_IO, "layer entry '%s': %s", path,
                              archive_error_string(w->tar));
}

static time_t entry_mtime(const struct layer_entry *e, const struct layer_write_opts *opts)
{
        time_t t = e->st.st_mtim.tv_sec;

        if (opts->source_date_epoch >= 0 && t > opts->source_date_epoch)
                t = (time_t) opts->source_date_epoch;
        return t;
}

/* Copies a regular file's content into the current entry, exactly `size` bytes. */
static int write_content(struct writer *w, int dirfd, const char *path, int64_t size,
                         struct kiln_error **err)
{
        _cleanup_close_ int fd =
                kiln_open_in_root(dirfd, path, O_RDONLY | O_NOFOLLOW | O_NOCTTY, 0, err);
        int64_t left = size;

        if (fd < 0)
                return kiln_error_wrap(err, "layer entry '%s'", path);
        posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
        while (left > 0) {
                size_t want = left < READ_CHUNK ? (size_t) left : READ_CHUNK;
                ssize_t n = read(fd, w->buf, want);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return kiln_error_errno(err, KILN_ERR_IO, "read '%s'", path);
                }
                if (n == 0)
                        return kiln_error_new(err, KILN_ERR_IO,
                                              "'%s' shrank while it was being archived", path);
                if (archive_write_data(w->tar, w->buf, (size_t) n) != n)
                        return tar_fail(w, path, err);
                left -= n;
        }
        return 0;
}

static int write_whiteout(struct writer *w, struct archive_entry *ae, const char *path,
                          const char *marker_dir, struct kiln_error **err)
{
        _cleanup_free_ char *name = NULL;
        const char *slash = strrchr(path, '/');

        if (marker_dir)
                name = xasprintf("%s/.wh..wh..opq", marker_dir);
        else if (slash)
                name = xasprintf("%.*s/.wh.%s", (int) (slash - path), path, slash + 1);
        else
                name = xasprintf(".wh.%s", path);
        archive_entry_clear(ae);
        archive_entry_set_pathname(ae, name);
        archive_entry_set_filetype(ae, AE_IFREG);
        archive_entry_set_perm(ae, 0);
        archive_entry_set_size(ae, 0);
        archive_entry_set_mtime(ae, 0, 0);
        if (archive_write_header(w->tar, ae) != ARCHIVE_OK)
                return tar_fail(w, name, err);
        return 0;
}

static int write_entry(struct writer *w, struct archive_entry *ae, struct link_map *links,
                       const struct layer_changes *c, const struct layer_entry *e,
                       const struct layer_write_opts *opts, struct kiln_error **err)
{
        const struct stat *st = &e->st;
        const char *first = NULL;
        size_t i;

        if (e->kind == LAYER_CHANGE_DELETE)
                return write_whiteout(w, ae, e->path, NULL, err);

        archive_entry_clear(ae);
        archive_entry_set_pathname(ae, e->path);
        archive_entry_set_perm(ae, st->st_mode & 07777);
        archive_entry_set_uid(ae, st->st_uid);
        archive_entry_set_gid(ae, st->st_gid);
        archive_entry_set_mtime(ae, entry_mtime(e, opts), 0);
        for (i = 0; i < e->n_xattrs; i++)
                archive_entry_xattr_add_entry(ae, e->xattrs[i].name, e->xattrs[i].value,
                                              e->xattrs[i].len);
        switch (st->st_mode & S_IFMT) {
        case S_IFREG:
                if (st->st_nlink > 1)
                        first = link_first(links, st->st_dev, st->st_ino, e->path);
                if (first) {
                        archive_entry_set_filetype(ae, AE_IFREG);
                        archive_entry_set_hardlink(ae, first);
                        archive_entry_set_size(ae, 0);
                        break;
                }
                archive_entry_set_filetype(ae, AE_IFREG);
                archive_entry_set_size(ae, st->st_size);
                break;
        case S_IFDIR:
                archive_entry_set_filetype(ae, AE_IFDIR);
                break;
        case S_IFLNK:
                archive_entry_set_filetype(ae, AE_IFLNK);
                archive_entry_set_symlink(ae, e->link_target ? e->link_target : "");
                break;
        case S_IFCHR:
        case S_IFBLK:
                archive_entry_set_filetype(ae, S_ISCHR(st->st_mode) ? AE_IFCHR : AE_IFBLK);
                archive_entry_set_rdevmajor(ae, major(st->st_rdev));
                archive_entry_set_rdevminor(ae, minor(st->st_rdev));
                break;
        case S_IFIFO:
                archive_entry_set_filetype(ae, AE_IFIFO);
                break;
        default:
                return 0; /* sockets do not belong in images */
        }
        if (archive_write_header(w->tar, ae) != ARCHIVE_OK)
                return tar_fail(w, e->path, err);
        if (S_ISREG(st->st_mode) && !first && st->st_size > 0 &&
            write_content(w, c->dirfd, e->path, st->st_size, err) < 0)
                return -1;
        if (S_ISDIR(st->st_mode) && e->opaque)
                return write_whiteout(w, ae, e->path, e->path, err);
        return 0;
}

int layer_write(const struct layer_changes *changes, const struct layer_write_opts *opts,
                const struct layer_sink *sink, struct layer_desc *ret, struct kiln_error **err)
{
        struct writer w = { .err = err };
        struct link_map links = { 0 };
        struct archive_entry *ae = NULL;
        size_t i;
        int r = -1;

        /* Uncompressed, the blob is the tar: its digest is the diff_id, hashed once. */
        out_start(&w.queue, sink, opts->compression != LAYER_COMPRESSION_NONE);
        w.queued = (struct layer_sink){ .write = out_write, .ctx = &w.queue };
        w.diff_hash = layer_sha256_new();
        w.buf = xmalloc(READ_CHUNK);
        w.comp = compressor_new(opts, &w.queued, err);
        if (!w.comp)
                goto out;
        w.tar = archive_write_new();
        if (!w.tar)
                abort();
        /* PAX extensions only where ustar cannot say it (long names, xattrs, big ids). */
        /* xattrs as SCHILY.xattr only, the form Go's archive/tar (containerd) reads. */
        if (archive_write_set_format_pax_restricted(w.tar) != ARCHIVE_OK ||
            archive_write_set_format_option(w.tar, "pax", "xattrheader", "SCHILY") != ARCHIVE_OK ||
            archive_write_set_bytes_per_block(w.tar, 65536) != ARCHIVE_OK ||
            archive_write_set_bytes_in_last_block(w.tar, 1) != ARCHIVE_OK ||
            archive_write_open2(w.tar, &w, NULL, tar_write, NULL, NULL) != ARCHIVE_OK) {
                kiln_error_new(err, KILN_ERR_IO, "tar: %s", archive_error_string(w.tar));
                goto out;
        }
        ae = archive_entry_new();
        for (i = 0; i < changes->n; i++)
                if (write_entry(&w, ae, &links, changes, &changes->entries[i], opts, err) < 0)
                        goto out;
        if (archive_write_close(w.tar) != ARCHIVE_OK) {
                tar_fail(&w, "(end of archive)", err);
                goto out;
        }
        if (compressor_finish(w.comp, err) < 0)
                goto out;
        r = 0;
out:
        /* Freeing an unfinished archive or compressor flushes into the queue: do it while the
         * queue is alive. After a failure those bytes go to a sink the caller aborts. */
        if (ae)
                archive_entry_free(ae);
        if (w.tar)
                archive_write_free(w.tar);
        compressor_free(w.comp);
        /* The writer thread is always joined; its sink error wins when there was one. */
        if (out_finish(&w.queue, err) < 0)
                r = -1;
        if (r == 0) {
                memset(ret, 0, sizeof(*ret));
                layer_sha256_final(w.diff_hash, ret->diff_id);
                if (w.queue.hash)
                        layer_sha256_final(w.queue.hash, ret->digest);
                else
                        memcpy(ret->digest, ret->diff_id, LAYER_DIGEST_SIZE);
                ret->size = w.queue.size;
                ret->tar_size = w.tar_size;
                ret->compression = opts->compression;
        }
        layer_sha256_free(w.diff_hash);
        layer_sha256_free(w.queue.hash);
        free(w.buf);
        free(links.slots);
        return r;
}

const char *layer_archive_version(void)
{
        return archive_version_string();
}
