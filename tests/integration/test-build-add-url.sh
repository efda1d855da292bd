#!/usr/bin/env bash
# ADD <url> in kiln build, end to end: a python3 http.server (and an https one with a
# self-signed CA) on 127.0.0.1 serves the files; the image's layers are read back (their tar
# entries: content, name, mode, owner, mtime). Destination naming as BuildKit's (a directory
# takes the URL path's last element, else "__unnamed__"; a file path is the name), mode 0600,
# Last-Modified as the mtime, --checksum, --chmod, --chown, no extraction of archives, several
# sources, HTTP and TLS failures (exit 1, one line naming the URL, the store as it was), COPY
# and git URLs refused, and a symlink in the image that must not carry the write outside it.
set -u

KILN=${KILN:?KILN must point at the kiln binary}
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d)
# shellcheck source=lib/tap.sh
. "$HERE/lib/tap.sh"
SERVER_PIDS=()
cleanup() {
        local p
        for p in "${SERVER_PIDS[@]}"; do
                kill "$p" 2>/dev/null
                wait "$p" 2>/dev/null
        done
        # A rootless build's files may belong to subordinate ids: removed from inside the namespace.
        "$KILN" unshare -- rm -rf "$WORK" 2>/dev/null
        rm -rf "$WORK"
}
trap cleanup EXIT
export KILN_ROOT="$WORK/store" DOCKER_CONFIG="$WORK/docker" XDG_CONFIG_HOME="$WORK/xdg"
unset SOURCE_DATE_EPOCH http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY
unset SSL_CERT_FILE SSL_CERT_DIR

has() { grep -q -- "$1" "$2"; }
# skip WHY: a SKIP line for a missing machine capability (a failure under KILN_MUST_WORK=1)
skip() {
        if [ "${KILN_MUST_WORK:-}" = 1 ]; then
                not_ok "$1 (KILN_MUST_WORK=1)"
        else
                echo "ok $((n += 1)) # SKIP $1"
        fi
}

PY=
for p in ${KILN_PYTHON:-} /usr/bin/python3 python3; do
        if command -v "$p" >/dev/null 2>&1 && "$p" -c 'import http.server, tarfile' 2>/dev/null; then
                PY=$p
                break
        fi
done
need python3 [ -n "$PY" ] || finish

if [ "$(id -u)" = 0 ]; then
        MODE=root
else
        if ! "$KILN" unshare -- true >/dev/null 2>&1; then
                skip "no user namespace for a rootless build here"
                finish
        fi
        if grep -q -e "^$(id -un):" -e "^$(id -u):" /etc/subuid 2>/dev/null && command -v newuidmap >/dev/null; then
                MODE=ranges
        else
                MODE=single
        fi
fi
echo "# running as $(id -un) ($(id -u)): $MODE"

# --- the served files --------------------------------------------------------------------------------
SRV="$WORK/srv"
mkdir -p "$SRV/dir" "$SRV/pkg/sub"
printf 'hello from the server\n' >"$SRV/hello.txt"
touch -d '2021-03-04 05:06:07 UTC' "$SRV/hello.txt"
LM=$(date -d '2021-03-04 05:06:07 UTC' +%s)
printf 'binary\0data\n' >"$SRV/dir/file.bin"
printf 'spaced\n' >"$SRV/with space.txt"
echo inside >"$SRV/pkg/sub/inner.txt"
tar -C "$SRV/pkg" -czf "$SRV/archive.tar.gz" sub
head -c 12582912 /dev/urandom >"$SRV/big.bin" # 12 MiB: streamed, not held in memory
sha() { sha256sum "$1" | cut -d' ' -f1; }

cat >"$WORK/server.py" <<'PYEOF'
import http.server, os, ssl, sys
root, portfile = sys.argv[1], sys.argv[2]
tls = sys.argv[3:5]

