#!/usr/bin/env bash
# kiln build's local cache: the hit/miss matrix of issue 7 (touch, content, chmod, build-args
# used or not, a new base, a .dockerignored file, --no-cache), an entry whose blob is gone, and
# two stores that never share entries. A RUN writes a random stamp: the same stamp after a
# rebuild means the RUN did not run.
set -u

KILN=${KILN:?KILN must point at the kiln binary}
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d)
# shellcheck source=lib/registry.sh
. "$HERE/lib/registry.sh"
# shellcheck source=lib/tap.sh
. "$HERE/lib/tap.sh"
trap '"$KILN" unshare -- rm -rf "$WORK" 2>/dev/null; rm -rf "$WORK"' EXIT
export KILN_ROOT="$WORK/store" DOCKER_CONFIG="$WORK/docker" XDG_CONFIG_HOME="$WORK/xdg"
unset SOURCE_DATE_EPOCH http_proxy https_proxy HTTP_PROXY HTTPS_PROXY

need busybox-static _registry_is_static /bin/busybox || finish
echo "# running as $(id -un) ($(id -u))"

base() { # base TAG TEXT: a busybox image whose /etc/motd holds TEXT
        local B="$WORK/base-$1"
        mkdir -p "$B/bin" "$B/etc" "$B/tmp"
        cp /bin/busybox "$B/bin/busybox"
        for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$B/bin/$a"; done
        printf 'root:x:0:0:root:/root:/bin/sh\n' >"$B/etc/passwd"
        echo "$2" >"$B/etc/motd"
        chmod 1777 "$B/tmp"
        "$KILN" import -t "kiln-test/base:$1" "$B" >/dev/null
}
check "the base image is imported" base 1 one

C="$WORK/ctx"
mkdir -p "$C"
cat >"$C/Dockerfile" <<'DF'
ARG BASE=kiln-test/base:1
FROM $BASE
ARG USED
ARG UNUSED
COPY a.txt /a.txt
RUN echo "$USED" > /used && cat /proc/sys/kernel/random/uuid > /stamp
RUN cat /a.txt > /copy && cat /proc/sys/kernel/random/uuid > /stamp2
DF
echo hello >"$C/a.txt"
echo ignored >"$C/ignored.txt"
printf 'ignored.txt\n' >"$C/.dockerignore"

N=0
# b [ARGS...]: builds the context; $WORK/log the progress, $WORK/o the files, $ID the image id
b() {
        N=$((N + 1))
        rm -rf "$WORK/o"
        "$KILN" build --progress plain -t kiln-test/cached:1 --iidfile "$WORK/iid" -o "type=local,dest=$WORK/o" \
                --build-arg USED=u1 "$@" "$C" >"$WORK/log" 2>&1 || { sed 's/^/# /' "$WORK/log" | tail -n 20; return 1; }
        ID=$(cat "$WORK/iid")
}
cached() { grep -c '^#[0-9]* CACHED' "$WORK/log"; }
# steps: COPY, RUN, RUN (FROM is never "cached")
hits() { # hits N: exactly N steps were CACHED
        local got
        got=$(cached)
        [ "$got" = "$1" ] && return 0
        echo "# $got steps CACHED, wanted $1"
        grep '^#' "$WORK/log" | sed 's/^/# /' | tail -n 20
        return 1
}
stamp() { cat "$WORK/o/stamp"; }
diff_ids() { # diff_ids IMAGE-ID: the config's rootfs.diff_ids
        python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["rootfs"]["diff_ids"])' \
                "$KILN_ROOT/blobs/sha256/${1#sha256:}"
}

check "a cold build" b
hits 0 >/dev/null || not_ok "nothing is cached in a fresh store"
S1=$(stamp) ID1=$ID
check "the same build again: every step CACHED" b
check "  3 hits" hits 3
check "  the same layers" [ "$(diff_ids "$ID")" = "$(diff_ids "$ID1")" ]
check "  the RUN did not run (same stamp)" [ "$(stamp)" = "$S1" ]
check "  its file is there" [ "$(cat "$WORK/o/copy")" = hello ]

