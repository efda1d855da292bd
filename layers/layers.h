/*
 * kiln's layers: filesystem changes -> reproducible tar -> compression -> digests -> the local
 * OCI content store, and back from a blob to a root filesystem, safely.
 *
 * Everything streams: no layer is ever held in memory. Nothing here prints; warnings go to a
 * callback the caller provides.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "builder/common/error.h"

/* ------------------------------------------------------------------------------------ */
/* Digests (layers/digest.c, the one file that includes OpenSSL)                          */
/* ------------------------------------------------------------------------------------ */

/* "sha256:" and 64 lower-case hex digits, plus the NUL. */
#define LAYER_DIGEST_SIZE 72

struct layer_sha256;

/** A streaming SHA-256. Aborts on out-of-memory, like the x* allocators. */
struct layer_sha256 *layer_sha256_new(void);
void layer_sha256_update(struct layer_sha256 *h, const void *data, size_t len);
/** Writes "sha256:<hex>"; the hasher can be updated no further. */
void layer_sha256_final(struct layer_sha256 *h, char out[LAYER_DIGEST_SIZE]);
/** Frees a hasher; accepts NULL, returns NULL. */
struct layer_sha256 *layer_sha256_free(struct layer_sha256 *h);

/** The OCI chain id of a layer stack: `parent` is the chain id below ("" for the bottom layer,
 * whose chain id is its diff_id), `diff_id` the layer's. `out` may be `parent`. */
void layer_chain_id(const char *parent, const char *diff_id, char out[LAYER_DIGEST_SIZE]);

/** Whether `digest` is "sha256:" followed by exactly 64 lower-case hex digits. */
bool layer_digest_valid(const char *digest);

/** Base64 (RFC 4648, with padding), through OpenSSL. encode returns a malloc'd string;
 * decode returns 0 with a malloc'd, NUL-terminated buffer, or INVALID for malformed input. */
char *layer_base64_encode(const void *data, size_t len);
int layer_base64_decode(const char *text, void **ret, size_t *ret_len, struct kiln_error **err);

/** The versions of the libraries layers/ is built on, for `kiln version`: OpenSSL
 * (digest.c), libarchive (tar-writer.c) and libzstd (compress.c). */
const char *layer_crypto_version(void);
const char *layer_archive_version(void);
const char *layer_zstd_version(void);

DEFINE_TRIVIAL_CLEANUP_FUNC(struct layer_sha256 *, layer_sha256_free)

/* ------------------------------------------------------------------------------------ */
/* Changes: what a layer holds (layers/changes.c)                                         */
/* ------------------------------------------------------------------------------------ */

enum layer_change_kind {
        LAYER_CHANGE_ADD,    /* added or modified: the entry's type, metadata and content */
        LAYER_CHANGE_DELETE, /* removed: becomes a ".wh.NAME" whiteout */
        _LAYER_CHANGE_MAX,
};

struct layer_xattr {
        char *name;
        void *value;
        size_t len;
};

/* One path of a layer. Paths are relative ("etc/passwd"), cleaned, never "." or "..". */
struct layer_entry {
        char *path;
        enum layer_change_kind kind;
        struct stat st;             /* ADD: st_mode (type and permissions), st_uid, st_gid,
                                     * st_size, st_mtim, st_rdev, and st_dev/st_ino/st_nlink
                                     * for hardlink detection */
        char *link_target;          /* ADD of a symlink: its target, verbatim */
        bool opaque;                /* ADD of a directory whose lower contents are hidden
                                     * (becomes "DIR/.wh..wh..opq" after the directory) */
        struct layer_xattr *xattrs; /* ADD: extended attributes to record, sorted by name */
        size_t n_xattrs;
};

/*
 * A change list, sorted by path (byte order, so parents come first). Contents of ADD entries
 * are read from `dirfd` at the entry's path when the layer is written.
 */
struct layer_changes {
        int dirfd; /* owned: closed by layer_changes_release() */
        struct layer_entry *entries;
        size_t n;
        size_t alloc;
};

#define LAYER_CHANGES_INIT  \
        {                   \
                .dirfd = -1 \
        }

/**
 * Every entry of a directory tree as ADD entries (a full layer, e.g. `docker import`).
 * `dirfd` is duplicated. Symlinks are recorded, never followed.
 */
int layer_changes_from_tree(int dirfd, struct layer_changes *ret, struct kiln_error **err);

