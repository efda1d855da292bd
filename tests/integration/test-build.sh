#!/usr/bin/env bash
# kiln build end to end: a busybox base image made locally, Dockerfiles exercising every
# instruction, checked by unpacking the image with umoci and reading its config with skopeo;
# multi-stage builds, stages in parallel, failures that leave the store as it was, escapes that
# must not reach a sentinel outside the roots, reproducible digests, --push to a real registry.
set -u

KILN=${KILN:?KILN must point at the kiln binary}
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d)
# shellcheck source=lib/registry.sh
. "$HERE/lib/registry.sh"
# shellcheck source=lib/tap.sh
. "$HERE/lib/tap.sh"
# A rootless build's files may belong to subordinate ids: removed from inside the namespace.
trap 'registry_cleanup; "$KILN" unshare -- rm -rf "$WORK" 2>/dev/null; rm -rf "$WORK"' EXIT
export KILN_ROOT="$WORK/store" REGISTRY_AUTH_FILE="$WORK/auth.json" DOCKER_CONFIG="$WORK/docker"
export XDG_CONFIG_HOME="$WORK/xdg"
unset SOURCE_DATE_EPOCH http_proxy https_proxy HTTP_PROXY HTTPS_PROXY

sk() { skopeo --insecure-policy "$@"; }
has() { grep -q -- "$1" "$2"; }
PY=$(_registry_python 2>/dev/null || echo python3)

have=1
need skopeo command -v skopeo || have=0
need umoci command -v umoci || have=0
need busybox-static _registry_is_static /bin/busybox || have=0
[ "$have" = 1 ] || finish

# Who runs this: root, or a user with /etc/subuid ranges (all ids in RUN), or one without (only
# id 0 in RUN: USER and --chown to other ids fail, and say so). test-build-rootless runs this
# file as an unprivileged user both ways.
if [ "$(id -u)" = 0 ]; then
        MODE=root
elif grep -q -e "^$(id -un):" -e "^$(id -u):" /etc/subuid 2>/dev/null && command -v newuidmap >/dev/null; then
        MODE=ranges
else
        MODE=single
fi
echo "# running as $(id -un) ($(id -u)): $MODE"
ids() { [ "$MODE" != single ]; } # other ids than 0 exist in RUN

# --- a base image: busybox with its applets, a passwd with root and app (1000) -------------------
B="$WORK/base"
mkdir -p "$B/bin" "$B/etc" "$B/tmp" "$B/root" "$B/home/app" "$B/var/lib/gone"
cp /bin/busybox "$B/bin/busybox"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$B/bin/$a"; done
printf 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n' >"$B/etc/passwd"
printf 'root:x:0:\napp:x:1000:\nstaff:x:50:app\n' >"$B/etc/group"
echo "from the base" >"$B/etc/motd"
echo "delete me" >"$B/var/lib/gone/file"
chmod 1777 "$B/tmp"
if [ "$MODE" = root ]; then
        chown -R 1000:1000 "$B/home/app"
        check "the base image is imported" run 0 "$KILN" import -t kiln-test/busybox:1 "$B"
else
        # Rootless, the caller's files are root's in the image; app's home is chowned in RUN.
        check "the base image is imported" run 0 "$KILN" import -t kiln-test/busybox:0 "$B"
        mkdir -p "$WORK/ctx-base"
        if ids; then
                printf 'FROM kiln-test/busybox:0\nRUN chown -R 1000:1000 /home/app\n' >"$WORK/ctx-base/Dockerfile"
        else
                printf 'FROM kiln-test/busybox:0\n' >"$WORK/ctx-base/Dockerfile"
        fi
        check "  and prepared with kiln build ($MODE)" run 0 "$KILN" build -t kiln-test/busybox:1 "$WORK/ctx-base"
fi

