#!/usr/bin/env bash
# The test command (README): lint, types, then every pytest tier that is installed.
# The engine tier needs tools/build-toolchain.sh; tools/setup.sh runs it. In CI
# (REDIS_CLUSTER_REQUIRE_ENGINE=1) a missing toolchain fails instead of skipping.
set -Eeuo pipefail
cd "$(dirname "$0")/.."

venv/bin/ruff check .
venv/bin/ruff format --check .
venv/bin/mypy
# shellcheck source=toolchain-env.sh
source tools/toolchain-env.sh || echo "test: the engine tier will be skipped (no toolchain)" >&2
exec venv/bin/pytest -q "$@"
