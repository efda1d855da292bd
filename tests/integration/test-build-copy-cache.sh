#!/usr/bin/env bash
# kiln build's cache for COPY and ADD (issue 7): keyed by their sources and looked up before
# anything is copied. Touching a file is a hit and nothing is copied; one changed byte, a chmod,
# a file added to or removed from a copied directory miss there and after; a host chmod of bits
# --chmod sets and a .dockerignored file do not count; COPY --from a cached stage hits. A context
# of many files: a no-op rebuild opens none of them (strace), with its wall time.
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

B="$WORK/base"
busybox_tree "$B"
check "the base image is imported" run 0 "$KILN" import -t kiln-test/base:1 "$B"

C="$WORK/ctx"
mkdir -p "$C/dir/sub"
# 6 steps: the build stage's three COPYs and RUN, the final stage's two COPY --from
cat >"$C/Dockerfile" <<'DF'
FROM kiln-test/base:1 AS build
COPY a.txt /a.txt
COPY dir/ /dir/
COPY --chmod=644 m.txt /m.txt
RUN cat /proc/sys/kernel/random/uuid > /stamp
FROM kiln-test/base:1
COPY --from=build /stamp /m.txt /a.txt /
COPY --from=build /dir /dir
DF
echo hello >"$C/a.txt"
echo one >"$C/dir/one.txt"
echo two >"$C/dir/sub/two.txt"
ln -s one.txt "$C/dir/link"
echo mode >"$C/m.txt"
echo ignored >"$C/ignored.txt"
echo log >"$C/dir/build.log"
printf 'ignored.txt\ndir/*.log\n' >"$C/.dockerignore"

# b [ARGS...]: builds the context; $WORK/log the progress, $WORK/o the files
b() {
        rm -rf "$WORK/o"
        "$KILN" build --progress plain -t kiln-test/copy:1 -o "type=local,dest=$WORK/o" "$@" "$C" \
                >"$WORK/log" 2>&1 || { sed 's/^/# /' "$WORK/log" | tail -n 20; return 1; }
}
hits() { # hits N: exactly N steps were CACHED
        local got
        got=$(grep -c '^#[0-9]* CACHED' "$WORK/log")
        [ "$got" = "$1" ] && return 0
        echo "# $got steps CACHED, wanted $1"
        grep '^#' "$WORK/log" | sed 's/^/# /' | tail -n 30
        return 1
}
stamp() { cat "$WORK/o/stamp"; }
# traced CONTEXT: builds CONTEXT under strace, its opens in $WORK/trace (LeakSanitizer, in a
# sanitizer build, cannot work under ptrace)
traced() {
        ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" \
                strace -f -qq -e trace=openat,openat2 -o "$WORK/trace" "$KILN" build --progress plain -t kiln-test/traced:1 "$1" >"$WORK/log" 2>&1 ||
                { sed 's/^/# /' "$WORK/log" | tail -n 20; return 1; }
}
# copies [NAME]: how many times the last traced build created NAME (a copy writes it)
copies() { grep -c "\"${1:-a.txt}\", O_WRONLY|O_CREAT" "$WORK/trace"; }

check "a cold build" b
S1=$(stamp)
check "the same build again" b
check "  all 6 steps CACHED" hits 6
check "  the RUN did not run" [ "$(stamp)" = "$S1" ]
check "  COPY --from a cached stage landed" [ "$(cat "$WORK/o/dir/sub/two.txt")" = two ]
check "  the .dockerignored file is not copied" [ ! -e "$WORK/o/dir/build.log" ]

touch -d '2001-01-01' "$C/a.txt" "$C/dir/one.txt"
if need strace command -v strace; then
        check "touch a.txt and dir/one.txt: built (traced, no output)" traced "$C"
        check "  all 6 steps CACHED" hits 6
        check "  a.txt was read (its stat changed) ..." [ "$(grep -c '"a.txt", O_RDONLY' "$WORK/trace")" -ge 1 ]
        check "  ... but not copied" [ "$(copies a.txt)" = 0 ]
        check "  nor was one.txt" [ "$(copies one.txt)" = 0 ]
