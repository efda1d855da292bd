#!/usr/bin/env bash
# The local store from the CLI, checked with real clients: kiln import -> skopeo inspect and
# umoci unpack read kiln's store as it is; kiln images/rmi/prune/store fsck; kiln layer
# snapshot/create/extract round trips; a corrupt blob and a crash's leftovers are found.
set -u

KILN=${KILN:?KILN must point at the kiln binary}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export KILN_ROOT="$WORK/store"

# shellcheck source=lib/tap.sh
. "$(dirname "$0")/lib/tap.sh"

# listing DIR: every path with type, mode, owner, size, link target and content hash, sorted;
# two trees are the same when their listings are.
listing() {
        (cd "$1" && find . -mindepth 1 -printf '%P %y %m %U:%G %l\n' | sort &&
                find . -type f -printf '%P\n' | sort | xargs -r -d '\n' sha256sum)
}
same_tree() {
        diff -u <(listing "$1") <(listing "$2") | head -n 20 | sed 's/^/# /'
        [ "${PIPESTATUS[0]}" = 0 ]
}
# A root filesystem with every kind of entry a user image has.
R="$WORK/rootfs"
mkdir -p "$R/bin" "$R/etc/conf.d" "$R/var/empty" "$R/tmp"
printf '#!/bin/sh\necho hi\n' >"$R/bin/hello"
chmod 4755 "$R/bin/hello"
echo "welcome" >"$R/etc/motd"
ln "$R/etc/motd" "$R/etc/motd.hard"
ln -s motd "$R/etc/motd.link"
ln -s ../../etc "$R/var/empty/up"
chmod 1777 "$R/tmp"
mkfifo "$R/var/fifo"
head -c 300000 /dev/urandom >"$R/etc/blob.bin"
if [ "$(id -u)" = 0 ]; then
        chown 1000:1000 "$R/etc/conf.d"
        mknod "$R/var/null" c 1 3
fi
printf 'user.kiln=1' >/dev/null
setfattr -n user.origin -v kiln "$R/etc/motd" 2>/dev/null || true

check "kiln import makes an image" run 0 "$KILN" import -t demo:1 -t example.com/demo:latest "$R"
digest=$(cat "$WORK/out")
check "and prints its manifest digest" [ "${#digest}" = 71 ]
check "kiln images lists both names" run 0 "$KILN" images --no-trunc
check "with the digest" grep -q "demo:1 .*$digest" "$WORK/out"
check "kiln store path" run 0 "$KILN" store path
check "is KILN_ROOT" grep -qx "$KILN_ROOT" "$WORK/out"
check "kiln store fsck is clean" run 0 "$KILN" store fsck

if need skopeo command -v skopeo; then
        check "skopeo inspect reads kiln's store" run 0 skopeo inspect "oci:$KILN_ROOT:demo:1"
        check "and finds the manifest" grep -q "\"Digest\": \"$digest\"" "$WORK/out"
        check "skopeo copy to another layout" run 0 skopeo copy "oci:$KILN_ROOT:example.com/demo:latest" "oci:$WORK/copy:x"
fi
if need umoci command -v umoci; then
        rootless=
        [ "$(id -u)" = 0 ] || rootless=--rootless
        check "umoci unpack reads kiln's store" run 0 umoci unpack $rootless --image "$KILN_ROOT:demo:1" "$WORK/bundle"
        check "the unpacked tree is the same" same_tree "$R" "$WORK/bundle/rootfs"
        check "setuid bit kept" [ -u "$WORK/bundle/rootfs/bin/hello" ]
        check "hardlink kept" [ "$(stat -c %i "$WORK/bundle/rootfs/etc/motd")" = "$(stat -c %i "$WORK/bundle/rootfs/etc/motd.hard")" ]
        if [ "$(id -u)" = 0 ]; then
                check "ownership kept" [ "$(stat -c %u:%g "$WORK/bundle/rootfs/etc/conf.d")" = 1000:1000 ]
                check "device node kept" [ -c "$WORK/bundle/rootfs/var/null" ]
        fi
fi

