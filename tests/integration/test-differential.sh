#!/usr/bin/env bash
# Differential tests against buildah: every case of tests/differential/ is built by kiln and by
# `buildah bud`, and tests/differential/compare.py compares the two images' final file trees and
# config fields. One TAP line per case; the differences as # comments on failure.
#
# A case is a directory tests/differential/NN-name/ with
#   Dockerfile          built by both
#   context/            the build context (optional: an empty one); copied to a scratch
#                       directory first
#   prepare             optional bash script run in that copy (hardlinks, modes, archives,
#                       empty directories: what git does not keep)
#   parent.Dockerfile   optional: a parent image (ONBUILD triggers), built first by each builder
#                       into its own storage as diff/NN-name-parent:1, then the Dockerfile
#   buildah.Dockerfile  optional: what buildah builds instead, where buildah 1.28 cannot build a
#                       construct BuildKit takes (heredocs, symbolic --chmod): the same
#                       instructions in the form it knows; a "# buildah: REASON" line says why
#   build-args          optional: K=V lines, given to both as --build-arg
#   expect-diff         optional: the known, intended differences (see compare.py), each with
#                       its reason; "kiln-bug:" marks a known kiln bug
# expect-diff.common lists buildah's artefacts of RUN that any case may show.
#
# Both builders start from the same base: Debian's static busybox with its applet links and an
# /etc/passwd and /etc/group with a few users, imported with `kiln import` and pulled by buildah
# out of kiln's store (an OCI layout), so the diff_ids are equal (checked). buildah runs as root
# with a private --root/--runroot (overlay), --isolation chroot, --layers=false and
# --format docker (the OCI format would drop HEALTHCHECK, SHELL and ONBUILD); its image is
# exported with `buildah push IMG dir:DIR`, which keeps the config as it is. Cases run two at a
# time (DIFF_JOBS). DIFF_CASES="01-run 05-users" runs only those; DIFF_KEEP=1 keeps the scratch
# directory (contexts, logs, buildah's images; its storage is then left mounted).
set -u

KILN=${KILN:?KILN must point at the kiln binary}
HERE=$(cd "$(dirname "$0")" && pwd)
CASES_DIR=$(cd "$HERE/../differential" && pwd)
# lower case: buildah names an image pulled from an oci: layout after the layout's path
WORK=/tmp/kiln-differential-$$-$(od -An -N4 -tx4 /dev/urandom | tr -d ' ')
mkdir -m 700 "$WORK" || exit 1
# shellcheck source=lib/tap.sh
. "$HERE/lib/tap.sh"
umount_under() { # containers/storage may leave its overlay home and layer mounts
        local m
        awk -v d="$1" 'index($2, d) == 1 { print $2 }' /proc/self/mounts | sort -r |
                while read -r m; do umount -l "$m" 2>/dev/null || true; done
}
cleanup() {
        if [ -n "${DIFF_KEEP:-}" ]; then echo "# kept $WORK"; return; fi
        if [ -d "$WORK/bh/root" ]; then bh rm -a >/dev/null 2>&1 || true; fi
        umount_under "$WORK"
        rm -rf "$WORK"
}
trap cleanup EXIT
export KILN_ROOT="$WORK/store"
unset SOURCE_DATE_EPOCH http_proxy https_proxy HTTP_PROXY HTTPS_PROXY BUILDAH_FORMAT
export BUILDAH_ISOLATION=chroot
JOBS=${DIFF_JOBS:-2}

bh() { buildah --root "$WORK/bh/root" --runroot "$WORK/bh/run" --storage-driver overlay "$@"; }
is_static() { file -L "$1" 2>/dev/null | grep -q 'statically linked' || ! ldd "$1" >/dev/null 2>&1; }

have=1
need buildah command -v buildah || have=0
need python3 command -v python3 || have=0
need busybox-static is_static /bin/busybox || have=0
if [ "$have" = 1 ] && [ "$(id -u)" != 0 ]; then
        # buildah's overlay storage and chroot isolation as set up here want root
        echo "ok $((n += 1)) # SKIP the differential tests run as root"
        have=0
fi
[ "$have" = 1 ] || finish

