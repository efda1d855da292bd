#!/usr/bin/env bash
# Pull and push of a 10-layer image (~500 MB, incompressible) to and from a local registry
# (Debian's docker-registry on loopback), kiln against `skopeo copy` on the same image in the
# same run: times, ratios, kiln's peak RSS, and the time of a second push that finds every blob
# already there. Not a test: it asserts nothing.
#
#   tests/bench/registry-bench.sh [path/to/kiln] [total MB, default 500] [layers, default 10]
#
# Needs docker-registry, skopeo, python3 and GNU time (Debian packages docker-registry, skopeo,
# python3, time). Each push goes to a registry of its own, so no run finds the previous one's
# blobs; each pull goes into an empty store or layout.
set -euo pipefail

KILN=$(realpath "${1:-build/kiln}")
MB=${2:-500}
LAYERS=${3:-10}
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/kiln-bench-XXXXXX")
# shellcheck source=../integration/lib/registry.sh
. "$HERE/../integration/lib/registry.sh"
trap 'registry_cleanup; rm -rf "$WORK"' EXIT
export REGISTRY_AUTH_FILE="$WORK/auth.json" DOCKER_CONFIG="$WORK/docker" XDG_CONFIG_HOME="$WORK/xdg"
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY
sk() { skopeo --insecure-policy "$@"; }

# The image: LAYERS gzip layers of random bytes (gzip -1 of random data stays its size).
python3 - "$WORK/oci" "$MB" "$LAYERS" <<'EOF'
import gzip, hashlib, io, json, os, sys, tarfile
root, mb, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
os.makedirs(os.path.join(root, "blobs", "sha256"))
def put(b):
    h = hashlib.sha256(b).hexdigest()
    open(os.path.join(root, "blobs", "sha256", h), "wb").write(b)
    return "sha256:" + h, len(b)
layers, diff_ids = [], []
for i in range(n):
    data = os.urandom((mb << 20) // n)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as t:
        info = tarfile.TarInfo("data/layer-%02d" % i)
        info.size, info.mtime = len(data), 0
        t.addfile(info, io.BytesIO(data))
    diff_ids.append("sha256:" + hashlib.sha256(raw.getvalue()).hexdigest())
    d, s = put(gzip.compress(raw.getvalue(), compresslevel=1, mtime=0))
    layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": s})
config = {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": diff_ids},
          "config": {}}
cd, cs = put(json.dumps(config).encode())
m = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
     "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
     "layers": layers}
md, ms = put(json.dumps(m).encode())
json.dump({"schemaVersion": 2, "manifests": [{"mediaType": m["mediaType"], "digest": md, "size": ms,
           "annotations": {"org.opencontainers.image.ref.name": "bench"}}]},
          open(os.path.join(root, "index.json"), "w"))
open(os.path.join(root, "oci-layout"), "w").write('{"imageLayoutVersion":"1.0.0"}')
EOF
bytes=$(du -sb "$WORK/oci/blobs" | cut -f1)
echo "image: $LAYERS layers, $((bytes >> 20)) MiB"

registry_start plain src >/dev/null
sk copy --dest-tls-verify=false "oci:$WORK/oci:bench" "docker://$SRC_ADDR/bench:1" >/dev/null

# A fresh registry for each push (deleting a running registry's files is not enough: it caches
# blob descriptors), so every push uploads everything. Sets DEST.
fresh=0
fresh_registry() {
        fresh=$((fresh + 1))
        registry_start plain "dst$fresh" >/dev/null
        DEST=$(eval echo "\$DST${fresh}_ADDR")
        export DEST
}
pull_setup() { rm -rf "$WORK/store" "$WORK/pulled"; }

# measure NAME SETUP COMMAND: SETUP (a function, untimed, in this shell) then COMMAND, 3 times;
# keeps the fastest
declare -A SECS RSS
measure() {
        local name=$1 setup=$2 best=999999 rss=0 t m
        shift 2
        for _ in 1 2 3; do
                $setup
                sync
                /usr/bin/time -f '%e %M' -o "$WORK/time" bash -c "$*" >/dev/null 2>"$WORK/stderr" ||
                        { cat "$WORK/stderr"; return 1; }
                read -r t m <"$WORK/time"
                if awk "BEGIN{exit !($t < $best)}"; then best=$t; rss=$m; fi
        done
        SECS[$name]=$best
        RSS[$name]=$rss
        printf '%-26s %8.2f s %9.1f MB/s %8.1f MiB peak RSS\n' "$name" "$best" \
                "$(awk "BEGIN{print $bytes / 1048576 / $best}")" "$(awk "BEGIN{print $rss / 1024}")"
}

export KILN_ROOT="$WORK/store"
measure "kiln pull" pull_setup "'$KILN' pull -q '$SRC_ADDR/bench:1'"
measure "skopeo copy (pull)" pull_setup \
        "skopeo --insecure-policy copy -q --src-tls-verify=false 'docker://$SRC_ADDR/bench:1' 'oci:$WORK/pulled:bench'"
"$KILN" pull -q "$SRC_ADDR/bench:1" >/dev/null
measure "kiln push" fresh_registry "'$KILN' push -q '$SRC_ADDR/bench:1' \"\$DEST/bench:1\""
measure "skopeo copy (push)" fresh_registry \
        "skopeo --insecure-policy copy -q --dest-tls-verify=false 'oci:$WORK/oci:bench' \"docker://\$DEST/bench:1\""

fresh_registry
"$KILN" push -q "$SRC_ADDR/bench:1" "$DEST/bench:1" >/dev/null
skopeo --insecure-policy copy -q --dest-tls-verify=false "oci:$WORK/oci:bench" "docker://$DEST/bench:2" >/dev/null
best=999999
sbest=999999
for _ in 1 2 3 4 5; do
        t0=$(date +%s%N)
        "$KILN" push -q "$SRC_ADDR/bench:1" "$DEST/bench:1" >/dev/null
        t1=$(date +%s%N)
        skopeo --insecure-policy copy -q --dest-tls-verify=false "oci:$WORK/oci:bench" "docker://$DEST/bench:2" >/dev/null
        t2=$(date +%s%N)
        ms=$(((t1 - t0) / 1000000))
        sms=$(((t2 - t1) / 1000000))
        ((ms < best)) && best=$ms
        ((sms < sbest)) && sbest=$sms
done

ratio() { awk "BEGIN{printf \"%.2fx\", ${SECS[$1]} / ${SECS[$2]}}"; }
echo
echo "second push, every blob already there (best of 5): kiln $best ms, skopeo $sbest ms"
echo "time ratios (kiln / skopeo; lower is better, target <= 0.80x):"
echo "  pull: $(ratio 'kiln pull' 'skopeo copy (pull)')   push: $(ratio 'kiln push' 'skopeo copy (push)')"
echo "kiln peak RSS: pull $((RSS['kiln pull'] / 1024)) MiB, push $((RSS['kiln push'] / 1024)) MiB (target < 64 MiB)"
