#!/usr/bin/env bash
# kiln build's FROM end to end: a base image's ONBUILD triggers running right after FROM (and not
# inherited), and FROM oci-layout://DIR[:TAG|@DIGEST] reading an OCI image layout made by skopeo,
# with the failures that must be clear (missing layout or tag, bad JSON, a corrupt or escaping
# blob). Checked by unpacking the images with umoci and reading their configs with skopeo.
set -u

KILN=${KILN:?KILN must point at the kiln binary}
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d)
# shellcheck source=lib/registry.sh
. "$HERE/lib/registry.sh"
# shellcheck source=lib/tap.sh
. "$HERE/lib/tap.sh"
# A rootless build's files may belong to subordinate ids: removed from inside the namespace.
trap '"$KILN" unshare -- rm -rf "$WORK" 2>/dev/null; rm -rf "$WORK"' EXIT
export KILN_ROOT="$WORK/store" DOCKER_CONFIG="$WORK/docker" XDG_CONFIG_HOME="$WORK/xdg"
unset SOURCE_DATE_EPOCH http_proxy https_proxy HTTP_PROXY HTTPS_PROXY

sk() { skopeo --insecure-policy "$@"; }
has() { grep -q -- "$1" "$2"; }
PY=$(_registry_python 2>/dev/null || echo python3)

have=1
need skopeo command -v skopeo || have=0
need umoci command -v umoci || have=0
need busybox-static _registry_is_static /bin/busybox || have=0
[ "$have" = 1 ] || finish

if [ "$(id -u)" = 0 ]; then MODE=root; else MODE=rootless; fi
echo "# running as $(id -un) ($(id -u)): $MODE"

B="$WORK/base"
mkdir -p "$B/bin" "$B/etc" "$B/tmp"
cp /bin/busybox "$B/bin/busybox"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$B/bin/$a"; done
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$B/etc/passwd"
echo "from the base" >"$B/etc/motd"
chmod 1777 "$B/tmp"
check "the base image is imported" run 0 "$KILN" import -t kiln-test/busybox:1 "$B"

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
built() {
        local rc=$BUILD_RC
        if [ $rc != 0 ]; then
                echo "# kiln build exited $rc"
                sed 's/^/# /' "$WORK/err" | tail -n 20
                return 1
        fi
}
failed_with() { # failed_with CODE: the last build exited CODE (else show why)
        [ "$BUILD_RC" = "$1" ] && return 0
        echo "# kiln build exited $BUILD_RC, wanted $1"
        sed 's/^/# /' "$WORK/err" | tail -n 20
        return 1
}
unpack() { # unpack NAME: the image unpacked with umoci into $WORK/u-NAME
        local rootless=()
        [ "$MODE" = root ] || rootless=(--rootless)
        rm -rf "$WORK/u-$1"
        umoci unpack "${rootless[@]}" --image "$KILN_ROOT:$1" "$WORK/u-$1" >/dev/null 2>"$WORK/umoci.err" ||
                { sed 's/^/# /' "$WORK/umoci.err"; return 1; }
}
file_is() { # file_is NAME PATH CONTENT: PATH in the unpacked image NAME holds CONTENT
        [ "$(cat "$WORK/u-$1/rootfs$2" 2>/dev/null)" = "$3" ]
}
config() { # config NAME: the image config, to $WORK/config.json
        sk inspect --raw --config "oci:$KILN_ROOT:$1" >"$WORK/config.json" 2>"$WORK/skopeo.err"
}
cfg() { # cfg PYTHON-EXPR: evaluates against c = the config JSON; true when truthy
        "$PY" -c 'import json,sys; c=json.load(open(sys.argv[1])); sys.exit(0 if eval(sys.argv[2]) else 1)' \
                "$WORK/config.json" "$1"
}
# set_onbuild NAME NEW TRIGGER...: a copy of image NAME named NEW whose config's OnBuild is the
# triggers, written straight into the store (kiln itself refuses to record a bad trigger)
set_onbuild() {
        "$PY" - "$KILN_ROOT" "$@" <<'PYEOF'
import hashlib, json, os, sys
root, name, new, triggers = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
def path(d):
    return os.path.join(root, "blobs", "sha256", d.split(":")[1])
def put(obj):
    data = json.dumps(obj).encode()
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    with open(path(d), "wb") as f:
        f.write(data)
    return d, len(data)
index = json.load(open(os.path.join(root, "index.json")))
desc = [x for x in index["manifests"] if x.get("annotations", {}).get("org.opencontainers.image.ref.name") == name][0]
manifest = json.load(open(path(desc["digest"])))
config = json.load(open(path(manifest["config"]["digest"])))
config.setdefault("config", {})["OnBuild"] = triggers
manifest["config"]["digest"], manifest["config"]["size"] = put(config)
d, size = put(manifest)
index["manifests"].append({"mediaType": desc["mediaType"], "digest": d, "size": size,
                           "annotations": {"org.opencontainers.image.ref.name": new}})
with open(os.path.join(root, "index.json"), "w") as f:
    json.dump(index, f)
PYEOF
}

