#!/usr/bin/env bash
# Cold `kiln build` against `buildah bud` (overlay storage) on generated Dockerfiles, in one run:
# wall time (median and best of N), peak RSS and the ratios kiln / buildah. Then a RUN that
# changes one file over a base of 1,000 files and over one of 100,000 files (the base's root
# filesystem already unpacked), to show that a step's cost does not grow with the base.
# `docker build` joins only when a Docker engine answers. Not a test: it asserts nothing.
#
#   tests/bench/build-bench.sh [path/to/kiln]        (or KILN=path/to/kiln)
#
# Runs as root. Needs buildah, runc, busybox-static, python3 and GNU time (Debian packages
# buildah, runc, busybox-static, python3, time). Environment:
#   BENCH_RUNS=3            runs of each build (the table shows median and best)
#   BUILDAH_ISOLATION=chroot   or oci (runc)
#   BENCH_BUILDAH_LAYERS=1  also time `buildah bud --layers` (a layer per step, as kiln makes)
#   BENCH_DROP_CACHES=0     1: drop the page cache before every timed build
#   BENCH_SMALL=1000 BENCH_BIG=100000   file counts of the two bases of the second part
#   TMPDIR=/var/tmp         where the stores, storage and contexts go; TMPDIR=/dev/shm (tmpfs)
#                           takes the disk out, which on a busy machine dominates and scatters
#                           the times (creating files on ext4 there costs ~0.2 ms each)
#
# There is no registry: the base is Debian's static busybox with its applet links and an
# /etc/passwd, imported with `kiln import`; buildah pulls that same image out of kiln's store
# (an OCI layout), so both start from the same diff_id. Preparing the base is never timed.
# Cold means:
#   kiln (fresh)      a store holding only the imported base: the build unpacks the base layer
#                     into .kiln/rootfs/<chain id> first;
#   kiln (unpacked)   the same store after a warm-up build of another Dockerfile, so the base's
#                     root filesystem is already unpacked: buildah's state after a pull;
#   buildah           a fresh --root/--runroot holding only the pulled base (containers/storage
#                     keeps layers unpacked, so the base is always "unpacked" there).
# Neither builder has a build cache that could hit (kiln has none yet; buildah bud without
# --layers keeps none and every run uses a fresh --root anyway). Builds run with host network.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
KILN=$(realpath "${1:-${KILN:-$HERE/../../build/kiln}}")
RUNS=${BENCH_RUNS:-3}
ISOLATION=${BUILDAH_ISOLATION:-chroot}
SMALL=${BENCH_SMALL:-1000}
BIG=${BENCH_BIG:-100000}

if [ "$(id -u)" != 0 ]; then
        echo "build-bench: run as root (buildah with overlay storage and runc)" >&2
        exit 2
fi
missing=
for c in buildah runc python3 /usr/bin/time; do command -v "$c" >/dev/null || missing="$missing $c"; done
[ -x /bin/busybox ] && file -L /bin/busybox 2>/dev/null | grep -q 'statically linked' || missing="$missing busybox-static"
if [ -n "$missing" ]; then
        echo "build-bench: missing:$missing (apt-get install -y buildah runc busybox-static python3 time)" >&2
        exit 2
fi
[ -x "$KILN" ] || { echo "build-bench: no kiln at $KILN" >&2; exit 2; }

# lowercase: buildah names an image pulled from an oci: layout after the layout's path
WORK="${TMPDIR:-/var/tmp}/kiln-build-bench-$$-$RANDOM"
mkdir -m 700 "$WORK"
# containers/storage leaves the overlay home bind-mounted (private) and may leave layer mounts.
umount_under() {
        local m
        awk -v d="$1" 'index($2, d) == 1 { print $2 }' /proc/self/mounts | sort -r |
                while read -r m; do umount -l "$m" 2>/dev/null || true; done
}
cleanup() { umount_under "$WORK"; rm -rf "$WORK"; }
trap cleanup EXIT
RESULTS="$WORK/results.tsv"
LOGS="$WORK/logs"
mkdir -p "$LOGS"
: >"$RESULTS"
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY
export BUILDAH_ISOLATION="$ISOLATION"

# ---- bases ----

