#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "builder/common/fd-util.h"
#include "builder/common/strbuf.h"
#include "builder/common/xalloc.h"

int kiln_read_fd_all(int fd, size_t max, char **ret_data, size_t *ret_len, struct kiln_error **err)
{
        _cleanup_buf_ struct kiln_buf b = KILN_BUF_INIT;
        char chunk[65536];

        kiln_buf_init(&b, max);
        for (;;) {
                ssize_t n = read(fd, chunk, sizeof(chunk));
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return kiln_error_errno(err, KILN_ERR_IO, "read");
                }
                if (n == 0)
                        break;
                if (kiln_buf_add(&b, chunk, (size_t) n, err) < 0)
                        return -1;
        }
        *ret_data = kiln_buf_detach(&b, ret_len);
        return 0;
}

static int read_opened(int fd, const char *path, size_t max, char **ret_data, size_t *ret_len,
                       struct kiln_error **err)
{
        struct stat st;

        if (fstat(fd, &st) < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "stat '%s'", path);
        if (S_ISDIR(st.st_mode))
                return kiln_error_new(err, KILN_ERR_INVALID, "'%s' is a directory", path);
        if (kiln_read_fd_all(fd, max, ret_data, ret_len, err) < 0)
                return kiln_error_wrap(err, "'%s'", path);
        return 0;
}

int kiln_read_file_at(int dirfd, const char *path, size_t max, char **ret_data, size_t *ret_len,
                      struct kiln_error **err)
{
        _cleanup_close_ int fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC | O_NOCTTY);

        if (fd < 0)
                return kiln_error_errno(err, errno == ENOENT ? KILN_ERR_NOTFOUND : KILN_ERR_IO,
                                        "open '%s'", path);
        return read_opened(fd, path, max, ret_data, ret_len, err);
}

int kiln_openat2_in_root(int rootfd, const char *path, int flags, mode_t mode, uint64_t resolve)
{
        struct open_how how = {
                .flags = (unsigned long long) (flags | O_CLOEXEC),
                .mode = (flags & (O_CREAT | O_TMPFILE)) ? mode : 0,
                .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | resolve,
        };
        unsigned tries = 0;
        long fd;

        for (;;) {
                fd = syscall(SYS_openat2, rootfd, path[0] ? path : ".", &how, sizeof(how));
                if (fd >= 0)
                        return (int) fd;
                /* EAGAIN: a rename raced with the lookup ("..") and the kernel asks for a retry. */
                if ((errno != EAGAIN && errno != EINTR) || ++tries > 64)
                        return -1;
        }
}

int kiln_open_in_root(int rootfd, const char *path, int flags, mode_t mode, struct kiln_error **err)
{
        int fd = kiln_openat2_in_root(rootfd, path, flags, mode, 0);

        if (fd < 0) {
                if (errno == ENOSYS)
                        return kiln_error_errno(
                                err, KILN_ERR_UNSUPPORTED,
                                "openat2 is not available (Linux 5.6 or newer is needed)");
                return kiln_error_errno(err, errno == ENOENT ? KILN_ERR_NOTFOUND : KILN_ERR_IO,
                                        "open '%s'", path);
        }
        return fd;
}

int kiln_read_file_in_root(int rootfd, const char *path, size_t max, char **ret_data,
                           size_t *ret_len, struct kiln_error **err)
{
        _cleanup_close_ int fd = kiln_open_in_root(rootfd, path, O_RDONLY | O_NOCTTY, 0, err);

        if (fd < 0)
                return -1;
        return read_opened(fd, path, max, ret_data, ret_len, err);
}

int kiln_write_file_atomic_at(int dirfd, const char *path, const void *data, size_t len,
                              struct kiln_error **err)
{
        _cleanup_free_ char *tmp = xasprintf("%s.kiln-tmp", path);
        _cleanup_close_ int fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);

        if (fd < 0)
                return kiln_error_errno(err, KILN_ERR_IO, "create '%s'", tmp);
        if (kiln_write_all(fd, data, len, err) < 0) {
                (void) unlinkat(dirfd, tmp, 0);
                return kiln_error_wrap(err, "'%s'", path);
        }
        if (fsync(fd) < 0 || renameat(dirfd, tmp, dirfd, path) < 0) {
                kiln_error_errno(err, KILN_ERR_IO, "write '%s'", path);
                (void) unlinkat(dirfd, tmp, 0);
                return -1;
        }
        return 0;
}

int kiln_write_all(int fd, const void *data, size_t len, struct kiln_error **err)
{
        const char *p = data;

        while (len > 0) {
                ssize_t n = write(fd, p, len);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return kiln_error_errno(err, KILN_ERR_IO, "write");
                }
                p += n;
                len -= (size_t) n;
        }
        return 0;
}
