#!/usr/bin/env bash
# The examples a user copies from, end to end: kiln builds examples/python-app and
# examples/multi-stage, pushes them to a real registry (Debian's docker-registry on loopback),
# and real runtimes pull and run them: podman (with runc) and runc from an umoci bundle. The web
# app must answer HTTP with its greeting, the program must print, and the multi-stage image must
# hold no compiler. Then a private containerd (Debian's, with runc: the runtime Kubernetes uses)
# pulls both from the registry and ctr runs them. The last diag line, "# ran: ...", says which
# runtimes ran each example (each named only when its check passed); it is also written to
# $KILN_EXAMPLES_REPORT when that is set. The Debian bases are made with debootstrap by
# examples/base-images (the slow part); when kiln's default store already has them (.ci/setup
# makes them), they are copied from there.
set -u

KILN=${KILN:?KILN must point at the kiln binary}
SRC=${KILN_SOURCE_DIR:?KILN_SOURCE_DIR must point at the source tree}
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/kiln-examples-XXXXXX")
# shellcheck source=lib/registry.sh
. "$HERE/lib/registry.sh"
# shellcheck source=lib/tap.sh
. "$HERE/lib/tap.sh"
CIDS=()
CTD_PID=
cleanup() {
        local c
        for c in "${CIDS[@]}"; do "${P[@]}" rm -f "$c" >/dev/null 2>&1; done
        containerd_stop
        registry_cleanup
        rm -rf "$WORK"
}
# The private containerd: its tasks killed and deleted (so no shim outlives it), then it is
# stopped and reaped, and whatever it left mounted under $WORK is unmounted.
containerd_stop() {
        local t m
        [ -n "$CTD_PID" ] || return 0
        for t in $("${CTR[@]}" tasks ls -q 2>/dev/null); do
                "${CTR[@]}" tasks kill -s SIGKILL "$t" >/dev/null 2>&1
                for _ in 1 2 3 4 5 6 7 8 9 10; do
                        "${CTR[@]}" tasks delete "$t" >/dev/null 2>&1 && break
                        sleep 0.3
                done
        done
        for t in $("${CTR[@]}" containers ls -q 2>/dev/null); do "${CTR[@]}" containers delete "$t" >/dev/null 2>&1; done
        kill "$CTD_PID" 2>/dev/null
        wait "$CTD_PID" 2>/dev/null
        CTD_PID=
        while read -r m; do
                umount -R "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
        done < <(awk -v w="$WORK/" 'index($2, w) == 1 { print $2 }' /proc/mounts | sort -r)
}
# The runtimes that ran each example: ran VAR RUNTIME DESC CMD... is check DESC CMD that also
# adds RUNTIME to VAR when CMD succeeds.
RAN_APP=
RAN_HELLO=
ran() {
        local var=$1 rt=$2 d=$3
        shift 3
        if "$@"; then
                ok "$d"
                printf -v "$var" '%s %s' "${!var}" "$rt"
        else
                not_ok "$d"
        fi
}
report() {
        local line="ran: python-app:${RAN_APP:- none}; hello:${RAN_HELLO:- none}"
        echo "# $line"
        if [ -n "${KILN_EXAMPLES_REPORT:-}" ]; then echo "$line" >"$KILN_EXAMPLES_REPORT"; fi
}
trap cleanup EXIT
SEED=${KILN_EXAMPLES_STORE:-/var/lib/kiln}
export KILN_ROOT="$WORK/store" REGISTRY_AUTH_FILE="$WORK/auth.json" DOCKER_CONFIG="$WORK/docker"
unset SOURCE_DATE_EPOCH

sk() { skopeo --insecure-policy "$@"; }
has() { grep -q -- "$1" "$2"; }

have=1
if [ "$(id -u)" != 0 ]; then
        need "root (debootstrap, podman with runc)" false || have=0
