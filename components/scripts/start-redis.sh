#!/bin/sh
# Start one Redis Cluster node in a pod (POSIX sh; works with dash and busybox sh).
#
# Before redis-server starts it repairs what restarts break:
#   1. nodes.conf empty or truncated (a kill while Redis was rewriting it, e.g. a
#      liveness probe during formation) but a good backup exists -> restore it,
#      so the node keeps its identity instead of starting as a stranger;
#      a good nodes.conf -> back it up.
#   2. Every pod has a new IP after a restart, so the addresses in nodes.conf are
#      stale: its own line (flag "myself") becomes $POD_IP, and every peer line
#      that carries a hostname (cluster-announce-hostname, the pod's stable DNS
#      name) becomes the address that name resolves to now. Lines whose name does
#      not resolve are kept. Only address fields change; nothing else is touched.
#   3. With REDIS_USERS_ACL: writes the users' ACL lines with their passwords
#      (read from the Secret's files in REDIS_AUTH_DIR) and masterauth into
#      $REDIS_RUN_DIR/auth.conf, mode 0600, on a memory-backed emptyDir. Passwords
#      are only ever read with the shell's `read` and written with `printf`
#      (builtins): never on a command line, in the environment or in a log line.
#   4. exec redis-server announcing its address and the stable hostname, including
#      auth.conf.
#
# Announced address: $REDIS_ANNOUNCE_IP (per-pod external access: the external
# host or the Kubernetes node's IP), else $POD_IP. With REDIS_ANNOUNCE_PORT_BASE
# and REDIS_ANNOUNCE_BUS_PORT_BASE set, pod <name>-<i> also announces port base+i
# and bus port bus-base+i (its NodePorts); peers are then not re-resolved through
# DNS, which knows pod IPs, not the addresses the peers announce.
#
# Usage: start-redis.sh            repair, then exec redis-server
#        start-redis.sh --prepare  repair only (tests, debugging)
#
# Environment:
#   POD_IP                     this pod's IP (required unless --prepare on a file without "myself")
#   REDIS_ANNOUNCE_HOSTNAME    this pod's stable DNS name (required to exec)
#   REDIS_CONF                 config file       (default /etc/redis-cluster/redis.conf)
#   REDIS_NODES_CONF           cluster state     (default /data/nodes.conf)
#   REDIS_RESOLVE_CMD          command printing the IP of the hostname given as $1
#                              (default: getent ahosts, then nslookup)
#   REDIS_SERVER               server binary     (default redis-server)
#   REDIS_NODES_BACKUP_SECONDS back up a good nodes.conf this often while Redis runs (default 30, 0 = off)
#   REDIS_USERS_ACL            "user <name> <rules>" lines without passwords (unset: no auth.conf)
#   REDIS_AUTH_DIR             the Secret's files: password (user default), <name>-password
#                              (default /etc/redis-auth)
#   REDIS_RUN_DIR              where auth.conf is written (default /run/redis)
#   REDIS_ANNOUNCE_IP          address to announce instead of $POD_IP
#   REDIS_ANNOUNCE_PORT_BASE, REDIS_ANNOUNCE_BUS_PORT_BASE
#                              per-pod ports: base + the ordinal of $POD_NAME
#   REDIS_TLS_ONLY             yes: the announced port is the TLS port too
set -eu
set -f # nodes.conf fields such as [123->-id] must never be globbed

NODES_CONF=${REDIS_NODES_CONF:-/data/nodes.conf}
BACKUP=$NODES_CONF.bak
CONF=${REDIS_CONF:-/etc/redis-cluster/redis.conf}

log() { echo "start-redis: $*" >&2; }

# A nodes.conf is good when Redis finished writing it: it names this node
# ("myself") and ends with the "vars" line that Redis writes last.
is_good() {
  [ -s "$1" ] || return 1
  grep -Eq '^[0-9a-f]{40} [^ ]* ([^ ]*,)?myself' "$1" || return 1
  [ "$(tail -n 1 "$1" | cut -d ' ' -f 1)" = vars ]
}

