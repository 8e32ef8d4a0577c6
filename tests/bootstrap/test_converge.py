"""Converge against real redis-server processes: create, scale, heal, resume, refuse.

Several loopback addresses (127.0.0.1-3) stand in for three Kubernetes nodes,
so replica placement is checked the way it matters: a replica never shares
its master's "node" when another one can take it.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest

from bootstrap import errors, rules
from bootstrap import operations as ops
from bootstrap.converge import converge, describe
from bootstrap.endpoints import DirectConnector, Endpoint, Inventory, connected, static_inventory
from bootstrap.engines import VALKEY, Engine
from bootstrap.model import SLOTS, Shape
from tests.bootstrap.helpers import (
    HOSTS,
    apply,
    assert_shape,
    load,
    missing_keys,
    start_cli,
    table,
    traffic,
)
from tests.conftest import RedisFarm, RedisNode
from tests.toolkit import REDIS_PY_4015, run_cli, wait_until


@pytest.fixture
def six(redis_farm: RedisFarm) -> list[RedisNode]:
    return redis_farm.spawn(6, hosts=HOSTS)


def test_create_3x1_then_apply_again_changes_nothing(six: list[RedisNode]) -> None:
    outcome = apply(six, 3, 1)
    assert_shape(six, 3, 1)
    view = describe(outcome.snapshot)
    assert len(view["masters"]) == 3 and len(view["replicaOf"]) == 3
    again = apply(six, 3, 1)
    assert again.plans == (), "a converged cluster must not be touched"
    assert again.keys_moved == 0


def test_replicas_sync_without_waiting_out_the_servers_diskless_delay_and_it_is_set_back(
    redis_farm: RedisFarm,
) -> None:
    """A master about to fork for a full sync first waits repl-diskless-sync-delay (5 s by default, 60 s
    here) for more replicas. Formation and a scale out attach their replicas and wait for the links in
    well under that (the run's 30 s would run out otherwise), and every server has its 60 back afterwards."""
    nodes = redis_farm.spawn(8, hosts=HOSTS, extra={"repl-diskless-sync-delay": "60"})
    said: list[str] = []
    for listed, masters in ((nodes[:6], 3), (nodes, 4)):
        with connected(DirectConnector()) as connector:
            converge(static_inventory([n.address for n in listed]), connector, Shape(masters, 1), 30, said.append)
        assert_shape(listed, masters, 1)
        delays = {n.address: n.client().config_get("repl-diskless-sync-delay") for n in nodes}
        assert all(d == {"repl-diskless-sync-delay": "60"} for d in delays.values()), delays
    lifted = [s for s in said if s.startswith("repl-diskless-sync-delay 0 on")]
    assert lifted == [
        "repl-diskless-sync-delay 0 on 6 node(s) for this run (was 60 s): set back at its end",
        "repl-diskless-sync-delay 0 on 8 node(s) for this run (was 60 s): set back at its end",
    ], said
    assert said.count("repl-diskless-sync-delay set back on 6 node(s)") == 1, said
    assert said.count("repl-diskless-sync-delay set back on 8 node(s)") == 1, said
    again: list[str] = []
    with connected(DirectConnector()) as connector:
        converge(static_inventory([n.address for n in nodes]), connector, Shape(4, 1), 30, again.append)
    assert not [s for s in again if "repl-diskless-sync-delay" in s], "a run with nothing to do changed a setting"


def test_the_diskless_delay_is_set_back_where_it_can_be_when_the_run_fails(redis_farm: RedisFarm) -> None:
    """A node frozen right after the lift: the run fails on its 10 s, and still sets the other nodes' 60 back
    (on its own seconds, past the run's), naming the node it could not reach, which keeps 0."""
    nodes = redis_farm.spawn(6, hosts=HOSTS, extra={"repl-diskless-sync-delay": "60"})
    frozen = nodes[5]
    assert frozen.proc is not None
    said: list[str] = []

    def progress(message: str) -> None:
        said.append(message)
        if message.startswith("repl-diskless-sync-delay 0 on") and frozen.proc is not None:
            os.kill(frozen.proc.pid, signal.SIGSTOP)

    try:
        with pytest.raises(errors.BootstrapError), connected(DirectConnector()) as connector:
            converge(static_inventory([n.address for n in nodes]), connector, Shape(3, 1), 10, progress)
    finally:
        os.kill(frozen.proc.pid, signal.SIGCONT)
    delays = {n.address: n.client().config_get("repl-diskless-sync-delay") for n in nodes}
    assert all(delays[n.address] == {"repl-diskless-sync-delay": "60"} for n in nodes[:5]), delays
    assert delays[frozen.address] == {"repl-diskless-sync-delay": "0"}, delays
    warnings = [s for s in said if s.startswith("WARNING: repl-diskless-sync-delay could not be set back on")]
    assert len(warnings) == 1 and frozen.address in warnings[0], said


def test_formation_leaves_every_view_in_agreement_without_waiting_for_gossip(redis_farm: RedisFarm) -> None:
    """With a 60 s node timeout Redis itself would spread the slots only at pings 30 s apart."""
    nodes = redis_farm.spawn(10, hosts=HOSTS, extra={"cluster-node-timeout": "60000"})
    started = time.monotonic()
    apply(nodes, 5, 1)
    took = time.monotonic() - started
    selves = {ln.node_id: ln for n in nodes for ln in table(n) if ln.is_myself}
    for n in nodes:
        for ln in table(n):
            me = selves[ln.node_id]
            assert ln.slots == me.slots, f"{n.address} has an old view of {me.address}'s slots"
    assert took < 10, f"apply took {took:.1f}s: it waited for regular pings instead of announcing"


def test_a_fresh_formation_serves_without_waiting_out_redis_delays(redis_farm: RedisFarm) -> None:
    """Redis holds a master that was a minority in the fail state for its rejoin delay (5 s at a 15 s node
    timeout) and a just-started one for 2 s more; a replica is exempt. Each keyless master's empty replica
    takes the role with its slots and hands it back, one pair at a time, so the cluster serves in well under
    either delay, with the planned masters as masters, each owning its slots in every node's view."""
    nodes = redis_farm.spawn(6, hosts=HOSTS, extra={"cluster-node-timeout": "15000"})
    time.sleep(1)  # past nothing: both delays would still be ahead (5 s rejoin, 2 s writable)
    log: list[str] = []
    connector = DirectConnector()
    started = time.monotonic()
    try:
        converge(static_inventory([n.address for n in nodes]), connector, Shape(3, 1), 60, progress=log.append)
    finally:
        connector.close()
    took = time.monotonic() - started
    assert sum("serves at once" in line for line in log) == 3, log
    assert took < 3, f"formation took {took:.1f}s: it waited out Redis' delays ({log})"
    planned = {line.rsplit(" to ", 1)[1] for line in log if line.startswith("assign slots")}
    assert {ln.address for ln in table(nodes[0]) if ln.is_master and ln.slots} == planned
    assert_shape(nodes, 3, 1)  # every view agrees, every node ok, cluster_size 3 everywhere, redis-cli check


def test_create_5x2(redis_farm: RedisFarm) -> None:
    nodes = redis_farm.spawn(15, hosts=HOSTS)
    apply(nodes, 5, 2)
    assert_shape(nodes, 5, 2)


def test_scale_out_and_in_with_live_traffic_loses_no_key(redis_farm: RedisFarm) -> None:
    nodes = redis_farm.spawn(12, hosts=HOSTS)
    apply(nodes[:6], 3, 1)
    load(nodes[:6], 100_000)
    with traffic(nodes[:6]) as writer:
        for masters in (4, 6, 3):
            outcome = apply(nodes[: masters * 2], masters, 1)
            assert outcome.keys_moved > 0
            assert_shape(nodes[: masters * 2], masters, 1)
    assert writer.errors_except(REDIS_PY_4015) == {} and writer.wrong == [], (writer.samples, writer.wrong[:5])
    assert writer.written > 100
    assert missing_keys(nodes[:6], 100_000) == []
    staying_ids = {ln.node_id for ln in table(nodes[0])}
    for gone in nodes[6:]:  # drained nodes left the cluster: empty, and known by nobody
        me = next(ln for ln in table(gone) if ln.is_myself)
        assert not me.slots and (not me.is_master or gone.client().dbsize() == 0)
        assert me.node_id not in staying_ids
    for n in nodes[:6]:
        assert len(table(n)) == 6, "no ghost entries left behind"


def _drain_two(redis_farm: RedisFarm) -> tuple[list[RedisNode], list[RedisNode], set[str]]:
    """4x1 scaled in to 3x1: the six staying nodes, the two drained ones (left running) and their ids."""
    nodes = redis_farm.spawn(8, hosts=HOSTS)
    apply(nodes, 4, 1)
    apply(nodes[:6], 3, 1)
    drained = nodes[6:]
    return nodes[:6], drained, {next(ln for ln in table(gone) if ln.is_myself).node_id for gone in drained}


def _listed(staying: list[RedisNode], ids: set[str]) -> set[str]:
    return {ln.node_id for n in staying for ln in table(n)} & ids


def test_drained_nodes_left_running_stay_out(redis_farm: RedisFarm) -> None:
    """Valkey 8.1+ re-MEETs, once per node timeout, every node that forgot it while it still runs, and accepts
    that MEET even inside FORGET's 60 s ban (valkey-io/valkey#2788): drained nodes left running were back in
    every table 2.7 s after the drain at this 3 s timeout. The run raises their node timeout: they stay out
    for two node timeouts and more (Redis refuses them for the 60 s ban anyway)."""
    staying, _drained, gone_ids = _drain_two(redis_farm)
    watched_until = time.monotonic() + 6.5
    while time.monotonic() < watched_until:
        assert _listed(staying, gone_ids) == set(), "a drained node still running met its way back in"
        time.sleep(0.1)


def test_a_drained_node_that_met_its_way_back_is_forgotten_by_the_next_run_once_stopped(
    redis_farm: RedisFarm,
) -> None:
    """Where the run could not raise their node timeout (a login without CONFIG; set back here), Valkey 8.1+
    drained nodes meet their way back; stopped, they are failed entries, and the next run forgets them."""
    staying, drained, gone_ids = _drain_two(redis_farm)
    engine = Engine.from_info(staying[0].client().info("server"))
    if engine.family != VALKEY or engine.version < (8, 1, 0):
        pytest.skip("only Valkey 8.1+ lets a forgotten node back in within FORGET's 60 s ban")
    for gone in drained:
        gone.client().config_set("cluster-node-timeout", 3000)
    wait_until("the drained nodes are back in the staying nodes' tables", lambda: _listed(staying, gone_ids), 15)
    for gone in drained:
        gone.stop()
    assert apply(staying, 3, 1).keys_moved == 0
    assert _listed(staying, gone_ids) == set()
    for n in staying:
        assert len(table(n)) == 6, "no ghost entries left behind"
    assert_shape(staying, 3, 1)


def test_a_new_master_takes_keys_without_waiting_out_the_rejoin_delay(
    redis_farm: RedisFarm, capsys: pytest.CaptureFixture[str]
) -> None:
    """At a 15 s node timeout Redis holds a new master in the fail state for 5 s after it meets the cluster;
    its empty replica holding the role for a moment (``failover.serve_at_once``) makes it serve at once."""
    nodes = redis_farm.spawn(8, hosts=HOSTS, extra={"cluster-node-timeout": "15000"})
    spawned = time.monotonic()
    apply(nodes[:6], 3, 1)
    load(nodes[:6], 5000)
    time.sleep(max(0.0, spawned + 2.5 - time.monotonic()))  # past CLUSTER_WRITABLE_DELAY: a settled node
    capsys.readouterr()
    started = time.monotonic()
    outcome = apply(nodes, 4, 1)
    took = time.monotonic() - started
    said = capsys.readouterr().err
    assert "serves at once" in said, said
    assert outcome.keys_moved > 0
    assert_shape(nodes, 4, 1)
    assert missing_keys(nodes, 5000) == []
    assert took < 5.0, f"the scale-out took {took:.1f}s: it waited out the 5 s rejoin delay\n{said}"


def test_killed_master_fails_over_and_apply_restores_the_replica(redis_farm: RedisFarm, six: list[RedisNode]) -> None:
    apply(six, 3, 1)
    load(six, 20_000)
    victim = six[0]
    victim_id = victim.client().execute_command("CLUSTER", "MYID")
    replica = next(n for n in six[1:] if any(ln.is_myself and ln.master_id == victim_id for ln in table(n)))
    victim.stop(hard=True)
    wait_until("the replica to take over", lambda: any(ln.is_myself and ln.is_master for ln in table(replica)), 30)
    # refresh: the provider's observe reports the drift (a master without replica, a failed node)
    survivors = six[1:]
    snap = ops.take_snapshot(static_inventory([n.address for n in survivors]), DirectConnector())
    verdict = rules.health(snap, {}, expect_replicas=1, expect_masters=3)
    assert any("0 replica" in p for p in verdict.problems)
    # heal with a fresh node in place of the dead one
    spare = redis_farm.spawn(1, hosts=[victim.host])[0]
    apply([*survivors, spare], 3, 1)
    assert_shape([*survivors, spare], 3, 1)
    assert victim_id not in {ln.node_id for ln in table(survivors[0])}, "the dead node is forgotten"
    assert missing_keys(survivors, 20_000) == []


def test_every_node_restarted_comes_back_with_all_keys(six: list[RedisNode]) -> None:
    apply(six, 3, 1)
    load(six, 20_000)
    for n in six:
        n.stop()
    for n in six:
        n.start()
    wait_until(
        "the cluster to re-form from nodes.conf",
        lambda: all("cluster_state:ok" in n.client().execute_command("CLUSTER", "INFO") for n in six),
        60,
    )
    assert missing_keys(six, 20_000) == []
    assert apply(six, 3, 1).plans == ()


def test_nodes_restarted_on_new_addresses_are_re_meshed_by_apply(six: list[RedisNode]) -> None:
    """Every pod came back with a new IP and nothing rewrote nodes.conf: apply re-forms it."""
    apply(six, 3, 1)
    load(six, 10_000)
    for n in six:
        n.stop()
    for n in six:
        n.host = n.host.replace("127.0.0.", "127.0.1.")
        n.start()
    apply(six, 3, 1)
    assert_shape(six, 3, 1)
    assert missing_keys(six, 10_000) == []


def test_a_half_done_migration_is_finished_by_the_next_apply(redis_farm: RedisFarm) -> None:
    nodes = redis_farm.spawn(4, hosts=HOSTS)
    apply(nodes[:3], 3, 0)
    load(nodes[:3], 30_000)
    apply(nodes, 4, 0)  # 4th master in place; now leave one slot half moved from nodes[0] to nodes[3]
    src, dst = nodes[0], nodes[3]
    src_id, dst_id = (n.client().execute_command("CLUSTER", "MYID") for n in (src, dst))
    slot = min(next(ln for ln in table(src) if ln.is_myself).slots)
    dst.client().execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
    src.client().execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
    keys = src.client().execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1000)
    assert len(keys) > 2
    half = keys[: len(keys) // 2]
    src.client().execute_command("MIGRATE", dst.host, dst.port, "", 0, 5000, "KEYS", *half)
    assert any(ln.migrating for ln in table(src) if ln.is_myself)

    apply(nodes, 4, 0)
    for n in nodes:
        me = next(ln for ln in table(n) if ln.is_myself)
        assert not me.migrating and not me.importing
    assert_shape(nodes, 4, 0)
    assert missing_keys(nodes, 30_000) == []


def test_an_apply_killed_mid_move_is_resumed_without_losing_keys(redis_farm: RedisFarm) -> None:
    nodes = redis_farm.spawn(4, hosts=HOSTS)
    apply(nodes[:3], 3, 0)
    load(nodes[:3], 200_000)
    proc = start_cli("apply", "--masters", "4", "--replicas", "0", *(n.address for n in nodes))
    try:
        wait_until("a slot to be open", lambda: any(ln.migrating for ln in table(nodes[0]) if ln.is_myself), 60)
    finally:
        proc.kill()
        proc.wait(timeout=10)
    open_now = [ln for n in nodes for ln in table(n) if ln.is_myself and (ln.migrating or ln.importing)]
    assert open_now, "the kill should have left a move half done"
    apply(nodes, 4, 0)
    assert_shape(nodes, 4, 0)
    assert missing_keys(nodes, 200_000) == []


def test_a_node_that_lost_its_nodes_conf_but_kept_its_data_is_refused(six: list[RedisNode]) -> None:
    """Failure #3 of the reference list: nodes.conf gone, AOF still there. Joining it would drop its keys."""
    apply(six, 3, 1)
    load(six, 5_000)
    victim = six[0]
    keys = victim.client().dbsize()
    victim.stop()
    (victim.dir / "nodes.conf").unlink()
    victim.start()
    assert victim.client().dbsize() == keys > 0
    with pytest.raises(errors.RefusedError, match=rf"holds {keys} keys but is in no cluster"):
        apply(six, 3, 1)
    assert victim.client().dbsize() == keys, "nothing was changed before refusing"
    assert len(table(victim)) == 1


def test_nodes_of_two_different_clusters_are_refused(redis_farm: RedisFarm) -> None:
    a = redis_farm.spawn(3, hosts=HOSTS)
    b = redis_farm.spawn(3, hosts=HOSTS)
    apply(a, 3, 0)
    apply(b, 3, 0)
    with pytest.raises(errors.RefusedError, match="different clusters"):
        apply([*a, *b], 3, 1)


@pytest.fixture
def formed(six: list[RedisNode]) -> Iterator[list[RedisNode]]:
    apply(six, 3, 1)
    yield six


def test_cli_check_exits_zero_only_when_healthy(formed: list[RedisNode]) -> None:
    ok = run_cli("check", "--masters", "3", "--replicas", "1", formed[0].address)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "OK" in ok.stdout
    bad = run_cli("check", "--masters", "4", formed[0].address)
    assert bad.returncode != 0
    assert "3 masters own slots, 4 declared" in bad.stdout


def test_cli_plan_shows_the_change_and_changes_nothing(formed: list[RedisNode], redis_farm: RedisFarm) -> None:
    extra = redis_farm.spawn(2, hosts=HOSTS)
    out = run_cli("plan", "--masters", "4", "--replicas", "1", *(n.address for n in [*formed, *extra]))
    assert out.returncode == 0, out.stderr
    moved = sum(int(line.split()[1]) for line in out.stdout.splitlines() if line.startswith("move "))
    assert moved == SLOTS // 4, out.stdout
    assert len(table(extra[0])) == 1, "plan must not change anything"


def test_nodes_announcing_another_address_converge_without_endless_meets(redis_farm: RedisFarm) -> None:
    """Per-pod external access: nodes announce host:NodePort while we dial and MEET their pod address."""
    nodes: list[RedisNode] = []
    for i in range(6):
        outside = f"127.0.1.{i + 1}"
        extra = {"bind": f"127.0.0.1 {outside}", "cluster-announce-ip": outside, "bind-source-addr": outside}
        nodes += redis_farm.spawn(1, extra=extra)
    inventory = Inventory(
        tuple(
            Endpoint(name=f"pod-{i}", address=n.address, order=i, announced=f"127.0.1.{i + 1}:{n.port}")
            for i, n in enumerate(nodes)
        )
    )
    connector = DirectConnector()
    try:
        first = converge(inventory, connector, Shape(3, 1), 120, progress=lambda m: None)
        assert {ln.address for ln in table(nodes[0])} == {e.announced for e in inventory.endpoints}
        again = converge(inventory, connector, Shape(3, 1), 60, progress=lambda m: None)
    finally:
        connector.close()
    assert first.plans and again.plans == ()
