#!/bin/sh
# preStop hook: a master hands its slots to its most caught-up replica before its pod stops.
#
# Runs on every graceful termination: kubectl delete, a drain, an eviction, a rolling update.
# A master with slots picks its heir among the replicas its own cluster table lists, at the
# addresses they announce (not INFO replication's ip=, the replication connection's source:
# behind kube-proxy SNAT or a masquerading CNI that is a node address where no replica
# listens): the one whose link is up with the highest offset, as the replica itself reports.
# It waits (at most 5 s) until the masters that vote and the heir see each other connected (a
# master drops a vote it cannot send), then asks for CLUSTER FAILOVER without options: the
# master pauses its clients until the heir has every write, so no acknowledged write is lost.
# When no election comes (two attempts), it does the same by hand: its own writes paused
# (CLIENT PAUSE WRITE), the heir waited for until it has this master's offset, CLUSTER
# FAILOVER TAKEOVER on the heir, and the pause lifted only once this node follows the heir.
# Should the heir have taken over and this node not have learned it yet, the pause stays
# until the container stops: a write it accepted then would be lost.
#
# Budget (REDIS_HANDOVER_TIMEOUT, 45 s of the pod's 60 s terminationGracePeriodSeconds; the
# rest is Redis' own shutdown): links 5 s, two graceful attempts 8 s each, the paused
# takeover 3 s to sync plus what is left to switch; each redis-cli call is bounded by the
# same deadline. It does not wait for a replica that stops answering (during a destroy
# every pod stops at once).
#
# A replica, a master without slots, or one without a live replica stops as it is. The hook
# never fails the termination: every path exits 0 and says what it did, on stderr and in
# the container's log.
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

# Later -h/-p options win: `cli -h IP -p PORT ...` asks another node. Bounded: a frozen node must not
# hold the hook (redis-cli waits for an answer forever).
# shellcheck disable=SC2086
cli() { timeout 3 redis-cli ${REDIS_CLI_TLS:-} $user -h "$host" -p "$port" "$@"; }
# A field of INFO replication on another node (its own word about its link and offset).
field() { cli -h "$1" -p "$2" info replication 2>/dev/null | tr -d '\r' | sed -n "s/^$3://p"; }

started=$(date +%s)
left() { echo $((timeout - ($(date +%s) - started))); }

role=$(cli role 2>/dev/null | head -n 1)
if [ "$role" != master ]; then
    say "not a master (${role:-no answer}): nothing to hand over"
    exit 0
