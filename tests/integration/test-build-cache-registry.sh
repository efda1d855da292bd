#!/usr/bin/env bash
# The registry cache (issue 7 §3): two stores that share nothing but a real registry.
# Store A builds a two-stage image and exports its cache (--cache-to type=registry, mode=max
# and min, and type=inline); a fresh store B builds the same Dockerfile with --cache-from and
# runs nothing, fetching only the layers the final image needs; a changed file misses there
# and after; a missing cache is a warning. A RUN writes a random stamp: the same stamp means it
# did not run.
set -u

KILN=${KILN:?KILN must point at the kiln binary}
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d)
# shellcheck source=lib/registry.sh
. "$HERE/lib/registry.sh"
# shellcheck source=lib/tap.sh
. "$HERE/lib/tap.sh"
trap 'registry_cleanup; "$KILN" unshare -- rm -rf "$WORK" 2>/dev/null; rm -rf "$WORK"' EXIT
export DOCKER_CONFIG="$WORK/docker" XDG_CONFIG_HOME="$WORK/xdg" SOURCE_DATE_EPOCH=0
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY

need docker-registry command -v docker-registry || finish
need skopeo command -v skopeo || finish
need umoci command -v umoci || finish
need busybox-static _registry_is_static /bin/busybox || finish
echo "# running as $(id -un) ($(id -u))"

check "a registry" registry_start plain
push_base() { base_image_make "$WORK/base-oci" base >/dev/null && base_image_push "$WORK/base-oci:base" "$REG_ADDR/base:1" >/dev/null; }
check "a base image in it" push_base
R=$REG_ADDR

C="$WORK/ctx"
mkdir -p "$C"
cat >"$C/Dockerfile" <<DF
FROM $R/base:1 AS build
RUN head -c 300000 /dev/urandom > /junk && cat /proc/sys/kernel/random/uuid > /stamp-build
RUN echo built > /out-build
FROM $R/base:1
COPY --from=build /out-build /out
COPY a.txt /a.txt
RUN cat /proc/sys/kernel/random/uuid > /stamp
DF
echo hello >"$C/a.txt"

# b STORE [ARGS...]: builds the context into STORE; $WORK/log the progress, $WORK/o the files
b() {
        local store=$1
        shift
        rm -rf "$WORK/o"
        KILN_ROOT="$WORK/$store" "$KILN" build --progress plain --iidfile "$WORK/iid" -o "type=local,dest=$WORK/o" \
                "$@" "$C" >"$WORK/log" 2>&1 || { sed 's/^/# /' "$WORK/log" | tail -n 20; return 1; }
}
hits() { # hits N: exactly N steps were CACHED
        local got
        got=$(grep -c '^#[0-9]* CACHED' "$WORK/log")
        [ "$got" = "$1" ] && return 0
        echo "# $got steps CACHED, wanted $1"
        grep '^#' "$WORK/log" | sed 's/^/# /' | tail -n 20
        return 1
}
has_blob() { [ -f "$WORK/$1/blobs/sha256/${2#sha256:}" ]; }
# the layer digests of an image in the registry, one a line
layers_of() { skopeo inspect --tls-verify=false --raw "docker://$1" | python3 -c 'import json,sys; [print(l["digest"]) for l in json.load(sys.stdin)["layers"]]'; }

check "store A: built, cache exported (mode=max) and the image pushed" b A -t "$R/app:1" --push \
        --cache-to "type=registry,ref=$R/cache:max,mode=max" --cache-to "type=registry,ref=$R/cache:min"
check "  nothing CACHED in a fresh store" hits 0
check "  the export is reported" grep -q "^# cache: 5 entries .* to $R/cache:max" "$WORK/log"
SA=$(cat "$WORK/o/stamp") IA=$(cat "$WORK/iid")
check "the cache is an OCI manifest with kiln's cache config" bash -c \
        "skopeo inspect --tls-verify=false --raw docker://$R/cache:max | grep -q 'application/vnd.kiln.cache.config.v1+json'"
check "  mode=max holds the build stage's layers too (5 steps, 5 layers)" [ "$(layers_of "$R/cache:max" | wc -l)" = 5 ]
check "  mode=min only the image's steps (3 layers)" [ "$(layers_of "$R/cache:min" | wc -l)" = 3 ]
check "skopeo reads the cache manifest back" bash -c "skopeo inspect --tls-verify=false --raw docker://$R/cache:max >/dev/null"

# the build stage's layers: in the cache, not in the image
mapfile -t IMAGE_LAYERS < <(layers_of "$R/app:1")
BUILD_ONLY=()
while read -r d; do
        case " ${IMAGE_LAYERS[*]} " in *" $d "*) ;; *) BUILD_ONLY+=("$d") ;; esac
