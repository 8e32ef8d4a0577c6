# tools/cluster/multi.sh — N Kubernetes nodes on this one machine (sourced by tools/cluster.sh)
# shellcheck shell=bash
#
# One control plane on the host (etcd, kube-apiserver, controller-manager, scheduler, CoreDNS) and N
# nodes rc-n1..rc-nN, each a network namespace holding its own containerd, kubelet, kube-proxy and
# kube-router (the NetworkPolicy enforcer).
# Only the network is separate: the nodes share the host's mount namespace (a kubelet's volume
# mounts must be seen by its containerd and runc) and filesystem, so a local PV's directory exists
# "on" every node; which node mounts it is decided by the PV's nodeAffinity, as on real nodes.
#
#   host bridge rcmn0 10.220.0.1/24 (apiserver, CoreDNS, what the tests connect from)
#     veth rcmn-nI <-> eth0 in netns rc-nI: node IP 10.220.0.(10+I), default route via the host
#   pods of node I: 10.221.I.0/24 on that node's own CNI bridge cni0 (10.221.I.1)
#     routes: on the host and on every other node 10.221.I.0/24 via 10.220.0.(10+I)
#   services 10.222.0.0/24 (kubernetes 10.222.0.1, kube-dns 10.222.0.10 -> CoreDNS on 10.220.0.1)
#   NodePorts on each node's own address (kube-proxy nodePortAddresses: <node IP>/32)
#   kubelet cgroupRoot /rc-nI: each node's pods live in their own cgroup subtree
#
# Ports on the host differ from the single-node cluster's (etcd 2479, controller-manager 10357,
# scheduler 10359, CoreDNS health 18090), so both can run at the same time.

# The addresses above are declared with the single node's in tools/cluster/common.sh.
MN_DEFAULT_NODES=3
MN_MAX_NODES=9

