#include <locale.h>
#include <pthread.h>
#include <wctype.h>

#include "builder/common/utf8.h"

size_t kiln_utf8_decode(const char *str, size_t len, uint32_t *ret_rune)
{
        const unsigned char *s = (const unsigned char *) str;
        uint32_t r;
        size_t n, i;

        if (s[0] < 0x80) {
                *ret_rune = s[0];
                return 1;
        }
        if (s[0] >= 0xC2 && s[0] <= 0xDF) {
                n = 2;
                r = s[0] & 0x1F;
        } else if (s[0] >= 0xE0 && s[0] <= 0xEF) {
                n = 3;
                r = s[0] & 0x0F;
        } else if (s[0] >= 0xF0 && s[0] <= 0xF4) {
                n = 4;
                r = s[0] & 0x07;
        } else {
                *ret_rune = KILN_RUNE_ERROR;
                return 1;
        }
        if (len < n) {
                *ret_rune = KILN_RUNE_ERROR;
                return 1;
        }
        for (i = 1; i < n; i++) {
                if ((s[i] & 0xC0) != 0x80) {
                        *ret_rune = KILN_RUNE_ERROR;
                        return 1;
                }
                r = (r << 6) | (s[i] & 0x3F);
        }
        /* Overlong forms, surrogates and values past U+10FFFF are invalid. */
        if ((n == 3 && r < 0x800) || (n == 4 && (r < 0x10000 || r > 0x10FFFF)) ||
            (r >= 0xD800 && r <= 0xDFFF)) {
                *ret_rune = KILN_RUNE_ERROR;
                return 1;
        }
        *ret_rune = r;
        return n;
}

size_t kiln_utf8_encode(uint32_t r, char out[4])
{
        if (r > 0x10FFFF || (r >= 0xD800 && r <= 0xDFFF))
                r = KILN_RUNE_ERROR;
        if (r < 0x80) {
                out[0] = (char) r;
                return 1;
        }
        if (r < 0x800) {
                out[0] = (char) (0xC0 | (r >> 6));
                out[1] = (char) (0x80 | (r & 0x3F));
                return 2;
        }
        if (r < 0x10000) {
                out[0] = (char) (0xE0 | (r >> 12));
                out[1] = (char) (0x80 | ((r >> 6) & 0x3F));
                out[2] = (char) (0x80 | (r & 0x3F));
                return 3;
        }
        out[0] = (char) (0xF0 | (r >> 18));
        out[1] = (char) (0x80 | ((r >> 12) & 0x3F));
        out[2] = (char) (0x80 | ((r >> 6) & 0x3F));
        out[3] = (char) (0x80 | (r & 0x3F));
        return 4;
}

bool kiln_rune_is_space_slow(uint32_t r)
{
        switch (r) {
        case '\t':
        case '\n':
        case '\v':
        case '\f':
        case '\r':
        case ' ':
        case 0x85:
        case 0xA0:
        case 0x1680:
        case 0x2028:
        case 0x2029:
        case 0x202F:
        case 0x205F:
        case 0x3000:
                return true;
        default:
                return r >= 0x2000 && r <= 0x200A;
        }
}

/* Classes outside ASCII come from glibc's C.UTF-8 tables, looked up in a locale object of
 * our own so that nothing depends on the process locale. */
static locale_t utf8_locale;
static pthread_once_t utf8_locale_once = PTHREAD_ONCE_INIT;

static void utf8_locale_init(void)
{
        utf8_locale = newlocale(LC_CTYPE_MASK, "C.UTF-8", (locale_t) 0);
}

static locale_t get_locale(void)
{
        pthread_once(&utf8_locale_once, utf8_locale_init);
        return utf8_locale;
}

bool kiln_rune_is_letter(uint32_t r)
{
        locale_t loc;

        if (r < 0x80)
                return (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z');
        if (r == 0xAA || r == 0xB5 || r == 0xBA)
                return true;
        if (r < 0xC0 || r == 0xD7 || r == 0xF7 || r == KILN_RUNE_ERROR)
                return false;
        loc = get_locale();
        if (!loc)
                return true; /* no tables: treat text beyond Latin-1 as letters */
        return iswalpha_l((wint_t) r, loc) && !kiln_rune_is_digit(r);
}

/* Decimal digit blocks (Unicode category Nd), by their zero. */
static const uint32_t digit_zeros[] = {
        0x0660,  0x06F0,  0x07C0,  0x0966,  0x09E6,  0x0A66,  0x0AE6,  0x0B66,  0x0BE6,  0x0C66,
        0x0CE6,  0x0D66,  0x0DE6,  0x0E50,  0x0ED0,  0x0F20,  0x1040,  0x1090,  0x17E0,  0x1810,
        0x1946,  0x19D0,  0x1A80,  0x1A90,  0x1B50,  0x1BB0,  0x1C40,  0x1C50,  0xA620,  0xA8D0,
        0xA900,  0xA9D0,  0xA9F0,  0xAA50,  0xABF0,  0xFF10,  0x104A0, 0x11066, 0x110F0, 0x11136,
        0x111D0, 0x112F0, 0x11450, 0x114D0, 0x11650, 0x116C0, 0x11730, 0x118E0, 0x16A60, 0x16B50,
        0x1D7CE, 0x1D7D8, 0x1D7E2, 0x1D7EC, 0x1D7F6, 0x1E950,
};

bool kiln_rune_is_digit(uint32_t r)
{
        size_t i;

        if (r < 0x80)
                return r >= '0' && r <= '9';
        for (i = 0; i < sizeof(digit_zeros) / sizeof(digit_zeros[0]); i++)
                if (r >= digit_zeros[i] && r <= digit_zeros[i] + 9)
                        return true;
        return false;
}

static bool is_format_or_private(uint32_t r)
{
        static const uint32_t ranges[][2] = {
                { 0x00AD, 0x00AD },   { 0x0600, 0x0605 },    { 0x061C, 0x061C },
                { 0x06DD, 0x06DD },   { 0x070F, 0x070F },    { 0x0890, 0x0891 },
                { 0x08E2, 0x08E2 },   { 0x180E, 0x180E },    { 0x200B, 0x200F },
                { 0x202A, 0x202E },   { 0x2060, 0x2064 },    { 0x2066, 0x206F },
                { 0xD800, 0xF8FF },   { 0xFEFF, 0xFEFF },    { 0xFFF9, 0xFFFB },
                { 0x110BD, 0x110BD }, { 0x110CD, 0x110CD },  { 0x13430, 0x1343F },
                { 0x1BCA0, 0x1BCA3 }, { 0x1D173, 0x1D17A },  { 0xE0001, 0xE0001 },
                { 0xE0020, 0xE007F }, { 0xF0000, 0x10FFFF },
        };
        size_t i;

        for (i = 0; i < sizeof(ranges) / sizeof(ranges[0]); i++)
                if (r >= ranges[i][0] && r <= ranges[i][1])
                        return true;
        return false;
}

bool kiln_rune_is_print(uint32_t r)
{
        locale_t loc;

        if (r < 0x80)
                return r >= 0x20 && r < 0x7F;
        if (r < 0xA1 || r == 0xAD)
                return false; /* C1 controls, NBSP, soft hyphen */
        if (r > 0x10FFFF || kiln_rune_is_space(r) || is_format_or_private(r))
                return false;
        loc = get_locale();
        if (!loc)
                return true;
        return iswprint_l((wint_t) r, loc);
}
