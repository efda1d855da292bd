#!/usr/bin/env bash
# kiln build where overlay cannot be mounted: the store and TMPDIR on an overlayfs (as in a
# Docker or Kubernetes container, whose root is one; an overlay upper directory on overlayfs is
# refused). Each stage then works in a tree of its own, diffed after each step. The same
# Dockerfile is built on a plain filesystem with overlay: the images must be identical (same
# manifest digest with --source-date-epoch 0), as root, as nobody (a single id in RUN) and as
# daemon with a /etc/subuid range added for the run.
set -u

KILN=${KILN:?KILN must point at the kiln binary}
KILN=$(cd "$(dirname "$KILN")" && pwd)/$(basename "$KILN")
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d)
chmod 755 "$WORK"
# shellcheck source=lib/tap.sh
. "$HERE/lib/tap.sh"
# shellcheck source=lib/registry.sh
. "$HERE/lib/registry.sh"
unset SOURCE_DATE_EPOCH KILN_ROOT

skip() {
        if [ "${KILN_MUST_WORK:-}" = 1 ]; then
                echo "not ok 1 - $1 (KILN_MUST_WORK=1)"
                echo "1..1"
                exit 1
        fi
        echo "1..0 # SKIP $1"
        exit 0
}

# shellcheck source=lib/subid.sh
. "$HERE/lib/subid.sh"
cleanup() {
        subid_remove
        # the sandbox's mounts live in namespaces of their own: only this one is ours
        mountpoint -q "$WORK/ovl" && umount "$WORK/ovl"
        rm -rf "$WORK"
}
trap cleanup EXIT

[ "$(id -u)" = 0 ] || skip "run as root (it mounts an overlayfs)"
command -v umoci >/dev/null || skip "umoci is missing"
_registry_is_static /bin/busybox || skip "busybox-static is missing"
PY=$(_registry_python 2>/dev/null || echo python3)

mkdir -p "$WORK/lower" "$WORK/upper" "$WORK/work" "$WORK/ovl"
mount -t overlay overlay -o "lowerdir=$WORK/lower,upperdir=$WORK/upper,workdir=$WORK/work" "$WORK/ovl" 2>"$WORK/mount.err" ||
        skip "an overlayfs cannot be mounted here: $(cat "$WORK/mount.err")"
chmod 755 "$WORK/ovl"
mkdir -p "$WORK/ovl/probe/l" "$WORK/ovl/probe/u" "$WORK/ovl/probe/w" "$WORK/ovl/probe/m"
if mount -t overlay overlay -o "lowerdir=$WORK/ovl/probe/l,upperdir=$WORK/ovl/probe/u,workdir=$WORK/ovl/probe/w" \
        "$WORK/ovl/probe/m" 2>/dev/null; then
        umount "$WORK/ovl/probe/m"
        not_ok "precondition: overlay cannot be mounted inside the overlayfs (this kernel allows it)"
        finish
fi
ok "precondition: overlay cannot be mounted inside the overlayfs"

# --- the base image: busybox, a passwd with root and app (1000), a file to delete ---------------------
B="$WORK/base"
mkdir -p "$B/bin" "$B/etc" "$B/tmp" "$B/root" "$B/home/app" "$B/var/lib/gone"
cp /bin/busybox "$B/bin/busybox"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$B/bin/$a"; done
printf 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n' >"$B/etc/passwd"
printf 'root:x:0:\napp:x:1000:\n' >"$B/etc/group"
echo "from the base" >"$B/etc/motd"
echo "delete me" >"$B/var/lib/gone/file"
chmod 1777 "$B/tmp"
chmod -R a+rX "$B"
mkdir -p "$WORK/ctx/sub"
echo "copied" >"$WORK/ctx/file.txt"
echo "in sub" >"$WORK/ctx/sub/inner"
chmod -R a+rX "$WORK/ctx"