# mkbase DIR [FILES]: busybox, its applet links, /etc/passwd and /etc/group, FILES small files
# under /files (directories of 1,000).
mkbase() {
        local dir=$1 n=${2:-0} a
        mkdir -p "$dir/bin" "$dir/etc" "$dir/tmp" "$dir/root"
        chmod 1777 "$dir/tmp"
        cp /bin/busybox "$dir/bin/busybox"
        for a in $(/bin/busybox --list); do
                [ "$a" = busybox ] || ln -s busybox "$dir/bin/$a"
        done
        printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$dir/etc/passwd"
        printf 'root:x:0:\nnogroup:x:65534:\n' >"$dir/etc/group"
        if [ "$n" -gt 0 ]; then
                python3 - "$dir/files" "$n" <<'EOF'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, 'd%03d' % (i // 1000))
    if i % 1000 == 0:
        os.makedirs(d)
    with open(os.path.join(d, 'f%06d' % i), 'w') as f:
        f.write('file %d\n' % i)
EOF
        fi
}

bh() { # bh STORAGE-DIR ARGS...: buildah on a private root and runroot
        local s=$1
        shift
        buildah --root "$s/root" --runroot "$s/run" --storage-driver overlay "$@"
}
# bh_base STORAGE-DIR KILN-STORE NAME: the kiln store's image NAME, pulled into buildah's storage
bh_base() {
        local id
        id=$(bh "$1" pull -q "oci:$2:$3")
        bh "$1" tag "$id" "$3"
}
bh_reset() { # bh_reset STORAGE-DIR: remove it, mounts and all
        if [ -d "$1/root" ]; then bh "$1" rm -a >/dev/null 2>&1 || true; fi
        umount_under "$1"
        rm -rf "$1"
}

mkbase "$WORK/busybox"
KSTORE_T="$WORK/kiln-template" # the base only
KSTORE_W="$WORK/kiln-warm"     # the base, its root filesystem unpacked
"$KILN" import --root "$KSTORE_T" -t bench/busybox:1 "$WORK/busybox" >/dev/null
cp -a "$KSTORE_T" "$KSTORE_W"
printf 'FROM bench/busybox:1\nRUN true\n' >"$WORK/warm.Dockerfile"
mkdir -p "$WORK/empty"
"$KILN" build --root "$KSTORE_W" --progress quiet -t bench/warm:1 -f "$WORK/warm.Dockerfile" "$WORK/empty" >/dev/null 2>&1
# keep only the base (and its unpacked root filesystem)
"$KILN" rmi --root "$KSTORE_W" bench/warm:1 >/dev/null
"$KILN" prune --root "$KSTORE_W" >/dev/null
[ -n "$(find "$KSTORE_W/.kiln/rootfs" -mindepth 1 -maxdepth 1)" ] || { echo "build-bench: the warm store has no unpacked root filesystem" >&2; exit 1; }

# Both builders must start from the same base: compare diff_ids.
bh_base "$WORK/bh-check" "$KSTORE_T" bench/busybox:1 >/dev/null
kdiff=$(python3 - "$KSTORE_T" <<'EOF'
import json, sys
s = sys.argv[1] + '/blobs/sha256/'
idx = json.load(open(sys.argv[1] + '/index.json'))
m = json.load(open(s + idx['manifests'][0]['digest'][7:]))
print(' '.join(json.load(open(s + m['config']['digest'][7:]))['rootfs']['diff_ids']))
EOF
)
bdiff=$(bh "$WORK/bh-check" inspect --type image --format '{{range .OCIv1.RootFS.DiffIDs}}{{.}} {{end}}' bench/busybox:1)
bh_reset "$WORK/bh-check"
if [ "$kdiff" != "${bdiff% }" ]; then
        echo "build-bench: the bases differ: kiln $kdiff, buildah $bdiff" >&2
        exit 1
fi
echo "kiln: $KILN; buildah $(buildah --version | awk '{print $3}'), $(runc --version | head -1); $(nproc) CPUs"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine makes the times noisy)"
echo "base: busybox $(/bin/busybox | head -1 | awk '{print $2}'), diff_id ${kdiff:7:12}, identical for kiln and buildah"

# ---- contexts ----

