#!/usr/bin/env bash
# The README's deploy command: `bash tools/deploy.sh [stack]` (default: dev).
# With a Kubernetes context configured (KUBECONFIG or ~/.kube/config), deploys the stack there.
# Without one, brings up the embedded single-node Kubernetes (tools/cluster.sh) and deploys the
# stack to it with the locally built Redis image (no registry is needed or used).
# Uses `pulumi` from PATH, else the toolchain built by tools/build-toolchain.sh.
set -Eeuo pipefail
cd "$(dirname "$0")/.."
stack="${1:-dev}"

has_context() {
    command -v kubectl >/dev/null && kubectl config current-context >/dev/null 2>&1
}

[[ -x venv/bin/python ]] || { python3 -m venv venv && venv/bin/pip install -q -r requirements.txt; }
if ! command -v pulumi >/dev/null; then
    # shellcheck source=toolchain-env.sh
    source tools/toolchain-env.sh || { bash tools/build-toolchain.sh >/dev/null && source tools/toolchain-env.sh; }
fi
export PULUMI_CONFIG_PASSPHRASE="${PULUMI_CONFIG_PASSPHRASE-}"
pulumi stack select --create "$stack" >/dev/null

if has_context; then
    echo "deploy: using Kubernetes context $(kubectl config current-context)" >&2
else
    echo "deploy: no Kubernetes context configured: starting the embedded single-node cluster" >&2
    bash tools/cluster.sh build
    bash tools/cluster.sh up
    eval "$(bash tools/cluster.sh env)"
    # The embedded cluster has no registry: its image is imported locally and never pulled.
    pulumi config set --stack "$stack" image localhost/redis-cluster/redis:7.0-local
    pulumi config set --stack "$stack" imagePullPolicy Never
    pulumi config set --stack "$stack" bootstrapConnection direct
fi
exec pulumi up --stack "$stack" --yes