# The Dockerfile; with a single id (nobody) no other id exists in RUN: no chown, no RUN as app.
dockerfile() {
        cat <<'EOF'
FROM kiln-test/busybox:1 AS first
RUN echo first > /first.txt && mkdir -p /out/deep && echo deep > /out/deep/f
FROM kiln-test/busybox:1
RUN echo hi > /etc/new && echo mod >> /etc/motd && rm /var/lib/gone/file && chmod 600 /etc/new \
    && ln /etc/new /etc/hl && ln -s /etc/motd /sl && mkdir -p /a/b/c && mkdir /nd && echo x > /nd/f
COPY file.txt /app/
COPY sub /app/sub/
WORKDIR /w/x
COPY --from=first /first.txt /from-first
COPY --from=first /out /out
EOF
        if [ "$1" != single ]; then
                cat <<'EOF'
RUN chown 1000:1000 /nd/f && chown -R 1000:1000 /home/app
USER app
RUN id -u > /home/app/id && touch /home/app/made
EOF
        else
                echo "USER app"
        fi
}

# as MODE DIR CMD...: CMD as the mode's user with HOME, TMPDIR and KILN_ROOT in DIR
as() {
        local mode=$1 dir=$2
        shift 2
        case $mode in
        root) env HOME="$dir" TMPDIR="$dir/tmp" KILN_ROOT="$dir/store" "$@" ;;
        single | ranges)
                setpriv --reuid "$USER_UID" --regid "$USER_GID" --clear-groups \
                        env HOME="$dir" TMPDIR="$dir/tmp" KILN_ROOT="$dir/store" XDG_RUNTIME_DIR= "$@"
                ;;
        esac
}

# layers DIR REF: each layer of the image as "index path" lines (tar member names)
layers() {
        "$PY" - "$1/store" "$2" <<'EOF'
import json, sys, tarfile
root, ref = sys.argv[1], sys.argv[2]
def blob(d): return root + "/blobs/sha256/" + d.split(":")[1]
for m in json.load(open(root + "/index.json"))["manifests"]:
    if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == ref:
        for i, l in enumerate(json.load(open(blob(m["digest"])))["layers"]):
            with tarfile.open(blob(l["digest"])) as t:
                for e in t.getmembers():
                    print(i, e.name)
EOF
}

