# tools/cluster/single.sh — the single-node cluster: configs, up, down, status (sourced by tools/cluster.sh)
# shellcheck shell=bash

write_configs() {
  node_configs dir="$STATE" name="$NODE_NAME" ip="$NODE_IP" bridge="$BRIDGE" pod_cidr="$POD_CIDR" \
    gateway="$NODE_IP" cluster_cidr="$POD_CIDR" serving_cert=kubelet-serving max_pods=60 \
    node_port_addresses="\"127.0.0.0/8\", \"$NODE_IP/32\"" localhost_node_ports=true
  dns_configs bind="$NODE_IP" health_port=18080 ready_port=18181 node_name="$NODE_NAME"
}

host_setup() {
  sysctl -qw net.ipv4.ip_forward=1
  sysctl -qw net.ipv4.conf.all.route_localnet=1
  [[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]] && sysctl -qw net.bridge.bridge-nf-call-iptables=1
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
  fi
  ip addr show dev "$BRIDGE" | has "inet $NODE_IP/" || ip addr add "$NODE_IP/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
}

kubectl_admin() { "$BIN/kubectl" --kubeconfig "$KUBECONFIG_ADMIN" "$@"; }

api_ready() {
  curl -sf --max-time 3 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
    "https://127.0.0.1:$API_PORT/readyz" | has ok
}
# Ready=True with a heartbeat from the running kubelet (the Node object survives down/up in
# etcd; a kubelet posts its status at start, then only every 5 min unless something changes)
node_ready() {
  local since; since="$(date -d "$(ps -o lstart= -p "$(cat "$(pidfile kubelet)")")" +%s)" || return 1
  curl -sf --max-time 2 http://127.0.0.1:10248/healthz | has ok || return 1
  local s; s="$(kubectl_admin get node "$NODE_NAME" \
    -o jsonpath='{.status.conditions[?(@.type=="Ready")].status} {.status.conditions[?(@.type=="Ready")].lastHeartbeatTime}')" || return 1
  [[ "${s%% *}" == True ]] || return 1
  (( $(date -d "${s#* }" +%s) >= since ))
}
dns_ready() {
  # through the Service IP (kube-proxy DNAT) to the host CoreDNS
  busybox nslookup kubernetes.default.svc.cluster.local "$DNS_SERVICE_IP" 2>/dev/null | has "$API_SERVICE_IP"
}

import_images() {
  local have; have="$("$BIN/ctr" --address "$CTR_SOCK" -n k8s.io images ls -q 2>/dev/null || true)"
  local img tar
  for img in "${NODE_IMAGES[@]}"; do
    tar="$IMAGES/${img##*:}.tar"; img="${img%:*}"
    if has -xF "$img" <<<"$have"; then continue; fi
    # a cache built before the metrics sidecar existed has no exporter image: the cluster runs without it
    [[ -s "$tar" ]] || { log "  $img not built, not imported (tools/cluster.sh build makes it)"; continue; }
    "$BIN/ctr" --address "$CTR_SOCK" -n k8s.io images import "$tar" >/dev/null 2>"$LOGS/ctr-import.log" \
      || die "ctr images import $tar failed: $(cat "$LOGS/ctr-import.log")"
    log "  imported $img"
  done
}

