"""Moves and converges that meet faults: dead or frozen nodes mid-move, two runs at once, bad input.

Each test builds the fault on real redis-server processes, runs the bootstrap
as a user would, and then reads every key back through a cluster client: no
key unreadable, no slot left open, every run ended within its timeout with an
error that names the node.
"""

from __future__ import annotations

import os
import shutil
import signal
import time

import pytest
import redis

from bench import servers
from bootstrap import lease, migration
from bootstrap import operations as ops
from bootstrap.endpoints import DirectConnector, connected, static_inventory
from bootstrap.model import SLOTS
from tests.bootstrap.helpers import (
    HOSTS,
    apply,
    assert_shape,
    load,
    missing_keys,
    myself,
    open_slots,
    start_cli,
    table,
)
from tests.conftest import RedisFarm, RedisNode
from tests.toolkit import run_cli, wait_until

KEYS = 30_000


def myid(node: RedisNode) -> str:
    return str(node.client().execute_command("CLUSTER", "MYID"))


def join_empty(nodes: list[RedisNode], newcomers: list[RedisNode]) -> None:
    """MEET nodes into the cluster as empty masters, by hand (as a move interrupted early leaves them)."""
    seed = nodes[0]
    for n in newcomers:
        n.client().execute_command("CLUSTER", "MEET", seed.host, seed.port)
    everyone = [*nodes, *newcomers]
    wait_until("the newcomers to be known", lambda: all(len(table(n)) == len(everyone) for n in everyone), 30)
    wait_until(
        "the newcomers to serve (Redis' rejoin delay)",
        lambda: all("cluster_state:ok" in n.client().execute_command("CLUSTER", "INFO") for n in newcomers),
        30,
    )


def open_move(src: RedisNode, dst: RedisNode, slots: list[int], fraction: float) -> int:
    """Open ``slots`` from src to dst the documented way and MIGRATE ``fraction`` of each one's keys."""
    src_id, dst_id = myid(src), myid(dst)
    moved = 0
    for slot in slots:
        dst.client().execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
        src.client().execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
        keys = src.client().execute_command("CLUSTER", "GETKEYSINSLOT", slot, 10_000)
        part = keys[: int(len(keys) * fraction)]
        if part:
            src.client().execute_command("MIGRATE", dst.host, dst.port, "", 0, 5000, "KEYS", *part)
        moved += len(part)
    return moved


def slots_of(node: RedisNode, count: int) -> list[int]:
    return sorted(myself(node).slots)[:count]


def replica_of(nodes: list[RedisNode], master: RedisNode) -> RedisNode:
    master_id = myid(master)
    return next(n for n in nodes if myself(n).master_id == master_id)


def lease_holder(nodes: list[RedisNode]) -> str | None:
    owner = next(n for n in nodes if lease.SLOT in myself(n).slots)
    value = owner.client().get(lease.KEY)
    return None if value is None else str(value)


def assert_healed(nodes: list[RedisNode], masters: int, replicas: int, keys: int = KEYS) -> None:
    assert open_slots(nodes) == {}, "slots left open"
    assert_shape(nodes, masters, replicas)
    assert missing_keys(nodes, keys) == []


def test_a_migration_target_that_dies_for_good_hands_its_keys_on_through_its_replica(redis_farm: RedisFarm) -> None:
    """Case 1: the only copy of the keys moved so far is on the dead target's replica.

    Re-pointing that replica (its master owns no slots, so Redis never promotes
    it) would wipe them with a full resync; the repair promotes it and finishes
    the move onto it instead.
    """
    nodes = redis_farm.spawn(8, hosts=HOSTS)
    formed, target, target_replica = nodes[:6], nodes[6], nodes[7]
    apply(formed, 3, 1)
    load(formed, KEYS)
    join_empty(formed, [target, target_replica])
    target_replica.client().execute_command("CLUSTER", "REPLICATE", myid(target))
    wait_until("sync", lambda: target_replica.client().info("replication")["master_link_status"] == "up", 30)
    src = next(n for n in formed if myself(n).slots)
    moved = open_move(src, target, slots_of(src, 3), fraction=0.5)
    assert moved > 0
    assert target.client().execute_command("WAIT", 1, 5000) == 1, "the replica has the moved keys"
    dead_id = myid(target)
    target.stop(hard=True)
    spare = redis_farm.spawn(1, hosts=[target.host])[0]
    survivors = [*formed, target_replica, spare]

    apply(survivors, 4, 1)

    assert_healed(survivors, 4, 1)
    assert myself(target_replica).is_master and myself(target_replica).slots, "the replica took the target's place"
    for n in survivors:
        assert dead_id not in {ln.node_id for ln in table(n)}, f"{n.address} still lists the dead target"


