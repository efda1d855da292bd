#!/usr/bin/env bash
# The registry test harness itself (lib/registry.sh, lib/token-server.py, lib/fault-proxy.py),
# proved with skopeo only: a real docker-registry in each mode (plain, htpasswd, token, tls)
# takes the busybox base image and gives it back; token auth lets anonymous callers pull but not
# push and logs the scopes; the fault proxy forwards uploads faithfully and its faults really
# fire; and everything is stopped at the end.
set -u

HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d)
# shellcheck source=lib/registry.sh
. "$HERE/lib/registry.sh"
trap 'registry_cleanup; rm -rf "$WORK"' EXIT
# skopeo must not see the caller's credentials (nor fail on an unreadable XDG_RUNTIME_DIR)
export REGISTRY_AUTH_FILE="$WORK/auth.json"
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY # loopback only

# shellcheck source=lib/tap.sh
. "$HERE/lib/tap.sh"
sk() { skopeo --insecure-policy "$@"; }
digest_of() { # digest_of REF [skopeo flags]: the manifest digest skopeo inspect reports
        local ref=$1
        shift
        sk inspect "$@" "$ref" 2>>"$WORK/err" |
                sed -n 's/^    "Digest": "\(sha256:[0-9a-f]*\)",$/\1/p'
}
count() { # count PATTERN FILE: matching lines
        grep -c -- "$1" "$2" 2>/dev/null || true
}
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

# --- the base image --------------------------------------------------------------------------
check "base_image_make builds a busybox image with umoci" run 0 base_image_make "$WORK/oci" v1
sk inspect --config "oci:$WORK/oci:v1" >"$WORK/config.json" 2>&1
check "its config has Cmd [\"/bin/sh\"]" \
        "$PY" -c 'import json,sys; c=json.load(open(sys.argv[1])); sys.exit(c["config"]["Cmd"] != ["/bin/sh"])' "$WORK/config.json"
base=$(digest_of "oci:$WORK/oci:v1")
check "skopeo reads its digest" [ "${#base}" = 71 ]
base_image_make "$WORK/oci2" again >/dev/null 2>&1
check "and it is reproducible (made twice, same digest)" [ "$(digest_of "oci:$WORK/oci2:again")" = "$base" ]
layer=$(sk inspect "oci:$WORK/oci:v1" 2>/dev/null | sed -n 's/^        "\(sha256:[0-9a-f]*\)"$/\1/p' | head -n 1)
check "it has one layer" [ "${#layer}" = 71 ]
tar -tzf "$WORK/oci/blobs/sha256/${layer#sha256:}" >"$WORK/layer.list" 2>/dev/null
check "with bin/busybox and sh echo cat ls true" \
        bash -c 'for f in busybox sh echo cat ls true; do grep -qx "bin/$f" "$1" || exit 1; done' _ "$WORK/layer.list"

