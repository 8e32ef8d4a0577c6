"""Rolling restarts on real servers: every node restarted once under live traffic, no write lost, no slot down.

``LoopbackPods`` is what a StatefulSet is to ``bootstrap.roll``: a node
restarts on its own data dir and port (a pod keeps its volume), gracefully
(SIGTERM, as the kubelet stops a container). The roll itself, its order and
its waits are the product code under test.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
import time

import pytest
import redis
from redis.crc import key_slot

from bootstrap import errors, failover, lease, waiting
from bootstrap import operations as ops
from bootstrap.endpoints import DirectConnector, Inventory, connected, static_inventory
from bootstrap.model import Shape
from bootstrap.roll import roll
from tests.bootstrap.helpers import (
    HOSTS,
    apply,
    assert_shape,
    load,
    missing_keys,
    myself,
    table,
    traffic,
)
from tests.conftest import RedisFarm, RedisNode, free_cluster_port
from tests.toolkit import REDIS_PY_4015, wait_until

KEYS = 20_000


class LoopbackPods:
    """Nodes named by address; ``stale`` are those not restarted since the roll was declared."""

    def __init__(self, nodes: list[RedisNode], stale: list[RedisNode]) -> None:
        self.nodes = {n.address: n for n in nodes}
        self._stale = {n.address for n in stale}
        self.restarted: list[str] = []
        self.roles_when_stopped: dict[str, bool] = {}  # address -> was a master with slots

    def stale(self) -> list[str]:
        return sorted(self._stale)

    def inventory(self, timeout: float) -> Inventory:
        return static_inventory(list(self.nodes))

    def restart(self, name: str, timeout: float, progress: waiting.Progress) -> None:
        node = self.nodes[name]
        me = myself(node)
        self.roles_when_stopped[name] = me.is_master and bool(me.slots)
        node.restart()
        self._stale.discard(name)
        self.restarted.append(name)

    def ready(self, name: str) -> bool:
        return self.nodes[name].running


def run_roll(pods: LoopbackPods, shape: Shape, timeout: float = 180) -> list[str]:
    def connect(_inventory: Inventory) -> DirectConnector:
        return DirectConnector()

    return roll(pods, connect, shape, timeout, progress=print)


def test_a_roll_restarts_every_node_once_without_a_lost_write_or_a_client_error(redis_farm: RedisFarm) -> None:
    nodes = redis_farm.spawn(6, hosts=HOSTS)
    apply(nodes, 3, 1)
    load(nodes, KEYS)
    masters_before = {n.address for n in nodes if myself(n).is_master}
    pods = LoopbackPods(nodes, stale=nodes)

    with traffic(nodes) as writer:
        time.sleep(0.5)
        order = run_roll(pods, Shape(3, 1))
        written_before_end = writer.written
        time.sleep(0.5)

    assert sorted(order) == sorted(n.address for n in nodes), "every node restarted exactly once"
    first_three = order[:3]
    assert not masters_before & set(first_three), f"replicas first: {order}, masters were {masters_before}"
    assert not any(pods.roles_when_stopped.values()), "no node stopped while it still owned slots"
    assert writer.errors_except(REDIS_PY_4015) == {} and writer.wrong == [], (writer.samples, writer.wrong[:5])
    assert writer.written > written_before_end > 100, "the client kept writing through the roll"
    assert_shape(nodes, 3, 1)
    assert missing_keys(nodes, KEYS) == []
    # Every acknowledged live write is readable.
    assert writer.lost() == []
    assert all(not myself(pods.nodes[a]).is_master for a in masters_before), "the old masters came back as replicas"


def test_a_master_whose_replica_has_no_link_is_not_restarted_and_the_error_names_both(redis_farm: RedisFarm) -> None:
    nodes = redis_farm.spawn(6, hosts=HOSTS)
    apply(nodes, 3, 1)
    master = next(n for n in nodes if myself(n).slots)
    master_id = myself(master).node_id
    replica = next(n for n in nodes if myself(n).master_id == master_id)
    # Cut the replica's link for good: it cannot log in to its master any more.
    replica.client().config_set("masterauth", "not-the-password")
    replica.client().execute_command("CLIENT", "KILL", "TYPE", "master")
    wait_until("the link to drop", lambda: replica.client().info("replication")["master_link_status"] == "down", 10)
    pid = master.proc.pid if master.proc else None
    pods = LoopbackPods(nodes, stale=[master])

    started = time.monotonic()
    with pytest.raises(errors.ConvergenceTimeout) as err:
        run_roll(pods, Shape(3, 1), timeout=6)

    assert time.monotonic() - started < 30
    message = str(err.value)
    assert master.address in message and replica.address in message, message
    assert pods.restarted == [] and master.proc is not None and master.proc.pid == pid, "the master kept running"
    assert myself(master).slots, "and kept its slots"

    replica.client().config_set("masterauth", "")
    replica.client().execute_command("CLIENT", "KILL", "TYPE", "master")
    assert run_roll(pods, Shape(3, 1)) == [master.address], "once the link is back the roll goes on"
    assert_shape(nodes, 3, 1)


def test_a_roll_before_a_scale_out_keeps_the_cluster_whole_without_the_new_nodes(redis_farm: RedisFarm) -> None:
    """The roll runs before the converge: pods of a scale-out (not met yet) are not part of what it keeps
    whole, so it neither waits for them nor restarts them; the converge then brings them in."""
    nodes = redis_farm.spawn(8, hosts=HOSTS)
    formed, fresh = nodes[:6], nodes[6:]
    apply(formed, 3, 1)
    load(formed, KEYS)
    pods = LoopbackPods(nodes, stale=formed)

    assert sorted(run_roll(pods, Shape(4, 1), timeout=120)) == sorted(n.address for n in formed)

    assert all(len(table(n)) == 1 for n in fresh), "the new nodes were left alone"
    apply(nodes, 4, 1)
    assert_shape(nodes, 4, 1)
    assert missing_keys(nodes, KEYS) == []


def test_a_handover_without_an_election_takes_over_with_the_masters_writes_paused(redis_farm: RedisFarm) -> None:
    """The other masters frozen, so no vote can come: CLUSTER FAILOVER never completes, and the handover
    falls back to pausing the master's writes, TAKEOVER, unpausing. Every write it acknowledged is on the
    new master."""
    nodes = redis_farm.spawn(6, hosts=HOSTS)
    apply(nodes, 3, 1)
    master = next(n for n in nodes if myself(n).slots)
    me = myself(master)
    heir = next(n for n in nodes if myself(n).master_id == me.node_id)
    others = [n for n in nodes if myself(n).slots and n is not master]
    snap = ops.take_snapshot(static_inventory([n.address for n in nodes]), DirectConnector())
    keys = [k for k in (f"h:{i}" for i in range(20_000)) if key_slot(k.encode()) in me.slots]
    acked: list[str] = []
    stop = threading.Event()

    def write() -> None:
        client = redis.Redis(host=master.host, port=master.port, socket_timeout=20, decode_responses=True)
        for k in keys:
            if stop.is_set():
                return
            try:
                client.set(k, k)
            except redis.ResponseError:  # MOVED: the slots are the heir's now
                return
            acked.append(k)

    said: list[str] = []
    writer = threading.Thread(target=write, daemon=True)
    for n in others:
        assert n.proc is not None
        os.kill(n.proc.pid, signal.SIGSTOP)
    try:
        writer.start()
        time.sleep(0.5)
        with contextlib.closing(DirectConnector()) as connector:
            failover.hand_over(snap, connector, me.node_id, myself(heir).node_id, 60, said.append)
    finally:
        for n in others:
            assert n.proc is not None
            os.kill(n.proc.pid, signal.SIGCONT)
        stop.set()
        writer.join(timeout=30)

    assert any("writes paused" in m for m in said), said
    assert myself(heir).is_master and myself(master).master_id == myself(heir).node_id
    assert len(acked) > 100, len(acked)
    # The frozen masters were marked failed meanwhile: the heir serves again once it has heard from them.
    wait_until("cluster ok", lambda: "cluster_state:ok" in heir.client().execute_command("CLUSTER", "INFO"), 30)
    reader = heir.client()
    pipe = reader.pipeline(transaction=False)
    for k in acked:
        pipe.get(k)
    assert pipe.execute() == acked, "acknowledged writes missing on the new master"


def test_a_roll_that_meets_a_lost_volume_heals_it_first_and_rolls_every_node(redis_farm: RedisFarm) -> None:
    """A replica's volume lost (it came back empty at its address, a new node) and a template change in one
    run: the roll waited for the cluster to be whole, which only the converge after it would have made it,
    and failed at its timeout on every `pulumi up` ("still lists 1 node(s) not in the deployment")."""
    nodes = redis_farm.spawn(6, hosts=HOSTS)
    apply(nodes, 3, 1)
    load(nodes, KEYS)
    replica = next(n for n in nodes if myself(n).master_id)
    replica.stop(hard=True)
    shutil.rmtree(replica.dir)
    replica.start()
    assert len(table(replica)) == 1, "the precondition: an empty node that knows no one"
    pods = LoopbackPods(nodes, stale=nodes)

    order = run_roll(pods, Shape(3, 1), timeout=120)

    assert sorted(order) == sorted(n.address for n in nodes), "every node restarted exactly once"
    assert_shape(nodes, 3, 1)
    assert missing_keys(nodes, KEYS) == []


class BlindConnector(DirectConnector):
    """Sees one node as silent for a while (a tunnel that failed): it keeps running and serving all along."""

    def __init__(self, blind_to: str, until: float) -> None:
        super().__init__()
        self.blind_to, self.until = blind_to, until

    def client(self, address: str, timeout: float = 5.0) -> redis.Redis:
        if address == self.blind_to and time.monotonic() < self.until:
            return redis.Redis(host="127.0.0.1", port=free_cluster_port(), socket_timeout=1)  # nobody listens
        return super().client(address, timeout)


def test_a_master_that_only_looks_down_is_not_restarted_with_its_slots(redis_farm: RedisFarm) -> None:
    """A stale pod that does not answer is restarted first, without a handover (it serves nothing). One
    failed look is no proof of that: while Kubernetes says the pod runs, the roll looks again."""
    nodes = redis_farm.spawn(6, hosts=HOSTS)
    apply(nodes, 3, 1)
    load(nodes, KEYS)
    master = next(n for n in nodes if myself(n).slots)
    pods = LoopbackPods(nodes, stale=[master])
    until = time.monotonic() + 3.0

    roll(pods, lambda _inventory: BlindConnector(master.address, until), Shape(3, 1), 120, progress=print)

    assert pods.restarted == [master.address]
    assert pods.roles_when_stopped == {master.address: False}, "it stopped while it still owned slots"
    assert_shape(nodes, 3, 1)
    assert missing_keys(nodes, KEYS) == []


@pytest.mark.parametrize("replicas", [2, 0])
def test_rolls_with_two_replicas_and_with_none_lose_no_acknowledged_write(redis_farm: RedisFarm, replicas: int) -> None:
    """With two replicas each master hands over to one of them (the most caught up, rolled first); with none
    a master restarts as it is, its slots down until it is back, and the roll says so first."""
    nodes = redis_farm.spawn(3 * (1 + replicas), hosts=HOSTS)
    apply(nodes, 3, replicas)
    load(nodes, KEYS)
    masters_before = {n.address for n in nodes if myself(n).slots}
    pods = LoopbackPods(nodes, stale=nodes)
    said: list[str] = []

    with traffic(nodes) as writer:
        time.sleep(0.5)
        order = roll(pods, lambda _inventory: DirectConnector(), Shape(3, replicas), 180, progress=said.append)
        time.sleep(0.5)

    assert sorted(order) == sorted(n.address for n in nodes), "every node restarted exactly once"
    assert writer.written > 100, "the client kept writing through the roll"
    assert missing_keys(nodes, KEYS) == []
    assert writer.lost() == []
    assert_shape(nodes, 3, replicas)
    if replicas:
        assert not any(pods.roles_when_stopped.values()), "no node stopped while it still owned slots"
        assert writer.errors_except(REDIS_PY_4015) == {} and writer.wrong == [], (writer.samples, writer.wrong[:5])
        assert set(order[: 3 * replicas]).isdisjoint(masters_before), f"replicas first: {order}"
    else:
        warnings = [s for s in said if s.startswith("WARNING:") and "has no replica (0 declared)" in s]
        assert len(warnings) == 3, said


class WatchedPods(LoopbackPods):
    """Before each restart, a second run tries to take the lease (in its own thread, as another process would)."""

    def __init__(self, nodes: list[RedisNode], stale: list[RedisNode]) -> None:
        super().__init__(nodes, stale)
        self.second_runs: list[str] = []  # what each attempt got: "refused" or "took it"

    def restart(self, name: str, timeout: float, progress: waiting.Progress) -> None:
        inventory = static_inventory(list(self.nodes))
        outcome: list[str] = []

        def second_run() -> None:
            with connected(DirectConnector()) as connector:
                try:
                    with lease.hold(ops.take_snapshot(inventory, connector), connector, lambda _: None):
                        outcome.append("took it")
                except errors.LeaseHeld:
                    outcome.append("refused")

        t = threading.Thread(target=second_run)
        t.start()
        t.join(timeout=lease.TTL_S * 2)
        self.second_runs.append(outcome[0] if outcome else "no answer")
        super().restart(name, timeout, progress)


def test_the_lease_is_held_through_the_whole_roll_and_released_after(redis_farm: RedisFarm) -> None:
    """The roll ran outside the lease (only its heals' converges took it): while it restarted a pod, a
    second run could take the lease and move slots, or evict the heir of the handover under way."""
    nodes = redis_farm.spawn(6, hosts=HOSTS)
    apply(nodes, 3, 1)
    owner = next(n for n in nodes if lease.SLOT in myself(n).slots)
    replica = next(n for n in nodes if myself(n).master_id and myself(n).master_id != myself(owner).node_id)
    pods = WatchedPods(nodes, stale=[replica, owner])  # the lease key's own master hands over and restarts

    order = run_roll(pods, Shape(3, 1), timeout=120)

    assert order == [replica.address, owner.address]
    assert pods.second_runs == ["refused", "refused"], pods.second_runs
    owner_now = next(n for n in nodes if lease.SLOT in myself(n).slots)
    assert owner_now.client().get(lease.KEY) is None, "released at the end"
    assert_shape(nodes, 3, 1)