cmd_up() {
  is_built || die "cluster not built ($CACHE missing): run tools/cluster.sh build"
  [[ $(id -u) == 0 ]] || die "up needs root"
  local t0; t0=$(date +%s); UP_STARTED=$t0
  export PATH="$BIN:/usr/sbin:/sbin:$PATH"
  mkdir -p "$LOGS" "$PIDS" "$RUN/containerd" "$STATE/etcd" "$STATE/kubelet" "$STATE/pod-logs"
  echo "$KEY" > "$STATE/cache-key"
  cleanup_after_crash
  step "certificates" gen_pki
  step "configs" write_configs
  step "host network (sysctls, bridge $BRIDGE)" host_setup

  start etcd "$BIN/etcd" --name rc-etcd --data-dir "$STATE/etcd" \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster rc-etcd=http://127.0.0.1:2380 --listen-metrics-urls http://127.0.0.1:2381 \
    --quota-backend-bytes 2147483648 --log-level warn
  start containerd "$BIN/containerd" --config "$STATE/etc/containerd.toml"
  wait_for etcd 60 curl -sf --max-time 2 http://127.0.0.1:2379/health
  wait_for containerd 60 "$BIN/ctr" --address "$CTR_SOCK" version
  step "import images" import_images

  start kube-apiserver "$BIN/kube-apiserver" \
    --bind-address=127.0.0.1 --secure-port=$API_PORT --advertise-address=$NODE_IP \
    --etcd-servers=http://127.0.0.1:2379 \
    --service-cluster-ip-range=$SERVICE_CIDR --service-node-port-range=30000-32767 \
    --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --client-ca-file="$PKI/ca.crt" \
    --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types=InternalIP \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
    --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
    --allow-privileged=true --profiling=false --endpoint-reconciler-type=lease
  wait_for kube-apiserver 120 api_ready

  start kube-controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig="$STATE/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$STATE/controller-manager.kubeconfig" \
    --authorization-kubeconfig="$STATE/controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port=10257 --leader-elect=false \
    --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
    --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
    --use-service-account-credentials=true --service-cluster-ip-range=$SERVICE_CIDR \
    --allocate-node-cidrs=false --controllers='*,-cloud-node-lifecycle'
  start kube-scheduler "$BIN/kube-scheduler" \
    --kubeconfig="$STATE/scheduler.kubeconfig" \
    --authentication-kubeconfig="$STATE/scheduler.kubeconfig" \
    --authorization-kubeconfig="$STATE/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port=10259 --leader-elect=false
  start kubelet "$BIN/kubelet" --config="$STATE/etc/kubelet.yaml" \
    --kubeconfig="$STATE/kubelet.kubeconfig" --root-dir="$STATE/kubelet" \
    --hostname-override=$NODE_NAME --node-ip=$NODE_IP --v=1
  start kube-proxy "$BIN/kube-proxy" --config="$STATE/etc/kube-proxy.yaml"
  start coredns "$BIN/coredns" -conf "$STATE/etc/Corefile"
  # the apiserver listens on 127.0.0.1 only; the kubernetes Service endpoint is the bridge address:
  # forward $NODE_IP:$API_PORT -> 127.0.0.1:$API_PORT so pods can reach the API too
  start api-bridge "$(command -v socat)" "TCP-LISTEN:$API_PORT,bind=$NODE_IP,fork,reuseaddr" \
    "TCP:127.0.0.1:$API_PORT"

  wait_for "kube-dns service" 60 kubectl_admin apply -f "$STATE/etc/kube-dns.yaml"
  wait_for "node $NODE_NAME Ready" "$UP_TIMEOUT" node_ready
  step "NetworkPolicy enforcer (kube-router $KUBE_ROUTER_VERSION)" start_policy_enforcer kube-router "$NODE_NAME"
  wait_for "default service account" 60 kubectl_admin -n default get serviceaccount default
  wait_for "cluster DNS on $DNS_SERVICE_IP" 120 dns_ready
  log "cluster up in $(( $(date +%s) - t0 ))s; KUBECONFIG=$KUBECONFIG_ADMIN"
}


# containers: kill the tasks through our containerd, then the shims we spawned (identified by
# our containerd's socket on their command line)
stop_containers() {
  local ctr=("$BIN/ctr" --address "$CTR_SOCK" -n k8s.io)
  if running containerd && [[ -S "$CTR_SOCK" ]]; then
    local id
    for id in $("${ctr[@]}" tasks ls -q 2>/dev/null); do
      "${ctr[@]}" tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
    done
    sleep 1
    for id in $("${ctr[@]}" tasks ls -q 2>/dev/null); do
      "${ctr[@]}" tasks delete -f "$id" >/dev/null 2>&1 || true
    done
  fi
  local p
  for p in $(pgrep -f "containerd-shim-runc-v2 .*-address $CTR_SOCK" || true); do
    kill -KILL "$p" 2>/dev/null || true
  done
}



