/* Helpers shared by the files of parser/; never included from outside this folder. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "builder/common/utf8.h"
#include "parser/parser.h"

/** Go's strings.TrimSpace boundaries: returns the byte range left after trimming. */
void df_trim_space(const char *s, size_t len, size_t *ret_start, size_t *ret_end);

/** Whether c is in BuildKit's reWhitespace class, [\t\v\f\r ]. */
static inline bool df_is_ws_class(char c)
{
        return c == ' ' || c == '\t' || c == '\v' || c == '\f' || c == '\r';
}

/** Decodes the rune at s[i] (i < len); returns its width. */
static inline size_t df_rune_at(const char *s, size_t len, size_t i, uint32_t *ret)
{
        return kiln_utf8_decode(s + i, len - i, ret);
}

/** ASCII lower-casing copy into the arena. */
char *df_arena_lower(struct kiln_arena *a, const char *s, size_t len);

/** Case-insensitive ASCII comparison of a NUL-terminated string with a known keyword. */
bool df_keyword_is(const char *s, const char *keyword);

/* A heredoc marker found on an instruction line. */
struct df_heredoc_spec {
        char *name;
        unsigned fd;
        bool chomp, expand;
};

/**
 * Classifies one word as BuildKit's ParseHeredoc does: 0 with *ret_name NULL when it is not a
 * heredoc marker, 0 with a malloc'd *ret_name when it is, -1 (PARSE) when its delimiter is
 * malformed (unbalanced quotes).
 */
int df_heredoc_word(const char *w, char **ret_name, unsigned *ret_fd, bool *ret_chomp,
                    bool *ret_expand, struct kiln_error **err);

/** The heredoc markers of an instruction line, in order; the caller frees names and array. */
int df_heredocs_from_line(const char *line, size_t len, struct df_heredoc_spec **ret, size_t *ret_n,
                          struct kiln_error **err);

/** BuildKit's parseWords (ARG's rule): whitespace splits, quotes and escapes are kept. */
char **df_split_words(const char *s, size_t len, char escape, size_t *ret_n);

/**
 * Matches a ${x#pattern} shell pattern at the start of `value`: *ret_end is the byte length of
 * the match Go's regexp would pick (shortest or, when `greedy`, longest), or -1.
 */
int df_shell_pattern_prefix(const char *pat, size_t plen, const char *value, bool greedy,
                            long *ret_end, struct kiln_error **err);

/** The `from=` field of a RUN --mount value (raw, malloc'd), or NULL when it has none. */
int df_mount_get_from(const char *spec, char **ret_from, struct kiln_error **err);

/** Whether a build arg is one of the predefined proxy ARGs (HTTP_PROXY, no_proxy, ...). */
bool df_is_proxy_arg(const char *name);
