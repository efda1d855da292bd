/*
 * UTF-8 decoding and the character classes Dockerfile semantics are defined in terms of
 * (Go's unicode.IsSpace, IsLetter, IsDigit and strconv's IsPrint), so that kiln splits and
 * quotes text exactly where BuildKit does.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KILN_RUNE_ERROR 0xFFFDu

/** Decodes one rune from s[0..len) (len > 0). Returns the bytes consumed (1 for an invalid
 * byte, which decodes as KILN_RUNE_ERROR, as Go does). */
size_t kiln_utf8_decode(const char *s, size_t len, uint32_t *ret_rune);

/** Encodes a rune; returns the number of bytes written to out (1..4). */
size_t kiln_utf8_encode(uint32_t rune, char out[4]);

bool kiln_rune_is_space_slow(uint32_t r);

/** Go's unicode.IsSpace (ASCII inline, the rest out of line). */
static inline bool kiln_rune_is_space(uint32_t r)
{
        if (r < 0x80)
                return r == ' ' || (r >= '\t' && r <= '\r');
        return kiln_rune_is_space_slow(r);
}
/** Go's unicode.IsLetter (approximated by the C.UTF-8 locale's classes outside ASCII). */
bool kiln_rune_is_letter(uint32_t r);
/** Go's unicode.IsDigit. */
bool kiln_rune_is_digit(uint32_t r);
/** Go's strconv.IsPrint: letters, marks, numbers, punctuation, symbols and U+0020. */
bool kiln_rune_is_print(uint32_t r);
