#!/usr/bin/env bash
# kiln pull / push / inspect / login / logout against a real registry (Debian's docker-registry)
# in each auth mode (none, htpasswd Basic, bearer tokens from a token server, TLS with a private
# CA), behind a fault-injecting proxy, through mirrors; interoperating with skopeo and umoci
# with identical digests both ways. Base images are made locally from busybox-static.
set -u

KILN=${KILN:?KILN must point at the kiln binary}
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d)
# shellcheck source=lib/registry.sh
. "$HERE/lib/registry.sh"
# shellcheck source=lib/tap.sh
. "$HERE/lib/tap.sh"
trap 'registry_cleanup; rm -rf "$WORK"' EXIT

# Nothing from the caller's environment: credentials, registries.conf, certs.d, proxies.
export REGISTRY_AUTH_FILE="$WORK/auth.json" DOCKER_CONFIG="$WORK/docker" XDG_CONFIG_HOME="$WORK/xdg"
export KILN_CERTS_DIRS="$WORK/no-certs.d" KILN_ROOT="$WORK/store"
unset KILN_REGISTRIES_CONF XDG_RUNTIME_DIR http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY

sk() { skopeo --insecure-policy "$@"; }
digest_of() { # digest_of REF [skopeo flags]: the manifest digest skopeo reports
        local ref=$1
        shift
        sk inspect "$@" "$ref" 2>/dev/null | sed -n 's/^    "Digest": "\(sha256:[0-9a-f]*\)",$/\1/p'
}
printed_digest() { sed -n 's/^Digest: \(sha256:[0-9a-f]*\)$/\1/p' "$WORK/out"; }
has() { grep -q -- "$1" "$2"; }
lacks() { ! grep -q -- "$1" "$2"; }
one_line_error() { [ "$(grep -c '^kiln: ' "$WORK/err")" = 1 ]; }
fresh_store() { rm -rf "$KILN_ROOT"; }
PY=$(_registry_python 2>/dev/null || echo python3)

have=1
need docker-registry command -v docker-registry || have=0
need skopeo command -v skopeo || have=0
need umoci command -v umoci || have=0
need openssl command -v openssl || have=0
need "htpasswd (apache2-utils)" command -v htpasswd || have=0
need "python3 with python3-jwt and python3-cryptography" _registry_python jwt || have=0
need busybox-static _registry_is_static /bin/busybox || have=0
[ "$have" = 1 ] || finish

base_image_make "$WORK/oci" v1 >/dev/null 2>&1
base=$(digest_of "oci:$WORK/oci:v1")
check "the busybox base image is made locally" [ "${#base}" = 71 ]

# A multi-platform index: the base image as linux/amd64 and a copy whose config says arm64.
"$PY" - "$WORK/oci" <<'EOF'
import hashlib, json, os, sys
d = sys.argv[1]
def blob(b):
    h = hashlib.sha256(b).hexdigest()
    open(os.path.join(d, "blobs", "sha256", h), "wb").write(b)
    return "sha256:" + h, len(b)
def read(dg):
    return open(os.path.join(d, "blobs", "sha256", dg.split(":")[1]), "rb").read()