# build NAME DOCKERFILE [kiln build args...]: the context is $WORK/ctx-NAME (made if missing)
build() {
        local name=$1 df=$2
        shift 2
        mkdir -p "$WORK/ctx-$name"
        printf '%s\n' "$df" >"$WORK/ctx-$name/Dockerfile"
        "$KILN" build --progress plain "$@" "$WORK/ctx-$name" >"$WORK/out" 2>"$WORK/err"
        BUILD_RC=$?
        return $BUILD_RC
}
built() { # built: the last build succeeded (else show why)
        local rc=$BUILD_RC
        if [ $rc != 0 ]; then
                echo "# kiln build exited $rc"
                sed 's/^/# /' "$WORK/err" | tail -n 20
                return 1
        fi
}
unpack() { # unpack NAME: the image unpacked with umoci into $WORK/u-NAME
        local rootless=()
        [ "$MODE" = root ] || rootless=(--rootless)
        rm -rf "$WORK/u-$1"
        umoci unpack "${rootless[@]}" --image "$KILN_ROOT:$1" "$WORK/u-$1" >/dev/null 2>"$WORK/umoci.err" ||
                { sed 's/^/# /' "$WORK/umoci.err"; return 1; }
}
owner() { # owner NAME PATH: uid:gid of PATH as the image's layers record it (the last one wins)
        "$PY" - "$KILN_ROOT" "$1" "$2" <<'PYEOF'
import json, os, sys, tarfile
root, name, path = sys.argv[1], sys.argv[2], sys.argv[3].lstrip("/")
def blob(d):
    return os.path.join(root, "blobs", "sha256", d.split(":")[1])
index = json.load(open(os.path.join(root, "index.json")))
m = [x for x in index["manifests"] if x.get("annotations", {}).get("org.opencontainers.image.ref.name") == name][0]
found = None
for layer in json.load(open(blob(m["digest"])))["layers"]:
    with tarfile.open(blob(layer["digest"])) as t:
        for e in t:
            if e.name.rstrip("/") == path:
                found = "%d:%d" % (e.uid, e.gid)
print(found)
PYEOF
}
config() { # config NAME: skopeo's view of the image config, to $WORK/config.json
        sk inspect --raw --config "oci:$KILN_ROOT:$1" >"$WORK/config.json" 2>"$WORK/skopeo.err"
}
cfg() { # cfg PYTHON-EXPR: evaluates against c = the config JSON; true when truthy
        "$PY" -c 'import json,sys; c=json.load(open(sys.argv[1])); sys.exit(0 if eval(sys.argv[2]) else 1)' \
                "$WORK/config.json" "$1"
}

# --- RUN and the basics ---------------------------------------------------------------------------
build basic 'FROM kiln-test/busybox:1
RUN echo "hello from RUN" > /hello && echo printed-by-run
RUN rm -rf /var/lib/gone && mkdir -p /data && echo x > /data/x' -t basic
check "kiln build of RUN steps" built
digest=$(cat "$WORK/out")
check "prints the manifest digest on stdout" [ "${#digest}" = 71 ]
check "progress: #N [stage i/n] INSTRUCTION" has '^#[0-9]* \[stage-0 2/3\] RUN echo' "$WORK/err"
check "progress: the RUN output prefixed with its step" has '^#[0-9]* [0-9.]* printed-by-run$' "$WORK/err"
check "progress: DONE with the time" has '^#[0-9]* DONE [0-9.]*s$' "$WORK/err"
check "the image is named" bash -c '"$1" images | grep -q "^basic "' _ "$KILN"
check "skopeo reads it, same digest" [ "$(sk inspect "oci:$KILN_ROOT:basic" 2>/dev/null | sed -n 's/^    "Digest": "\(.*\)",$/\1/p')" = "$digest" ]
check "umoci unpacks it" unpack basic
check "  RUN's file is there" [ "$(cat "$WORK/u-basic/rootfs/hello" 2>/dev/null)" = "hello from RUN" ]
check "  the base's files too" [ "$(cat "$WORK/u-basic/rootfs/etc/motd" 2>/dev/null)" = "from the base" ]
check "  a directory RUN removed is gone (whiteout)" [ ! -e "$WORK/u-basic/rootfs/var/lib/gone" ]
check "  RUN's mounts left no trace (no /proc, /dev, /etc/hosts stubs)" \
        bash -c '[ ! -e "$1/proc" ] && [ ! -e "$1/dev" ] && [ ! -e "$1/etc/hosts" ] && [ ! -e "$1/etc/resolv.conf" ]' _ "$WORK/u-basic/rootfs"
config basic
base_layers=$(sk inspect --raw --config "oci:$KILN_ROOT:kiln-test/busybox:1" 2>/dev/null |
        "$PY" -c 'import json,sys; print(len(json.load(sys.stdin)["rootfs"]["diff_ids"]))')
check "  the base's layers and two RUNs" cfg "len(c['rootfs']['diff_ids']) == $base_layers + 2"
check "  history says RUN, without a layer for nothing" cfg 'c["history"][-1]["created_by"].startswith("RUN /bin/sh -c rm")'
check "  a default PATH" cfg 'any(e.startswith("PATH=/usr/local/sbin:") for e in c["config"]["Env"])'
check "the store is clean" run 0 "$KILN" store fsck

