"""Atomic slot migration against real clusters of both servers that have it: Valkey 9
(``CLUSTER MIGRATESLOTS``) and Redis 8.6 (``CLUSTER MIGRATION IMPORT``).

The cluster is formed by ``converge`` as in production; keys are written
first and every one is read back after, and the slots must be the target's
in every node's own view (replicas included), not just the source's.
Runs on each installed atomic server whatever REDIS_CLUSTER_SERVER says: the
feature is theirs. tools/setup.sh installs both; a missing one's cases are
skipped (tools/test.sh fails CI on a missing Valkey 9 and says when Redis 8.6
could not be built).
"""

from __future__ import annotations

import contextlib
import itertools
import sys
import time
from collections.abc import Iterator

import pytest
from redis.crc import key_slot

from bench import servers
from bootstrap.atomic_migration import dialect, move_atomic, records, rounds
from bootstrap.converge import converge
from bootstrap.endpoints import DirectConnector, static_inventory
from bootstrap.errors import BootstrapError, ConvergenceTimeout
from bootstrap.migration import move_slots
from bootstrap.model import Member, Shape, SlotMove, Snapshot, parse_cluster_nodes
from bootstrap.waiting import parallel
from tests.bootstrap.helpers import HOSTS, load, missing_keys
from tests.conftest import RedisFarm, RedisNode
from tests.toolkit import cluster_client

ATOMIC = {"valkey-9": "valkey", "redis-8.6": "redis"}  # server name -> the dialect it speaks


def _binary(name: str) -> str | None:
    try:
        return servers.resolve_server(name)
    except ValueError:
        return None


def _server_param(name: str) -> object:
    missing = _binary(name) is None
    return pytest.param(
        name, id=name, marks=pytest.mark.skipif(missing, reason=f"{name} not installed (tools/setup.sh)")
    )


SERVER_PARAMS = [_server_param(name) for name in ATOMIC]
KEYS = 20_000


@pytest.fixture
def connector() -> Iterator[DirectConnector]:
    c = DirectConnector()
    try:
        yield c
    finally:
        c.close()


@pytest.fixture(params=SERVER_PARAMS)
def server(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def cluster(redis_farm: RedisFarm, connector: DirectConnector, server: str) -> list[RedisNode]:
    """3 masters x 1 replica of ``server``, formed by converge, holding KEYS keys."""
    nodes = redis_farm.spawn(6, hosts=HOSTS, binary=_binary(server))
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


@pytest.mark.parametrize("server", SERVER_PARAMS)
def test_the_probe_tells_each_dialect_from_older_servers(redis_farm: RedisFarm, server: str) -> None:
    """Redis 7.0 and 8.2 and Valkey 8.1 have no atomic migration; every installed one is asked."""
    node = redis_farm.spawn(1, cluster=False, binary=_binary(server))[0]
    assert dialect(node.client()) == ATOMIC[server]
    older = [servers.resolve_server("redis-7")]
    for name in ("redis-8", "valkey-8"):
        with contextlib.suppress(ValueError):
            older.append(servers.resolve_server(name))
    for binary in older:
        node = redis_farm.spawn(1, cluster=False, binary=binary)[0]
        assert dialect(node.client()) is None, binary


def test_rounds_never_give_a_node_two_tasks_at_once() -> None:
    """Redis runs one atomic task per node: a scale-out's moves into one master go one by one,
    disjoint pairs side by side, and every move is in exactly one round."""
    into_d = [("a", "d"), ("b", "d"), ("c", "d")]
    assert rounds(into_d) == [[0], [1], [2]]
    assert rounds([("a", "c"), ("b", "d"), ("a", "d"), ("b", "c")]) == [[0, 1], [2, 3]]
    pairs = [(s, t) for s in "abcde" for t in "fgh"]
    out = rounds(pairs)
    assert sorted(i for r in out for i in r) == list(range(len(pairs)))
    for r in out:
        nodes = [n for i in r for n in pairs[i]]
        assert len(nodes) == len(set(nodes)), r


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
    with pytest.raises(BootstrapError) as failure:
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


def test_move_slots_on_redis_runs_no_two_tasks_on_one_node_at_once(
    cluster: list[RedisNode], connector: DirectConnector, server: str
) -> None:
    """A rebalance where one master feeds two and one takes from two: every key arrives, and each node's
    own task records (MIGRATION STATUS ALL) show its tasks one after another, none retried after being
    refused for a task already running (what running them all at once costs: a retry a second)."""
    if ATOMIC[server] != "redis":
        pytest.skip("Valkey runs several migrations per node at once; the rounds are Redis' constraint")
    a, b, c = masters(cluster[0])
    moves = [
        SlotMove(a.node_id, c.node_id, tuple(sorted(a.slots)[:300])),
        SlotMove(a.node_id, b.node_id, tuple(sorted(a.slots)[-300:])),
        SlotMove(b.node_id, c.node_id, tuple(sorted(b.slots)[:300])),
    ]
    snap = Snapshot(members=[a, b, c], views={})
    log: list[str] = []
    moved = move_slots(snap, connector, moves, log.append)
    assert moved == sum(keys_in(set(m.slots)) for m in moves)
    for m in moves:
        assert wait_owner(cluster, set(m.slots), m.target) == {m.target}
    assert missing_keys(cluster, KEYS) == []
    assert sum("atomic migration" in line and "done" in line for line in log) == len(moves), log
    for node in (a, b, c):
        tasks = sorted(
            (int(t["start_time"]), int(t["end_time"]), int(t["retries"]))
            for t in records(connector.client(node.address).execute_command("CLUSTER", "MIGRATION", "STATUS", "ALL"))
        )
        assert tasks and all(retries == 0 for _, _, retries in tasks), (node.address, tasks)
        assert all(prev[1] <= nxt[0] for prev, nxt in itertools.pairwise(tasks)), (node.address, tasks)
