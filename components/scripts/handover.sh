#!/bin/sh
# preStop hook: a master hands its slots to its most caught-up replica before its pod stops.
#
# Runs on every graceful termination: kubectl delete, a drain, an eviction, a rolling update.
# A master with slots asks the online replica with the highest replication offset to take
# over with CLUSTER FAILOVER, without options: the master pauses its clients until that
# replica has every write, so no acknowledged write is lost. It then waits until it is a
# replica itself, at most REDIS_HANDOVER_TIMEOUT seconds (kept below the pod's
# terminationGracePeriodSeconds). It does not wait for a replica that stops answering
# (during a destroy every pod stops at once).
#
# A replica, a master without slots, or one without an online replica stops as it is. The
# hook never fails the termination: every path exits 0 and says what it did, on stderr and
# in the container's log.
#
# Env: REDIS_HOST (127.0.0.1), REDIS_PORT (6379), REDIS_CLI_TLS (redis-cli TLS options),
# REDIS_AUTH_DIR (the Secret: operator-password, else password), REDIS_HANDOVER_TIMEOUT (45).
set -u

host=${REDIS_HOST:-127.0.0.1}
port=${REDIS_PORT:-6379}
timeout=${REDIS_HANDOVER_TIMEOUT:-45}
auth_dir=${REDIS_AUTH_DIR:-/etc/redis-auth}
user=""
# The operator login (it may run CLUSTER FAILOVER whatever the guard rails); read by the shell, never argv.
if [ -s "$auth_dir/operator-password" ]; then
    IFS= read -r REDISCLI_AUTH <"$auth_dir/operator-password" || true
    export REDISCLI_AUTH
    user="--user operator"
elif [ -s "$auth_dir/password" ]; then
    IFS= read -r REDISCLI_AUTH <"$auth_dir/password" || true
    export REDISCLI_AUTH
fi

say() {
    echo "handover: $*" >&2
    echo "handover: $*" >/proc/1/fd/1 2>/dev/null || true
}

# Later -h/-p options win: `cli -h IP -p PORT ...` asks another node.
# shellcheck disable=SC2086
cli() { redis-cli ${REDIS_CLI_TLS:-} $user -h "$host" -p "$port" "$@"; }

role=$(cli role 2>/dev/null | head -n 1)
if [ "$role" != master ]; then
    say "not a master (${role:-no answer}): nothing to hand over"
    exit 0
fi
# shellcheck disable=SC2046
set -- $(cli cluster nodes 2>/dev/null | grep myself)
if [ $# -le 8 ]; then
    say "owns no slots: nothing to hand over"
    exit 0
fi

best=""
best_offset=-1
for entry in $(cli info replication 2>/dev/null | tr -d '\r' | sed -n 's/^slave[0-9]*://p'); do
    ip="" rport="" state="" offset=-1
    old_ifs=$IFS
    IFS=,
    for kv in $entry; do
        case $kv in
        ip=*) ip=${kv#ip=} ;;
        port=*) rport=${kv#port=} ;;
        state=*) state=${kv#state=} ;;
        offset=*) offset=${kv#offset=} ;;
        esac
    done
    IFS=$old_ifs
    if [ "$state" = online ] && [ "$offset" -gt "$best_offset" ]; then
        best="$ip $rport"
        best_offset=$offset
    fi
done
if [ -z "$best" ]; then
    say "no online replica: stopping as master (its slots wait for the node timeout's failover or its return)"
    exit 0
fi
# shellcheck disable=SC2086
set -- $best
say "asking replica $1:$2 (replication offset $best_offset) to take over"

ask() {
    out=$(cli -h "$1" -p "$2" cluster failover 2>&1)
    [ "$out" = OK ] || say "CLUSTER FAILOVER on $1:$2: $out"
}
ask "$1" "$2"
polls=$((timeout * 5))
i=0
while [ "$i" -lt "$polls" ]; do
    if [ "$(cli role 2>/dev/null | head -n 1)" = slave ]; then
        say "handed over to $1:$2 after $((i / 5)).$((i % 5 * 2))s"
        exit 0
    fi
    if [ "$(cli -h "$1" -p "$2" ping 2>&1)" != PONG ]; then
        say "replica $1:$2 stopped answering: stopping as master"
        exit 0
    fi
    # A manual failover that did not complete (Redis gives it 5 s) is asked for once more.
    [ "$i" -eq 50 ] && ask "$1" "$2"
    sleep 0.2
    i=$((i + 1))
done
say "replica $1:$2 did not take over within ${timeout}s: stopping as master"
exit 0