fi
check "  built with output" b
check "  all hits, the old stamp" [ "$(stamp)" = "$S1" ]

printf 'hellO\n' >"$C/dir/one.txt"
check "one byte of dir/one.txt changed: built" b
check "  COPY a.txt hits, COPY dir/ and everything after it miss" hits 1
check "  the new content landed" [ "$(cat "$WORK/o/dir/one.txt")" = hellO ]
check "  the RUN ran" [ "$(stamp)" != "$S1" ]
echo one >"$C/dir/one.txt"
check "changed back: built" b
check "  all hits (the first build's entries)" hits 6
check "  the first build's stamp" [ "$(stamp)" = "$S1" ]

chmod 600 "$C/dir/sub/two.txt"
check "chmod 600 dir/sub/two.txt: built" b
check "  a miss from COPY dir/ on" hits 1
check "  the mode landed" [ "$(stat -c %a "$WORK/o/dir/sub/two.txt")" = 600 ]
chmod 644 "$C/dir/sub/two.txt"
check "chmod back: all hits" b
check "  6 hits" hits 6

chmod 600 "$C/m.txt"
check "chmod 600 m.txt, copied with --chmod=644: built" b
check "  all hits (the mode it lands with is the same)" hits 6
check "  0644 in the image" [ "$(stat -c %a "$WORK/o/m.txt")" = 644 ]
chmod 644 "$C/m.txt"

echo three >"$C/dir/sub/three.txt"
check "a file added to dir/: built" b
check "  a miss from COPY dir/ on" hits 1
check "  it landed (through COPY --from too)" [ "$(cat "$WORK/o/dir/sub/three.txt")" = three ]
rm "$C/dir/sub/three.txt"
check "removed again: all hits" b
check "  6 hits" hits 6
rm "$C/dir/link"
check "a symlink removed from dir/: built" b
check "  a miss from COPY dir/ on" hits 1
ln -s two.txt "$C/dir/link"
check "  put back pointing elsewhere: another miss" b
check "  1 hit" hits 1
rm "$C/dir/link" && ln -s one.txt "$C/dir/link"
check "  and as it was: all hits" b
check "  6 hits" hits 6

echo changed >"$C/ignored.txt"
echo changed >"$C/dir/build.log"
check ".dockerignored files changed: built" b
check "  all hits" hits 6

sed -i 's|^COPY a.txt /a.txt|COPY --chown=0:0 a.txt /a.txt|' "$C/Dockerfile"
check "--chown=0:0 added (the same owner, another instruction): built" b
check "  everything misses" hits 0
sed -i 's|^COPY --chown=0:0 a.txt /a.txt|COPY a.txt /a.txt|' "$C/Dockerfile"

# a heredoc source is keyed by its content
H="$WORK/hctx"
mkdir -p "$H"
printf 'FROM kiln-test/base:1\nCOPY <<EOF /h.txt\nfirst\nEOF\nRUN cat /proc/sys/kernel/random/uuid > /stamp\n' >"$H/Dockerfile"
hb() { "$KILN" build --progress plain -t kiln-test/here:1 "$H" >"$WORK/log" 2>&1 || { tail -n 20 "$WORK/log" | sed 's/^/# /'; return 1; }; }
check "COPY <<EOF: built" hb
check "  again: both steps hit" hb
check "  2 hits" hits 2
sed -i 's/^first$/second/' "$H/Dockerfile"
check "  its content changed: built" hb
check "  both miss" hits 0