def test_a_source_that_dies_mid_move_is_finished_from_the_replica_that_took_over(redis_farm: RedisFarm) -> None:
    """Case 2: the target keeps IMPORTING from the dead id, the new owner has no MIGRATING mark, so clients
    read the moved keys as missing until the repair pairs the slot by its current owner."""
    nodes = redis_farm.spawn(9, hosts=HOSTS)
    formed, target = nodes[:6], nodes[6]
    apply(formed, 3, 1)
    load(formed, KEYS)
    join_empty(formed, [target])
    src = next(n for n in formed if myself(n).slots)
    heir = replica_of(formed, src)
    slots = slots_of(src, 2)
    open_move(src, target, slots, fraction=0.5)
    assert src.client().execute_command("WAIT", 1, 5000) == 1
    src.stop(hard=True)
    wait_until("the source's replica to take over", lambda: myself(heir).is_master, 30)
    survivors = [n for n in formed if n is not src]
    heir_id = myid(heir)
    # A survivor that has not heard of the takeover yet would send the client to the dead source.
    wait_until(
        "every survivor to see the takeover",
        lambda: all(any(ln.node_id == heir_id and slots[0] in ln.slots for ln in table(n)) for n in survivors),
        30,
    )
    lost_now = missing_keys(survivors, KEYS)
    assert lost_now, "the fault should make moved keys unreadable before the repair"

    apply([*survivors, target, *redis_farm.spawn(2, hosts=HOSTS)], 4, 1)

    assert open_slots(survivors) == {}
    assert missing_keys(survivors, KEYS) == []


def test_a_frozen_source_cannot_hold_a_run_past_its_timeout(redis_farm: RedisFarm) -> None:
    """Case 3: a MIGRATE to a SIGSTOPped node used to block for its socket timeout times the client's retries."""
    nodes = redis_farm.spawn(4, hosts=HOSTS)
    apply(nodes[:3], 3, 0)
    load(nodes[:3], 150_000, prefix="k")
    timeout = 15
    started = time.monotonic()
    proc = start_cli(
        "apply", "--masters", "4", "--replicas", "0", "--timeout", str(timeout), *(n.address for n in nodes)
    )
    frozen: RedisNode | None = None
    try:
        wait_until("a slot to be moving", lambda: any(myself(n).migrating for n in nodes[:3]), 30)
        frozen = next(n for n in nodes[:3] if myself(n).migrating)
        assert frozen.proc is not None
        os.kill(frozen.proc.pid, signal.SIGSTOP)
        _, stderr = proc.communicate(timeout=timeout + 30)
        took = time.monotonic() - started
    finally:
        if frozen is not None and frozen.proc is not None:
            os.kill(frozen.proc.pid, signal.SIGCONT)
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 1, stderr
    assert took < timeout + 8, f"the run took {took:.1f}s with --timeout {timeout}"
    assert "Traceback" not in stderr, stderr
    assert frozen.address in stderr, f"the error does not name the frozen node {frozen.address}: {stderr[-800:]}"
    apply(nodes, 4, 0, timeout=180)
    assert_healed(nodes, 4, 0, keys=150_000)


