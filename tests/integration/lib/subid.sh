# shellcheck shell=bash
# A temporary /etc/subuid and /etc/subgid range for a test user. One test at a time on this
# machine holds one (each removes the line it added), so they wait on a lock:
#
#   subid_add USER     wait for /run/kiln-test-subid.lock, then add "USER:400000:65536" to both
#                      files (fd 9 holds the lock)
#   subid_remove       remove that line and release the lock; safe to call again: put it in the
#                      EXIT trap
SUBID_LINE=
subid_add() {
        local f
        SUBID_LINE="$1:400000:65536"
        exec 9>/run/kiln-test-subid.lock
        flock 9
        for f in /etc/subuid /etc/subgid; do
                grep -qx "$SUBID_LINE" "$f" 2>/dev/null || echo "$SUBID_LINE" >>"$f"
        done
}
subid_remove() {
        local f
        [ -n "$SUBID_LINE" ] || return 0
        for f in /etc/subuid /etc/subgid; do
                # grep exits 1 when no other line is left: write the file anyway
                grep -vx "$SUBID_LINE" "$f" >"$f.kiln-test"
                cat "$f.kiln-test" >"$f"
                rm -f "$f.kiln-test"
        done
        SUBID_LINE=
        exec 9>&-
}
