#!/usr/bin/env bash
# kiln build --isolation auto where CI puts kiln: inside another container. Each place gets a root
# directory holding kiln and its libraries under /kiln, busybox, a store at /kiln/store with a
# busybox base image and a context at /ctx; the image built there is read afterwards from the
# host with umoci.
#   podman, rootful    podman run --rootfs (default seccomp, default capabilities: no
#                      CAP_SYS_ADMIN; its seccomp allows unshare and mount, refuses sethostname)
#   podman, rootless   the same as daemon (uid 1) with a /etc/subuid range added for the run
#   unshare            a user namespace (--map-root-user) whose children may not make user
#                      namespaces (max_user_namespaces 0 in it), chroot into the root directory
set -u

KILN=${KILN:?KILN must point at the kiln binary}
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d)
chmod 755 "$WORK"
# shellcheck source=lib/tap.sh
. "$HERE/lib/tap.sh"
# shellcheck source=lib/subid.sh
. "$HERE/lib/subid.sh"
cleanup() {
        subid_remove
        rm -rf "$WORK"
}
trap cleanup EXIT
unset SOURCE_DATE_EPOCH KILN_ISOLATION_NONE_FORCE KILN_NONE_KEEP

have=1
need "root (podman, unshare)" test "$(id -u)" = 0 || have=0
[ "$have" = 1 ] || finish
need podman command -v podman || have=0
need runc command -v runc || have=0
need umoci command -v umoci || have=0
need "unshare and setpriv (util-linux)" sh -c 'command -v unshare && command -v setpriv' || have=0
need "newuidmap (uidmap)" command -v newuidmap || have=0
need busybox-static sh -c '! ldd /bin/busybox' || have=0
[ "$have" = 1 ] || finish

has() { grep -q -- "$1" "$2"; }

# --- the base image: busybox, a file to delete -------------------------------------------------
B="$WORK/base"
mkdir -p "$B/bin" "$B/etc" "$B/tmp" "$B/root"
cp /bin/busybox "$B/bin/busybox"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$B/bin/$a"; done
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$B/etc/passwd"
printf 'root:x:0:\n' >"$B/etc/group"
echo "from the base" >"$B/etc/motd"
chmod 1777 "$B/tmp"

# make_root DIR: kiln, its libraries and ELF interpreter, busybox, the store, the context
make_root() {
        local r=$1 lib interp a
        mkdir -p "$r/kiln/bin" "$r/kiln/lib" "$r/bin" "$r/etc" "$r/ctx" "$r/tmp" "$r/proc" "$r/sys" "$r/dev" "$r/run"
        chmod 1777 "$r/tmp"
        cp "$KILN" "$r/kiln/bin/kiln"
        for lib in $(ldd "$KILN" | awk '/=> \//{print $3}'); do cp -L "$lib" "$r/kiln/lib/"; done
        interp=$(ldd "$KILN" | awk '$1 ~ /^\// {print $1}' | head -n1)
        if [ -n "$interp" ]; then
                mkdir -p "$r$(dirname "$interp")"
                cp -L "$interp" "$r$interp"
        fi
        cp /bin/busybox "$r/bin/busybox"
        for a in sh ls cat; do ln -sf busybox "$r/bin/$a"; done
        printf 'FROM kiln-test/busybox:1\nRUN echo built > /built && rm /etc/motd\nCOPY f /f\n' >"$r/ctx/Dockerfile"
        echo "from the context" >"$r/ctx/f"
        "$KILN" import --root "$r/kiln/store" -t kiln-test/busybox:1 "$B" >/dev/null 2>"$WORK/err" ||
                { sed 's/^/# /' "$WORK/err"; return 1; }
}

# show: the end of what kiln said (on failure)
show() { sed 's/^/# /' "$WORK/err" | tail -n 20; }

# image_checks WHERE ROOT: the image "out" in ROOT's store holds RUN's and COPY's files
image_checks() {
        local u=$WORK/unpacked-$1
        check "$1: the image is in the store, readable by umoci" run 0 umoci unpack --image "$2/kiln/store:out" "$u"
        check "$1: RUN's /built is in the image" grep -sqx built "$u/rootfs/built"
        check "$1: COPY's /f is in the image" grep -sqx "from the context" "$u/rootfs/f"
        check "$1: the file RUN deleted is gone" test ! -e "$u/rootfs/etc/motd"
        check "$1: the store is sound" run 0 "$KILN" store fsck --root "$2/kiln/store"
}

KILN_ARGS=(/kiln/bin/kiln build --isolation auto --progress plain --root /kiln/store -t out /ctx)