class Handler(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *a, **kw):
        super().__init__(*a, directory=root, **kw)

    def log_message(self, fmt, *args):
        sys.stderr.write("%s\n" % (fmt % args))

    def do_GET(self):
        if self.path.startswith("/nolm/"):  # a body without Last-Modified
            body = b"no last-modified\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/hello.txt")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path == "/fail500":
            self.send_error(500)
            return
        super().do_GET()

srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
if tls:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tls[0], tls[1])
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
with open(portfile + ".tmp", "w") as f:
    f.write(str(srv.server_address[1]))
os.rename(portfile + ".tmp", portfile)
srv.serve_forever()
PYEOF

# serve NAME [CERT KEY]: a server on a free port of 127.0.0.1; its port in $PORT
serve() {
        local name=$1
        shift
        rm -f "$WORK/$name.port"
        "$PY" "$WORK/server.py" "$SRV" "$WORK/$name.port" "$@" 2>"$WORK/$name.log" &
        SERVER_PIDS+=($!)
        for _ in $(seq 100); do
                [ -s "$WORK/$name.port" ] && break
                kill -0 "${SERVER_PIDS[-1]}" 2>/dev/null || break
                sleep 0.1
        done
        PORT=$(cat "$WORK/$name.port" 2>/dev/null)
        [ -n "$PORT" ]
}
check "an http server is started on 127.0.0.1" serve http || { sed 's/^/# /' "$WORK/http.log"; finish; }
HPORT=$PORT
U="http://127.0.0.1:$HPORT"

# --- a base image: passwd and group, a directory, a symlink pointing outside -------------------------
S="$WORK/sentinel"
mkdir -p "$S"
B="$WORK/base"
mkdir -p "$B/etc" "$B/existing" "$B/tmp"
printf 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n' >"$B/etc/passwd"
printf 'root:x:0:\napp:x:1000:\nstaff:x:50:app\n' >"$B/etc/group"
ln -s "$S" "$B/escape"
check "the base image is imported" run 0 "$KILN" import -t kiln-test/base:1 "$B"

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
        if [ "$BUILD_RC" != 0 ]; then
                echo "# kiln build exited $BUILD_RC"
                sed 's/^/# /' "$WORK/err" | tail -n 20
                return 1
        fi
}
failed() { # failed: the last build exited 1 (else show why)
        if [ "$BUILD_RC" != 1 ]; then
                echo "# kiln build exited $BUILD_RC, wanted 1"
                sed 's/^/# /' "$WORK/err" | tail -n 20
                return 1
        fi
}
# entry IMAGE PATH: "mode uid:gid mtime size sha256" of PATH in the image's layers (the last
# layer holding it wins), "absent" when none has it; with a third argument "data", its content
entry() {
        "$PY" - "$KILN_ROOT" "$@" <<'PYEOF'
import hashlib, json, os, sys, tarfile
root, name, path = sys.argv[1], sys.argv[2], sys.argv[3].lstrip("/")
data = len(sys.argv) > 4
def blob(d):
    return os.path.join(root, "blobs", "sha256", d.split(":")[1])
index = json.load(open(os.path.join(root, "index.json")))
m = [x for x in index["manifests"] if x.get("annotations", {}).get("org.opencontainers.image.ref.name") == name][0]
found = None
for layer in json.load(open(blob(m["digest"])))["layers"]:
    with tarfile.open(blob(layer["digest"])) as t:
        for e in t:
            if e.name.rstrip("/") == path:
                body = t.extractfile(e).read() if e.isfile() else b""
                found = (e, body)
if not found:
    print("absent")
elif data:
    sys.stdout.buffer.write(found[1])
else:
    e, body = found
    kind = "file" if e.isfile() else "dir" if e.isdir() else "other"
    print("%s %04o %d:%d %d %d %s" % (kind, e.mode, e.uid, e.gid, int(e.mtime), e.size,
                                      hashlib.sha256(body).hexdigest()))
PYEOF
}
# is IMAGE PATH KIND MODE OWNER: PATH is a KIND (file, dir) with MODE and OWNER (else show it)
is() {
        local got
        got=$(entry "$1" "$2" | cut -d' ' -f1-3)
        [ "$got" = "$3 $4 $5" ] || { echo "# $2: '$got', wanted '$3 $4 $5'"; return 1; }
}
field() { entry "$1" "$2" | cut -d' ' -f"$3"; } # field IMAGE PATH N: 1 kind 2 mode 3 owner 4 mtime 5 size 6 sha256
content_is() { [ "$(entry "$1" "$2" data)" = "$3" ]; }

