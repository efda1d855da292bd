#!/usr/bin/env python3
"""A fault-injecting HTTP proxy in front of a real registry (test infrastructure for kiln).

The client talks plain HTTP/1.1 to the proxy, the proxy talks plain HTTP to the upstream.
Requests and responses are forwarded as they are (every method, bodies streamed in both
directions, Content-Length or chunked, all end-to-end headers such as Location,
Docker-Content-Digest, WWW-Authenticate, Range, Content-Range); a Location that points at the
upstream is rewritten to point at the proxy.

FAULTS is a comma-separated list of rules, tried in order for each request; the first rule that
matches the request and still has firings left is the one that applies (later ones are not
tried), and it uses up a firing when it fires:

    KIND:MATCH[:N]

MATCH is a substring of the request path (query included), e.g. /blobs/ or /manifests/; it may
be written METHOD@SUBSTRING (e.g. PUT@/manifests/) to match one method only. N is how many times
the rule fires (default 1; '*' = every time). A MATCH that itself ends in ':digits' needs an
explicit ':N'. KIND is one of:

    500           answer 500 with a JSON error body instead of forwarding
    429           answer 429 with Retry-After: 1 instead of forwarding
    drop-request  read the request (and its body), then close without answering
    reset         send headers and part of the body, then reset the connection (RST)
    truncate      send the full Content-Length but only part of the body, then close (FIN)
    flip          flip one byte in the middle of the body (GET only), length kept
    slow          send the body in small pieces with delays, ~3 s in all
    redirect      answer 307 with the registry's own URL for the path, as a registry sends a
                  client to blob storage (GET only)
    chunk-min     forward, and add OCI-Chunk-Min-Length: 1048576 to the answer (how a
                  registry asks for chunked uploads; match POST@/blobs/uploads/)
    expired-token when the request carries an expired bearer token (a JWT whose exp is past),
                  forward it without its Authorization header, so the registry answers 401 with
                  its challenge: Distribution itself accepts a token up to 60 s past exp, so
                  this is how a test sees a client renew a short-lived token (use N = '*')

500, 429 and drop-request match any method. expired-token matches only a request whose bearer
token has expired. The body faults (reset, truncate, flip, slow) match GET requests only, and
fire only when the upstream answers 200 or 206 with a non-empty body; otherwise the request
passes unharmed and the rule keeps its firing (so a HEAD, or a 404 on the same path, does not
use it up).

Every request is logged as one line to --log, written before the answer (or the fault) reaches
the client, so it is there when the client has seen the result:

    METHOD PATH status=NNN fault=KIND|- match=MATCH|- bytes=LEN|-
"""

import argparse
import base64
import http.client
import json
import os
import socket
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "proxy-authenticate",
              "proxy-authorization", "te", "trailer", "trailers", "upgrade", "transfer-encoding",
              "expect"}
BODY_FAULTS = {"reset", "truncate", "flip", "slow"}
ANY_FAULTS = {"500", "429", "drop-request"}
TOKEN_FAULTS = {"expired-token"}
HEADER_FAULTS = {"chunk-min"}
REDIRECT_FAULTS = {"redirect"}
KINDS = BODY_FAULTS | ANY_FAULTS | TOKEN_FAULTS | HEADER_FAULTS | REDIRECT_FAULTS
CHUNK = 64 * 1024


class Rule:
    def __init__(self, spec):
        kind, sep, rest = spec.partition(":")
        kind = kind.strip()
        if not sep or kind not in KINDS:
            raise ValueError("bad fault rule %r (want KIND:MATCH[:N], KIND in %s)"
                             % (spec, ", ".join(sorted(KINDS))))
        count = 1
        head, sep, tail = rest.rpartition(":")
        if sep and (tail == "*" or tail.isdigit()):
            rest = head
            count = None if tail == "*" else int(tail)
        method = None
        if "@" in rest:
            m, _, sub = rest.partition("@")
            if m.isalpha() and m.isupper():
                method, rest = m, sub
        self.kind, self.method, self.match, self.left = kind, method, rest, count
        self.text = (method + "@" if method else "") + rest

    def matches(self, method, path):
        if self.left is not None and self.left <= 0:
            return False
        if self.method and self.method != method:
            return False
        return self.match in path


