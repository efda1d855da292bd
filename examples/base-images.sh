#!/usr/bin/env bash
# Makes the base images the examples start FROM in kiln's local store, without a registry:
# debian:12 from Debian's own packages with debootstrap (minbase), and debian-python:3.11
# (base-images/make-debian-python). Run as root. Skips an image
# the store already has. KILN (default build/kiln), KILN_ROOT (the store) and DEBIAN_MIRROR
# (default http://deb.debian.org/debian) may be set.
set -euo pipefail

KILN=${KILN:-build/kiln}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

here=$(cd "$(dirname "$0")" && pwd)
if "$KILN" images | grep -q '^debian:12 '; then
        echo "base-images: debian:12 is in the store"
        # examples/python-app's base: Debian with python3 and pip
        exec "$here/base-images/make-debian-python"
fi
command -v debootstrap >/dev/null || { echo "base-images: debootstrap is not installed" >&2; exit 1; }
work=$(mktemp -d "${TMPDIR:-/var/tmp}/kiln-base-XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "base-images: debootstrap bookworm from $MIRROR"
debootstrap --variant=minbase bookworm "$work/rootfs" "$MIRROR" >"$work/log" 2>&1 ||
        { tail -n 20 "$work/log" >&2; exit 1; }
# What a container image does not carry: apt's downloaded lists and package cache.
rm -rf "$work/rootfs/var/lib/apt/lists/"* "$work/rootfs/var/cache/apt/"*.bin
"$KILN" import -t debian:12 -m "debootstrap --variant=minbase bookworm" "$work/rootfs"
# examples/python-app's base: Debian with python3 and pip
"$here/base-images/make-debian-python"