# --- ONBUILD ---------------------------------------------------------------------------------------
build parent 'FROM kiln-test/busybox:1
ENV SRC=f
ONBUILD RUN echo triggered > /t
ONBUILD COPY f /f
ONBUILD COPY ${SRC} /from-env
LABEL role=parent' -t kiln-test/parent:1
check "a parent image with ONBUILD triggers builds" built
check "  its triggers do not run in its own build" bash -c '! grep -q "echo triggered" "$1"' _ "$WORK/err"
config kiln-test/parent:1
check "  its config records them, as written" \
        cfg 'c["config"]["OnBuild"] == ["RUN echo triggered > /t", "COPY f /f", "COPY ${SRC} /from-env"]'

mkdir -p "$WORK/ctx-child"
echo "from the child's context" >"$WORK/ctx-child/f"
build child 'FROM kiln-test/parent:1
RUN cat /t /f > /both
ONBUILD RUN echo grandchild' -t kiln-test/child:1
check "a child FROM the parent builds" built
check "  progress shows the triggers as steps after FROM" \
        bash -c 'grep -q "^#[0-9]* \[stage-0 2/[0-9]*\] RUN echo triggered > /t$" "$1" &&
                 grep -q "^#[0-9]* \[stage-0 3/[0-9]*\] COPY f /f$" "$1"' _ "$WORK/err"
check "  and the child's own steps after them" has '^#[0-9]* \[stage-0 5/5\] RUN cat /t /f > /both$' "$WORK/err"
check "umoci unpacks the child" unpack kiln-test/child:1
check "  the RUN trigger's file is there" file_is kiln-test/child:1 /t triggered
check "  the COPY trigger copied from the child's context" file_is kiln-test/child:1 /f "from the child's context"
check "  a trigger's words are expanded with the stage's ENV" \
        file_is kiln-test/child:1 /from-env "from the child's context"
check "  the child's RUN saw both" file_is kiln-test/child:1 /both "triggered
from the child's context"
config kiln-test/child:1
check "  the child does not inherit the parent's OnBuild, only its own" \
        cfg 'c["config"]["OnBuild"] == ["RUN echo grandchild"]'
check "  history shows the triggers like the instructions they are" \
        cfg '[h["created_by"] for h in c["history"]][-5:-2] == ["RUN /bin/sh -c echo triggered > /t", "COPY f /f", "COPY f /from-env"]'
check "  the parent's other config is kept" cfg 'c["config"]["Labels"] == {"role": "parent"}'
config kiln-test/parent:1
check "  the parent still has both triggers" cfg 'len(c["config"]["OnBuild"]) == 3'

build grandchild 'FROM kiln-test/child:1
RUN cat /t' -t kiln-test/grandchild:1
check "a grandchild runs only the child's trigger" built
check "  (RUN echo grandchild, once)" bash -c '[ "$(grep -c "\] RUN echo grandchild$" "$1")" = 1 ] &&
        ! grep -q "echo triggered" "$1"' _ "$WORK/err"

