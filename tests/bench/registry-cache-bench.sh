#!/usr/bin/env bash
# The registry cache's promise (issue 7 §6): a rebuild on an empty store from the registry cache
# against the cold build, in one run. A real registry on loopback (Debian's docker-registry)
# holds the base image; each timed build uses a fresh store, as a new CI runner would:
#
#   cold          an empty store, no cache: pulls the base, runs every step
#   export        the same plus --cache-to type=registry,ref=R/cache,mode=max (written once)
#   from-cache    an empty store, --cache-from type=registry,ref=R/cache: nothing runs; only
#                 the layers the final image needs are downloaded
#
# It prints wall times (median of BENCH_RUNS), the bytes store B downloaded and the ratio
# from-cache / cold (target <= 0.3). Not a test: it asserts nothing.
#
#   tests/bench/registry-cache-bench.sh [path/to/kiln]      (or KILN=path/to/kiln)
#
# Runs as root. Needs docker-registry, skopeo, python3 and the example bases in kiln's default
# store (/var/lib/kiln: `bash examples/base-images.sh`, as .ci/setup runs). The example is
# examples/multi-stage (apt-get in its build stage needs Debian's mirror) unless BENCH_EXAMPLE
# names another directory of examples/ whose base ARG is BENCH_BASE_ARG (default DEBIAN) and
# base BENCH_BASE (default debian:12).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/../.." && pwd)
KILN=$(realpath "${1:-${KILN:-$SRC/build/kiln}}")
RUNS=${BENCH_RUNS:-3}
EXAMPLE=${BENCH_EXAMPLE:-multi-stage}
BASE=${BENCH_BASE:-debian:12}
BASE_ARG=${BENCH_BASE_ARG:-DEBIAN}

if [ "$(id -u)" != 0 ]; then
        echo "registry-cache-bench: run as root" >&2
        exit 2
fi
for c in docker-registry skopeo python3; do
        command -v "$c" >/dev/null || { echo "registry-cache-bench: missing $c" >&2; exit 2; }
done
if ! KILN_ROOT=/var/lib/kiln "$KILN" images 2>/dev/null | grep -q "^${BASE%%:*} *"; then
        echo "registry-cache-bench: $BASE is not in /var/lib/kiln (run: bash examples/base-images.sh)" >&2
        exit 2
fi

WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/kiln-rcbench.XXXXXX")
# shellcheck source=../integration/lib/registry.sh
. "$SRC/tests/integration/lib/registry.sh"
trap 'registry_cleanup; rm -rf "$WORK"' EXIT
export DOCKER_CONFIG="$WORK/docker" XDG_CONFIG_HOME="$WORK/xdg"
unset SOURCE_DATE_EPOCH

registry_start plain >/dev/null
R=$REG_ADDR
KILN_ROOT=/var/lib/kiln "$KILN" push "$BASE" "$R/$BASE" >/dev/null

now() { date +%s.%N; }
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
# build NAME ARGS...: a build into a fresh store $WORK/NAME; prints its wall time in seconds
build() {
        local name=$1 t0 t1
        shift
        rm -rf "$WORK/$name"
        t0=$(now)
        KILN_ROOT="$WORK/$name" "$KILN" build --progress plain --build-arg "$BASE_ARG=$R/$BASE" "$@" \
                "$SRC/examples/$EXAMPLE" >"$WORK/$name.log" 2>&1 || {
                echo "registry-cache-bench: the $name build failed:" >&2
                tail -n 20 "$WORK/$name.log" >&2
                exit 1
        }
        t1=$(now)
        echo "$t1 - $t0" | bc -l
}
bytes_of() { du -sb "$WORK/$1/blobs" | cut -f1; }

echo "# examples/$EXAMPLE, base $BASE from a loopback registry, $RUNS runs each, fresh store per run"
cold=()
for ((i = 0; i < RUNS; i++)); do cold+=("$(build cold)"); done
cold_bytes=$(bytes_of cold)
export_t=$(build export --cache-to "type=registry,ref=$R/cache:bench,mode=max")
warm=()
for ((i = 0; i < RUNS; i++)); do warm+=("$(build warm --cache-from "type=registry,ref=$R/cache:bench")"); done
warm_bytes=$(bytes_of warm)
hits=$(grep -c '^#[0-9]* CACHED' "$WORK/warm.log" || true)
steps=$(grep -c '^#[0-9]* \[' "$WORK/warm.log" || true)

cold_m=$(printf '%s\n' "${cold[@]}" | median)
warm_m=$(printf '%s\n' "${warm[@]}" | median)
printf '%-34s %10s %14s\n' "build (fresh store each)" "wall s" "store bytes"
printf '%-34s %10.2f %14s\n' "cold" "$cold_m" "$cold_bytes"
printf '%-34s %10.2f %14s\n' "cold + --cache-to mode=max (once)" "$export_t" "-"
printf '%-34s %10.2f %14s\n' "--cache-from on an empty store" "$warm_m" "$warm_bytes"
printf '%-34s %10.3f   (target <= 0.3)\n' "ratio from-cache / cold" "$(echo "$warm_m / $cold_m" | bc -l)"
echo "# from-cache: $hits of $steps steps CACHED; $(grep -c '^# cache: fetched' "$WORK/warm.log" || true) fetches"
grep '^# cache:' "$WORK/warm.log" | sed 's/^/#   /'
