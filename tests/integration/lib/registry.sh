# shellcheck shell=bash
# A real registry for integration tests: Debian's docker-registry (Docker Distribution 2.8) on a
# free loopback port with a throwaway config and storage, optionally behind token auth, basic
# auth or TLS, optionally behind a fault-injecting proxy; and a small busybox base image to push.
#
# Source it from a test that has a scratch directory in $WORK (set -u safe):
#
#     WORK=$(mktemp -d)
#     . "$(dirname "$0")/lib/registry.sh"
#     trap 'registry_cleanup; rm -rf "$WORK"' EXIT      # registry_cleanup MUST be in the trap
#
# Functions (each returns non-zero and says why on stderr when it fails):
#
#   registry_start MODE [NAME]   MODE: plain | htpasswd | token | tls; NAME: [a-z][a-z0-9_]* (default
#                                reg). Sets, with P = NAME in upper case (REG for the default):
#       P_ADDR=127.0.0.1:PORT  P_HOST=127.0.0.1  P_PORT  P_URL=http(s)://P_ADDR  P_MODE
#       P_DIR=$WORK/NAME (config, auth and TLS files)  P_STORAGE=$WORK/NAME/storage
#       P_CONFIG  P_LOG=$WORK/NAME.log  P_PID
#       P_USER P_PASS            kiln / s3cret for htpasswd and token, empty otherwise
#       P_HTPASSWD               the htpasswd file (htpasswd)
#       P_TOKEN_URL              the realm, http://127.0.0.1:TPORT/token (token)
#       P_TOKEN_SERVICE P_TOKEN_ISSUER P_TOKEN_TTL P_TOKEN_PID
#       P_TOKEN_LOG=$WORK/NAME-token.log  (token; one line per token request, see token-server.py;
#                                the token server's own stderr is $WORK/NAME-token.stderr)
#       P_CA                     the throwaway CA certificate (tls)
#       P_CERTS_D=$WORK/certs.d  holds 127.0.0.1:PORT/ca.crt and localhost:PORT/ca.crt (tls)
#       P_CERT_DIR=$P_CERTS_D/127.0.0.1:PORT  (tls; for skopeo --cert-dir / --dest-cert-dir)
#       P_LOCALHOST_ADDR=localhost:PORT       (tls; the certificate also names localhost)
#     All are exported. The token lifetime is $KILN_REGISTRY_TOKEN_TTL seconds (default 300) at
#     start. docker-registry is started without the caller's REGISTRY_* variables (it would
#     read them as config overrides). A plain or tls registry answers /v2/ with 200, an
#     htpasswd or token one with 401 and its challenge (Basic realm=... / Bearer realm=...).
#     Distribution 2.8 accepts a bearer token up to 60 s past its exp: to see a client renew a
#     short-lived token, put a fault proxy with expired-token:/v2/:* in front.
#   registry_cleanup             stop everything this library started (TERM, then KILL after 3 s),
#                                reap it, forget it. Safe to call more than once.
#   registry_pids                print the PIDs of what is running (one a line).
#   fault_proxy_start UPSTREAM_ADDR FAULTS [NAME]
#                                fault-proxy.py in front of a plain-http registry; NAME default
#                                proxy. Sets P_ADDR P_HOST P_PORT P_URL P_PID P_UPSTREAM
#                                P_LOG=$WORK/NAME.log (one line per request, see fault-proxy.py).
#                                FAULTS: KIND:MATCH[:N],... ('' = none); KIND is 500, 429,
#                                drop-request, reset, truncate, flip, slow or expired-token.
#   registry_skopeo_flags ADDR [src|dest]
#                                fill the array REGISTRY_SKOPEO_FLAGS with the skopeo flags that
#                                reach ADDR (a registry or proxy started here): --tls-verify=false
#                                for http, --creds for htpasswd/token, --cert-dir for tls; with
#                                src/dest the flags get that prefix (--src-creds ...).
#   base_image_make DEST_OCI_DIR TAG
#                                a busybox image (bin/busybox from busybox-static, sh echo cat ls
#                                true as symlinks, Cmd ["/bin/sh"]) made with umoci in an OCI
#                                layout; reproducible: same busybox, same digest.
#   base_image_push OCI_DIR:TAG DEST_REF [skopeo copy flags...]
#                                skopeo copy it to DEST_REF ([docker://]HOST:PORT/REPO:TAG); when
#                                HOST:PORT is a registry or proxy started here its flags are added.
#
# Tools: docker-registry, python3 with python3-jwt and python3-cryptography (token), htpasswd
# (apache2-utils), openssl, busybox-static, umoci, skopeo. $KILN_PYTHON picks the python.