/**
 * The changes an overlayfs upper directory holds: its entries as ADD, whiteout character
 * devices 0/0 (and xattr-marked whiteout files) as DELETE, directories marked opaque
 * (trusted.overlay.opaque, or user.overlay.opaque when `userxattr`) as opaque. Work is
 * proportional to the upper directory. overlay's own xattrs are not recorded. Metacopy and
 * redirect entries are UNSUPPORTED: mount with metacopy=off,redirect_dir=off (userxattr
 * implies both).
 */
int layer_changes_from_upper(int upper_dirfd, bool userxattr, struct layer_changes *ret,
                             struct kiln_error **err);

/* A record of a tree's state, for diffing where overlayfs is not available. */
struct layer_snapshot;

/** Records (inode, ctime, mtime, size, mode, uid, gid, rdev, link target, xattrs) of every path. */
int layer_snapshot_take(int dirfd, struct layer_snapshot **ret, struct kiln_error **err);

/** Writes a snapshot to a file / reads it back (a compact binary format with a version and a
 * checksum; load reads to the end of the file, and anything malformed or left over is PARSE). */
int layer_snapshot_save(const struct layer_snapshot *snap, int fd, struct kiln_error **err);
int layer_snapshot_load(int fd, struct layer_snapshot **ret, struct kiln_error **err);

/** Frees a snapshot; accepts NULL, returns NULL. */
struct layer_snapshot *layer_snapshot_free(struct layer_snapshot *snap);

/**
 * What changed in `dirfd` since `before`: new or changed paths as ADD (every path is stat'ed,
 * none is read), removed ones as DELETE (only the top-most removed path). A path whose type
 * changed is an ADD of the new type. A directory is an ADD when its own metadata changed; an
 * mtime change that its added or removed entries explain does not count. Unchanged parents
 * are not listed.
 */
int layer_changes_from_snapshot(int dirfd, const struct layer_snapshot *before,
                                struct layer_changes *ret, struct kiln_error **err);

/** layer_snapshot_take() and layer_changes_from_snapshot() leaving out `exclude` (relative,
 * cleaned paths: "proc", "kiln/store") and everything below them: neither recorded nor walked. */
int layer_snapshot_take_excluding(int dirfd, const char *const *exclude, size_t n_exclude,
                                  struct layer_snapshot **ret, struct kiln_error **err);
int layer_changes_from_snapshot_excluding(int dirfd, const struct layer_snapshot *before,
                                          const char *const *exclude, size_t n_exclude,
                                          struct layer_changes *ret, struct kiln_error **err);

/**
 * Adds every missing ancestor directory of the list's entries (ADD and DELETE) as an ADD of
 * its current metadata, read from the list's directory, never through a symlink: what an
 * overlayfs upper holds after copy-up, so a snapshot diff makes the same layer an upper does.
 * IO when an ancestor cannot be read, INVALID when it is not a directory.
 */
int layer_changes_add_parents(struct layer_changes *c, struct kiln_error **err);

/** Frees the entries and closes the directory; leaves an empty list. Safe on a zeroed or INIT
 * struct (it never closes fds 0-2) and when called twice. */
void layer_changes_release(struct layer_changes *c);

DEFINE_TRIVIAL_CLEANUP_FUNC(struct layer_snapshot *, layer_snapshot_free)

/* ------------------------------------------------------------------------------------ */
/* Writing a layer (layers/tar-writer.c, layers/compress.c)                               */
/* ------------------------------------------------------------------------------------ */

enum layer_compression {
        LAYER_COMPRESSION_GZIP,
        LAYER_COMPRESSION_ZSTD,
        LAYER_COMPRESSION_NONE,
        _LAYER_COMPRESSION_MAX,
};

/** "gzip", "zstd", "none"; and back (-1 when unknown). */
const char *layer_compression_name(enum layer_compression c);
int layer_compression_from_name(const char *name);

/** The layer media type for a compression, OCI or Docker schema2. */
const char *layer_media_type(enum layer_compression c, bool docker);

struct layer_write_opts {
        enum layer_compression compression;
        int level;                 /* 0: the default (gzip 6, zstd 3) */
        unsigned threads;          /* zstd workers; 0: one per CPU */
        int64_t source_date_epoch; /* clamp mtimes to it; -1: keep mtimes */
};

#define LAYER_WRITE_OPTS_DEFAULT                                                 \
        {                                                                        \
                .compression = LAYER_COMPRESSION_GZIP, .level = 0, .threads = 0, \
                .source_date_epoch = -1                                          \
        }

/* A written layer. */
struct layer_desc {
        char digest[LAYER_DIGEST_SIZE];  /* of the compressed blob */
        char diff_id[LAYER_DIGEST_SIZE]; /* of the uncompressed tar */
        uint64_t size;                   /* of the compressed blob */
        uint64_t tar_size;               /* of the uncompressed tar */
        enum layer_compression compression;
};

