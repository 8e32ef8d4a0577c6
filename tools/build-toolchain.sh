#!/usr/bin/env bash
# Builds the offline Pulumi toolchain for the engine test tier from Go modules (no registry ships the
# pulumi CLI or its plugins as binaries):
#   bin/pulumi                          github.com/pulumi/pulumi/pkg/v3/cmd/pulumi (tools/pulumi/cli)
#   bin/pulumi-language-python          our Python language host (tools/pulumi/language-python)
#   bin/pulumi-language-python-exec     \ scripts copied from the sdk/v3 module's python/ directory
#   bin/pulumi-resource-pulumi-python   /
#   home/plugins/resource-kubernetes-v<K8S_PLUGIN_VERSION>/pulumi-resource-kubernetes
#                                       github.com/pulumi/pulumi-kubernetes/provider/v4 (tools/pulumi/kubernetes)
# into ${REDIS_CLUSTER_TOOLCHAIN_CACHE:-$HOME/.cache/redis-cluster/toolchain}/<key>, where <key> names the
# pinned versions (tools/pulumi/versions.env) plus a hash of everything under tools/pulumi/. A rerun with
# the same inputs only checks the outputs. Prints the bin dir on its last line.
#
# Usage: tools/build-toolchain.sh              build (or check) the toolchain, print the bin dir
#        tools/build-toolchain.sh --print-bin  print the bin dir if that toolchain is complete (exit 0),
#                                              else print it on stderr and exit 3; builds nothing
#        tools/build-toolchain.sh --print-root same for the toolchain root (PulumiCommand(root=...))
#        tools/build-toolchain.sh --prune      build (or check), then delete the other toolchains in the cache
#
# Measured on the 2-core / 24 GiB dev machine (Go 1.26.8), `nice -n 5`, while other sessions were running
# tests and Go builds on the same cores:
#   fully cold (empty Go module cache: 2.2 GB downloaded from the proxy; empty Go build cache: 6 GB
#   written; load 10-40 from another session's Kubernetes build):
#     pulumi CLI 754 s | language host 78 s | kubernetes provider 1300 s | total 2132 s (35.5 min;
#     22.6 min of user CPU)
#   first build with modules already downloaded and an empty build cache (load 5-9):
#     pulumi CLI 372 s | language host 30 s | kubernetes provider 818 s | total ~1220 s (~20 min)
#   The kubernetes step is the longest: it compiles its own pulumi pkg/sdk v3.215.0, k8s.io 0.33, helm.
#   warm rerun (toolchain present, nothing to build): 0.4-0.7 s
#   rebuild after a tools/pulumi change with a warm Go build cache: ~30 s (mostly linking)
set -Eeuo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS_PULUMI="$REPO_ROOT/tools/pulumi"
# shellcheck source=pulumi/versions.env source-path=SCRIPTDIR
source "$TOOLS_PULUMI/versions.env"

GO="${GO:-/usr/local/go/bin/go}"
CACHE_ROOT="${REDIS_CLUSTER_TOOLCHAIN_CACHE:-$HOME/.cache/redis-cluster/toolchain}"

die() {
    echo "build-toolchain: ERROR: $*" >&2
    exit 1
}
trap 'echo "build-toolchain: FAILED at line $LINENO: $BASH_COMMAND" >&2' ERR

[[ -x "$GO" ]] || GO="$(command -v go || true)"
[[ -n "$GO" && -x "$GO" ]] || die "no Go found (expected /usr/local/go/bin/go, or set GO=...)"
GO_VERSION_LINE="$("$GO" version)" || die "$GO does not run"

# The inputs that decide what gets built: versions, Go, and every source file under tools/pulumi.
input_hash() {
    (
        cd "$REPO_ROOT"
        echo "$GO_VERSION_LINE"
        find tools/pulumi -type f \( -name '*.go' -o -name 'go.mod' -o -name 'go.sum' -o -name '*.env' \) \
            -print | LC_ALL=C sort | while read -r f; do
            echo "== $f"
            cat "$f"
        done
    ) | sha256sum | cut -c1-12
}

INPUT_HASH="$(input_hash)" || die "could not hash the inputs under tools/pulumi"
[[ ${#INPUT_HASH} -eq 12 ]] || die "could not hash the inputs under tools/pulumi (got '$INPUT_HASH')"
KEY="pulumi-${PULUMI_VERSION}-k8s-${K8S_PLUGIN_VERSION}-${INPUT_HASH}"
ROOT="$CACHE_ROOT/$KEY"
BIN="$ROOT/bin"
HOME_DIR="$ROOT/home"
COMPLETE="$ROOT/.complete"

PRUNE=0
case "${1:-}" in
--prune) PRUNE=1 ;;
--print-bin | --print-root)
    out="$BIN"
    [[ "$1" == --print-root ]] && out="$ROOT"
    if [[ -f "$COMPLETE" ]]; then
        echo "$out"
        exit 0
    fi
    echo "$out" >&2
    exit 3
    ;;
"") ;;
*) die "unknown argument: $1 (see the header of $0)" ;;
esac

