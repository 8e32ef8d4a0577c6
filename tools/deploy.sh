#!/usr/bin/env bash
# The README's deploy command: `bash tools/deploy.sh [stack]` (default: dev).
# The passphrase that encrypts the stack's secrets comes from your shell, PULUMI_CONFIG_PASSPHRASE (or
# PULUMI_CONFIG_PASSPHRASE_FILE), as in the README's quickstart: every later command on the stack
# (`pulumi destroy`, `pulumi stack output`) needs the same one, so this script never picks one for you.
# With a Kubernetes context configured (KUBECONFIG or ~/.kube/config), deploys the stack there.
# Without one, brings up the embedded single-node Kubernetes (tools/cluster.sh) and deploys the
# stack to it with the locally built Redis image (no registry is needed or used).
# Uses `pulumi` from PATH, else the toolchain built by tools/build-toolchain.sh.
set -Eeuo pipefail
cd "$(dirname "$0")/.."
stack="${1:-dev}"

if [[ -z "${PULUMI_CONFIG_PASSPHRASE+set}" && -z "${PULUMI_CONFIG_PASSPHRASE_FILE:-}" ]]; then
    cat >&2 <<'EOF'
deploy: PULUMI_CONFIG_PASSPHRASE is not set. It encrypts the stack's secrets, and every later pulumi
command on the stack (pulumi destroy, pulumi stack output) needs the same one. Choose one and keep it:
    export PULUMI_CONFIG_PASSPHRASE='your-passphrase'   (or PULUMI_CONFIG_PASSPHRASE_FILE=<a file holding it>)
EOF
    exit 2
fi

has_context() {
    command -v kubectl >/dev/null && kubectl config current-context >/dev/null 2>&1
}

[[ -x venv/bin/python ]] || { python3 -m venv venv && venv/bin/pip install -q -r requirements.txt; }
# What your shell needs for later commands on the stack, besides the passphrase.
later=()
if ! command -v pulumi >/dev/null; then
    # shellcheck source=toolchain-env.sh
    source tools/toolchain-env.sh || { bash tools/build-toolchain.sh >/dev/null && source tools/toolchain-env.sh; }
    later+=("source tools/toolchain-env.sh")
fi
pulumi stack select --create "$stack" >/dev/null

if has_context; then
    echo "deploy: using Kubernetes context $(kubectl config current-context)" >&2
else
    echo "deploy: no Kubernetes context configured: starting the embedded single-node cluster" >&2
    bash tools/cluster.sh build
    bash tools/cluster.sh up
    eval "$(bash tools/cluster.sh env)"
    later+=('eval "$(bash tools/cluster.sh env)"')
    # The embedded cluster has no registry: its image is imported locally and never pulled.
    pulumi config set --stack "$stack" image localhost/redis-cluster/redis:7.0-local
    pulumi config set --stack "$stack" imagePullPolicy Never
    pulumi config set --stack "$stack" bootstrapConnection direct
fi
pulumi up --stack "$stack" --yes
{
    echo "deploy: stack $stack is up. Later commands on it (README: \"Using the cluster\") need the same"
    echo "PULUMI_CONFIG_PASSPHRASE${later[*]:+, and in your shell:}"
    for line in "${later[@]}"; do echo "    $line"; done
} >&2
