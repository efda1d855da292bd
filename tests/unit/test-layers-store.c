/*
 * The local store: layout creation, blobs (verified, atomic), names in index.json, prune, fsck,
 * and 8 processes writing at once.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "builder/common/fd-util.h"
#include "builder/common/xalloc.h"
#include "layers/layers.h"
#include "tests/unit/tap.h"

static char base[] = "/tmp/kiln-store-XXXXXX";

static char *path_in(const char *rel)
{
        return xasprintf("%s/%s", base, rel);
}

/* A minimal image: a config blob and a manifest naming it; returns the manifest digest. */
static int put_image(struct layer_store *s, const char *tag, const char *seed,
                     char digest[LAYER_DIGEST_SIZE], struct kiln_error **err)
{
        char config[LAYER_DIGEST_SIZE];
        _cleanup_free_ char *cfg = xasprintf(
                "{\"seed\":\"%s\",\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[]}}", seed);
        _cleanup_free_ char *man = NULL;

        if (layer_store_put(s, cfg, strlen(cfg), config, err) < 0)
                return -1;
        man = xasprintf(
                "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\","
                "\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\","
                "\"digest\":\"%s\",\"size\":%zu},\"layers\":[]}",
                config, strlen(cfg));
        if (layer_store_put(s, man, strlen(man), digest, err) < 0)
                return -1;
        return layer_store_tag(s, tag, digest, "application/vnd.oci.image.manifest.v1+json",
                               strlen(man), err);
}

