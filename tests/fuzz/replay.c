/*
 * Replays fuzz inputs as an ordinary test (libgit2, systemd): every file named on the command
 * line, or found (recursively) in a directory named there, is fed to LLVMFuzzerTestOneInput.
 * A crash or sanitizer report fails the test; -Dfuzzing=true links libFuzzer instead.
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "builder/common/fd-util.h"
#include "builder/common/xalloc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static unsigned replayed;

static int replay_path(const char *path)
{
        struct stat st;

        if (stat(path, &st) < 0) {
                fprintf(stderr, "replay: %s: missing\n", path);
                return -1;
        }
        if (S_ISDIR(st.st_mode)) {
                struct dirent **names;
                int n = scandir(path, &names, NULL, alphasort), i, r = 0;

                if (n < 0) {
                        fprintf(stderr, "replay: cannot list %s\n", path);
                        return -1;
                }
                for (i = 0; i < n; i++) {
                        if (names[i]->d_name[0] != '.') {
                                _cleanup_free_ char *child =
                                        xasprintf("%s/%s", path, names[i]->d_name);
                                if (replay_path(child) < 0)
                                        r = -1;
                        }
                        free(names[i]);
                }
                free(names);
                return r;
        }
        if (S_ISREG(st.st_mode)) {
                _cleanup_(kiln_error_freep) struct kiln_error *err = NULL;
                _cleanup_free_ char *data = NULL;
                size_t len;

                if (kiln_read_file_at(AT_FDCWD, path, 16 << 20, &data, &len, &err) < 0) {
                        fprintf(stderr, "replay: cannot read %s\n", path);
                        return -1;
                }
                LLVMFuzzerTestOneInput((const uint8_t *) data, len);
                replayed++;
        }
        return 0;
}

int main(int argc, char **argv)
{
        int i, r = 0;

        for (i = 1; i < argc; i++) {
                /* A leading '?' marks an optional input (the conformance data beside the checkout).
                 */
                const char *path = argv[i];
                struct stat st;

                if (path[0] == '?') {
                        path++;
                        if (stat(path, &st) < 0)
                                continue;
                }
                if (replay_path(path) < 0)
                        r = 1;
        }
        printf("replayed %u inputs\n", replayed);
        if (replayed == 0) {
                fprintf(stderr, "replay: no inputs\n");
                return 1;
        }
        return r;
}
