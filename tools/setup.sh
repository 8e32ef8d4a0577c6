#!/usr/bin/env bash
# Installs everything the tests need on a fresh Debian 12 machine (idempotent; root or sudo):
#   Debian packages (redis-server/redis-cli 7.0, busybox for the start-script tests),
#   ./venv with requirements-dev.txt (newer servers: Valkey 8/9, Redis 8.2), Redis 8.6 built from
#   source (tools/build-redis.sh, ~1 min cold), and the offline Pulumi toolchain (tools/build-toolchain.sh,
#   ~20 min cold on 2 cores, seconds when cached outside the repo).
#   and the single-node Kubernetes for the e2e tier (tools/cluster.sh build: ~13 min cold on
#   2 idle cores, up to ~28 min under load; seconds when cached). That build also makes
#   redis_exporter (~45 s cold), which tests/components/test_metrics_exporter.py runs.
#   The multi-node e2e tier (tools/cluster.sh multi) runs the same binaries: nothing more to build.
# Set REDIS_CLUSTER_SKIP_TOOLCHAIN=1 to skip the Go builds (the engine and e2e tiers are then skipped).
set -Eeuo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s (%s)\n' "$*" "$(date -u +%H:%M:%S)" >&2; }

need_apt=()
command -v redis-server >/dev/null || need_apt+=(redis-server)
command -v redis-cli >/dev/null || need_apt+=(redis-tools)
command -v busybox >/dev/null || need_apt+=(busybox)
command -v make >/dev/null || need_apt+=(make)  # tools/build-redis.sh (gcc is on the machine)
command -v curl >/dev/null || need_apt+=(curl)
if ((${#need_apt[@]})); then
    step "apt-get install ${need_apt[*]}"
    SUDO=""
    [[ $(id -u) -eq 0 ]] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
# Debian starts a redis-server on 6379 where an init system exists; the tests never use that port.

step "python venv (./venv) with requirements-dev.txt"
[[ -x venv/bin/python ]] || python3 -m venv venv
venv/bin/pip install -q --disable-pip-version-check -r requirements-dev.txt

step "Redis 8.6 from Debian's source tarball (cached outside the repo)"
# Exit 3: the archive no longer serves that version; the Redis 8.6 tests are then skipped, saying so.
bash tools/build-redis.sh || (($? == 3))

if [[ "${REDIS_CLUSTER_SKIP_TOOLCHAIN:-0}" != 1 ]]; then
    step "Pulumi toolchain from Go modules (cached outside the repo)"
    bash tools/build-toolchain.sh
    step "single-node Kubernetes from Go modules (cached outside the repo)"
    bash tools/cluster.sh build
fi
