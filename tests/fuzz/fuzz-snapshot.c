/*
 * Fuzzes the snapshot reader. Each input is loaded as it is, then again with its trailing
 * checksum recomputed, so mutations reach the validation behind the checksum. A snapshot that
 * loads must save back to the very same bytes (the format has one encoding per snapshot) and
 * load again.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "builder/common/fd-util.h"
#include "layers/layers.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int memfd_with(const void *data, size_t size)
{
        int fd = memfd_create("fuzz-snapshot", MFD_CLOEXEC);

        if (fd < 0)
                abort();
        if (kiln_write_all(fd, data, size, NULL) < 0 || lseek(fd, 0, SEEK_SET) < 0)
                abort();
        return fd;
}

static void load_and_resave(const uint8_t *data, size_t size)
{
        struct layer_snapshot *snap = NULL, *again = NULL;
        struct kiln_error *err = NULL;
        uint8_t *saved;
        int in = memfd_with(data, size), out;
        ssize_t n;

        if (layer_snapshot_load(in, &snap, &err) < 0) {
                if (!err || snap)
                        abort();
                kiln_error_free(err);
                close(in);
                return;
        }
        close(in);
        out = memfd_create("fuzz-snapshot-out", MFD_CLOEXEC);
        if (out < 0 || layer_snapshot_save(snap, out, &err) < 0)
                abort();
        saved = malloc(size + 1);
        if (!saved)
                abort();
        n = pread(out, saved, size + 1, 0);
        if (n != (ssize_t) size || memcmp(saved, data, size) != 0)
                abort();
        free(saved);
        if (lseek(out, 0, SEEK_SET) < 0 || layer_snapshot_load(out, &again, &err) < 0)
                abort();
        close(out);
        layer_snapshot_free(again);
        layer_snapshot_free(snap);
}

/* The file's trailer: FNV-1a 64 of every byte before it, little-endian. */
static void fix_checksum(uint8_t *data, size_t size)
{
        uint64_t h = UINT64_C(0xcbf29ce484222325);
        size_t i;

        for (i = 0; i < size - 8; i++) {
                h ^= data[i];
                h *= UINT64_C(0x100000001b3);
        }
        for (i = 0; i < 8; i++)
                data[size - 8 + i] = (uint8_t) (h >> (8 * i));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        uint8_t *fixed;

        if (size > 1 << 20)
                return 0;
        load_and_resave(data, size);
        if (size < 8)
                return 0;
        fixed = malloc(size);
        if (!fixed)
                abort();
        memcpy(fixed, data, size);
        fix_checksum(fixed, size);
        if (memcmp(fixed, data, size) != 0)
                load_and_resave(fixed, size);
        free(fixed);
        return 0;
}
