#!/usr/bin/env bash
# kiln doctor: the machine probe. As root here; as nobody (a single id) and as daemon with a
# /etc/subuid range (added for the test and removed after it, as test-build-rootless.sh does);
# with the store on an overlayfs mount (overlay cannot be mounted there: kiln copies); and in a
# runc container whose seccomp profile refuses unshare and mount (only none works).
set -u

KILN=${KILN:?KILN must point at the kiln binary}
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d)
chmod 755 "$WORK"
# shellcheck source=lib/tap.sh
. "$HERE/lib/tap.sh"
# shellcheck source=lib/subid.sh
. "$HERE/lib/subid.sh"
IDS=()
cleanup() {
        local id
        for id in "${IDS[@]}"; do runc delete -f "$id" >/dev/null 2>&1; done
        mountpoint -q "$WORK/ovl/merged" 2>/dev/null && umount "$WORK/ovl/merged"
        subid_remove
        rm -rf "$WORK"
}
trap cleanup EXIT
unset KILN_ISOLATION_NONE_FORCE

has() { grep -q -- "$1" "$2"; }
json() { python3 -c "import json,sys; d=json.load(open('$WORK/out')); sys.exit(0 if ($1) else 1)"; }

# --- usage ---
check "kiln --help lists doctor" run 0 "$KILN" --help
check "with its summary" grep -q '^  doctor ' "$WORK/out"
check "kiln help doctor shows --format" run 0 "$KILN" help doctor
check "and --root" has --root "$WORK/out"
check "a bad --format is a usage error (2)" run 2 "$KILN" doctor --format yaml
check "an argument is a usage error (2)" run 2 "$KILN" doctor extra

# --- as the caller (root in CI) ---
export KILN_ROOT="$WORK/store"
check "kiln doctor works (0)" run 0 "$KILN" doctor
cp "$WORK/out" "$WORK/text"
for probe in "user" "kernel" "container" "seccomp" "user namespaces" "subuid / subgid" "newuidmap" \
        "newgidmap" "store" "mount namespace" "overlay" "fresh /proc" "openat2" "cgroup"; do
        check "the report names the $probe probe" grep -q "^$probe  *[^ ]" "$WORK/text"
done
check "it says which filesystem the store is on" grep -q "^store  *$WORK/store on [a-z0-9]" "$WORK/text"
check "and names every isolation mode" grep -q -e '^  root ' -e '^  userns ' -e '^  none ' "$WORK/text"
check "and what auto picks" grep -q '^auto picks ' "$WORK/text"
check "the scratch directory is removed afterwards" sh -c "[ -z \"\$(ls -A '$WORK/store/.kiln/tmp')\" ]"
if [ "$(id -u)" = 0 ]; then
        check "as root, the root mode works" grep -qx '  root  *works' "$WORK/text"
        check "and auto picks root" grep -q '^auto picks  *root: running as root' "$WORK/text"
        check "overlay works as root on the store" grep -q '^overlay  *as root: works' "$WORK/text"
else
        check "not root: the root mode does not work" grep -q '^  root  *does not work: it needs root' "$WORK/text"
fi
check "--format json works (0)" run 0 "$KILN" doctor --format json
check "the JSON parses" json True
for f in user kernel container seccomp user_namespaces subids store probes openat2 cgroup isolation auto; do
        check "the JSON has $f" json "'$f' in d"
done
check "the JSON has a verdict per mode" \
        json "all(d['isolation'][m]['verdict'] in ('works','limited','fails') for m in ('root','userns','none'))"
check "the JSON says whether each mode works" json "all(isinstance(d['isolation'][m]['works'], bool) for m in d['isolation'])"
check "the JSON's cgroup version is a number" json "d['cgroup']['version'] in (0, 1, 2)"
check "the JSON names the store's filesystem" json "d['store']['filesystem'] is not None"
if [ "$(id -u)" = 0 ]; then
        check "the JSON says root works and auto picks root" \
                json "d['user']['root'] and d['isolation']['root']['verdict'] == 'works' and d['auto']['isolation'] == 'root'"
fi
check "--root names the store" run 0 "$KILN" doctor --root "$WORK/other"
check "the one given" grep -q "^store  *$WORK/other on " "$WORK/out"

[ "$(id -u)" = 0 ] || finish

