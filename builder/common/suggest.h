/* "Did you mean ...?" for misspelt keywords, flags and names. */
#pragma once

#include <stddef.h>

/**
 * Returns the candidate closest to `word` (case-insensitive edit distance) when it is close
 * enough to be a likely typo, else NULL. The result points into `candidates`.
 */
const char *kiln_suggest(const char *word, const char *const *candidates, size_t n);
