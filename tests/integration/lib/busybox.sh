# shellcheck shell=bash
# Base images for build tests, made from Debian's static busybox (package busybox-static): no
# registry, no Docker Hub. Source it after lib/tap.sh, with $WORK and $KILN set.
#
#   busybox_tree DIR       a root filesystem in DIR: bin/busybox and a link per applet, an
#                          /etc/passwd with root, a 1777 /tmp
#   busybox_base TAG TEXT  kiln-test/base:TAG in kiln's store ($KILN_ROOT): busybox_tree with
#                          /etc/motd holding TEXT (a different TEXT, a different base image)

busybox_tree() {
        local B=$1 a
        mkdir -p "$B/bin" "$B/etc" "$B/tmp"
        cp /bin/busybox "$B/bin/busybox"
        for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$B/bin/$a"; done
        printf 'root:x:0:0:root:/root:/bin/sh\n' >"$B/etc/passwd"
        chmod 1777 "$B/tmp"
}

busybox_base() {
        local B="$WORK/base-$1"
        busybox_tree "$B"
        echo "$2" >"$B/etc/motd"
        "$KILN" import -t "kiln-test/base:$1" "$B" >/dev/null
}
