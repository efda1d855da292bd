#!/usr/bin/env bash
# kiln build --isolation none, kaniko-style, where it is meant to run: inside a throwaway
# container that forbids namespaces and mounts. Each case is an OCI bundle run with runc (no
# CAP_SYS_ADMIN, and a seccomp filter refusing unshare, setns, mount, the new mount API,
# pivot_root and clone with CLONE_NEWUSER), its rootfs holding kiln and its libraries under
# /kiln, a store at /kiln/store with a busybox base image, and a context at /ctx. The store is
# read afterwards from the host with umoci, skopeo and tar.
#
# kiln build --isolation none is NEVER run on the machine running this test: it would empty its
# /. The "not a container" case runs in a bundle that shows none of a container's signs instead.
set -u

KILN=${KILN:?KILN must point at the kiln binary}
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d)
# shellcheck source=lib/tap.sh
. "$HERE/lib/tap.sh"
IDS=()
cleanup() {
        local id
        for id in "${IDS[@]}"; do runc delete -f "$id" >/dev/null 2>&1; done
        rm -rf "$WORK"
}
trap cleanup EXIT
unset SOURCE_DATE_EPOCH KILN_ISOLATION_NONE_FORCE KILN_NONE_KEEP

have=1
need "root (runc bundles)" test "$(id -u)" = 0 || have=0
[ "$have" = 1 ] || finish
need runc command -v runc || have=0
need umoci command -v umoci || have=0
need skopeo command -v skopeo || have=0
need jq command -v jq || have=0
need busybox-static sh -c '! ldd /bin/busybox' || have=0
[ "$have" = 1 ] || finish

has() { grep -q -- "$1" "$2"; }

# --- a bundle: kiln and its libraries under /kiln, busybox, a store with the base image --------
# make_bundle DIR CONTAINER(yes|no)
make_bundle() {
        local b=$1 container=$2 r=$1/rootfs lib interp a
        mkdir -p "$r/kiln/bin" "$r/kiln/lib" "$r/bin" "$r/etc" "$r/ctx" "$r/tmp"
        cp "$KILN" "$r/kiln/bin/kiln"
        for lib in $(ldd "$KILN" | awk '/=> \//{print $3}'); do cp -L "$lib" "$r/kiln/lib/"; done
        # the interpreter at the path the executable names (it is mapped before kiln starts)
        interp=$(ldd "$KILN" | awk '$1 ~ /^\// {print $1}' | head -n1)
        if [ -n "$interp" ]; then
                mkdir -p "$r$(dirname "$interp")"
                cp -L "$interp" "$r$interp"
        fi
        cp /bin/busybox "$r/bin/busybox"
        for a in sh ls cat id touch echo; do ln -sf busybox "$r/bin/$a"; done
        echo "nameserver 192.0.2.53" >"$r/etc/resolv.conf"
        printf '127.0.0.1 localhost kiln-none-test\n' >"$r/etc/hosts"
        echo "the container's own" >"$r/container-file"
        [ "$container" = yes ] && : >"$r/.dockerenv"
        "$KILN" import --root "$r/kiln/store" -t kiln-test/busybox:1 "$WORK/base" >/dev/null 2>"$WORK/err" ||
                { sed 's/^/# /' "$WORK/err"; return 1; }
        (cd "$b" && runc spec) || return 1
        # Docker's default capabilities without CAP_SYS_ADMIN; seccomp refuses every way to a
        # namespace or a mount, so the build can only work without them.
        jq --argjson caps '["CAP_CHOWN","CAP_DAC_OVERRIDE","CAP_FSETID","CAP_FOWNER","CAP_MKNOD",
                "CAP_NET_RAW","CAP_SETGID","CAP_SETUID","CAP_SETFCAP","CAP_SETPCAP",
                "CAP_NET_BIND_SERVICE","CAP_SYS_CHROOT","CAP_KILL","CAP_AUDIT_WRITE"]' '
                .process.terminal = false
                | .root.readonly = false
                | .process.args = ["/kiln/bin/kiln", "build", "--isolation", "none", "--progress", "plain",
                                   "--root", "/kiln/store", "-t", "out", "/ctx"]
                | .process.env = ["PATH=/kiln/bin:/bin", "LD_LIBRARY_PATH=/kiln/lib", "HOME=/root"]
                | .process.capabilities = {bounding: $caps, effective: $caps, permitted: $caps}
                | .linux.seccomp = {defaultAction: "SCMP_ACT_ALLOW", syscalls: [
                        {names: ["unshare", "setns", "mount", "umount2", "pivot_root", "fsopen", "fsmount",
                                 "fsconfig", "move_mount", "open_tree", "mount_setattr"],
                         action: "SCMP_ACT_ERRNO", errnoRet: 1},
                        {names: ["clone3"], action: "SCMP_ACT_ERRNO", errnoRet: 38},
                        {names: ["clone"], action: "SCMP_ACT_ERRNO", errnoRet: 1,
                         args: [{index: 0, value: 268435456, valueTwo: 268435456, op: "SCMP_CMP_MASKED_EQ"}]}]}
        ' "$b/config.json" >"$b/config.new" && mv "$b/config.new" "$b/config.json"
}

