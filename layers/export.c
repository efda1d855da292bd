/*
 * Exporting an image from the store: an OCI image layout as a tar stream or a directory,
 * a Docker archive (the same tar plus manifest.json, as `docker save` writes since Docker 25,
 * loadable by `docker load` and `podman load`), or the image's root filesystem.
 *
 * Blobs are streamed from the store with a fixed buffer; only the manifest and the config are
 * read whole (both are bounded small JSON). Tar entries are reproducible: sorted by nothing but
 * the manifest's own order, numeric owner 0, mode 0644/0755 and the given mtime.
 */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "builder/common/fd-util.h"
#include "builder/common/json-util.h"
#include "builder/common/xalloc.h"
#include "layers/layers-internal.h"

#define MAX_METADATA (4u << 20)
#define OCI_LAYOUT   "{\"imageLayoutVersion\":\"1.0.0\"}"
#define INDEX_TYPE   "application/vnd.oci.image.index.v1+json"
#define BUF_SIZE     (128u << 10)

/* Where the files go: a tar stream or a directory. */
struct exporter {
        const struct layer_export_opts *opts;
        struct archive *tar; /* or: */
        int dirfd;           /* the layout directory */
        char *buf;
};

static int tar_error(struct exporter *x, const char *what, struct kiln_error **err)
{
        return kiln_error_new(err, KILN_ERR_IO, "export: write %s: %s", what,
                              archive_error_string(x->tar));
}

static int tar_header(struct exporter *x, const char *name, mode_t type, mode_t perm, int64_t size,
                      struct kiln_error **err)
{
        struct archive_entry *e = archive_entry_new();
        int r;

        archive_entry_set_pathname(e, name);
        archive_entry_set_filetype(e, type);
        archive_entry_set_perm(e, perm);
        archive_entry_set_size(e, type == AE_IFREG ? size : 0);
        archive_entry_set_uid(e, 0);
        archive_entry_set_gid(e, 0);
        archive_entry_set_mtime(e, x->opts->mtime, 0);
        r = archive_write_header(x->tar, e);
        archive_entry_free(e);
        return r == ARCHIVE_OK ? 0 : tar_error(x, name, err);
}

static int put_dir(struct exporter *x, const char *name, struct kiln_error **err)
{
        if (x->tar) {
                _cleanup_free_ char *slash = xasprintf("%s/", name);
                return tar_header(x, slash, AE_IFDIR, 0755, 0, err);
        }
        if (mkdirat(x->dirfd, name, 0755) < 0 && errno != EEXIST)
                return kiln_error_errno(err, KILN_ERR_IO, "export: make '%s'", name);
        return 0;
}

/* Writes a small file whole: a directory entry is replaced by rename, so readers never see
 * half of it. */
static int put_data(struct exporter *x, const char *name, const char *data, size_t len,
                    struct kiln_error **err)
{
        if (x->tar) {
                if (tar_header(x, name, AE_IFREG, 0644, (int64_t) len, err) < 0)
                        return -1;
                if (len && archive_write_data(x->tar, data, len) != (la_ssize_t) len)
                        return tar_error(x, name, err);
                return 0;
        }
        return kiln_write_file_atomic_at(x->dirfd, name, data, len, err);
}

/* Streams a blob from the store, checking that its size is what the manifest says. */
static int put_blob(struct exporter *x, const struct layer_store *store, const char *digest,
                    struct kiln_error **err)
{
        _cleanup_free_ char *name = NULL;
        _cleanup_free_ char *tmp = NULL;
        _cleanup_close_ int in = -1, out = -1;
        uint64_t size, done = 0;
        ssize_t n;

