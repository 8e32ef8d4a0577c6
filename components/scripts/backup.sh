#!/bin/sh
# The scheduled backup (the CronJob): one consistent cut across every shard, with the Redis image's own
# redis-cli, written as bootstrap/backup.py writes it (python -m bootstrap restore reads either).
#
# A cut no single moment of the cluster looked like (each shard saved at its own time) may hold a write
# and miss an earlier one. So every master's writes are paused at once (CLIENT PAUSE <bound> WRITE lifts
# by itself at the bound, whatever happens to this script), each master's replication offset and key
# count read, and per shard a snapshot started on a replica already at that offset (else on the master):
# `redis-cli --rdb` asks for a diskless snapshot, whose first bytes ("SYNC sent to master"; Valkey's
# valkey-cli, linked as redis-cli in its images, says "primary") arrive once
# the fork is done; the pods' `repl-diskless-sync-delay 0` forks inside the SYNC command (with a delay,
# the replication cron would start it up to a second later, all that time paused). The source's offset is
# read again after the fork: unchanged, the snapshot is the cut; moved (the pause lapsed), the run fails
# and nothing is kept. Then writes go on while the snapshots stream in.
#
# The backup is written as .<name>.partial and renamed to <name> (redis-cluster-<UTC time>) at the end:
# complete or absent. Backups beyond BACKUP_RETENTION (the newest kept) are deleted afterwards, and so
# are partial ones a killed run left. Every step is logged; the pause in ms is in the log and the manifest.
#
# Helpers: backup-common.sh beside it. Env: REDIS_NODES ("host:port ..." of every pod), BACKUP_DIR
# (/backup), BACKUP_RETENTION (7), BACKUP_USER (backup: the ACL user with only what this needs), REDIS_AUTH_DIR (its password in
# <user>-password), REDIS_CLI_TLS (redis-cli TLS options), BACKUP_PAUSE_MS (3000: the pause's bound),
# BACKUP_TRANSFER_TIMEOUT (3600 s per shard), BACKUP_CATCH_UP_MS (300).
set -eu

dir=${BACKUP_DIR:-/backup}
keep=${BACKUP_RETENTION:-7}
user=${BACKUP_USER:-backup}
bound=${BACKUP_PAUSE_MS:-3000}
transfer_timeout=${BACKUP_TRANSFER_TIMEOUT:-3600}
me=backup verdict=FAILED
# shellcheck source=components/scripts/backup-common.sh
. "$(dirname "$0")/backup-common.sh"
# Milliseconds since boot, from /proc/uptime's centiseconds (no date +%N in busybox).
now_ms() {
    read -r up _ </proc/uptime
    echo "${up%.*}${up#*.}0"
}
field() { cli "$1" info "$2" | sed -n "s/^$3://p"; }

[ -n "${REDIS_NODES:-}" ] || die "REDIS_NODES is empty: no node to back up"
mkdir -p "$dir"

# A pod's name as an address, looked up once here: not in every redis-cli call while writes are paused.
resolve() {
    ip=$(getent hosts "$1" 2>/dev/null | awk '{ print $1; exit }')
    [ -n "$ip" ] || ip=$(nslookup "$1" 2>/dev/null | awk '/^Address/ { a = $NF } END { print a }')
    echo "${ip:-$1}"
}

await_nodes "${NODES_WAIT:-30}" || die "no node answered PING within ${NODES_WAIT:-30} s (nodes: $REDIS_NODES)"
# Which pod is which node (the table's addresses are what nodes announce, maybe NodePorts; the pods'
# own names are what this pod reaches).
pairs="" table=""
for name in $REDIS_NODES; do
    node="$(resolve "${name%:*}"):${name##*:}"
    id=$(cli "$node" cluster myid)
    case $id in
    *[!0-9a-f]* | "") say "$name: no node id (${id:-no answer}); left out" ;;
    *) pairs="$pairs $id=$node" ;;
    esac
    [ -n "$table" ] || table=$(cli "$node" cluster nodes)