# --- the metadata instructions ----------------------------------------------------------------------
build meta 'FROM kiln-test/busybox:1
ARG GREETING=hi
ENV APP_HOME=/srv/app GREET=${GREETING}
LABEL org.example.team="builders" version=1
EXPOSE 80 443/tcp 53/udp 7000-7002
WORKDIR $APP_HOME
WORKDIR sub
USER app:staff
VOLUME /data /cache
STOPSIGNAL SIGINT
HEALTHCHECK --interval=30s --timeout=3s --retries=2 CMD wget -q http://localhost/ || exit 1
SHELL ["/bin/sh", "-ec"]
ONBUILD RUN echo onbuild
MAINTAINER someone@example.com
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["echo $GREET"]' -t meta
check "kiln build of every metadata instruction" built
config meta
check "  Env has APP_HOME and GREET (the ARG's value), and PATH" \
        cfg '"APP_HOME=/srv/app" in c["config"]["Env"] and "GREET=hi" in c["config"]["Env"]'
check "  the ARG itself is not in Env" cfg 'not any(e.startswith("GREETING=") for e in c["config"]["Env"])'
check "  Labels" cfg 'c["config"]["Labels"] == {"org.example.team": "builders", "version": "1"}'
check "  ExposedPorts (a range is each port)" \
        cfg 'sorted(c["config"]["ExposedPorts"]) == ["443/tcp", "53/udp", "7000/tcp", "7001/tcp", "7002/tcp", "80/tcp"]'
check "  WorkingDir (relative to the previous)" cfg 'c["config"]["WorkingDir"] == "/srv/app/sub"'
check "  User" cfg 'c["config"]["User"] == "app:staff"'
check "  Volumes" cfg 'sorted(c["config"]["Volumes"]) == ["/cache", "/data"]'
check "  StopSignal" cfg 'c["config"]["StopSignal"] == "SIGINT"'
check "  Healthcheck" cfg 'c["config"]["Healthcheck"] == {"Test": ["CMD-SHELL", "wget -q http://localhost/ || exit 1"], "Interval": 30000000000, "Timeout": 3000000000, "Retries": 2}'
check "  Shell" cfg 'c["config"]["Shell"] == ["/bin/sh", "-ec"]'
check "  OnBuild" cfg 'c["config"]["OnBuild"] == ["RUN echo onbuild"]'
check "  Entrypoint and Cmd" cfg 'c["config"]["Entrypoint"] == ["/bin/sh", "-c"] and c["config"]["Cmd"] == ["echo $GREET"]'
check "  author (MAINTAINER)" cfg 'c.get("author") == "someone@example.com"'
check "  metadata history entries have no layer" cfg 'all(h.get("empty_layer") for h in c["history"] if h["created_by"].startswith(("ENV", "LABEL", "USER")))'
check "umoci unpacks it" unpack meta
check "  WORKDIR made the directory" [ -d "$WORK/u-meta/rootfs/srv/app/sub" ]

build shellform 'FROM kiln-test/busybox:1
CMD echo shell form
ENTRYPOINT exec top' -t shellform
check "CMD and ENTRYPOINT in shell form" built
config shellform
check "  use /bin/sh -c" cfg 'c["config"]["Entrypoint"] == ["/bin/sh", "-c", "exec top"]'
check "  and ENTRYPOINT after CMD keeps this stage's CMD" cfg 'c["config"]["Cmd"] == ["/bin/sh", "-c", "echo shell form"]'
build resetcmd 'FROM shellform
ENTRYPOINT ["/bin/true"]' -t resetcmd
check "ENTRYPOINT resets a Cmd inherited from the base" built
config resetcmd
check "  (Cmd is gone)" cfg '"Cmd" not in c["config"] or c["config"]["Cmd"] is None'

# --- RUN's environment ----------------------------------------------------------------------------
build env 'FROM kiln-test/busybox:1
ARG VERSION=1.2
ENV FROM_ENV=yes
WORKDIR /work
RUN echo "$VERSION $FROM_ENV $(pwd) $(id -u) $(hostname)" > /run.txt' -t env --build-arg VERSION=2.0
check "RUN sees ARG (overridden by --build-arg), ENV, WORKDIR, root, a hostname" built
unpack env
check "  ($(cat "$WORK/u-env/rootfs/run.txt" 2>/dev/null))" \
        bash -c '[ "$(cut -d" " -f1-4 "$1")" = "2.0 yes /work 0" ]' _ "$WORK/u-env/rootfs/run.txt"
