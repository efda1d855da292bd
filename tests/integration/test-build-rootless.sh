#!/usr/bin/env bash
# A build test (default test-build.sh) again as an unprivileged user, run from root (as CI runs
# the suite):
#   single  uid 65534 (nobody) with no /etc/subuid range: only id 0 exists in RUN
#   ranges  uid 1 (daemon) with a /etc/subuid and /etc/subgid range added for the run and
#           removed after it: every id exists in RUN (newuidmap, newgidmap)
# The TAP output is the test's: test-build-rootless.sh MODE [test-build|test-build-from|...]
set -u

MODE=${1:?single or ranges}
TEST=${2:-test-build}
KILN=${KILN:?KILN must point at the kiln binary}
HERE=$(cd "$(dirname "$0")" && pwd)

skip() {
        if [ "${KILN_MUST_WORK:-}" = 1 ]; then
                echo "not ok 1 - $1 (KILN_MUST_WORK=1)"
                echo "1..1"
                exit 1
        fi
        echo "1..0 # SKIP $1"
        exit 0
}
[ "$(id -u)" = 0 ] || skip "run as root (an unprivileged user runs test-build itself)"
command -v setpriv >/dev/null || skip "setpriv (util-linux) is missing"
case $MODE in
single) user=nobody ;;
ranges)
        user=daemon
        command -v newuidmap >/dev/null || skip "newuidmap (package uidmap) is missing"
        ;;
*) echo "usage: $0 single|ranges" >&2; exit 2 ;;
esac
uid=$(id -u "$user") || skip "no user $user"
gid=$(id -g "$user")
if [ "$MODE" = single ] && grep -q -e "^$user:" -e "^$uid:" /etc/subuid 2>/dev/null; then
        skip "$user has a /etc/subuid range here"
fi

home=$(mktemp -d)
chmod 755 "$home"
chown "$uid:$gid" "$home"
# shellcheck source=lib/subid.sh
. "$HERE/lib/subid.sh"
cleanup() {
        subid_remove
        rm -rf "$home"
}
trap cleanup EXIT
[ "$MODE" = ranges ] && subid_add "$user"
setpriv --reuid "$uid" --regid "$gid" --clear-groups \
        env -u KILN_ROOT HOME="$home" TMPDIR="$home" XDG_RUNTIME_DIR= KILN="$KILN" \
        KILN_MUST_WORK="${KILN_MUST_WORK:-}" PATH="$PATH" bash "$HERE/$TEST.sh"
