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
# shellcheck source=lib/busybox.sh
. "$HERE/lib/busybox.sh"
trap '"$KILN" unshare -- rm -rf "$WORK" 2>/dev/null; rm -rf "$WORK"' EXIT
export KILN_ROOT="$WORK/store" DOCKER_CONFIG="$WORK/docker" XDG_CONFIG_HOME="$WORK/xdg"
unset SOURCE_DATE_EPOCH http_proxy https_proxy HTTP_PROXY HTTPS_PROXY

need busybox-static _registry_is_static /bin/busybox || finish
echo "# running as $(id -un) ($(id -u))"

base() { busybox_base "$@"; } # base TAG TEXT: kiln-test/base:TAG, /etc/motd holding TEXT
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
sleep 1.1 # a second later: a step that ran would get a new time
check "the same build again: every step CACHED" b
check "  3 hits" hits 3
check "  the same image id without SOURCE_DATE_EPOCH (hits keep their step's time)" [ "$ID" = "$ID1" ]
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

created() { # created IMAGE-ID: the config's creation time
        python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["created"])' \
                "$KILN_ROOT/blobs/sha256/${1#sha256:}"
}
C1=$(created "$ID")
sleep 1.1
check "--no-cache: built" b --no-cache
check "  nothing CACHED" hits 0
check "  the image is as new as its steps that ran" [ "$(created "$ID")" != "$C1" ]
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