        if (!layer_digest_valid(digest))
                return kiln_error_new(err, KILN_ERR_INVALID, "export: bad digest '%s'", digest);
        name = xasprintf("blobs/sha256/%s", digest + 7);
        if (!x->tar && faccessat(x->dirfd, name, F_OK, AT_SYMLINK_NOFOLLOW) == 0)
                return 0; /* content-addressed: already there */
        in = layer_store_open_blob(store, digest, &size, err);
        if (in < 0)
                return -1;
        if (x->tar) {
                if (tar_header(x, name, AE_IFREG, 0644, (int64_t) size, err) < 0)
                        return -1;
        } else {
                tmp = xasprintf("blobs/sha256/.tmp-%s", digest + 7);
                out = openat(x->dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC,
                             0644);
                if (out < 0)
                        return kiln_error_errno(err, KILN_ERR_IO, "export: create '%s'", tmp);
        }
        while ((n = read(in, x->buf, BUF_SIZE)) != 0) {
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return kiln_error_errno(err, KILN_ERR_IO, "export: read blob %s", digest);
                }
                if (done + (uint64_t) n > size)
                        break;
                if (x->tar ? archive_write_data(x->tar, x->buf, (size_t) n) != n
                           : kiln_write_all(out, x->buf, (size_t) n, err) < 0)
                        return x->tar ? tar_error(x, name, err) : -1;
                done += (uint64_t) n;
        }
        if (done != size)
                return kiln_error_new(err, KILN_ERR_IO, "export: blob %s changed size while read",
                                      digest);
        if (!x->tar && (fsync(out) < 0 || renameat(x->dirfd, tmp, x->dirfd, name) < 0)) {
                kiln_error_errno(err, KILN_ERR_IO, "export: write '%s'", name);
                (void) unlinkat(x->dirfd, tmp, 0);
                return -1;
        }
        return 0;
}

static json_t *load_blob_json(const struct layer_store *store, const char *digest, const char *what,
                              struct kiln_error **err)
{
        _cleanup_free_ char *data = NULL;
        size_t len;

        if (layer_store_read(store, digest, MAX_METADATA, &data, &len, err) < 0)
                return NULL;
        return kiln_json_loadb(data, len, what, err);
}

static const char *desc_digest(json_t *desc)
{
        return json_string_value(json_object_get(desc, "digest"));
}

/* index.json: the image once per name (annotated), or once unnamed. */
static char *index_json(const struct layer_export_image *img, const struct layer_export_opts *o)
{
        _cleanup_json_ json_t *idx = json_pack("{s:i, s:s, s:[]}", "schemaVersion", 2, "mediaType",
                                               INDEX_TYPE, "manifests");
        json_t *list = json_object_get(idx, "manifests");
        size_t i, n = o->n_names ? o->n_names : 1;

        for (i = 0; i < n; i++) {
                json_t *d = json_pack("{s:s, s:s, s:I}", "mediaType", img->media_type, "digest",
                                      img->digest, "size", (json_int_t) img->size);
                if (o->n_names) {
                        json_t *a = json_object();
                        json_object_set_new(a, "io.containerd.image.name",
                                            json_string(o->names[i].full));
                        json_object_set_new(a, "org.opencontainers.image.ref.name",
                                            json_string(o->names[i].ref_name));
                        json_object_set_new(d, "annotations", a);
                }
                json_array_append_new(list, d);
        }
        return json_dumps(idx, JSON_COMPACT | JSON_PRESERVE_ORDER);
}

/* manifest.json of a Docker archive: paths into the layout's blobs. */
static char *docker_manifest_json(json_t *manifest, const struct layer_export_opts *o)
{
        _cleanup_json_ json_t *list = json_array();
        json_t *m = json_object(), *tags = json_array(), *layers = json_array(), *l;
        size_t i;

        json_object_set_new(m, "Config",
                            json_sprintf("blobs/sha256/%s",
                                         desc_digest(json_object_get(manifest, "config")) + 7));
        for (i = 0; i < o->n_names; i++)
                json_array_append_new(tags, json_string(o->names[i].familiar));
        json_object_set_new(m, "RepoTags", tags);
        json_array_foreach(json_object_get(manifest, "layers"), i, l)
                json_array_append_new(layers, json_sprintf("blobs/sha256/%s", desc_digest(l) + 7));
        json_object_set_new(m, "Layers", layers);
        json_array_append_new(list, m);
        return json_dumps(list, JSON_COMPACT | JSON_PRESERVE_ORDER);
}

static int check_manifest(json_t *manifest, const char *digest, struct kiln_error **err)
{
        json_t *l;
        size_t i;

        if (!json_is_object(json_object_get(manifest, "config")) ||
            !layer_digest_valid(desc_digest(json_object_get(manifest, "config"))) ||
            !json_is_array(json_object_get(manifest, "layers")))
                return kiln_error_new(
                        err, KILN_ERR_UNSUPPORTED,
                        "export: %s is not an image manifest (an index cannot be exported)",
                        digest);
        json_array_foreach(json_object_get(manifest, "layers"), i, l) if (
                !layer_digest_valid(
                        desc_digest(l))) return kiln_error_new(err, KILN_ERR_INVALID,
                                                               "export: manifest %s: layer %zu has "
                                                               "no valid digest",
                                                               digest, i);
        return 0;
}