fi
need skopeo command -v skopeo || have=0
need umoci command -v umoci || have=0
need runc command -v runc || have=0
need podman command -v podman || have=0
need docker-registry command -v docker-registry || have=0
need debootstrap command -v debootstrap || have=0
[ "$have" = 1 ] || { report; finish; }

P=(env -u REGISTRY_AUTH_FILE -u DOCKER_CONFIG podman --root "$WORK/podman" --runroot "$WORK/podman-run"
        --storage-driver vfs --runtime runc --cgroup-manager cgroupfs)

# --- the bases: debian:12 and debian-python:3.11 ------------------------------------------------
"$KILN" images >/dev/null
for base in debian:12 debian-python:3.11; do
        if KILN_ROOT="$SEED" "$KILN" images 2>/dev/null | grep -q "^$base "; then
                sk copy "oci:$SEED:$base" "oci:$KILN_ROOT:$base" >/dev/null 2>"$WORK/err"
                check "base $base copied from $SEED" [ $? = 0 ]
        elif [ "$base" = debian:12 ]; then
                check "base $base made with debootstrap" run 0 env KILN="$KILN" "$SRC/examples/base-images.sh"
        else
                check "base $base made with debootstrap" run 0 env KILN="$KILN" "$SRC/examples/base-images/make-debian-python"
        fi
done
check "  the store has both" bash -c '"$1" images | grep -q "^debian:12 " && "$1" images | grep -q "^debian-python:3.11 "' _ "$KILN"

check "a registry on loopback" registry_start plain
APP="$REG_ADDR/examples/python-app:1"
HELLO="$REG_ADDR/examples/hello:1"

# --- examples/python-app -------------------------------------------------------------------------
check "kiln builds examples/python-app and pushes it" \
        run 0 "$KILN" build --progress plain -t "$APP" --push --iidfile "$WORK/app.iid" "$SRC/examples/python-app"
check "  pip ran in RUN" has "pip install --no-cache-dir -r requirements.txt" "$WORK/err"
check "  the config: CMD, EXPOSE, ENV, WORKDIR" \
        bash -c 'skopeo --insecure-policy inspect --config --tls-verify=false "docker://$1" | python3 -c "