/* Where a layer's bytes go: called with consecutive chunks of the compressed stream. */
struct layer_sink {
        int (*write)(void *ctx, const void *data, size_t len, struct kiln_error **err);
        void *ctx;
};

/**
 * Streams `changes` as a reproducible PAX tar (sorted, parents first, numeric ids, no names,
 * hardlinks to the first path, mtimes clamped to SOURCE_DATE_EPOCH when set), hashes it
 * (diff_id), compresses it, hashes that (digest) and hands the bytes to `sink`. Memory stays
 * bounded whatever the size.
 */
int layer_write(const struct layer_changes *changes, const struct layer_write_opts *opts,
                const struct layer_sink *sink, struct layer_desc *ret, struct kiln_error **err);

/* ------------------------------------------------------------------------------------ */
/* Extracting layers (layers/extract.c)                                                   */
/* ------------------------------------------------------------------------------------ */

struct layer_extract_opts {
        uint64_t max_bytes;   /* decompressed bytes; 0: 64 GiB */
        uint64_t max_entries; /* 0: 10 million */
        size_t max_path;      /* bytes in one path; 0: 4096 */
        bool record_owner;    /* ids cannot be set: record them in user.kiln.owner */
        bool ignore_owner;    /* leave files to the extracting user (an export as non-root) */
        /* Paths left as they are (relative, cleaned: "proc", "etc/resolv.conf"): entries at or
         * below one are skipped, and so are whiteouts and opaque markers that would remove one
         * (with a warning when they are above it). */
        const char *const *skip;
        size_t n_skip;
        /** Called for things skipped with a warning (e.g. a device node that cannot be made). */
        void (*warn)(void *ctx, const char *msg);
        void *warn_ctx;
};

struct layer_extract_stats {
        uint64_t entries;
        uint64_t bytes; /* file content bytes written */
        uint64_t whiteouts;
        uint64_t skipped;
};

/**
 * Applies one layer (gzip, zstd, bzip2, xz or plain tar, detected) read from `blob_fd` on top
 * of the tree at `rootfd`. Every path resolves inside the root (openat2 RESOLVE_IN_ROOT): a leading "/" is
 * dropped and ".." stops at the root (confined, as containerd does, not rejected); a parent
 * that is a symlink is followed only inside the root (one to a missing directory is INVALID).
 * Whiteouts and opaque markers remove only what lower layers put there and never follow a
 * symlink; hardlinks resolve inside the root; an existing symlink at the final component is
 * replaced, never followed. Ownership is set with lchown, or with `record_owner` written to
 * LAYER_OWNER_XATTR (parents created on the way count as 0:0; an owner xattr carried by the
 * layer itself is ignored). Things that cannot be made (a device node without privilege, an
 * xattr the filesystem refuses) are skipped with a warning and counted in `skipped`.
 * A limit exceeded is a LIMIT error naming `what`; a malformed or truncated stream is PARSE.
 * *ret (may be NULL) is set on success. On failure the tree may hold part of the layer:
 * extract into a fresh directory and rename (layer_store_unpack does).
 */
int layer_extract(int rootfd, int blob_fd, const char *what, const struct layer_extract_opts *opts,
                  struct layer_extract_stats *ret, struct kiln_error **err);

/** The name of the xattr that records ownership when it cannot be set ("uid:gid"). */
#define LAYER_OWNER_XATTR "user.kiln.owner"

/* ------------------------------------------------------------------------------------ */
/* Exporting an image from the store (layers/export.c)                                    */
/* ------------------------------------------------------------------------------------ */

struct layer_store;

enum layer_export_kind {
        LAYER_EXPORT_OCI,    /* an OCI image layout */
        LAYER_EXPORT_DOCKER, /* the layout plus manifest.json: docker load, podman load */
};

/* One name of the exported image. */
struct layer_export_name {
        const char *full;     /* "docker.io/library/app:1": io.containerd.image.name */
        const char *ref_name; /* "1": org.opencontainers.image.ref.name */
        const char *familiar; /* "app:1": a RepoTags entry of manifest.json */
};

struct layer_export_opts {
        enum layer_export_kind kind;
        const struct layer_export_name *names;
        size_t n_names;
        int64_t mtime; /* of the tar entries */
};

/* The image: a manifest in the store. */
struct layer_export_image {
        const char *digest;
        const char *media_type;
        uint64_t size;
};