# Copy, then check the copy: Redis may be rewriting nodes.conf at that moment.
backup() {
  cp "$NODES_CONF" "$BACKUP.tmp" || return 1
  if is_good "$BACKUP.tmp"; then mv "$BACKUP.tmp" "$BACKUP"; else rm -f "$BACKUP.tmp"; fi
}

default_resolve() {
  family=ahostsv4
  case "${POD_IP:-}" in *:*) family=ahostsv6 ;; esac
  if command -v getent >/dev/null 2>&1; then
    getent "$family" "$1" 2>/dev/null | awk '{ print $1; exit }'
    return 0
  fi
  if command -v nslookup >/dev/null 2>&1; then
    nslookup "$1" 2>/dev/null | awk '
      /^Name:/ { seen = 1; next }
      seen && /^Address/ { sub(/^Address( [0-9]+)?:[ \t]*/, ""); split($0, a, " "); print a[1]; exit }'
  fi
}

resolve() {
  if [ -n "${REDIS_RESOLVE_CMD:-}" ]; then
    # shellcheck disable=SC2086 # the command may carry its own arguments
    $REDIS_RESOLVE_CMD "$1" 2>/dev/null | awk 'NF { print $1; exit }' || true
  else
    default_resolve "$1" || true
  fi
}

# Replace the IP in "ip:port@cport[,hostname[,aux...]]", keeping everything else.
with_ip() {
  addr=$1 ip=$2
  hostport=${addr%%@*}
  rest=${addr#"$hostport"}
  port=${hostport##*:}
  echo "$ip:$port$rest"
}

rewrite() {
  tmp=$NODES_CONF.rewrite.tmp
  : >"$tmp"
  while IFS= read -r line || [ -n "$line" ]; do
    # shellcheck disable=SC2086 # split the line into its space-separated fields
    set -- $line
    if [ $# -ge 3 ] && [ "$1" != vars ]; then
      id=$1 addr=$2 flags=$3
      shift 2
      new_ip=
      case ",$flags," in
        *,myself,*) new_ip=${REDIS_ANNOUNCE_IP:-${POD_IP:-}} ;;
        *)
          [ -n "${REDIS_ANNOUNCE_PORT_BASE:-}" ] && { line="$id $addr $*"; printf '%s\n' "$line" >>"$tmp"; continue; }
          hostpart=${addr#*,}
          if [ "$hostpart" != "$addr" ]; then
            host=${hostpart%%,*}
            [ -n "$host" ] && new_ip=$(resolve "$host")
          fi
          ;;
      esac
      if [ -n "$new_ip" ]; then
        new_addr=$(with_ip "$addr" "$new_ip")
        [ "$new_addr" = "$addr" ] || log "node $id: $addr -> $new_addr"
        addr=$new_addr
      fi
      line="$id $addr $*"
    fi
    printf '%s\n' "$line" >>"$tmp"
  done <"$NODES_CONF"
  mv "$tmp" "$NODES_CONF"
}

prepare() {
  if [ -e "$NODES_CONF" ] && ! is_good "$NODES_CONF" && is_good "$BACKUP"; then
    log "$NODES_CONF is empty or truncated; restoring $BACKUP"
    cp "$BACKUP" "$NODES_CONF"
  elif [ ! -e "$NODES_CONF" ] && is_good "$BACKUP"; then
    log "$NODES_CONF is missing; restoring $BACKUP"
    cp "$BACKUP" "$NODES_CONF"
  fi
  if is_good "$NODES_CONF"; then
    backup
    rewrite
  elif [ -s "$NODES_CONF" ]; then
    log "WARNING: $NODES_CONF is damaged and there is no good backup; leaving it to redis-server"
  fi
}

# Runs beside Redis: $$ is this shell's PID, which exec hands to redis-server,
# so the loop ends with Redis instead of outliving it.
backup_loop() {
  interval=$1
  while sleep "$interval" && kill -0 "$$" 2>/dev/null; do
    backup 2>/dev/null || true
  done
}

# The password of user $1 from the Secret's files, on stdout of a builtin only (printf);
# empty when the file is missing or empty.
user_password() {
  if [ "$1" = default ]; then file=$AUTH_DIR/password; else file=$AUTH_DIR/$1-password; fi
  pw=
  if [ -r "$file" ]; then
    IFS= read -r pw <"$file" || true # a file without a final newline still fills pw
  fi
  printf '%s' "$pw"
}

# auth.conf: every user's ACL line with its password, and masterauth (replicas log in
# to their master as `default`). Written under umask 077 and renamed into place.
write_auth_conf() {
  out=$RUN_DIR/auth.conf
  old_umask=$(umask)
  umask 077
  : >"$out.tmp"
  while read -r kw user rules || [ -n "${kw:-}" ]; do
    [ "${kw:-}" = user ] || continue
    pw=$(user_password "$user")
    if [ -n "$pw" ]; then
      printf 'user %s %s >%s\n' "$user" "$rules" "$pw" >>"$out.tmp"
      [ "$user" = default ] && printf 'masterauth %s\n' "$pw" >>"$out.tmp"
    elif [ "$user" = default ]; then
      printf 'user %s %s nopass\n' "$user" "$rules" >>"$out.tmp"
    else
      log "WARNING: no password for ACL user $user; it cannot log in"
      printf 'user %s %s\n' "$user" "$rules" >>"$out.tmp"
    fi
  done <"$REDIS_USERS_ACL"
  mv "$out.tmp" "$out"
  umask "$old_umask"
}

AUTH_DIR=${REDIS_AUTH_DIR:-/etc/redis-auth}
RUN_DIR=${REDIS_RUN_DIR:-/run/redis}

prepare
[ "${1:-}" = --prepare ] && exit 0

: "${POD_IP:?POD_IP must be set}"
: "${REDIS_ANNOUNCE_HOSTNAME:?REDIS_ANNOUNCE_HOSTNAME must be set}"

set -- "$CONF" --cluster-announce-ip "${REDIS_ANNOUNCE_IP:-$POD_IP}" \
  --cluster-announce-hostname "$REDIS_ANNOUNCE_HOSTNAME"
if [ -n "${REDIS_ANNOUNCE_PORT_BASE:-}" ] || [ -n "${REDIS_ANNOUNCE_BUS_PORT_BASE:-}" ]; then
  : "${POD_NAME:?POD_NAME must be set for per-pod announced ports}"
  ordinal=${POD_NAME##*-}
  case $ordinal in '' | *[!0-9]*)
    log "POD_NAME $POD_NAME does not end in an ordinal"
    exit 1
    ;;
  esac
  port=$((${REDIS_ANNOUNCE_PORT_BASE:?both announce port bases must be set} + ordinal))
  bus_port=$((${REDIS_ANNOUNCE_BUS_PORT_BASE:?both announce port bases must be set} + ordinal))
  set -- "$@" --cluster-announce-port "$port" --cluster-announce-bus-port "$bus_port"
  [ "${REDIS_TLS_ONLY:-}" = yes ] && set -- "$@" --cluster-announce-tls-port "$port"
  log "announcing ${REDIS_ANNOUNCE_IP:-$POD_IP}:$port, cluster bus port $bus_port"
fi
if [ -n "${REDIS_USERS_ACL:-}" ]; then
  write_auth_conf
  set -- "$@" --include "$RUN_DIR/auth.conf"
fi

interval=${REDIS_NODES_BACKUP_SECONDS:-30}
if [ "$interval" -gt 0 ] 2>/dev/null; then
  backup_loop "$interval" &
fi
exec "${REDIS_SERVER:-redis-server}" "$@"