CASES="copy run multistage"
mkdir -p "$WORK/ctx/copy" "$WORK/ctx/run" "$WORK/ctx/multistage"
# (a) COPY-heavy: 2,000 small text files in 20 directories and 4 MiB of random data.
python3 - "$WORK/ctx/copy" <<'EOF'
import os, random, sys
root = sys.argv[1]
random.seed(1)
for i in range(2000):
    d = os.path.join(root, 'src', 'pkg%02d' % (i // 100))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, 'file%04d.txt' % i), 'w') as f:
        f.write(''.join(random.choice('abcdefghij klmnop\n') for _ in range(random.randint(200, 2000))))
os.makedirs(os.path.join(root, 'assets'))
for i in range(4):
    with open(os.path.join(root, 'assets', 'blob%d.bin' % i), 'wb') as f:
        f.write(os.urandom(1 << 20))
EOF
cat >"$WORK/ctx/copy/Dockerfile" <<'EOF'
FROM bench/busybox:1
COPY src /app/src
COPY assets /app/assets
COPY . /ctx/
EOF
# (b) RUN-heavy: many files, a 20 MB file, deletions.
cat >"$WORK/ctx/run/Dockerfile" <<'EOF'
FROM bench/busybox:1
RUN mkdir -p /data/many && cd /data/many && i=0 && while [ $i -lt 5000 ]; do echo "file $i" > f$i; i=$((i+1)); done
RUN dd if=/dev/urandom of=/data/big bs=1M count=20 2>/dev/null
RUN rm -f /data/many/f1* /data/many/f2* && rm -rf /etc/group && ls /data/many | wc -l
RUN mkdir /out && cp -r /data/many /out/copy && echo done > /out/done
EOF
# (c) multi-stage: two independent stages, then COPY --from both.
cat >"$WORK/ctx/multistage/Dockerfile" <<'EOF'
FROM bench/busybox:1 AS a
RUN mkdir /out && for i in $(seq 1 2000); do echo "a $i" > /out/a$i; done
RUN dd if=/dev/urandom of=/out/a.bin bs=1M count=8 2>/dev/null

FROM bench/busybox:1 AS b
RUN mkdir /out && for i in $(seq 1 2000); do echo "b $i" > /out/b$i; done
RUN dd if=/dev/urandom of=/out/b.bin bs=1M count=8 2>/dev/null

FROM bench/busybox:1
COPY --from=a /out /a
COPY --from=b /out /b
RUN ls /a /b | wc -l
EOF

# ---- measuring ----

# timed BUILDER CASE RUN LOG COMMAND...: one timed run, wall time (ns clock) and peak RSS (GNU
# time's maximum resident set size: the largest process of the tree, its waited-for children
# included), appended to $RESULTS. The command's output goes to LOG.
timed() {
        local builder=$1 kase=$2 run=$3 log=$4 t0 t1 rss
        shift 4
        sync
        if [ "${BENCH_DROP_CACHES:-0}" = 1 ]; then echo 3 >/proc/sys/vm/drop_caches; fi
        t0=$(date +%s%N)
        if ! /usr/bin/time -f '%M' -o "$WORK/rss" "$@" >"$log" 2>&1; then
                echo "build-bench: FAILED ($builder, $kase): $*" >&2
                tail -20 "$log" >&2
                return 1
        fi
        t1=$(date +%s%N)
        rss=$(tail -1 "$WORK/rss")
        printf '%s\t%s\t%s\t%s\n' "$builder" "$kase" "$(awk "BEGIN{print ($t1 - $t0) / 1e9}")" "$rss" >>"$RESULTS"
        printf '  %-26s %-15s run %d: %6.2f s %7.1f MiB\n' "$builder" "$kase" "$run" \
                "$(awk "BEGIN{print ($t1 - $t0) / 1e9}")" "$(awk "BEGIN{print $rss / 1024}")"
}

KS="$WORK/kiln-store"
BS="$WORK/bh"
DOCKER=0
if command -v docker >/dev/null && docker info >/dev/null 2>&1; then DOCKER=1; fi

echo
echo "part 1: cold builds, $RUNS runs each (buildah isolation $ISOLATION)"
for kase in $CASES; do
        ctx="$WORK/ctx/$kase"
        for ((r = 1; r <= RUNS; r++)); do
                # kiln, fresh store: only the base image, not unpacked
                rm -rf "$KS" && cp -a "$KSTORE_T" "$KS"
                timed "kiln (fresh)" "$kase" "$r" "$LOGS/kiln-fresh-$kase-$r.log" \
                        "$KILN" build --root "$KS" --progress plain -t bench/out:1 "$ctx"
                # kiln, the base's root filesystem already unpacked
                rm -rf "$KS" && cp -a "$KSTORE_W" "$KS"
                timed "kiln (unpacked)" "$kase" "$r" "$LOGS/kiln-unpacked-$kase-$r.log" \
                        "$KILN" build --root "$KS" --progress plain -t bench/out:1 "$ctx"
                # the same, layers not compressed (what buildah and docker store locally)
                rm -rf "$KS" && cp -a "$KSTORE_W" "$KS"
                timed "kiln (unpacked, no gzip)" "$kase" "$r" "$LOGS/kiln-nogzip-$kase-$r.log" \
                        "$KILN" build --root "$KS" --progress plain --compression none -t bench/out:1 "$ctx"
                # buildah bud: fresh storage with the base pulled
                bh_reset "$BS" && bh_base "$BS" "$KSTORE_T" bench/busybox:1 >/dev/null
                timed "buildah bud" "$kase" "$r" "$LOGS/buildah-$kase-$r.log" \
                        buildah --root "$BS/root" --runroot "$BS/run" --storage-driver overlay \
                        bud --isolation "$ISOLATION" --network host -t bench/out:1 "$ctx"
                if [ "${BENCH_BUILDAH_LAYERS:-1}" = 1 ]; then
                        bh_reset "$BS" && bh_base "$BS" "$KSTORE_T" bench/busybox:1 >/dev/null
                        timed "buildah bud --layers" "$kase" "$r" "$LOGS/buildah-layers-$kase-$r.log" \
                                buildah --root "$BS/root" --runroot "$BS/run" --storage-driver overlay \
                                bud --layers --isolation "$ISOLATION" --network host -t bench/out:1 "$ctx"
                fi
                if [ "$DOCKER" = 1 ]; then
                        docker rmi -f bench/out:1 >/dev/null 2>&1 || true
                        docker builder prune -af >/dev/null 2>&1 || true
                        if ! docker image inspect bench/busybox:1 >/dev/null 2>&1; then
                                tar -C "$WORK/busybox" -c . | docker import - bench/busybox:1 >/dev/null
                        fi
                        timed "docker build" "$kase" "$r" "$LOGS/docker-$kase-$r.log" \
                                docker build --no-cache --network host -t bench/out:1 "$ctx"
                fi
        done
done
bh_reset "$BS"
rm -rf "$KS"
[ "$DOCKER" = 1 ] || echo "docker: no engine, skipped"

# ---- part 2: one changed file over a small and a big base ----

echo
echo "part 2: RUN echo x > /one over a base of $SMALL files and one of $BIG files (base unpacked)"
K2="$WORK/kiln-store2"
B2="$WORK/bh2"
for n in $SMALL $BIG; do
        mkbase "$WORK/base$n" "$n"
        t0=$(date +%s%N)
        "$KILN" import --root "$K2" -t "bench/base$n:1" "$WORK/base$n" >/dev/null
        t1=$(date +%s%N)
        bh_base "$B2" "$K2" "bench/base$n:1" >/dev/null
        t2=$(date +%s%N)
        rm -rf "$WORK/base$n"
        mkdir -p "$WORK/p2-$n/warm" "$WORK/p2-$n/one"
        printf 'FROM bench/base%s:1\nRUN true\n' "$n" >"$WORK/p2-$n/warm/Dockerfile"
        printf 'FROM bench/base%s:1\nRUN echo x > /one\n' "$n" >"$WORK/p2-$n/one/Dockerfile"
        # the warm-ups (timed once, for information: kiln's includes unpacking the base)
        timed "kiln warm-up (unpacks)" "base$n" 1 "$LOGS/kiln-warm-$n.log" \
                "$KILN" build --root "$K2" --progress plain "$WORK/p2-$n/warm"
        timed "buildah warm-up" "base$n" 1 "$LOGS/buildah-warm-$n.log" \
                buildah --root "$B2/root" --runroot "$B2/run" --storage-driver overlay \
                bud --isolation "$ISOLATION" --network host "$WORK/p2-$n/warm"
        echo "  (untimed above: kiln import $(awk "BEGIN{printf \"%.2f\", ($t1 - $t0) / 1e9}") s," \
                "buildah pull from kiln's store $(awk "BEGIN{printf \"%.2f\", ($t2 - $t1) / 1e9}") s)"
done
for n in $SMALL $BIG; do
        for ((r = 1; r <= RUNS; r++)); do
                timed "kiln" "one/base$n" "$r" "$LOGS/kiln-one-$n-$r.log" \
                        "$KILN" build --root "$K2" --progress plain -t "bench/one$n:1" "$WORK/p2-$n/one"
                timed "buildah bud" "one/base$n" "$r" "$LOGS/buildah-one-$n-$r.log" \
                        buildah --root "$B2/root" --runroot "$B2/run" --storage-driver overlay \
                        bud --isolation "$ISOLATION" --network host -t "bench/one$n:1" "$WORK/p2-$n/one"
        done
done
bh_reset "$B2"

# kiln's step times (the `#N DONE` lines) of the last run of each case, to see where the time goes
echo
echo "kiln step times, last run: fresh store, base unpacked"
for kase in $CASES; do
        echo "  $kase:"
        awk 'FNR == 1 { f++ }
             /^#[0-9]+ \[/ && f == 1 { n = $1; sub(/^#[0-9]+ /, ""); name[n] = substr($0, 1, 60); ids[++k] = n }
             /^#[0-9]+ DONE/ { t[f, $1] = $3 }
             END { for (i = 1; i <= k; i++) printf "    %-4s %-60s %7s %7s\n", ids[i], name[ids[i]], t[1, ids[i]], t[2, ids[i]] }' \
                "$LOGS/kiln-fresh-$kase-$RUNS.log" "$LOGS/kiln-unpacked-$kase-$RUNS.log"
done

echo
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$RESULTS" "$SMALL" "$BIG" <<'EOF'
import collections, statistics, sys
path, small, big = sys.argv[1], sys.argv[2], sys.argv[3]
secs, rss = collections.defaultdict(list), collections.defaultdict(list)
order, cases = [], []
for line in open(path):
    b, c, s, m = line.rstrip('\n').split('\t')
    if (b, c) not in secs:
        order.append((b, c))
    if c not in cases:
        cases.append(c)
    secs[b, c].append(float(s))
    rss[b, c].append(int(m) / 1024)
med = lambda b, c: statistics.median(secs[b, c])

print('\n%-15s %-26s %9s %8s %13s %5s' % ('case', 'builder', 'median s', 'best s', 'peak RSS MiB', 'runs'))
for c in cases:
    for b, c2 in order:
        if c2 == c:
            print('%-15s %-26s %9.3f %8.3f %13.1f %5d' % (c, b, med(b, c), min(secs[b, c]), max(rss[b, c]), len(secs[b, c])))

def ratio(a, b, c):
    if (a, c) in secs and (b, c) in secs:
        return '%.2fx' % (med(a, c) / med(b, c))
    return '-'
print('\ntime ratios, medians (kiln / buildah bud; lower is better, target <= 0.70x):')
print('%-11s %14s %16s %26s %24s' % ('case', 'kiln (fresh)', 'kiln (unpacked)', 'kiln (unpacked, no gzip)', 'kiln (fresh) / --layers'))
for c in cases:
    if c.startswith('one/') or c.startswith('base'):
        continue
    print('%-11s %14s %16s %26s %24s' % (c, ratio('kiln (fresh)', 'buildah bud', c), ratio('kiln (unpacked)', 'buildah bud', c),
          ratio('kiln (unpacked, no gzip)', 'buildah bud', c), ratio('kiln (fresh)', 'buildah bud --layers', c)))
peak = max((max(v) for (b, c), v in rss.items() if b.startswith('kiln')), default=0)
print('kiln peak RSS, all builds: %.1f MiB (target < 64 MiB)' % peak)

one_s, one_b = 'one/base' + small, 'one/base' + big
if ('kiln', one_s) in secs and ('kiln', one_b) in secs:
    print('\nRUN echo x > /one, base unpacked, medians: %s files / %s files' % (big, small))
    for b in ('kiln', 'buildah bud'):
        print('  %-12s %7.3f s over %s files, %7.3f s over %s files: %.2fx' %
              (b, med(b, one_s), small, med(b, one_b), big, med(b, one_b) / med(b, one_s)))
    print('  kiln / buildah: %.2fx (%s files), %.2fx (%s files)' %
          (med('kiln', one_s) / med('buildah bud', one_s), small, med('kiln', one_b) / med('buildah bud', one_b), big))
EOF
