#!/bin/sh
# restoreFrom (a Job run once, after the bootstrap formed the cluster): a backup's keys into this
# cluster, whatever its shape, with the Redis image's own tools.
#
# Nothing is written before every check passed: the backup exists and is complete (its manifest),
# every file the manifest lists is there with its SHA-256 and no other .rdb is, every slot of the
# target is served and the target holds no key. Then one temporary redis-server per shard file loads
# it on loopback (a file this image's server cannot read, e.g. a newer format, is refused with the
# server's own words) and `redis-cli --cluster import --cluster-copy` moves its keys, TTLs kept, each to
# the master that owns its slot now. The shards go in parallel; progress is logged every 20000 keys.
#
# Helpers: backup-common.sh beside it. Env: BACKUP_DIR (/backup), RESTORE_FROM (a backup's name, or
# "latest"), REDIS_NODES ("host:port ..."), RESTORE_USER (operator), REDIS_AUTH_DIR (its password in <user>-password), RESTORE_WORK (a writable
# directory, /tmp/restore), RESTORE_PORT_BASE (7100: the loaders' loopback ports), RESTORE_LOAD_TIMEOUT
# (600 s), REDIS_CLI_TLS (redis-cli TLS options).
set -eu

dir=${BACKUP_DIR:-/backup}
from=${RESTORE_FROM:?RESTORE_FROM names the backup}
user=${RESTORE_USER:-operator}
work=${RESTORE_WORK:-/tmp/restore}
base=${RESTORE_PORT_BASE:-7100}
load_timeout=${RESTORE_LOAD_TIMEOUT:-600}
me=restore verdict=REFUSED
# shellcheck source=components/scripts/backup-common.sh
. "$(dirname "$0")/backup-common.sh"
# The loaders on loopback have no password: without REDISCLI_AUTH, redis-cli sends none.
loader() {
    port=$1
    shift
    env -u REDISCLI_AUTH redis-cli -p "$port" "$@" 2>/dev/null | tr -d '\r'
}

if [ "$from" = latest ]; then
    from=$(backups "$dir" | tail -n 1)
    [ -n "$from" ] || die "restoreFrom latest: no backup in $dir"
fi
src="$dir/$from"
[ -f "$src/manifest.json" ] || die "restoreFrom $from: no such backup in $dir (there: $(backups "$dir" | tr '\n' ' '))"

# The files: "file sha256" per shard, from the manifest (one field per line, file before sha256).
listed=$(awk -F'"' '$2 == "file" { f = $4 } $2 == "sha256" && f != "" { print f, $4; f = "" }' "$src/manifest.json")
[ -n "$listed" ] || die "$src/manifest.json lists no shard file"
echo "$listed" | while read -r file sha; do
    [ -f "$src/$file" ] || die "$src/$file: listed in the manifest but missing"
    got=$(sha256sum "$src/$file" | cut -d' ' -f1)
    [ "$got" = "$sha" ] || die "$src/$file: SHA-256 $got, the manifest says $sha"
done
for f in "$src"/*.rdb; do
    [ -e "$f" ] || continue
    echo "$listed" | grep -q "^${f##*/} " || die "$f: not in the manifest (a stray or renamed file)"
done
say "backup $from: $(echo "$listed" | wc -l | tr -d ' ') shard file(s), checksums match"

# The target: every slot served, no key anywhere.
await_nodes "${NODES_WAIT:-30}" || die "no node answered PING within ${NODES_WAIT:-30} s (nodes: $REDIS_NODES)"
target="" table=""
for node in $REDIS_NODES; do
    table=$(cli "$node" cluster nodes)
    if [ -n "$table" ]; then
        target=$node
        break
    fi
done
[ -n "$table" ] || die "no node answered CLUSTER NODES (nodes: $REDIS_NODES)"
served=$(echo "$table" | served_slots)
[ "$served" -eq 16384 ] || die "$((16384 - served)) slots of the target are not served"
for node in $REDIS_NODES; do
    keys=$(cli "$node" dbsize)
    [ "${keys:-0}" -eq 0 ] || die "$node holds $keys keys: restoreFrom fills an empty cluster only (nothing was written)"
done

# The loaders: one standalone server per file, on loopback, without persistence.
mkdir -p "$work"
pids=""
cleanup() {
    for pid in $pids; do kill "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 1' INT TERM
i=0
for file in $(echo "$listed" | cut -d' ' -f1); do
    mkdir -p "$work/$i"
    ln -sf "$src/$file" "$work/$i/dump.rdb"
    redis-server --port "$((base + i))" --bind 127.0.0.1 --dir "$work/$i" --dbfilename dump.rdb --save "" \
        --appendonly no --logfile "$work/$i/log" &
    pids="$pids $!"
    i=$((i + 1))
done
n=$i
expected=0
i=0
for pid in $pids; do
    file=$(echo "$listed" | sed -n "$((i + 1))p" | cut -d' ' -f1)
    waited=0
    while [ "$(loader "$((base + i))" ping)" != PONG ]; do
        kill -0 "$pid" 2>/dev/null || die "$file cannot be loaded by $(redis-server --version | cut -d' ' -f1-3): $(tail -n 3 "$work/$i/log" | tr '\n' ' ')"
        [ "$waited" -lt "$((load_timeout * 10))" ] || die "$file: still loading after ${load_timeout} s"
        waited=$((waited + 1))
        sleep 0.1
    done
    keys=$(loader "$((base + i))" dbsize)
    expected=$((expected + keys))
    say "$file loaded: $keys keys"
    i=$((i + 1))
done

# The import: every shard at once; each key to its slot's owner, TTL kept (MIGRATE ... COPY).
imports=""
i=0
while [ "$i" -lt "$n" ]; do
    (
        # shellcheck disable=SC2086
        {
            redis-cli ${REDIS_CLI_TLS:-} --user "$user" --cluster import "$target" --cluster-from "127.0.0.1:$((base + i))" \
                --cluster-copy 2>&1
            echo "exit $?" >"$work/$i/rc"
        } | awk -v s="$i" '/ OK$/ { n++; if (n % 20000 == 0) print "restore: shard " s ": " n " keys" > "/dev/stderr"; next }
            /^Migrating / { next } { print "restore: shard " s ": " $0 > "/dev/stderr" }
            END { print "restore: shard " s ": " n + 0 " keys moved" > "/dev/stderr" }'
    ) &
    imports="$imports $!"
    i=$((i + 1))
done
for pid in $imports; do wait "$pid" || true; done
i=0
while [ "$i" -lt "$n" ]; do
    [ "$(cat "$work/$i/rc" 2>/dev/null)" = "exit 0" ] || die "shard $i: redis-cli --cluster import failed ($(cat "$work/$i/rc" 2>/dev/null || echo no exit status))"
    i=$((i + 1))
done
total=0
for node in $REDIS_NODES; do
    [ "$(cli "$node" role | head -n 1)" = master ] || continue
    total=$((total + $(cli "$node" dbsize)))
done
say "restored $from: $total keys in the cluster, $expected in the backup's files (keys that expired meanwhile are gone)"
