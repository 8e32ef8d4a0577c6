#!/usr/bin/env bash
# Builds a newer Redis (redis-server + redis-cli) from the upstream source tarball Debian's archive
# serves (the "orig" tarball of the experimental package; no wheel ships Redis 8.4+, and GitHub is not
# reachable here), checked against its pinned SHA-256, into
# ${REDIS_CLUSTER_REDIS_CACHE:-$HOME/.cache/redis-cluster/redis}/<version>/bin. ~1 min cold on 2 cores;
# nothing when cached. bench/servers.py names the result "redis-8.6".
#   --print-bin  print the bin directory when it is built, else exit 1 (builds nothing)
# When the archive no longer serves the tarball (Debian replaces experimental versions) it says so and
# exits 3 without building: tools/test.sh then skips the Redis 8.6 pass and says why.
set -Eeuo pipefail

VERSION=8.6.3
SHA256=58d0d1eb49a1ea6c2179659707fec171b1e2e2b8d5157ed2ec59d1d66ad5a654
URL="http://deb.debian.org/debian/pool/main/r/redis/redis_${VERSION}.orig.tar.gz"
ROOT="${REDIS_CLUSTER_REDIS_CACHE:-$HOME/.cache/redis-cluster/redis}/$VERSION"
BIN="$ROOT/bin"

if [[ "${1:-}" == --print-bin ]]; then
    [[ -x "$BIN/redis-server" && -x "$BIN/redis-cli" ]] || exit 1
    echo "$BIN"
    exit 0
fi
if [[ -x "$BIN/redis-server" && -x "$BIN/redis-cli" ]]; then
    echo "build-redis: Redis $VERSION cached in $BIN" >&2
    exit 0
fi

mkdir -p "$ROOT"
work=$(mktemp -d "$ROOT/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
if ! curl -fsSL --retry 3 -m 300 -o "$work/src.tar.gz" "$URL"; then
    echo "build-redis: cannot download $URL (Debian may have replaced Redis $VERSION in experimental;" \
        "pick the current version from dists/experimental/main/source/Sources.xz and update VERSION/SHA256)" >&2
    exit 3
fi
echo "$SHA256  $work/src.tar.gz" | sha256sum -c --quiet -
tar -xzf "$work/src.tar.gz" -C "$work"
# Default build (jemalloc, no TLS, no modules): the server users run, minus what these tests never use.
make -C "$work/redis-$VERSION" -j"$(nproc)" BUILD_TLS=no >"$work/make.log" 2>&1 || {
    tail -40 "$work/make.log" >&2
    exit 1
}
mkdir -p "$work/bin"
cp "$work/redis-$VERSION/src/redis-server" "$work/redis-$VERSION/src/redis-cli" "$work/bin/"
"$work/bin/redis-server" --version >&2
rm -rf "$BIN"
mv "$work/bin" "$BIN"
echo "build-redis: Redis $VERSION built into $BIN" >&2