cleanup_network() {
  if [[ -x "$BIN/kube-proxy" ]]; then
    "$BIN/kube-proxy" --cleanup --config="$STATE/etc/kube-proxy.yaml" >/dev/null 2>&1 || true
  fi
  # leftovers: portmap's CNI-* chains and KUBE-* chains (kubelet's KUBE-FIREWALL survives
  # kube-proxy --cleanup); nothing else on this machine runs Kubernetes or CNI
  local ipt t c
  for ipt in iptables ip6tables; do
    command -v $ipt >/dev/null || continue
    for t in nat filter mangle; do
      local chains; chains="$($ipt -t $t -S 2>/dev/null | awk '/^-N (KUBE-|CNI-)/{print $2}')"
      [[ -n "$chains" ]] || continue
      for c in $chains; do
        # a chain nothing jumps to (kube-router's KUBE-NWPLCY-DEFAULT): grep finds nothing, which
        # pipefail would turn into the end of `down`
        { $ipt -t $t -S 2>/dev/null | grep -E -- "-j $c( |$)" || true; } | sed 's/^-A/-D/' \
          | while read -r rule; do eval "$ipt -t $t $rule" 2>/dev/null || true; done
      done
      for c in $chains; do $ipt -t $t -F "$c" 2>/dev/null || true; done
      for c in $chains; do $ipt -t $t -X "$c" 2>/dev/null || true; done
    done
  done
  # kube-router's address sets (its --cleanup-config leaves them in v2.1.0); referenced by no rule now
  local set
  for set in $(ipset list -n 2>/dev/null | grep -E '^(KUBE-(SRC|DST)-|TMP-)' || true); do
    ipset destroy "$set" 2>/dev/null || true
  done
  ip link del "$BRIDGE" 2>/dev/null || true
  rm -rf "$STATE/cni/ipam"
}


# `up` after the processes died without `down` (killed, machine session ended): shims of ours may
# still run and container mounts stay; clear them before containerd starts again
cleanup_after_crash() {
  local n
  for n in etcd containerd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy coredns kube-router; do
    running "$n" && return 0
  done
  local p left=0
  for p in $(pgrep -f "containerd-shim-runc-v2 .*-address $CTR_SOCK" || true); do
    kill -KILL "$p" 2>/dev/null || true; left=1
  done
  ((left)) && sleep 1
  if findmnt -rn -o TARGET | has -F "$STATE/" || ((left)); then
    log "  cleaning up after an unclean stop (shims, mounts)"
    cleanup_shim_sockets
    cleanup_mounts
  fi
  findmnt -rn -o TARGET | has -F "$STATE/" || rm -rf "$RUN"
}

cmd_down() {
  local t0; t0=$(date +%s)
  export PATH="$BIN:/usr/sbin:/sbin:$PATH"
  [[ -d "$PIDS" ]] || { log "nothing to stop ($STATE not present)"; return 0; }
  local n w=()
  # in parallel; wait only for these subshells (`up` in the same shell left daemons as children)
  for n in api-bridge coredns kube-router kube-proxy kubelet kube-scheduler kube-controller-manager; do
    stop_proc "$n" & w+=($!)
  done
  wait "${w[@]}"
  stop_containers
  stop_proc kube-apiserver
  w=()
  for n in containerd etcd; do stop_proc "$n" & w+=($!); done
  wait "${w[@]}"
  cleanup_shim_sockets
  cleanup_mounts
  cleanup_network
  cleanup_cgroups
  # containerd's runtime state does not survive a down; etcd data, images and pod dirs stay
  # (pods come back on the next `up`). Never rm while anything is still mounted below: a local
  # PersistentVolume is bind-mounted under kubelet/pods, and rm would follow it into the data.
  if findmnt -rn -o TARGET | has -F "$STATE/"; then
    log "  WARNING: mounts left under $STATE, not removing runtime state:"
    findmnt -rn -o TARGET | grep -F "$STATE/" | sed 's/^/[cluster]     /' >&2
  else
    rm -rf "$RUN"
    if [[ "${1:-}" == --purge ]]; then
      rm -rf "$STATE"
      log "  purged $STATE (etcd data, certificates, images, pod dirs)"
    fi
  fi
  log "cluster down in $(( $(date +%s) - t0 ))s"
}

cmd_status() {
  local n any=0
  echo "cache: $CACHE ($(is_built && echo built || echo 'not built'))"
  echo "state: $STATE"
  for n in etcd containerd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy coredns kube-router api-bridge; do
    if running "$n"; then echo "  $n: running (pid $(cat "$(pidfile "$n")"))"; any=1
    else echo "  $n: stopped"; fi
  done
  if ((any)) && [[ -f "$KUBECONFIG_ADMIN" ]]; then
    kubectl_admin get nodes -o wide 2>/dev/null || true
  fi
  ((any)) && return 0 || return 3
}

cmd_kubeconfig() { echo "$KUBECONFIG_ADMIN"; }

cmd_env() {
  echo "export KUBECONFIG=$KUBECONFIG_ADMIN"
  echo "export PATH=$BIN:\$PATH"
  echo "export CONTAINERD_ADDRESS=$CTR_SOCK CONTAINERD_NAMESPACE=k8s.io"
}

