#!/usr/bin/env bash
# The module rules of STYLE.md, checked on the sources: allowed include edges
# (parser -> common; layers -> common; registry -> common, layers; builder -> all), and
# nothing prints but builder/main.c.
set -u
cd "${KILN_SOURCE_DIR:?}"

n=0
failed=0
result() {
        n=$((n + 1))
        if [ -z "$2" ]; then
                echo "ok $n - $1"
        else
                failed=$((failed + 1))
                echo "not ok $n - $1"
                printf '%s\n' "$2" | sed 's/^/#   /'
        fi
}

# includes_outside DIR ALLOWED_PREFIX... : project includes in DIR that are not allowed
includes_outside() {
        local dir=$1
        shift
        local pattern
        pattern=$(printf '|%s' "$@")
        pattern=${pattern:1}
        grep -rnE '^#include "' "$dir" --include='*.c' --include='*.h' |
                grep -vE "#include \"($pattern)/" |
                grep -v '#include "kiln-config.h"' || true
}

result "builder/common includes only itself" "$(includes_outside builder/common builder/common)"
result "parser includes only common and itself" "$(includes_outside parser builder/common parser)"
result "layers includes only common and itself" "$(includes_outside layers builder/common layers)"
result "registry includes only common, layers and itself" \
        "$(includes_outside registry builder/common layers registry)"

printers=$(grep -rnE '\b(printf|fprintf|puts|fputs|putchar|perror|vprintf|vfprintf|dprintf)\s*\(' \
        builder parser layers registry --include='*.c' --include='*.h' |
        grep -v '^builder/main.c:' | grep -v 'snprintf\|vsnprintf\|asprintf' || true)
result "nothing but builder/main.c prints" "$printers"

echo "1..$n"
[ "$failed" = 0 ]