done
[ -n "$table" ] || die "no node answered CLUSTER NODES (nodes: $REDIS_NODES)"
host_of() {
    for p in $pairs; do
        if [ "${p%%=*}" = "$1" ]; then
            echo "${p#*=}"
            return 0
        fi
    done
    return 1
}

# Every slot served by a live master, or the backup would silently miss keys.
served=$(echo "$table" | served_slots)
[ "$served" -eq 16384 ] || die "$((16384 - served)) slots are not served by a live master: heal the cluster first"
# Masters with slots, lowest slot first: "id slots" (slots as 0-5460,5461 like the manifest).
masters=$(echo "$table" | awk '$3 ~ /master/ && $3 !~ /fail/ && NF >= 9 { s = ""; lo = 16384
    for (i = 9; i <= NF; i++) { if ($i ~ /^\[/) continue; s = s (s == "" ? "" : ",") $i; split($i, r, "-"); if (r[1] + 0 < lo) lo = r[1] + 0 }
    print lo, $1, s }' | sort -n | cut -d' ' -f2-)
set --
for m in $(echo "$masters" | cut -d' ' -f1); do
    host_of "$m" >/dev/null || die "master $m is not one of the pods in REDIS_NODES"
    set -- "$@" "$m"
done

started=$(date -u +%Y%m%dT%H%M%SZ)
name="redis-cluster-$started"
work="$dir/.$name.partial"
[ ! -e "$dir/$name" ] || die "$dir/$name exists already"
mkdir "$work"
pids=""
unpause() {
    lifts=""
    for m in "$@"; do
        cli "$(host_of "$m")" client unpause >/dev/null &
        lifts="$lifts $!"
    done
    for pid in $lifts; do wait "$pid" || true; done
}
cleanup() {
    status=$?
    unpause "$@"
    for pid in $pids; do kill "$pid" 2>/dev/null || true; done
    [ "$status" -eq 0 ] || rm -rf "$work"
}
# shellcheck disable=SC2064
trap "cleanup $*" EXIT
trap 'exit 1' INT TERM

engine=$(cli "$(host_of "$1")" info server | awk -F: '$1 == "valkey_version" { v = "Valkey " $2 } $1 == "redis_version" { r = "Redis " $2 }
    END { print (v != "" ? v : r) }')
say "$# shards, engine $engine; pausing writes on every master (bound ${bound} ms)"

# While writes are paused every step runs for all shards at once: each redis-cli is a process.
t0=$(now_ms)
cut=$(date -u +%Y-%m-%dT%H:%M:%S+00:00)
for m in "$@"; do
    (
        mh=$(host_of "$m")
        [ "$(cli "$mh" client pause "$bound" write)" = OK ] || echo "$mh" >>"$work/.refused"
    ) &
done
wait
[ ! -s "$work/.refused" ] || die "CLIENT PAUSE refused by $(tr '\n' ' ' <"$work/.refused")"
# Each master's offset and key count at the cut; then a replica already at that offset, so masters do
# not fork (BACKUP_CATCH_UP_MS to get there), else the master. Per shard: "master source-id source offset keys".
k=0
for m in "$@"; do
    (
        mh=$(host_of "$m")
        offset=$(field "$mh" replication master_repl_offset)
        keys=$(cli "$mh" dbsize)
        [ -n "$offset" ] && [ -n "$keys" ] || exit 1
        line="$m $m $mh $offset $keys"
        until=$(($(now_ms) + ${BACKUP_CATCH_UP_MS:-300}))
        replicas=$(echo "$table" | awk -v m="$m" '$4 == m && $3 !~ /fail|noaddr|handshake/ && $8 == "connected" { print $1 }')
        while [ -n "$replicas" ] && [ "$(now_ms)" -le "$until" ]; do
            for r in $replicas; do
                rh=$(host_of "$r") || continue
                if [ "$(field "$rh" replication master_repl_offset)" = "$offset" ]; then
                    line="$m $r $rh $offset $keys"
                    break 2
                fi
            done
            sleep 0.01
        done
        echo "$line" >"$work/.shard-$k"
    ) &
    k=$((k + 1))
done
wait
i=0
while [ "$i" -lt "$k" ]; do
    [ -s "$work/.shard-$i" ] || die "shard $i: its master gave no offset or key count"
    read -r _m _sid source _offset _keys <"$work/.shard-$i"
    # shellcheck disable=SC2086
    timeout "$transfer_timeout" redis-cli ${REDIS_CLI_TLS:-} --user "$user" -h "${source%:*}" -p "${source##*:}" \
        --rdb "$work/shard-$i.rdb" >"$work/.shard-$i.log" 2>&1 &
    pids="$pids $!"
    i=$((i + 1))
done

# The forks: each transfer's first bytes arrive once its snapshot's fork is done.
deadline=$(($(now_ms) + bound - 500))
i=0
while [ "$i" -lt "$k" ]; do
    if grep -Eq "SYNC sent to (master|primary)" "$work/.shard-$i.log"; then
        i=$((i + 1))
    elif [ "$(now_ms)" -gt "$deadline" ]; then
        die "shard $i: no snapshot started within the pause ($(tail -n 2 "$work/.shard-$i.log" | tr '\n' ' '))"
    else
        sleep 0.01
    fi
done
# The cut: every source still at its master's paused offset, after its fork.
checks=""
i=0
while [ "$i" -lt "$k" ]; do
    (
        read -r _m _sid source offset _keys <"$work/.shard-$i"
        now=$(field "$source" replication master_repl_offset)
        [ "$now" = "$offset" ] || echo "shard $i: $source moved from offset $offset to ${now:-?}" >>"$work/.moved"
    ) &
    checks="$checks $!"
    i=$((i + 1))
done
for pid in $checks; do wait "$pid"; done
[ ! -s "$work/.moved" ] || die "$(cat "$work/.moved") before its snapshot: the pause lapsed; nothing kept"
unpause "$@"
pause_ms=$(($(now_ms) - t0))
say "writes paused ${pause_ms} ms; snapshots started, streaming"

status=0
for pid in $pids; do wait "$pid" || status=1; done
pids=""
i=0
shards=""
while [ "$i" -lt "$k" ]; do
    read -r m sid source offset keys <"$work/.shard-$i"
    file="shard-$i.rdb"
    grep -q "Transfer finished with success" "$work/.shard-$i.log" || status=1
    [ "$status" -eq 0 ] || die "shard $i from $source: $(tail -n 3 "$work/.shard-$i.log" | tr '\n' ' ')"
    sha=$(sha256sum "$work/$file" | cut -d' ' -f1)
    bytes=$(wc -c <"$work/$file" | tr -d ' ')
    rdb=$(head -c 9 "$work/$file" | sed 's/^\([A-Z]*\)0*\([0-9][0-9]*\)$/\1 \2/')
    slots=$(echo "$masters" | awk -v m="$m" '$1 == m { print $2 }')
    [ -z "$shards" ] || shards="$shards,"
    shards="$shards
    {
      \"file\": \"$file\",
      \"sha256\": \"$sha\",
      \"bytes\": $bytes,
      \"rdb\": \"$rdb\",
      \"slots\": \"$slots\",
      \"master_id\": \"$m\",
      \"source_id\": \"$sid\",
      \"source\": \"$source\",
      \"offset\": $offset,
      \"keys\": $keys
    }"
    say "$file: $keys keys from $source, $bytes bytes, sha256 $sha"
    rm -f "$work/.shard-$i" "$work/.shard-$i.log"
    i=$((i + 1))
done
cat >"$work/manifest.json" <<EOF
{
  "version": 1,
  "engine": "$engine",
  "cut": "$cut",
  "pause_ms": $pause_ms,
  "shards": [$shards
  ]
}
EOF
mv "$work" "$dir/$name"
say "backup $dir/$name complete: $k shards, writes paused ${pause_ms} ms"

# Retention: the newest $keep backups stay; partial ones of killed runs go.
for old in $(backups "$dir" | sort -r | tail -n +"$((keep + 1))"); do
    rm -rf "${dir:?}/$old"
    say "pruned $old (backupRetention $keep)"
done
for partial in "$dir"/.redis-cluster-*.partial; do
    [ -d "$partial" ] || continue
    rm -rf "$partial"
    say "removed $partial (left by a run that did not finish)"
done