# --- as nobody: a single id ---
as_user() {
        local user=$1 home=$2
        shift 2
        setpriv --reuid "$(id -u "$user")" --regid "$(id -g "$user")" --clear-groups \
                env HOME="$home" TMPDIR="$home" KILN_ROOT="$home/store" "$@"
}
have=1
need setpriv command -v setpriv || have=0
if [ "$have" = 1 ] && id nobody >/dev/null 2>&1 &&
        ! grep -q -e "^nobody:" -e "^$(id -u nobody):" /etc/subuid 2>/dev/null; then
        H="$WORK/nobody"
        mkdir -p "$H" && chown nobody: "$H"
        check "as nobody, doctor works (0)" run 0 as_user nobody "$H" "$KILN" doctor
        cp "$WORK/out" "$WORK/nobody.txt"
        check "root does not work for nobody" grep -q '^  root  *does not work: it needs root' "$WORK/nobody.txt"
        check "userns works with a single id" \
                grep -q '^  userns  *works, with limits: a single id (no /etc/subuid and /etc/subgid range for nobody)' \
                "$WORK/nobody.txt"
        check "it suggests adding a subuid range" \
                grep -q 'to fix: add a range for nobody to /etc/subuid and /etc/subgid: usermod --add-subuids 100000-165535 --add-subgids 100000-165535 nobody' \
                "$WORK/nobody.txt"
        check "none needs uid 0" grep -q '^  none  *does not work: it needs uid 0' "$WORK/nobody.txt"
        check "auto picks userns" grep -q '^auto picks  *userns: a user namespace with a single id' "$WORK/nobody.txt"
        check "as nobody, --format json works" run 0 as_user nobody "$H" "$KILN" doctor --format json
        check "the JSON says userns works with a single id" \
                json "d['isolation']['userns']['works'] and d['isolation']['userns']['ids'] == 'single id' and not d['isolation']['root']['works']"
else
        echo "ok $((n += 1)) # SKIP nobody is missing or has a /etc/subuid range here"
fi

# --- as daemon with a subordinate range ---
if [ "$have" = 1 ] && need newuidmap command -v newuidmap && id daemon >/dev/null 2>&1; then
        H="$WORK/daemon"
        mkdir -p "$H" && chown daemon: "$H"
        subid_add daemon
        check "as daemon with a range, doctor works (0)" run 0 as_user daemon "$H" "$KILN" doctor
        cp "$WORK/out" "$WORK/daemon.txt"
        subid_remove
        check "it shows the range" grep -q '^subuid / subgid  *400000-465535 / 400000-465535 (for daemon)' "$WORK/daemon.txt"
        check "userns works with ranges" grep -q '^  userns  *works (with ranges: 65536 subordinate uids)' "$WORK/daemon.txt"
        check "auto picks userns with the ranges" \
                grep -q '^auto picks  *userns: a user namespace with the /etc/subuid and /etc/subgid ranges' "$WORK/daemon.txt"
        check "no subuid suggestion then" sh -c "! grep -q usermod '$WORK/daemon.txt'"
fi

# --- the store on an overlayfs mount ---
O="$WORK/ovl"
mkdir -p "$O/lower" "$O/upper" "$O/work" "$O/merged"
if mount -t overlay overlay -o "lowerdir=$O/lower,upperdir=$O/upper,workdir=$O/work" "$O/merged" 2>"$WORK/err"; then
        check "with the store on overlayfs, doctor works (0)" run 0 "$KILN" doctor --root "$O/merged/store"
        cp "$WORK/out" "$WORK/ovl.txt"
        check "the store is on overlayfs" grep -q "^store  *$O/merged/store on overlayfs" "$WORK/ovl.txt"
        check "overlay fails there" grep -q '^overlay  *as root: fails (' "$WORK/ovl.txt"
        check "root works, with limits: overlay cannot be mounted on the store's overlayfs" \
                grep -q "^  root  *works, with limits: overlay cannot be mounted on the store's overlayfs" "$WORK/ovl.txt"
        check "and kiln copies instead" grep -q "kiln copies each stage's root filesystem instead" "$WORK/ovl.txt"
        check "with a volume suggested" grep -q 'to fix: put the store on a volume (ext4/xfs)' "$WORK/ovl.txt"
        check "auto says it works without overlay" grep -q '^auto picks .*without overlay' "$WORK/ovl.txt"
        check "--format json on overlayfs" run 0 "$KILN" doctor --root "$O/merged/store" --format json
        check "the JSON says overlay fails, root works" \
                json "d['store']['filesystem'] == 'overlayfs' and not d['probes']['root']['overlay'] and d['isolation']['root']['verdict'] == 'limited' and not d['auto']['overlay']"
        umount "$O/merged"
else
        need "overlayfs mounts" false