# podman_run ROOT [PREFIX...]: podman run --rootfs ROOT of kiln build; exit code in $rc
podman_run() {
        local r=$1 p=$2
        shift 2
        timeout 300 "$@" podman --root "$p/storage" --runroot "$p/run" --storage-driver vfs --runtime runc \
                --cgroup-manager cgroupfs run --rm --network none \
                --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 \
                -e PATH=/kiln/bin:/bin -e LD_LIBRARY_PATH=/kiln/lib \
                --rootfs "$r" "${KILN_ARGS[@]}" </dev/null >"$WORK/out" 2>"$WORK/err"
        rc=$?
}

# --- 1. podman, rootful ----------------------------------------------------------------------
# podman's default seccomp allows unshare (user namespaces too) and mount but refuses sethostname
# without CAP_SYS_ADMIN: root isolation cannot make its namespaces, userns can.
R1="$WORK/rootful"
mkdir -p "$WORK/podman-rootful"
check "rootful podman: a root directory is made" make_root "$R1"
podman_run "$R1" "$WORK/podman-rootful"
if [ "$rc" = 0 ]; then ok "rootful podman: kiln build --isolation auto works"; else
        not_ok "rootful podman: kiln build --isolation auto works (exit $rc)"
        show
fi
grep '^# isolation:' "$WORK/err"
check "rootful podman: auto picks userns (mount namespaces refused to root without CAP_SYS_ADMIN)" \
        has "^# isolation: userns: running as root, but mount namespaces are refused" "$WORK/err"
image_checks "rootful podman" "$R1"

# --- 2. podman, rootless ---------------------------------------------------------------------
R2="$WORK/rootless/root"
P2="$WORK/rootless/podman"
H2="$WORK/rootless/home"
X2="$WORK/rootless/xdg"
mkdir -p "$P2" "$H2" "$X2"
check "rootless podman: a root directory is made" make_root "$R2"
# the container's root is daemon outside: its / must be daemon's to be written
chown -R 1:1 "$WORK/rootless"
chmod 700 "$X2"
subid_add daemon
podman_run "$R2" "$P2" setpriv --reuid 1 --regid 1 --init-groups \
        env HOME="$H2" XDG_RUNTIME_DIR="$X2" PATH="$PATH"
subid_remove
if [ "$rc" = 0 ]; then ok "rootless podman: kiln build --isolation auto works"; else
        not_ok "rootless podman: kiln build --isolation auto works (exit $rc)"
        show
fi
grep '^# isolation:' "$WORK/err"
check "rootless podman: auto picks userns (nested in podman's user namespace)" \
        has "^# isolation: userns: running as root, but mount namespaces are refused" "$WORK/err"
image_checks "rootless podman" "$R2"

# --- 3. unshare: root of a user namespace that may not make user namespaces -------------------
# kiln is root of a user namespace it owns (uid 0 mapped alone, setgroups denied) and may make
# mount, pid, ipc and uts namespaces in it, but no user namespace: auto picks root there, and
# overlay must take userxattr (trusted.* xattrs and redirect_dir=off are refused there).
R3="$WORK/unshare"
check "unshare: a root directory is made" make_root "$R3"
# in_unshare CMD...: runs CMD (a shell command line) chrooted into R3 in the namespaces
in_unshare() {
        timeout 300 unshare --user --map-root-user --mount --pid --fork --kill-child sh -c '
                set -e
                echo 0 >/proc/sys/user/max_user_namespaces
                mount --rbind "$1" "$1"
                mount -t proc proc "$1/proc"
                mount --rbind /dev "$1/dev"
                mount --rbind /sys "$1/sys"
                exec chroot "$1" /bin/sh -c "export PATH=/kiln/bin:/bin LD_LIBRARY_PATH=/kiln/lib; $2"
        ' sh "$R3" "$1" </dev/null >"$WORK/out" 2>"$WORK/err"
        rc=$?
}
in_unshare "cat /proc/sys/user/max_user_namespaces; kiln doctor --root /kiln/store"
check "unshare: user namespaces are disallowed there (max_user_namespaces 0)" \
        sh -c "test $rc = 0 && grep -qx 0 '$WORK/out'"
check "unshare: kiln doctor says userns does not work" grep -q '^  userns  *does not work' "$WORK/out"
check "unshare: kiln doctor says auto picks root" grep -q '^auto picks  *root' "$WORK/out"
in_unshare "${KILN_ARGS[*]}"
if [ "$rc" = 0 ]; then ok "unshare: kiln build --isolation auto works"; else
        not_ok "unshare: kiln build --isolation auto works (exit $rc)"
        show
fi
grep '^# isolation:' "$WORK/err"
check "unshare: auto picks root (as doctor said)" has "^# isolation: root: running as root" "$WORK/err"
image_checks "unshare" "$R3"

finish
