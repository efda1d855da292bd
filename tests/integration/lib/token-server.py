#!/usr/bin/env python3
"""A small token server for the Docker registry token authentication protocol.

Test infrastructure for kiln: it sits beside a real docker-registry (Docker Distribution 2.8)
whose config has auth.token.{realm,service,issuer,rootcertbundle} pointing here.

    GET  /token?service=SERVICE&scope=repository:NAME:pull,push[&scope=...]   (Basic auth optional)
    POST /token   (OAuth2 form: grant_type=password&username=..&password=..&service=..&scope=..)

Policy: anonymous callers get only "pull" of what they ask for; the configured user with the
right password gets everything asked for; a wrong user or password gets 401.

The answer is {"token": JWT, "access_token": JWT, "expires_in": N, "issued_at": RFC3339}.
The JWT is RS256 and its header has "kid" = the libtrust key ID of the signing key, which is what
Distribution's token auth looks up among the keys of its rootcertbundle; the claims are iss, sub, aud, exp, nbf, iat, jti and access.

Every request is logged as one line to --log (flushed at once, before the answer is sent):
    METHOD PATH status=200 user=kiln|- service=S scope=A[ scope=B...]|scope=- granted=A[,..]|- expires_in=N
Multiple scopes are logged as repeated scope=/granted= words, in request order.

Note: Distribution 2.8 accepts a token up to 60 s past its exp (leeway), and clients built on
containers/image treat expires_in < 60 as 60; a short --expires-in is for testing a client's
own renewal logic, which can be asserted on in this log.
"""

import argparse
import base64
import datetime
import hashlib
import json
import os
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization


