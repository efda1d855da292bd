/*
 * Fuzzes image reference parsing and WWW-Authenticate parsing with the same input, read as one
 * string (up to its first NUL byte). Checks what must hold, not just that nothing crashes: a
 * normalised reference parses again to itself, and a parsed challenge list is non-empty with
 * lower-case schemes and keys.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "builder/common/xalloc.h"
#include "registry/registry.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_reference(const char *s)
{
        struct kiln_error *err = NULL;
        struct reg_ref r = { 0 }, again = { 0 };
        char *str, *str2, *repo;

        if (reg_ref_parse(s, &r, &err) < 0) {
                if (!err || err->kind != KILN_ERR_INVALID || r.domain || r.path)
                        abort();
                kiln_error_free(err);
                return;
        }
        if (!r.domain || !r.path || (!r.tag && !r.digest))
                abort();
        str = reg_ref_string(&r);
        repo = reg_ref_repository(&r);
        if (strncmp(str, repo, strlen(repo)) != 0 || strlen(repo) > 255 || !reg_ref_endpoint(&r))
                abort();
        if (reg_ref_parse(str, &again, NULL) < 0)
                abort();
        str2 = reg_ref_string(&again);
        if (strcmp(str, str2) != 0)
                abort();
        free(str);
        free(str2);
        free(repo);
        reg_ref_release(&r);
        reg_ref_release(&again);
}

static void check_challenges(const char *s)
{
        struct kiln_error *err = NULL;
        struct reg_challenge *c = NULL;
        size_t n = 0, i, k;

        if (reg_challenges_parse(s, &c, &n, &err) < 0) {
                if (!err || c)
                        abort();
                kiln_error_free(err);
                return;
        }
        if (n == 0)
                abort();
        for (i = 0; i < n; i++) {
                if (!c[i].scheme[0] || strpbrk(c[i].scheme, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
                        abort();
                for (k = 0; k < c[i].n; k++) {
                        if (strpbrk(c[i].keys[k], "ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
                                abort();
                        if (reg_challenge_param(&c[i], c[i].keys[k]) == NULL)
                                abort();
                }
        }
        reg_challenges_free(c, n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        char *s;

        if (size > 1 << 16)
                return 0;
        s = xmalloc(size + 1);
        memcpy(s, data, size);
        s[size] = '\0';
        check_reference(s);
        check_challenges(s);
        free(s);
        return 0;
}