_REGISTRY_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
_REGISTRY_PIDS=()
declare -gA _REGISTRY_BY_ADDR=() # ADDR -> variable prefix of the registry (or the proxy's upstream)
declare -ga REGISTRY_SKOPEO_FLAGS=()

_registry_err() { echo "registry.sh: $*" >&2; }

# _registry_python [jwt]: a python3 (with jwt and cryptography when asked), cached.
_REGISTRY_PY=
_REGISTRY_PY_JWT=
_registry_python() {
        local want=${1:-} p
        if [ -z "$want" ] && [ -n "$_REGISTRY_PY" ]; then echo "$_REGISTRY_PY" && return 0; fi
        if [ -n "$want" ] && [ -n "$_REGISTRY_PY_JWT" ]; then echo "$_REGISTRY_PY_JWT" && return 0; fi
        for p in ${KILN_PYTHON:-} /usr/bin/python3 python3; do
                command -v "$p" >/dev/null 2>&1 || continue
                if [ -n "$want" ]; then
                        "$p" -c 'import jwt, cryptography' >/dev/null 2>&1 || continue
                        _REGISTRY_PY_JWT=$p
                else
                        "$p" -c 'import http.server' >/dev/null 2>&1 || continue
                        _REGISTRY_PY=$p
                fi
                echo "$p"
                return 0
        done
        _registry_err "no python3${want:+ with python3-jwt and python3-cryptography}"
        return 1
}

_registry_prefix() { # NAME -> REG-style prefix
        case $1 in
        '' | [!a-z]* | *[!a-z0-9_]*)
                _registry_err "bad name '$1' (want [a-z][a-z0-9_]*)"
                return 1
                ;;
        esac
        echo "${1^^}"
}

_registry_set() { # _registry_set VAR VALUE: a global, exported
        printf -v "$1" '%s' "$2"
        export "${1?}"
}

_registry_free_port() {
        "$(_registry_python)" -c '
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

# _registry_wait URL PID CA LOG OFFSET: until PID has logged (in LOG past OFFSET) that it listens
# and URL answers (any HTTP status); 1 when PID died (or 20 s passed). No http_proxy is used.
_registry_wait() {
        "$(_registry_python)" - "$@" <<'EOF'
import os, ssl, sys, time, urllib.request, urllib.error
url, pid = sys.argv[1], int(sys.argv[2])
ca = sys.argv[3] or None
log, off = sys.argv[4], int(sys.argv[5])
port = url.split("://", 1)[1].split("/", 1)[0]
def listening():  # docker-registry logs this once its listen() succeeded
    with open(log, "rb") as f:
        f.seek(off)
        return ("listening on " + port).encode() in f.read()
ctx = ssl.create_default_context(cafile=ca) if ca else None
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                     urllib.request.HTTPSHandler(context=ctx))
def alive():
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False
deadline = time.time() + 20
while time.time() < deadline:
    if not alive():
        sys.exit(1)
    if not listening():
        time.sleep(0.05)
        continue
    try:
        opener.open(url, timeout=2).close()
    except urllib.error.HTTPError:
        pass
    except Exception:
        time.sleep(0.05)
        continue
    sys.exit(0 if alive() else 1)
sys.exit(1)
EOF
}

# _registry_spawn LOG CMD...: start CMD in the background, remembered for registry_cleanup;
# sets _REGISTRY_LAST_PID.
_registry_spawn() {
        local log=$1
        shift
        "$@" </dev/null >>"$log" 2>&1 &
        _REGISTRY_LAST_PID=$!
        _REGISTRY_PIDS+=("$_REGISTRY_LAST_PID")
}

_registry_stop_pid() { # stop one PID now (used when a start attempt fails)
        local pid=$1 p keep=()
        kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
        for p in "${_REGISTRY_PIDS[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
        _REGISTRY_PIDS=("${keep[@]}")
}