def libtrust_key_id(public_key):
    """The key ID docker/libtrust derives: base32 of the first 240 bits of the SHA-256 of the
    DER (PKIX) public key, without padding, in groups of four joined by ':'."""
    der = public_key.public_bytes(serialization.Encoding.DER,
                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    b32 = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(b32[i:i + 4] for i in range(0, len(b32), 4))


def rfc3339(t):
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_scope(s):
    """'repository:NAME:pull,push' -> ('repository', 'NAME', ['pull', 'push']); None if malformed.
    The type is up to the first ':', the actions after the last one (NAME may hold ':')."""
    if s.count(":") < 2:
        return None
    typ, rest = s.split(":", 1)
    name, actions = rest.rsplit(":", 1)
    acts = [a for a in actions.split(",") if a]
    if not typ or not name:
        return None
    return typ, name, acts


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kiln-test-token-server/1"

    def log_message(self, fmt, *args):  # keep stderr quiet; the request log is the record
        pass

    # -- helpers --------------------------------------------------------------------------------
    def _send_json(self, status, obj, extra_headers=()):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra_headers:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _log(self, status, user, service, scopes, granted, expires_in):
        cfg = self.server.cfg
        words = [self.command, urllib.parse.urlsplit(self.path).path, "status=%d" % status,
                 "user=%s" % (user or "-"), "service=%s" % (service or "-")]
        words += ["scope=%s" % s for s in scopes] or ["scope=-"]
        words += ["granted=%s" % g for g in granted] or ["granted=-"]
        words.append("expires_in=%s" % (expires_in if expires_in is not None else "-"))
        line = " ".join(words) + "\n"
        with cfg["lock"]:
            with open(cfg["log"], "a") as f:
                f.write(line)

    def _basic_auth(self):
        """(user, password) from an Authorization: Basic header, or (None, None)."""
        h = self.headers.get("Authorization", "")
        if not h.lower().startswith("basic "):
            return None, None
        try:
            user, _, pw = base64.b64decode(h[6:].strip()).decode().partition(":")
        except Exception:
            return "", ""
        return user, pw

    # -- the protocol ---------------------------------------------------------------------------
    def _issue(self, user, password, service, scopes):
        cfg = self.server.cfg
        if user is not None and (user != cfg["user"] or password != cfg["password"]):
            self._log(401, user, service, scopes, [], None)
            self._send_json(401, {"errors": [{"code": "UNAUTHORIZED",
                                              "message": "invalid username or password"}]},
                            [("WWW-Authenticate", 'Basic realm="kiln-test-token-server"')])
            return
        access, granted = [], []
        for s in scopes:
            p = parse_scope(s)
            if p is None:
                continue
            typ, name, acts = p
            if user is None:  # anonymous: pull only
                acts = [a for a in acts if a == "pull"]
            if acts:
                access.append({"type": typ, "name": name, "actions": acts})
                granted.append("%s:%s:%s" % (typ, name, ",".join(acts)))
        now = int(time.time())
        ttl = cfg["expires_in"]
        claims = {
            "iss": cfg["issuer"],
            "sub": user or "",
            "aud": service or cfg["service"],
            "exp": now + ttl,
            "nbf": now - 1,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        token = jwt.encode(claims, cfg["key"], algorithm="RS256",
                           headers={"kid": cfg["kid"], "typ": "JWT"})
        if isinstance(token, bytes):
            token = token.decode()
        self._log(200, user, service, scopes, granted, ttl)
        self._send_json(200, {"token": token, "access_token": token, "expires_in": ttl,
                              "issued_at": rfc3339(now)})

    def do_GET(self):
        u = urllib.parse.urlsplit(self.path)
        if u.path != self.server.cfg["path"]:
            self._log(404, None, None, [], [], None)
            self._send_json(404, {"errors": [{"code": "NOT_FOUND", "message": "no such path"}]})
            return
        q = urllib.parse.parse_qs(u.query, keep_blank_values=True)
        user, pw = self._basic_auth()
        self._issue(user, pw, (q.get("service") or [""])[0], q.get("scope", []))

    do_HEAD = do_GET

    def do_POST(self):
        u = urllib.parse.urlsplit(self.path)
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n).decode() if n else ""
        if u.path != self.server.cfg["path"]:
            self._log(404, None, None, [], [], None)
            self._send_json(404, {"errors": [{"code": "NOT_FOUND", "message": "no such path"}]})
            return
        form = urllib.parse.parse_qs(raw, keep_blank_values=True)
        grant = (form.get("grant_type") or [""])[0]
        service = (form.get("service") or [""])[0]
        scopes = []
        for s in form.get("scope", []):
            scopes += s.split(" ")
        scopes = [s for s in scopes if s]
        if grant != "password":
            self._log(400, None, service, scopes, [], None)
            self._send_json(400, {"error": "unsupported_grant_type"})
            return
        self._issue((form.get("username") or [""])[0], (form.get("password") or [""])[0],
                    service, scopes)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--addr", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 picks a free port")
    ap.add_argument("--port-file", help="write the port here once listening")
    ap.add_argument("--key", required=True, help="PEM private key (RSA) to sign with")
    ap.add_argument("--cert", required=True, help="PEM certificate of that key (in the "
                    "registry's rootcertbundle)")
    ap.add_argument("--issuer", default="kiln-test-issuer")
    ap.add_argument("--service", default="kiln-test-registry")
    ap.add_argument("--user", default="kiln")
    ap.add_argument("--password", default="s3cret")
    ap.add_argument("--expires-in", type=int, default=300,
                    help="token lifetime in seconds (exp = iat + N, iat = now rounded down)")
    ap.add_argument("--path", default="/token", help="the realm's path")
    ap.add_argument("--log", required=True, help="request log (appended)")
    a = ap.parse_args()

    with open(a.key, "rb") as f:
        key_pem = f.read()
    with open(a.cert, "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    cfg = {
        "key": key_pem,
        "kid": libtrust_key_id(cert.public_key()),
        "issuer": a.issuer, "service": a.service, "user": a.user, "password": a.password,
        "expires_in": a.expires_in, "path": a.path, "log": a.log, "lock": threading.Lock(),
    }
    srv = Server((a.addr, a.port), Handler)
    srv.cfg = cfg
    port = srv.server_address[1]
    if a.port_file:
        tmp = a.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % port)
        os.rename(tmp, a.port_file)
    print("token server listening on %s:%d kid=%s" % (a.addr, port, cfg["kid"]), file=sys.stderr,
          flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