index = json.load(open(os.path.join(d, "index.json")))
top = [m for m in index["manifests"] if m["annotations"]["org.opencontainers.image.ref.name"] == "v1"][0]
amd = json.loads(read(top["digest"]))
cfg = json.loads(read(amd["config"]["digest"]))
cfg["architecture"] = "arm64"
cdg, csz = blob(json.dumps(cfg).encode())
arm = dict(amd, config=dict(amd["config"], digest=cdg, size=csz))
adg, asz = blob(json.dumps(arm).encode())
idx = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
    {"mediaType": top["mediaType"], "digest": top["digest"], "size": top["size"],
     "platform": {"os": "linux", "architecture": "amd64"}},
    {"mediaType": top["mediaType"], "digest": adg, "size": asz,
     "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}}]}
idg, isz = blob(json.dumps(idx).encode())
index["manifests"].append({"mediaType": idx["mediaType"], "digest": idg, "size": isz,
                           "annotations": {"org.opencontainers.image.ref.name": "multi"}})
many = dict(amd, layers=amd["layers"] * 1025)  # past kiln's limit of 1024 layers
mdg, msz = blob(json.dumps(many).encode())
index["manifests"].append({"mediaType": top["mediaType"], "digest": mdg, "size": msz,
                           "annotations": {"org.opencontainers.image.ref.name": "many"}})
json.dump(index, open(os.path.join(d, "index.json"), "w"))
open(os.path.join(d, "arm64.digest"), "w").write(adg)
EOF
arm64=$(cat "$WORK/oci/arm64.digest" 2>/dev/null)
check "and a two-platform index of it" [ "${#arm64}" = 71 ]

# A root filesystem for kiln import.
R="$WORK/rootfs"
mkdir -p "$R/etc" "$R/bin"
echo "made by kiln" >"$R/etc/motd"
cp /bin/busybox "$R/bin/busybox"
ln -s busybox "$R/bin/sh"

# --- plain http ------------------------------------------------------------------------------
if ! run 0 registry_start plain; then
        not_ok "registry_start plain"
        finish
fi
base_image_push "$WORK/oci:v1" "$REG_ADDR/base:v1" >/dev/null 2>&1
sk copy --all --dest-tls-verify=false "oci:$WORK/oci:multi" "docker://$REG_ADDR/multi:1" >/dev/null 2>&1
sk copy --dest-tls-verify=false "oci:$WORK/oci:many" "docker://$REG_ADDR/many:1" >/dev/null 2>&1
check "skopeo pushed the base image" [ "$(digest_of "docker://$REG_ADDR/base:v1" --tls-verify=false)" = "$base" ]

check "kiln pull of an image skopeo pushed (loopback is plain http)" run 0 "$KILN" pull "$REG_ADDR/base:v1"
check "prints the same digest skopeo reports" [ "$(printed_digest)" = "$base" ]
check "and says what it fetched" has "^2 blobs fetched (.*), 0 already present$" "$WORK/out"
check "progress went to stderr" has "pulling $REG_ADDR/base:v1" "$WORK/err"
check "kiln images lists it under its reference" run 0 "$KILN" images --no-trunc
check "  ($REG_ADDR/base:v1 ${base#sha256:})" has "$REG_ADDR/base:v1.*${base#sha256:}" "$WORK/out"
check "the store is clean after a pull" run 0 "$KILN" store fsck
check "skopeo reads the pulled image from kiln's store, same digest" \
        [ "$(digest_of "oci:$KILN_ROOT:$REG_ADDR/base:v1")" = "$base" ]
check "a second pull fetches nothing" run 0 "$KILN" pull "$REG_ADDR/base:v1"
check "  (0 blobs fetched, 2 present)" has "^0 blobs fetched (0B), 2 already present$" "$WORK/out"
check "pull -q prints only the digest" run 0 "$KILN" pull -q "$REG_ADDR/base:v1"
check "  ($base)" [ "$(cat "$WORK/out")" = "$base" ]
check "pull by digest" run 0 "$KILN" pull "$REG_ADDR/base@$base"
check "  names it REPO@DIGEST" bash -c '"$1" images --no-trunc | grep -q "$2"' _ "$KILN" "$REG_ADDR/base@$base"

check "kiln push to another repository of the same registry" run 0 "$KILN" push "$REG_ADDR/base:v1" "$REG_ADDR/copy:v1"
check "  keeps the digest" [ "$(printed_digest)" = "$base" ]
check "  mounts both blobs instead of uploading them" has "^0 blobs sent (0B), 0 already there, 2 mounted$" "$WORK/out"
check "skopeo inspect sees it, same digest" [ "$(digest_of "docker://$REG_ADDR/copy:v1" --tls-verify=false)" = "$base" ]
check "a second push finds every blob there" run 0 "$KILN" push "$REG_ADDR/base:v1" "$REG_ADDR/copy:v1"
check "  (0 sent, 2 there)" has "^0 blobs sent (0B), 2 already there, 0 mounted$" "$WORK/out"

check "kiln import makes an image to push" run 0 "$KILN" import -t mine "$R"
check "kiln push with --tag and --digestfile" \
        run 0 "$KILN" push mine "$REG_ADDR/mine:1" --tag extra --digestfile "$WORK/mine.digest"
mine=$(printed_digest)
check "  uploads both blobs" has "^2 blobs sent (.*), 0 already there, 0 mounted$" "$WORK/out"
check "  the digest file holds the printed digest" [ "$(cat "$WORK/mine.digest")" = "$mine" -a "${#mine}" = 71 ]
check "  it is the digest of the image in kiln's store" \
        [ "$(digest_of "oci:$KILN_ROOT:mine")" = "$mine" ]
check "skopeo inspect sees mine:1 with that digest" [ "$(digest_of "docker://$REG_ADDR/mine:1" --tls-verify=false)" = "$mine" ]
check "and mine:extra too" [ "$(digest_of "docker://$REG_ADDR/mine:extra" --tls-verify=false)" = "$mine" ]
check "skopeo copy takes it back to an OCI layout" \
        run 0 sk copy --src-tls-verify=false "docker://$REG_ADDR/mine:1" "oci:$WORK/mine-oci:1"
check "  same digest" [ "$(digest_of "oci:$WORK/mine-oci:1")" = "$mine" ]
umoci_flags=()
[ "$(id -u)" = 0 ] || umoci_flags=(--rootless)
check "umoci unpacks it" run 0 umoci unpack "${umoci_flags[@]}" --image "$WORK/mine-oci:1" "$WORK/mine-bundle"
check "  with the file kiln imported" [ "$(cat "$WORK/mine-bundle/rootfs/etc/motd" 2>/dev/null)" = "made by kiln" ]
check "-t with an invalid tag is a usage error (2)" run 2 "$KILN" push mine "$REG_ADDR/mine:1" --tag '-bad'

check "push --format docker" run 0 "$KILN" push --format docker mine "$REG_ADDR/mine-docker:1"
docker_digest=$(printed_digest)
sk inspect --raw --tls-verify=false "docker://$REG_ADDR/mine-docker:1" >"$WORK/docker.json" 2>/dev/null
check "  the registry has a Docker schema2 manifest" \
        has '"mediaType":"application/vnd.docker.distribution.manifest.v2+json"' "$WORK/docker.json"
check "  with Docker layer and config media types" bash -c 'grep -q "application/vnd.docker.image.rootfs.diff.tar.gzip" "$1" && grep -q "application/vnd.docker.container.image.v1+json" "$1"' _ "$WORK/docker.json"
check "  whose digest kiln printed" [ "$(sha256sum <"$WORK/docker.json" | cut -d' ' -f1)" = "${docker_digest#sha256:}" ]
check "  and kiln pulls it back, same digest" run 0 "$KILN" pull "$REG_ADDR/mine-docker:1"
check "  ($docker_digest)" [ "$(printed_digest)" = "$docker_digest" ]
check "  the store stays clean" run 0 "$KILN" store fsck
check "--format other is a usage error (2)" run 2 "$KILN" push --format v1 mine "$REG_ADDR/mine:1"

# inspect
check "kiln inspect shows an image without pulling it" run 0 "$KILN" inspect "$REG_ADDR/base:v1"
check "  its digest and Cmd" bash -c 'grep -q "\"Digest\": \"$2\"" "$1" && grep -q "\"/bin/sh\"" "$1"' _ "$WORK/out" "$base"
check "kiln inspect --raw prints the manifest byte for byte" run 0 "$KILN" inspect --raw "$REG_ADDR/base:v1"
check "  (its sha256 is the digest)" [ "sha256:$(sha256sum <"$WORK/out" | cut -d' ' -f1)" = "$base" ]
check "kiln inspect --config prints the config" run 0 "$KILN" inspect --config "$REG_ADDR/base:v1"
check "  (\"architecture\")" has '"architecture"' "$WORK/out"

# platforms
check "kiln pull --platform linux/arm64 picks that entry of an index" \
        run 0 "$KILN" pull --platform linux/arm64 "$REG_ADDR/multi:1"
check "  ($arm64)" [ "$(printed_digest)" = "$arm64" ]
check "kiln pull --platform linux/arm64/v8 too" run 0 "$KILN" pull -q --platform linux/arm64/v8 "$REG_ADDR/multi:1"
check "  ($arm64)" [ "$(cat "$WORK/out")" = "$arm64" ]
check "kiln pull --platform linux/amd64 the other" run 0 "$KILN" pull --platform linux/amd64 "$REG_ADDR/multi:1"
check "  ($base)" [ "$(printed_digest)" = "$base" ]
check "a platform the index lacks fails (1)" run 1 "$KILN" pull --platform linux/s390x "$REG_ADDR/multi:1"
check "  saying which it has" has "has no image for linux/s390x (it has: linux/amd64, linux/arm64/v8)" "$WORK/err"
check "  on one line" one_line_error
check "kiln inspect --raw of an index prints the index" run 0 "$KILN" inspect --raw "$REG_ADDR/multi:1"
check "  (\"manifests\")" has '"manifests"' "$WORK/out"

# errors
check "a missing tag fails (1)" run 1 "$KILN" pull "$REG_ADDR/base:nope"
check "  with the registry's message" has "manifest unknown" "$WORK/err"
check "  on one line" one_line_error
check "an invalid reference is a usage error (2)" run 2 "$KILN" pull "$REG_ADDR/Base:v1"
check "  naming the problem" has "repository name must be lowercase" "$WORK/err"
check "a registry that is not there fails (1)" run 1 "$KILN" pull -q 127.0.0.1:9/base:v1
check "  on one line" one_line_error
check "a manifest with 1025 layers is refused (1)" run 1 "$KILN" pull "$REG_ADDR/many:1"
check "  naming kiln's limit" has "1025 layers is more than kiln's limit of 1024" "$WORK/err"
check "pushing an image the store lacks fails (1)" run 1 "$KILN" push nosuch "$REG_ADDR/x:1"
check "  (no image named 'nosuch')" has "no image named 'nosuch'" "$WORK/err"
check "push with a bad destination is a usage error (2)" run 2 "$KILN" push mine "$REG_ADDR/x:1:2"
check "pull with a bad --jobs is a usage error (2)" run 2 "$KILN" pull --jobs 0 "$REG_ADDR/base:v1"

# --- faults, through a proxy in front of the plain registry -----------------------------------
# proxy_up NAME FAULTS: a fault proxy in front of the plain registry; PROXY_ADDR, PROXY_LOG.
proxy_up() {
        local P=${1^^}_
        fault_proxy_start "$REG_ADDR" "$2" "$1" >/dev/null 2>&1 || return 1
        PROXY_ADDR=${P}ADDR
        PROXY_ADDR=${!PROXY_ADDR}
        PROXY_LOG=${P}LOG
        PROXY_LOG=${!PROXY_LOG}
}
# pull_through NAME FAULTS: a fresh store, a proxy with FAULTS, kiln pull -j 1 of base:v1.
pull_through() {
        fresh_store
        proxy_up "$1" "$2" || return 1
        "$KILN" pull -j 1 "$PROXY_ADDR/base:v1" >"$WORK/out" 2>"$WORK/err"
}
pulled_ok() { # the pull printed the right digest and the store is whole
        [ "$(printed_digest)" = "$base" ] && "$KILN" store fsck >/dev/null 2>&1
}
check "a connection reset mid-blob: the pull resumes and succeeds" pull_through reset "reset:/blobs/"
check "  same digest, store clean" pulled_ok
check "  the blob was asked for again" [ "$(grep -c "^GET /v2/base/blobs/" "$PROXY_LOG")" = 3 ]
check "  from where it broke off (Range: the registry answered 206)" \
        grep -q "^GET /v2/base/blobs/sha256:[0-9a-f]* status=206" "$PROXY_LOG"
check "a truncated body: the pull succeeds" pull_through trunc "truncate:/blobs/"
check "  same digest, store clean" pulled_ok
check "  resumed with Range (206)" grep -q "^GET /v2/base/blobs/sha256:[0-9a-f]* status=206" "$PROXY_LOG"
check "a 500 on the manifest: retried, succeeds" pull_through p500 "500:/manifests/"
check "  same digest, store clean" pulled_ok
check "  the retry was reported" has "retrying GET base" "$WORK/err"
check "a 429 with Retry-After: waited, succeeds" pull_through p429 "429:/blobs/"
check "  same digest, store clean" pulled_ok
check "  honouring Retry-After: 1" has "in 1000 ms (too many requests)" "$WORK/err"
check "a very slow blob: succeeds" pull_through slow "slow:/blobs/"
check "  same digest, store clean" pulled_ok
check "blobs redirected elsewhere (as to blob storage): followed" pull_through redir "redirect:/blobs/:*"
check "  same digest, store clean" pulled_ok
check "  (both blobs were redirected)" [ "$(grep -c "^GET /v2/base/blobs/.* status=307 fault=redirect" "$PROXY_LOG")" = 2 ]
check "a dropped request: retried, succeeds" pull_through drop "drop-request:/blobs/"
check "  same digest, store clean" pulled_ok
if pull_through flip "flip:/blobs/:*"; then
        not_ok "one flipped byte in every blob fails the pull"
else
        ok "one flipped byte in every blob fails the pull"
fi
check "  as a digest mismatch" has "digest" "$WORK/err"
check "  on one line" one_line_error
check "  no name was given to a half image" bash -c '! "$1" images | grep -q base' _ "$KILN"
check "  nothing corrupt was stored" run 0 "$KILN" store fsck
if pull_through dead "500:/manifests/:*"; then
        not_ok "a registry that always answers 500 fails the pull"
else
        ok "a registry that always answers 500 fails the pull"
fi
check "  after the retries, saying so" has "HTTP 500\|500" "$WORK/err"

# push_through NAME FAULTS DEST: a proxy with FAULTS, kiln push -j 1 of mine to DEST through it.
push_through() {
        proxy_up "$1" "$2" || return 1
        "$KILN" push -j 1 "$MINE_STORE_NAME" "$PROXY_ADDR/$3" >"$WORK/out" 2>"$WORK/err"
}
fresh_store
"$KILN" import -t mine "$R" >/dev/null 2>&1
MINE_STORE_NAME=mine
mine=$(digest_of "oci:$KILN_ROOT:mine")
check "a 500 on a blob upload: the upload starts again, the push succeeds" \
        push_through u500 "500:PUT@/blobs/uploads/" "faulty/a:1"
check "  the registry has it, same digest" [ "$(digest_of "docker://$REG_ADDR/faulty/a:1" --tls-verify=false)" = "$mine" ]
check "  a second upload session was opened" [ "$(grep -c "^POST /v2/faulty/a/blobs/uploads/" "$PROXY_LOG")" -ge 3 ]
check "a dropped upload: started again, succeeds" push_through udrop "drop-request:PUT@/blobs/uploads/" "faulty/b:1"
check "  the registry has it, same digest" [ "$(digest_of "docker://$REG_ADDR/faulty/b:1" --tls-verify=false)" = "$mine" ]
check "a 429 on the blob check: waited, succeeds" push_through uhead "429:HEAD@/blobs/" "faulty/c:1"
check "  the registry has it, same digest" [ "$(digest_of "docker://$REG_ADDR/faulty/c:1" --tls-verify=false)" = "$mine" ]
mkdir -p "$WORK/bigroot"
head -c $((40 << 20)) /dev/urandom >"$WORK/bigroot/random.bin"
"$KILN" import -t big "$WORK/bigroot" >/dev/null 2>&1
MINE_STORE_NAME=big
big=$(digest_of "oci:$KILN_ROOT:big")
check "a registry that wants chunks (OCI-Chunk-Min-Length) gets PATCH chunks" \
        push_through chunks "chunk-min:POST@/blobs/uploads/:*" "faulty/chunked:1"
check "  the registry has it, same digest" \
        [ "$(digest_of "docker://$REG_ADDR/faulty/chunked:1" --tls-verify=false)" = "$big" ]
check "  the 40 MiB layer went in 3 chunks of at most 16 MiB" \
        [ "$(grep -c "^PATCH /v2/faulty/chunked/blobs/uploads/.* status=202" "$PROXY_LOG")" -ge 4 ]
MINE_STORE_NAME=mine
if push_through umani "500:PUT@/manifests/:*" "faulty/d:1"; then
        not_ok "a manifest PUT that always fails fails the push"
else
        ok "a manifest PUT that always fails fails the push"
fi
check "  exit 1 and no digest printed" lacks "^Digest:" "$WORK/out"
check "  the registry has no tag for it" fails sk inspect --tls-verify=false "docker://$REG_ADDR/faulty/d:1"

# --- mirrors -----------------------------------------------------------------------------------
base_image_push "$WORK/oci:v1" "$REG_ADDR/mirror/base:v1" >/dev/null 2>&1
cat >"$WORK/registries.conf" <<EOF
# the primary is not there; the mirror serves it under a path prefix
[[registry]]
location = "127.0.0.1:9"

[[registry.mirror]]
location = "$REG_ADDR/mirror"

[[registry]]
location = "127.0.0.1:8"
[[registry.mirror]]
location = "127.0.0.1:7"
EOF
fresh_store
check "a pull through a mirror (the registry itself is down)" \
        run 0 "$KILN" pull --registries-conf "$WORK/registries.conf" 127.0.0.1:9/base:v1
check "  same digest" [ "$(printed_digest)" = "$base" ]
check "  named as asked" bash -c '"$1" images | grep -q "127.0.0.1:9/base"' _ "$KILN"
mkdir -p "$XDG_CONFIG_HOME/kiln"
sed "s/127.0.0.1:8/$REG_ADDR/" "$WORK/registries.conf" >"$XDG_CONFIG_HOME/kiln/registries.conf"
check "a dead mirror falls back to the registry (~/.config/kiln/registries.conf)" \
        run 0 "$KILN" pull "$REG_ADDR/base:v1"
check "  same digest" [ "$(printed_digest)" = "$base" ]
check "  saying the mirror failed" has "mirror 127.0.0.1:7 failed" "$WORK/err"
rm -f "$XDG_CONFIG_HOME/kiln/registries.conf"
printf '[[registry]]\nlocation = 127.0.0.1:9\n' >"$WORK/bad.conf"
check "a broken registries.conf fails (1)" run 1 "$KILN" pull --registries-conf "$WORK/bad.conf" "$REG_ADDR/base:v1"
check "  naming the file and line" has "bad.conf:2" "$WORK/err"

# --- htpasswd: Basic auth, login and logout ----------------------------------------------------
if run 0 registry_start htpasswd basic; then
        base_image_push "$WORK/oci:v1" "$BASIC_ADDR/base:v1" >/dev/null 2>&1
        fresh_store
        check "Basic: a pull without credentials fails (1)" run 1 "$KILN" pull "$BASIC_ADDR/base:v1"
        check "  with the registry's message and a hint" \
                has "unauthorized: authentication required (try: kiln login $BASIC_ADDR)" "$WORK/err"
        check "  on one line" one_line_error
        echo wrong | run 1 "$KILN" login -u kiln --password-stdin "$BASIC_ADDR"
        check "kiln login with a wrong password fails (1)" [ $? = 0 ]
        check "  and saves nothing" [ ! -e "$DOCKER_CONFIG/config.json" ]
        check "kiln login without -u is a usage error (2)" run 2 "$KILN" login --password-stdin "$BASIC_ADDR" </dev/null
        echo "$BASIC_PASS" | run 0 "$KILN" login -u kiln --password-stdin "$BASIC_ADDR"
        check "kiln login with the right password succeeds" [ $? = 0 ]
        check "  (Login Succeeded)" has "^Login Succeeded$" "$WORK/out"
        check "  it saved docker-compatible credentials, mode 0600" bash -c '
                [ "$(stat -c %a "$1")" = 600 ] &&
                "$2" -c "import json,sys,base64; a=json.load(open(sys.argv[1]))[\"auths\"][sys.argv[2]][\"auth\"]; sys.exit(base64.b64decode(a) != b\"kiln:s3cret\")" "$1" "$3"' \
                _ "$DOCKER_CONFIG/config.json" "$PY" "$BASIC_ADDR"
        check "  skopeo uses them (same file format)" \
                run 0 sk inspect --tls-verify=false --authfile "$DOCKER_CONFIG/config.json" "docker://$BASIC_ADDR/base:v1"
        check "now the pull works" run 0 "$KILN" pull "$BASIC_ADDR/base:v1"
        check "  same digest" [ "$(printed_digest)" = "$base" ]
        check "and a push" run 0 "$KILN" push "$BASIC_ADDR/base:v1" "$BASIC_ADDR/pushed:v1"
        check "  skopeo sees it, same digest" [ "$(digest_of "docker://$BASIC_ADDR/pushed:v1" --tls-verify=false \
                --creds "$BASIC_USER:$BASIC_PASS")" = "$base" ]
        check "kiln logout removes them" run 0 "$KILN" logout "$BASIC_ADDR"
        check "  (Removing login credentials)" has "Removing login credentials for $BASIC_ADDR" "$WORK/out"
        check "  and the pull is refused again (1)" run 1 "$KILN" pull "$BASIC_ADDR/base:v1"
        check "kiln logout again says not logged in (0)" run 0 "$KILN" logout "$BASIC_ADDR"
        check "credentials in REGISTRY_AUTH_FILE (containers auth.json) work" bash -c '
                printf "{\"auths\":{\"%s\":{\"auth\":\"%s\"}}}" "$1" "$(printf kiln:s3cret | base64)" >"$2" &&
                "$3" pull -q "$1/base:v1" >/dev/null 2>&1' _ "$BASIC_ADDR" "$REGISTRY_AUTH_FILE" "$KILN"
        rm -f "$REGISTRY_AUTH_FILE"
else
        not_ok "registry_start htpasswd"
fi

# --- token auth ---------------------------------------------------------------------------------
if run 0 registry_start token tok; then
        base_image_push "$WORK/oci:v1" "$TOK_ADDR/base:v1" >/dev/null 2>&1
        fresh_store
        check "Token: an anonymous pull works (token with pull scope)" run 0 "$KILN" pull "$TOK_ADDR/base:v1"
        check "  same digest" [ "$(printed_digest)" = "$base" ]
        check "  the token server saw an anonymous pull request" \
                has "status=200 user=- service=kiln-test-registry scope=repository:base:pull granted=repository:base:pull" "$TOK_TOKEN_LOG"
        check "an anonymous push is refused (1)" run 1 "$KILN" push "$TOK_ADDR/base:v1" "$TOK_ADDR/anon:v1"
        check "  with a hint to log in" has "kiln login $TOK_ADDR" "$WORK/err"
        echo "$TOK_PASS" | run 0 "$KILN" login -u kiln --password-stdin "$TOK_ADDR"
        check "kiln login against a token server" [ $? = 0 ]
        echo nope | run 1 "$KILN" login -u kiln --password-stdin "$TOK_ADDR"
        check "kiln login with a wrong password fails (1)" [ $? = 0 ]
        check "  and does not echo the password" lacks nope "$WORK/err"
        check "a push to another repository mounts the blobs" run 0 "$KILN" push "$TOK_ADDR/base:v1" "$TOK_ADDR/copy:v1"
        check "  (2 mounted)" has "^0 blobs sent (0B), 0 already there, 2 mounted$" "$WORK/out"
        check "  the token asked pull,push on the target and pull on the source together" \
                has "user=kiln service=kiln-test-registry scope=repository:copy:pull,push scope=repository:base:pull granted=repository:copy:pull,push granted=repository:base:pull" "$TOK_TOKEN_LOG"
        check "  skopeo sees it, same digest" [ "$(digest_of "docker://$TOK_ADDR/copy:v1" --tls-verify=false \
                --creds "$TOK_USER:$TOK_PASS")" = "$base" ]
        "$KILN" import -t mine "$R" >/dev/null 2>&1
        check "an imported image uploads" run 0 "$KILN" push mine "$TOK_ADDR/mine:v1"
        check "  (2 blobs sent)" has "^2 blobs sent (.*), 0 already there, 0 mounted$" "$WORK/out"
        # the credential helper path: docker-credential-NAME get
        mkdir -p "$WORK/bin"
        cat >"$WORK/bin/docker-credential-kilntest" <<EOF
#!/bin/sh
[ "\$1" = get ] || exit 1
read -r host
echo "{\"ServerURL\":\"\$host\",\"Username\":\"kiln\",\"Secret\":\"$TOK_PASS\"}"
EOF
        chmod +x "$WORK/bin/docker-credential-kilntest"
        printf '{"credHelpers":{"%s":"kilntest"}}' "$TOK_ADDR" >"$DOCKER_CONFIG/config.json"
        check "credentials from a credHelpers helper work" \
                bash -c 'PATH="$1:$PATH" "$2" push -q "$3/base:v1" "$3/helper:v1" >/dev/null 2>"$4"' \
                _ "$WORK/bin" "$KILN" "$TOK_ADDR" "$WORK/err"
        rm -f "$DOCKER_CONFIG/config.json"
        # renewal: tokens live 2 s; a pull whose first blob takes ~3 s needs a second token
        KILN_REGISTRY_TOKEN_TTL=2 registry_start token short >/dev/null 2>&1 &&
                base_image_push "$WORK/oci:v1" "$SHORT_ADDR/base:v1" >/dev/null 2>&1 &&
                fault_proxy_start "$SHORT_ADDR" "slow:/blobs/,expired-token:/v2/:*" renew >/dev/null 2>&1
        fresh_store
        before=$(grep -c "scope=repository:base:pull " "${SHORT_TOKEN_LOG:-/dev/null}")
        check "a token that expires mid-pull is renewed" run 0 "$KILN" pull -j 1 "${RENEW_ADDR:-}/base:v1"
        check "  same digest" [ "$(printed_digest)" = "$base" ]
        after=$(grep -c "scope=repository:base:pull " "${SHORT_TOKEN_LOG:-/dev/null}")
        check "  (a second token was fetched: $before -> $after)" [ "$((after - before))" -ge 2 ]
else
        not_ok "registry_start token"
fi

# --- TLS with a private CA ----------------------------------------------------------------------
if run 0 registry_start tls sec; then
        base_image_push "$WORK/oci:v1" "$SEC_ADDR/base:v1" >/dev/null 2>&1
        fresh_store
        check "TLS on loopback without its CA: plain http is refused (1)" run 1 "$KILN" pull "$SEC_ADDR/base:v1"
        check "  saying how to trust it" has "answers https, not http: trust its CA with --cert-dir" "$WORK/err"
        check "  on one line" one_line_error
        mkdir -p "$WORK/bogus.d/$SEC_ADDR"
        openssl req -x509 -newkey rsa:2048 -nodes -keyout "$WORK/bogus.key" -out "$WORK/bogus.d/$SEC_ADDR/ca.crt" \
                -subj /CN=bogus -days 1 >/dev/null 2>&1
        check "a CA that did not sign its certificate fails (1)" run 1 "$KILN" pull --cert-dir "$WORK/bogus.d" "$SEC_ADDR/base:v1"
        check "  saying the certificate is not trusted" has "certificate" "$WORK/err"
        check "  on one line" one_line_error
        check "with --cert-dir holding HOST:PORT/ca.crt it works" run 0 "$KILN" pull --cert-dir "$SEC_CERTS_D" "$SEC_ADDR/base:v1"
        check "  same digest" [ "$(printed_digest)" = "$base" ]
        check "and through KILN_CERTS_DIRS" bash -c 'KILN_CERTS_DIRS="$1" "$2" pull -q "$3/base:v1" >/dev/null 2>&1' \
                _ "$SEC_CERTS_D" "$KILN" "$SEC_ADDR"
        check "a push over TLS" run 0 "$KILN" push --cert-dir "$SEC_CERTS_D" "$SEC_ADDR/base:v1" "$SEC_ADDR/copy:v1"
        check "  skopeo sees it, same digest" [ "$(digest_of "docker://$SEC_ADDR/copy:v1" --cert-dir "$SEC_CERT_DIR")" = "$base" ]
        check "--insecure-registry skips verification" run 0 "$KILN" pull --insecure-registry "$SEC_ADDR" "$SEC_ADDR/base:v1"
        printf '[[registry]]\nlocation = "%s"\ninsecure = true\n' "$SEC_ADDR" >"$WORK/insecure.conf"
        check "and so does insecure = true in registries.conf" \
                run 0 "$KILN" pull --registries-conf "$WORK/insecure.conf" "$SEC_ADDR/base:v1"
else
        not_ok "registry_start tls"
fi

# --- secrets never show ---------------------------------------------------------------------------
check "the password appears in no output, store or log of kiln" \
        bash -c '! grep -rq s3cret "$1/out" "$1/err" "$2"' _ "$WORK" "$KILN_ROOT"
registry_cleanup
check "registry_cleanup stops everything" [ -z "$(registry_pids)" ]
finish