# --- destination naming, mode, mtime -------------------------------------------------------------------
echo ctx-file >"$WORK/local.txt"
start=$(date +%s)
build basic "FROM kiln-test/base:1
ADD $U/hello.txt /dl/
ADD $U/hello.txt /opt/renamed.txt
ADD $U/hello.txt /existing
ADD $U/dir/file.bin?token=abc#frag /q/
ADD $U/with%20space.txt /enc/
ADD $U/ /listing/
ADD $U/dir/ /trailing/
ADD $U/nolm/now.txt /nolm/
ADD $U/redirect /redir/
ADD $U/archive.tar.gz /arch/
ADD $U/big.bin /big
WORKDIR /w
ADD $U/hello.txt rel/" -t add-basic
end=$(date +%s)
check "ADD of URLs builds" built
check "  dest ending in /: the URL path's last element names the file" content_is add-basic /dl/hello.txt "hello from the server"
check "  with mode 0600 and owner 0:0" is add-basic /dl/hello.txt file 0600 0:0
check "  and the Last-Modified time as its mtime ($LM)" [ "$(field add-basic /dl/hello.txt 4)" = "$LM" ]
check "  its content byte for byte" [ "$(field add-basic /dl/hello.txt 6)" = "$(sha "$SRV/hello.txt")" ]
check "dest not ending in /: the dest is the file" is add-basic /opt/renamed.txt file 0600 0:0
check "  (nothing named after the URL there)" [ "$(entry add-basic /opt/renamed.txt/hello.txt)" = absent ]
check "  its missing parents are made 0755" is add-basic /opt dir 0755 0:0
check "an existing directory as dest: the file lands in it" is add-basic /existing/hello.txt file 0600 0:0
check "the query and the fragment are not part of the name" \
        [ "$(field add-basic /q/file.bin 6)" = "$(sha "$SRV/dir/file.bin")" ]
check "the name is the decoded path element" content_is add-basic "/enc/with space.txt" spaced
check "an empty URL path names the file __unnamed__ (BuildKit)" is add-basic /listing/__unnamed__ file 0600 0:0
check "a path ending in / names it after its last element (Go's path.Base)" \
        is add-basic /trailing/dir file 0600 0:0
check "without Last-Modified the mtime is the build's time" \
        bash -c 't=$1; [ "$t" -ge "$2" ] && [ "$t" -le "$3" ]' _ "$(field add-basic /nolm/now.txt 4)" "$((start - 1))" "$((end + 1))"
check "  and the body is the file" content_is add-basic /nolm/now.txt "no last-modified"
check "redirects are followed" content_is add-basic /redir/redirect "hello from the server"
check "a downloaded archive is not extracted" \
        [ "$(field add-basic /arch/archive.tar.gz 6)" = "$(sha "$SRV/archive.tar.gz")" ]
check "  (nothing of it is unpacked)" [ "$(entry add-basic /arch/sub/inner.txt)" = absent ]
check "a 12 MiB download arrives whole" [ "$(field add-basic /big 6)" = "$(sha "$SRV/big.bin")" ]
check "a relative dest is under WORKDIR" is add-basic /w/rel/hello.txt file 0600 0:0

