#!/usr/bin/env bash
# Packs a generated tree (large files, half compressible, and many small files) into a layer
# with kiln and with the usual pipelines, in one run, and prints throughput, peak RSS and the
# ratios against the peers. Not a test: it asserts nothing.
#
#   tests/bench/layer-bench.sh [path/to/kiln] [size in MB, default 1000] [small files, default 50000]
#
# Needs zstd, gzip and pigz (Debian packages) for the peers. BENCH_GZIP=0 skips the (slow) gzip
# rows.
set -euo pipefail

KILN=$(realpath "${1:-build/kiln}")
MB=${2:-1000}
SMALL=${3:-50000}
WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/kiln-bench-XXXXXX")
trap 'rm -rf "$WORK"' EXIT
TREE="$WORK/tree"
export KILN_ROOT="$WORK/store"

mkdir -p "$TREE/big" "$TREE/small"
# Large files: half random (incompressible), half text-like (compressible).
big_mb=$((MB * 9 / 10))
nbig=$(((big_mb + 63) / 64))
for ((i = 0; i < nbig; i++)); do
        if ((i % 2 == 0)); then
                head -c $((64 << 20)) /dev/urandom >"$TREE/big/random-$i"
        else
                head -c $((47 << 20)) /dev/urandom | base64 -w 76 >"$TREE/big/text-$i"
        fi
done
# Small files, in directories of 1000.
python3 - "$TREE/small" "$SMALL" "$((MB - big_mb))" <<'EOF'
import os, random, sys
root, n, mb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
size = max(64, (mb << 20) // max(n, 1))
words = open('/usr/share/dict/words').read().split() if os.path.exists('/usr/share/dict/words') else \
        [''.join(random.choice('abcdefghijklmnop') for _ in range(6)) for _ in range(5000)]
random.seed(1)
for i in range(n):
    d = os.path.join(root, 'd%03d' % (i // 1000))
    os.makedirs(d, exist_ok=True)
    text = []
    length = 0
    while length < size:
        w = random.choice(words)
        text.append(w)
        length += len(w) + 1
    with open(os.path.join(d, 'f%05d.txt' % i), 'w') as f:
        f.write(' '.join(text)[:size])
EOF
sync
bytes=$(du -sb "$TREE" | cut -f1)
echo "tree: $((bytes >> 20)) MiB, $(find "$TREE" -type f | wc -l) files"

# measure NAME COMMAND: runs twice (warm cache), keeps the faster; prints MB/s and peak RSS
declare -A SECS RSS
measure() {
        local name=$1 best=999999 rss=0 t m
        shift
        for _ in 1 2; do
                sync # do not time the previous run's writeback
                /usr/bin/time -f '%e %M' -o "$WORK/time" bash -c "$*" >/dev/null 2>"$WORK/stderr" ||
                        { cat "$WORK/stderr"; return 1; }
                read -r t m <"$WORK/time"
                if awk "BEGIN{exit !($t < $best)}"; then best=$t; rss=$m; fi
        done
        SECS[$name]=$best
        RSS[$name]=$rss
        printf '%-22s %8.2f s %9.1f MB/s %8.1f MiB peak RSS\n' "$name" "$best" \
                "$(awk "BEGIN{print $bytes / 1048576 / $best}")" "$(awk "BEGIN{print $rss / 1024}")"
}

cd "$WORK"
measure "kiln zstd" "'$KILN' layer create --compression zstd '$TREE'; '$KILN' prune >/dev/null"
measure "tar | zstd -T2 -3" "tar -C '$TREE' -cf - . | zstd -q -T2 -3 > out.zst"
if [ "${BENCH_GZIP:-1}" = 1 ]; then
        measure "kiln gzip" "'$KILN' layer create --compression gzip '$TREE'; '$KILN' prune >/dev/null"
        measure "tar | gzip -6" "tar -C '$TREE' -cf - . | gzip -6 > out.gz"
        if command -v pigz >/dev/null; then
                measure "tar | pigz -6" "tar -C '$TREE' -cf - . | pigz -6 > out.gz"
        fi
fi
measure "kiln none" "'$KILN' layer create --compression none '$TREE'; '$KILN' prune >/dev/null"
measure "tar" "tar -C '$TREE' -cf - . > out.tar"

ratio() { awk "BEGIN{printf \"%.2fx\", ${SECS[$2]} / ${SECS[$1]}}"; }
echo
echo "throughput ratios (higher is better for kiln; kiln also computes two sha256 and fsyncs):"
echo "  kiln zstd / (tar | zstd -T2 -3): $(ratio 'kiln zstd' 'tar | zstd -T2 -3')"
[ -n "${SECS['kiln gzip']:-}" ] && echo "  kiln gzip / (tar | gzip -6):     $(ratio 'kiln gzip' 'tar | gzip -6')"
[ -n "${SECS['tar | pigz -6']:-}" ] && echo "  kiln gzip / (tar | pigz -6):     $(ratio 'kiln gzip' 'tar | pigz -6')"
echo "  kiln none / tar:                 $(ratio 'kiln none' 'tar')"
