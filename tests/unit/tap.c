#include <dirent.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "builder/common/fd-util.h"
#include "builder/common/xalloc.h"
#include "tests/unit/tap.h"

static unsigned tap_count;
static unsigned tap_failed;

static bool tap_vok(bool ok, const char *fmt, va_list ap) _printf_(2, 0);

static bool tap_vok(bool ok, const char *fmt, va_list ap)
{
        tap_count++;
        if (!ok)
                tap_failed++;
        printf("%sok %u - ", ok ? "" : "not ", tap_count);
        vprintf(fmt, ap);
        putchar('\n');
        fflush(stdout);
        return ok;
}

bool tap_ok(bool ok, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        tap_vok(ok, fmt, ap);
        va_end(ap);
        return ok;
}

void tap_skip(const char *fmt, ...)
{
        const char *must = getenv("KILN_MUST_WORK");
        va_list ap;

        tap_count++;
        if (must && strcmp(must, "1") == 0) {
                tap_failed++;
                printf("not ok %u - cannot run (KILN_MUST_WORK=1): ", tap_count);
        } else {
                printf("ok %u # SKIP ", tap_count);
        }
        va_start(ap, fmt);
        vprintf(fmt, ap);
        va_end(ap);
        putchar('\n');
        fflush(stdout);
}

void tap_diag(const char *fmt, ...)
{
        va_list ap;

        fputs("# ", stdout);
        va_start(ap, fmt);
        vprintf(fmt, ap);
        va_end(ap);
        putchar('\n');
}

static void print_escaped(const char *label, const void *data, size_t len)
{
        const unsigned char *p = data;
        size_t i;

        printf("#   %s: \"", label);
        for (i = 0; p && i < len; i++) {
                if (p[i] == '\n')
                        fputs("\\n", stdout);
                else if (p[i] == '\t')
                        fputs("\\t", stdout);
                else if (p[i] == '"' || p[i] == '\\')
                        printf("\\%c", p[i]);
                else if (p[i] < 0x20 || p[i] == 0x7f)
                        printf("\\x%02x", p[i]);
                else
                        putchar(p[i]);
        }
        printf("\"%s\n", p ? "" : " (null)");
}

bool tap_eq_mem(const void *got, size_t got_len, const void *want, size_t want_len, const char *fmt,
                ...)
{
        bool ok = got && want && got_len == want_len && memcmp(got, want, got_len) == 0;
        va_list ap;

        if (!got && !want)
                ok = true;
        va_start(ap, fmt);
        tap_vok(ok, fmt, ap);
        va_end(ap);
        if (!ok) {
                print_escaped("got ", got, got_len);
                print_escaped("want", want, want_len);
        }
        return ok;
}

bool tap_eq_str(const char *got, const char *want, const char *fmt, ...)
{
        bool ok = (got && want) ? strcmp(got, want) == 0 : got == want;
        va_list ap;

        va_start(ap, fmt);
        tap_vok(ok, fmt, ap);
        va_end(ap);
        if (!ok) {
                print_escaped("got ", got, got ? strlen(got) : 0);
                print_escaped("want", want, want ? strlen(want) : 0);
        }
        return ok;
}

bool tap_eq_int(long long got, long long want, const char *fmt, ...)
{
        bool ok = got == want;
        va_list ap;

        va_start(ap, fmt);
        tap_vok(ok, fmt, ap);
        va_end(ap);
        if (!ok)
                printf("#   got %lld, want %lld\n", got, want);
        return ok;
}

int tap_done(void)
{
        printf("1..%u\n", tap_count);
        if (tap_failed)
                printf("# %u of %u failed\n", tap_failed, tap_count);
        return tap_failed ? 1 : 0;
}

void tap_skip_all(const char *fmt, ...)
{
        const char *must = getenv("KILN_MUST_WORK");
        va_list ap;

        if (must && strcmp(must, "1") == 0) {
                printf("not ok %u - cannot run (KILN_MUST_WORK=1): ", ++tap_count);
                va_start(ap, fmt);
                vprintf(fmt, ap);
                va_end(ap);
                printf("\n1..%u\n", tap_count);
                exit(1);
        }
        printf("1..0 # SKIP ");
        va_start(ap, fmt);
        vprintf(fmt, ap);
        va_end(ap);
        putchar('\n');
        exit(0);
}

char *tap_conformance_path(const char *relative)
{
        const char *dir = getenv("KILN_CONFORMANCE_DIR");
        struct stat st;
        char *path;

        if (!dir || stat(dir, &st) < 0 || !S_ISDIR(st.st_mode))
                tap_skip_all("BuildKit conformance data not found (KILN_CONFORMANCE_DIR=%s)",
                             dir ? dir : "unset");
        path = xasprintf("%s/%s", dir, relative);
        return path;
}

char *tap_read_file(const char *path, size_t *ret_len)
{
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
        char *data;

        if (kiln_read_file_at(AT_FDCWD, path, 64 << 20, &data, ret_len, &err) < 0) {
                _cleanup_free_ char *msg = kiln_error_format(err);
                printf("not ok %u - read %s: %s\n1..%u\n", tap_count + 1, path, msg, tap_count + 1);
                exit(1);
        }
        return data;
}

void tap_rm_rf_at(int dirfd, const char *name)
{
        struct stat st;
        DIR *d;
        struct dirent *de;
        int fd;

        if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                return;
        if (!S_ISDIR(st.st_mode)) {
                unlinkat(dirfd, name, 0);
                return;
        }
        fchmodat(dirfd, name, 0700, 0);
        fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return;
        d = fdopendir(fd);
        if (!d) {
                close(fd);
                return;
        }
        while ((de = readdir(d)))
                if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
                        tap_rm_rf_at(fd, de->d_name);
        closedir(d);
        unlinkat(dirfd, name, AT_REMOVEDIR);
}