export GOTOOLCHAIN=local
export GOFLAGS="-mod=readonly -buildvcs=false"
GO_BUILD=(nice -n 5 "$GO" build -trimpath)

now_ms() { date +%s%3N; }
T_START=$(now_ms)
step_start=0
step() {
    step_start=$(now_ms)
    echo "build-toolchain: ==> $*"
}
step_done() {
    local ms=$(($(now_ms) - step_start))
    printf 'build-toolchain:     done in %d.%03d s\n' $((ms / 1000)) $((ms % 1000))
}

mkdir -p "$CACHE_ROOT"
# One build per key at a time (two test sessions could start a build together).
exec 9>"$CACHE_ROOT/$KEY.lock"
flock 9

echo "build-toolchain: toolchain $KEY"
echo "build-toolchain: root $ROOT"
if [[ -f "$COMPLETE" ]]; then
    echo "build-toolchain: already built ($(cat "$COMPLETE")); checking outputs"
fi
mkdir -p "$BIN" "$HOME_DIR"

# --- 1. pulumi CLI ---------------------------------------------------------------------------
step "pulumi CLI v$PULUMI_VERSION (github.com/pulumi/pulumi/pkg/v3/cmd/pulumi)"
if [[ -x "$BIN/pulumi" ]] && [[ "$("$BIN/pulumi" version 2>/dev/null)" == "v$PULUMI_VERSION" ]]; then
    echo "build-toolchain:     cached: $BIN/pulumi"
else
    (
        cd "$TOOLS_PULUMI/cli"
        "${GO_BUILD[@]}" -tags osusergo,grpcnotrace \
            -ldflags "-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=v$PULUMI_VERSION" \
            -o "$BIN/pulumi.tmp" github.com/pulumi/pulumi/pkg/v3/cmd/pulumi
    )
    mv -f "$BIN/pulumi.tmp" "$BIN/pulumi"
    got="$("$BIN/pulumi" version)"
    [[ "$got" == "v$PULUMI_VERSION" ]] || die "pulumi version says '$got', expected v$PULUMI_VERSION"
fi
step_done

# --- 2. Python language host + scripts -------------------------------------------------------
step "Python language host v$LANGUAGE_PYTHON_VERSION (tools/pulumi/language-python) + sdk/v3 python scripts"
SDK_DIR="$(cd "$TOOLS_PULUMI/cli" && "$GO" list -m -f '{{.Dir}}' github.com/pulumi/pulumi/sdk/v3)"
[[ -n "$SDK_DIR" && -d "$SDK_DIR/python" ]] || {
    (cd "$TOOLS_PULUMI/cli" && "$GO" mod download github.com/pulumi/pulumi/sdk/v3)
    SDK_DIR="$(cd "$TOOLS_PULUMI/cli" && "$GO" list -m -f '{{.Dir}}' github.com/pulumi/pulumi/sdk/v3)"
}
[[ -f "$SDK_DIR/python/cmd/pulumi-language-python-exec" ]] || die "no python/cmd/pulumi-language-python-exec in $SDK_DIR"
[[ -f "$SDK_DIR/python/dist/pulumi-resource-pulumi-python" ]] || die "no python/dist/pulumi-resource-pulumi-python in $SDK_DIR"
if [[ -x "$BIN/pulumi-language-python" ]] &&
    [[ "$("$BIN/pulumi-language-python" -version 2>/dev/null)" == "$LANGUAGE_PYTHON_VERSION" ]]; then
    echo "build-toolchain:     cached: $BIN/pulumi-language-python"
else
    (
        cd "$TOOLS_PULUMI/language-python"
        "${GO_BUILD[@]}" -tags osusergo,grpcnotrace -ldflags "-s -w -X main.version=$LANGUAGE_PYTHON_VERSION" \
            -o "$BIN/pulumi-language-python.tmp" .
    )
    mv -f "$BIN/pulumi-language-python.tmp" "$BIN/pulumi-language-python"
fi
# Files in the module cache are read-only and lose their exec bit: copy and chmod.
install -m 0755 "$SDK_DIR/python/cmd/pulumi-language-python-exec" "$BIN/pulumi-language-python-exec"
install -m 0755 "$SDK_DIR/python/dist/pulumi-resource-pulumi-python" "$BIN/pulumi-resource-pulumi-python"
step_done

