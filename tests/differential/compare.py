#!/usr/bin/env python3
"""Compare two images' final file trees and configs (stdlib only).

    compare.py [--expect FILE] [--common FILE] A B     A, B: oci:LAYOUT:NAME (an OCI image layout, the manifest
                                        whose org.opencontainers.image.ref.name is NAME) or
                                        dir:DIR (containers/image's dir: transport, as
                                        `buildah push IMG dir:DIR` writes it)
    compare.py --dump IMAGE             print one image's tree and config

Each image's layers are applied in order (`.wh.NAME` whiteouts and `.wh..wh..opq` opaque markers
from lower layers, a non-directory replacing a directory drops what was under it) into one tree:
path, type, mode, uid, gid, size, sha256, link target, and for hardlinked files the other paths
of their group. Directory and file mtimes are not compared. The config fields compared are
Env, Cmd, Entrypoint, WorkingDir, User, ExposedPorts, Volumes, Labels, StopSignal, Healthcheck
(and Shell and OnBuild, which a parent image of an ONBUILD case carries).

The first image is named "kiln", the second "buildah" in the output. --expect FILE lists known,
intended differences, one per line:  SUBJECT  REASON  where SUBJECT is a glob over "config.FIELD",
"PATH" or "PATH:ATTRIBUTE" (ATTRIBUTE: presence, type, mode, uid, gid, size, sha256, target,
links, device, implicit); '#' starts a comment. A REASON starting with "kiln-bug:" marks a known
kiln bug. Every --expect line must match a difference (else it is reported STALE and fails);
--common FILE lists differences that may or may not occur (buildah's artefacts of RUN).
Exit status: 0 when every difference is expected and every expectation was met, 1 otherwise,
2 on a usage or read error.
"""
import fnmatch
import hashlib
import json
import os
import sys
import tarfile

CONFIG_FIELDS = ["Env", "Cmd", "Entrypoint", "WorkingDir", "User", "ExposedPorts", "Volumes",
                 "Labels", "StopSignal", "Healthcheck", "Shell", "OnBuild"]
INDEX_TYPES = ("application/vnd.oci.image.index.v1+json",
               "application/vnd.docker.distribution.manifest.list.v2+json")


