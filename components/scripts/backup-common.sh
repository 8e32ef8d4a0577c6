# shellcheck shell=sh
# Sourced by backup.sh and restore.sh (one ConfigMap, one directory): the login, the bounded redis-cli
# call, the messages, and the facts about a cluster and a backup directory that both check.
# Set before sourcing: me (every message's prefix), verdict (what die says: FAILED or REFUSED), user
# (the ACL user to log in as; its password is <user>-password in REDIS_AUTH_DIR).

auth_dir=${REDIS_AUTH_DIR:-/etc/redis-auth}
# Read by the shell, never in argv.
if [ -s "$auth_dir/$user-password" ]; then
    IFS= read -r REDISCLI_AUTH <"$auth_dir/$user-password" || true
    export REDISCLI_AUTH
fi

say() { echo "$me: $*" >&2; }
die() {
    say "$verdict: $*"
    exit 1
}
# cli HOST:PORT ARGS...: bounded, a frozen node must not hold the run.
# shellcheck disable=SC2086
cli() {
    node=$1
    shift
    timeout 10 redis-cli ${REDIS_CLI_TLS:-} --user "$user" -h "${node%:*}" -p "${node##*:}" "$@" 2>/dev/null | tr -d '\r'
}
# await_nodes SECONDS: until a node of REDIS_NODES answers PING (0), or SECONDS have passed (1). This pod is
# new, and a NetworkPolicy enforcer admits a new pod's address only once it has seen the pod get it: until
# then (measured with kube-router: the first connect, ~0.2 s after the start) every connect is refused.
await_nodes() {
    waited=0
    while :; do
        for node in $REDIS_NODES; do
            [ "$(cli "$node" ping)" = PONG ] && return 0
        done
        [ "$waited" -lt "$1" ] || return 1
        sleep 1
        waited=$((waited + 1))
    done
}
# The backups in directory $1, oldest first (their names are their start times, as the CronJob and
# `python -m bootstrap backup` write them).
backups() { ls -1 "$1" 2>/dev/null | grep '^redis-cluster-[0-9]\{8\}T[0-9]\{6\}Z$' | sort; }
# How many slots live masters serve in the CLUSTER NODES table on stdin (importing slots not counted).
served_slots() {
    awk '$3 ~ /master/ && $3 !~ /fail/ { for (i = 9; i <= NF; i++) { if ($i ~ /^\[/) continue;
        n = split($i, r, "-"); s += (n == 2 ? r[2] - r[1] + 1 : 1) } } END { print s + 0 }'
}
