#!/usr/bin/env bash
# kiln build's explained cache misses (issue 7 §4): each miss says which input changed against
# the most recent build of the same step ("#N cache miss: RUN: build-arg VERSION changed (1.2 ->
# 1.3)"): a build-arg, an ENV, an edited command, the COPY's files, an earlier step, a new base
# image, an entry that is gone; hits, --no-cache and a first build say nothing in plain mode;
# --explain-cache says it in every mode, and also for a step never built before.
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
# dockerfile MODE CMD: the ENV's value and the last RUN's command
dockerfile() {
        cat >"$C/Dockerfile" <<DF
ARG BASE=kiln-test/base:1
FROM \$BASE
ARG VERSION
ENV MODE=$1
COPY a.txt /a.txt
RUN echo "\$VERSION \$MODE" > /v
RUN $2
DF
}
dockerfile dev 'cat /a.txt > /copy'
echo hello >"$C/a.txt"

# b [ARGS...]: builds the context (VERSION=$V); $WORK/log the progress
V=1.2
PROGRESS='plain'
b() {
        "$KILN" build --progress "$PROGRESS" -t kiln-test/explain:1 --build-arg "VERSION=$V" "$@" "$C" \
                >"$WORK/log" 2>&1 || { sed 's/^/# /' "$WORK/log" | tail -n 20; return 1; }
}
show() { grep '^#' "$WORK/log" | sed 's/^/#   /' | tail -n 20; }
why() { # why I: the reason printed for step I/4 (nothing when none)
        local num
        num=$(sed -n "s|^#\([0-9]*\) \[stage-0 $1/4\] .*|\1|p" "$WORK/log" | head -n 1)
        [ -n "$num" ] && sed -n "s/^#$num cache miss: //p" "$WORK/log"
}
says() { # says I TEXT: step I/4's miss says exactly TEXT
        local got
        got=$(why "$1")
        [ "$got" = "$2" ] && return 0
        echo "# step $1/4 said '$got', wanted '$2'"
        show
        return 1
}
silent() { # silent: no miss is explained
        ! grep -q 'cache miss' "$WORK/log" && return 0
        show
        return 1
}
hits() { [ "$(grep -c '^#[0-9]* CACHED' "$WORK/log")" = "$1" ] || { show; return 1; }; }

check "a cold build" b
check "  a step never built before says nothing in plain mode" silent
check "the same build: all hits" b
check "  3 CACHED" hits 3
check "  a hit prints no miss line" silent

V=1.3
check "VERSION=1.3: built" b
check "  the COPY hits" hits 1
check "  the RUN using it: build-arg VERSION changed (1.2 -> 1.3)" \
        says 3 "RUN: build-arg VERSION changed (1.2 -> 1.3)"
# every RUN of the stage has the ARGs in scope in its environment
check "  the RUN after it: the same" says 4 "RUN: build-arg VERSION changed (1.2 -> 1.3)"
after_header() {
        grep -A1 -E '^#[0-9]+ \[stage-0 3/4\] RUN' "$WORK/log" | tail -n 1 | grep -q 'cache miss: RUN: build-arg'
}
check "  the miss line comes right after the step's header" after_header
V=1.2
check "VERSION back to 1.2: all hits" b
check "  3 CACHED, nothing explained" hits 3

dockerfile prod 'cat /a.txt > /copy'
check "ENV MODE=prod: built" b
check "  the COPY: ENV MODE changed (dev -> prod)" says 2 "COPY a.txt /a.txt: ENV MODE changed (dev -> prod)"
check "  the RUN reading it: ENV MODE changed (dev -> prod)" says 3 "RUN: ENV MODE changed (dev -> prod)"
dockerfile dev 'cat /a.txt > /copy'
check "ENV back: all hits" b
check "  3 CACHED" hits 3

dockerfile dev 'cat /a.txt > /copy && echo edited'
check "the last RUN edited: built" b
check "  2 CACHED" hits 2
check "  RUN: command changed" says 4 "RUN: command changed"
dockerfile dev 'cat /a.txt > /copy'
check "the RUN as it was: all hits" b
check "  3 CACHED" hits 3

echo changed >"$C/a.txt"
check "a.txt's content changed: built" b
# today COPY is keyed by what it lands ("files"); keyed by its sources it names the file
got=$(why 2)
case "$got" in
"COPY a.txt /a.txt: files changed" | "COPY a.txt /a.txt: a.txt changed") ok "  the COPY: $got" ;;
*) not_ok "  the COPY: files changed (or a.txt changed), not '$got'"; show ;;
esac
check "  the RUNs after it: an earlier step changed" says 3 "an earlier step changed"
check "  ... both" says 4 "an earlier step changed"
chmod 755 "$C/a.txt"
check "chmod 755 a.txt: built" b
got=$(why 2)
case "$got" in
"COPY a.txt /a.txt: files changed" | "COPY a.txt /a.txt: a.txt mode changed (644 -> 755)") ok "  the COPY: $got" ;;
*) not_ok "  the COPY: files changed (or a.txt mode changed), not '$got'"; show ;;
esac
chmod 644 "$C/a.txt"
check "chmod 644 again: all hits" b
check "  3 CACHED" hits 3