build stagebase 'FROM kiln-test/busybox:1 AS p
ONBUILD RUN echo staged > /s
FROM p
RUN cat /s' -t kiln-test/stagebase:1
check "FROM an earlier stage runs that stage's ONBUILD (BuildKit)" built
check "  the trigger's output reached the next RUN" has '^#[0-9]* [0-9.]* staged$' "$WORK/err"
config kiln-test/stagebase:1
check "  and the result has no OnBuild" cfg 'not c["config"].get("OnBuild")'

build failing 'FROM kiln-test/busybox:1
ONBUILD RUN echo about to fail && false' -t kiln-test/failing:1
check "a parent with a failing trigger builds" built
build failchild '# a comment first, so FROM is on line 2
FROM kiln-test/failing:1 AS x
RUN echo never' -t kiln-test/failchild:1
check "a failing trigger fails the build (exit 1)" failed_with 1
check "  the error points at FROM and names the trigger" \
        has "Dockerfile:2:1: ONBUILD trigger 'RUN echo about to fail && false': process .* exit code: 1" "$WORK/err"
check "  the trigger's output is shown" has '^#[0-9]* [0-9.]* about to fail$' "$WORK/err"
check "  the stage's own RUN never ran" bash -c '! grep -q "RUN echo never" "$1"' _ "$WORK/err"
check "  nothing was named" bash -c '! "$1" images | grep -q "^kiln-test/failchild:1 "' _ "$KILN"

build nofile 'FROM kiln-test/parent:1' -t kiln-test/nofile:1
check "a COPY trigger whose source is missing fails (exit 1)" failed_with 1
check "  naming the trigger at FROM" has "Dockerfile:1:1: ONBUILD trigger 'COPY f /f': COPY: 'f': not found" "$WORK/err"

check "an image whose OnBuild holds FROM (made by hand)" \
        run 0 set_onbuild kiln-test/busybox:1 kiln-test/bad-from:1 "RUN true" "FROM busybox"
build badfrom 'FROM kiln-test/bad-from:1'
check "  fails the build (exit 1)" failed_with 1
check "  FROM is not allowed as a trigger, said at FROM" \
        has "Dockerfile:1:1: ONBUILD trigger 'FROM busybox': FROM isn't allowed as an ONBUILD trigger" "$WORK/err"
check "  no trigger ran (all are checked first)" bash -c '! grep -q "RUN true" "$1"' _ "$WORK/err"
set_onbuild kiln-test/busybox:1 kiln-test/bad-maint:1 "MAINTAINER me" >/dev/null 2>&1
build badmaint 'FROM kiln-test/bad-maint:1'
check "MAINTAINER as a trigger fails (exit 1)" failed_with 1
check "  clearly" has "MAINTAINER isn't allowed as an ONBUILD trigger" "$WORK/err"
set_onbuild kiln-test/busybox:1 kiln-test/bad-syntax:1 "RUN [\"unclosed" "NOPE x" >/dev/null 2>&1
build badsyntax 'FROM kiln-test/busybox:1 AS a
FROM kiln-test/bad-syntax:1'
check "an unknown instruction as a trigger fails (exit 1)" failed_with 1
check "  at that stage's FROM" has "Dockerfile:2:1: ONBUILD trigger 'NOPE x': unknown instruction: NOPE" "$WORK/err"

build copyfrom 'FROM kiln-test/busybox:1
ONBUILD COPY --from=kiln-test/busybox:1 /etc/motd /motd' -t kiln-test/copyfrom:1
check "a parent with ONBUILD COPY --from builds" built
build copyfromchild 'FROM kiln-test/copyfrom:1'
check "  a child of it fails (exit 1): the stage graph cannot know the dependency" failed_with 1
check "  and says COPY --from is not supported in a trigger" \
        has "ONBUILD trigger 'COPY --from=kiln-test/busybox:1 /etc/motd /motd': COPY --from is not supported in a trigger" \
        "$WORK/err"