suite() {
        local mode=$1 plain="$WORK/$1-plain" ovl="$WORK/ovl/$1" u d_plain d_ovl
        mkdir -p "$plain/tmp" "$ovl/tmp"
        if [ "$mode" != root ]; then
                chown -R "$USER_UID:$USER_GID" "$plain" "$ovl"
        fi
        dockerfile "$mode" >"$WORK/ctx/Dockerfile"
        check "$mode: the base is imported" run 0 as "$mode" "$plain" "$KILN" import -t kiln-test/busybox:1 "$B"
        # the same base (its history has the time of the import) in the store on the overlayfs
        cp -a "$plain/store" "$ovl/store"
        check "$mode: a build on a plain filesystem uses overlay" \
                run 0 as "$mode" "$plain" "$KILN" build --progress plain --source-date-epoch 0 -t t:1 "$WORK/ctx"
        d_plain=$(cat "$WORK/out")
        check "  (no fallback there)" bash -c '! grep -q "overlay cannot be mounted" "$1"' _ "$WORK/err"
        check "$mode: a build in a store on overlayfs works" \
                run 0 as "$mode" "$ovl" "$KILN" build --progress plain --source-date-epoch 0 -t t:1 "$WORK/ctx"
        d_ovl=$(cat "$WORK/out")
        cp "$WORK/err" "$WORK/$mode.log"
        check "$mode: the same build again in the overlayfs store" \
                run 0 as "$mode" "$ovl" "$KILN" build --progress plain --source-date-epoch 0 -t t:1 "$WORK/ctx"
        check "  the same image, from the cache ($(grep -c '^#[0-9]* CACHED' "$WORK/err") steps CACHED)" \
                [ "$(cat "$WORK/out")" = "$d_ovl" ]
        check "  every step CACHED: no tree was made" bash -c '[ "$(grep -c "^#[0-9]* CACHED" "$1")" = "$2" ]' _ \
                "$WORK/err" "$(dockerfile "$mode" | grep -cE "^(RUN|COPY|WORKDIR)")"
        check "  the isolation message names the fallback" \
                grep -q "^# isolation: .*overlay cannot be mounted on '$ovl/store/.kiln/tmp/[^']*' (.*): each stage works in a copy of its root filesystem, diffed after each step$" "$WORK/$mode.log"
        check "  the same image as with overlay ($d_ovl)" [ -n "$d_ovl" -a "$d_ovl" = "$d_plain" ]

        u="$WORK/u-$mode"
        check "  umoci unpacks it" umoci unpack --image "$ovl/store:t:1" "$u"
        u="$u/rootfs"
        check "  RUN: a new file, chmod 600" bash -c '[ "$(cat "$1/etc/new")" = hi ] && [ "$(stat -c %a "$1/etc/new")" = 600 ]' _ "$u"
        check "  RUN: a base file modified" bash -c '[ "$(cat "$1/etc/motd")" = "$(printf "from the base\nmod")" ]' _ "$u"
        check "  RUN: a base file deleted" [ ! -e "$u/var/lib/gone/file" -a -d "$u/var/lib/gone" ]
        check "  RUN: a hardlink" [ "$u/etc/hl" -ef "$u/etc/new" ]
        check "  RUN: a symlink" [ "$(readlink "$u/sl")" = /etc/motd ]
        check "  RUN: mkdir -p, a file in a new directory" [ -d "$u/a/b/c" -a "$(cat "$u/nd/f")" = x ]
        check "  COPY: files and a directory" [ "$(cat "$u/app/file.txt")" = copied -a "$(cat "$u/app/sub/inner")" = "in sub" ]
        check "  WORKDIR: made" [ -d "$u/w/x" ]
        check "  COPY --from an earlier stage (a file, a tree)" \
                [ "$(cat "$u/from-first")" = first -a "$(cat "$u/out/deep/f")" = deep ]
        check "  owners: the base's and COPY's are root's" \
                [ "$(stat -c %u:%g "$u/etc/motd" "$u/app/file.txt" "$u/etc/new" | sort -u)" = 0:0 ]
        if [ "$mode" != single ]; then
                check "  USER: RUN as app (1000)" [ "$(cat "$u/home/app/id")" = 1000 ]
                check "  owners: chown in RUN, files made by USER app" \
                        [ "$(stat -c %u:%g "$u/nd/f" "$u/home/app/made" | sort -u)" = 1000:1000 ]
        fi
        layers "$ovl" t:1 >"$WORK/layers-$mode"
        check "  the deletion is a whiteout" grep -qx "[1-9][0-9]* var/lib/gone/.wh.file" "$WORK/layers-$mode"
        check "  no mount stub in any layer (proc, dev, sys, etc/hosts, etc/resolv.conf)" \
                bash -c '! grep -E "^[0-9]+ (proc|dev|sys|etc/hosts|etc/resolv.conf)(/|$)" "$1"' _ "$WORK/layers-$mode"
        check "  the RUN layer holds its changes and their directories, nothing else" \
                bash -c '[ "$(sed -n "s/^1 //p" "$1" | tr "\n" " ")" = "a a/b a/b/c etc etc/hl etc/motd etc/new nd nd/f sl var var/lib var/lib/gone var/lib/gone/.wh.file " ]' _ "$WORK/layers-$mode"
        check "  the stage's tree is gone with the build" bash -c '[ -z "$(ls -A "$1/store/.kiln/tmp" 2>/dev/null)" ]' _ "$ovl"

        # A failing RUN leaves nothing named
        printf 'FROM kiln-test/busybox:1\nRUN echo partial > /p && exit 3\n' >"$WORK/ctx/Dockerfile"
        check "$mode: a failing RUN fails the build" fails as "$mode" "$ovl" "$KILN" build --progress plain -t t:fail "$WORK/ctx"
        check "  and says why (exit code: 3)" grep -q "exit code: 3" "$WORK/err"
}

USER_UID=0 USER_GID=0 suite root

USER_UID=$(id -u nobody) && USER_GID=$(id -g nobody) && export USER_UID USER_GID || skip "no user nobody"
if grep -q -e "^nobody:" -e "^$USER_UID:" /etc/subuid 2>/dev/null; then
        echo "ok $((n += 1)) # SKIP nobody has a /etc/subuid range here"
else
        suite single
fi

if ! command -v newuidmap >/dev/null || ! id daemon >/dev/null 2>&1; then
        need "newuidmap (package uidmap) and the user daemon" false
else
        USER_UID=$(id -u daemon) USER_GID=$(id -g daemon)
        export USER_UID USER_GID
        subid_add daemon
        suite ranges
fi
finish
