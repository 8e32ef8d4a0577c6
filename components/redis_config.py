"""redis.conf and the start script as text (pure: no Pulumi, no Kubernetes).

Both land in one ConfigMap; a hash of the two goes on the pod template so a
config change rolls the pods instead of waiting for the next restart.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from components import labels
from components.settings import ClusterSettings

SCRIPT_PATH = Path(__file__).parent / "scripts" / "start-redis.sh"
CONFIG_DIR = "/etc/redis-cluster"
DATA_DIR = "/data"
CONF_KEY = "redis.conf"
SCRIPT_KEY = "start-redis.sh"


def redis_conf(s: ClusterSettings) -> str:
    """Cluster-mode config. Announce IP and hostname are passed by the start script at run time."""
    lines = [
        f"port {labels.REDIS_PORT}",
        # All IPv4 and, where the pod has it, IPv6 (the '-' makes IPv6 optional).
        "bind * -::*",
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
        # replica only once its link is up (an unsynced replica could not take over).
        "repl-diskless-sync-delay 1",
        "appendonly yes",
        "appendfsync everysec",
    ]
    return "\n".join(lines) + "\n"


def start_script() -> str:
    return SCRIPT_PATH.read_text()


def config_data(s: ClusterSettings) -> dict[str, str]:
    return {CONF_KEY: redis_conf(s), SCRIPT_KEY: start_script()}


def config_checksum(data: dict[str, str]) -> str:
    digest = hashlib.sha256()
    for key in sorted(data):
        digest.update(key.encode() + b"\0" + data[key].encode() + b"\0")
    return digest.hexdigest()