check "  the file RUN made as root is root's" [ "$(owner env /run.txt)" = 0:0 ]
config env
check "  the ARG value is not in the history" cfg 'not any("2.0" in h["created_by"] for h in c["history"])'
build user 'FROM kiln-test/busybox:1
USER app
RUN id -u > /tmp/uid && id -G > /tmp/groups && echo ok > /home/app/mine
USER 1000:50
RUN id -g > /tmp/gid
WORKDIR /made/by-user
USER 1000
WORKDIR /made/by-uid' -t user
if ids; then
        check "USER switches RUN's user" built
        unpack user
        check "  USER app runs as 1000" [ "$(cat "$WORK/u-user/rootfs/tmp/uid" 2>/dev/null)" = 1000 ]
        check "  with its supplementary group staff (50)" bash -c 'grep -qw 50 "$1"' _ "$WORK/u-user/rootfs/tmp/groups"
        check "  USER 1000:50 runs with gid 50" [ "$(cat "$WORK/u-user/rootfs/tmp/gid" 2>/dev/null)" = 50 ]
        check "  a file app made is owned by 1000 in the layer" [ "$(owner user /home/app/mine)" = 1000:1000 ]
        check "  WORKDIR makes its directories as USER (BuildKit)" [ "$(owner user /made/by-user)" = 1000:50 ]
        check "  the parents it makes too" [ "$(owner user /made)" = 1000:50 ]
        check "  a bare numeric USER is also the group" [ "$(owner user /made/by-uid)" = 1000:1000 ]
else
        check "USER app without subordinate ids fails (1)" [ "$BUILD_RC" = 1 ]
        check "  saying the id is not mapped" has "not mapped" "$WORK/err"
        check "  and kiln warned at the start" has "only uid and gid 0 exist in RUN" "$WORK/err"
fi

# --- RUN with heredocs (BuildKit's dispatchRun) ---------------------------------------------------
build heredocs 'FROM kiln-test/busybox:1
ENV WHO=world
RUN cat <<EOF > /greeting
hello $WHO
EOF
RUN <<EOT sh
echo second > /second
EOT
RUN cat > /a <<A && cat > /b <<"B"
one $WHO
A
two $WHO
B
RUN <<EOF
#!/bin/sh -e
echo "shebang $0" > /shebang
EOF
RUN <<-EOF
	echo tabs > /tabs
	EOF' -t heredocs
check "RUN with heredocs after a command, two on a line, a shebang, <<-" built
unpack heredocs
hd() { cat "$WORK/u-heredocs/rootfs/$1" 2>&1; }
check "  cmd <<EOF > file: the shell expands the body" [ "$(hd greeting)" = "hello world" ]
check "  <<EOT sh: the body is the command's stdin" [ "$(hd second)" = second ]
check "  two heredocs, the quoted one not expanded" bash -c '[ "$1" = "one world" ] && [ "$2" = "two \$WHO" ]' _ "$(hd a)" "$(hd b)"
check "  a shebang body runs with its interpreter" bash -c '[ "${1#shebang }" != "$1" ]' _ "$(hd shebang)"
check "  <<- strips leading tabs" [ "$(hd tabs)" = tabs ]

