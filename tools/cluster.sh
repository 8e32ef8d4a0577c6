#!/usr/bin/env bash
# tools/cluster.sh — a real Kubernetes on this machine, built from Go modules (no Docker, no registry).
#
# Single node (the e2e tier's cluster, tools/deploy.sh):
#   tools/cluster.sh build       build/cache all binaries and images (idempotent, seconds when cached)
#   tools/cluster.sh up          start etcd, containerd, control plane, kubelet, kube-proxy, DNS, the NetworkPolicy
#                                enforcer (kube-router); wait Ready
#   tools/cluster.sh down        stop exactly the processes started by `up`, clean mounts/iptables/bridge
#                  down --purge  ... and delete the state dir (etcd data, certs, images; hostPath data stays)
#   tools/cluster.sh status      what runs
#   tools/cluster.sh kubeconfig  print the admin kubeconfig path
#   tools/cluster.sh selftest    end-to-end checks (pod + hostPath, headless svc + StatefulSet, exec,
#                                pod-to-pod DNS, NodePort on 127.0.0.1, down/up)
#   tools/cluster.sh env         print shell exports (KUBECONFIG, PATH with kubectl)
#   (images: Redis 7.0, Valkey 9.1, Redis 8.6, redis_exporter as localhost/redis-cluster/...: cluster/common.sh)
#   tools/cluster.sh exporter    build only redis_exporter (the metrics sidecar) and its image
#   tools/cluster.sh import      import the built images into the running cluster (those `up` lacked)
#
# Multi-node (the same binaries; one control plane on the host, each node a network namespace with
# its own containerd, kubelet and kube-proxy; see tools/cluster/multi.sh):
#   tools/cluster.sh multi up [N]        N nodes rc-n1..rc-nN (default 3); wait until all are Ready
#   tools/cluster.sh multi down [--purge]
#   tools/cluster.sh multi status | kubeconfig | env | nodes (name and address of every node)
#   tools/cluster.sh multi node-down NODE   lose a whole node: its link down, its containers,
#                                           containerd, kubelet and kube-proxy killed
#   tools/cluster.sh multi node-up NODE     bring it back (same addresses, same state)
#   tools/cluster.sh multi selftest      cross-node pod traffic, DNS, NodePorts on every node, node loss
#
# Environment: REDIS_CLUSTER_K8S_CACHE (default ~/.cache/redis-cluster/k8s),
#              REDIS_CLUSTER_K8S_STATE (default ~/.local/state/redis-cluster/k8s),
#              REDIS_CLUSTER_K8S_MULTI_STATE (default ~/.local/state/redis-cluster/k8s-multi),
#              REDIS_CLUSTER_K8S_UP_TIMEOUT (seconds, default 300).
# What is built and run, measured times, problems hit and how they were solved: tools/cluster/README.md.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MODDIR="$HERE/cluster"
REPO_ROOT="$(cd "$HERE/.." && pwd)"
CLUSTER_MODE=single
[[ "${1:-}" == multi ]] && { CLUSTER_MODE=multi; shift; }

# shellcheck source=cluster/common.sh
source "$MODDIR/common.sh"
# shellcheck source=cluster/configs.sh
source "$MODDIR/configs.sh"
# shellcheck source=cluster/build.sh
source "$MODDIR/build.sh"
# shellcheck source=cluster/pki.sh
source "$MODDIR/pki.sh"
# shellcheck source=cluster/single.sh
source "$MODDIR/single.sh"
# shellcheck source=cluster/selftest.sh
source "$MODDIR/selftest.sh"

usage() { awk 'NR>1 && /^# What is built/{exit} NR>1{sub(/^# ?/, ""); print}' "$0"; exit 2; }

if [[ "$CLUSTER_MODE" == multi ]]; then
  # shellcheck source=cluster/multi.sh
  source "$MODDIR/multi.sh"
  case "${1:-}" in
    up) shift; multi_up "$@" ;;
    down) shift; multi_down "$@" ;;
    status) multi_status ;;
    kubeconfig) echo "$KUBECONFIG_ADMIN" ;;
    env) echo "export KUBECONFIG=$KUBECONFIG_ADMIN"; echo "export PATH=$BIN:\$PATH" ;;
    nodes) multi_nodes ;;
    node-down) shift; multi_node_down "$@" ;;
    node-up) shift; multi_node_up "$@" ;;
    selftest) shift; multi_selftest "$@" ;;
    *) usage ;;
  esac
  exit
fi

case "${1:-}" in
  build) cmd_build ;;
  up) cmd_up ;;
  down) shift; cmd_down "$@" ;;
  status) cmd_status ;;
  kubeconfig) cmd_kubeconfig ;;
  env) cmd_env ;;
  selftest) shift; cmd_selftest "$@" ;;
  key) echo "$CACHE" ;;
  checks) export PATH="$BIN:/usr/sbin:/sbin:$PATH"; selftest_checks ;;
  images)  # build only the pause binary and the server images (debugging aid)
    mkdir -p "$BIN" "$IMAGES"; gobuild pause pause . -ldflags "-s -w"
    build_pause_image; build_redis_image; build_engine_images ;;
  exporter)  # build only redis_exporter and its image (what tools/cluster.sh build does for them)
    mkdir -p "$BIN" "$IMAGES"; build_exporter; build_exporter_image ;;
  import)  # import images built after `up` into the running cluster's containerd (those it lacks)
    running containerd || die "the single-node cluster is not running (tools/cluster.sh up imports every image)"
    import_images ;;
  *) usage ;;
esac