# run_bundle DIR: runs it; its output in $WORK/out and $WORK/err, its exit code in $rc
run_bundle() {
        local id
        id=kiln-none-$$-$RANDOM
        IDS+=("$id")
        timeout 300 runc run -b "$1" "$id" </dev/null >"$WORK/out" 2>"$WORK/err"
        rc=$?
        runc delete -f "$id" >/dev/null 2>&1
        return 0
}

# --- the base image: busybox, a passwd with root and app, a file to delete ----------------------
B="$WORK/base"
mkdir -p "$B/bin" "$B/etc" "$B/tmp" "$B/root" "$B/home/app"
cp /bin/busybox "$B/bin/busybox"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$B/bin/$a"; done
printf 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n' >"$B/etc/passwd"
printf 'root:x:0:\napp:x:1000:\n' >"$B/etc/group"
echo "from the base" >"$B/etc/motd"
echo "nameserver 198.51.100.1" >"$B/etc/resolv.conf"
chmod 1777 "$B/tmp"
chown -R 1000:1000 "$B/home/app"

# --- a container that forbids namespaces: the build works ----------------------------------------
C="$WORK/c"
check "a bundle is made (kiln, its libraries, a store with the base image)" make_bundle "$C" yes
R="$C/rootfs"
cat >"$R/ctx/Dockerfile" <<'EOF'
FROM kiln-test/busybox:1 AS build
RUN echo built >/artifact
FROM kiln-test/busybox:1
COPY hello.txt /opt/hello.txt
WORKDIR /work
RUN echo hello >out.txt && rm /etc/motd && cat /etc/resolv.conf /etc/hosts >/seen && \
    echo tampered >>/etc/resolv.conf && ls / >/root-listing
COPY --from=build /artifact /artifact
USER app
RUN id -u >/tmp/uid && touch /home/app/mine
EOF
echo "from the context" >"$R/ctx/hello.txt"
run_bundle "$C"
D1=$(cat "$WORK/out") # the manifest digest
if [ "$rc" = 0 ]; then ok "kiln build --isolation none works in the container"; else
        not_ok "kiln build --isolation none works in the container (exit $rc)"
        sed 's/^/# /' "$WORK/err" | tail -n 25
fi
check "it says it runs without isolation, in the container's /" has "isolation: none" "$WORK/err"