/** Writes the image as a tar stream to `out_fd` (not closed). Blobs are streamed. */
int layer_export_tar(const struct layer_store *store, const struct layer_export_image *img,
                     const struct layer_export_opts *opts, int out_fd, struct kiln_error **err);

/** Writes the image as an OCI layout directory `dest` (made if missing; blobs already there are
 * kept, index.json is replaced atomically). */
int layer_export_dir(const struct layer_store *store, const struct layer_export_image *img,
                     const struct layer_export_opts *opts, const char *dest, struct kiln_error **err);

/** Applies the image's layers in order to the directory `dest` (made if missing). */
int layer_export_rootfs(const struct layer_store *store, const char *manifest_digest, const char *dest,
                        const struct layer_extract_opts *xopts, struct kiln_error **err);

/* ------------------------------------------------------------------------------------ */
/* The local store: an OCI image layout (layers/store.c)                                  */
/* ------------------------------------------------------------------------------------ */

struct layer_store;

/** The default root: /var/lib/kiln as root, ${XDG_DATA_HOME:-$HOME/.local/share}/kiln else. */
char *layer_store_default_root(void);

/**
 * Opens (creating when missing) the OCI layout at `root`: oci-layout, index.json,
 * blobs/sha256. INVALID when `root` holds something that is not an OCI layout.
 */
int layer_store_open(const char *root, struct layer_store **ret, struct kiln_error **err);

/** Closes a store; accepts NULL, returns NULL. */
struct layer_store *layer_store_free(struct layer_store *store);

/** The store's root directory path. */
const char *layer_store_root(const struct layer_store *store);

/* A blob being written: a temporary file inside the store, hashed as it is written. */
struct layer_blob_writer;

int layer_store_blob_begin(struct layer_store *store, struct layer_blob_writer **ret,
                           struct kiln_error **err);
int layer_blob_write(struct layer_blob_writer *w, const void *data, size_t len,
                     struct kiln_error **err);
/** A sink that writes into `w`, for layer_write(). */
struct layer_sink layer_blob_sink(struct layer_blob_writer *w);
/**
 * fsyncs, checks the digest against `expected` (NULL: no check; mismatch is DIGEST and
 * nothing is stored), and renames the blob into place. Frees the writer in every case.
 */
int layer_blob_commit(struct layer_blob_writer *w, const char *expected,
                      char ret_digest[LAYER_DIGEST_SIZE], uint64_t *ret_size,
                      struct kiln_error **err);
/** Drops an unfinished blob (removes its temporary file). Accepts NULL. */
void layer_blob_abort(struct layer_blob_writer *w);

/** Stores bytes held in memory (manifests, configs). */
int layer_store_put(struct layer_store *store, const void *data, size_t len,
                    char ret_digest[LAYER_DIGEST_SIZE], struct kiln_error **err);

/** Whether the store has a blob. */
bool layer_store_has(const struct layer_store *store, const char *digest);

/** Opens a blob read-only (O_CLOEXEC); NOTFOUND when absent. *ret_size may be NULL. */
int layer_store_open_blob(const struct layer_store *store, const char *digest, uint64_t *ret_size,
                          struct kiln_error **err);

/** Reads a small blob (a manifest, a config) of at most `max` bytes, verifying its digest. */
int layer_store_read(const struct layer_store *store, const char *digest, size_t max,
                     char **ret_data, size_t *ret_len, struct kiln_error **err);

/* An image name in index.json. */
struct layer_ref {
        char *name;   /* org.opencontainers.image.ref.name */
        char *digest; /* of the manifest (or index) */
        char *media_type;
        uint64_t size;
};

/** Points `name` at a manifest, replacing what it named; index.json is rewritten atomically
 * under a lock. */
int layer_store_tag(struct layer_store *store, const char *name, const char *digest,
                    const char *media_type, uint64_t size, struct kiln_error **err);

/** Removes a name; NOTFOUND when absent. Blobs stay until layer_store_prune(). */
int layer_store_untag(struct layer_store *store, const char *name, struct kiln_error **err);

/** The names, sorted. The caller frees with layer_refs_free(). */
int layer_store_list(struct layer_store *store, struct layer_ref **ret, size_t *ret_n,
                     struct kiln_error **err);
void layer_refs_free(struct layer_ref *refs, size_t n);

/** Looks a name up; NOTFOUND when absent. The caller frees the fields with layer_ref_release(). */
int layer_store_resolve(struct layer_store *store, const char *name, struct layer_ref *ret,
                        struct kiln_error **err);
void layer_ref_release(struct layer_ref *ref);