# --- plain -----------------------------------------------------------------------------------
if run 0 registry_start plain; then
        ok "registry_start plain"
        check "REG_ADDR is 127.0.0.1:PORT and REG_URL http://REG_ADDR" \
                [ "$REG_ADDR" = "127.0.0.1:$REG_PORT" -a "$REG_URL" = "http://$REG_ADDR" ]
        check "its log is \$WORK/reg.log" grep -q "listening on 127.0.0.1:$REG_PORT" "$WORK/reg.log"
        check "skopeo copy pushes the base image" run 0 base_image_push "$WORK/oci:v1" "$REG_ADDR/busybox:v1"
        check "skopeo inspect gives it back, same digest" \
                [ "$(digest_of "docker://$REG_ADDR/busybox:v1" --tls-verify=false)" = "$base" ]
else
        not_ok "registry_start plain"
fi

# --- htpasswd --------------------------------------------------------------------------------
if run 0 registry_start htpasswd basic; then
        ok "registry_start htpasswd"
        check "BASIC_USER/BASIC_PASS are kiln/s3cret" [ "$BASIC_USER:$BASIC_PASS" = kiln:s3cret ]
        check "a push without credentials is refused" \
                fails sk copy --dest-tls-verify=false "oci:$WORK/oci:v1" "docker://$BASIC_ADDR/busybox:v1"
        check "a push with credentials works" run 0 base_image_push "$WORK/oci:v1" "$BASIC_ADDR/busybox:v1"
        check "inspect with credentials, same digest" [ "$(digest_of "docker://$BASIC_ADDR/busybox:v1" \
                --tls-verify=false --creds "$BASIC_USER:$BASIC_PASS")" = "$base" ]
        check "inspect without credentials is refused" \
                fails sk inspect --tls-verify=false "docker://$BASIC_ADDR/busybox:v1"
        check "inspect with a wrong password is refused" \
                fails sk inspect --tls-verify=false --creds kiln:wrong "docker://$BASIC_ADDR/busybox:v1"
else
        not_ok "registry_start htpasswd"
fi

# --- token -----------------------------------------------------------------------------------
if run 0 registry_start token tok; then
        ok "registry_start token"
        check "TOK_TOKEN_URL is the token server's realm" [ "${TOK_TOKEN_URL#http://127.0.0.1:}" != "$TOK_TOKEN_URL" ]
        check "a push with credentials works" run 0 base_image_push "$WORK/oci:v1" "$TOK_ADDR/busybox:v1"
        check "inspect with credentials, same digest" [ "$(digest_of "docker://$TOK_ADDR/busybox:v1" \
                --tls-verify=false --creds "$TOK_USER:$TOK_PASS")" = "$base" ]
        check "anonymous inspect (pull) works, same digest" \
                [ "$(digest_of "docker://$TOK_ADDR/busybox:v1" --tls-verify=false)" = "$base" ]
        check "an anonymous push is refused" \
                fails sk copy --dest-tls-verify=false "oci:$WORK/oci:v1" "docker://$TOK_ADDR/anon:v1"
        check "a wrong password is refused" \
                fails sk inspect --tls-verify=false --creds kiln:wrong "docker://$TOK_ADDR/busybox:v1"
        L=$TOK_TOKEN_LOG
        check "the token log shows kiln granted pull,push on busybox" \
                grep -q "status=200 user=kiln service=kiln-test-registry scope=repository:busybox:pull,push granted=repository:busybox:pull,push" "$L"
        check "and the anonymous push asking pull,push granted pull only" \
                grep -q "status=200 user=- service=kiln-test-registry scope=repository:anon:pull,push granted=repository:anon:pull " "$L"
        check "and the anonymous pull" grep -q "status=200 user=- .*scope=repository:busybox:pull granted=repository:busybox:pull " "$L"
        check "and the wrong password got 401" grep -q "status=401 user=kiln" "$L"
        # the token itself, straight from the server
        "$PY" - "$TOK_TOKEN_URL" "$TOK_TOKEN_TTL" >"$WORK/token.out" 2>&1 <<'EOF'
import base64, json, sys, urllib.request, urllib.error
url, ttl = sys.argv[1], int(sys.argv[2])
def claims(tok):
    p = tok.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
q = "?service=kiln-test-registry&scope=repository:a:pull,push&scope=repository:b:pull"
r = urllib.request.Request(url + q, headers={"Authorization": "Basic " + base64.b64encode(b"kiln:s3cret").decode()})
j = json.load(urllib.request.urlopen(r))
c = claims(j["token"])
assert j["access_token"] == j["token"] and j["expires_in"] == ttl and j["issued_at"], j
assert c["iss"] == "kiln-test-issuer" and c["aud"] == "kiln-test-registry" and c["sub"] == "kiln", c
assert c["exp"] - c["iat"] == ttl and c["nbf"] <= c["iat"] and c["jti"], c
assert c["access"] == [{"type": "repository", "name": "a", "actions": ["pull", "push"]},
                       {"type": "repository", "name": "b", "actions": ["pull"]}], c
j = json.load(urllib.request.urlopen(url + "?service=kiln-test-registry"))
assert claims(j["token"])["access"] == [] and claims(j["token"])["sub"] == "", j
try:
    urllib.request.urlopen(urllib.request.Request(url + q, headers={"Authorization": "Basic " + base64.b64encode(b"kiln:nope").decode()}))
    raise SystemExit("wrong password was not refused")
except urllib.error.HTTPError as e:
    assert e.code == 401, e.code
print("token ok")
EOF
        check "the token has iss/sub/aud/exp/nbf/iat/jti/access, expires_in = TOK_TOKEN_TTL" \
                grep -qx "token ok" "$WORK/token.out"
        grep -v "token ok" "$WORK/token.out" | sed 's/^/# /'
        check "a repeated scope is logged as two scope= words" \
                grep -q "scope=repository:a:pull,push scope=repository:b:pull granted=repository:a:pull,push granted=repository:b:pull" "$L"
else
        not_ok "registry_start token"
fi

# --- tls -------------------------------------------------------------------------------------
if run 0 registry_start tls sec; then
        ok "registry_start tls"
        check "SEC_URL is https and SEC_CERTS_D has 127.0.0.1:PORT/ca.crt and localhost:PORT/ca.crt" \
                [ "$SEC_URL" = "https://$SEC_ADDR" -a -f "$SEC_CERTS_D/$SEC_ADDR/ca.crt" \
                -a -f "$SEC_CERTS_D/localhost:$SEC_PORT/ca.crt" -a "$SEC_CERT_DIR" = "$SEC_CERTS_D/$SEC_ADDR" ]
        check "push with --dest-cert-dir works" run 0 base_image_push "$WORK/oci:v1" "$SEC_ADDR/busybox:v1"
        check "inspect with --cert-dir, same digest" \
                [ "$(digest_of "docker://$SEC_ADDR/busybox:v1" --cert-dir "$SEC_CERT_DIR")" = "$base" ]
        check "inspect through localhost:PORT, same digest" [ "$(digest_of "docker://$SEC_LOCALHOST_ADDR/busybox:v1" \
                --cert-dir "$SEC_CERTS_D/$SEC_LOCALHOST_ADDR")" = "$base" ]
        check "inspect without the CA is refused" fails sk inspect "docker://$SEC_ADDR/busybox:v1"
        check "the certificate is signed by SEC_CA" run 0 openssl verify -CAfile "$SEC_CA" "$SEC_DIR/tls/server.crt"
else
        not_ok "registry_start tls"
fi

# --- the fault proxy -------------------------------------------------------------------------
if [ -n "${REG_ADDR:-}" ]; then
        # no faults: a faithful proxy, uploads included
        if run 0 fault_proxy_start "$REG_ADDR" "" pass; then
                ok "fault_proxy_start with no faults"
                check "a push through it works" run 0 base_image_push "$WORK/oci:v1" "$PASS_ADDR/viaproxy:v1"
                check "and the registry has it, same digest" \
                        [ "$(digest_of "docker://$REG_ADDR/viaproxy:v1" --tls-verify=false)" = "$base" ]
                check "the upload went through it (PATCH or PUT of a blob, PUT of the manifest)" \
                        bash -c 'grep -qE "^(PATCH|PUT) /v2/viaproxy/blobs/uploads/" "$1" &&
                                grep -q "^PUT /v2/viaproxy/manifests/v1 status=201" "$1"' _ "$PASS_LOG"
                check "and no fault fired" [ "$(count 'fault=-' "$PASS_LOG")" = "$(wc -l <"$PASS_LOG")" ]
                "$PY" - "$PASS_URL" "$REG_ADDR" "$layer" >"$WORK/pass.out" 2>&1 <<'EOF'
import http.client, hashlib, sys, urllib.parse
url, upstream, layer = sys.argv[1], sys.argv[2], sys.argv[3]
u = urllib.parse.urlsplit(url)
def req(method, path, headers={}, body=None):
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    c.request(method, path, body=body, headers=headers)
    r = c.getresponse()
    data = r.read()
    c.close()
    return r, data
blob = "/v2/viaproxy/blobs/" + layer
r, _ = req("HEAD", blob)
assert r.status == 200 and r.getheader("Docker-Content-Digest") == layer and int(r.getheader("Content-Length")) > 0, r.status
size = int(r.getheader("Content-Length"))
r, d = req("GET", blob)
assert r.status == 200 and hashlib.sha256(d).hexdigest() == layer[7:] and len(d) == size
r, d = req("GET", blob, {"Range": "bytes=10-19"})
assert r.status == 206 and len(d) == 10 and r.getheader("Content-Range") == "bytes 10-19/%d" % size, (r.status, r.getheader("Content-Range"))
r, d = req("POST", "/v2/viaproxy/blobs/uploads/", {"Content-Length": "0"})
loc = r.getheader("Location")
assert r.status == 202 and loc and upstream not in loc and loc.startswith(url), loc
print("pass ok")
EOF
                check "HEAD, GET, Range and upload Location (rewritten to the proxy) come through" \
                        grep -qx "pass ok" "$WORK/pass.out"
                grep -v "pass ok" "$WORK/pass.out" | sed 's/^/# /'
        else
                not_ok "fault_proxy_start with no faults"
        fi

        # 500 on the manifest: fires once, then the pull works
        if run 0 fault_proxy_start "$REG_ADDR" "500:/manifests/" p500; then
                ok "fault_proxy_start 500:/manifests/"
                sk copy --src-tls-verify=false "docker://$P500_ADDR/busybox:v1" "oci:$WORK/pull500:v1" >"$WORK/out" 2>&1
                echo "# first pull through 500:/manifests/ exited $?"
                check "the 500 fired, once" [ "$(count 'fault=500 match=/manifests/' "$P500_LOG")" = 1 ]
                check "on a manifest request, answered 500" grep -q "^[A-Z]* /v2/busybox/manifests/v1 status=500 fault=500" "$P500_LOG"
                check "the next pull works (the fault is used up)" \
                        run 0 sk copy --src-tls-verify=false "docker://$P500_ADDR/busybox:v1" "oci:$WORK/pull500b:v1"
                check "and gives the same image" [ "$(digest_of "oci:$WORK/pull500b:v1")" = "$base" ]
        else
                not_ok "fault_proxy_start 500:/manifests/"
        fi

        # a flipped byte in a blob: fires once (skopeo's digest check may refuse it: not asserted)
        if run 0 fault_proxy_start "$REG_ADDR" "flip:/blobs/" flip; then
                ok "fault_proxy_start flip:/blobs/"
                sk copy --src-tls-verify=false "docker://$FLIP_ADDR/busybox:v1" "oci:$WORK/pullflip:v1" >"$WORK/out" 2>&1
                echo "# first pull through flip:/blobs/ exited $?"
                check "the flip fired, once, on a GET of a blob" \
                        [ "$(count '^GET /v2/busybox/blobs/sha256:[0-9a-f]* status=200 fault=flip' "$FLIP_LOG")" = 1 \
                        -a "$(count 'fault=flip' "$FLIP_LOG")" = 1 ]
                check "the next pull works and gives the same image" \
                        run 0 sk copy --src-tls-verify=false "docker://$FLIP_ADDR/busybox:v1" "oci:$WORK/pullflip2:v1"
                check "same digest" [ "$(digest_of "oci:$WORK/pullflip2:v1")" = "$base" ]
        else
                not_ok "fault_proxy_start flip:/blobs/"
        fi

        # every other kind, in order, on one blob, seen by a plain HTTP client
        faults="429:/blobs/,reset:/blobs/,truncate:/blobs/,slow:/blobs/,drop-request:GET@/blobs/,500:GET@/blobs/:2"
        if run 0 fault_proxy_start "$REG_ADDR" "$faults" kinds; then
                ok "fault_proxy_start $faults"
                "$PY" - "$KINDS_URL" "$layer" >"$WORK/kinds.out" 2>&1 <<'EOF'
import http.client, hashlib, sys, time, urllib.parse
url, layer = sys.argv[1], sys.argv[2]
u = urllib.parse.urlsplit(url)
path = "/v2/busybox/blobs/" + layer
def get(method="GET"):
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    t = time.time()
    try:
        c.request(method, path)
        r = c.getresponse()
        d = r.read()
        return r.status, r.getheader("Retry-After"), d, time.time() - t, None
    except Exception as e:
        return None, None, None, time.time() - t, type(e).__name__
    finally:
        c.close()
def good(d):
    return d is not None and hashlib.sha256(d).hexdigest() == layer[7:]
s, ra, d, _, e = get()
print("429", "ok" if s == 429 and ra == "1" else "bad %s %s %s" % (s, ra, e))
s, _, d, _, e = get("HEAD")   # a HEAD does not use up a body fault
print("head", "ok" if s == 200 else "bad %s %s" % (s, e))
s, _, d, _, e = get()
print("reset", "ok" if e in ("IncompleteRead", "ConnectionResetError") else "bad %s %s" % (s, e))
s, _, d, _, e = get()
print("truncate", "ok" if e == "IncompleteRead" else "bad %s %s" % (s, e))
s, _, d, t, e = get()
print("slow", "ok" if s == 200 and good(d) and 2.5 <= t <= 8 else "bad %s %s %.1f" % (s, e, t))
s, _, d, _, e = get()
print("drop-request", "ok" if e in ("RemoteDisconnected", "ConnectionResetError") else "bad %s %s" % (s, e))
s, _, d, _, e = get("HEAD")
print("head-get", "ok" if s == 200 else "bad %s %s" % (s, e))  # GET@ does not match a HEAD
s, _, d, _, e = get()
s2, _, d, _, e = get()
print("500x2", "ok" if s == 500 and s2 == 500 else "bad %s %s" % (s, s2))
s, _, d, _, e = get()
print("clean", "ok" if s == 200 and good(d) else "bad %s %s" % (s, e))
EOF
                for k in 429 head reset truncate slow drop-request head-get 500x2 clean; do
                        check "fault kinds: $k" grep -qx "$k ok" "$WORK/kinds.out"
                done
                grep -v " ok$" "$WORK/kinds.out" | sed 's/^/# /'
                check "the log shows each fault once in rule order, then the 500 twice" \
                        [ "$(sed -n 's/.* fault=\([^ ]*\) .*/\1/p' "$KINDS_LOG" | grep -v '^-$' | tr '\n' ' ')" = "429 reset truncate slow drop-request 500 500 " ]
        else
                not_ok "fault_proxy_start $faults"
        fi
else
        not_ok "the fault proxy needs the plain registry"
fi

# expired-token: Distribution accepts a token 60 s past exp; the proxy can make it strict
if [ -n "${REG_ADDR:-}" ] && KILN_REGISTRY_TOKEN_TTL=2 run 0 registry_start token short; then
        ok "registry_start token with KILN_REGISTRY_TOKEN_TTL=2"
        check "SHORT_TOKEN_TTL is 2" [ "$SHORT_TOKEN_TTL" = 2 ]
        base_image_push "$WORK/oci:v1" "$SHORT_ADDR/busybox:v1" >/dev/null 2>&1
        if run 0 fault_proxy_start "$SHORT_ADDR" "expired-token:/v2/:*" strict; then
                ok "fault_proxy_start expired-token:/v2/:*"
                "$PY" - "$SHORT_TOKEN_URL" "$SHORT_URL" "$STRICT_URL" >"$WORK/strict.out" 2>&1 <<'EOF'
import json, sys, time, urllib.request, urllib.error
turl, reg, proxy = sys.argv[1:4]
tok = json.load(urllib.request.urlopen(turl + "?service=kiln-test-registry&scope=repository:busybox:pull"))["token"]
def get(base):
    r = urllib.request.Request(base + "/v2/busybox/manifests/v1", headers={
        "Authorization": "Bearer " + tok, "Accept": "application/vnd.oci.image.manifest.v1+json"})
    try:
        return urllib.request.urlopen(r).status, ""
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("WWW-Authenticate", "")
print("fresh", get(proxy)[0])
time.sleep(2.2)
s, ch = get(proxy)
print("expired-proxy", s, "bearer" if ch.startswith("Bearer realm=") and "scope=" in ch else "-")
print("expired-direct", get(reg)[0])
EOF
                check "a fresh token works through the proxy" grep -qx "fresh 200" "$WORK/strict.out"
                check "an expired one gets 401 and the registry's Bearer challenge" grep -qx "expired-proxy 401 bearer" "$WORK/strict.out"
                check "while the registry alone still takes it (its 60 s leeway)" grep -qx "expired-direct 200" "$WORK/strict.out"
                check "the log shows fault=expired-token once" [ "$(count 'fault=expired-token' "$STRICT_LOG")" = 1 ]
                sed 's/^/# /' "$WORK/strict.out" | grep -vE '^# (fresh 200|expired-proxy 401 bearer|expired-direct 200)$'
        else
                not_ok "fault_proxy_start expired-token:/v2/:*"
        fi
else
        not_ok "registry_start token with KILN_REGISTRY_TOKEN_TTL=2"
fi

# --- everything stops ------------------------------------------------------------------------
mapfile -t pids < <(registry_pids)
check "registry_pids lists what runs (5 registries, 2 token servers, 5 proxies)" [ "${#pids[@]}" = 12 ]
ports=()
for v in REG_PORT BASIC_PORT TOK_PORT SEC_PORT SHORT_PORT PASS_PORT P500_PORT FLIP_PORT KINDS_PORT STRICT_PORT; do
        [ -n "${!v:-}" ] && ports+=("${!v}")
done
for v in TOK_TOKEN_URL SHORT_TOKEN_URL; do
        p=${!v:-}
        p=${p##*:}
        [ -n "$p" ] && ports+=("${p%%/*}")
done
registry_cleanup
left=0
for p in "${pids[@]}"; do [ -e "/proc/$p" ] && left=$((left + 1)); done
check "registry_cleanup stopped and reaped them all" [ "$left" = 0 ]
"$PY" - "$WORK/" "${ports[@]}" >"$WORK/ports.out" 2>&1 <<'EOF'
import os, socket, sys
work = sys.argv[1].encode()
left = []
for p in os.listdir("/proc"):
    if p.isdigit() and int(p) != os.getpid():
        try:
            with open("/proc/%s/cmdline" % p, "rb") as f:
                if work in f.read():
                    left.append(p)
        except OSError:
            pass
print("left:", " ".join(left) if left else "none")
bad = []
for p in sys.argv[2:]:
    s = socket.socket()
    try:
        s.connect(("127.0.0.1", int(p)))
        bad.append(p)
    except OSError:
        pass
    finally:
        s.close()
print("listening:", " ".join(bad) if bad else "none")
EOF
check "no process is left with \$WORK on its command line" grep -qx "left: none" "$WORK/ports.out"
check "nothing listens on their ports any more (${#ports[@]} ports)" grep -qx "listening: none" "$WORK/ports.out"
check "registry_cleanup again is a no-op" run 0 registry_cleanup

finish