mn_count() { cat "$STATE/node-count" 2>/dev/null || echo 0; }
mn_name() { echo "rc-n$1"; }
mn_ip() { echo "10.220.0.$((10 + $1))"; }
mn_pod_cidr() { echo "10.221.$1.0/24"; }
mn_netns() { echo "/run/netns/rc-n$1"; }
mn_dir() { echo "$STATE/nodes/rc-n$1"; }
mn_sock() { echo "$(mn_dir "$1")/run/containerd/containerd.sock"; }
mn_index() { # NODE NAME or index -> index
  local n="${1#rc-n}"
  [[ "$n" =~ ^[0-9]+$ ]] && (( n >= 1 && n <= $(mn_count) )) || die "no node $1 (nodes: rc-n1..rc-n$(mn_count))"
  echo "$n"
}
in_node() { local i="$1"; shift; nsenter --net="$(mn_netns "$i")" -- "$@"; }
cgroup_dirs() { local d; for d in /sys/fs/cgroup/*/; do [[ -f "$d/cgroup.procs" ]] && echo "${d%/}"; done; }

mn_pki() {
  mkdir -p "$PKI"; chmod 700 "$PKI"
  if [[ ! -f "$PKI/ca.crt" ]]; then
    openssl genrsa -out "$PKI/ca.key" 2048 2>/dev/null
    openssl req -x509 -new -key "$PKI/ca.key" -subj "/CN=redis-cluster-multinode-ca" -days 3650 -sha256 \
      -out "$PKI/ca.crt" 2>/dev/null
  fi
  gen_cert apiserver kube-apiserver "" \
    "IP:127.0.0.1,IP:$API_SERVICE_IP,IP:$MN_HOST_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  gen_cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters
  gen_cert admin admin system:masters
  gen_cert controller-manager system:kube-controller-manager ""
  gen_cert scheduler system:kube-scheduler ""
  gen_cert kube-proxy system:kube-proxy ""
  gen_cert coredns coredns system:masters
  gen_cert kube-router kube-router system:masters
  if [[ ! -f "$PKI/sa.key" ]]; then
    openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
    openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  fi
  local c i
  for c in admin controller-manager scheduler kube-proxy coredns kube-router; do make_kubeconfig "$STATE/$c.kubeconfig" "$c"; done
  for ((i = 1; i <= $(mn_count); i++)); do
    local n; n="$(mn_name "$i")"
    gen_cert "kubelet-$n" "system:node:$n" system:nodes
    gen_cert "kubelet-serving-$n" "system:node:$n" system:nodes "IP:$(mn_ip "$i"),DNS:$n"
    make_kubeconfig "$STATE/kubelet-$n.kubeconfig" "kubelet-$n"
  done
}

mn_control_configs() {
  dns_configs bind="$MN_HOST_IP" health_port=18090 ready_port=18191
}

mn_node_configs() { # I
  local i="$1" n ip d
  n="$(mn_name "$i")"; ip="$(mn_ip "$i")"; d="$(mn_dir "$i")"
  mkdir -p "$d/kubelet"
  node_configs dir="$d" name="$n" ip="$ip" bridge=cni0 pod_cidr="$(mn_pod_cidr "$i")" gateway="10.221.$i.1" \
    cluster_cidr="$MN_CLUSTER_CIDR" serving_cert="kubelet-serving-$n" max_pods=30 \
    node_port_addresses="\"$ip/32\"" localhost_node_ports=false cgroup_root="/$n"
}

mn_host_network() {
  sysctl -qw net.ipv4.ip_forward=1
  # every kubelet (its cAdvisor) and containerd holds inotify instances; Debian's 128 per user runs out
  (( $(cat /proc/sys/fs/inotify/max_user_instances) >= 512 )) || sysctl -qw fs.inotify.max_user_instances=512
  ip link show "$MN_BRIDGE" >/dev/null 2>&1 || ip link add "$MN_BRIDGE" type bridge
  ip addr show dev "$MN_BRIDGE" | has "inet $MN_HOST_IP/" || ip addr add "$MN_HOST_IP/24" dev "$MN_BRIDGE"
  ip link set "$MN_BRIDGE" up
}

mn_node_network() { # I: netns, veth into the host bridge, routes to every other node's pods
  local i="$1" n ip veth j
  n="$(mn_name "$i")"; ip="$(mn_ip "$i")"; veth="rcmn-n$i"
  [[ -e "$(mn_netns "$i")" ]] || ip netns add "$n"
  if ! ip link show "$veth" >/dev/null 2>&1; then
    ip link add "$veth" type veth peer name eth0 netns "$n"
  fi
  ip link set "$veth" master "$MN_BRIDGE" up
  in_node "$i" ip link set lo up
  in_node "$i" ip addr show dev eth0 | has "inet $ip/" || in_node "$i" ip addr add "$ip/24" dev eth0
  in_node "$i" ip link set eth0 up
  in_node "$i" ip route replace default via "$MN_HOST_IP"
  in_node "$i" sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1
  ip route replace "$(mn_pod_cidr "$i")" via "$ip" dev "$MN_BRIDGE"
  for ((j = 1; j <= $(mn_count); j++)); do
    ((j == i)) || in_node "$i" ip route replace "$(mn_pod_cidr "$j")" via "$(mn_ip "$j")" dev eth0
  done
}

mn_node_cgroups() { # I: the kubelet's cgroupRoot must exist in every hierarchy (cpuset: with cpus/mems)
  local n d; n="$(mn_name "$1")"
  for d in $(cgroup_dirs); do
    mkdir -p "$d/$n"
    if [[ -f "$d/cpuset.cpus" && -z "$(cat "$d/$n/cpuset.cpus")" ]]; then
      cat "$d/cpuset.cpus" > "$d/$n/cpuset.cpus"; cat "$d/cpuset.mems" > "$d/$n/cpuset.mems"
    fi
  done
}

mn_import_images() { # I
  local i="$1" sock have img tar
  sock="$(mn_sock "$i")"
  have="$("$BIN/ctr" --address "$sock" -n k8s.io images ls -q 2>/dev/null || true)"
  for img in "${NODE_IMAGES[@]}"; do
    tar="$IMAGES/${img##*:}.tar"; img="${img%:*}"
    has -xF "$img" <<<"$have" && continue
    [[ -s "$tar" ]] || continue  # not built (a cache older than the metrics sidecar): see import_images
    "$BIN/ctr" --address "$sock" -n k8s.io images import "$tar" >/dev/null 2>"$LOGS/ctr-import-$i.log" \
      || die "ctr images import $tar on $(mn_name "$i") failed: $(cat "$LOGS/ctr-import-$i.log")"
  done
}

mn_node_ready() { # I: Ready with a heartbeat newer than its kubelet's start
  local i="$1" n since s
  n="$(mn_name "$i")"
  since="$(date -d "$(ps -o lstart= -p "$(cat "$(pidfile "kubelet@$n")")")" +%s)" || return 1
  in_node "$i" curl -sf --max-time 2 http://127.0.0.1:10248/healthz | has ok || return 1
  s="$(kubectl_admin get node "$n" \
    -o jsonpath='{.status.conditions[?(@.type=="Ready")].status} {.status.conditions[?(@.type=="Ready")].lastHeartbeatTime}')" || return 1
  [[ "${s%% *}" == True ]] || return 1
  (( $(date -d "${s#* }" +%s) >= since ))
}

mn_start_node() { # I: containerd, images, kubelet, kube-proxy in the node's network namespace
  local i="$1" n d
  n="$(mn_name "$i")"; d="$(mn_dir "$i")"
  mn_node_network "$i"
  mn_node_cgroups "$i"
  start "containerd@$n" nsenter --net="$(mn_netns "$i")" -- "$BIN/containerd" --config "$d/etc/containerd.toml"
  wait_for "containerd on $n" 60 "$BIN/ctr" --address "$(mn_sock "$i")" version
  mn_import_images "$i"
  start "kubelet@$n" nsenter --net="$(mn_netns "$i")" -- "$BIN/kubelet" --config="$d/etc/kubelet.yaml" \
    --kubeconfig="$STATE/kubelet-$n.kubeconfig" --root-dir="$d/kubelet" \
    --hostname-override="$n" --node-ip="$(mn_ip "$i")" --v=1
  start "kube-proxy@$n" nsenter --net="$(mn_netns "$i")" -- "$BIN/kube-proxy" --config="$d/etc/kube-proxy.yaml"
}

mn_start_enforcer() { # I: the NetworkPolicy enforcer in the node's network namespace (its iptables, its ipsets)
  local n; n="$(mn_name "$1")"
  step "NetworkPolicy enforcer on $n (kube-router $KUBE_ROUTER_VERSION)" \
    start_policy_enforcer "kube-router@$n" "$n" nsenter --net="$(mn_netns "$1")" --
}

mn_dns_ready() { # from inside node 1, through the Service IP (that node's kube-proxy) to CoreDNS
  in_node 1 busybox nslookup kubernetes.default.svc.cluster.local "$DNS_SERVICE_IP" 2>/dev/null | has "$API_SERVICE_IP"
}

multi_up() {
  is_built || die "cluster not built ($CACHE missing): run tools/cluster.sh build"
  [[ $(id -u) == 0 ]] || die "up needs root"
  local want="${1:-}"
  local have; have="$(mn_count)"
  [[ -z "$want" ]] && want=$(( have > 0 ? have : MN_DEFAULT_NODES ))
  [[ "$want" =~ ^[0-9]+$ ]] && (( want >= 1 && want <= MN_MAX_NODES )) \
    || die "node count must be 1..$MN_MAX_NODES, not '$want'"
  if running kube-apiserver && (( have != want )); then
    die "the multi-node cluster runs with $have nodes: 'multi down' first to change it to $want"
  fi
  local t0; t0=$(date +%s)
  export PATH="$BIN:/usr/sbin:/sbin:$PATH"
  mkdir -p "$LOGS" "$PIDS" "$STATE/etcd"
  echo "$want" > "$STATE/node-count"
  echo "$KEY" > "$STATE/cache-key"
  step "certificates" mn_pki
  mn_control_configs
  local i
  for ((i = 1; i <= want; i++)); do mn_node_configs "$i"; done
  step "host network (bridge $MN_BRIDGE $MN_HOST_IP)" mn_host_network

  start etcd "$BIN/etcd" --name rc-etcd-multi --data-dir "$STATE/etcd" \
    --listen-client-urls "http://127.0.0.1:$MN_ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$MN_ETCD_PORT" \
    --listen-peer-urls http://127.0.0.1:2480 --initial-advertise-peer-urls http://127.0.0.1:2480 \
    --initial-cluster rc-etcd-multi=http://127.0.0.1:2480 --listen-metrics-urls http://127.0.0.1:2481 \
    --quota-backend-bytes 2147483648 --log-level warn
  wait_for etcd 60 curl -sf --max-time 2 "http://127.0.0.1:$MN_ETCD_PORT/health"
  start kube-apiserver "$BIN/kube-apiserver" \
    --bind-address="$MN_HOST_IP" --secure-port="$API_PORT" --advertise-address="$MN_HOST_IP" \
    --etcd-servers="http://127.0.0.1:$MN_ETCD_PORT" \
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
  wait_for kube-apiserver 120 mn_api_ready
  start kube-controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig="$STATE/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$STATE/controller-manager.kubeconfig" \
    --authorization-kubeconfig="$STATE/controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port=10357 --leader-elect=false \
    --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
    --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
    --use-service-account-credentials=true --service-cluster-ip-range=$SERVICE_CIDR \
    --allocate-node-cidrs=false --controllers='*,-cloud-node-lifecycle'
  start kube-scheduler "$BIN/kube-scheduler" \
    --kubeconfig="$STATE/scheduler.kubeconfig" \
    --authentication-kubeconfig="$STATE/scheduler.kubeconfig" \
    --authorization-kubeconfig="$STATE/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port=10359 --leader-elect=false
  start coredns "$BIN/coredns" -conf "$STATE/etc/Corefile"
  for ((i = 1; i <= want; i++)); do step "node $(mn_name "$i") ($(mn_ip "$i"))" mn_start_node "$i"; done

  wait_for "kube-dns service" 60 kubectl_admin apply -f "$STATE/etc/kube-dns.yaml"
  for ((i = 1; i <= want; i++)); do wait_for "node $(mn_name "$i") Ready" "$UP_TIMEOUT" mn_node_ready "$i"; done
  for ((i = 1; i <= want; i++)); do mn_start_enforcer "$i"; done
  wait_for "default service account" 60 kubectl_admin -n default get serviceaccount default
  wait_for "cluster DNS on $DNS_SERVICE_IP from rc-n1" 120 mn_dns_ready
  log "multi-node cluster up ($want nodes) in $(( $(date +%s) - t0 ))s; KUBECONFIG=$KUBECONFIG_ADMIN"
}

mn_api_ready() {
  curl -sf --max-time 3 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
    "$API_URL/readyz" | has ok
}

# Kill every process in the node's cgroup subtree (its containers), then the shims of its containerd.
mn_kill_containers() { # I
  local i="$1" n d p pass
  n="$(mn_name "$i")"
  for pass in 1 2 3; do
    local left=0
    for d in $(cgroup_dirs); do
      [[ -d "$d/$n" ]] || continue
      for p in $(find "$d/$n" -name cgroup.procs -exec cat {} + 2>/dev/null); do
        kill -KILL "$p" 2>/dev/null && left=1
      done
    done
    ((left)) || break
    sleep 0.5
  done
  for p in $(pgrep -f "containerd-shim-runc-v2 .*-address $(mn_sock "$i")" || true); do
    kill -KILL "$p" 2>/dev/null || true
  done
}

mn_kill() { # NAME: SIGKILL (a lost node does not shut down cleanly)
  local f pid; f="$(pidfile "$1")"
  [[ -f "$f" ]] || return 0
  pid="$(cat "$f")"
  if ours "$pid" "$1"; then kill -KILL "$pid" 2>/dev/null || true; log "  killed $1 (pid $pid)"; fi
  rm -f "$f"
}

# Lose a whole node: unreachable first (as a dead machine or a cut cable), then everything on it gone.
multi_node_down() {
  [[ $# == 1 ]] || die "usage: tools/cluster.sh multi node-down NODE"
  local i n t0; i="$(mn_index "$1")"; n="$(mn_name "$i")"; t0=$(date +%s.%N)
  export PATH="$BIN:/usr/sbin:/sbin:$PATH"
  ip link set "rcmn-n$i" down
  in_node "$i" ip link set eth0 down
  mn_kill "kubelet@$n"; mn_kill "kube-proxy@$n"; mn_kill "kube-router@$n"
  mn_kill_containers "$i"
  mn_kill "containerd@$n"
  log "node $n down ($(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')s): $(mn_ip "$i") unreachable, no kubelet, containerd, kube-proxy, kube-router or containers"
}

multi_node_up() {
  [[ $# == 1 ]] || die "usage: tools/cluster.sh multi node-up NODE"
  local i n t0; i="$(mn_index "$1")"; n="$(mn_name "$i")"; t0=$(date +%s)
  export PATH="$BIN:/usr/sbin:/sbin:$PATH"
  running kube-apiserver || die "the multi-node control plane is not running"
  mn_start_node "$i"
  wait_for "node $n Ready" "$UP_TIMEOUT" mn_node_ready "$i"
  mn_start_enforcer "$i"
  log "node $n back in $(( $(date +%s) - t0 ))s"
}

mn_stop_node() { # I: orderly, for `down`
  local i="$1" n id sock
  n="$(mn_name "$i")"; sock="$(mn_sock "$i")"
  stop_proc "kubelet@$n"; stop_proc "kube-proxy@$n"; stop_proc "kube-router@$n"
  if running "containerd@$n" && [[ -S "$sock" ]]; then
    for id in $("$BIN/ctr" --address "$sock" -n k8s.io tasks ls -q 2>/dev/null); do
      "$BIN/ctr" --address "$sock" -n k8s.io tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
    done
  fi
  mn_kill_containers "$i"
  stop_proc "containerd@$n"
}

multi_down() {
  local t0; t0=$(date +%s)
  export PATH="$BIN:/usr/sbin:/sbin:$PATH"
  local i w=() count; count="$(mn_count)"
  mkdir -p "$PIDS"
  for ((i = 1; i <= count; i++)); do mn_stop_node "$i" & w+=($!); done
  for n in coredns kube-scheduler kube-controller-manager; do stop_proc "$n" & w+=($!); done
  ((${#w[@]})) && wait "${w[@]}"
  stop_proc kube-apiserver
  stop_proc etcd
  cleanup_shim_sockets
  cleanup_mounts
  for ((i = 1; i <= count; i++)); do
    ip netns del "$(mn_name "$i")" 2>/dev/null || true   # takes eth0, cni0 and its iptables with it
    ip link del "rcmn-n$i" 2>/dev/null || true
    rm -rf "$(mn_dir "$i")/cni/ipam" "$(mn_dir "$i")/run"
    local d; for d in $(cgroup_dirs); do
      [[ -d "$d/$(mn_name "$i")" ]] && find "$d/$(mn_name "$i")" -depth -type d -exec rmdir {} \; 2>/dev/null
    done
  done
  ip link del "$MN_BRIDGE" 2>/dev/null || true
  if findmnt -rn -o TARGET | has -F "$STATE/"; then
    log "  WARNING: mounts left under $STATE, not removing it:"
    findmnt -rn -o TARGET | grep -F "$STATE/" | sed 's/^/[cluster]     /' >&2
  elif [[ "${1:-}" == --purge ]]; then
    rm -rf "$STATE"; log "  purged $STATE"
  fi
  log "multi-node cluster down in $(( $(date +%s) - t0 ))s"
}

multi_nodes() {
  local i
  for ((i = 1; i <= $(mn_count); i++)); do echo "$(mn_name "$i") $(mn_ip "$i")"; done
}

multi_status() {
  local n i any=0
  echo "cache: $CACHE ($(is_built && echo built || echo 'not built'))"
  echo "state: $STATE ($(mn_count) nodes)"
  local names=(etcd kube-apiserver kube-controller-manager kube-scheduler coredns)
  for ((i = 1; i <= $(mn_count); i++)); do
    names+=("containerd@$(mn_name "$i")" "kubelet@$(mn_name "$i")" "kube-proxy@$(mn_name "$i")" "kube-router@$(mn_name "$i")")
  done
  for n in "${names[@]}"; do
    if running "$n"; then echo "  $n: running (pid $(cat "$(pidfile "$n")"))"; any=1; else echo "  $n: stopped"; fi
  done
  if running kube-apiserver; then kubectl_admin get nodes -o wide 2>/dev/null || true; fi
  ((any)) && return 0 || return 3
}

# A pod pinned to every node, then: pod-to-pod across nodes by IP and by DNS name, the API from a
# pod, a NodePort on every node's address, and a node lost and back.
multi_selftest() {
  local t0; t0=$(date +%s)
  export PATH="$BIN:/usr/sbin:/sbin:$PATH"
  running kube-apiserver || multi_up
  local ns=rc-mn-selftest i count; count="$(mn_count)"
  kubectl_admin delete namespace $ns --ignore-not-found --wait=true >/dev/null
  kubectl_admin create namespace $ns >/dev/null
  for ((i = 1; i <= count; i++)); do cat <<EOF; done | kubectl_admin -n $ns apply -f - >/dev/null
---
apiVersion: v1
kind: Pod
metadata: {name: p$i, labels: {app: st, node: "n$i"}}
spec:
  nodeName: $(mn_name "$i")
  hostname: p$i
  subdomain: st
  containers:
  - name: redis
    image: $REDIS_IMAGE
    imagePullPolicy: Never
    command: [redis-server, --protected-mode, "no"]
---
apiVersion: v1
kind: Service
metadata: {name: p$i}
spec:
  type: NodePort
  selector: {node: "n$i"}
  ports: [{port: 6379, nodePort: $((30700 + i))}]
EOF
  cat <<EOF | kubectl_admin -n $ns apply -f - >/dev/null
apiVersion: v1
kind: Service
metadata: {name: st}
spec: {clusterIP: None, selector: {app: st}, ports: [{port: 6379}]}
EOF
  local pods=(); for ((i = 1; i <= count; i++)); do pods+=("pod/p$i"); done
  wait_for "pods on every node Ready" 180 kubectl_admin -n $ns wait --for=condition=Ready "${pods[@]}" --timeout=5s
  local j ipj
  for ((i = 1; i <= count; i++)); do
    for ((j = 1; j <= count; j++)); do
      ipj="$(kubectl_admin -n $ns get pod "p$j" -o jsonpath='{.status.podIP}')"
      kubectl_admin -n $ns exec "p$i" -- redis-cli -h "$ipj" ping | has -x PONG || die "p$i -> p$j ($ipj) failed"
      kubectl_admin -n $ns exec "p$i" -- redis-cli -h "p$j.st" ping | has -x PONG || die "p$i -> p$j.st (DNS) failed"
      wait_for "NodePort $((30700 + j)) on $(mn_name "$i") ($(mn_ip "$i"))" 30 \
        sh -c "redis-cli -h $(mn_ip "$i") -p $((30700 + j)) ping | grep -qx PONG"
    done
    kubectl_admin -n $ns exec "p$i" -- sh -c 'nc -w 3 kubernetes.default.svc 443 </dev/null; [ $? -eq 0 ]' \
      || die "the API is not reachable from p$i"
  done
  log "selftest: cross-node pod traffic, DNS, API and NodePorts ok"
  multi_node_down "$count"
  if redis-cli -h "$(mn_ip "$count")" -p 30701 ping 2>/dev/null | has PONG; then die "$(mn_name "$count") still answers"; fi
  multi_node_up "$count"
  wait_for "p$count running again" 180 kubectl_admin -n $ns wait --for=condition=Ready "pod/p$count" --timeout=5s
  wait_for "p$count restarted, reachable through its node" 60 \
    sh -c "redis-cli -h $(mn_ip "$count") -p $((30700 + count)) ping | grep -qx PONG"
  kubectl_admin delete namespace $ns --wait=true >/dev/null
  echo "multi selftest: 1 passed, 0 failed ($(( $(date +%s) - t0 ))s)"
}