# --- kiln prune: the cache is a root; --cache and --keep-storage remove entries -----------------------
KILN_ROOT="$WORK/store-gc"
check "prune: a store with the base" base 1 one
echo hello >"$C/a.txt"
chmod 644 "$C/a.txt"
entries() { find "$KILN_ROOT/.kiln/cache" -maxdepth 1 -name '*.json' | wc -l; }
cache_bytes() { # the bytes of the distinct blobs the entries name
        cat "$KILN_ROOT"/.kiln/cache/*.json 2>/dev/null | python3 -c '
import json, sys
seen = {}
for line in sys.stdin.read().replace("}{", "}\n{").splitlines():
    e = json.loads(line)
    if not e["empty_layer"]:
        seen[e["digest"]] = e["size"]
print(sum(seen.values()))'
}
check "  built" b
S1=$(stamp)
check "  the name removed" run 0 "$KILN" rmi kiln-test/cached:1
check "kiln prune" run 0 "$KILN" prune
check "  removes no cache entry" grep -q '^removed 0 cache entries, [1-9][0-9]* blobs' "$WORK/out"
check "  keeps them" grep -q '^kept 3 cache entries' "$WORK/out"
check "  fsck: the blobs the cache keeps are not orphans" run 0 "$KILN" store fsck
check "  a rebuild still hits" b
check "  3 hits" hits 3
check "  same stamp" [ "$(stamp)" = "$S1" ]

check "an entry whose blob is gone" run 0 "$KILN" rmi kiln-test/cached:1
entry=$(grep -l '"empty_layer":false' "$KILN_ROOT"/.kiln/cache/*.json | head -n 1)
rm -f "$KILN_ROOT/blobs/sha256/$(sed -n 's/.*"digest":"sha256:\([0-9a-f]*\)".*/\1/p' "$entry")"
check "  is dropped by kiln prune" run 0 "$KILN" prune
check "  1 entry removed" grep -q '^removed 1 cache entry,' "$WORK/out"
check "  the file is gone" [ ! -e "$entry" ]

check "kiln prune --cache" run 0 "$KILN" prune --cache
check "  removes every entry" [ "$(entries)" = 0 ]
check "  says so" grep -q '^removed 2 cache entries, [1-9]' "$WORK/out"
check "  and the steps' records (what misses are explained against)" \
        bash -c '[ -z "$(ls -A "$1/.kiln/cache/steps" 2>/dev/null)" ]' _ "$KILN_ROOT"
check "  and the contexts' file digests" bash -c '[ -z "$(ls -A "$1/.kiln/context" 2>/dev/null)" ]' _ "$KILN_ROOT"
check "  fsck is clean" run 0 "$KILN" store fsck
check "  a rebuild misses" b
check "  no hits" hits 0
check "  the RUN ran" [ "$(stamp)" != "$S1" ]

# --keep-storage: A and B built, A used again, then room for A's blobs only: B's entries go
check "--keep-storage: emptied" run 0 "$KILN" prune --cache
check "  build A" b --build-arg USED=A
S_A=$(stamp)
"$KILN" rmi kiln-test/cached:1 >/dev/null
A_BYTES=$(cache_bytes)
check "  build B" b --build-arg USED=B
S_B=$(stamp)
"$KILN" rmi kiln-test/cached:1 >/dev/null
check "  A again: all hits (its entries are the most recently used)" b --build-arg USED=A
check "  3 hits" hits 3
"$KILN" rmi kiln-test/cached:1 >/dev/null
check "  (B added bytes: $A_BYTES < $(cache_bytes))" [ "$A_BYTES" -lt "$(cache_bytes)" ]
check "kiln prune --cache --keep-storage $A_BYTES" run 0 "$KILN" prune --cache --keep-storage "$A_BYTES"
check "  removes B's two RUN entries" grep -q '^removed 2 cache entries' "$WORK/out"
check "  the rest fits" [ "$(cache_bytes)" -le "$A_BYTES" ]
check "  A still hits" b --build-arg USED=A
check "  3 hits" hits 3
check "  A's stamp" [ "$(stamp)" = "$S_A" ]
check "  B misses after the shared COPY" b --build-arg USED=B
check "  1 hit" hits 1
check "  B's RUN ran again" [ "$(stamp)" != "$S_B" ]
# B is named; A, unnamed, used last: B's entries are the older ones, yet free nothing
check "  A again, unnamed" bash -c '"$1" build --progress quiet --build-arg USED=A "$2" >"$3/a.id" 2>/dev/null &&
        "$1" rmi "$(cat "$3/a.id")" >/dev/null' _ "$KILN" "$C" "$WORK"
check "--keep-storage 0: what only the cache keeps goes" run 0 "$KILN" prune --cache --keep-storage 0
check "  A's two RUN entries" grep -q '^removed 2 cache entries' "$WORK/out"
check "  the named image's entries stay, though older" b --build-arg USED=B
check "  3 hits" hits 3
for size in 1kB 2KiB 1g 3MB 4096 10b; do
        check "--keep-storage $size is a size" run 0 "$KILN" prune --cache --keep-storage "$size"
done
for size in 12XB -1 1.5GB "" 1kk 99999999999999999999; do
        check "--keep-storage '$size': a usage error (2)" run 2 "$KILN" prune --cache --keep-storage "$size"
        check "  one line saying why" bash -c '[ "$(grep -c "^kiln: " "$1")" = 1 ] && grep -q "^kiln: invalid --keep-storage" "$1"' _ "$WORK/err"
done
check "--keep-storage without --cache: a usage error (2)" run 2 "$KILN" prune --keep-storage 1g

# --- --no-cache-filter: the named stages run, the others hit -------------------------------------------
M="$WORK/ctx-multi"
mkdir -p "$M"
cat >"$M/Dockerfile" <<'DF'
FROM kiln-test/base:1 AS first
RUN cat /proc/sys/kernel/random/uuid > /s1
FROM kiln-test/base:1 AS Second
COPY --from=first /s1 /s1
RUN cat /proc/sys/kernel/random/uuid > /s2
DF
mb() { # mb ARGS...: builds $M into $WORK/om
        rm -rf "$WORK/om"
        "$KILN" build --progress plain -o "type=local,dest=$WORK/om" "$@" "$M" >"$WORK/log" 2>&1 ||
                { sed 's/^/# /' "$WORK/log" | tail -n 20; return 1; }
}
check "multi-stage: built" mb
M1=$(cat "$WORK/om/s1") M2=$(cat "$WORK/om/s2")
check "--no-cache-filter second" mb --no-cache-filter second
check "  first's RUN hit" hits 1
check "  (its stamp)" [ "$(cat "$WORK/om/s1")" = "$M1" ]
check "  second's RUN ran" [ "$(cat "$WORK/om/s2")" != "$M2" ]
M2=$(cat "$WORK/om/s2")
check "--no-cache-filter 0 (an index)" mb --no-cache-filter 0
check "  first's RUN ran" [ "$(cat "$WORK/om/s1")" != "$M1" ]
check "--no-cache-filter first,second: nothing hits" mb --no-cache-filter first,Second
check "  no hits" hits 0
check "--no-cache-filter first --no-cache-filter 1: nothing hits" mb --no-cache-filter first --no-cache-filter 1
check "  no hits" hits 0
check "an unknown stage fails (1), as --target does" run 1 "$KILN" build --no-cache-filter nosuch "$M"
check "  one line naming it" bash -c '[ "$(wc -l <"$1")" = 1 ] && grep -q "stage .nosuch. could not be found" "$1"' _ "$WORK/err"
check "  (--target nosuch: 1 as well)" run 1 "$KILN" build --target nosuch "$M"

# --- four builds at once on one store ----------------------------------------------------------------
KILN_ROOT="$WORK/store-par"
check "at once: a store with the base" base 1 one
par() { # par I USED: builds $C into $WORK/par-I
        rm -rf "$WORK/par-$1"
        "$KILN" build --progress plain -t "kiln-test/par:$1" --build-arg USED="$2" \
                -o "type=local,dest=$WORK/par-$1" "$C" >"$WORK/par-$1.log" 2>&1
}
check "four builds at once (two alike, two with other build-args) all succeed" bash -c "
        $(declare -f par); $(declare -p C WORK KILN)
        par 1 same & p1=\$!; par 2 same & p2=\$!; par 3 other3 & p3=\$!; par 4 other4 & p4=\$!
        r=0; for p in \$p1 \$p2 \$p3 \$p4; do wait \$p || r=1; done; exit \$r" ||
        sed 's/^/# /' "$WORK"/par-*.log | tail -n 30
used() { # used I: the USED value of build I
        if [ "$1" -gt 2 ]; then echo "other$1"; else echo same; fi
}
files_ok() { [ "$(cat "$WORK/par-$1/used")" = "$(used "$1")" ] && [ "$(cat "$WORK/par-$1/copy")" = hello ]; }
for i in 1 2 3 4; do
        check "  build $i: its files" files_ok $i
done
for i in 1 2 3 4; do
        check "  build $i again: every step CACHED" b --build-arg USED="$(used $i)"
        check "  3 hits" hits 3
        if [ $i -gt 2 ]; then
                check "  its stamp" [ "$(stamp)" = "$(cat "$WORK/par-$i/stamp")" ]
        else # the two alike raced to write the same entries: either one's
                check "  the stamp of one of the two alike" \
                        grep -qxF "$(stamp)" "$WORK/par-1/stamp" "$WORK/par-2/stamp"
        fi
done
check "  no temporary files left in .kiln/cache" bash -c '[ -z "$(find "$1/.kiln/cache" -maxdepth 1 -name ".tmp-*")" ]' _ "$KILN_ROOT"

# two stores never share entries
KILN_ROOT="$WORK/store2"
check "a second store: the base imported" base 1 one
check "  built" b
check "  nothing CACHED from the other store" hits 0
check "  a second build there hits" b
check "  3 hits" hits 3
finish