# with SOURCE_DATE_EPOCH the timestamps are fixed too: the very same image
check "SOURCE_DATE_EPOCH=1: built" env SOURCE_DATE_EPOCH=1 bash -c "$(declare -f b); $(declare -p C WORK KILN); b"
ID1=$(cat "$WORK/iid")
check "  again: the same image id" env SOURCE_DATE_EPOCH=1 bash -c "$(declare -f b); $(declare -p C WORK KILN); b"
check "  the same image" [ "$(cat "$WORK/iid")" = "$ID1" ]
check "  3 hits" hits 3
b >/dev/null

touch -d '2001-01-01' "$C/a.txt"
check "touch a.txt (mtime only): built" b
check "  every step CACHED" hits 3
check "  same stamp" [ "$(stamp)" = "$S1" ]

echo changed >"$C/a.txt"
check "a.txt's content changed: built" b
check "  COPY and both RUNs miss" hits 0
check "  the stamp changed" [ "$(stamp)" != "$S1" ]
check "  the new content landed" [ "$(cat "$WORK/o/copy")" = changed ]
S2=$(stamp)

chmod 600 "$C/a.txt"
check "chmod 600 a.txt: built" b
check "  a miss (the mode lands in the image)" hits 0
check "  the stamp changed" [ "$(stamp)" != "$S2" ]
chmod 644 "$C/a.txt"
check "chmod back: built" b
check "  all hits again (the entry of the 0644 build)" hits 3
check "  the 0644 build's stamp" [ "$(stamp)" = "$S2" ]

check "a build-arg no stage declares: built" b --build-arg OTHER=x
check "  all hits" hits 3
check "  same stamp" [ "$(stamp)" = "$S2" ]

check "UNUSED (declared, so in RUN's environment) changed: built" b --build-arg UNUSED=x
check "  COPY hits, the RUNs miss (a script could read it)" hits 1

check "USED changed: built" b --build-arg USED=u2
check "  COPY hits, the RUN using it and the one after miss" hits 1
check "  the new value is used" [ "$(cat "$WORK/o/used")" = u2 ]
check "USED back: all hits" b
check "  3 hits" hits 3
check "  the u1 build's stamp" [ "$(stamp)" = "$S2" ]

echo changed-again >"$C/ignored.txt"
check "a .dockerignored file changed: built" b
check "  all hits" hits 3

check "another base image: built" base 2 two
check "  built on it" b --build-arg BASE=kiln-test/base:2
check "  everything misses" hits 0
check "  the stamp changed" [ "$(stamp)" != "$S2" ]

check "--no-cache: built" b --no-cache
check "  nothing CACHED" hits 0
check "  the RUN ran (new stamp)" [ "$(stamp)" != "$S2" ]
check "  ... and its entries replaced the old ones: all hits after" b
check "  3 hits" hits 3
S3=$(stamp)

# a cache entry whose blob was removed: a miss, and the build still works
entry=$(grep -l '"empty_layer":false' "$KILN_ROOT"/.kiln/cache/*.json | head -n 1)
if [ -n "$entry" ]; then
        for e in "$KILN_ROOT"/.kiln/cache/*.json; do
                d=$(sed -n 's/.*"digest":"sha256:\([0-9a-f]*\)".*/\1/p' "$e")
                [ -n "$d" ] && rm -f "$KILN_ROOT/blobs/sha256/$d"
        done
        check "every cached blob removed: built" b
        check "  no step CACHED" hits 0
        check "  the RUN ran" [ "$(stamp)" != "$S3" ]
else
        not_ok "the store has cache entries with layers"
fi

# two stores never share entries
KILN_ROOT="$WORK/store2"
check "a second store: the base imported" base 1 one
check "  built" b
check "  nothing CACHED from the other store" hits 0
check "  a second build there hits" b
check "  3 hits" hits 3
finish