struct layer_prune_stats {
        uint64_t blobs_removed;
        uint64_t bytes_removed;
        uint64_t temp_removed;
};

/** Removes blobs no name reaches (through indexes, manifests, configs and layers), and stale
 * temporary files, under the store lock. */
int layer_store_prune(struct layer_store *store, struct layer_prune_stats *ret,
                      struct kiln_error **err);

/* What a garbage collection has marked so far. */
struct layer_gc;

/* Roots beyond the images' names: a client's own records of blobs it keeps (the build cache). */
struct layer_gc_roots {
        /**
         * Called once the blobs the images reach are marked; for prune under the exclusive GC
         * lock (no other kiln process has the store open) and before any blob is removed, so a
         * record it drops never names a blob that is already gone. Calls layer_gc_keep() for
         * each further blob to keep. Its failure fails the prune or fsck.
         */
        int (*mark)(struct layer_store *store, struct layer_gc *gc, void *ctx,
                    struct kiln_error **err);
        void *ctx;
};

/** Whether an image reaches the blob (or a root kept it already). */
bool layer_gc_reached(const struct layer_gc *gc, const char *digest);

/** Keeps a blob (and nothing it refers to: a layer's digest is meant). */
void layer_gc_keep(struct layer_gc *gc, const char *digest);

/** layer_store_prune() that also keeps what `roots` (may be NULL) marks. */
int layer_store_prune_roots(struct layer_store *store, const struct layer_gc_roots *roots,
                            struct layer_prune_stats *ret, struct kiln_error **err);

/* What `kiln store fsck` found. */
struct layer_fsck_report {
        char **problems; /* one line each: "corrupt blob sha256:...", ... */
        size_t n_problems;
        uint64_t blobs_checked;
        uint64_t bytes_checked;
};

/** Re-hashes every blob and reports corrupt, missing, orphaned and stale temporary files.
 * Returns 0 even when problems were found (see n_problems). */
int layer_store_fsck(struct layer_store *store, struct layer_fsck_report *ret,
                     struct kiln_error **err);

/** layer_store_fsck() where what `roots` (may be NULL) marks is not orphaned. */
int layer_store_fsck_roots(struct layer_store *store, const struct layer_gc_roots *roots,
                           struct layer_fsck_report *ret, struct kiln_error **err);
void layer_fsck_report_release(struct layer_fsck_report *r);

/**
 * The directory holding a layer unpacked on its own (for overlay lower directories), made on
 * first use: the blob is extracted into a fresh directory that is renamed into
 * unpacked/<diff_id> when complete, so a failure leaves nothing half made. Returns an
 * O_PATH directory fd; *ret_path (may be NULL) gets its path.
 */
int layer_store_unpack(struct layer_store *store, const char *digest, const char *diff_id,
                       const struct layer_extract_opts *opts, char **ret_path,
                       struct kiln_error **err);

/**
 * The directory holding the root filesystem of layers applied in order (bottom first), for an
 * overlay lower directory: made on first use under .kiln/rootfs/<chain id> by extracting every
 * layer into a fresh directory that is renamed into place when complete; kept while an image
 * in the store has that chain of layers (prune). Returns an O_PATH directory fd; *ret_path
 * (may be NULL) gets its path. INVALID for no layers or a bad diff_id.
 */
int layer_store_rootfs(struct layer_store *store, const char (*digests)[LAYER_DIGEST_SIZE],
                       const char (*diff_ids)[LAYER_DIGEST_SIZE], size_t n,
                       const struct layer_extract_opts *opts, char **ret_path, struct kiln_error **err);

/** Remembers that a registry repository ("host/path") holds a blob (pulled from or pushed to it),
 * so a later push to another repository of that registry can mount it instead of uploading.
 * Best effort: failures are ignored. */
void layer_store_note_source(struct layer_store *store, const char *digest, const char *repo);

/** The repositories known to hold a blob, as a NULL-terminated malloc'd vector (maybe empty). */
char **layer_store_sources(struct layer_store *store, const char *digest);

/**
 * Makes a scratch directory inside the store (on its filesystem, so renames work), returning a
 * directory fd; *ret_name names it for layer_store_scratch_remove(). Stale ones are removed by
 * prune.
 */
int layer_store_scratch(struct layer_store *store, char **ret_name, struct kiln_error **err);

/** Removes a scratch directory and everything in it (never following symlinks). */
void layer_store_scratch_remove(struct layer_store *store, const char *name);

DEFINE_TRIVIAL_CLEANUP_FUNC(struct layer_store *, layer_store_free)