import json, sys
c = json.load(sys.stdin)[\"config\"]
ok = (c[\"Cmd\"] == [\"python\", \"app.py\"] and \"80/tcp\" in c[\"ExposedPorts\"]
      and \"NAME=World\" in c[\"Env\"] and c[\"WorkingDir\"] == \"/app\")
sys.exit(0 if ok else 1)"' _ "$APP"

check "podman pulls it from the registry" run 0 "${P[@]}" pull --tls-verify=false "$APP"
check "  with kiln's image id" bash -c '[ "sha256:$("$@" image inspect --format "{{.Id}}" "'"$APP"'")" = "$(cat "'"$WORK/app.iid"'")" ]' _ "${P[@]}"
# Its own CMD serves port 80 in the container's network namespace; a GET from inside answers.
if run 0 "${P[@]}" run -d --network none --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 "$APP"; then
        cid=$(cat "$WORK/out")
        CIDS+=("$cid")
        ok "podman runs it (its CMD: python app.py)"
        get='import time, urllib.request
for _ in range(50):
    try:
        print(urllib.request.urlopen("http://127.0.0.1:80/").read().decode()); break
    except OSError:
        time.sleep(0.2)'
        run 0 "${P[@]}" exec "$cid" python -c "$get"
        ran RAN_APP podman "  and GET / answers \"Hello World!\"" has "^Hello World!" "$WORK/out"
else
        not_ok "podman runs it (its CMD: python app.py)"
fi

# runc from an umoci bundle: the same image, fetched by skopeo, its app started and asked.
check "skopeo copies it out of the registry" \
        run 0 sk copy --src-tls-verify=false "docker://$APP" "oci:$WORK/oci:app"
check "umoci unpacks it into a bundle" run 0 umoci unpack --image "$WORK/oci:app" "$WORK/bundle-app"
python3 - "$WORK/bundle-app/config.json" <<'PYEOF'
import json, sys
p = sys.argv[1]
c = json.load(open(p))
c["process"]["terminal"] = False
c["process"]["args"] = ["sh", "-c", "python app.py & python -c '" +
    "import time, urllib.request\n"
    "for _ in range(50):\n"
    "    try:\n"
    "        print(urllib.request.urlopen(\"http://127.0.0.1:80/\").read().decode()); break\n"
    "    except OSError:\n"
    "        time.sleep(0.2)'; kill %1"]
c["process"]["env"] = [e for e in c["process"]["env"] if not e.startswith("NAME=")] + ["NAME=runc"]
json.dump(c, open(p, "w"))
PYEOF
ran RAN_APP runc "runc runs it and GET / answers \"Hello runc!\"" \
        bash -c 'cd "$1" && timeout 60 runc run "kiln-ex-$$" </dev/null >"$2" 2>&1; grep -q "^Hello runc!" "$2" || { sed "s/^/# /" "$2"; false; }' \
        _ "$WORK/bundle-app" "$WORK/runc-app.out"

# --- examples/multi-stage --------------------------------------------------------------------------
check "kiln builds examples/multi-stage and pushes it" \
        run 0 "$KILN" build --progress plain -t "$HELLO" --push "$SRC/examples/multi-stage"
check "  its build stage installed gcc with apt-get" has "apt-get install -y --no-install-recommends gcc" "$WORK/err"
check "podman pulls and runs it" run 0 "${P[@]}" run --rm --network none --pull always --tls-verify=false \
        --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 "$HELLO" podman
ran RAN_HELLO podman "  the program prints" has "^Hello from a multi-stage build: podman$" "$WORK/out"
check "skopeo copies it out of the registry" \
        run 0 sk copy --src-tls-verify=false "docker://$HELLO" "oci:$WORK/oci:hello"
check "umoci unpacks it" run 0 umoci unpack --image "$WORK/oci:hello" "$WORK/bundle-hello"
check "  the final image holds the binary and no compiler, no shell" \
        bash -c '[ -x "$1/hello" ] && [ -z "$(find "$1" -name "gcc*" -o -name "cc1" -o -name sh | head -n 1)" ] &&
                [ "$(find "$1" -type f | wc -l)" = 1 ]' _ "$WORK/bundle-hello/rootfs"
python3 - "$WORK/bundle-hello/config.json" <<'PYEOF'
import json, sys
p = sys.argv[1]
c = json.load(open(p))
c["process"]["terminal"] = False
c["process"]["args"] = ["/hello", "runc"]
json.dump(c, open(p, "w"))
PYEOF
ran RAN_HELLO runc "runc runs it from the bundle" \
        bash -c 'cd "$1" && timeout 60 runc run "kiln-ex-$$" </dev/null >"$2" 2>&1; grep -qx "Hello from a multi-stage build: runc" "$2" || { sed "s/^/# /" "$2"; false; }' \
        _ "$WORK/bundle-hello" "$WORK/runc-hello.out"

# --- containerd: ctr pulls both from the registry and runs them ------------------------------------
# A private containerd (root, state and socket under $WORK; no CRI plugin), its tasks run by the
# io.containerd.runc.v2 shim with runc and cgroupfs (crun 1.8 refuses this machine's hybrid cgroup
# layout). Its snapshotter is overlayfs, or native where overlayfs does not load.
if need "containerd (containerd, ctr, containerd-shim-runc-v2)" \
        bash -c 'command -v containerd && command -v ctr && command -v containerd-shim-runc-v2'; then
        CTD=$WORK/containerd
        mkdir -p "$CTD"
        printf '%s\n' 'version = 2' "root = \"$CTD/root\"" "state = \"$CTD/state\"" \
                'disabled_plugins = ["io.containerd.grpc.v1.cri"]' \
                '[grpc]' "  address = \"$WORK/containerd.sock\"" \
                '[ttrpc]' "  address = \"$WORK/containerd.sock.ttrpc\"" \
                '[debug]' "  address = \"$WORK/containerd-debug.sock\"" \
                '[plugins."io.containerd.internal.v1.opt"]' "  path = \"$CTD/opt\"" >"$CTD/config.toml"
        CTR=(ctr --address "$WORK/containerd.sock" --namespace kiln-examples)
        containerd --config "$CTD/config.toml" </dev/null >"$WORK/containerd.log" 2>&1 &
        CTD_PID=$!
        for _ in $(seq 50); do
                "${CTR[@]}" version >/dev/null 2>&1 && break
                kill -0 "$CTD_PID" 2>/dev/null || break
                sleep 0.2
        done
        if "${CTR[@]}" version >/dev/null 2>&1; then
                ok "a private containerd ($(containerd --version | awk '{ print $3 }')) serves $WORK/containerd.sock"
        else
                not_ok "a private containerd serves $WORK/containerd.sock"
                sed 's/^/# /' "$WORK/containerd.log" | tail -n 15
        fi
        CTD_SNAP=native
        if "${CTR[@]}" plugins ls 2>/dev/null | grep -Eq '^io\.containerd\.snapshotter\.v1 +overlayfs .* ok *$'; then
                CTD_SNAP=overlayfs
        fi
        echo "# containerd's snapshotter: $CTD_SNAP"
        # ctr run's defaults, spelled out: the runc v2 shim, runc (cgroupfs: no
        # --runc-systemd-cgroup), its state and the IO fifos under $WORK; a fresh network
        # namespace (no --net-host), so port 80 is the container's own.
        CRUN=("${CTR[@]}" run --snapshotter "$CTD_SNAP" --runtime io.containerd.runc.v2
                --runc-binary "$(command -v runc)" --runc-root "$CTD/runc" --fifo-dir "$CTD/fifo")

        check "ctr pulls examples/multi-stage from the registry" \
                run 0 "${CTR[@]}" images pull --plain-http --snapshotter "$CTD_SNAP" "$HELLO"
        # ctr run's arguments replace the image's ENTRYPOINT and CMD, so /hello is named.
        ran RAN_HELLO containerd "  ctr runs it: the program prints" bash -c '
                timeout 60 "${@:3}" --rm "$1" kiln-ex-hello /hello containerd </dev/null >"$2" 2>&1
                grep -qx "Hello from a multi-stage build: containerd" "$2" || { sed "s/^/# /" "$2"; false; }' \
                _ "$HELLO" "$WORK/ctr-hello.out" "${CRUN[@]}"

        check "ctr pulls examples/python-app from the registry" \
                run 0 "${CTR[@]}" images pull --plain-http --snapshotter "$CTD_SNAP" "$APP"
        # Its own CMD in the background (no IO), then a GET from inside, as with podman.
        if run 0 timeout 60 "${CRUN[@]}" -d --null-io "$APP" kiln-ex-app; then
                ok "  ctr runs it (its CMD: python app.py)"
                get='import time, urllib.request
for _ in range(50):
    try:
        print(urllib.request.urlopen("http://127.0.0.1:80/").read().decode()); break
    except OSError:
        time.sleep(0.2)'
                run 0 timeout 60 "${CTR[@]}" tasks exec --exec-id get1 --fifo-dir "$CTD/fifo" kiln-ex-app python -c "$get" </dev/null
                ran RAN_APP containerd "  and GET / answers \"Hello World!\"" has "^Hello World!" "$WORK/out"
                "${CTR[@]}" tasks kill -s SIGKILL kiln-ex-app >/dev/null 2>&1
                for _ in $(seq 20); do
                        "${CTR[@]}" tasks delete kiln-ex-app >/dev/null 2>&1 && break
                        sleep 0.2
                done
                check "  its task and container deleted" run 0 "${CTR[@]}" containers delete kiln-ex-app
        else
                not_ok "  ctr runs it (its CMD: python app.py)"
        fi
fi

report
finish