static int export_files(struct exporter *x, const struct layer_store *store,
                        const struct layer_export_image *img, struct kiln_error **err)
{
        const struct layer_export_opts *o = x->opts;
        _cleanup_json_ json_t *manifest = load_blob_json(store, img->digest, "manifest", err);
        _cleanup_free_ char *index = NULL;
        json_t *l;
        size_t i;

        if (!manifest || check_manifest(manifest, img->digest, err) < 0)
                return -1;
        if (put_data(x, "oci-layout", OCI_LAYOUT, sizeof(OCI_LAYOUT) - 1, err) < 0 ||
            put_dir(x, "blobs", err) < 0 || put_dir(x, "blobs/sha256", err) < 0)
                return -1;
        json_array_foreach(json_object_get(manifest, "layers"), i,
                           l) if (put_blob(x, store, desc_digest(l), err) < 0) return -1;
        if (put_blob(x, store, desc_digest(json_object_get(manifest, "config")), err) < 0 ||
            put_blob(x, store, img->digest, err) < 0)
                return -1;
        index = index_json(img, o);
        if (put_data(x, "index.json", index, strlen(index), err) < 0)
                return -1;
        if (o->kind == LAYER_EXPORT_DOCKER) {
                _cleanup_free_ char *dm = docker_manifest_json(manifest, o);
                if (put_data(x, "manifest.json", dm, strlen(dm), err) < 0)
                        return -1;
        }
        return 0;
}

int layer_export_tar(const struct layer_store *store, const struct layer_export_image *img,
                     const struct layer_export_opts *opts, int out_fd, struct kiln_error **err)
{
        _cleanup_free_ char *buf = xmalloc(BUF_SIZE);
        struct exporter x = { .opts = opts, .dirfd = -1, .buf = buf };
        int r;

        x.tar = archive_write_new();
        if (!x.tar)
                return kiln_error_new(err, KILN_ERR_GENERIC, "export: out of memory");
        if (archive_write_set_format_pax_restricted(x.tar) != ARCHIVE_OK ||
            archive_write_set_bytes_in_last_block(x.tar, 1) != ARCHIVE_OK ||
            archive_write_open_fd(x.tar, out_fd) != ARCHIVE_OK) {
                r = tar_error(&x, "the archive", err);
                archive_write_free(x.tar);
                return r;
        }
        r = export_files(&x, store, img, err);
        if (archive_write_close(x.tar) != ARCHIVE_OK && r == 0)
                r = tar_error(&x, "the archive", err);
        archive_write_free(x.tar);
        return r;
}

int layer_export_dir(const struct layer_store *store, const struct layer_export_image *img,
                     const struct layer_export_opts *opts, const char *dest,
                     struct kiln_error **err)
{
        _cleanup_free_ char *buf = xmalloc(BUF_SIZE);
        _cleanup_close_ int dirfd = -1;
        struct exporter x = { .opts = opts, .buf = buf };

        if (mkdir(dest, 0755) < 0 && errno != EEXIST)
                return kiln_error_errno(err, KILN_ERR_IO, "export: make '%s'", dest);
        dirfd = open(dest, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dirfd < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "export: open '%s'", dest);
        x.dirfd = dirfd;
        return export_files(&x, store, img, err);
}

int layer_export_rootfs(const struct layer_store *store, const char *manifest_digest,
                        const char *dest, const struct layer_extract_opts *xopts,
                        struct kiln_error **err)
{
        _cleanup_json_ json_t *manifest = load_blob_json(store, manifest_digest, "manifest", err);
        _cleanup_close_ int rootfd = -1;
        json_t *l;
        size_t i;

        if (!manifest || check_manifest(manifest, manifest_digest, err) < 0)
                return -1;
        if (mkdir(dest, 0755) < 0 && errno != EEXIST)
                return kiln_error_errno(err, KILN_ERR_IO, "export: make '%s'", dest);
        rootfd = open(dest, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (rootfd < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "export: open '%s'", dest);
        json_array_foreach(json_object_get(manifest, "layers"), i, l)
        {
                _cleanup_close_ int blob = layer_store_open_blob(store, desc_digest(l), NULL, err);
                if (blob < 0 || layer_extract(rootfd, blob, desc_digest(l), xopts, NULL, err) < 0)
                        return -1;
        }
        return 0;
}
