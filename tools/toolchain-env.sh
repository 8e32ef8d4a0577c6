# shellcheck shell=bash
# Source this file (bash): `source tools/toolchain-env.sh`
# Puts the offline Pulumi toolchain built by tools/build-toolchain.sh on PATH and sets the settings for
# running the engine without network access. It does not build anything; when the toolchain for the
# current tools/pulumi/ inputs is missing it says so and returns 1 (run tools/build-toolchain.sh).
# It deliberately does NOT set PULUMI_BACKEND_URL: each test stack gets its own file:// backend.
# Nor PULUMI_CONFIG_PASSPHRASE: a stack's passphrase is its owner's (README quickstart, tools/deploy.sh),
# and one set here would silently encrypt a real stack with it; the engine tests bring their own
# (tests/engine/conftest.py).
#
# Exports: REDIS_CLUSTER_TOOLCHAIN_ROOT (PulumiCommand(root=...)), REDIS_CLUSTER_TOOLCHAIN_BIN, PATH,
#          PULUMI_HOME, PULUMI_SKIP_UPDATE_CHECK, PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION.

_rc_tc_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if _rc_tc_root="$(bash "$_rc_tc_dir/build-toolchain.sh" --print-root 2>/dev/null)"; then
    export REDIS_CLUSTER_TOOLCHAIN_ROOT="$_rc_tc_root"
    export REDIS_CLUSTER_TOOLCHAIN_BIN="$_rc_tc_root/bin"
    case ":$PATH:" in
    *":$REDIS_CLUSTER_TOOLCHAIN_BIN:"*) ;;
    *) export PATH="$REDIS_CLUSTER_TOOLCHAIN_BIN:$PATH" ;;
    esac
    export PULUMI_HOME="$_rc_tc_root/home"
    export PULUMI_SKIP_UPDATE_CHECK=true
    export PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true
    unset _rc_tc_dir _rc_tc_root
else
    echo "toolchain-env: the Pulumi toolchain is not built; run tools/build-toolchain.sh" >&2
    unset _rc_tc_dir _rc_tc_root
    # shellcheck disable=SC2317 # exit only when run instead of sourced
    return 1 2>/dev/null || exit 1
fi