# What is selected: a wildcard's matches only, a followed symlink's target, hardlinks; an image
E="$WORK/sel"
mkdir -p "$E/src/a/b" "$E/other"
echo 1 >"$E/src/a/b/x.go"
echo 2 >"$E/src/a/y.go"
ln -s src/a/b "$E/linkdir"
echo h >"$E/other/h1"
ln "$E/other/h1" "$E/other/h2"
# 4 steps
cat >"$E/Dockerfile" <<'DF'
FROM kiln-test/base:1
COPY src/a/*.go /w/
COPY linkdir /ld/
COPY other /other/
COPY --from=kiln-test/base:1 /etc/passwd /passwd
DF
eb() { "$KILN" build --progress plain -t kiln-test/sel:1 "$E" >"$WORK/log" 2>&1 || { tail -n 20 "$WORK/log" | sed 's/^/# /'; return 1; }; }
check "selection: built" eb
check "  again: all hit" eb
check "  4 hits" hits 4
echo 3 >"$E/src/a/b/x.go"
check "a file the wildcard does not match changed (x.go is in b/): built" eb
check "  COPY src/a/*.go hits, COPY linkdir (to src/a/b) misses" hits 1
rm "$E/linkdir" && ln -s src/a "$E/linkdir"
check "the followed symlink retargeted: built" eb
check "  a miss there" hits 1
rm "$E/linkdir" && ln -s src/a/b "$E/linkdir"
echo 1 >"$E/src/a/b/x.go"
check "  put back: all hit" eb
check "  4 hits" hits 4
rm "$E/other/h2" && cp "$E/other/h1" "$E/other/h2"
check "a hardlink made a copy (the same content): built" eb
check "  a miss there (the layer has no link now)" hits 2
echo extra >"$B/etc/extra"
check "COPY --from an image that changed: built" run 0 "$KILN" import -t kiln-test/base:1 "$B"
sed -i 's|^FROM kiln-test/base:1$|FROM scratch|' "$E/Dockerfile"
check "  (on scratch)" eb
check "  the first three miss (another base), the image's COPY too" hits 0
check "  again: all hit" eb
check "  4 hits" hits 4
rm "$B/etc/extra"
check "  re-imported without the file (another layer: /etc's mtime changed): built" \
        run 0 "$KILN" import -t kiln-test/base:1 "$B"
check "  the COPY --from it misses" eb
check "  3 hits" hits 3

# A context spooled from stdin lives for one build: no record of its digests is kept
records() { find "$KILN_ROOT/.kiln/context" -name '*.json' | wc -l; }
# past the racily-clean margin since the context last changed, a build records its digests
sleep 4
check "the directory context built again (its digests recorded)" b
before=$(records)
check "a context as a tar on stdin: built" bash -c 'tar -C "$1" -c . | "$2" build --progress plain -t kiln-test/stdin:1 - >"$3" 2>&1' \
        _ "$C" "$KILN" "$WORK/log"
check "  no record kept for it" [ "$(records)" = "$before" ]
check "  (the directory's record is there)" [ "$before" -ge 1 ]

# A context of many files: a no-op rebuild opens none of them.
L="$WORK/big"
mkdir -p "$L/files"
printf 'FROM kiln-test/base:1\nCOPY files/ /files/\n' >"$L/Dockerfile"
(cd "$L/files" && for d in $(seq -w 0 79); do
        mkdir "d$d"
        for f in $(seq -w 0 99); do echo "$d/$f" >"d$d/f$f.dat"; done
done)
echo "# $(find "$L/files" -type f | wc -l) files in the big context"
# files changed less than 3 seconds before a build keys them (context-hash.c's margin for racily
# clean files, and the clock's tick) are read again next time: past it, the cold build records them
sleep 4
lb() { "$KILN" build --progress plain -t kiln-test/big:1 "$L" >"$WORK/log" 2>&1 || { tail -n 20 "$WORK/log" | sed 's/^/# /'; return 1; }; }
t0=$(date +%s%N)
check "the big context: a cold build" lb
t1=$(date +%s%N)
echo "# cold build: $(((t1 - t0) / 1000000)) ms"
t0=$(date +%s%N)
check "  a no-op rebuild" lb
t1=$(date +%s%N)
echo "# no-op rebuild: $(((t1 - t0) / 1000000)) ms"
check "  1 hit" hits 1
if need strace command -v strace; then
        check "  traced: built" traced "$L"
        check "  a hit" hits 1
        check "  the trace saw the directories listed" grep -q '"d79"' "$WORK/trace"
        opened=$(grep -c '"f[0-9]*\.dat"' "$WORK/trace")
        check "  no context file was opened ($opened)" [ "$opened" = 0 ]
fi
echo changed >"$L/files/d42/f42.dat"
check "  one file changed: built" lb
check "  a miss" hits 0
finish
