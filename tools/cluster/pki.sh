# tools/cluster/pki.sh — certificates and kubeconfigs (sourced by tools/cluster.sh)
# shellcheck shell=bash

gen_cert() { # NAME CN O [SAN]
  local name="$1" cn="$2" o="$3" san="${4:-}"
  [[ -f "$PKI/$name.crt" ]] && return 0
  local subj="/CN=$cn"; [[ -n "$o" ]] && subj="/O=$o$subj"
  openssl genrsa -out "$PKI/$name.key" 2048 2>/dev/null
  openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
  local ext="$PKI/$name.ext"
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    if [[ -n "$san" ]]; then echo "extendedKeyUsage=serverAuth,clientAuth"; echo "subjectAltName=$san"
    else echo "extendedKeyUsage=clientAuth"; fi
  } > "$ext"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 3650 -sha256 -extfile "$ext" -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr" "$ext"
}

make_kubeconfig() { # FILE CERTNAME
  local f="$1" c="$2"
  cat > "$f" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: ${API_URL:-https://127.0.0.1:$API_PORT}
    certificate-authority: $PKI/ca.crt
users:
- name: $c
  user:
    client-certificate: $PKI/$c.crt
    client-key: $PKI/$c.key
contexts:
- name: local
  context: {cluster: local, user: $c}
current-context: local
EOF
}

gen_pki() {
  mkdir -p "$PKI"; chmod 700 "$PKI"
  if [[ ! -f "$PKI/ca.crt" ]]; then
    openssl genrsa -out "$PKI/ca.key" 2048 2>/dev/null
    openssl req -x509 -new -key "$PKI/ca.key" -subj "/CN=redis-cluster-local-ca" -days 3650 -sha256 \
      -out "$PKI/ca.crt" 2>/dev/null
  fi
  gen_cert apiserver kube-apiserver "" \
    "IP:127.0.0.1,IP:$API_SERVICE_IP,IP:$NODE_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  gen_cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters
  gen_cert admin admin system:masters
  gen_cert controller-manager system:kube-controller-manager ""
  gen_cert scheduler system:kube-scheduler ""
  gen_cert kubelet "system:node:$NODE_NAME" system:nodes
  gen_cert kubelet-serving "system:node:$NODE_NAME" system:nodes "IP:$NODE_IP,IP:127.0.0.1,DNS:$NODE_NAME"
  gen_cert kube-proxy system:kube-proxy ""
  gen_cert coredns coredns system:masters
  gen_cert kube-router kube-router system:masters
  if [[ ! -f "$PKI/sa.key" ]]; then
    openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
    openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  fi
  local c
  for c in admin controller-manager scheduler kubelet kube-proxy coredns kube-router; do
    make_kubeconfig "$STATE/$c.kubeconfig" "$c"
  done
}