def parse_faults(spec):
    spec = (spec or "").strip()
    if spec in ("", "none", "-"):
        return []
    return [Rule(s) for s in spec.split(",") if s.strip()]


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    # -- rules and the log ------------------------------------------------------------------------
    def _pick(self):
        """The first rule that applies to this request, or None. A body fault applies to a GET
        only and is used up only when it fires (see _use); the others are used up here."""
        expired = self._token_expired()
        with self.server.lock:
            for r in self.server.rules:
                if not r.matches(self.command, self.path):
                    continue
                if r.kind in BODY_FAULTS | REDIRECT_FAULTS and self.command != "GET":
                    continue
                if r.kind in TOKEN_FAULTS and not expired:
                    continue
                if r.kind not in BODY_FAULTS and r.left is not None:
                    r.left -= 1
                return r
        return None

    def _use(self, rule):
        """Use up one firing of a body fault; False when another request took the last one."""
        with self.server.lock:
            if rule.left is None:
                return True
            if rule.left <= 0:
                return False
            rule.left -= 1
            return True

    def _log(self, status, rule=None, length=None):
        line = "%s %s status=%s fault=%s match=%s bytes=%s\n" % (
            self.command, self.path, status, rule.kind if rule else "-",
            rule.text if rule else "-", "-" if length is None else length)
        with self.server.lock:
            with open(self.server.log, "a") as f:
                f.write(line)

    def _token_expired(self):
        """The request's bearer token is a JWT whose exp has passed."""
        h = self.headers.get("Authorization", "")
        if not h.lower().startswith("bearer "):
            return False
        try:
            payload = h[7:].strip().split(".")[1]
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            return float(claims["exp"]) <= time.time()
        except Exception:
            return False

    # -- the request body -------------------------------------------------------------------------
    def _body_chunks(self):
        """The request body as it comes, de-chunked; (chunks iterator, is_chunked, length)."""
        te = self.headers.get("Transfer-Encoding", "").lower()
        if "chunked" in te:
            def gen():
                while True:
                    line = self.rfile.readline(65537)
                    if not line:
                        raise ConnectionError("eof in chunked body")
                    size = int(line.split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while True:  # trailers
                            t = self.rfile.readline(65537)
                            if t in (b"\r\n", b"\n", b""):
                                return
                    left = size
                    while left:
                        b = self.rfile.read(min(left, CHUNK))
                        if not b:
                            raise ConnectionError("eof in chunk")
                        left -= len(b)
                        yield b
                    self.rfile.readline(3)
            return gen(), True, None
        n = int(self.headers.get("Content-Length") or 0)

        def gen():
            left = n
            while left:
                b = self.rfile.read(min(left, CHUNK))
                if not b:
                    raise ConnectionError("eof in body")
                left -= len(b)
                yield b
        return gen(), False, n

    def _discard_body(self):
        chunks, _, _ = self._body_chunks()
        for _ in chunks:
            pass

    # -- answers the proxy makes itself -----------------------------------------------------------
    def _answer(self, status, code, message, extra=()):
        body = json.dumps({"errors": [{"code": code, "message": message,
                                       "detail": None}]}).encode()
        self.send_response_only(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Docker-Distribution-Api-Version", "registry/2.0")
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()

    def _rst(self):
        try:
            self.wfile.flush()
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.close_connection = True
        try:
            self.connection.close()
        except OSError:
            pass

    def _fin(self):
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.close_connection = True

    # -- forwarding -------------------------------------------------------------------------------
    def _rewrite_location(self, v):
        up = self.server.upstream
        for scheme in ("http://", "https://"):
            if v.startswith(scheme + up):
                return "http://" + self.server.me + v[len(scheme + up):]
        return v

    def _handle(self):
        srv = self.server
        picked = self._pick()
        rule = picked if picked is not None and picked.kind in ANY_FAULTS else None
        if rule is not None:
            self._discard_body()
            if rule.kind == "drop-request":
                self._log("-", rule)
                self._fin()
                return
            if rule.kind == "500":
                self._log(500, rule)
                self._answer(500, "UNKNOWN", "fault-proxy: injected 500")
            else:
                self._log(429, rule)
                self._answer(429, "TOOMANYREQUESTS", "fault-proxy: injected 429",
                             [("Retry-After", "1")])
            return

        if picked is not None and picked.kind in REDIRECT_FAULTS:
            self._discard_body()
            self._log(307, picked)
            self.send_response_only(307, "Temporary Redirect")
            self.send_header("Location", "http://%s%s" % (srv.upstream, self.path))
            self.send_header("Content-Length", "0")
            self.end_headers()
            self.wfile.flush()
            return

        strip_auth = picked if picked is not None and picked.kind in TOKEN_FAULTS else None
        add_header = picked if picked is not None and picked.kind in HEADER_FAULTS else None

        # forward the request
        chunks, chunked, length = self._body_chunks()
        conn = http.client.HTTPConnection(srv.upstream_host, srv.upstream_port, timeout=120)
        try:
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for k, v in self.headers.items():
                lk = k.lower()
                if lk in HOP_BY_HOP or lk == "content-length":
                    continue
                if lk == "authorization" and strip_auth is not None:
                    continue
                if lk == "host":
                    v = srv.upstream
                conn.putheader(k, v)
            if chunked:
                conn.putheader("Transfer-Encoding", "chunked")
            elif length or self.command in ("POST", "PUT", "PATCH"):
                conn.putheader("Content-Length", str(length))
            conn.endheaders()
            for b in chunks:
                conn.send(b"%x\r\n%s\r\n" % (len(b), b) if chunked else b)
            if chunked:
                conn.send(b"0\r\n\r\n")
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException, ValueError) as e:
            conn.close()
            self._log(502)
            self._answer(502, "UNKNOWN", "fault-proxy: upstream: %s" % e)
            self.close_connection = True
            return

        try:
            self._relay(resp, strip_auth or add_header,
                        picked if picked is not None and picked.kind in BODY_FAULTS else None)
        finally:
            conn.close()

    def _relay(self, resp, token_rule=None, body_rule=None):
        status = resp.status
        no_body = self.command == "HEAD" or status in (204, 304) or 100 <= status < 200
        headers = []
        clen = None
        for k, v in resp.msg.items():
            lk = k.lower()
            if lk in HOP_BY_HOP:
                continue
            if lk == "content-length":
                clen = v
                continue
            if lk == "location":
                v = self._rewrite_location(v)
            headers.append((k, v))
        if token_rule is not None and token_rule.kind == "chunk-min":
            headers.append(("OCI-Chunk-Min-Length", "1048576"))

        rule = body_rule if not no_body and status in (200, 206) and clen != "0" else None
        close_delimited = not no_body and clen is None and not resp.chunked
        body = None
        if close_delimited or (rule is not None and (rule.kind in ("flip", "truncate", "reset")
                                                     or clen is None)):
            body = resp.read()  # the whole body is needed
            clen = str(len(body))
        if rule is not None and (clen == "0" or not self._use(rule)):
            rule = None  # an empty body cannot carry a body fault

        self._log(status, rule or token_rule,
                  clen if clen is not None else ("chunked" if not no_body else None))
        self.send_response_only(status, resp.reason)
        for k, v in headers:
            self.send_header(k, v)
        use_chunked = False
        if clen is not None:
            self.send_header("Content-Length", clen)
        elif not no_body:
            use_chunked = True
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if no_body:
            self.wfile.flush()
            return

        kind = rule.kind if rule else None
        if kind == "flip":
            i = len(body) // 2
            body = body[:i] + bytes([body[i] ^ 0xff]) + body[i + 1:]
            self.wfile.write(body)
            self.wfile.flush()
            return
        if kind == "truncate":
            self.wfile.write(body[:len(body) // 2])
            self._fin()
            return
        if kind == "reset":
            self.wfile.write(body[:len(body) // 2])
            self.wfile.flush()
            time.sleep(0.05)  # let the partial body arrive first
            self._rst()
            return
        if kind == "slow":  # clen is known here
            n = int(clen)
            pieces = min(30, n)
            size = -(-n // pieces)
            for i in range(0, n, size):
                b = body[i:i + size] if body is not None else resp.read(size)
                if not b:
                    break
                self.wfile.write(b)
                self.wfile.flush()
                time.sleep(3.0 / pieces)
            return
        if body is not None:
            self.wfile.write(body)
            self.wfile.flush()
            return

        while True:
            b = resp.read1(CHUNK)
            if not b:
                break
            if use_chunked:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(b), b))
            else:
                self.wfile.write(b)
        if use_chunked:
            self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _safe_handle(self):
        try:
            self._handle()
        except (ConnectionError, BrokenPipeError, socket.timeout, OSError):
            self.close_connection = True

    do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = do_OPTIONS = _safe_handle


def main():
    ap = argparse.ArgumentParser(description="fault-injecting HTTP proxy for registry tests")
    ap.add_argument("--upstream", required=True, help="HOST:PORT of the plain-http registry")
    ap.add_argument("--faults", default="", help="KIND:MATCH[:N],... (see the module doc)")
    ap.add_argument("--addr", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 picks a free port")
    ap.add_argument("--port-file", help="write the port here once listening")
    ap.add_argument("--log", required=True, help="request log (appended)")
    a = ap.parse_args()

    try:
        rules = parse_faults(a.faults)
    except ValueError as e:
        print("fault-proxy: %s" % e, file=sys.stderr)
        sys.exit(2)
    host, _, port = a.upstream.rpartition(":")
    srv = Server((a.addr, a.port), Handler)
    srv.rules = rules
    srv.lock = threading.Lock()
    srv.log = a.log
    srv.upstream = a.upstream
    srv.upstream_host, srv.upstream_port = host.strip("[]"), int(port)
    srv.me = "%s:%d" % (a.addr, srv.server_address[1])
    open(a.log, "a").close()
    if a.port_file:
        tmp = a.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % srv.server_address[1])
        os.rename(tmp, a.port_file)
    print("fault-proxy listening on %s -> %s faults=%s" % (srv.me, a.upstream, a.faults or "none"),
          file=sys.stderr, flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