check "another base image: built" base 2 two
check "  built on it" b --build-arg BASE=kiln-test/base:2
check "  nothing CACHED" hits 0
check "  the COPY: FROM: base image digest changed" says 2 "FROM: base image digest changed"
check "  the RUNs too: the base is what changed" says 3 "FROM: base image digest changed"
check "  ... both" says 4 "FROM: base image digest changed"
check "back on base 1: built" b
check "  3 CACHED" hits 3

check "--no-cache: built" b --no-cache
check "  nothing CACHED" hits 0
check "  nothing explained (every step runs anyway)" silent
check "  then all hits" b
check "  3 CACHED" hits 3

rm -f "$KILN_ROOT"/.kiln/cache/*.json
check "every cache entry removed: built" b
check "  the COPY: unchanged, its entry gone" says 2 "COPY a.txt /a.txt: unchanged, but its cache entry is gone"
check "  the RUN: unchanged, its entry gone" says 3 "RUN: unchanged, but its cache entry is gone"

# --explain-cache: in every mode; without it only plain explains
V=1.4
PROGRESS='auto'
check "--progress auto (not a terminal) without --explain-cache: built" b
check "  the miss is not explained" silent
V=1.5
check "--progress auto --explain-cache: built" b --explain-cache
check "  the miss is explained" says 3 "RUN: build-arg VERSION changed (1.4 -> 1.5)"
V=1.6
PROGRESS='tty'
check "--progress tty (not a terminal) without --explain-cache: built" b
check "  the miss is not explained" silent
V=1.7
check "--progress tty --explain-cache: built" b --explain-cache
check "  the miss is explained" says 3 "RUN: build-arg VERSION changed (1.6 -> 1.7)"
V=1.8
PROGRESS='quiet'
check "--progress quiet --explain-cache: built" b --explain-cache
check "  prints no progress at all" silent
PROGRESS='plain'

# two stages, the second on the first: a change in the first is its base's change
cat >"$C/two.Dockerfile" <<'DF'
FROM kiln-test/base:1 AS build
ARG V
RUN echo "$V" > /out
FROM build
RUN cat /out > /copy
DF
b2() { # b2 V [ARGS...]: builds two.Dockerfile with V
        local v=$1
        shift
        "$KILN" build --progress plain -f "$C/two.Dockerfile" --build-arg "V=$v" "$@" "$C" >"$WORK/log" 2>&1 ||
                { sed 's/^/# /' "$WORK/log" | tail -n 20; return 1; }
}
says_in() { # says_in STAGE I/N TEXT: that step's miss says exactly TEXT
        local num got
        num=$(sed -n "s|^#\([0-9]*\) \[$1 $2\] .*|\1|p" "$WORK/log" | head -n 1)
        got=$([ -n "$num" ] && sed -n "s/^#$num cache miss: //p" "$WORK/log")
        [ "$got" = "$3" ] && return 0
        echo "# [$1 $2] said '$got', wanted '$3'"
        show
        return 1
}
check "two stages: built" b2 1
check "  again: all hits" b2 1
check "  2 CACHED" hits 2
check "V changed: built" b2 2
check "  the first stage: build-arg V changed (1 -> 2)" says_in build 2/2 "RUN: build-arg V changed (1 -> 2)"
check "  the stage built on it: FROM: base stage changed" says_in stage-1 2/2 "FROM: base stage changed"
check "--no-cache-filter build: built" b2 2 --no-cache-filter build
check "  its stage runs anyway: nothing to explain there" says_in build 2/2 ""

# a Dockerfile on stdin is the same build from one run to the next
bs() { # bs V: two.Dockerfile on stdin
        "$KILN" build --progress plain --build-arg "V=$1" - <"$C/two.Dockerfile" >"$WORK/log" 2>&1 ||
                { sed 's/^/# /' "$WORK/log" | tail -n 20; return 1; }
}
check "a Dockerfile on stdin: built" bs 3
check "  again with V=4" bs 4
check "  the miss says why" says_in build 2/2 "RUN: build-arg V changed (3 -> 4)"

# a fresh store: no step was built before
KILN_ROOT="$WORK/store2"
check "a second store: the base imported" base 1 one
check "  built with --explain-cache" b --explain-cache
check "  the COPY: no earlier build of this step" says 2 "no earlier build of this step"
check "  the last RUN too" says 4 "no earlier build of this step"
finish
