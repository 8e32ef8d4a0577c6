#!/usr/bin/env bash
# The test command (README): lint, types, then every pytest tier that is installed.
# The engine tier needs tools/build-toolchain.sh, the e2e tier tools/cluster.sh build (the
# e2e fixture starts the cluster and stops it again); tools/setup.sh runs both. In CI
# (REDIS_CLUSTER_REQUIRE_TIERS=1) a tier that would be skipped fails the run instead.
set -Eeuo pipefail
cd "$(dirname "$0")/.."

venv/bin/ruff check .
venv/bin/ruff format --check .
venv/bin/mypy
# shellcheck source=toolchain-env.sh
source tools/toolchain-env.sh || echo "test: the engine tier will be skipped (no toolchain)" >&2
exec venv/bin/pytest -q "$@"
