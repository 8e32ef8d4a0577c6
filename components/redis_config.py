"""redis.conf, the ACL rules and the start script as text (pure: no Pulumi, no Kubernetes).

All three land in one ConfigMap; a hash of them goes on the pod template so a
config change rolls the pods instead of waiting for the next restart. No
password is ever part of them: the ACL rules name users and what they may do,
and the start script adds each user's password from the Secret's files into a
0600 file on a memory-backed emptyDir that redis-server includes (see
docs/security.md).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from bootstrap.backup import BACKUP_ACL
from components import labels
from components.settings import BACKUP_USER, EXPORTER_USER, ClusterSettings

SCRIPT_PATH = Path(__file__).parent / "scripts" / "start-redis.sh"
HANDOVER_PATH = Path(__file__).parent / "scripts" / "handover.sh"
CONFIG_DIR = "/etc/redis-cluster"
DATA_DIR = "/data"
CONF_KEY = "redis.conf"
SCRIPT_KEY = "start-redis.sh"
HANDOVER_KEY = "handover.sh"  # the preStop hook: a master hands its slots over before it stops
USERS_KEY = "users.acl"
# The auth Secret, mounted read-only: one file per user holding its password.
AUTH_DIR = "/etc/redis-auth"
PASSWORD_KEY = "password"  # the `default` user: what clients and replicas (masterauth) use
OPERATOR_USER = "operator"
OPERATOR_PASSWORD_KEY = "operator-password"
# The metrics sidecar's user (components/metrics.py) and its password file in the auth Secret.
EXPORTER_PASSWORD_KEY = f"{EXPORTER_USER}-password"
# What redis_exporter runs on every scrape (exporter.go scrapeRedisHost, v1.82.0, with CONFIG skipped by
# `--config-command=-`): INFO (ALL), CLUSTER INFO, CLIENT SETNAME, LATENCY LATEST and HISTOGRAM, SLOWLOG LEN and
# GET 1 (GET only with metricsSlowlogEntries: an entry shows key names and arguments); PING for health checks.
# It never touches keys unless told to (--check-keys ...). Denied: CONFIG (CONFIG GET * would show masterauth,
# the `default` user's password), CLUSTER NODES (only its /discover-cluster-nodes endpoint with --is-cluster
# uses it), CLIENT LIST (only with --export-client-list).
EXPORTER_COMMANDS = (
    "info",
    "ping",
    "cluster|info",
    "client|setname",
    "latency|latest",
    "latency|histogram",
    "slowlog|len",
)
SLOWLOG_ENTRIES_COMMAND = "slowlog|get"
# The scheduled backup's user (components/backup.py) and its password file in the auth Secret.
BACKUP_PASSWORD_KEY = f"{BACKUP_USER}-password"
# A snapshot for a replica (or the backup's `redis-cli --rdb`) forks at once, inside its SYNC, instead of
# waiting up to a second for the replication cron: a new replica syncs sooner, and the backup's write
# pause lasts until its snapshots' forks (components/scripts/backup.sh; measured 5-7 ms at 0 against
# 100-1000 ms at 1). The price: replicas that ask together get one fork each, not one for all.
REPLICATION_SYNC = {"repl-diskless-sync-delay": "0"}
# Memory-backed emptyDir where the start script writes auth.conf (mode 0600).
RUN_DIR = "/run/redis"
# TLS material (a kubernetes.io/tls Secret with ca.crt), mounted read-only.
TLS_DIR = "/etc/redis-tls"
TLS_PLAIN_AND_TLS_PORT = 6380  # the TLS port when the plain port stays open (tls without tlsOnly)

# Commands the `default` user (every client) may not run unless allowDangerousCommands:
# data wipes, the debugger, server config (CONFIG SET dir/dbfilename writes files anywhere
# the server can), users (ACL SETUSER would lift these very rules) and SHUTDOWN. KEYS stays:
# it is slow on big databases but destroys nothing, and admin tools use it.
GUARDED_COMMANDS = ("flushall", "flushdb", "debug", "config", "acl", "shutdown")


def tls_port(s: ClusterSettings) -> int:
    """TLS-only keeps 6379 (Services, NodePorts and NetworkPolicy stay as they are)."""
    return labels.REDIS_PORT if s.tls_only else TLS_PLAIN_AND_TLS_PORT


def client_ports(s: ClusterSettings) -> list[tuple[str, int]]:
    """(container port name, port) of every port clients use."""
    if not s.tls:
        return [("redis", labels.REDIS_PORT)]
    if s.tls_only:
        return [("redis", labels.REDIS_PORT)]
    return [("redis", labels.REDIS_PORT), ("redis-tls", TLS_PLAIN_AND_TLS_PORT)]


def default_user_rules(s: ClusterSettings) -> str:
    rules = "on ~* &* +@all"
    if not s.allow_dangerous_commands:
        rules += "".join(f" -{command}" for command in GUARDED_COMMANDS)
    return rules


def exporter_user_rules(s: ClusterSettings) -> str:
    """No keys, no channels, every command denied but the ones the exporter runs: its password
    sits in a pod's Secret file next to a network-reachable HTTP server, so it must open nothing.
    ``SLOWLOG GET`` only on request: its entries carry key names and command arguments."""
    commands = (*EXPORTER_COMMANDS, SLOWLOG_ENTRIES_COMMAND) if s.metrics_slowlog_entries else EXPORTER_COMMANDS
    return "on resetchannels -@all " + " ".join(f"+{command}" for command in commands)


def backup_user_rules() -> str:
    """The CLI backup's rules (bootstrap.backup.BACKUP_ACL) plus what the script's redis-cli needs: CLUSTER
    MYID to tell pods apart, and SYNC/REPLCONF for `--rdb`. No keys, no CONFIG."""
    return f"on resetchannels {BACKUP_ACL} +cluster|myid +sync +replconf"


def users_acl(s: ClusterSettings) -> str:
    """``user <name> <rules>`` per user, without passwords (the start script adds them
    from the Secret's ``<name>-password`` files). ``aclUsers`` come last, always ``on``.

    ``operator`` may do everything: it is what the bootstrap logs in as (it needs CONFIG
    SET masterauth and ACL SETUSER for live password rotation), with its own generated
    password that no client is given. ``exporter`` (only with ``metrics``) is the sidecar's
    read-only login (:func:`exporter_user_rules`); ``backup`` (only with ``backupSchedule``) the
    CronJob's (:func:`backup_user_rules`).
    """
    lines = [f"user default {default_user_rules(s)}", f"user {OPERATOR_USER} on ~* &* +@all"]
    if s.metrics:
        lines.append(f"user {EXPORTER_USER} {exporter_user_rules(s)}")
    if s.backup_schedule:
        lines.append(f"user {BACKUP_USER} {backup_user_rules()}")
    lines += [f"user {name} on {rules}" for name, rules in s.acl_users]
    return "\n".join(lines) + "\n"


def redis_conf(s: ClusterSettings) -> str:
    """Cluster-mode config. Announce addresses and the users' passwords are passed by the start script at run time."""
    lines = [
        f"port {0 if s.tls_only else labels.REDIS_PORT}",
        # Fixed: the bus would otherwise follow the TLS port (+10000) when tls-cluster is on.
        f"cluster-port {labels.BUS_PORT}",
        # All IPv4 and, where the pod has it, IPv6 (the '-' makes IPv6 optional).
        "bind * -::*",
        # Off because every client comes from another address; access is guarded by the
        # users' passwords (auth), the ACL rules and the NetworkPolicy instead.
        "protected-mode no",
        f"dir {DATA_DIR}",
        "cluster-enabled yes",
        f"cluster-config-file {DATA_DIR}/nodes.conf",
        f"cluster-node-timeout {s.node_timeout_ms}",
        "cluster-require-full-coverage no",
        "cluster-migration-barrier 1",
        "cluster-allow-replica-migration yes",
        # Clients get IPs in redirects; nodes.conf still records every peer's hostname.
        "cluster-preferred-endpoint-type ip",
        # A new replica syncs at once instead of waiting 5 s for company: the bootstrap counts a
        # replica only once its link is up (an unsynced replica could not take over). See REPLICATION_SYNC.
        *(f"{k} {v}" for k, v in REPLICATION_SYNC.items()),
        "appendonly yes",
        "appendfsync everysec",
        f"enable-debug-command {'yes' if s.allow_dangerous_commands else 'no'}",
    ]
    if s.tls:
        lines += [
            f"tls-port {tls_port(s)}",
            f"tls-cert-file {TLS_DIR}/tls.crt",
            f"tls-key-file {TLS_DIR}/tls.key",
            f"tls-ca-cert-file {TLS_DIR}/ca.crt",
            # Clients may present a certificate (then it is verified) but need not: they
            # authenticate with a password. Nodes present theirs to each other.
            "tls-auth-clients optional",
            "tls-replication yes",
            "tls-cluster yes",
        ]
    return "\n".join(lines) + "\n"


def start_script() -> str:
    return SCRIPT_PATH.read_text()


def config_data(s: ClusterSettings) -> dict[str, str]:
    return {
        CONF_KEY: redis_conf(s),
        SCRIPT_KEY: start_script(),
        HANDOVER_KEY: HANDOVER_PATH.read_text(),
        USERS_KEY: users_acl(s),
    }


def config_checksum(data: dict[str, str]) -> str:
    digest = hashlib.sha256()
    for key in sorted(data):
        digest.update(key.encode() + b"\0" + data[key].encode() + b"\0")
    return digest.hexdigest()