# Reproducible: the same tree and SOURCE_DATE_EPOCH give the same digest, also with zstd.
check "import is reproducible" bash -c "
        a=\$(SOURCE_DATE_EPOCH=1700000000 '$KILN' import -t r:1 '$R') &&
        b=\$(SOURCE_DATE_EPOCH=1700000000 '$KILN' import -t r:2 '$R') && [ \"\$a\" = \"\$b\" ]"
check "with zstd too" bash -c "
        a=\$(SOURCE_DATE_EPOCH=1 '$KILN' import --compression zstd -t z:1 '$R') &&
        b=\$(SOURCE_DATE_EPOCH=1 '$KILN' import --compression zstd -t z:2 '$R') && [ \"\$a\" = \"\$b\" ]"
check "a tarball imports to the same layer as its directory" bash -c "
        tar --xattrs -C '$R' -cf '$WORK/root.tar' . &&
        a=\$(SOURCE_DATE_EPOCH=1 '$KILN' import -m rootfs -t t:dir '$R') &&
        b=\$(SOURCE_DATE_EPOCH=1 '$KILN' import -m rootfs -t t:tar '$WORK/root.tar') && [ \"\$a\" = \"\$b\" ]"

# Layers from changes, round trip: snapshot, change, layer, extract over the old tree.
cp -a "$R" "$WORK/before"
check "kiln layer snapshot" run 0 "$KILN" layer snapshot "$R" "$WORK/snap"
echo "changed" >"$R/etc/motd"
rm "$R/etc/motd.link"
rm -r "$R/var/empty"
mkdir "$R/var/new"
echo new >"$R/var/new/file"
rm "$R/bin/hello" && mkdir "$R/bin/hello"
check "kiln layer create --snapshot" run 0 "$KILN" layer create --snapshot "$WORK/snap" "$R"
layer=$(cat "$WORK/out")
check "the layer holds only the changes" grep -q "diff_id sha256:.*, [0-9] entries" "$WORK/err"
check "kiln layer extract applies it" run 0 "$KILN" layer extract "$layer" "$WORK/before"
check "whiteouts were applied" grep -q "2 whiteouts" "$WORK/err"
check "the old tree plus the layer is the new tree" same_tree "$R" "$WORK/before"

# Cached unpacked layers (what a build stacks as overlay lower directories).
check "kiln layer unpack an image" run 0 "$KILN" layer unpack demo:1
unpacked=$(head -n1 "$WORK/out")
check "into the store's cache, by diff_id" bash -c "case '$unpacked' in '$KILN_ROOT'/.kiln/unpacked/*) true;; *) false;; esac"
check "and it holds the image's tree" same_tree "$WORK/bundle/rootfs" "$unpacked"
check "a second unpack reuses it" run 0 "$KILN" layer unpack demo:1
check "the same directory" grep -qx "$unpacked" "$WORK/out"
check "four at once agree on one copy" bash -c "
        rm -rf '$KILN_ROOT'/.kiln/unpacked/*
        for i in 1 2 3 4; do '$KILN' layer unpack example.com/demo:latest > '$WORK/u'\$i & done; wait
        [ \$(cat '$WORK'/u[1-4] | sort -u | wc -l) = 1 ] && [ \$(ls '$KILN_ROOT/.kiln/unpacked' | wc -l) = 1 ]"

# Names and space.
check "kiln rmi" run 0 "$KILN" rmi r:1 r:2 z:1 z:2 t:dir t:tar
check "kiln rmi of a missing name fails (1)" run 1 "$KILN" rmi nope
check "fsck now reports orphaned blobs (1)" run 1 "$KILN" store fsck
check "naming them" grep -q "orphaned blob" "$WORK/out"
check "kiln prune removes them" run 0 "$KILN" prune
check "fsck is clean again" run 0 "$KILN" store fsck
check "demo:1 still resolves" run 0 "$KILN" images
check "listed" grep -q '^demo:1 ' "$WORK/out"

# Damage: a rotten blob and a crash's leftover.
blob=$(ls "$KILN_ROOT/blobs/sha256" | head -n1)
cp "$KILN_ROOT/blobs/sha256/$blob" "$WORK/saved"
printf 'X' | dd of="$KILN_ROOT/blobs/sha256/$blob" bs=1 count=1 conv=notrunc 2>/dev/null
check "fsck finds a corrupt blob (1)" run 1 "$KILN" store fsck
check "and names it" grep -q "corrupt blob sha256:$blob" "$WORK/out"
cp "$WORK/saved" "$KILN_ROOT/blobs/sha256/$blob"
echo partial >"$KILN_ROOT/.kiln/tmp/blob-crash"
touch -d '2 days ago' "$KILN_ROOT/.kiln/tmp/blob-crash"
check "fsck finds a stale temporary file (1)" run 1 "$KILN" store fsck
check "prune removes it" run 0 "$KILN" prune
check "1 temporary file" grep -q "and 1 temporary file" "$WORK/out"
check "and the store is clean" run 0 "$KILN" store fsck

# Bad input.
check "a non-layout directory is refused (1)" run 1 "$KILN" images --root "$R"
check "saying why" grep -q "not an OCI image layout" "$WORK/err"
check "import without -t is a usage error (2)" run 2 "$KILN" import "$R"
check "an unknown compression is a usage error (2)" run 2 "$KILN" import -t x --compression lz4 "$R"
check "extracting a blob the store lacks fails (1)" run 1 "$KILN" layer extract sha256:0000000000000000000000000000000000000000000000000000000000000000 "$WORK/x"

finish