_registry_proc_alive() { # PID is running (not a zombie)
        local st
        st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
        st=${st##*) }
        st=${st%% *}
        [ "$st" != Z ] && [ "$st" != X ]
}

# _registry_port_file_wait FILE PID: print the port a helper wrote to FILE, 1 if PID died first.
_registry_port_file_wait() {
        local i
        for ((i = 0; i < 200; i++)); do
                if [ -s "$1" ]; then
                        cat "$1"
                        return 0
                fi
                _registry_proc_alive "$2" || return 1
                sleep 0.05
        done
        return 1
}

registry_pids() {
        local p
        for p in "${_REGISTRY_PIDS[@]}"; do _registry_proc_alive "$p" && echo "$p"; done
        return 0
}

registry_cleanup() {
        local p i alive
        [ "${#_REGISTRY_PIDS[@]}" -gt 0 ] || return 0
        for p in "${_REGISTRY_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
        for ((i = 0; i < 60; i++)); do
                alive=0
                for p in "${_REGISTRY_PIDS[@]}"; do _registry_proc_alive "$p" && alive=1; done
                [ "$alive" = 0 ] && break
                sleep 0.05
        done
        for p in "${_REGISTRY_PIDS[@]}"; do
                _registry_proc_alive "$p" && kill -KILL "$p" 2>/dev/null
                wait "$p" 2>/dev/null
        done
        _REGISTRY_PIDS=()
        _REGISTRY_BY_ADDR=()
        return 0
}

_registry_tls_files() { # DIR: a throwaway CA and a server certificate for 127.0.0.1 + localhost
        local d=$1
        mkdir -p "$d" || return 1
        (
                cd "$d" || exit 1
                openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 2 \
                        -keyout ca.key -out ca.crt -subj "/CN=kiln test CA $$" \
                        -addext "basicConstraints=critical,CA:TRUE" \
                        -addext "keyUsage=critical,keyCertSign,cRLSign" &&
                        openssl req -newkey rsa:2048 -nodes -sha256 -keyout server.key \
                                -out server.csr -subj "/CN=127.0.0.1" &&
                        printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" \
                                "basicConstraints=CA:FALSE" \
                                "keyUsage=critical,digitalSignature,keyEncipherment" \
                                "extendedKeyUsage=serverAuth" >server.ext &&
                        openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key \
                                -set_serial "0x$(openssl rand -hex 8)" -days 2 -sha256 \
                                -extfile server.ext -out server.crt
        ) >"$d/openssl.log" 2>&1 || {
                _registry_err "openssl failed:"
                cat "$d/openssl.log" >&2
                return 1
        }
}

_registry_token_server_start() { # NAME DIR P: sets P_TOKEN_*
        local name=$1 dir=$2 P=$3 py port
        py=$(_registry_python jwt) || return 1
        (
                cd "$dir" &&
                        openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 2 \
                                -keyout token.key -out token.crt -subj "/CN=kiln test token issuer"
        ) >"$dir/openssl-token.log" 2>&1 || {
                _registry_err "openssl failed:"
                cat "$dir/openssl-token.log" >&2
                return 1
        }
        rm -f "$dir/token.port"
        : >"$WORK/$name-token.log"
        _registry_spawn "$WORK/$name-token.stderr" "$py" "$_REGISTRY_LIB_DIR/token-server.py" \
                --key "$dir/token.key" --cert "$dir/token.crt" --port-file "$dir/token.port" \
                --issuer kiln-test-issuer --service kiln-test-registry \
                --user kiln --password s3cret --expires-in "${KILN_REGISTRY_TOKEN_TTL:-300}" \
                --log "$WORK/$name-token.log"
        _registry_set "${P}_TOKEN_PID" "$_REGISTRY_LAST_PID"
        port=$(_registry_port_file_wait "$dir/token.port" "$_REGISTRY_LAST_PID") || {
                _registry_err "the token server did not start:"
                cat "$WORK/$name-token.stderr" >&2
                return 1
        }
        _registry_set "${P}_TOKEN_URL" "http://127.0.0.1:$port/token"
        _registry_set "${P}_TOKEN_SERVICE" kiln-test-registry
        _registry_set "${P}_TOKEN_ISSUER" kiln-test-issuer
        _registry_set "${P}_TOKEN_TTL" "${KILN_REGISTRY_TOKEN_TTL:-300}"
        _registry_set "${P}_TOKEN_LOG" "$WORK/$name-token.log"
}

registry_start() {
        local mode=${1:-} name=${2:-reg} P dir port try url ca="" scheme=http pid
        P=$(_registry_prefix "$name") || return 1
        : "${WORK:?registry.sh needs WORK, a scratch directory}"
        case $mode in
        plain | htpasswd | token | tls) ;;
        *)
                _registry_err "registry_start: bad mode '$mode' (plain, htpasswd, token or tls)"
                return 1
                ;;
        esac
        command -v docker-registry >/dev/null || {
                _registry_err "docker-registry is not installed"
                return 1
        }
        dir=$WORK/$name
        if [ -e "$dir" ]; then
                _registry_err "registry_start: $dir exists (a name can be started once)"
                return 1
        fi
        mkdir -p "$dir/storage" || return 1
        _registry_set "${P}_MODE" "$mode"
        _registry_set "${P}_DIR" "$dir"
        _registry_set "${P}_STORAGE" "$dir/storage"
        _registry_set "${P}_CONFIG" "$dir/config.yml"
        _registry_set "${P}_LOG" "$WORK/$name.log"
        _registry_set "${P}_USER" ""
        _registry_set "${P}_PASS" ""

        local auth=""
        case $mode in
        htpasswd)
                command -v htpasswd >/dev/null || {
                        _registry_err "htpasswd (apache2-utils) is not installed"
                        return 1
                }
                htpasswd -Bbn kiln s3cret >"$dir/htpasswd" || return 1
                _registry_set "${P}_HTPASSWD" "$dir/htpasswd"
                _registry_set "${P}_USER" kiln
                _registry_set "${P}_PASS" s3cret
                auth="auth:
  htpasswd:
    realm: kiln-test-realm
    path: $dir/htpasswd"
                ;;
        token)
                _registry_token_server_start "$name" "$dir" "$P" || return 1
                _registry_set "${P}_USER" kiln
                _registry_set "${P}_PASS" s3cret
                local turl=${P}_TOKEN_URL
                auth="auth:
  token:
    realm: ${!turl}
    service: kiln-test-registry
    issuer: kiln-test-issuer
    rootcertbundle: $dir/token.crt"
                ;;
        tls)
                _registry_tls_files "$dir/tls" || return 1
                ca=$dir/tls/ca.crt
                scheme=https
                ;;
        esac

        for ((try = 1; try <= 8; try++)); do
                port=$(_registry_free_port) || return 1
                local tlsconf=""
                [ "$mode" = tls ] && tlsconf="
  tls:
    certificate: $dir/tls/server.crt
    key: $dir/tls/server.key"
                cat >"$dir/config.yml" <<EOF