# --- the base: busybox, its applets, a few users ------------------------------------------------
B="$WORK/base"
mkdir -p "$B/bin" "$B/etc" "$B/tmp" "$B/root" "$B/home/app" "$B/home/web" "$B/var/lib/gone" "$B/srv"
cp /bin/busybox "$B/bin/busybox"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -s busybox "$B/bin/$a"; done
cat >"$B/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
app:x:1000:1000:app:/home/app:/bin/sh
web:x:1001:1002:web:/home/web:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat >"$B/etc/group" <<'EOF'
root:x:0:
daemon:x:1:
staff:x:50:app,web
app:x:1000:
devs:x:1001:app
web:x:1002:
nogroup:x:65534:
EOF
echo "from the base" >"$B/etc/motd"
echo "delete me" >"$B/var/lib/gone/file"
mkdir -p "$B/var/lib/gone/sub" && echo deep >"$B/var/lib/gone/sub/deep"
echo "base config" >"$B/srv/config"
chmod 1777 "$B/tmp"
chmod 700 "$B/root"
chown -R 1000:1000 "$B/home/app"
chown -R 1001:1002 "$B/home/web"
check "the base is imported into kiln's store" run 0 "$KILN" import -t diff/busybox:1 "$B"
pull_base() {
        local id
        id=$(bh pull -q "oci:$KILN_ROOT:diff/busybox:1") && bh tag "$id" diff/busybox:1
}
check "  and pulled from it by buildah" run 0 pull_base
kdiff=$(python3 -c 'import json,sys
s=sys.argv[1]+"/blobs/sha256/"
idx=json.load(open(sys.argv[1]+"/index.json"))
m=[m for m in idx["manifests"] if m.get("annotations",{}).get("org.opencontainers.image.ref.name")=="diff/busybox:1"][0]
c=json.load(open(s+json.load(open(s+m["digest"][7:]))["config"]["digest"][7:]))
print(" ".join(c["rootfs"]["diff_ids"]))' "$KILN_ROOT")
bdiff=$(bh inspect --type image --format '{{range .OCIv1.RootFS.DiffIDs}}{{.}} {{end}}' diff/busybox:1 2>/dev/null)
same_base() { [ -n "$kdiff" ] && [ "$kdiff" = "${bdiff% }" ]; }
check "  both from the same diff_id" same_base

# --- the cases ------------------------------------------------------------------------------------
# run_case NAME: builds and compares; the output to $WORK/res/NAME.log, the verdict to NAME.rc
run_case() {
        local name=$1 c="$CASES_DIR/$1" ctx="$WORK/ctx/$1" log="$WORK/res/$1.log" args=() kv
        local t0=$SECONDS
        {
                mkdir -p "$ctx"
                if [ -d "$c/context" ]; then cp -a "$c/context/." "$ctx/"; fi
                if [ -f "$c/prepare" ]; then
                        (cd "$ctx" && bash "$c/prepare") || { echo "prepare failed"; return 1; }
                fi
                if [ -f "$c/build-args" ]; then
                        while IFS= read -r kv; do [ -n "$kv" ] && args+=(--build-arg "$kv"); done <"$c/build-args"
                fi
                if [ -f "$c/parent.Dockerfile" ]; then
                        "$KILN" build --progress plain "${args[@]}" -t "diff/$name-parent:1" -f "$c/parent.Dockerfile" "$ctx" >"$WORK/res/$name.kiln-parent" 2>&1 ||
                                { echo "kiln build of parent.Dockerfile failed:"; tail -n 20 "$WORK/res/$name.kiln-parent"; return 1; }
                        bh bud --pull=never --isolation chroot --layers=false --format docker "${args[@]}" -t "diff/$name-parent:1" -f "$c/parent.Dockerfile" "$ctx" >"$WORK/res/$name.bh-parent" 2>&1 ||
                                { echo "buildah bud of parent.Dockerfile failed:"; tail -n 20 "$WORK/res/$name.bh-parent"; return 1; }
                fi
                "$KILN" build --progress plain "${args[@]}" -t "diff/$name:1" -f "$c/Dockerfile" "$ctx" >"$WORK/res/$name.kiln" 2>&1 ||
                        { echo "kiln build failed:"; tail -n 20 "$WORK/res/$name.kiln"; return 1; }
                local bdf="$c/Dockerfile"
                if [ -f "$c/buildah.Dockerfile" ]; then
                        bdf="$c/buildah.Dockerfile"
                        sed -n 's/^# buildah: /note: buildah builds buildah.Dockerfile: /p' "$bdf"
                fi
                bh bud --pull=never --isolation chroot --layers=false --format docker "${args[@]}" -t "diff/$name:1" -f "$bdf" "$ctx" >"$WORK/res/$name.bh" 2>&1 ||
                        { echo "buildah bud failed:"; tail -n 20 "$WORK/res/$name.bh"; return 1; }
                bh push "diff/$name:1" "dir:$WORK/images/$name" >"$WORK/res/$name.push" 2>&1 ||
                        { echo "buildah push failed:"; tail -n 20 "$WORK/res/$name.push"; return 1; }
                python3 "$CASES_DIR/compare.py" --expect "$c/expect-diff" --common "$CASES_DIR/expect-diff.common" \
                        "oci:$KILN_ROOT:diff/$name:1" "dir:$WORK/images/$name"
                local rc=$?
                echo "($((SECONDS - t0)) s)"
                return $rc
        } >"$log" 2>&1
}

mkdir -p "$WORK/res" "$WORK/images" "$WORK/ctx"
cases=()
for d in "$CASES_DIR"/*/; do
        d=$(basename "$d")
        [ -f "$CASES_DIR/$d/Dockerfile" ] || continue
        if [ -n "${DIFF_CASES:-}" ] && ! [[ " $DIFF_CASES " == *" $d "* ]]; then continue; fi
        cases+=("$d")
done
running=0
for d in "${cases[@]}"; do
        if [ "$running" -ge "$JOBS" ]; then
                wait -n
                running=$((running - 1))
        fi
        (run_case "$d"; echo $? >"$WORK/res/$d.rc") &
        running=$((running + 1))
done
wait

bugs=0
for d in "${cases[@]}"; do
        rc=$(cat "$WORK/res/$d.rc" 2>/dev/null || echo 1)
        if [ "$rc" = 0 ]; then
                ok "$d: kiln and buildah agree$(grep -q '^expected [/c]' "$WORK/res/$d.log" && echo ', but for the expected differences')"
        else
                not_ok "$d: kiln and buildah differ"
        fi
        # the differences, expected or not, as comments
        grep -v '^(' "$WORK/res/$d.log" | sed 's/^/#   /'
        grep -q '^KILN-BUG ' "$WORK/res/$d.log" && bugs=$((bugs + 1))
done
[ "$bugs" = 0 ] || echo "# $bugs case(s) show known kiln bugs (KILN-BUG lines above)"
finish