S="$R/kiln/store"
U="$WORK/unpacked"
check "the image is in the store, readable by umoci" run 0 umoci unpack --image "$S:out" "$U"
F="$U/rootfs"
check "RUN's output is in the image" grep -qx hello "$F/work/out.txt"
check "COPY from the context is in the image" grep -qx "from the context" "$F/opt/hello.txt"
check "COPY --from an earlier stage (which owned / before) works" grep -qx built "$F/artifact"
check "the deleted base file is gone" test ! -e "$F/etc/motd"
check "RUN saw the container's resolv.conf, not the image's" has 192.0.2.53 "$F/seen"
check "RUN saw the container's hosts" has kiln-none-test "$F/seen"
check "the image keeps its own resolv.conf" grep -qx "nameserver 198.51.100.1" "$F/etc/resolv.conf"
check "USER app applied to RUN" grep -qx 1000 "$F/tmp/uid"
check "a file RUN made as app is app's" test "$(stat -c %u "$F/home/app/mine")" = 1000
check "the config says User app" sh -c "skopeo --insecure-policy inspect --config 'oci:$S:out' | jq -e '.config.User == \"app\"' >/dev/null"

# every layer's listing
M=$(jq -r '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == "out") | .digest' "$S/index.json")
: >"$WORK/layers.txt"
for l in $(jq -r '.layers[].digest' "$S/blobs/sha256/${M#sha256:}"); do
        tar -tvf "$S/blobs/sha256/${l#sha256:}" >>"$WORK/layers.txt"
done
check "the deleted base file is a whiteout" grep -q 'etc/\.wh\.motd$' "$WORK/layers.txt"
check "resolv.conf is only the base's (no layer of a step has it)" test "$(grep -c 'etc/resolv\.conf$' "$WORK/layers.txt")" = 1
check "hosts is in no layer" sh -c "! grep -q 'etc/hosts\$' '$WORK/layers.txt'"
check "kiln, its libraries and the store are in no layer" sh -c "! grep -Eq ' (\./)?kiln(/|\$)' '$WORK/layers.txt'"
check "the context is in no layer" sh -c "! grep -Eq ' (\./)?ctx(/|\$)' '$WORK/layers.txt'"
check "nothing of /proc, /sys or /dev is in a layer" sh -c "! grep -Eq ' (\./)?(proc|sys|dev)/.' '$WORK/layers.txt'"
check "the container's own files are in no layer" sh -c "! grep -q 'container-file' '$WORK/layers.txt' && ! test -e '$F/container-file'"
check "RUN ran in the image's root (the container's file was gone)" sh -c "! grep -q container-file '$F/root-listing'"
check "the store is sound" run 0 "$KILN" store fsck --root "$S"

# --- the cache: the same build in a fresh container with that store (a volume kept between Jobs) --
C2="$WORK/c2"
check "a fresh container bundle with the first one's store and context" make_bundle "$C2" yes
R2="$C2/rootfs"
S2="$R2/kiln/store"
rm -rf "$S2" && cp -a "$S" "$S2" && cp -a "$R/ctx/." "$R2/ctx/"
run_bundle "$C2"
check "the same build there works (exit $rc)" test "$rc" = 0
[ "$rc" = 0 ] || sed 's/^/# /' "$WORK/err" | tail -n 20
check "  every step CACHED (6)" test "$(grep -c '^#[0-9]* CACHED' "$WORK/err")" = 6
check "  the same image (the steps' original times)" test "$(cat "$WORK/out")" = "$D1"
check "  / was not taken: the container's own file is still there" test -e "$R2/container-file"
echo "changed in the context" >"$R2/ctx/hello.txt"
run_bundle "$C2"
check "hello.txt changed: built" test "$rc" = 0
check "  the build stage hits; COPY hello.txt and what follows it ran (1 CACHED)" \
        test "$(grep -c '^#[0-9]* CACHED' "$WORK/err")" = 1
check "  and says why" has "cache miss: COPY hello.txt /opt/hello.txt: hello.txt changed" "$WORK/err"
U3="$WORK/unpacked3"
check "  the image has the new file" sh -c "umoci unpack --image '$S2:out' '$U3' >/dev/null && grep -qx 'changed in the context' '$U3/rootfs/opt/hello.txt'"
check "  and the cached build stage's artifact" grep -qx built "$U3/rootfs/artifact"
check "  and RUN's output" grep -qx hello "$U3/rootfs/work/out.txt"

