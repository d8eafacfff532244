#!/usr/bin/env bash
# Builds the shortd OCI image with buildah, from scratch: no base image is
# pulled. The image holds the stripped release binary, the shared libraries
# it links against, /etc/passwd and /etc/group entries for uid 65532 and
# an nsswitch.conf; nothing else (shortd makes no TLS connections, so no CA
# certificates). See docs/deployment.md.
#
# usage: deploy/build-image.sh
#   SHORTD_BIN=PATH   use this binary instead of running `cargo build --release`
#   IMAGE=NAME        image name (default localhost/shortd:VERSION)
#
# Installs buildah from Debian's packages (apt-get) when it is missing and
# the script runs as root. Progress goes to stderr; the last line on stdout
# is the image name.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$ROOT/Cargo.toml" | head -1)
LICENSE=$(sed -n 's/^license = "\(.*\)"$/\1/p' "$ROOT/Cargo.toml" | head -1)
IMAGE=${IMAGE:-localhost/shortd:$VERSION}
SOURCE=${SHORTD_IMAGE_SOURCE:-https://github.com/shortd/shortd}
REVISION=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)
UID_GID=65532

log() { echo "build-image: $*" >&2; }

if ! command -v buildah >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        log "buildah is missing; install it (apt-get install buildah) or run as root on Debian"
        exit 2
    fi
    log "installing buildah from Debian's packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends buildah >&2
fi

if [ -z "${SHORTD_BIN:-}" ]; then
    log "building the release binary (cargo build --release)"
    (cd "$ROOT" && cargo build --release --bin shortd >&2)
    SHORTD_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/shortd"
fi
[ -x "$SHORTD_BIN" ] || { log "no executable at $SHORTD_BIN"; exit 1; }

STAGE=$(mktemp -d)
CTR=
cleanup() {
    [ -n "$CTR" ] && buildah rm "$CTR" >/dev/null 2>&1 || true
    rm -rf "$STAGE"
}
trap cleanup EXIT

# The root file system, laid out in a staging folder first.
ROOTFS="$STAGE/rootfs"
mkdir -p "$ROOTFS/usr/local/bin" "$ROOTFS/etc" "$ROOTFS/data" "$ROOTFS/tmp"
cp "$SHORTD_BIN" "$ROOTFS/usr/local/bin/shortd"
strip --strip-all "$ROOTFS/usr/local/bin/shortd"

# Shared libraries, at the paths the dynamic loader asks for (the ELF
# interpreter included), each the file behind any symlink.
libs=$(ldd "$ROOTFS/usr/local/bin/shortd" | awk '
    $2 == "=>" && $3 ~ /^\// { print $3; next }
    $1 ~ /^\// { print $1 }')
for lib in $libs; do
    mkdir -p "$ROOTFS$(dirname "$lib")"
    cp -L "$lib" "$ROOTFS$lib"
    log "library $lib"
done

cat > "$ROOTFS/etc/passwd" <<PASSWD
root:x:0:0:root:/root:/sbin/nologin
shortd:x:$UID_GID:$UID_GID:shortd:/data:/sbin/nologin
PASSWD
cat > "$ROOTFS/etc/group" <<GROUP
root:x:0:
shortd:x:$UID_GID:
GROUP
echo "hosts: files dns" > "$ROOTFS/etc/nsswitch.conf"
chmod 0755 "$ROOTFS/usr/local/bin/shortd"
chmod 1777 "$ROOTFS/tmp"
chown "$UID_GID:$UID_GID" "$ROOTFS/data"
chmod 0700 "$ROOTFS/data"

CTR=$(buildah from scratch)
# A tar keeps the owners set above (65532 for /data).
( cd "$ROOTFS" && tar --numeric-owner -cf - . ) > "$STAGE/rootfs.tar"
buildah add --quiet "$CTR" "$STAGE/rootfs.tar" / >&2
buildah config \
    --user "$UID_GID:$UID_GID" \
    --entrypoint '["/usr/local/bin/shortd", "serve"]' \
    --cmd '' \
    --env SHORTD_LISTEN=0.0.0.0:8080 \
    --env SHORTD_DATA_DIR=/data \
    --workingdir /data \
    --port 8080/tcp \
    --volume /data \
    --stop-signal SIGTERM \
    --label org.opencontainers.image.title=shortd \
    --label "org.opencontainers.image.description=URL shortener: a key-value redirect server" \
    --label "org.opencontainers.image.source=$SOURCE" \
    --label "org.opencontainers.image.version=$VERSION" \
    --label "org.opencontainers.image.revision=$REVISION" \
    --label "org.opencontainers.image.licenses=$LICENSE" \
    --label "org.opencontainers.image.created=$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    "$CTR" >&2
buildah commit --quiet --format oci --rm "$CTR" "$IMAGE" >&2
CTR=
# Bytes of the (uncompressed) layers, as the manifest lists them.
SIZE=$(buildah inspect --type image --format '{{.Manifest}}' "$IMAGE" |
    sed 's/.*"layers"//' | grep -o '"size": *[0-9]*' | grep -o '[0-9]*$' | awk '{ s += $1 } END { print s }')
log "image $IMAGE: $SIZE bytes of layers"
echo "$IMAGE"
