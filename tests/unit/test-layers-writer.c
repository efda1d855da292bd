/*
 * layer_write(): golden listings and digests for a change list with every entry kind, the same
 * bytes every time, SOURCE_DATE_EPOCH clamping, whiteouts and opaque markers, hardlinks, and the
 * three compressions (each read back by libarchive).
 */
#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "builder/common/fd-util.h"
#include "builder/common/strbuf.h"
#include "builder/common/xalloc.h"
#include "layers/layers.h"
#include "tests/unit/tap.h"

/* Collects a layer in memory (tests only: layers are small here). */
static int mem_write(void *ctx, const void *data, size_t len, struct kiln_error **err)
{
        return kiln_buf_add(ctx, data, len, err);
}

static char tmpdir[] = "/tmp/kiln-writer-XXXXXX";

static void put_file(const char *name, const char *content)
{
        _cleanup_free_ char *path = xasprintf("%s/%s", tmpdir, name);
        _cleanup_close_ int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

        if (fd < 0 || kiln_write_all(fd, content, strlen(content), NULL) < 0)
                tap_skip_all("cannot write %s", path);
}

static struct layer_entry *add(struct layer_changes *c, const char *path, mode_t mode, uid_t uid,
                               gid_t gid, int64_t size, time_t mtime)
{
        struct layer_entry *e;

        c->entries = xrealloc(c->entries, (c->n + 1) * sizeof(*c->entries));
        e = &c->entries[c->n++];
        memset(e, 0, sizeof(*e));
        e->path = xstrdup(path);
        e->kind = LAYER_CHANGE_ADD;
        e->st.st_mode = mode;
        e->st.st_uid = uid;
        e->st.st_gid = gid;
        e->st.st_size = size;
        e->st.st_mtim.tv_sec = mtime;
        e->st.st_mtim.tv_nsec = 123456789; /* sub-second times are dropped */
        e->st.st_nlink = 1;
        return e;
}

