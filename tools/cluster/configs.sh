# tools/cluster/configs.sh — the config files of a Kubernetes node and of cluster DNS, for both layouts
# shellcheck shell=bash
#
# One writer each, called by single.sh (one node, $STATE) and multi.sh (node I in its own dir), so the
# two clusters differ only in the values they pass (name=value arguments), never in a second copy of
# a file.

# node_configs dir= name= ip= bridge= pod_cidr= gateway= cluster_cidr= serving_cert= max_pods= \
#   node_port_addresses= localhost_node_ports= [cgroup_root=]
# CNI, containerd, kubelet and kube-proxy of one node, under dir (its containerd socket:
# dir/run/containerd/containerd.sock).
node_configs() {
  local dir="" name="" ip="" bridge="" pod_cidr="" gateway="" cluster_cidr="" serving_cert="" max_pods="" \
    node_port_addresses="" localhost_node_ports="" cgroup_root=""
  local "$@"
  local cgroup_line=""  # multi: each node's pods in their own cgroup subtree
  [[ -z "$cgroup_root" ]] || cgroup_line="cgroupRoot: $cgroup_root"
  mkdir -p "$dir/etc" "$dir/cni/net.d" "$dir/cni/ipam" "$dir/pod-logs" "$dir/containerd" "$dir/run/containerd"
  cat > "$dir/cni/net.d/10-redis-cluster.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "redis-cluster",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$bridge",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$dir/cni/ipam",
        "ranges": [[{"subnet": "$pod_cidr", "gateway": "$gateway"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
  cat > "$dir/etc/containerd.toml" <<EOF
version = 3
root = "$dir/containerd/root"
state = "$dir/run/containerd/state"
[grpc]
  address = "$dir/run/containerd/containerd.sock"
[ttrpc]
  address = "$dir/run/containerd/ttrpc.sock"
[debug]
  level = "info"
[plugins]
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = "overlayfs"
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = "$PAUSE_IMAGE"
  [plugins.'io.containerd.cri.v1.runtime']
    netns_mounts_under_state_dir = true
    # no CAP_SYS_RESOURCE here: runc cannot lower oom_score_adj (-998 for sandboxes) -> clamp it
    restrict_oom_score_adj = true
    enable_cdi = false
    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = "runc"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
          BinaryName = "$(command -v runc)"
          SystemdCgroup = false
          Root = "$dir/run/runc"
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = ["/usr/lib/cni"]
      conf_dir = "$dir/cni/net.d"
  [plugins.'io.containerd.grpc.v1.cri']
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
EOF
  cat > "$dir/etc/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $ip
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
tlsCertFile: $PKI/$serving_cert.crt
tlsPrivateKeyFile: $PKI/$serving_cert.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization:
  mode: Webhook
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
$cgroup_line
clusterDomain: cluster.local
clusterDNS: [$DNS_SERVICE_IP]
resolvConf: $STATE/etc/resolv.conf
podLogsDir: $dir/pod-logs
containerRuntimeEndpoint: unix://$dir/run/containerd/containerd.sock
imageServiceEndpoint: unix://$dir/run/containerd/containerd.sock
hairpinMode: hairpin-veth
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
evictionPressureTransitionPeriod: 10s
maxPods: $max_pods
registerNode: true
rotateCertificates: false
serverTLSBootstrap: false
protectKernelDefaults: false
makeIPTablesUtilChains: false
localStorageCapacityIsolation: true
EOF
  cat > "$dir/etc/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection: {kubeconfig: $STATE/kube-proxy.kubeconfig}
hostnameOverride: $name
bindAddress: 127.0.0.1
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
clusterCIDR: $cluster_cidr
nodePortAddresses: [$node_port_addresses]
iptables: {localhostNodePorts: $localhost_node_ports, masqueradeAll: false, syncPeriod: 10s, minSyncPeriod: 0s}
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
}

# dns_configs bind= health_port= ready_port= [node_name=]
# CoreDNS on the host (bind), its kube-dns Service and EndpointSlice, and the resolv.conf every
# kubelet gives its pods (nameserver = cluster DNS; the host's upstream stays out).
dns_configs() {
  local bind="" health_port="" ready_port="" node_name=""
  local "$@"
  local node_line=""
  [[ -z "$node_name" ]] || node_line="  nodeName: $node_name"
  mkdir -p "$STATE/etc"
  printf 'nameserver %s\n' "$DNS_SERVICE_IP" > "$STATE/etc/resolv.conf"
  cat > "$STATE/etc/Corefile" <<EOF
.:53 {
    bind $bind
    errors
    health 127.0.0.1:$health_port
    ready 127.0.0.1:$ready_port
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $STATE/coredns.kubeconfig local
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }
    loadbalance
}
EOF
  cat > "$STATE/etc/kube-dns.yaml" <<EOF
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels: {k8s-app: kube-dns, kubernetes.io/name: CoreDNS}
spec:
  clusterIP: $DNS_SERVICE_IP
  ports:
  - {name: dns, port: 53, protocol: UDP, targetPort: 53}
  - {name: dns-tcp, port: 53, protocol: TCP, targetPort: 53}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kube-dns-host
  namespace: kube-system
  labels:
    kubernetes.io/service-name: kube-dns
    endpointslice.kubernetes.io/managed-by: redis-cluster.local-tools
addressType: IPv4
ports:
- {name: dns, port: 53, protocol: UDP}
- {name: dns-tcp, port: 53, protocol: TCP}
endpoints:
- addresses: ["$bind"]
  conditions: {ready: true}
$node_line
EOF
}
