"""What the bootstrap tests share: running converge and the CLI, reading tables, loading and reading keys.

Clients, waits and the writer under change are tests/toolkit.py's, shared with every tier."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from redis.cluster import RedisCluster

from bootstrap.converge import Outcome, converge
from bootstrap.endpoints import DirectConnector, static_inventory
from bootstrap.model import SLOTS, NodeLine, Shape, parse_cluster_nodes
from tests.conftest import RedisNode
from tests.toolkit import Writer, cluster_client

REPO = Path(__file__).resolve().parents[2]
HOSTS = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]


def apply(
    nodes: list[RedisNode], masters: int, replicas: int, timeout: float = 120, password: str | None = None
) -> Outcome:
    connector = DirectConnector(password)
    try:
        return converge(
            static_inventory([n.address for n in nodes]),
            connector,
            Shape(masters, replicas),
            timeout,
            progress=lambda m: print(m, file=sys.stderr),
            adopt_unlisted=True,
        )
    finally:
        connector.close()


def redis_cli_check(node: RedisNode) -> str:
    out = subprocess.run(
        ["redis-cli", "--cluster", "check", node.address], capture_output=True, text=True, timeout=60, check=False
    ).stdout
    assert "[OK] All 16384 slots covered." in out, out
    assert "[WARNING]" not in out and "[ERR]" not in out, out
    return out


def table(node: RedisNode) -> list[NodeLine]:
    return parse_cluster_nodes(node.client().execute_command("CLUSTER", "NODES"))


def assert_shape(nodes: list[RedisNode], masters: int, replicas: int) -> None:
    lines = table(nodes[0])
    owners = [ln for ln in lines if ln.is_master and ln.slots]
    assert len(owners) == masters
    assert sum(len(ln.slots) for ln in owners) == SLOTS
    sizes = [len(ln.slots) for ln in owners]
    assert max(sizes) - min(sizes) <= 1
    host_of = {ln.node_id: ln.address.split(":")[0] for ln in lines}
    # A replica's role as it sees it (others learn it with its next ping), with its link up.
    selves = [next(ln for ln in table(n) if ln.is_myself) for n in nodes]
    for n, me in zip(nodes, selves, strict=True):
        if me.master_id:
            assert n.client().info("replication")["master_link_status"] == "up", f"{n.address} not synced"
    for m in owners:
        reps = [ln for ln in selves if ln.master_id == m.node_id]
        assert len(reps) == replicas, f"{m.address} has {len(reps)} replicas"
        assert all(host_of[r.node_id] != host_of[m.node_id] for r in reps), "replica on its master's host"
    for n in nodes:
        assert "cluster_state:ok" in n.client().execute_command("CLUSTER", "INFO")
    # Every node counts the masters serving slots (its failover quorum is half of that, plus one). Gossip
    # brings the last change to the others within a ping; a node that itself took slots by Redis 8.6's
    # atomic migration never recounted until the bootstrap made it (atomic_migration._move_redis).
    deadline = time.monotonic() + 5
    while sizes_seen := {n.address: cluster_size(n) for n in nodes if cluster_size(n) != masters}:
        assert time.monotonic() < deadline, f"cluster_size is not {masters} on {sizes_seen}"
        time.sleep(0.1)
    redis_cli_check(nodes[0])


def cluster_size(node: RedisNode) -> int:
    info = node.client().execute_command("CLUSTER", "INFO")
    return int(info.split("cluster_size:")[1].split()[0])


def load(nodes: list[RedisNode], count: int, prefix: str = "k") -> None:
    rc = cluster_client(nodes)
    for start in range(0, count, 5000):
        pipe = rc.pipeline()
        for i in range(start, min(start + 5000, count)):
            pipe.set(f"{prefix}:{i}", loaded_value(i))
        pipe.execute()
    rc.close()


def loaded_value(i: int) -> str:
    """What ``load`` writes to key i."""
    return f"v{i}" + "x" * 90


def missing_keys(
    nodes: list[RedisNode], count: int, prefix: str = "k", value: Callable[[int], str] = loaded_value
) -> list[str]:
    """Keys ``prefix:0`` .. ``prefix:count-1`` that do not read back as ``value(i)``."""
    rc = cluster_client(nodes)
    bad: list[str] = []
    for start in range(0, count, 5000):
        indexes = range(start, min(start + 5000, count))
        keys = [f"{prefix}:{i}" for i in indexes]
        values = rc.mget_nonatomic(keys)
        bad += [k for i, k, v in zip(indexes, keys, values, strict=True) if v != value(i)]
    rc.close()
    return bad


def traffic(nodes: list[RedisNode]) -> Writer:
    """The loopback tiers' writer: each write also reads back an older one (``live:<i // 2>``), so a
    slot that moves without its keys shows as a wrong read, not only as a lost write at the end."""

    def read_back(client: RedisCluster, i: int) -> str | None:
        got = client.get(f"live:{i // 2}")
        return None if got == str(i // 2) else f"live:{i // 2} read back {got!r}"

    return Writer(lambda: cluster_client(nodes), "live:", check=read_back)


def start_cli(*args: str) -> subprocess.Popen[str]:
    """``python -m bootstrap ARGS`` in the background, its stderr kept for the assertions."""
    return subprocess.Popen(
        [sys.executable, "-m", "bootstrap", *args],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def myself(node: RedisNode) -> NodeLine:
    return next(ln for ln in table(node) if ln.is_myself)


def open_slots(nodes: list[RedisNode]) -> dict[str, str]:
    """address -> its IMPORTING/MIGRATING marks, for every node that still has any."""
    marks = {}
    for n in nodes:
        me = myself(n)
        if me.migrating or me.importing:
            marks[n.address] = f"migrating {me.migrating} importing {me.importing}"
    return marks
