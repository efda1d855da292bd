#!/usr/bin/env bash
# The build cache: a cold build, then no-op rebuilds (nothing changed, every step a hit) with
# kiln against `buildah bud --layers` (and `docker build` when a Docker engine answers), on
# examples/multi-stage, examples/python-app and a small busybox Dockerfile. Prints the cold
# time, the median of the no-op rebuilds and the ratio kiln / peer. Issue 7's targets: a no-op
# rebuild under 100 ms and at most 0.2x the peers'. Not a test: it asserts nothing.
#
#   tests/bench/cache-bench.sh [path/to/kiln]        (or KILN=path/to/kiln)
#
# Runs as root. Needs buildah, skopeo, python3 and busybox-static. Environment:
#   BENCH_RUNS=5             no-op rebuilds of each (the table shows their median)
#   BENCH_BASES=/var/lib/kiln  a kiln store holding debian:12 and debian-python:3.11, the
#                            examples' bases (examples/base-images.sh makes them); an example
#                            whose base is missing is skipped
#   BENCH_CASES="busybox multi-stage python-app"
#   BUILDAH_ISOLATION=chroot   or oci (runc)
#   TMPDIR=/var/tmp          where the stores, storage and contexts go
#
# The bases are copied into a fresh kiln store (skopeo, from the OCI layout kiln's store is),
# and buildah pulls them out of that store, so both builders start from the same image. The
# cold build is timed once (examples/multi-stage downloads gcc: it needs a Debian mirror).
# The first no-op rebuild is shown apart from the median (a builder that makes something once
# after a cold build shows it there). Every timed build runs with host network; the rebuilds'
# output is checked for hits (kiln's CACHED lines, buildah's "Using cache") so a rebuild that
# ran something is shown, not hidden. buildah's pull of the base (which unpacks it) is not
# timed, kiln's unpacking of it into a fresh store is: cold times favour buildah.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/../.." && pwd)
KILN=$(realpath "${1:-${KILN:-$SRC/build/kiln}}")
RUNS=${BENCH_RUNS:-5}
BASES=${BENCH_BASES:-/var/lib/kiln}
CASES=${BENCH_CASES:-busybox multi-stage python-app}
ISOLATION=${BUILDAH_ISOLATION:-chroot}

if [ "$(id -u)" != 0 ]; then
        echo "cache-bench: run as root (buildah with overlay storage)" >&2
        exit 2
fi
missing=
for c in buildah skopeo python3; do command -v "$c" >/dev/null || missing="$missing $c"; done
[ -x /bin/busybox ] || missing="$missing busybox-static"
if [ -n "$missing" ]; then
        echo "cache-bench: missing:$missing (apt-get install -y buildah skopeo python3 busybox-static)" >&2
        exit 2
fi
[ -x "$KILN" ] || { echo "cache-bench: no kiln at $KILN" >&2; exit 2; }

WORK="${TMPDIR:-/var/tmp}/kiln-cache-bench-$$-$RANDOM"
mkdir -m 700 "$WORK"
umount_under() {
        local m
        awk -v d="$1" 'index($2, d) == 1 { print $2 }' /proc/self/mounts | sort -r |
                while read -r m; do umount -l "$m" 2>/dev/null || true; done
}
cleanup() { umount_under "$WORK"; rm -rf "$WORK"; }
trap cleanup EXIT
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY SOURCE_DATE_EPOCH
export BUILDAH_ISOLATION="$ISOLATION"
LOGS="$WORK/logs"
mkdir -p "$LOGS"

DOCKER=0
if command -v docker >/dev/null && docker info >/dev/null 2>&1; then DOCKER=1; fi

# ---- bases: one template kiln store ----

KT="$WORK/kiln-template"
B="$WORK/busybox"
mkdir -p "$B/bin" "$B/etc" "$B/tmp" "$B/root"
chmod 1777 "$B/tmp"
cp /bin/busybox "$B/bin/busybox"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -s busybox "$B/bin/$a"; done
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$B/etc/passwd"
printf 'root:x:0:\n' >"$B/etc/group"
"$KILN" import --root "$KT" -t bench/busybox:1 "$B" >/dev/null

