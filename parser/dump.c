/* The syntax tree in BuildKit's `result` format (Node.Dump), with Go's string quoting. */
#include <string.h>

#include "builder/common/utf8.h"
#include "parser/parser-internal.h"

static const char hexdigits[] = "0123456789abcdef";

int df_quote(const char *s, size_t len, struct kiln_buf *out, struct kiln_error **err)
{
        size_t i = 0;

        if (kiln_buf_addc(out, '"', err) < 0)
                return -1;
        while (i < len) {
                char tmp[12];
                size_t tn = 0, width;
                uint32_t r;

                width = kiln_utf8_decode(s + i, len - i, &r);
                if (width == 1 && r == KILN_RUNE_ERROR) {
                        unsigned char b = (unsigned char) s[i];
                        tmp[tn++] = '\\';
                        tmp[tn++] = 'x';
                        tmp[tn++] = hexdigits[b >> 4];
                        tmp[tn++] = hexdigits[b & 0xF];
                } else if (r == '"' || r == '\\') {
                        tmp[tn++] = '\\';
                        tmp[tn++] = (char) r;
                } else if (kiln_rune_is_print(r)) {
                        memcpy(tmp, s + i, width);
                        tn = width;
                } else {
                        const char *esc = NULL;
                        switch (r) {
                        case '\a':
                                esc = "\\a";
                                break;
                        case '\b':
                                esc = "\\b";
                                break;
                        case '\f':
                                esc = "\\f";
                                break;
                        case '\n':
                                esc = "\\n";
                                break;
                        case '\r':
                                esc = "\\r";
                                break;
                        case '\t':
                                esc = "\\t";
                                break;
                        case '\v':
                                esc = "\\v";
                                break;
                        default:
                                break;
                        }
                        if (esc) {
                                tn = strlen(esc);
                                memcpy(tmp, esc, tn);
                        } else {
                                int digits, shift;
                                tmp[tn++] = '\\';
                                if (r < ' ' || r == 0x7F) {
                                        tmp[tn++] = 'x';
                                        digits = 2;
                                } else if (r < 0x10000) {
                                        tmp[tn++] = 'u';
                                        digits = 4;
                                } else {
                                        tmp[tn++] = 'U';
                                        digits = 8;
                                }
                                for (shift = (digits - 1) * 4; shift >= 0; shift -= 4)
                                        tmp[tn++] = hexdigits[(r >> shift) & 0xF];
                        }
                }
                if (kiln_buf_add(out, tmp, tn, err) < 0)
                        return -1;
                i += width;
        }
        return kiln_buf_addc(out, '"', err);
}

int df_node_dump(const struct df_node *node, struct kiln_buf *out, struct kiln_error **err)
{
        size_t i, n = strlen(node->keyword);

        /* BuildKit lower-cases with Go's Unicode tables; instruction keywords are ASCII, so
         * kiln lower-cases ASCII only and leaves other bytes of an unknown keyword as written. */
        for (i = 0; i < n; i++) {
                char c = node->keyword[i];
                if (c >= 'A' && c <= 'Z')
                        c = (char) (c - 'A' + 'a');
                if (kiln_buf_addc(out, c, err) < 0)
                        return -1;
        }
        if (node->n_flags) {
                if (kiln_buf_adds(out, " [", err) < 0)
                        return -1;
                for (i = 0; i < node->n_flags; i++) {
                        if (i && kiln_buf_addc(out, ' ', err) < 0)
                                return -1;
                        if (df_quote(node->flags[i].text, node->flags[i].len, out, err) < 0)
                                return -1;
                }
                if (kiln_buf_addc(out, ']', err) < 0)
                        return -1;
        }
        if (node->trigger) {
                if (kiln_buf_adds(out, " (", err) < 0 ||
                    df_node_dump(node->trigger, out, err) < 0 || kiln_buf_addc(out, ')', err) < 0)
                        return -1;
                return 0;
        }
        for (i = 0; i < node->n_args; i++) {
                if (kiln_buf_addc(out, ' ', err) < 0)
                        return -1;
                if (df_quote(node->args[i].text, node->args[i].len, out, err) < 0)
                        return -1;
        }
        return 0;
}

int df_syntax_dump(const struct df_syntax *syn, struct kiln_buf *out, struct kiln_error **err)
{
        size_t i;

        for (i = 0; i < syn->n_nodes; i++) {
                if (kiln_buf_addc(out, '(', err) < 0 ||
                    df_node_dump(&syn->nodes[i], out, err) < 0 ||
                    kiln_buf_adds(out, ")\n", err) < 0)
                        return -1;
        }
        return 0;
}