class Image:
    def __init__(self, spec):
        if spec.startswith("oci:"):
            rest = spec[4:]
            # oci:LAYOUT:NAME; the name may hold a ':' (a tag), the layout path is taken up to
            # the first ':' that leaves an existing directory
            i = rest.find(":")
            while i >= 0 and not os.path.isfile(os.path.join(rest[:i], "index.json")):
                i = rest.find(":", i + 1)
            if i < 0:
                raise SystemExit("compare: no OCI layout in %s" % spec)
            self.root, name = rest[:i], rest[i + 1:]
            self.blob = lambda d: os.path.join(self.root, "blobs", *d.split(":", 1))
            index = json.load(open(os.path.join(self.root, "index.json")))
            found = [m for m in index["manifests"]
                     if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == name]
            if not found:
                raise SystemExit("compare: %s: no image named %s" % (self.root, name))
            manifest = json.load(open(self.blob(found[-1]["digest"])))
            while manifest.get("mediaType") in INDEX_TYPES or "manifests" in manifest:
                manifest = json.load(open(self.blob(manifest["manifests"][0]["digest"])))
        elif spec.startswith("dir:"):
            self.root = spec[4:]
            self.blob = lambda d: os.path.join(self.root, d.split(":", 1)[1])
            manifest = json.load(open(os.path.join(self.root, "manifest.json")))
        else:
            raise SystemExit("compare: IMAGE is oci:LAYOUT:NAME or dir:DIR, not %s" % spec)
        self.config = json.load(open(self.blob(manifest["config"]["digest"])))
        self.layers = [layer["digest"] for layer in manifest["layers"]]

    def tree(self):
        state = {}   # path -> dict; "/" is the root
        inode = {}   # path -> inode number (regular files, hardlinks share one)
        next_ino = [0]

        def drop_under(path, keep_self):
            prefix = path.rstrip("/") + "/"
            for p in [p for p in state if p.startswith(prefix) or (not keep_self and p == path)]:
                del state[p]
                inode.pop(p, None)

        for digest in self.layers:
            with tarfile.open(self.blob(digest), "r:*") as tar:
                members = tar.getmembers()
                # whiteouts and opaque markers hide the lower layers, not this layer's entries
                for m in members:
                    path = norm(m.name)
                    base = os.path.basename(path)
                    if base == ".wh..wh..opq":
                        drop_under(os.path.dirname(path), keep_self=True)
                    elif base.startswith(".wh."):
                        drop_under(os.path.join(os.path.dirname(path), base[4:]), keep_self=False)
                for m in members:
                    path = norm(m.name)
                    if os.path.basename(path).startswith(".wh."):
                        continue
                    e = {"mode": "%04o" % (m.mode & 0o7777), "uid": m.uid, "gid": m.gid}
                    if m.isdir():
                        e["type"] = "dir"
                    elif m.islnk():
                        target = norm(m.linkname)
                        if target not in state or state[target]["type"] != "file":
                            raise SystemExit("compare: %s: hardlink %s to a missing %s" % (digest, path, target))
                        t = state[target]
                        e.update(type="file", size=t["size"], sha256=t["sha256"],
                                 mode=t["mode"], uid=t["uid"], gid=t["gid"])
                    elif m.isreg():
                        h = hashlib.sha256()
                        f = tar.extractfile(m)
                        for chunk in iter(lambda: f.read(1 << 20), b""):
                            h.update(chunk)
                        e.update(type="file", size=m.size, sha256=h.hexdigest())
                    elif m.issym():
                        e.update(type="symlink", target=m.linkname)
                    elif m.ischr() or m.isblk():
                        e.update(type="char" if m.ischr() else "block", device="%d,%d" % (m.devmajor, m.devminor))
                    elif m.isfifo():
                        e["type"] = "fifo"
                    else:
                        e["type"] = "other(%r)" % m.type
                    old = state.get(path)
                    if e["type"] != "dir" or (old and old["type"] != "dir"):
                        drop_under(path, keep_self=False)
                    # parents a layer leaves out exist implicitly
                    parent = os.path.dirname(path)
                    while parent != "/" and parent not in state:
                        state[parent] = {"type": "dir", "implicit": True}
                        parent = os.path.dirname(parent)
                    inode.pop(path, None)
                    if e["type"] == "file":
                        if m.islnk():
                            inode[path] = inode[norm(m.linkname)]
                        else:
                            next_ino[0] += 1
                            inode[path] = next_ino[0]
                    state[path] = e
        groups = {}
        for p, i in inode.items():
            groups.setdefault(i, []).append(p)
        for paths in groups.values():
            if len(paths) > 1:
                for p in paths:
                    state[p]["links"] = ",".join(sorted(q for q in paths if q != p))
        state.pop("/", None)
        return state

    def fields(self):
        c = self.config.get("config") or {}
        out = {f: c.get(f) for f in CONFIG_FIELDS}
        # buildah stamps every image with its version; not a property of the Dockerfile
        if out["Labels"]:
            out["Labels"] = {k: v for k, v in out["Labels"].items() if k != "io.buildah.version"}
        return out


def norm(name):
    while name.startswith("./"):
        name = name[2:]
    if name in (".", ""):
        return "/"
    return os.path.normpath("/" + name.strip("/"))


ATTRS = ["type", "mode", "uid", "gid", "size", "sha256", "target", "device", "links", "implicit"]


def describe(e):
    if e is None:
        return "(absent)"
    parts = [e["type"]]
    if e.get("implicit"):
        return "dir (implicit: no entry in any layer)"
    parts.append("mode=%s uid=%s gid=%s" % (e["mode"], e["uid"], e["gid"]))
    if e["type"] == "file":
        parts.append("size=%d sha256=%s" % (e["size"], e["sha256"][:12]))
    for k in ("target", "device", "links"):
        if k in e:
            parts.append("%s=%s" % (k, e[k]))
    return " ".join(parts)