have_base() { "$KILN" images --root "$BASES" 2>/dev/null | grep -q "^$1 "; }
copy_base() { # copy_base NAME: from $BASES into the template store
        skopeo copy -q "oci:$BASES:$1" "oci:$KT:$1" >/dev/null
}
runnable=
for kase in $CASES; do
        case $kase in
        busybox) runnable="$runnable $kase" ;;
        multi-stage | python-app)
                base=debian:12
                [ "$kase" = python-app ] && base=debian-python:3.11
                if have_base "$base"; then
                        "$KILN" images --root "$KT" | grep -q "^$base " || copy_base "$base"
                        runnable="$runnable $kase"
                else
                        echo "cache-bench: skipping $kase: no $base in $BASES (examples/base-images.sh)" >&2
                fi
                ;;
        *) echo "cache-bench: unknown case '$kase'" >&2; exit 2 ;;
        esac
done

# ---- contexts ----

mkdir -p "$WORK/ctx"
cp -a "$SRC/examples/multi-stage" "$WORK/ctx/multi-stage"
cp -a "$SRC/examples/python-app" "$WORK/ctx/python-app"
mkdir -p "$WORK/ctx/busybox/src"
for i in $(seq 1 50); do echo "file $i" >"$WORK/ctx/busybox/src/f$i.txt"; done
cat >"$WORK/ctx/busybox/Dockerfile" <<'EOF'
FROM bench/busybox:1
ENV APP=/app
WORKDIR /app
COPY src ./src
RUN cat src/*.txt | wc -l > /app/count && echo built > /app/stamp
RUN mkdir -p /data && seq 1 1000 > /data/numbers
CMD ["cat", "/app/count"]
EOF

# ---- measuring ----

ms() { echo $(($(date +%s%N) / 1000000)); }
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : int((v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }
# timed LOG COMMAND...: the wall time in ms on stdout; the command's output to LOG
timed() {
        local log=$1 t0 t1
        shift
        t0=$(ms)
        if ! "$@" >"$log" 2>&1; then
                echo "cache-bench: FAILED: $*" >&2
                tail -n 20 "$log" >&2
                return 1
        fi
        t1=$(ms)
        echo $((t1 - t0))
}

bh() { # bh ARGS...: buildah on the bench's private storage
        buildah --root "$WORK/bh/root" --runroot "$WORK/bh/run" --storage-driver overlay "$@"
}
bh_reset() {
        if [ -d "$WORK/bh/root" ]; then bh rm -a >/dev/null 2>&1 || true; fi
        if [ -d "$WORK/bh/root" ]; then bh rmi -af >/dev/null 2>&1 || true; fi
        umount_under "$WORK/bh"
        rm -rf "$WORK/bh"
}
bh_bases() { # the template store's images, pulled into a fresh buildah storage
        local name id
        bh_reset
        for name in $("$KILN" images --root "$KT" | awk 'NR > 1 { print $1 }'); do
                id=$(bh pull -q "oci:$KT:$name")
                bh tag "$id" "$name"
        done
}

echo "kiln: $KILN; buildah $(buildah --version | awk '{print $3}') (isolation $ISOLATION); $(nproc) CPUs"
echo "docker: $([ "$DOCKER" = 1 ] && docker version --format '{{.Server.Version}}' || echo 'no engine answers: not compared')"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo

RESULTS="$WORK/results"
: >"$RESULTS"
# one line each: CASE BUILDER COLD FIRST-NOOP NOOP-MEDIAN HITS
for kase in $runnable; do
        ctx="$WORK/ctx/$kase"
        # kiln: a fresh store holding the bases
        KS="$WORK/kiln-store"
        rm -rf "$KS" && cp -a "$KT" "$KS"
        cold=$(timed "$LOGS/kiln-$kase-cold.log" "$KILN" build --root "$KS" --progress plain -t bench/out:1 "$ctx")
        echo "  kiln   $kase: cold $cold ms"
        times=()
        for ((r = 1; r <= RUNS; r++)); do
                times+=("$(timed "$LOGS/kiln-$kase-$r.log" "$KILN" build --root "$KS" --progress plain -t bench/out:1 "$ctx")")
        done
        steps=$(grep -c '^#[0-9]* \[' "$LOGS/kiln-$kase-$RUNS.log" || true)
        hits=$(grep -c '^#[0-9]* CACHED' "$LOGS/kiln-$kase-$RUNS.log" || true)
        echo "  kiln   $kase: no-op ${times[*]} ms ($hits of $steps steps CACHED)"
        printf '%s\tkiln\t%s\t%s\t%s\t%s/%s\n' "$kase" "$cold" "${times[0]}" "$(printf '%s\n' "${times[@]}" | median)" "$hits" "$steps" >>"$RESULTS"

        # buildah bud --layers: fresh storage with the bases pulled
        bh_bases
        cold=$(timed "$LOGS/buildah-$kase-cold.log" bh bud --layers --pull=never --isolation "$ISOLATION" \
                --network host -t bench/out:1 "$ctx")
        echo "  buildah $kase: cold $cold ms"
        times=()
        for ((r = 1; r <= RUNS; r++)); do
                times+=("$(timed "$LOGS/buildah-$kase-$r.log" bh bud --layers --pull=never --isolation "$ISOLATION" \
                        --network host -t bench/out:1 "$ctx")")
        done
        steps=$(grep -c 'STEP [0-9]*/[0-9]*: ' "$LOGS/buildah-$kase-$RUNS.log" || true)
        hits=$(grep -c '^--> Using cache' "$LOGS/buildah-$kase-$RUNS.log" || true)
        echo "  buildah $kase: no-op ${times[*]} ms ($hits of $steps steps from the cache)"
        printf '%s\tbuildah --layers\t%s\t%s\t%s\t%s/%s\n' "$kase" "$cold" "${times[0]}" "$(printf '%s\n' "${times[@]}" | median)" "$hits" "$steps" >>"$RESULTS"
        bh_reset

        if [ "$DOCKER" = 1 ]; then
                docker builder prune -af >/dev/null 2>&1 || true
                for name in $("$KILN" images --root "$KT" | awk 'NR > 1 { print $1 }'); do
                        skopeo copy -q "oci:$KT:$name" "docker-daemon:$name" >/dev/null 2>&1 ||
                                skopeo copy -q "oci:$KT:$name" "docker-daemon:docker.io/$name" >/dev/null
                done
                cold=$(timed "$LOGS/docker-$kase-cold.log" docker build --network host -t bench/out:1 "$ctx")
                times=()
                for ((r = 1; r <= RUNS; r++)); do
                        times+=("$(timed "$LOGS/docker-$kase-$r.log" docker build --network host -t bench/out:1 "$ctx")")
                done
                echo "  docker $kase: cold $cold ms, no-op ${times[*]} ms"
                printf '%s\tdocker build\t%s\t%s\t%s\t-\n' "$kase" "$cold" "${times[0]}" "$(printf '%s\n' "${times[@]}" | median)" >>"$RESULTS"
        fi
done

echo
python3 - "$RESULTS" "$RUNS" <<'EOF'
import sys
rows = [l.rstrip('\n').split('\t') for l in open(sys.argv[1]) if l.strip()]
runs = sys.argv[2]
print('%-12s %-17s %9s %11s %13s %6s %10s' % ('case', 'builder', 'cold ms', '1st no-op', 'no-op median',
                                               'hits', 'kiln/peer'))
kiln = {r[0]: float(r[4]) for r in rows if r[1] == 'kiln'}
for case, builder, cold, first, noop, hits in rows:
    ratio = '' if builder == 'kiln' else '%.3fx' % (kiln[case] / float(noop)) if float(noop) else '-'
    print('%-12s %-17s %9s %11s %13s %6s %10s' % (case, builder, cold, first, noop, hits, ratio))
print()
print('ms of wall time. no-op: %s rebuilds with nothing changed, right after the cold build; the '
      'first alone, and the median of all. hits: steps from the cache / steps, in the last '
      'rebuild (FROM never counts as a hit). kiln/peer: of the medians. Targets (issue 7): '
      'kiln < 100 ms, kiln/peer <= 0.2x.' % runs)
EOF