# --- not a container: refused, nothing changed ---------------------------------------------------
H="$WORK/h"
check "a bundle without a container's signs is made" make_bundle "$H" no
printf 'FROM kiln-test/busybox:1\nRUN echo hi >/hi\n' >"$H/rootfs/ctx/Dockerfile"
run_bundle "$H"
check "outside a container, --isolation none exits 1" test "$rc" = 1
check "and explains that it rewrites /" has "rewrites / itself" "$WORK/err"
check "and names the way to force it" has KILN_ISOLATION_NONE_FORCE "$WORK/err"
check "and changes nothing" sh -c "test -e '$H/rootfs/container-file' && test -x '$H/rootfs/bin/busybox' && ! test -e '$H/rootfs/hi'"

# --- the sandbox is really forbidden there: auto fails and points at none -------------------------
jq '.process.args |= map(if . == "none" then "auto" else . end)' "$H/config.json" >"$H/c.new" &&
        mv "$H/c.new" "$H/config.json"
run_bundle "$H"
check "there, --isolation auto cannot make its sandbox" test "$rc" = 1
check "and says that --isolation none exists" has "isolation none" "$WORK/err"

# --- not root: refused ---------------------------------------------------------------------------
jq '.process.args |= map(if . == "auto" then "none" else . end) | .process.user = {uid: 1000, gid: 1000}
    | .process.env += ["container=runc"]' "$H/config.json" >"$H/c.new" && mv "$H/c.new" "$H/config.json"
chmod -R a+rX "$H/rootfs"
chown -R 1000:1000 "$H/rootfs/kiln/store"
run_bundle "$H"
check "as a user other than root, --isolation none exits 1" test "$rc" = 1
check "and says it needs uid 0" has "needs uid 0" "$WORK/err"

# --- forced where there is no container sign ---------------------------------------------------
jq '.process.user = {uid: 0, gid: 0} | .process.env = ["PATH=/kiln/bin:/bin", "LD_LIBRARY_PATH=/kiln/lib", "KILN_ISOLATION_NONE_FORCE=1"]' \
        "$H/config.json" >"$H/c.new" && mv "$H/c.new" "$H/config.json"
run_bundle "$H"
check "KILN_ISOLATION_NONE_FORCE=1 runs it anyway" test "$rc" = 0
check "and its image has RUN's file" sh -c "umoci unpack --image '$H/rootfs/kiln/store:out' '$WORK/u2' >/dev/null && grep -qx hi '$WORK/u2/rootfs/hi'"

# --- every base image is fetched before a stage takes / ------------------------------------------
P="$WORK/p"
check "a fresh container bundle is made" make_bundle "$P" yes
printf 'FROM kiln-test/busybox:1 AS a\nRUN echo ran >/ran-a\nFROM 127.0.0.1:9/nothing:1\nCOPY --from=a /ran-a /x\n' \
        >"$P/rootfs/ctx/Dockerfile"
run_bundle "$P"
check "a base image that cannot be pulled fails the build (1)" test "$rc" = 1
check "  naming it" has "127.0.0.1:9/nothing" "$WORK/err"
check "  before any stage emptied / (images are fetched first)" \
        sh -c "test -e '$P/rootfs/container-file' && ! test -e '$P/rootfs/ran-a'"

# --- auto in a container where nothing else works picks none --------------------------------------
A="$WORK/a"
check "another container bundle is made" make_bundle "$A" yes
printf 'FROM kiln-test/busybox:1\nRUN echo auto >/auto\n' >"$A/rootfs/ctx/Dockerfile"
jq '.process.args |= map(if . == "none" then "auto" else . end)' "$A/config.json" >"$A/c.new" &&
        mv "$A/c.new" "$A/config.json"
run_bundle "$A"
check "in a container that forbids namespaces, --isolation auto builds (root)" test "$rc" = 0
check "  with none, and says why" has "isolation: none.*auto: no namespaces work here" "$WORK/err"
check "  and the image has RUN's file" \
        sh -c "umoci unpack --image '$A/rootfs/kiln/store:out' '$WORK/u3' >/dev/null && grep -qx auto '$WORK/u3/rootfs/auto'"

finish