version: 0.1
log:
  level: info
  formatter: text
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: $dir/storage
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
  cache:
    blobdescriptor: inmemory
http:
  addr: 127.0.0.1:$port
  secret: kiln-test-secret-$name$tlsconf
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: false
$auth
EOF
                echo "=== registry_start $mode $name: attempt $try on port $port" >>"$WORK/$name.log"
                local off
                off=$(stat -c %s "$WORK/$name.log")
                # docker-registry takes any REGISTRY_* variable as a config override
                # (REGISTRY_AUTH_FILE would be auth.file): start it without them
                local unset_env=() v
                for v in ${!REGISTRY_@}; do unset_env+=(-u "$v"); done
                _registry_spawn "$WORK/$name.log" env "${unset_env[@]}" docker-registry serve "$dir/config.yml"
                pid=$_REGISTRY_LAST_PID
                url="$scheme://127.0.0.1:$port/v2/"
                if _registry_wait "$url" "$pid" "$ca" "$WORK/$name.log" "$off"; then
                        break
                fi
                _registry_stop_pid "$pid"
                if ! tail -c "+$((off + 1))" "$WORK/$name.log" | grep -q 'address already in use'; then
                        _registry_err "docker-registry did not start ($mode $name); its log:"
                        tail -n 20 "$WORK/$name.log" >&2
                        return 1
                fi
                pid=""
        done
        if [ -z "$pid" ]; then
                _registry_err "docker-registry found no free port after $((try - 1)) tries"
                return 1
        fi
        _registry_set "${P}_PID" "$pid"
        _registry_set "${P}_HOST" 127.0.0.1
        _registry_set "${P}_PORT" "$port"
        _registry_set "${P}_ADDR" "127.0.0.1:$port"
        _registry_set "${P}_URL" "$scheme://127.0.0.1:$port"
        _REGISTRY_BY_ADDR["127.0.0.1:$port"]=$P
        if [ "$mode" = tls ]; then
                _registry_set "${P}_CA" "$ca"
                _registry_set "${P}_CERTS_D" "$WORK/certs.d"
                _registry_set "${P}_CERT_DIR" "$WORK/certs.d/127.0.0.1:$port"
                _registry_set "${P}_LOCALHOST_ADDR" "localhost:$port"
                _REGISTRY_BY_ADDR["localhost:$port"]=$P
                mkdir -p "$WORK/certs.d/127.0.0.1:$port" "$WORK/certs.d/localhost:$port" &&
                        cp "$ca" "$WORK/certs.d/127.0.0.1:$port/ca.crt" &&
                        cp "$ca" "$WORK/certs.d/localhost:$port/ca.crt" || return 1
        fi
        return 0
}

