/*
 * Fuzzes word expansion. The first byte picks the flags and the escape character; the rest is
 * the word, expanded both as one word and with splitting.
 */
#include <stdint.h>
#include <stdlib.h>

#include "parser/parser.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct df_vars vars = DF_VARS_INIT;
        struct kiln_error *err = NULL;
        char *word = NULL, **words = NULL;
        unsigned flags;
        char escape;
        size_t n;

        if (size < 1 || size > 1 << 16)
                return 0;
        flags = data[0] & 0x0F;
        escape = (data[0] & 0x10) ? '`' : '\\';
        df_vars_set(&vars, "PWD", "/home");
        df_vars_set(&vars, "EMPTY", "");
        df_vars_set(&vars, "X", "xx*yy/zz");
        df_vars_set(&vars, "SPACES", "  a b  ");
        df_vars_set(&vars, "KOREAN", "한국어");
        if (df_expand_word((const char *) data + 1, size - 1, escape, flags, &vars, &word, NULL,
                           &err) == 0)
                free(word);
        err = kiln_error_free(err);
        if (df_expand_words((const char *) data + 1, size - 1, escape, flags, &vars, &words, &n,
                            &err) == 0)
                df_strv_free(words);
        kiln_error_free(err);
        df_vars_release(&vars);
        return 0;
}