def normalize_config(field, v):
    # an empty list or map is the same as none
    if v in ([], {}, ""):
        return None
    return v


def differences(a, b):
    """(subject, text) pairs: a is kiln's image, b buildah's."""
    out = []
    fa, fb = a.fields(), b.fields()
    for f in CONFIG_FIELDS:
        va, vb = normalize_config(f, fa[f]), normalize_config(f, fb[f])
        if va != vb:
            out.append(("config." + f, "config %s: kiln %s | buildah %s" % (
                f, json.dumps(va, sort_keys=True), json.dumps(vb, sort_keys=True))))
    ta, tb = a.tree(), b.tree()
    for p in sorted(set(ta) | set(tb)):
        ea, eb = ta.get(p), tb.get(p)
        if ea is None or eb is None:
            out.append((p + ":presence", "%s: only in %s: %s" % (
                p, "buildah" if ea is None else "kiln", describe(ea or eb))))
            continue
        if ea.get("implicit") or eb.get("implicit"):
            if ea.get("implicit") != eb.get("implicit") and not (ea["type"] == eb["type"] == "dir"):
                out.append((p + ":type", "%s: kiln %s | buildah %s" % (p, describe(ea), describe(eb))))
            elif ea.get("implicit") != eb.get("implicit"):
                out.append((p + ":implicit", "%s: kiln %s | buildah %s" % (p, describe(ea), describe(eb))))
            continue
        for k in ATTRS:
            if ea.get(k) != eb.get(k):
                out.append(("%s:%s" % (p, k), "%s: %s: kiln %s | buildah %s" % (
                    p, k, ea.get(k, "-"), eb.get(k, "-"))))
    return out


def read_expect(path, common=False):
    rules = []
    if not path or not os.path.exists(path):
        return rules
    for n, line in enumerate(open(path), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        subject, _, reason = line.partition(" ")
        rules.append({"subject": subject, "reason": reason.strip(), "line": n, "hits": 0,
                      "common": common})
    return rules


def matches(rule, subject):
    pat = rule["subject"]
    if fnmatch.fnmatchcase(subject, pat):
        return True
    # a bare PATH (or glob) covers every attribute of it
    path = subject.rsplit(":", 1)[0] if not subject.startswith("config.") else subject
    return ":" not in pat and fnmatch.fnmatchcase(path, pat)


def main(argv):
    if len(argv) == 3 and argv[1] == "--dump":
        img = Image(argv[2])
        print(json.dumps(img.fields(), indent=1, sort_keys=True))
        for p, e in sorted(img.tree().items()):
            print(p, describe(e))
        return 0
    rules = []
    while len(argv) >= 3 and argv[1] in ("--expect", "--common"):
        rules += read_expect(argv[2], common=argv[1] == "--common")
        argv = argv[:1] + argv[3:]
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    unexpected, expected = [], []
    for subject, text in differences(Image(argv[1]), Image(argv[2])):
        rule = next((r for r in rules if matches(r, subject)), None)
        if rule:
            rule["hits"] += 1
            expected.append((text, rule))
        else:
            unexpected.append(text)
    for text in unexpected:
        print("DIFF " + text)
    stale = [r for r in rules if r["hits"] == 0 and not r["common"]]
    for r in stale:
        print("STALE expect-diff line %d: %s did not differ (%s)" % (r["line"], r["subject"], r["reason"]))
    artefacts = sum(1 for _, r in expected if r["common"])
    if artefacts:
        print("expected %d of buildah's RUN artefacts (expect-diff.common)" % artefacts)
    for text, r in expected:
        if r["common"]:
            continue
        tag = "KILN-BUG" if r["reason"].startswith("kiln-bug:") else "expected"
        print("%s %s  [%s]" % (tag, text, r["reason"]))
    return 1 if unexpected or stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