def test_a_second_run_refuses_while_another_is_moving_slots(redis_farm: RedisFarm) -> None:
    """Case 4: two runs with different shapes at once opened slots in both directions and froze a master."""
    # A 15 s node timeout holds the new master back for Redis' 5 s rejoin delay before any key moves: the first
    # run still holds its lease when the second one looks.
    nodes = redis_farm.spawn(4, hosts=HOSTS, extra={"cluster-node-timeout": "15000"})
    apply(nodes[:3], 3, 0)
    load(nodes[:3], 150_000)
    first = start_cli("apply", "--masters", "4", "--replicas", "0", *(n.address for n in nodes))
    try:
        wait_until("the first run's lease", lambda: lease_holder(nodes[:3]) is not None, 30)
        started = time.monotonic()
        second = run_cli("apply", "--masters", "3", "--replicas", "0", *(n.address for n in nodes[:3]))
        took = time.monotonic() - started
        _, first_err = first.communicate(timeout=180)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(timeout=10)
    assert second.returncode == 1, f"second:\n{second.stderr}\nfirst:\n{first_err}"
    assert "another bootstrap run" in second.stderr and "is changing this cluster" in second.stderr, second.stderr
    assert took < 20, f"the second run took {took:.1f}s to refuse"
    assert first.returncode == 0, first_err[-2000:]
    assert_healed(nodes, 4, 0, keys=150_000)


def test_slots_open_in_both_directions_between_two_masters_are_finished(redis_farm: RedisFarm) -> None:
    """What case 4 left behind: A -> B and B -> A at once. The repair runs one direction after the other."""
    nodes = redis_farm.spawn(3, hosts=HOSTS)
    apply(nodes, 3, 0)
    load(nodes, KEYS)
    a, b = nodes[0], nodes[1]
    open_move(a, b, slots_of(a, 3), fraction=0.5)
    open_move(b, a, slots_of(b, 3), fraction=0.5)
    assert len(open_slots(nodes)) == 2
    apply(nodes, 3, 0, timeout=60)
    assert_healed(nodes, 3, 0)


def test_scale_in_where_a_kept_master_with_slots_becomes_a_replica(redis_farm: RedisFarm) -> None:
    """Case 5: REPLICATE was sent before the master's slots had moved off it, which Redis refuses."""
    nodes = redis_farm.spawn(8, hosts=HOSTS)
    apply(nodes, 4, 1)
    load(nodes, KEYS)
    kept = nodes[:6]
    assert sum(1 for n in kept if myself(n).slots) == 4, "the precondition: all four masters are among the kept"
    apply(kept, 3, 1)
    assert_healed(kept, 3, 1)


def test_a_master_killed_within_the_node_timeout_is_replaced_by_a_fresh_node(redis_farm: RedisFarm) -> None:
    """Case 6: before anyone flags the dead master ``fail`` it is only disconnected; it used to be taken for
    a live unlisted member, and every run failed with "does not answer"."""
    nodes = redis_farm.spawn(6, hosts=HOSTS, extra={"cluster-node-timeout": "15000"})
    apply(nodes, 3, 1)
    load(nodes, KEYS)
    victim = next(n for n in nodes if myself(n).slots)
    heir = replica_of(nodes, victim)
    assert victim.client().execute_command("WAIT", 1, 5000) == 1
    dead_id = myid(victim)
    victim.stop(hard=True)
    survivors = [n for n in nodes if n is not victim]
    assert not any("fail" in ln.flags for ln in table(survivors[0]) if ln.node_id == dead_id)
    spare = redis_farm.spawn(1, hosts=[victim.host], extra={"cluster-node-timeout": "15000"})[0]

    apply([*survivors, spare], 3, 1, timeout=60)

    assert myself(heir).is_master
    assert_healed([*survivors, spare], 3, 1)
    assert dead_id not in {ln.node_id for ln in table(survivors[0])}


def test_a_restarted_target_is_waited_for_before_the_move_is_finished(redis_farm: RedisFarm) -> None:
    """Case 7: right after a restart the target answers CLUSTERDOWN; the first apply failed on it."""
    nodes = redis_farm.spawn(4, hosts=HOSTS)
    apply(nodes[:3], 3, 0)
    load(nodes[:3], KEYS)
    apply(nodes, 4, 0)
    src, dst = nodes[0], nodes[3]
    open_move(src, dst, slots_of(src, 2), fraction=0.5)
    dst.restart()
    apply(nodes, 4, 0, timeout=60)
    assert_healed(nodes, 4, 0)