/* A change list with every kind of entry, metadata fixed by hand. */
static void sample(struct layer_changes *c)
{
        struct layer_entry *e;

        memset(c, 0, sizeof(*c));
        c->dirfd = open(tmpdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        put_file("hello", "hello, world\n");
        put_file("bin-tool", "#!/bin/sh\necho tool\n");
        add(c, "bin", S_IFDIR | 0755, 0, 0, 0, 1700000000);
        e = add(c, "bin/tool", S_IFREG | 04755, 0, 0, 20, 1700000001);
        free(e->path);
        e->path = xstrdup("bin-tool"); /* content source; renamed below */
        add(c, "etc", S_IFDIR | 0755, 0, 0, 0, 1700000002);
        e = add(c, "etc/hello", S_IFREG | 0644, 1000, 1000, 13, 1700000003);
        e->st.st_nlink = 2;
        e->st.st_ino = 42;
        e = add(c, "etc/hello.link", S_IFREG | 0644, 1000, 1000, 13, 1700000003);
        e->st.st_nlink = 2;
        e->st.st_ino = 42; /* the same inode: a hardlink to etc/hello */
        e = add(c, "etc/motd", S_IFLNK | 0777, 0, 0, 0, 1700000004);
        e->link_target = xstrdup("hello");
        e = add(c, "dev-null", S_IFCHR | 0666, 0, 0, 0, 1700000005);
        e->st.st_rdev = makedev(1, 3);
        add(c, "fifo", S_IFIFO | 0600, 0, 0, 0, 1700000006);
        e = add(c, "opaque", S_IFDIR | 0700, 0, 0, 0, 1700000007);
        e->opaque = true;
        e = add(c, "withxattr", S_IFDIR | 0755, 0, 0, 0, 1700000008);
        e->xattrs = xcalloc(1, sizeof(*e->xattrs));
        e->n_xattrs = 1;
        e->xattrs[0].name = xstrdup("user.kiln.test");
        e->xattrs[0].value = xstrdup("yes");
        e->xattrs[0].len = 3;
        e = add(c, "gone", 0, 0, 0, 0, 0);
        e->kind = LAYER_CHANGE_DELETE;
        e = add(c, "etc/gone.conf", 0, 0, 0, 0, 0);
        e->kind = LAYER_CHANGE_DELETE;
}

/* The hello content file is read at "etc/hello": make that path exist too. */
static void sample_files(void)
{
        _cleanup_free_ char *etc = xasprintf("%s/etc", tmpdir);
        _cleanup_free_ char *bin = xasprintf("%s/bin", tmpdir);

        mkdir(etc, 0755);
        mkdir(bin, 0755);
        put_file("etc/hello", "hello, world\n");
        put_file("bin/tool", "#!/bin/sh\necho tool\n");
}

static void fix_paths(struct layer_changes *c)
{
        size_t i;

        for (i = 0; i < c->n; i++)
                if (strcmp(c->entries[i].path, "bin-tool") == 0) {
                        free(c->entries[i].path);
                        c->entries[i].path = xstrdup("bin/tool");
                }
}

/* The tar's entries as "type mode uid:gid size mtime path [-> target] [xattrs]" lines. */
static char *listing(const void *data, size_t len)
{
        struct archive *a = archive_read_new();
        struct archive_entry *e;
        struct kiln_buf out = KILN_BUF_INIT;

        archive_read_support_filter_all(a);
        archive_read_support_format_tar(a);
        if (archive_read_open_memory(a, data, len) != ARCHIVE_OK) {
                archive_read_free(a);
                return xstrdup("(unreadable)");
        }
        while (archive_read_next_header(a, &e) == ARCHIVE_OK) {
                const char *name, *value;
                size_t vlen;
                char type = '-';

                switch (archive_entry_filetype(e)) {
                case AE_IFDIR:
                        type = 'd';
                        break;
                case AE_IFLNK:
                        type = 'l';
                        break;
                case AE_IFCHR:
                        type = 'c';
                        break;
                case AE_IFIFO:
                        type = 'p';
                        break;
                default:
                        type = archive_entry_hardlink(e) ? 'h' : '-';
                }
                kiln_buf_addf(&out, NULL, "%c %04o %lld:%lld %lld %lld %s", type,
                              (unsigned) archive_entry_perm(e), (long long) archive_entry_uid(e),
                              (long long) archive_entry_gid(e), (long long) archive_entry_size(e),
                              (long long) archive_entry_mtime(e), archive_entry_pathname(e));
                if (archive_entry_symlink(e))
                        kiln_buf_addf(&out, NULL, " -> %s", archive_entry_symlink(e));
                if (archive_entry_hardlink(e))
                        kiln_buf_addf(&out, NULL, " => %s", archive_entry_hardlink(e));
                if (archive_entry_filetype(e) == AE_IFCHR)
                        kiln_buf_addf(&out, NULL, " %d,%d", (int) archive_entry_rdevmajor(e),
                                      (int) archive_entry_rdevminor(e));
                archive_entry_xattr_reset(e);
                while (archive_entry_xattr_next(e, &name, (const void **) &value, &vlen) ==
                       ARCHIVE_OK)
                        kiln_buf_addf(&out, NULL, " %s=%.*s", name, (int) vlen, value);
                if (archive_entry_size(e) > 0) {
                        char buf[64] = { 0 };
                        la_ssize_t n = archive_read_data(a, buf, sizeof(buf) - 1);
                        kiln_buf_addf(&out, NULL, " [%.*s]", (int) (n > 0 ? strcspn(buf, "\n") : 0),
                                      buf);
                }
                kiln_buf_addc(&out, '\n', NULL);
        }
        archive_read_free(a);
        return kiln_buf_detach(&out, NULL);
}

static const char golden_listing[] = "d 0755 0:0 0 1700000000 bin/\n"
                                     "- 4755 0:0 20 1700000001 bin/tool [#!/bin/sh]\n"
                                     "d 0755 0:0 0 1700000002 etc/\n"
                                     "- 0644 1000:1000 13 1700000003 etc/hello [hello, world]\n"
                                     "h 0644 1000:1000 0 1700000003 etc/hello.link => etc/hello\n"
                                     "l 0777 0:0 0 1700000004 etc/motd -> hello\n"
                                     "c 0666 0:0 0 1700000005 dev-null 1,3\n"
                                     "p 0600 0:0 0 1700000006 fifo\n"
                                     "d 0700 0:0 0 1700000007 opaque/\n"
                                     "- 0000 0:0 0 0 opaque/.wh..wh..opq\n"
                                     "d 0755 0:0 0 1700000008 withxattr/ user.kiln.test=yes\n"
                                     "- 0000 0:0 0 0 .wh.gone\n"
                                     "- 0000 0:0 0 0 etc/.wh.gone.conf\n";

static void golden(void)
{
        struct layer_changes c;
        struct layer_write_opts opts = LAYER_WRITE_OPTS_DEFAULT;
        _cleanup_buf_ struct kiln_buf tar = KILN_BUF_INIT;
        _cleanup_buf_ struct kiln_buf again = KILN_BUF_INIT;
        struct layer_sink sink = { .write = mem_write, .ctx = &tar };
        struct layer_desc d, d2;
        _cleanup_free_ char *list = NULL;
        _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;

        sample_files();
        sample(&c);
        fix_paths(&c);
        opts.compression = LAYER_COMPRESSION_NONE;
        if (!tap_ok(layer_write(&c, &opts, &sink, &d, &err) == 0, "write the sample layer%s%s",
                    err ? ": " : "", err ? err->msg : "")) {
                layer_changes_release(&c);
                return;
        }
        list = listing(tar.buf, tar.len);
        tap_eq_str(list, golden_listing,
                   "golden listing: order, ids, modes, mtimes, links, whiteouts");
        tap_eq_str(d.digest, d.diff_id, "uncompressed: digest and diff_id agree");
        tap_eq_int((long long) d.size, (long long) tar.len, "the size is the bytes written");
        tap_eq_int((long long) d.tar_size, (long long) tar.len, "the tar size too");
        tap_ok(tar.len % 512 == 0 && tar.len < 16384, "no padding beyond the two end records (%zu)",
               tar.len);
        tap_diag("sample layer diff_id %s (%zu bytes)", d.diff_id, tar.len);
        /* Golden: this digest holds on every machine with Debian 12's libarchive 3.6. */
        tap_eq_str(d.diff_id,
                   "sha256:98ed453d965153d0b94b0ac134f34a6c40008c6e2040a7273934ce8567563cbc",
                   "golden diff_id");

        sink.ctx = &again;
        tap_ok(layer_write(&c, &opts, &sink, &d2, NULL) == 0 && again.len == tar.len &&
                       memcmp(again.buf, tar.buf, tar.len) == 0 && strcmp(d.digest, d2.digest) == 0,
               "the same changes give the same bytes");
        layer_changes_release(&c);
}

static void epoch_clamp(void)
{
        struct layer_changes c;
        struct layer_write_opts opts = LAYER_WRITE_OPTS_DEFAULT;
        _cleanup_buf_ struct kiln_buf tar = KILN_BUF_INIT;
        struct layer_sink sink = { .write = mem_write, .ctx = &tar };
        struct layer_desc d;
        _cleanup_free_ char *list = NULL;

        sample(&c);
        fix_paths(&c);
        opts.compression = LAYER_COMPRESSION_NONE;
        opts.source_date_epoch = 1700000003;
        tap_ok(layer_write(&c, &opts, &sink, &d, NULL) == 0, "write with SOURCE_DATE_EPOCH");
        list = listing(tar.buf, tar.len);
        tap_ok(strstr(list, "1700000003 bin/\n") == NULL &&
                       strstr(list, "1700000000 bin/\n") != NULL,
               "older mtimes are kept");
        tap_ok(strstr(list, "1700000003 fifo\n") != NULL && strstr(list, "1700000008") == NULL,
               "newer mtimes are clamped to the epoch");
        layer_changes_release(&c);
}

static void compressions(void)
{
        static const enum layer_compression kinds[] = { LAYER_COMPRESSION_GZIP,
                                                        LAYER_COMPRESSION_ZSTD };
        size_t i;

        for (i = 0; i < ELEMENTSOF(kinds); i++) {
                struct layer_changes c;
                struct layer_write_opts opts = LAYER_WRITE_OPTS_DEFAULT;
                _cleanup_buf_ struct kiln_buf blob = KILN_BUF_INIT, blob2 = KILN_BUF_INIT;
                _cleanup_buf_ struct kiln_buf plain = KILN_BUF_INIT;
                struct layer_sink sink = { .write = mem_write, .ctx = &blob };
                struct layer_desc d, d2, dp;
                _cleanup_free_ char *list = NULL;
                const char *name = layer_compression_name(kinds[i]);

                sample(&c);
                fix_paths(&c);
                opts.compression = kinds[i];
                tap_ok(layer_write(&c, &opts, &sink, &d, NULL) == 0, "%s: written", name);
                list = listing(blob.buf, blob.len);
                tap_eq_str(list, golden_listing, "%s: libarchive reads the same entries back",
                           name);
                opts.compression = LAYER_COMPRESSION_NONE;
                sink.ctx = &plain;
                layer_write(&c, &opts, &sink, &dp, NULL);
                tap_eq_str(d.diff_id, dp.diff_id, "%s: the diff_id is the uncompressed tar's",
                           name);
                tap_ok(strcmp(d.digest, d.diff_id) != 0 && d.size == blob.len &&
                               d.size < d.tar_size,
                       "%s: the digest is of the compressed bytes", name);
                /* zstd: a different number of workers still gives the same bytes. */
                opts.compression = kinds[i];
                opts.threads = 1;
                sink.ctx = &blob2;
                layer_write(&c, &opts, &sink, &d2, NULL);
                tap_ok(blob2.len == blob.len && memcmp(blob2.buf, blob.buf, blob.len) == 0,
                       "%s: reproducible (again, with one worker)", name);
                layer_changes_release(&c);
        }
}

static int fail_write(void *ctx, const void *data, size_t len, struct kiln_error **err)
{
        return kiln_error_new(err, KILN_ERR_IO, "disk full (test)");
}

static void errors(void)
{
        struct layer_changes c;
        struct layer_write_opts opts = LAYER_WRITE_OPTS_DEFAULT;
        struct layer_sink sink = { .write = fail_write };
        struct layer_desc d;
        struct kiln_error *err = NULL;
        _cleanup_buf_ struct kiln_buf tar = KILN_BUF_INIT;

        sample(&c);
        fix_paths(&c);
        tap_ok(layer_write(&c, &opts, &sink, &d, &err) < 0 && err && strstr(err->msg, "disk full"),
               "a failing sink fails the write with its error");
        err = kiln_error_free(err);
        /* A file that shrinks after it was listed. */
        c.entries[1].st.st_size = 1000;
        sink = (struct layer_sink){ .write = mem_write, .ctx = &tar };
        opts.compression = LAYER_COMPRESSION_NONE;
        tap_ok(layer_write(&c, &opts, &sink, &d, &err) < 0 && err && strstr(err->msg, "shrank"),
               "a file shorter than listed is an error, not a padded entry");
        kiln_error_free(err);
        layer_changes_release(&c);
}

int main(void)
{
        if (!mkdtemp(tmpdir))
                tap_skip_all("cannot make a temporary directory");
        golden();
        epoch_clamp();
        compressions();
        errors();
        {
                _cleanup_free_ char *cmd = xasprintf("rm -rf '%s'", tmpdir);
                if (system(cmd) != 0)
                        tap_diag("could not remove %s", tmpdir);
        }
        return tap_done();
}
