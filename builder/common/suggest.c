#include <ctype.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "builder/common/suggest.h"
#include "builder/common/xalloc.h"

static bool same(char x, char y)
{
        return tolower((unsigned char) x) == tolower((unsigned char) y);
}

/* Edit distance counting a swap of neighbours as one edit (optimal string alignment);
 * words longer than 64 bytes never match. */
static size_t distance(const char *a, const char *b)
{
        size_t la = strlen(a), lb = strlen(b), i, j;
        size_t d[65][65];

        if (la > 64 || lb > 64)
                return (size_t) -1;
        for (i = 0; i <= la; i++)
                d[i][0] = i;
        for (j = 0; j <= lb; j++)
                d[0][j] = j;
        for (i = 1; i <= la; i++) {
                for (j = 1; j <= lb; j++) {
                        size_t best = d[i - 1][j - 1] + !same(a[i - 1], b[j - 1]);
                        if (d[i - 1][j] + 1 < best)
                                best = d[i - 1][j] + 1;
                        if (d[i][j - 1] + 1 < best)
                                best = d[i][j - 1] + 1;
                        if (i > 1 && j > 1 && same(a[i - 1], b[j - 2]) &&
                            same(a[i - 2], b[j - 1]) && d[i - 2][j - 2] + 1 < best)
                                best = d[i - 2][j - 2] + 1;
                        d[i][j] = best;
                }
        }
        return d[la][lb];
}

const char *kiln_suggest(const char *word, const char *const *candidates, size_t n)
{
        size_t best = (size_t) -1, i, limit;
        const char *pick = NULL;

        if (!word || !*word)
                return NULL;
        /* One edit for short words, up to a third of the word for longer ones. */
        limit = strlen(word) / 3;
        if (limit < 1)
                limit = 1;
        for (i = 0; i < n; i++) {
                size_t d = distance(word, candidates[i]);
                if (d < best) {
                        best = d;
                        pick = candidates[i];
                }
        }
        return best <= limit && best > 0 ? pick : NULL;
}