def test_plan_shows_the_scale_in_that_apply_performs(redis_farm: RedisFarm) -> None:
    nodes = redis_farm.spawn(8, hosts=HOSTS)
    apply(nodes, 4, 1)
    out = run_cli("plan", "--masters", "3", "--replicas", "1", *(n.address for n in nodes[:6]))
    assert out.returncode == 0, out.stderr
    assert sum(1 for line in out.stdout.splitlines() if line.startswith("remove ")) == 2, out.stdout
    assert sum(int(line.split()[1]) for line in out.stdout.splitlines() if line.startswith("move ")) > 0
    assert len([ln for ln in table(nodes[0]) if ln.is_master and ln.slots]) == 4, "plan changed nothing"


def test_too_few_nodes_for_the_shape_are_refused_before_anything_changes(redis_farm: RedisFarm) -> None:
    nodes = redis_farm.spawn(5, hosts=HOSTS)
    out = run_cli("apply", "--masters", "3", "--replicas", "1", *(n.address for n in nodes))
    assert out.returncode == 1
    assert "need 6 nodes, 5 are listed" in out.stderr, out.stderr
    assert all(len(table(n)) == 1 and not myself(n).slots for n in nodes), "nothing was changed"


@pytest.mark.parametrize(
    ("nodes", "message"),
    [
        (["127.0.0.1:7001", "127.0.0.1:7001", "127.0.0.1:7002"], "listed more than once: 127.0.0.1:7001"),
        (["127.0.0.1:99999"], "port 99999 is not in 1-65535"),
        (["localhost"], "'localhost' is not HOST:PORT"),
    ],
)
def test_bad_node_addresses_are_named_at_once(nodes: list[str], message: str) -> None:
    started = time.monotonic()
    out = run_cli("apply", "--masters", "1", "--replicas", "0", "--timeout", "60", *nodes)
    assert out.returncode == 1
    assert message in out.stderr, out.stderr
    assert time.monotonic() - started < 10, "bad input must not wait for the timeout"


def test_a_wrong_password_is_reported_at_once(redis_farm: RedisFarm) -> None:
    nodes = redis_farm.spawn(3, hosts=HOSTS, password="right-one")
    env = {**os.environ, "REDISCLI_AUTH": "wrong-one"}
    started = time.monotonic()
    out = run_cli("apply", "--masters", "3", "--replicas", "0", *(n.address for n in nodes), env=env)
    assert out.returncode == 1
    assert "refused the login" in out.stderr and "REDISCLI_AUTH" in out.stderr, out.stderr
    assert "wrong-one" not in out.stderr + out.stdout
    assert time.monotonic() - started < 15


def test_check_with_a_dead_seed_names_it_without_a_traceback(redis_farm: RedisFarm) -> None:
    node = redis_farm.spawn(1)[0]
    address = node.address
    node.stop()
    out = run_cli("check", address)
    assert out.returncode == 1
    assert f"the seed {address} does not answer" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_every_slot_is_covered_after_the_faults(redis_farm: RedisFarm) -> None:
    """A scale-out onto a node that is killed for good before it gets anything: the next apply with a
    replacement node covers every slot and forgets the dead one."""
    nodes = redis_farm.spawn(5, hosts=HOSTS)
    apply(nodes[:3], 3, 0)
    load(nodes[:3], KEYS)
    join_empty(nodes[:3], [nodes[3]])
    dead_id = myid(nodes[3])
    nodes[3].stop(hard=True)
    apply([*nodes[:3], nodes[4]], 4, 0)
    owners = [ln for ln in table(nodes[0]) if ln.is_master and ln.slots]
    assert sum(len(ln.slots) for ln in owners) == SLOTS and len(owners) == 4
    assert dead_id not in {ln.node_id for ln in table(nodes[0])}
    assert missing_keys([*nodes[:3], nodes[4]], KEYS) == []