# --- --checksum ------------------------------------------------------------------------------------------
good="sha256:$(sha "$SRV/hello.txt")"
bad="sha256:$(printf '0%.0s' $(seq 64))"
build sum-good "FROM kiln-test/base:1
ADD --checksum=$good $U/hello.txt /sum/" -t add-sum
check "--checksum that matches builds" built
check "  and the file is there" content_is add-sum /sum/hello.txt "hello from the server"
build sum-bad "FROM kiln-test/base:1
ADD --checksum=$bad $U/hello.txt /sum/" -t add-sum-bad
check "--checksum that does not match fails (1)" failed
check "  naming the URL" has "ADD $U/hello.txt: checksum mismatch" "$WORK/err"
check "  the expected and the actual digest" has "expected $bad, got $good" "$WORK/err"
check "  at its line" has "Dockerfile:2" "$WORK/err"
build sum-local "FROM kiln-test/base:1
ADD --checksum=$good local.txt /sum/" -t add-sum-local
check "--checksum with a local source fails (1)" failed
check "  as BuildKit says" has "checksum can't be specified for non-HTTP(S) sources" "$WORK/err"

# --- --chmod and --chown -------------------------------------------------------------------------------
build chmod "FROM kiln-test/base:1
ADD --chmod=755 $U/hello.txt /bin/tool
ADD --chmod=go+r $U/hello.txt /sym.txt" -t add-chmod
check "--chmod builds" built
check "  octal --chmod sets the mode" is add-chmod /bin/tool file 0755 0:0
check "  symbolic --chmod applies to 0600" is add-chmod /sym.txt file 0644 0:0
build chown "FROM kiln-test/base:1
ADD --chown=app:staff --chmod=644 $U/hello.txt /home/app/
ADD --chown=1234:5678 --chmod=604 $U/hello.txt /num.txt" -t add-chown
if [ "$MODE" != single ]; then
        check "--chown builds" built
        check "  a named user and group from the image" is add-chown /home/app/hello.txt file 0644 1000:50
        check "  numeric ids, with --chmod" is add-chown /num.txt file 0604 1234:5678
        check "  parents made for the dest get the --chown ids" is add-chown /home/app dir 0755 1000:50
        build chown600 "FROM kiln-test/base:1
ADD --chown=app $U/hello.txt /home/app/" -t add-chown600
        # rootless with ranges, the layer is read inside the namespace: a 0600 file of another id too
        check "--chown keeps the download's 0600" built
        check "  owned by app" is add-chown600 /home/app/hello.txt file 0600 1000:1000
else
        # Rootless without /etc/subuid ranges only id 0 exists: kiln says so (test-build).
        check "--chown to another id fails without subordinate ids (1)" failed
fi

# --- several sources -----------------------------------------------------------------------------------
mkdir -p "$WORK/ctx-multi" && cp "$WORK/local.txt" "$WORK/ctx-multi/local.txt"
build multi "FROM kiln-test/base:1
ADD $U/hello.txt local.txt $U/dir/file.bin /multi/" -t add-multi
check "a URL among local sources builds" built
check "  the URL's file" is add-multi /multi/hello.txt file 0600 0:0
check "  the other URL's file" is add-multi /multi/file.bin file 0600 0:0
check "  the local file, with its own mode" \
        is add-multi /multi/local.txt file "$(printf '%04o' "0$(stat -c %a "$WORK/local.txt")")" 0:0
check "  and content" content_is add-multi /multi/local.txt ctx-file
mkdir -p "$WORK/ctx-multi-nodir" && cp "$WORK/local.txt" "$WORK/ctx-multi-nodir/local.txt"
build multi-nodir "FROM kiln-test/base:1
ADD $U/hello.txt local.txt /multi" -t add-multi-nodir
check "several sources to a dest without / fail (1)" failed
check "  saying the dest must be a directory" has "must be a directory" "$WORK/err"