fi

# --- in a container that refuses unshare and mount ---
have=1
need runc command -v runc || have=0
need jq command -v jq || have=0
if [ "$have" = 1 ]; then
        B="$WORK/bundle"
        R="$B/rootfs"
        mkdir -p "$R/kiln/bin" "$R/kiln/lib" "$R/tmp" "$R/etc"
        cp "$KILN" "$R/kiln/bin/kiln"
        for lib in $(ldd "$KILN" | awk '/=> \//{print $3}'); do cp -L "$lib" "$R/kiln/lib/"; done
        interp=$(ldd "$KILN" | awk '$1 ~ /^\// {print $1}' | head -n1)
        if [ -n "$interp" ]; then
                mkdir -p "$R$(dirname "$interp")"
                cp -L "$interp" "$R$interp"
        fi
        printf 'root:x:0:0:root:/root:/bin/sh\n' >"$R/etc/passwd"
        : >"$R/.dockerenv"
        (cd "$B" && runc spec)
        jq --argjson caps '["CAP_CHOWN","CAP_DAC_OVERRIDE","CAP_FSETID","CAP_FOWNER","CAP_MKNOD",
                "CAP_NET_RAW","CAP_SETGID","CAP_SETUID","CAP_SETFCAP","CAP_SETPCAP",
                "CAP_NET_BIND_SERVICE","CAP_SYS_CHROOT","CAP_KILL","CAP_AUDIT_WRITE"]' '
                .process.terminal = false
                | .root.readonly = false
                | .process.args = ["/kiln/bin/kiln", "doctor", "--root", "/kiln/store"]
                | .process.env = ["PATH=/kiln/bin", "LD_LIBRARY_PATH=/kiln/lib", "HOME=/root"]
                | .process.capabilities = {bounding: $caps, effective: $caps, permitted: $caps}
                | .linux.seccomp = {defaultAction: "SCMP_ACT_ALLOW", syscalls: [
                        {names: ["unshare", "setns", "mount", "umount2", "pivot_root", "fsopen", "fsmount",
                                 "fsconfig", "move_mount", "open_tree", "mount_setattr"],
                         action: "SCMP_ACT_ERRNO", errnoRet: 1},
                        {names: ["clone3"], action: "SCMP_ACT_ERRNO", errnoRet: 38},
                        {names: ["clone"], action: "SCMP_ACT_ERRNO", errnoRet: 1,
                         args: [{index: 0, value: 268435456, valueTwo: 268435456, op: "SCMP_CMP_MASKED_EQ"}]}]}
        ' "$B/config.json" >"$B/config.new" && mv "$B/config.new" "$B/config.json"
        id=kiln-doctor-$$-$RANDOM
        IDS+=("$id")
        timeout 120 runc run -b "$B" "$id" </dev/null >"$WORK/out" 2>"$WORK/err"
        rc=$?
        runc delete -f "$id" >/dev/null 2>&1
        cp "$WORK/out" "$WORK/ctr.txt"
        if [ "$rc" = 0 ]; then ok "in the container, doctor exits 0 (none works)"; else
                not_ok "in the container, doctor exits 0 (none works) (exit $rc)"
                sed 's/^/# /' "$WORK/err" "$WORK/ctr.txt" | tail -n 30
        fi
        check "it sees the container" grep -q '^container  *\/.dockerenv exists' "$WORK/ctr.txt"
        check "and the seccomp filter" grep -q '^seccomp  *filter' "$WORK/ctr.txt"
        check "unshare(CLONE_NEWUSER) fails" grep -q '^user namespaces .*unshare(CLONE_NEWUSER) fails' "$WORK/ctr.txt"
        check "root does not work" grep -q '^  root  *does not work: mount namespaces are refused' "$WORK/ctr.txt"
        check "userns does not work" grep -q '^  userns  *does not work: user namespaces are refused' "$WORK/ctr.txt"
        check "it suggests a seccomp profile or --isolation none" \
                grep -q 'to fix: run the pod (or container) with a seccomp profile that allows unshare and mount (Unconfined), or use --isolation none' \
                "$WORK/ctr.txt"
        check "none works" grep -q '^  none  *works, with limits: no isolation' "$WORK/ctr.txt"
        check "auto picks none there (root in a container)" \
                grep -q '^auto picks  *none: no namespaces work here, and this is a container (/.dockerenv exists)' "$WORK/ctr.txt"
        check "only none works" test "$(grep -c -e '^  [a-z]*  *works' "$WORK/ctr.txt")" = 1
fi

finish