def test_a_replica_that_comes_back_empty_at_its_address_is_forgotten_and_fills_its_seat_again(
    redis_farm: RedisFarm,
) -> None:
    """A lost volume: the pod returns at the same address with a new id and no data. The old id is a ghost
    (another id answers at its address) and is forgotten everywhere; the empty node is a replica again.

    (A master that comes back empty at its old address is not survivable by any tool: its replica dials the
    address, not the id, and full-syncs the empty dataset within a second. See docs/architecture.md.)
    """
    nodes = redis_farm.spawn(6, hosts=HOSTS, extra={"cluster-node-timeout": "15000"})
    apply(nodes, 3, 1)
    load(nodes, KEYS)
    victim = next(n for n in nodes if myself(n).master_id)
    old_id = myid(victim)
    victim.stop(hard=True)
    for f in victim.dir.iterdir():  # the volume is lost: nodes.conf and the AOF with it
        if f.name == "redis.conf":
            continue
        if f.is_dir():
            shutil.rmtree(f)
        else:
            f.unlink()
    victim.start()
    assert myid(victim) != old_id and victim.client().dbsize() == 0

    apply(nodes, 3, 1, timeout=60)

    assert myself(victim).master_id, "the empty node is a replica again"
    assert_healed(nodes, 3, 1)
    for n in nodes:
        assert old_id not in {ln.node_id for ln in table(n)}, f"{n.address} still lists the lost id"


def test_a_target_that_has_not_bound_the_sources_slots_yet_is_told_before_it_imports(redis_farm: RedisFarm) -> None:
    """A node never binds a slot it imports to the owner gossip names: opened too early, the slot stays
    unbound on the target, which then answers CLUSTERDOWN to every key of the move (``_bind_to_source``)."""
    nodes = redis_farm.spawn(7, hosts=HOSTS)
    apply(nodes[:6], 3, 1)
    load(nodes[:6], KEYS)
    join_empty(nodes[:6], [nodes[6]])
    connector = DirectConnector()
    try:
        snap = ops.take_snapshot(static_inventory([n.address for n in nodes]), connector)
        src = next(n for n in nodes if myself(n).is_master and myself(n).slots)
        slots = slots_of(src, 40)
        by_address = {m.address: m for m in snap.members}
        source, target = by_address[src.address], by_address[nodes[6].address]
        others = [m for m in snap.members if m.is_master and m not in (source, target)]
        # The target forgets the owner, as one that has not had the owner's ping yet.
        nodes[6].client().execute_command("CLUSTER", "DELSLOTS", *slots)
        connector.set_deadline(time.monotonic() + 20)
        moved = migration._stream(connector, source, target, others, [slots])
    finally:
        connector.close()
    assert moved > 0
    assert set(slots) <= myself(nodes[6]).slots
    assert open_slots(nodes) == {}
    assert missing_keys(nodes, KEYS) == []


def test_a_node_loading_its_dataset_is_waited_for_not_reported_down(redis_farm: RedisFarm) -> None:
    """A replica's full resync ends in a load that answers LOADING to CLUSTER NODES and DBSIZE (the e2e
    lost-volume step failed on one, right after a REPLICATE). The bootstrap's look waits until the node
    has loaded and then sees it whole, instead of calling it down."""
    keys = 2_000_000
    (node,) = redis_farm.spawn(1, extra={"appendonly": "no", "enable-debug-command": "local"})
    node.client().execute_command("DEBUG", "POPULATE", keys)
    node.client().save()
    node.stop()
    node.proc = servers.launch([node.binary, str(node.dir / "redis.conf")])
    probe = node.client()

    def loading() -> bool:
        try:
            return str(probe.info("persistence").get("loading")) == "1"
        except redis.ConnectionError:
            return False  # not listening yet

    wait_until("the restarted node to be loading its dataset", loading, 10)
    with connected(DirectConnector()) as connector:
        snap = ops.take_snapshot(static_inventory([node.address]), connector)
    (member,) = snap.members
    assert member.keys == keys, "the look returned before the load finished"
    assert not loading()