# --- failures: HTTP, connection, TLS, COPY, git ------------------------------------------------------
build e404 "FROM kiln-test/base:1
ADD $U/missing.txt /x" -t add-404
check "a 404 fails the build (1)" failed
check "  with one line naming the URL and the status" has "Dockerfile:2:.*ADD $U/missing.txt: HTTP 404\$" "$WORK/err"
build secret "FROM kiln-test/base:1
ADD http://user:s3cret@127.0.0.1:$HPORT/missing.txt /x" -t add-secret
check "a 404 with credentials in the URL fails (1)" failed
check "  the message shows the URL with the password redacted" \
        has "ADD http://user:xxxxx@127.0.0.1:$HPORT/missing.txt: HTTP 404" "$WORK/err"
build e500 "FROM kiln-test/base:1
ADD $U/fail500 /x" -t add-500
check "a 500 fails the build (1)" failed
check "  with the status" has "ADD $U/fail500: HTTP 500" "$WORK/err"
closed=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
build refused "FROM kiln-test/base:1
ADD http://127.0.0.1:$closed/x.txt /x" -t add-refused
check "a refused connection fails the build (1)" failed
check "  naming the URL" has "ADD http://127.0.0.1:$closed/x.txt: " "$WORK/err"
build copyurl "FROM kiln-test/base:1
COPY $U/hello.txt /x" -t add-copyurl
check "COPY of a URL fails (1)" failed
check "  as BuildKit says" has "source can't be a URL for COPY" "$WORK/err"
build git "FROM kiln-test/base:1
ADD https://github.com/moby/buildkit.git /src" -t add-git
check "ADD of a git https URL fails (1)" failed
check "  as not supported" has "git repositories are not supported" "$WORK/err"
build git2 "FROM kiln-test/base:1
ADD git@github.com:moby/buildkit.git#v0.12 /src" -t add-git2
check "ADD of a git@ URL fails (1)" failed
check "  as not supported" has "git repositories are not supported" "$WORK/err"

if command -v openssl >/dev/null; then
        (
                cd "$WORK" &&
                        openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 2 -keyout tls.key \
                                -out tls.crt -subj "/CN=kiln add test" -addext "subjectAltName=IP:127.0.0.1"
        ) >"$WORK/openssl.log" 2>&1
        if check "an https server with a self-signed certificate is started" serve https "$WORK/tls.crt" "$WORK/tls.key"; then
                T="https://127.0.0.1:$PORT"
                build tls "FROM kiln-test/base:1
ADD $T/hello.txt /tls/" -t add-tls
                check "a certificate that is not trusted fails the build (1)" failed
                check "  naming the URL" has "ADD $T/hello.txt: .*certificate" "$WORK/err"
                SSL_CERT_FILE="$WORK/tls.crt" build tls "FROM kiln-test/base:1
ADD $T/hello.txt /tls/" -t add-tls
                check "  trusted through SSL_CERT_FILE it builds" built
                check "  and the file came over https" content_is add-tls /tls/hello.txt "hello from the server"
        fi
else
        need openssl command -v openssl
fi

"$KILN" images --no-trunc >"$WORK/images"
check "no name was added by the failed builds" \
        bash -c '! grep -E "^add-(sum-bad|sum-local|multi-nodir|404|secret|500|refused|copyurl|git|git2) " "$1"' _ "$WORK/images"
"$KILN" store fsck >"$WORK/fsck" 2>&1
check "  and the store is consistent (at most orphaned layers of the failed steps)" \
        bash -c '! grep -v -e "^orphaned blob" -e "problem" "$1" | grep -q .' _ "$WORK/fsck"
check "no download is left in the store's scratch area" \
        bash -c '[ -z "$(find "$1/.kiln/tmp" -mindepth 1 -maxdepth 1 2>/dev/null)" ]' _ "$KILN_ROOT"

# --- a symlink in the image never carries the write outside it --------------------------------------
build escape "FROM kiln-test/base:1
ADD $U/hello.txt /escape/
ADD $U/hello.txt /escape/../../../../../../..$S/via-dots.txt" -t add-escape
check "ADD through a symlink to an absolute path builds" built
check "  nothing was written outside the image" [ -z "$(ls -A "$S")" ]
check "  the file is at the link's target inside the image" is add-escape "$S/hello.txt" file 0600 0:0

finish