static void layout(void)
{
        _cleanup_(layer_store_freep) struct layer_store *s = NULL;
        _cleanup_free_ char *root = path_in("store"), *notlayout = path_in("other");
        _cleanup_free_ char *junk = path_in("other/file");
        _cleanup_free_ char *layout_file = path_in("store/oci-layout");
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        struct stat st;
        int fd;

        tap_ok(layer_store_open(root, &s, &err) == 0, "a store is created where none is");
        tap_ok(stat(layout_file, &st) == 0 && S_ISREG(st.st_mode), "with an oci-layout file");
        s = layer_store_free(s);
        tap_ok(layer_store_open(root, &s, NULL) == 0, "and opens again");
        mkdir(notlayout, 0755);
        fd = open(junk, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        close(fd);
        tap_ok(layer_store_open(notlayout, &s, &err) < 0 && err && err->kind == KILN_ERR_INVALID,
               "a directory with other things in it is refused");
}

static void blobs_and_names(void)
{
        _cleanup_(layer_store_freep) struct layer_store *s = NULL;
        _cleanup_free_ char *root = path_in("store");
        char d[LAYER_DIGEST_SIZE], m1[LAYER_DIGEST_SIZE], m2[LAYER_DIGEST_SIZE];
        struct layer_blob_writer *w;
        struct kiln_error *err = NULL;
        struct layer_ref *refs, ref;
        char *data = NULL;
        size_t len, n;
        uint64_t size;

        if (layer_store_open(root, &s, NULL) < 0) {
                tap_ok(false, "open the store");
                return;
        }
        tap_ok(layer_store_put(s, "hello", 5, d, NULL) == 0 &&
                       strcmp(d,
                              "sha256:"
                              "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824") ==
                               0,
               "put stores a blob under its sha256");
        tap_ok(layer_store_has(s, d) && layer_store_read(s, d, 100, &data, &len, NULL) == 0 &&
                       len == 5 && memcmp(data, "hello", 5) == 0,
               "and reads it back verified");
        free(data);

        layer_store_blob_begin(s, &w, NULL);
        layer_blob_write(w, "world", 5, NULL);
        tap_ok(layer_blob_commit(
                       w, "sha256:0000000000000000000000000000000000000000000000000000000000000000",
                       NULL, NULL, &err) < 0 &&
                       err && err->kind == KILN_ERR_DIGEST,
               "a blob whose digest does not match is refused (DIGEST)");
        err = kiln_error_free(err);
        tap_ok(!layer_store_has(
                       s,
                       "sha256:486ea46224d1bb4fb680f34f7c9ad96a8f24ec88be73ea8e5a6c65260e9cb8a7"),
               "and nothing is stored");
        layer_store_blob_begin(s, &w, NULL);
        layer_blob_write(w, "world", 5, NULL);
        tap_ok(layer_blob_commit(
                       w, "sha256:486ea46224d1bb4fb680f34f7c9ad96a8f24ec88be73ea8e5a6c65260e9cb8a7",
                       d, &size, NULL) == 0 &&
                       size == 5,
               "a blob with the expected digest is committed");

        tap_ok(put_image(s, "example.com/app:1.0", "one", m1, NULL) == 0, "name an image");
        tap_ok(put_image(s, "app:latest", "two", m2, NULL) == 0, "name another");
        tap_ok(layer_store_list(s, &refs, &n, NULL) == 0 && n == 2 &&
                       strcmp(refs[0].name, "app:latest") == 0 && strcmp(refs[1].digest, m1) == 0,
               "list: both names, sorted");
        layer_refs_free(refs, n);
        tap_ok(layer_store_tag(s, "app:latest", m1, "application/vnd.oci.image.manifest.v1+json", 1,
                               NULL) == 0 &&
                       layer_store_resolve(s, "app:latest", &ref, NULL) == 0 &&
                       strcmp(ref.digest, m1) == 0,
               "tagging a name again moves it");
        layer_ref_release(&ref);
        tap_ok(layer_store_tag(s, "bad name!", m1, "x", 1, &err) < 0 &&
                       err->kind == KILN_ERR_INVALID,
               "an invalid name is refused");
        err = kiln_error_free(err);
        tap_ok(layer_store_tag(
                       s, "ghost",
                       "sha256:1111111111111111111111111111111111111111111111111111111111111111",
                       "x", 1, &err) < 0 &&
                       err->kind == KILN_ERR_NOTFOUND,
               "naming a blob the store lacks is refused");
        err = kiln_error_free(err);
        tap_ok(layer_store_untag(s, "app:latest", NULL) == 0 &&
                       layer_store_resolve(s, "app:latest", &ref, &err) < 0 &&
                       err->kind == KILN_ERR_NOTFOUND,
               "untag removes a name");
        err = kiln_error_free(err);
        tap_ok(layer_store_untag(s, "app:latest", &err) < 0 && err->kind == KILN_ERR_NOTFOUND,
               "untagging a missing name is NOTFOUND");
        kiln_error_free(err);
}

static bool has_problem(const struct layer_fsck_report *rep, const char *what)
{
        size_t i;

        for (i = 0; i < rep->n_problems; i++)
                if (strstr(rep->problems[i], what))
                        return true;
        return false;
}

/* A GC root like the build cache's: keeps the blob ctx names. */
static int keep_one(struct layer_store *s, struct layer_gc *gc, void *ctx, struct kiln_error **err)
{
        const char *digest = ctx;

        if (layer_gc_reached(gc, digest))
                return kiln_error_new(err, KILN_ERR_INVALID, "%s is reached already", digest);
        layer_gc_keep(gc, digest);
        return layer_gc_reached(gc, digest) ? 0 : kiln_error_new(err, KILN_ERR_INVALID, "not kept");
}

static void prune_and_fsck(void)
{
        _cleanup_(layer_store_freep) struct layer_store *s = NULL, *other = NULL;
        _cleanup_free_ char *root = path_in("store");
        struct layer_fsck_report rep;
        struct layer_prune_stats st;
        struct kiln_error *err = NULL;
        char m[LAYER_DIGEST_SIZE];
        struct timespec old[2] = { { .tv_sec = 1000000000 }, { .tv_sec = 1000000000 } };
        int fd;

        layer_store_open(root, &s, NULL);
        tap_ok(layer_store_fsck(s, &rep, NULL) == 0 && rep.n_problems >= 3,
               "fsck reports the orphaned blobs (%zu problems)", rep.n_problems);
        layer_fsck_report_release(&rep);

        tap_ok(layer_store_open(root, &other, NULL) == 0, "a second process opens the store");
        tap_ok(layer_store_prune(s, &st, &err) < 0 && err && strstr(err->msg, "in use"),
               "prune waits for other kiln processes to leave the store");
        err = kiln_error_free(err);
        other = layer_store_free(other);

        tap_ok(layer_store_prune(s, &st, NULL) == 0 && st.blobs_removed >= 3,
               "prune removes them (%llu)", (unsigned long long) st.blobs_removed);
        tap_ok(layer_store_fsck(s, &rep, NULL) == 0 && rep.n_problems == 0 &&
                       rep.blobs_checked == 2,
               "fsck is clean: the named image's manifest and config remain");
        layer_fsck_report_release(&rep);

        /* A crash left a temporary file; then a blob rots. */
        {
                _cleanup_free_ char *tmp = path_in("store/.kiln/tmp/blob-crashed");
                fd = open(tmp, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
                kiln_write_all(fd, "partial", 7, NULL);
                futimens(fd, old);
                close(fd);
        }
        tap_ok(layer_store_fsck(s, &rep, NULL) == 0 && rep.n_problems == 1 &&
                       strstr(rep.problems[0], "stale temporary file"),
               "fsck reports a stale temporary file");
        layer_fsck_report_release(&rep);
        tap_ok(layer_store_prune(s, &st, NULL) == 0 && st.temp_removed == 1, "prune removes it");

        /* A further root (the build cache) keeps a blob no name reaches. */
        {
                char kept[LAYER_DIGEST_SIZE];
                struct layer_gc_roots roots = { .mark = keep_one, .ctx = kept };

                layer_store_put(s, "a cached layer", 14, kept, NULL);
                tap_ok(layer_store_fsck(s, &rep, NULL) == 0 && has_problem(&rep, "orphaned blob"),
                       "without the root, the blob is an orphan");
                layer_fsck_report_release(&rep);
                tap_ok(layer_store_fsck_roots(s, &roots, &rep, &err) == 0 && rep.n_problems == 0,
                       "fsck: a blob a root keeps is no orphan");
                layer_fsck_report_release(&rep);
                tap_ok(layer_store_prune_roots(s, &roots, &st, &err) == 0 &&
                               st.blobs_removed == 0 && layer_store_has(s, kept),
                       "prune keeps a blob a root keeps");
                tap_ok(layer_store_prune(s, &st, NULL) == 0 && st.blobs_removed == 1 &&
                               !layer_store_has(s, kept),
                       "prune without the root removes it");
                err = kiln_error_free(err);
        }

        put_image(s, "rot", "three", m, NULL);
        {
                _cleanup_free_ char *blob = xasprintf("%s/store/blobs/sha256/%s", base, m + 7);
                chmod(blob, 0644);
                fd = open(blob, O_WRONLY | O_CLOEXEC);
                kiln_write_all(fd, "X", 1, NULL);
                close(fd);
        }
        tap_ok(layer_store_fsck(s, &rep, NULL) == 0 && has_problem(&rep, "corrupt blob"),
               "fsck finds a corrupt blob");
        layer_fsck_report_release(&rep);
        tap_ok(layer_store_read(s, m, 1 << 20, &(char *){ NULL }, &(size_t){ 0 }, &err) < 0 &&
                       err && err->kind == KILN_ERR_DIGEST,
               "reading a corrupt blob fails with DIGEST");
        kiln_error_free(err);
}

#define WRITERS 8
#define IMAGES  25

static void concurrency(void)
{
        _cleanup_(layer_store_freep) struct layer_store *s = NULL;
        _cleanup_free_ char *root = path_in("busy");
        struct layer_fsck_report rep;
        struct layer_ref *refs;
        size_t n, i;
        pid_t pids[WRITERS];
        int ok = 1;

        for (i = 0; i < WRITERS; i++) {
                pids[i] = fork();
                if (pids[i] == 0) {
                        struct layer_store *cs = NULL;
                        char d[LAYER_DIGEST_SIZE], tag[64], seed[64];
                        int k;

                        if (layer_store_open(root, &cs, NULL) < 0)
                                _exit(1);
                        for (k = 0; k < IMAGES; k++) {
                                snprintf(tag, sizeof(tag), "w%zu/img:%d", i, k);
                                snprintf(seed, sizeof(seed), "%zu-%d", i, k);
                                if (put_image(cs, tag, seed, d, NULL) < 0)
                                        _exit(2);
                                /* and everyone writes the same shared blob too */
                                if (layer_store_put(cs, "shared", 6, d, NULL) < 0)
                                        _exit(3);
                        }
                        layer_store_free(cs);
                        _exit(0);
                }
        }
        for (i = 0; i < WRITERS; i++) {
                int status;
                waitpid(pids[i], &status, 0);
                if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
                        ok = 0;
        }
        tap_ok(ok, "8 processes each put %d images into one store at once", IMAGES);
        if (layer_store_open(root, &s, NULL) < 0)
                return;
        tap_ok(layer_store_list(s, &refs, &n, NULL) == 0 && n == WRITERS * IMAGES,
               "every name is in index.json (%zu)", n);
        for (i = 0; i < n; i++) {
                struct layer_ref r;
                if (layer_store_resolve(s, refs[i].name, &r, NULL) < 0 ||
                    !layer_store_has(s, r.digest))
                        ok = 0;
                layer_ref_release(&r);
        }
        layer_refs_free(refs, n);
        tap_ok(ok, "and every name resolves to a blob in the store");
        tap_ok(layer_store_fsck(s, &rep, NULL) == 0 && rep.n_problems == 1 &&
                       strstr(rep.problems[0], "orphaned blob"),
               "fsck: only the shared unnamed blob is orphaned (%zu problems)", rep.n_problems);
        layer_fsck_report_release(&rep);
}

int main(void)
{
        if (!mkdtemp(base))
                tap_skip_all("cannot make a temporary directory");
        layout();
        blobs_and_names();
        prune_and_fsck();
        concurrency();
        {
                _cleanup_free_ char *cmd = xasprintf("rm -rf '%s'", base);
                if (system(cmd) != 0)
                        tap_diag("could not remove %s", base);
        }
        return tap_done();
}
