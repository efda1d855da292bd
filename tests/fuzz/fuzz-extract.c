/*
 * Fuzzes layer extraction: the input is the layer blob (tar, gzip or zstd), written to a memfd
 * and extracted twice into a fresh directory under a per-process temporary directory, with
 * small limits. Beside each root lies a sentinel directory; the process aborts (a finding) when
 * anything outside the root changed, so an escape is reported like a crash. The lowest bit of
 * the input's size picks record_owner, so both ownership paths are covered.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "builder/common/fd-util.h"
#include "builder/common/xalloc.h"
#include "layers/layers.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char *base;
static int basefd = -1;
static struct stat sentinel_before, file_before;

/* Removes `name` in `dirfd` and all below it, never following a symlink. One fd per level:
 * inputs are small, so trees are shallow. */
static int remove_tree(int dirfd, const char *name)
{
        struct dirent *de;
        struct stat st;
        DIR *d;
        int fd, r = 0;

        if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                return errno == ENOENT ? 0 : -1;
        if (!S_ISDIR(st.st_mode))
                return unlinkat(dirfd, name, 0);
        /* A layer may leave directories without write or search permission. */
        if ((st.st_mode & 0700) != 0700 && fchmodat(dirfd, name, 0700, 0) < 0)
                return -1;
        fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return -1;
        d = fdopendir(fd);
        if (!d) {
                close(fd);
                return -1;
        }
        while ((de = readdir(d)))
                if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0 &&
                    remove_tree(fd, de->d_name) < 0)
                        r = -1;
        closedir(d);
        if (unlinkat(dirfd, name, AT_REMOVEDIR) < 0)
                r = -1;
        return r;
}

static void cleanup(void)
{
        if (basefd >= 0) {
                remove_tree(basefd, "root");
                remove_tree(basefd, "sentinel");
                close(basefd);
                rmdir(base);
        }
        free(base);
}

static void setup(void)
{
        const char *tmp = getenv("TMPDIR");
        int fd;

        base = xasprintf("%s/kiln-fuzz-extract-XXXXXX", tmp && *tmp ? tmp : "/tmp");
        if (!mkdtemp(base))
                abort();
        basefd = open(base, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (basefd < 0 || mkdirat(basefd, "sentinel", 0755) < 0)
                abort();
        fd = openat(basefd, "sentinel/file", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0 || kiln_write_all(fd, "keep", 4, NULL) < 0)
                abort();
        close(fd);
        if (fstatat(basefd, "sentinel", &sentinel_before, AT_SYMLINK_NOFOLLOW) < 0 ||
            fstatat(basefd, "sentinel/file", &file_before, AT_SYMLINK_NOFOLLOW) < 0)
                abort();
        atexit(cleanup);
}

static bool same(const struct stat *a, const struct stat *b)
{
        return a->st_ino == b->st_ino && a->st_mode == b->st_mode && a->st_nlink == b->st_nlink &&
               a->st_size == b->st_size && a->st_uid == b->st_uid && a->st_gid == b->st_gid &&
               a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec &&
               a->st_ctim.tv_sec == b->st_ctim.tv_sec && a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

/* Aborts when anything beside the root changed. */
static void check_outside(void)
{
        struct stat st;
        struct dirent *de;
        DIR *d;
        int fd;

        if (fstatat(basefd, "sentinel", &st, AT_SYMLINK_NOFOLLOW) < 0 ||
            !same(&st, &sentinel_before) ||
            fstatat(basefd, "sentinel/file", &st, AT_SYMLINK_NOFOLLOW) < 0 ||
            !same(&st, &file_before)) {
                fprintf(stderr, "fuzz-extract: the sentinel beside the root changed\n");
                abort();
        }
        fd = openat(basefd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        d = fd < 0 ? NULL : fdopendir(fd);
        if (!d)
                abort();
        while ((de = readdir(d)))
                if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0 &&
                    strcmp(de->d_name, "sentinel") != 0 && strcmp(de->d_name, "root") != 0) {
                        fprintf(stderr, "fuzz-extract: '%s' appeared beside the root\n",
                                de->d_name);
                        abort();
                }
        closedir(d);
}

static void ignore_warning(void *ctx, const char *msg)
{
        (void) ctx;
        (void) msg;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct layer_extract_opts opts = {
                .max_bytes = 8 << 20,
                .max_entries = 10000,
                .record_owner = size & 1,
                .warn = ignore_warning,
        };
        struct layer_extract_stats stats;
        struct kiln_error *err = NULL;
        int blob, rootfd;

        if (!base)
                setup();
        blob = memfd_create("layer", MFD_CLOEXEC);
        if (blob < 0 || kiln_write_all(blob, data, size, NULL) < 0 || lseek(blob, 0, SEEK_SET) < 0)
                abort();
        if (mkdirat(basefd, "root", 0755) < 0)
                abort();
        rootfd = openat(basefd, "root", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (rootfd < 0)
                abort();
        /* Twice: the second pass finds the first one's tree as a lower layer, so whiteouts,
         * opaque markers and replacements meet real entries. */
        layer_extract(rootfd, blob, "fuzz", &opts, &stats, &err);
        err = kiln_error_free(err);
        if (lseek(blob, 0, SEEK_SET) < 0)
                abort();
        layer_extract(rootfd, blob, "fuzz", &opts, &stats, &err);
        kiln_error_free(err);
        close(rootfd);
        close(blob);
        check_outside();
        if (remove_tree(basefd, "root") < 0) {
                fprintf(stderr, "fuzz-extract: cannot remove the root: %s\n", strerror(errno));
                abort();
        }
        return 0;
}
