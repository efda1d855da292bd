# shellcheck shell=bash
# TAP helpers for the integration tests. Source it after setting WORK (a scratch directory).
#
#   ok DESC / not_ok DESC       one result line
#   check DESC CMD...           ok when CMD succeeds
#   run WANT CMD...             CMD's stdout to $WORK/out, stderr to $WORK/err; succeeds when CMD
#                               exits WANT (an exact code), else shows the exit and stderr
#   fails CMD...                as run, for any non-zero exit
#   need WHAT CMD...            true when CMD succeeds; else a SKIP, or a failure under
#                               KILN_MUST_WORK=1 (CI installs every test dependency)
#   finish                      the plan line; exits 0 when nothing failed
n=0
failed=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() { n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $1"; }
check() {
        local d=$1
        shift
        if "$@"; then ok "$d"; else not_ok "$d"; fi
}
_tap_show() {
        echo "# '$*' exited $rc, wanted $want"
        sed 's/^/# /' "$WORK/err" | tail -n 15
}
run() {
        local want=$1 rc
        shift
        "$@" >"$WORK/out" 2>"$WORK/err"
        rc=$?
        if [ "$rc" != "$want" ]; then
                _tap_show "$@"
                return 1
        fi
}
fails() {
        local want=non-zero rc
        "$@" >"$WORK/out" 2>"$WORK/err"
        rc=$?
        if [ "$rc" = 0 ]; then
                _tap_show "$@"
                return 1
        fi
}
need() {
        local what=$1
        shift
        if "$@" >/dev/null 2>&1; then return 0; fi
        if [ "${KILN_MUST_WORK:-}" = 1 ]; then
                not_ok "$what is not installed (KILN_MUST_WORK=1)"
        else
                echo "ok $((n += 1)) # SKIP $what is not installed"
        fi
        return 1
}
finish() {
        echo "1..$n"
        [ "$failed" = 0 ]
        exit
}