# --- FROM oci-layout:// ----------------------------------------------------------------------------
L="$WORK/layout"
check "skopeo copies the base from kiln's store into a layout (mytag)" \
        run 0 sk copy "oci:$KILN_ROOT:kiln-test/busybox:1" "oci:$L:mytag"
mkdir -p "$WORK/ctx-layout"
echo "from the layout build's context" >"$WORK/ctx-layout/f"
build layout "FROM oci-layout://$L:mytag
RUN echo ran > /ran
COPY f /f" -t kiln-test/from-layout:1
check "FROM oci-layout://DIR:TAG + RUN + COPY builds" built
check "  progress shows the FROM" has "^#1 \[stage-0 1/3\] FROM oci-layout://$L:mytag$" "$WORK/err"
check "umoci unpacks it" unpack kiln-test/from-layout:1
check "  RUN's file" file_is kiln-test/from-layout:1 /ran ran
check "  COPY's file" file_is kiln-test/from-layout:1 /f "from the layout build's context"
check "  the layout image's files" file_is kiln-test/from-layout:1 /etc/motd "from the base"
config kiln-test/from-layout:1
base_layers=$(sk inspect --raw --config "oci:$L:mytag" 2>/dev/null |
        "$PY" -c 'import json,sys; print(len(json.load(sys.stdin)["rootfs"]["diff_ids"]))')
check "  its layers are the layout image's and two more" cfg "len(c['rootfs']['diff_ids']) == $base_layers + 2"

check "a second tag, latest, in the layout" run 0 sk copy "oci:$KILN_ROOT:kiln-test/busybox:1" "oci:$L:latest"
mkdir -p "$WORK/ctx-rel"
printf 'FROM oci-layout://layout\nRUN echo rel > /rel\n' >"$WORK/ctx-rel/Dockerfile"
check "FROM oci-layout://DIR (relative to the current directory, tag latest)" \
        run 0 bash -c 'cd "$1" && "$2" build --progress quiet -t kiln-test/from-rel:1 ctx-rel' _ "$WORK" "$KILN"

digest=$("$PY" -c 'import json,sys; print([m["digest"] for m in json.load(open(sys.argv[1]))["manifests"]
        if m["annotations"]["org.opencontainers.image.ref.name"] == "mytag"][0])' "$L/index.json")
build bydigest "FROM oci-layout://$L@$digest
RUN test -f /etc/motd" -t kiln-test/from-digest:1
check "FROM oci-layout://DIR@DIGEST" built

# An index in the layout: an entry for another platform first (its blob is missing), then the
# image for every platform kiln may build for here.
check "an image index tagged 'multi' is added to the layout" run 0 "$PY" - "$L" "$digest" <<'PYEOF'
import hashlib, json, os, sys
root, digest = sys.argv[1], sys.argv[2]
index = json.load(open(os.path.join(root, "index.json")))
size = [m["size"] for m in index["manifests"] if m["digest"] == digest][0]
entries = [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 1,
            "digest": "sha256:" + "0" * 64, "platform": {"os": "plan9", "architecture": "mips"}}]
for arch, variant in [("amd64", None), ("arm64", None), ("arm", "v7"), ("386", None), ("ppc64le", None),
                      ("s390x", None), ("riscv64", None)]:
    p = {"os": "linux", "architecture": arch}
    if variant:
        p["variant"] = variant
    entries.append({"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": size,
                    "digest": digest, "platform": p})
data = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                   "manifests": entries}).encode()
d = hashlib.sha256(data).hexdigest()
open(os.path.join(root, "blobs", "sha256", d), "wb").write(data)
index["manifests"].append({"mediaType": "application/vnd.oci.image.index.v1+json", "digest": "sha256:" + d,
                           "size": len(data), "annotations": {"org.opencontainers.image.ref.name": "multi"}})