# --- COPY and ADD --------------------------------------------------------------------------------
C="$WORK/ctx-copy"
mkdir -p "$C/src/sub" "$C/secret"
echo one >"$C/src/one.txt"
echo two >"$C/src/two.txt"
echo deep >"$C/src/sub/deep.md"
echo key >"$C/secret/key"
echo ignored >"$C/src/ignored.log"
printf 'secret\n*.log\n**/*.log\n' >"$C/.dockerignore"
chmod 640 "$C/src/one.txt"
mkdir -p "$WORK/arch/pkg" && echo packed >"$WORK/arch/pkg/inside"
tar -C "$WORK/arch" -czf "$C/pkg.tgz" pkg
build copy 'FROM kiln-test/busybox:1
COPY src/one.txt /one
COPY src/*.txt /txt/
COPY src /tree
COPY --chmod=0600 src/two.txt /owned
WORKDIR /rel
COPY src/one.txt here.txt
ADD pkg.tgz /extracted/
COPY <<EOF /inline.txt
inline content
EOF' -t copy
check "COPY and ADD from the context" built
unpack copy
R="$WORK/u-copy/rootfs"
check "  a file to a file" [ "$(cat "$R/one" 2>/dev/null)" = one ]
check "  keeps its mode (640)" [ "$(stat -c %a "$R/one" 2>/dev/null)" = 640 ]
check "  wildcards into a directory" bash -c '[ -f "$1/txt/one.txt" ] && [ -f "$1/txt/two.txt" ]' _ "$R"
check "  a directory copies its contents" [ "$(cat "$R/tree/sub/deep.md" 2>/dev/null)" = deep ]
check "  .dockerignore keeps *.log out" bash -c '[ ! -e "$1/tree/ignored.log" ]' _ "$R"
check "  --chmod=0600" [ "$(stat -c %a "$R/owned" 2>/dev/null)" = 600 ]
check "  files from the context are root's" [ "$(owner copy /one)" = 0:0 ]
if ids; then
        mkdir -p "$WORK/ctx-chown" && echo two >"$WORK/ctx-chown/two.txt"
        build chown 'FROM kiln-test/busybox:1
COPY --chown=app:staff two.txt /owned
COPY --chown=1001:1002 two.txt /numeric' -t chown
        check "COPY --chown" built
        check "  --chown=app:staff (names from the image)" [ "$(owner chown /owned)" = 1000:50 ]
        check "  --chown=1001:1002" [ "$(owner chown /numeric)" = 1001:1002 ]
fi
check "  relative to WORKDIR" [ "$(cat "$R/rel/here.txt" 2>/dev/null)" = one ]
check "  ADD extracts a local tar.gz" [ "$(cat "$R/extracted/pkg/inside" 2>/dev/null)" = packed ]
check "  a heredoc source" [ "$(cat "$R/inline.txt" 2>/dev/null)" = "inline content" ]
mkdir -p "$WORK/ctx-copyignored/secret" && echo key >"$WORK/ctx-copyignored/secret/key"
printf 'secret\n' >"$WORK/ctx-copyignored/.dockerignore"
build copyignored 'FROM kiln-test/busybox:1
COPY secret/key /key' -t copyignored
check "COPY of a .dockerignored file fails (1)" [ $? = 1 ]
check "  naming the source and the line" has "Dockerfile:2" "$WORK/err"

# --- non-ASCII names: bytes as the filesystem has them (ca-certificates has such links) ----------
mkdir -p "$WORK/ctx-utf8"
echo ctx >"$WORK/ctx-utf8/$(printf 'caf\xc3\xa9.txt')"
build utf8 "FROM kiln-test/busybox:1
COPY . /ctx/
RUN ln -s 'NetLock_Arany_=Class_Gold=_Főtanúsítvány.pem' /link && echo run > /ünïcødé" -t utf8
check "UTF-8 file names and link targets, from COPY and RUN" built
unpack utf8
check "  a context file named café.txt" [ "$(cat "$WORK/u-utf8/rootfs/ctx/$(printf 'caf\xc3\xa9.txt')" 2>&1)" = ctx ]
check "  a RUN-made file and a link with a non-ASCII target" \
        bash -c '[ "$(cat "$1/ünïcødé")" = run ] && [ "$(readlink "$1/link")" = "NetLock_Arany_=Class_Gold=_Főtanúsítvány.pem" ]' \
        _ "$WORK/u-utf8/rootfs"

# --- multi-stage ------------------------------------------------------------------------------------
build multi 'FROM kiln-test/busybox:1 AS builder
RUN echo built > /artifact
FROM kiln-test/busybox:1 AS broken
RUN exit 7
FROM scratch
COPY --from=builder /artifact /from-name
COPY --from=0 /artifact /from-index
COPY --from=kiln-test/busybox:1 /etc/motd /from-image' -t multi
check "COPY --from a stage by name, by index, and an image; a stage not needed is skipped" built
unpack multi
check "  from a name" [ "$(cat "$WORK/u-multi/rootfs/from-name" 2>/dev/null)" = built ]
check "  from an index" [ "$(cat "$WORK/u-multi/rootfs/from-index" 2>/dev/null)" = built ]
check "  from an image" [ "$(cat "$WORK/u-multi/rootfs/from-image" 2>/dev/null)" = "from the base" ]
check "  the broken stage never ran" bash -c '! grep -q "exit 7" "$1"' _ "$WORK/err"
config multi
check "  FROM scratch: only the COPY layers" cfg 'len(c["rootfs"]["diff_ids"]) == 3'
build target 'FROM kiln-test/busybox:1 AS good
RUN echo good > /good
FROM kiln-test/busybox:1 AS bad
RUN exit 9' -t target --target good
check "--target builds what it needs and skips a stage that would fail" built
build parallel 'FROM kiln-test/busybox:1 AS a
RUN sleep 1 && echo a > /a
FROM kiln-test/busybox:1 AS b
RUN sleep 1 && echo b > /b
FROM scratch
COPY --from=a /a /a
COPY --from=b /b /b' -t parallel
check "two independent stages" built
check "  run at the same time (both RUNs start before either is done)" \
        "$PY" -c '
import re, sys
lines = open(sys.argv[1]).read().splitlines()
start = {m.group(2): i for i, l in enumerate(lines) for m in [re.match(r"#(\d+) \[(a|b) 2/2\] RUN", l)] if m}
num = {m.group(2): m.group(1) for l in lines for m in [re.match(r"#(\d+) \[(a|b) 2/2\] RUN", l)] if m}
done = {k: i for k, n in num.items() for i, l in enumerate(lines) if l.startswith("#%s DONE" % n)}
sys.exit(0 if len(start) == 2 and len(done) == 2 and max(start.values()) < min(done.values()) else 1)' "$WORK/err"

# --- failures leave the store as it was -------------------------------------------------------------
"$KILN" images --no-trunc >"$WORK/images.before"
build failrun 'FROM kiln-test/busybox:1
RUN echo about to fail && exit 3' -t failrun
check "a failing RUN fails the build (1)" [ $? = 1 ]
check "  with the exit code" has "did not complete successfully: exit code: 3" "$WORK/err"
check "  at its line" has "Dockerfile:2" "$WORK/err"
build failcopy 'FROM kiln-test/busybox:1
COPY missing.txt /x' -t failcopy
check "a missing COPY source fails (1)" [ $? = 1 ]
check "  naming it" has "missing.txt" "$WORK/err"
build failstage 'FROM kiln-test/busybox:1
COPY --from=nowhere /x /x' -t failstage
check "an unknown stage or image fails (1)" [ $? = 1 ]
build failpull 'FROM 127.0.0.1:9/nothing:1
RUN true' -t failpull
check "a base image that cannot be pulled fails (1)" [ $? = 1 ]
"$KILN" images --no-trunc >"$WORK/images.after"
check "  no name was added by the failed builds" diff -u "$WORK/images.before" "$WORK/images.after"
"$KILN" store fsck >"$WORK/fsck" 2>&1
check "  and the store is consistent: nothing corrupt, missing or half written" \
        bash -c '! grep -v -e "^orphaned blob" -e "problem" "$1" | grep -q .' _ "$WORK/fsck"
sed 's/^/# /' "$WORK/fsck" | head -n 5
check "  (the failed steps' layers are orphans kiln prune removes)" run 0 "$KILN" prune
check "  after which fsck is clean" run 0 "$KILN" store fsck

# --- reproducible -------------------------------------------------------------------------------------
repro='FROM kiln-test/busybox:1
COPY src /src
RUN echo reproducible > /r && touch /r'
mkdir -p "$WORK/ctx-repro/src" && echo same >"$WORK/ctx-repro/src/f"
build repro "$repro" --source-date-epoch 1700000000
d1=$(cat "$WORK/out")
build repro "$repro" --source-date-epoch 1700000000
d2=$(cat "$WORK/out")
check "with --source-date-epoch the same inputs give the same digest ($d1)" [ -n "$d1" -a "$d1" = "$d2" ]
SOURCE_DATE_EPOCH=1700000000 build repro "$repro"
check "and with SOURCE_DATE_EPOCH" [ "$(cat "$WORK/out")" = "$d1" ]

# --- escapes: nothing outside the roots changes ----------------------------------------------------
S="$WORK/sentinel"
mkdir -p "$S" && echo untouched >"$S/file"
E="$WORK/ctx-escape"
mkdir -p "$E" "$WORK/ctx-escapelink"
ln -s "$S" "$WORK/ctx-escapelink/out-link"
build escape "FROM kiln-test/busybox:1
RUN ln -s $S /abs && ln -s ../../../../../../$S /rel
COPY Dockerfile /abs/written
COPY Dockerfile /rel/written
WORKDIR /abs/wd
RUN echo inside > /abs/by-run" -t escape
check "COPY, WORKDIR and RUN through symlinks to a host path" built
check "  wrote nothing outside the image" \
        bash -c '[ "$(ls "$1")" = file ] && [ "$(cat "$1/file")" = untouched ]' _ "$S"
unpack escape >/dev/null 2>&1
check "  but inside it, where the links resolve in the root" \
        bash -c '[ -f "$1$2/written" ] && [ -d "$1$2/wd" ] && [ -f "$1$2/by-run" ]' _ "$WORK/u-escape/rootfs" "$S"
build escapelink 'FROM kiln-test/busybox:1
COPY out-link/file /stolen' -t escapelink
check "a context symlink to a host directory is not followed out of the context (1)" [ "$BUILD_RC" = 1 ]
mkdir -p "$WORK/ctx-escapeup"
ln -sfn ../../.. "$WORK/ctx-escapeup/up"
build escapeup "FROM kiln-test/busybox:1
COPY up/${S#/}/file /stolen" -t escapeup
check "nor one climbing with .. (1)" [ "$BUILD_RC" = 1 ]
build escape2 'FROM kiln-test/busybox:1
WORKDIR /proc/self/fd/7
RUN ls / > /list' -t escape2
check "WORKDIR /proc/self/fd/N reaches nothing of the host (CVE-2024-21626)" \
        bash -c '[ "$(ls "$1")" = file ] && [ "$(cat "$1/file")" = untouched ]' _ "$S"

# --- push, iidfile, metadata ----------------------------------------------------------------------------
if need docker-registry command -v docker-registry && run 0 registry_start plain; then
        build pushme 'FROM kiln-test/busybox:1
RUN echo pushed > /p' -t "$REG_ADDR/kiln/pushme:1" --push --iidfile "$WORK/iid" --metadata-file "$WORK/meta.json"
        check "kiln build --push" built
        pd=$(cat "$WORK/out")
        check "  the registry has it, same digest" \
                [ "$(sk inspect --tls-verify=false "docker://$REG_ADDR/kiln/pushme:1" 2>/dev/null | sed -n 's/^    "Digest": "\(.*\)",$/\1/p')" = "$pd" ]
        check "  --iidfile holds the config digest" bash -c 'grep -q "^sha256:[0-9a-f]\{64\}$" "$1"' _ "$WORK/iid"
        check "  --metadata-file has containerimage.digest" \
                "$PY" -c 'import json,sys; m=json.load(open(sys.argv[1])); sys.exit(m["containerimage.digest"] != sys.argv[2])' "$WORK/meta.json" "$pd"
fi

# --- outputs: -o type=oci|docker|local, stdout; a context on stdin -------------------------------------
build outputs 'FROM kiln-test/busybox:1
RUN echo exported > /e && mkdir /owned && chown 1000:1000 /owned 2>/dev/null; true
CMD ["cat", "/e"]' -t kiln/outputs:1 --iidfile "$WORK/outputs.iid" \
        -o "type=oci,dest=$WORK/o.tar" -o "type=docker,dest=$WORK/d.tar" \
        -o "type=oci,dest=$WORK/o-dir,tar=false" -o "type=local,dest=$WORK/o-root"
check "-o type=oci, docker, oci tar=false and local in one build" built
od=$(cat "$WORK/out")
digest_of() { sk inspect "$1" 2>/dev/null | sed -n 's/^    "Digest": "\(.*\)",$/\1/p'; }
check "  the OCI tar is the image (skopeo oci-archive:, same manifest digest)" [ "$(digest_of "oci-archive:$WORK/o.tar:1")" = "$od" ]
check "  the OCI layout directory too (skopeo oci:, umoci ls)" \
        bash -c '[ "$1" = "$2" ] && umoci ls --layout "$3" | grep -qx 1' _ "$(digest_of "oci:$WORK/o-dir:1")" "$od" "$WORK/o-dir"
check "  the Docker archive names kiln/outputs:1 in manifest.json" \
        "$PY" -c 'import json,sys,tarfile; m=json.load(tarfile.open(sys.argv[1]).extractfile("manifest.json")); sys.exit(m[0]["RepoTags"] != ["kiln/outputs:1"] or len(m[0]["Layers"]) < 2)' "$WORK/d.tar"
check "  and skopeo reads it (docker-archive:)" run 0 sk inspect "docker-archive:$WORK/d.tar"
check "  no temporary file is left beside them" bash -c '! ls "$1"/*.kiln-* 2>/dev/null' _ "$WORK"
check "  type=local holds the root filesystem" bash -c '[ "$(cat "$1/e")" = exported ] && [ -x "$1/bin/busybox" ]' _ "$WORK/o-root"
if [ "$MODE" = root ]; then
        check "  with the image's owners (root)" [ "$(stat -c %u:%g "$WORK/o-root/owned")" = 1000:1000 ]
else
        check "  owned by the caller (rootless)" [ "$(stat -c %u "$WORK/o-root/e")" = "$(id -u)" ]
fi
if [ "$MODE" = root ] && need podman command -v podman; then
        P=(env -u REGISTRY_AUTH_FILE -u DOCKER_CONFIG podman --root "$WORK/podman" --runroot "$WORK/podman-run" --storage-driver vfs --runtime runc
                --cgroup-manager cgroupfs)
        check "podman load reads the Docker archive" run 0 "${P[@]}" load -i "$WORK/d.tar"
        check "  as docker.io/kiln/outputs:1 with kiln's image id" \
                bash -c '[ "sha256:$("$@" image inspect --format "{{.Id}}" docker.io/kiln/outputs:1)" = "$(cat "'"$WORK/outputs.iid"'")" ]' _ "${P[@]}"
        run 0 "${P[@]}" run --rm --network host --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 \
                docker.io/kiln/outputs:1
        check "  and runs it" [ "$(cat "$WORK/out")" = exported ]
        check "podman load reads the OCI tar too" run 0 "${P[@]}" load -i "$WORK/o.tar"
fi
mkdir -p "$WORK/ctx-outputs"
"$KILN" build --progress quiet -o type=oci,dest=- "$WORK/ctx-outputs" >"$WORK/stdout.tar" 2>"$WORK/err"
check "-o type=oci,dest=- streams the archive to stdout, without the digest" \
        bash -c 'tar tf "$1" | grep -qx index.json' _ "$WORK/stdout.tar"
check "a bad -o type is a usage error (2)" run 2 "$KILN" build -o type=tarball,dest=x "$WORK/ctx-outputs"
check "-o type=oci without dest is a usage error (2)" run 2 "$KILN" build -o type=oci "$WORK/ctx-outputs"
check "-o to a directory that does not exist fails (1)" run 1 "$KILN" build -o "type=docker,dest=$WORK/no/such/d.tar" "$WORK/ctx-outputs"
check "  naming it" has "$WORK/no/such/d.tar" "$WORK/err"

mkdir -p "$WORK/stdin-ctx/sub"
echo "from the tar" >"$WORK/stdin-ctx/t.txt"
printf 'FROM kiln-test/busybox:1\nCOPY t.txt /t.txt\n' >"$WORK/stdin-ctx/sub/Build.df"
tar -C "$WORK/stdin-ctx" -cz . | "$KILN" build --progress plain -f sub/Build.df -t stdintar - >"$WORK/out" 2>"$WORK/err"
BUILD_RC=$?
check "a gzipped tar context on stdin, -f inside it" built
unpack stdintar
check "  its files reach COPY" [ "$(cat "$WORK/u-stdintar/rootfs/t.txt" 2>&1)" = "from the tar" ]
printf 'FROM kiln-test/busybox:1\nRUN echo piped > /p\n' | "$KILN" build --progress plain -t kiln/stdin-df - >"$WORK/out" 2>"$WORK/err"
BUILD_RC=$?
check "a Dockerfile alone on stdin (an empty context)" built
printf 'FROM kiln-test/busybox:1\nCOPY t.txt /t.txt\n' | "$KILN" build -t kiln/stdin-df2 - >"$WORK/out" 2>"$WORK/err"
check "  where COPY finds nothing (1)" [ $? = 1 ]
check "  named '-' at its line" has "^-:2" "$WORK/err"
check "the Dockerfile and the context both on stdin is a usage error (2)" run 2 "$KILN" build -f - - </dev/null
check "  and the spooled contexts are gone" bash -c '! ls "$1/.kiln/tmp" | grep -q scratch' _ "$KILN_ROOT"

# --- prune: unpacked root filesystems go with their images (inside the namespace when rootless) ----------
kp() { KILN_ROOT="$WORK/store-prune" "$KILN" "$@"; }
check "prune store: the base imported" run 0 kp import -t kiln-test/busybox:0 "$B"
mkdir -p "$WORK/ctx-prune"
printf 'FROM kiln-test/busybox:0\nRUN mkdir -p /secret && chmod 700 /secret && echo x > /secret/x && chown -R 1000:1000 /secret 2>/dev/null; true\nRUN echo y > /y && chmod 000 /y\n' >"$WORK/ctx-prune/Dockerfile"
check "  a build whose RUN leaves a 0700 directory of uid 1000 and a mode 000 file (read from inside the namespace when rootless)" run 0 kp build -t pruned "$WORK/ctx-prune"
check "  (a root filesystem is there)" bash -c '[ -n "$(ls "$1/.kiln/rootfs")" ]' _ "$WORK/store-prune"
check "  rmi both names" run 0 kp rmi pruned kiln-test/busybox:0
check "kiln prune removes the blobs and the unpacked root filesystems ($MODE)" \
        run 0 kp prune
check "  nothing is left in .kiln/rootfs" bash -c '[ -z "$(ls -A "$1/.kiln/rootfs")" ]' _ "$WORK/store-prune"
check "  and fsck is clean" run 0 kp store fsck

# --- usage --------------------------------------------------------------------------------------------
mkdir -p "$WORK/ctx-relroot"
printf 'FROM kiln-test/busybox:1\nRUN echo rel > /rel\n' >"$WORK/ctx-relroot/Dockerfile"
check "a relative store path (KILN_ROOT=store) works with RUN" \
        bash -c 'cd "$1" && KILN_ROOT=store "$2" build --progress quiet -t relroot ctx-relroot >/dev/null' _ "$WORK" "$KILN"
check "--progress quiet prints the digest and nothing else (warnings aside)" \
        bash -c '"$1" build --progress quiet -t quiet:1 "$2" >"$3/q.out" 2>"$3/q.err" && ! grep -qv "^warning: " "$3/q.err" &&
                grep -qx "sha256:[0-9a-f]\{64\}" "$3/q.out" && [ "$(wc -l <"$3/q.out")" = 1 ]' _ "$KILN" "$WORK/ctx-relroot" "$WORK"
check "--push without -t is a usage error (2)" run 2 "$KILN" build --push "$WORK/ctx-basic"
check "a bad --isolation is a usage error (2)" run 2 "$KILN" build --isolation chroot "$WORK/ctx-basic"
check "a missing context fails (1)" run 1 "$KILN" build "$WORK/no-such-context"
finish