# --- 3. Kubernetes provider plugin -----------------------------------------------------------
step "Kubernetes provider $K8S_PROVIDER_BUILD_VERSION (provider/v4@$K8S_PROVIDER_MODULE_VERSION), installed as v$K8S_PLUGIN_VERSION"
PLUGIN_DIR="$HOME_DIR/plugins/resource-kubernetes-v$K8S_PLUGIN_VERSION"
if [[ -x "$PLUGIN_DIR/pulumi-resource-kubernetes" ]] && [[ -f "$PLUGIN_DIR.lock" || -d "$PLUGIN_DIR" ]] &&
    PULUMI_HOME="$HOME_DIR" PULUMI_SKIP_UPDATE_CHECK=true "$BIN/pulumi" plugin ls 2>/dev/null |
    grep -Eq "^kubernetes +resource +$K8S_PLUGIN_VERSION "; then
    echo "build-toolchain:     cached: $PLUGIN_DIR/pulumi-resource-kubernetes"
else
    BUILD_DIR="$ROOT/build/kubernetes"
    rm -rf "$BUILD_DIR"
    mkdir -p "$BUILD_DIR"
    cp "$TOOLS_PULUMI/kubernetes/go.mod" "$TOOLS_PULUMI/kubernetes/go.sum" \
        "$TOOLS_PULUMI/kubernetes/main.go" "$TOOLS_PULUMI/kubernetes/gen.go" "$BUILD_DIR/"
    K8S_DIR="$(cd "$BUILD_DIR" && "$GO" mod download -json \
        "github.com/pulumi/pulumi-kubernetes/provider/v4@$K8S_PROVIDER_MODULE_VERSION" |
        sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
    [[ -f "$K8S_DIR/cmd/pulumi-resource-kubernetes/schema.json" ]] || die "no schema.json in '$K8S_DIR'"
    # The upstream main embeds generated files that are not in the module zip; generate them from the
    # schema.json / terraform-mapping.json the module carries (copied at build time, never committed).
    install -m 0644 "$K8S_DIR/cmd/pulumi-resource-kubernetes/schema.json" \
        "$K8S_DIR/cmd/pulumi-resource-kubernetes/terraform-mapping.json" "$BUILD_DIR/"
    (cd "$BUILD_DIR" && VERSION="$K8S_PROVIDER_BUILD_VERSION" nice -n 5 "$GO" run gen.go)
    (
        cd "$BUILD_DIR"
        "${GO_BUILD[@]}" \
            -ldflags "-s -w -X github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/version.Version=$K8S_PROVIDER_BUILD_VERSION" \
            -o "$BUILD_DIR/pulumi-resource-kubernetes" .
    )
    # Install it into the toolchain's PULUMI_HOME under the version the Python SDK asks for.
    rm -rf "$PLUGIN_DIR" "$PLUGIN_DIR.lock" "$PLUGIN_DIR.partial"
    PULUMI_HOME="$HOME_DIR" PULUMI_SKIP_UPDATE_CHECK=true \
        "$BIN/pulumi" plugin install resource kubernetes "$K8S_PLUGIN_VERSION" \
        --file "$BUILD_DIR/pulumi-resource-kubernetes"
    [[ -x "$PLUGIN_DIR/pulumi-resource-kubernetes" ]] || die "plugin install did not create $PLUGIN_DIR/pulumi-resource-kubernetes"
    rm -rf "$ROOT/build"
fi
step_done

# --- 4. smoke check --------------------------------------------------------------------------
step "smoke check"
PULUMI_HOME="$HOME_DIR" PULUMI_SKIP_UPDATE_CHECK=true "$BIN/pulumi" plugin ls
step_done

cat >"$COMPLETE" <<EOF
pulumi v$PULUMI_VERSION, language-python $LANGUAGE_PYTHON_VERSION, kubernetes $K8S_PROVIDER_BUILD_VERSION as v$K8S_PLUGIN_VERSION, $("$GO" version | cut -d' ' -f3), built $(date -u +%Y-%m-%dT%H:%M:%SZ)
EOF

for other in "$CACHE_ROOT"/pulumi-*; do
    [[ -d "$other" && "$other" != "$ROOT" ]] || continue
    if ((PRUNE)); then
        echo "build-toolchain: pruning $other"
        rm -rf "$other" "$other.lock"
    else
        echo "build-toolchain: note: another toolchain is cached: $other ($(du -sh "$other" | cut -f1); --prune deletes it)"
    fi
done

ms=$(($(now_ms) - T_START))
printf 'build-toolchain: total %d.%03d s\n' $((ms / 1000)) $((ms % 1000))
echo "build-toolchain: PULUMI_HOME=$HOME_DIR (source tools/toolchain-env.sh to use it)"
echo "$BIN"