done < <(layers_of "$R/cache:max")
check "the build stage has 2 layers the image does not" [ "${#BUILD_ONLY[@]}" = 2 ]

check "store B (empty, shares only the registry): built with --cache-from" b B -t app:1 \
        --cache-from "type=registry,ref=$R/cache:max"
check "  every step CACHED (5)" hits 5
check "  the RUN did not run (A's stamp)" [ "$(cat "$WORK/o/stamp")" = "$SA" ]
check "  the very same image as A's" [ "$(cat "$WORK/iid")" = "$IA" ]
check "  the import is reported" grep -q "^# cache: 5 entries from $R/cache:max" "$WORK/log"
for d in "${IMAGE_LAYERS[@]}"; do
        check "  the image's layer ${d:7:12} is in store B" has_blob B "$d"
done
for d in "${BUILD_ONLY[@]}"; do
        check "  the build stage's layer ${d:7:12} was not downloaded" bash -c "! [ -f '$WORK/B/blobs/sha256/${d#sha256:}' ]"
done
check "  the files are A's" [ "$(cat "$WORK/o/a.txt")" = hello ]
check "store H (empty): --cache-from and --cache-to the same cache, as a CI job does" b H \
        --cache-from "type=registry,ref=$R/cache:max" --cache-to "type=registry,ref=$R/cache:max,mode=max"
check "  every step CACHED (5)" hits 5
check "  the export found every layer there already" grep -q "^# cache: 5 entries (5 layers, 0 sent, 6 there already" "$WORK/log"
for d in "${BUILD_ONLY[@]}"; do
        check "  the build stage's layer ${d:7:12} was not downloaded to export it" \
                bash -c "! [ -f '$WORK/H/blobs/sha256/${d#sha256:}' ]"
done
check "store B again: all hits from its own (local) entries, no registry needed" b B -t app:1
check "  5 hits" hits 5

echo changed >"$C/a.txt"
check "store C: a.txt changed, --cache-from the same cache" b C --cache-from "$R/cache:max"
check "  the build stage and COPY --from hit, COPY a.txt and the RUN after it miss" hits 3
check "  the RUN ran (a new stamp)" [ "$(cat "$WORK/o/stamp")" != "$SA" ]
check "  the new content" [ "$(cat "$WORK/o/a.txt")" = changed ]
echo hello >"$C/a.txt"

check "store D: --cache-from the mode=min cache" b D --cache-from "type=registry,ref=$R/cache:min"
check "  the build stage runs (not in a min cache), the image's 3 steps hit" hits 3
check "  the final RUN did not run" [ "$(cat "$WORK/o/stamp")" = "$SA" ]

check "store A: built again with an inline cache, pushed" b A -t "$R/app:inline" --push --cache-to type=inline
check "  its config carries the cache" bash -c \
        "skopeo inspect --tls-verify=false --config --raw docker://$R/app:inline | grep -q kiln.cache.v1"
check "store E: --cache-from the image itself" b E --cache-from "$R/app:inline"
check "  the image's 3 steps hit" hits 3
check "  the final RUN did not run" [ "$(cat "$WORK/o/stamp")" = "$SA" ]

check "store F: a cache that does not exist is a warning, not a failure" b F --cache-from "type=registry,ref=$R/cache:nosuch"
check "  the warning names it" grep -q "cache:nosuch: not used" "$WORK/log"
check "  nothing CACHED" hits 0

usage_error() { # usage_error MESSAGE ARGS...: kiln build ARGS exits 2 saying MESSAGE
        local msg=$1
        shift
        run 2 "$KILN" build "$@" "$C" && grep -qF -- "$msg" "$WORK/err"
}
check "--cache-to type=local is refused clearly (exit 2)" usage_error "kiln supports type=registry and type=inline" \
        --cache-to type=local,dest=x
check "--cache-to without ref" usage_error "type=registry wants ref=REF" --cache-to type=registry
check "--cache-to mode=medium" usage_error "unknown or bad field 'mode'" --cache-to "type=registry,ref=$R/c,mode=medium"

# a registry that is gone: the base is in store G already
check "store G: built (the base pulled)" b G
registry_cleanup
check "ignore-error=true: an export to a registry that is gone is a warning" b G \
        --cache-to "type=registry,ref=$R/cache:gone,ignore-error=true"
check "without it, the build fails" bash -c "! KILN_ROOT='$WORK/G' '$KILN' build --progress plain \
        --cache-to 'type=registry,ref=$R/cache:gone' '$C' >'$WORK/log' 2>&1"
check "  saying where" grep -q "cache-to $R/cache:gone" "$WORK/log"
finish