fi
table=$(cli cluster nodes 2>/dev/null)
# shellcheck disable=SC2046
set -- $(echo "$table" | grep myself)
if [ $# -le 8 ]; then
    say "owns no slots: nothing to hand over"
    exit 0
fi
myid=$1

# Replicas of this master by their announced address (ip:port@bus[,hostname]): field 4 is the master id.
best="" best_id="" best_offset=-1
for candidate in $(echo "$table" | awk -v me="$myid" '$4 == me && $3 !~ /fail|noaddr|handshake/ && $8 == "connected" {
        split($2, a, "@"); print $1 "=" a[1] }'); do
    id=${candidate%%=*}
    address=${candidate#*=}
    rhost=${address%:*}
    rport=${address##*:}
    [ "$(field "$rhost" "$rport" master_link_status)" = up ] || continue
    offset=$(field "$rhost" "$rport" slave_repl_offset)
    if [ -n "$offset" ] && [ "$offset" -gt "$best_offset" ]; then
        best="$rhost $rport" best_id=$id best_offset=$offset
    fi
done
if [ -z "$best" ]; then
    say "no replica with a live link: stopping as master (its slots wait for the node timeout's failover or its return)"
    exit 0
fi
# shellcheck disable=SC2086
set -- $best
say "asking replica $1:$2 (replication offset $best_offset) to take over"

# The voters: masters that own slots (fields 9+), other than this one, at their announced addresses.
voters=$(echo "$table" | awk -v me="$myid" '$3 ~ /master/ && $3 !~ /fail|noaddr/ && $1 != me && NF > 8 {
        split($2, a, "@"); print a[1] }')
# Each look bounded by 1 s and by the 5 s of this wait: many voters that do not answer (a zone gone)
# must not spend the budget the failover needs.
linked() {
    # shellcheck disable=SC2086
    timeout 1 redis-cli ${REDIS_CLI_TLS:-} $user -h "$1" -p "$2" cluster nodes 2>/dev/null |
        awk -v id="$3" '$1 == id && $8 == "connected" { ok = 1 } END { exit !ok }'
}
links_until=$(($(date +%s) + 5))
while :; do
    missing=0
    for v in $voters; do
        [ "$(date +%s)" -ge "$links_until" ] && missing=$((missing + 1)) && continue
        linked "${v%:*}" "${v##*:}" "$best_id" || missing=$((missing + 1))
    done
    [ "$missing" -eq 0 ] && break
    if [ "$(date +%s)" -ge "$links_until" ]; then
        say "$missing voter(s) without a link to $1:$2 (or not answering) after 5 s: asking anyway"
        break
    fi
    sleep 0.2
done

follows() { [ "$(cli role 2>/dev/null | head -n 1)" = slave ]; }
waited() { echo "$(($(date +%s) - started))s"; }

for attempt in 1 2; do
    out=$(cli -h "$1" -p "$2" cluster failover 2>&1)
    [ "$out" = OK ] || say "CLUSTER FAILOVER on $1:$2 (attempt $attempt): $out"
    attempt_until=$(($(date +%s) + 8)) # Redis gives a manual failover 5 s
    while [ "$(date +%s)" -lt "$attempt_until" ] && [ "$(left)" -gt 0 ]; do
        if follows; then
            say "handed over to $1:$2 after $(waited)"
            exit 0
        fi
        if [ "$(cli -h "$1" -p "$2" ping 2>&1)" != PONG ]; then
            say "replica $1:$2 stopped answering: stopping as master"
            exit 0
        fi
        sleep 0.2
    done
done

remaining=$(left)
if [ "$remaining" -le 3 ]; then
    say "replica $1:$2 was not elected and no time is left (${timeout}s): stopping as master"
    exit 0
fi
say "replica $1:$2 was not elected: taking over with this master's writes paused"
# Paused past the end of the grace period: should the heir take over and this node not learn it, no
# write may land here before the container is gone (Redis' own shutdown comes after the hook).
if [ "$(cli client pause "$(((remaining + 60) * 1000))" write 2>&1)" != OK ]; then
    say "could not pause this master's writes: stopping as master"
    exit 0
fi
target=$(field "$host" "$port" master_repl_offset)
sync_until=$(($(date +%s) + 3))
while :; do
    got=$(field "$1" "$2" slave_repl_offset)
    [ -n "$got" ] && [ -n "$target" ] && [ "$got" -ge "$target" ] && break
    if [ "$(date +%s)" -ge "$sync_until" ]; then
        cli client unpause >/dev/null 2>&1
        say "replica $1:$2 did not reach offset $target with writes paused: stopping as master"
        exit 0
    fi
    sleep 0.2
done
cli -h "$1" -p "$2" cluster failover takeover >/dev/null 2>&1
while [ "$(left)" -gt 0 ]; do
    if follows; then
        cli client unpause >/dev/null 2>&1
        say "handed over to $1:$2 by TAKEOVER after $(waited)"
        exit 0
    fi
    sleep 0.2
done
if [ "$(field "$1" "$2" role)" = master ]; then
    say "$1:$2 took over but this node has not learned it: its writes stay paused until it stops"
else
    cli client unpause >/dev/null 2>&1
    say "replica $1:$2 did not take over within ${timeout}s: stopping as master"
fi
exit 0
