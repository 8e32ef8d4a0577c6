# tools/cluster/selftest.sh — the single-node selftest (sourced by tools/cluster.sh)
# shellcheck shell=bash

# =============================================================================================
# selftest
# =============================================================================================
ST_NS=rc-selftest
selftest_deploy() {
  local k=(kubectl_admin) ns=$ST_NS
  local hp="$STATE/../selftest-hostpath"
  mkdir -p "$hp"; chown 999:999 "$hp"
  local lp; lp="$(realpath -m "$STATE/../selftest-local")"
  "${k[@]}" delete namespace $ns --ignore-not-found --wait=true >/dev/null
  "${k[@]}" delete pv rc-selftest-pv-0 rc-selftest-pv-1 --ignore-not-found --wait=true >/dev/null
  # local PV dirs root-owned on purpose: fsGroup must make them writable for uid 999
  rm -rf "$lp"; mkdir -p "$lp/pv-0" "$lp/pv-1"
  "${k[@]}" create namespace $ns >/dev/null
  local i
  for i in 0 1; do cat <<PV; done | "${k[@]}" apply -f - >/dev/null
---
apiVersion: v1
kind: PersistentVolume
metadata: {name: rc-selftest-pv-$i}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: rc-selftest-local
  local: {path: $lp/pv-$i}
  nodeAffinity:
    required:
      nodeSelectorTerms:
      - matchExpressions: [{key: kubernetes.io/hostname, operator: In, values: [$NODE_NAME]}]
PV
  cat <<EOF | "${k[@]}" -n $ns apply -f - >/dev/null
apiVersion: v1
kind: Pod
metadata: {name: single, labels: {app: single}}
spec:
  containers:
  - name: redis
    image: $REDIS_IMAGE
    imagePullPolicy: Never
    command: [redis-server, --dir, /data, --appendonly, "yes"]
    volumeMounts: [{name: data, mountPath: /data}]
  volumes:
  - name: data
    hostPath: {path: $(realpath "$hp"), type: DirectoryOrCreate}
---
apiVersion: v1
kind: Service
metadata: {name: redis}
spec:
  clusterIP: None
  publishNotReadyAddresses: true
  selector: {app: redis}
  ports: [{name: redis, port: 6379}]
---
apiVersion: v1
kind: Service
metadata: {name: redis-np}
spec:
  type: NodePort
  selector: {app: redis}
  ports: [{name: redis, port: 6379, nodePort: 30679}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: redis}
spec:
  serviceName: redis
  replicas: 2
  podManagementPolicy: Parallel
  selector: {matchLabels: {app: redis}}
  template:
    metadata: {labels: {app: redis}}
    spec:
      securityContext: {runAsUser: 999, runAsGroup: 999, fsGroup: 999}
      containers:
      - name: redis
        image: $REDIS_IMAGE
        imagePullPolicy: Never
        command: [redis-server, --dir, /data, --protected-mode, "no", --appendonly, "yes"]
        ports: [{containerPort: 6379, name: redis}]
        volumeMounts: [{name: data, mountPath: /data}]
        readinessProbe:
          exec: {command: [redis-cli, ping]}
          periodSeconds: 2
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      storageClassName: rc-selftest-local
      resources: {requests: {storage: 1Gi}}
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: rc-selftest-local}
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: WaitForFirstConsumer
EOF
}

selftest_verify() {
  local k=(kubectl_admin) ns=$ST_NS
  local hp="$STATE/../selftest-hostpath"
  wait_for "pod single Ready" 120 "${k[@]}" -n $ns wait --for=condition=Ready pod/single --timeout=5s
  wait_for "statefulset redis 2/2" 180 "${k[@]}" -n $ns wait --for=condition=Ready pod/redis-0 pod/redis-1 --timeout=5s
  log "check: redis-cli ping in pod single (exec)"
  "${k[@]}" -n $ns exec single -- redis-cli ping | has -x PONG
  log "check: uid in container is 999 and hostPath /data writable"
  "${k[@]}" -n $ns exec single -- id -u | has -x 999
  "${k[@]}" -n $ns exec single -- redis-cli set k v | has -x OK
  "${k[@]}" -n $ns exec single -- redis-cli save | has -x OK
  [[ -s "$hp/dump.rdb" ]] || die "dump.rdb not on the hostPath"
  log "check: StatefulSet pods write to their local PersistentVolumes (fsGroup 999)"
  local lp; lp="$(realpath -m "$STATE/../selftest-local")"
  "${k[@]}" -n $ns exec redis-0 -- redis-cli set k0 v0 | has -x OK
  "${k[@]}" -n $ns exec redis-0 -- redis-cli save | has -x OK
  ls "$lp"/pv-*/dump.rdb >/dev/null || die "dump.rdb not on a local PV"
  log "check: per-pod DNS name from another pod (getent + redis-cli)"
  local fq=redis-1.redis.$ns.svc.cluster.local
  "${k[@]}" -n $ns exec redis-0 -- getent hosts $fq | has "$fq"
  "${k[@]}" -n $ns exec redis-0 -- redis-cli -h $fq ping | has -x PONG
  "${k[@]}" -n $ns exec redis-1 -- redis-cli -h redis-0.redis ping | has -x PONG
  log "check: the API server is reachable from a pod (kubernetes.default Service)"
  "${k[@]}" -n $ns exec redis-0 -- sh -c 'nc -w 3 kubernetes.default.svc 443 </dev/null; [ $? -eq 0 ]'
  log "check: NodePort 30679 on 127.0.0.1 from the host"
  wait_for "NodePort 127.0.0.1:30679" 30 sh -c 'redis-cli -h 127.0.0.1 -p 30679 ping | grep -qx PONG'
  log "selftest checks passed"
}

selftest_checks() { selftest_deploy; selftest_verify; }

pod_started_since() { # POD EPOCH: container running + ready, started at/after EPOCH
  local s
  s="$(kubectl_admin -n "$ST_NS" get pod "$1" \
    -o jsonpath='{.status.containerStatuses[0].ready} {.status.containerStatuses[0].state.running.startedAt}')" || return 1
  [[ "${s%% *}" == true && -n "${s#* }" ]] || return 1
  (( $(date -d "${s#* }" +%s) >= $2 ))
}

cmd_selftest() {
  local t0; t0=$(date +%s)
  [[ "${1:-}" == "--no-build" ]] || cmd_build
  export PATH="$BIN:/usr/sbin:/sbin:$PATH"
  running kube-apiserver || cmd_up
  selftest_deploy
  selftest_verify
  log "selftest: down + up again; the same pods must come back"
  cmd_down
  cmd_up
  # the API still shows the pre-down status for a moment: wait for containers started after `up`
  local p
  for p in single redis-0 redis-1; do
    wait_for "pod $p restarted" 180 pod_started_since "$p" "$UP_STARTED"
  done
  selftest_verify
  kubectl_admin get "ns/$ST_NS" -o jsonpath='{.metadata.uid}' >/dev/null
  kubectl_admin -n "$ST_NS" exec single -- redis-cli get k | has -x v || die "key lost across down/up"
  kubectl_admin -n "$ST_NS" exec redis-0 -- redis-cli get k0 | has -x v0 || die "local PV data lost across down/up"
  kubectl_admin delete namespace "$ST_NS" --wait=true >/dev/null
  kubectl_admin delete pv/rc-selftest-pv-0 pv/rc-selftest-pv-1 storageclass/rc-selftest-local \
    --ignore-not-found >/dev/null
  echo "selftest: 1 passed, 0 failed ($(( $(date +%s) - t0 ))s)"
}