json.dump(index, open(os.path.join(root, "index.json"), "w"))
PYEOF
build multi "FROM oci-layout://$L:multi
RUN test -f /etc/motd" -t kiln-test/from-multi:1
check "FROM oci-layout://DIR:TAG follows an index to the build's platform" built
build multi "FROM --platform=plan9/mips oci-layout://$L:multi"
check "  another platform's missing blob fails (exit 1)" failed_with 1
check "  saying which" has "blob sha256:0000000000000000000000000000000000000000000000000000000000000000 is missing" "$WORK/err"

# A fresh store: the layers really are copied (and verified).
export KILN_ROOT="$WORK/store2"
build layout "FROM oci-layout://$L:mytag
COPY f /f" -t kiln-test/fresh:1
check "FROM oci-layout:// into an empty store" built
check "  the store is clean" run 0 "$KILN" store fsck
check "umoci unpacks it" unpack kiln-test/fresh:1
check "  with the layout image's files" file_is kiln-test/fresh:1 /etc/motd "from the base"

build missingtag "FROM oci-layout://$L:nope"
check "a missing tag fails (exit 1)" failed_with 1
check "  with a one-line message naming the tags there are" \
        has "Dockerfile:1:1: FROM: oci-layout '$L': no image tagged 'nope' (it has: .*'mytag'" "$WORK/err"
build missingdir "FROM oci-layout://$WORK/no-such-layout:1"
check "a missing layout fails (exit 1)" failed_with 1
check "  clearly" has "oci-layout '$WORK/no-such-layout': no such directory" "$WORK/err"
mkdir -p "$WORK/not-a-layout"
build notlayout "FROM oci-layout://$WORK/not-a-layout"
check "a directory that is not a layout fails (exit 1)" failed_with 1
check "  clearly" has "not an OCI image layout (it has no oci-layout file)" "$WORK/err"

cp -a "$L" "$WORK/badjson"
echo '{"manifests": [' >"$WORK/badjson/index.json"
build badjson "FROM oci-layout://$WORK/badjson:mytag"
check "a layout with a malformed index.json fails (exit 1)" failed_with 1
check "  naming the file and position" has "^$WORK/badjson/index.json:[0-9]*\(:[0-9]*\)\?: .*expected" "$WORK/err"

layer=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1] + "/blobs/sha256/" + sys.argv[2][7:]))["layers"][-1]["digest"])' \
        "$L" "$digest")
cp -a "$L" "$WORK/corrupt"
"$PY" -c 'import sys; p = sys.argv[1]; b = bytearray(open(p, "rb").read()); b[len(b) // 2] ^= 0xff; open(p, "wb").write(b)' \
        "$WORK/corrupt/blobs/sha256/${layer#sha256:}"
export KILN_ROOT="$WORK/store3" # an empty store again: the layer must be read
build corrupt "FROM oci-layout://$WORK/corrupt:mytag"
check "a layer that does not match its digest fails (exit 1)" failed_with 1
check "  with a digest error" has "oci-layout '$WORK/corrupt': blob digest is sha256:[0-9a-f]*, expected $layer" "$WORK/err"
check "  and the store is still clean" run 0 "$KILN" store fsck
check "  (the corrupt blob is not in it)" [ ! -e "$KILN_ROOT/blobs/sha256/${layer#sha256:}" ]

# A blob that is a symlink out of the layout: resolved inside the layout's root, so it is missing.
cp -a "$L" "$WORK/escape"
rm "$WORK/escape/blobs/sha256/${layer#sha256:}"
ln -s "$L/blobs/sha256/${layer#sha256:}" "$WORK/escape/blobs/sha256/${layer#sha256:}"
export KILN_ROOT="$WORK/store4"
build escape "FROM oci-layout://$WORK/escape:mytag"
check "a blob symlinked outside the layout is not followed (exit 1)" failed_with 1
check "  it is missing inside the layout" has "oci-layout '$WORK/escape': blob $layer is missing" "$WORK/err"

finish