fault_proxy_start() {
        local upstream=${1:-} faults=${2-} name=${3:-proxy} P py port dir
        P=$(_registry_prefix "$name") || return 1
        : "${WORK:?registry.sh needs WORK, a scratch directory}"
        if [ -z "$upstream" ] || [ $# -lt 2 ]; then
                _registry_err "usage: fault_proxy_start UPSTREAM_ADDR FAULTS [NAME]"
                return 1
        fi
        py=$(_registry_python) || return 1
        dir=$WORK/$name.d
        mkdir -p "$dir" || return 1
        rm -f "$dir/port"
        : >"$WORK/$name.log"
        _registry_spawn "$dir/stderr" "$py" "$_REGISTRY_LIB_DIR/fault-proxy.py" \
                --upstream "$upstream" --faults "$faults" --port-file "$dir/port" \
                --log "$WORK/$name.log"
        port=$(_registry_port_file_wait "$dir/port" "$_REGISTRY_LAST_PID") || {
                _registry_err "fault-proxy did not start:"
                cat "$dir/stderr" >&2
                return 1
        }
        _registry_set "${P}_PID" "$_REGISTRY_LAST_PID"
        _registry_set "${P}_HOST" 127.0.0.1
        _registry_set "${P}_PORT" "$port"
        _registry_set "${P}_ADDR" "127.0.0.1:$port"
        _registry_set "${P}_URL" "http://127.0.0.1:$port"
        _registry_set "${P}_UPSTREAM" "$upstream"
        _registry_set "${P}_LOG" "$WORK/$name.log"
        # the proxy speaks http; credentials are the upstream's
        _REGISTRY_BY_ADDR["127.0.0.1:$port"]=PROXY:${_REGISTRY_BY_ADDR[$upstream]:-}
        return 0
}

registry_skopeo_flags() {
        local addr=${1:-} pre=${2:-} P v mode user pass cdir proxied=""
        REGISTRY_SKOPEO_FLAGS=()
        [ -n "$pre" ] && pre="$pre-"
        P=${_REGISTRY_BY_ADDR[$addr]:-}
        if [ -z "$P" ]; then
                _registry_err "registry_skopeo_flags: $addr was not started here"
                return 1
        fi
        if [ "${P%%:*}" = PROXY ]; then
                proxied=1
                P=${P#PROXY:}
        fi
        if [ -n "$P" ]; then
                v=${P}_MODE && mode=${!v}
                v=${P}_USER && user=${!v}
                v=${P}_PASS && pass=${!v}
        else
                mode=plain user="" pass=""
        fi
        if [ -n "$proxied" ] || [ "$mode" != tls ]; then
                REGISTRY_SKOPEO_FLAGS+=("--${pre}tls-verify=false")
        else
                cdir=$WORK/certs.d/$addr
                REGISTRY_SKOPEO_FLAGS+=("--${pre}cert-dir=$cdir")
        fi
        if [ -n "$user" ]; then
                REGISTRY_SKOPEO_FLAGS+=("--${pre}creds=$user:$pass")
        fi
        return 0
}

# _registry_is_static FILE: an ELF without a program interpreter
_registry_is_static() {
        "$(_registry_python)" - "$1" <<'EOF'
import struct, sys
with open(sys.argv[1], "rb") as f:
    h = f.read(64)
    if h[:4] != b"\x7fELF":
        sys.exit(1)
    c64, le = h[4] == 2, h[5] == 1
    e = "<" if le else ">"
    if c64:
        phoff, = struct.unpack(e + "Q", h[32:40]); phentsize, phnum = struct.unpack(e + "HH", h[54:58])
    else:
        phoff, = struct.unpack(e + "I", h[28:32]); phentsize, phnum = struct.unpack(e + "HH", h[42:46])
    for i in range(phnum):
        f.seek(phoff + i * phentsize)
        if struct.unpack(e + "I", f.read(4))[0] == 3:  # PT_INTERP
            sys.exit(1)
sys.exit(0)
EOF
}

base_image_make() {
        local dest=${1:-} tag=${2:-} bb="" c rootfs t=2000-01-01T00:00:00Z owner=()
        if [ -z "$dest" ] || [ -z "$tag" ]; then
                _registry_err "usage: base_image_make DEST_OCI_DIR TAG"
                return 1
        fi
        command -v umoci >/dev/null || {
                _registry_err "umoci is not installed"
                return 1
        }
        for c in /bin/busybox /usr/bin/busybox "$(command -v busybox 2>/dev/null)"; do
                if [ -n "$c" ] && [ -f "$c" ] && _registry_is_static "$c"; then
                        bb=$c
                        break
                fi
        done
        if [ -z "$bb" ]; then
                _registry_err "no static busybox (install busybox-static)"
                return 1
        fi
        rootfs=$(mktemp -d "${WORK:-${TMPDIR:-/tmp}}/busybox-rootfs.XXXXXX") || return 1
        mkdir -p "$rootfs/bin" &&
                cp "$bb" "$rootfs/bin/busybox" &&
                chmod 0755 "$rootfs" "$rootfs/bin" "$rootfs/bin/busybox" &&
                ln -s busybox "$rootfs/bin/sh" && ln -s busybox "$rootfs/bin/echo" &&
                ln -s busybox "$rootfs/bin/cat" && ln -s busybox "$rootfs/bin/ls" &&
                ln -s busybox "$rootfs/bin/true" &&
                find "$rootfs" -exec touch -h -d "$t" {} + || {
                rm -rf "$rootfs"
                return 1
        }
        if [ "$(id -u)" != 0 ]; then
                owner=(--rootless --uid-map "0:$(id -u):1" --gid-map "0:$(id -g):1")
        fi
        {
                { [ -e "$dest/index.json" ] || umoci init --layout "$dest"; } &&
                        umoci new --image "$dest:$tag" &&
                        umoci insert "${owner[@]}" --image "$dest:$tag" \
                                --history.created "$t" --history.created_by "kiln test: busybox" \
                                "$rootfs/bin" /bin &&
                        umoci config --image "$dest:$tag" --created "$t" --no-history \
                                --os linux --config.cmd /bin/sh \
                                --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin &&
                        umoci gc --layout "$dest"
        } >"$rootfs.log" 2>&1
        local rc=$?
        if [ "$rc" != 0 ]; then
                _registry_err "umoci failed:"
                cat "$rootfs.log" >&2
        fi
        rm -rf "$rootfs" "$rootfs.log"
        return "$rc"
}

base_image_push() {
        local src=${1:-} dest=${2:-} addr
        if [ -z "$src" ] || [ -z "$dest" ]; then
                _registry_err "usage: base_image_push OCI_DIR:TAG DEST_REF [skopeo flags...]"
                return 1
        fi
        shift 2
        dest=${dest#docker://}
        addr=${dest%%/*}
        REGISTRY_SKOPEO_FLAGS=()
        if [ -n "${_REGISTRY_BY_ADDR[$addr]:-}" ]; then
                registry_skopeo_flags "$addr" dest || return 1
        fi
        skopeo --insecure-policy copy --quiet "${REGISTRY_SKOPEO_FLAGS[@]}" "$@" \
                "oci:$src" "docker://$dest"
}
