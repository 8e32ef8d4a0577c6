"""What the bootstrap will never do on its own: lose data silently, split a shard's brain, get stuck.

Each case is built on real servers the way an operator meets it (processes
killed for good, or coming back from their own data at their old address),
then the command line is run as a user would, within a timeout, and every key
is read back.
"""

from __future__ import annotations

import threading
import time

import pytest
import redis
from redis.crc import key_slot

from bootstrap import errors, lease
from bootstrap import operations as ops
from bootstrap.endpoints import DirectConnector, connected, static_inventory
from bootstrap.model import format_ranges
from tests.bootstrap.helpers import (
    HOSTS,
    apply,
    assert_shape,
    load,
    missing_keys,
    myself,
    open_slots,
    table,
)
from tests.conftest import RedisFarm, RedisNode
from tests.toolkit import cluster_client, run_cli, wait_until

KEYS = 30_000


def replica_of(nodes: list[RedisNode], master: RedisNode) -> RedisNode:
    master_id = myself(master).node_id
    return next(n for n in nodes if myself(n).master_id == master_id)


def synced(master: RedisNode) -> None:
    assert master.client().execute_command("WAIT", 1, 5000) == 1, f"{master.address}'s replica is behind"


def keys_in(slots: frozenset[int], count: int = KEYS) -> list[int]:
    return [i for i in range(count) if key_slot(f"k:{i}".encode()) in slots]


def claims(nodes: list[RedisNode]) -> dict[int, list[str]]:
    """slot -> addresses of the running nodes that claim it as their own."""
    out: dict[int, list[str]] = {}
    for n in nodes:
        if n.running:
            for s in myself(n).slots:
                out.setdefault(s, []).append(n.address)
    return out


def lose_a_shard(redis_farm: RedisFarm) -> tuple[list[RedisNode], RedisNode, RedisNode, frozenset[int]]:
    """3x1 formed on 6 of 8 nodes, KEYS loaded, then one master and its only replica killed (their data
    kept on disk). Returns (the 6 other nodes: 4 survivors then 2 fresh, the master, its replica, its slots)."""
    nodes = redis_farm.spawn(8, hosts=HOSTS)
    formed = nodes[:6]
    apply(formed, 3, 1)
    load(formed, KEYS)
    master = next(n for n in formed if myself(n).slots)
    replica = replica_of(formed, master)
    lost = myself(master).slots
    synced(master)
    master.stop(hard=True)
    replica.stop(hard=True)
    return [n for n in nodes if n not in (master, replica)], master, replica, lost


def test_a_lost_majority_of_masters_is_named_by_check_and_repaired_by_apply_inside_30s(redis_farm: RedisFarm) -> None:
    """2 of 3 masters killed for good: no election can win. `apply` used to wait out a FORCE failover for
    60 s per replica (and fail a 30 s run every time); it promotes by TAKEOVER at once now."""
    nodes = redis_farm.spawn(8, hosts=HOSTS)
    formed, fresh = nodes[:6], nodes[6:]
    apply(formed, 3, 1)
    load(formed, KEYS)
    masters = [n for n in formed if myself(n).slots]
    victims = masters[:2]
    gone_slots = sum(len(myself(v).slots) for v in victims)
    for v in victims:
        synced(v)
    for v in victims:
        v.stop(hard=True)
    survivors = [n for n in formed if n not in victims]

    check = run_cli("check", survivors[0].address)
    assert check.returncode == 2, check.stdout + check.stderr
    assert "2 of 3 masters are gone: no failover can be elected" in check.stdout, check.stdout
    assert f"{gone_slots} slots unserved" in check.stdout, check.stdout
    assert "`apply` promotes their replicas" in check.stdout, check.stdout

    started = time.monotonic()
    run = run_cli(
        "apply", "--masters", "3", "--replicas", "1", "--timeout", "30", *(n.address for n in [*survivors, *fresh])
    )
    took = time.monotonic() - started
    print(f"apply repaired the lost quorum in {took:.1f}s")
    assert run.returncode == 0, run.stderr[-3000:]
    assert took < 30, f"apply took {took:.1f}s"
    assert "2 of 3 masters are gone: no election can win, promoting by TAKEOVER" in run.stderr, run.stderr
    assert_shape([*survivors, *fresh], 3, 1)
    assert missing_keys([*survivors, *fresh], KEYS) == []


def test_a_lost_shard_is_refused_until_accepted_and_its_return_never_serves_its_old_slots(
    redis_farm: RedisFarm,
) -> None:
    """A master and its only replica gone: `apply` exited 0 having reassigned a third of the slots empty.
    Now it refuses, naming the slots and the keys they likely held, until told; and when the shard comes
    back from its own data at its old addresses it never serves those slots again (its epoch is lower than
    the new owner's, so it becomes a replica instead of a second master of them)."""
    listed, master, replica, lost = lose_a_shard(redis_farm)
    survivors = listed[:4]
    ranges = format_ranges(lost)
    gone_keys = keys_in(lost)

    check = run_cli("check", survivors[0].address)
    assert check.returncode == 2, check.stdout + check.stderr
    assert f"slots {ranges} ({len(lost)} slots, about " in check.stdout, check.stdout
    assert "--accept-lost-slots" in check.stdout, check.stdout

    refused = run_cli("apply", "--masters", "3", "--replicas", "1", "--timeout", "60", *(n.address for n in listed))
    assert refused.returncode == 1, refused.stderr[-3000:]
    assert f"slots {ranges}" in refused.stderr and "have no live copy" in refused.stderr, refused.stderr
    assert f"--accept-lost-slots {ranges}" in refused.stderr, refused.stderr
    # Nothing that makes the loss permanent: the slots are nobody's but the gone master's.
    assert not (claims(listed).keys() & lost), "the lost slots were reassigned without consent"
    assert any(ln.slots == lost for ln in table(survivors[0])), "the survivors forgot the gone master"
    after = run_cli("check", survivors[0].address)
    assert after.returncode == 2 and f"slots {ranges} ({len(lost)} slots, about " in after.stdout, after.stdout

    partial = run_cli(
        "apply",
        "--masters",
        "3",
        "--replicas",
        "1",
        "--accept-lost-slots",
        str(min(lost)),
        *(n.address for n in listed),
    )
    assert partial.returncode == 1, "accepting part of the loss reassigned all of it"

    accepted = run_cli(
        "apply", "--masters", "3", "--replicas", "1", "--accept-lost-slots", ranges, *(n.address for n in listed)
    )
    assert accepted.returncode == 0, accepted.stderr[-3000:]
    assert "reassigned empty, as accepted" in accepted.stderr, accepted.stderr
    assert_shape(listed, 3, 1)
    assert sorted(missing_keys(listed, KEYS)) == sorted(f"k:{i}" for i in gone_keys)
    rc = cluster_client(listed)
    for i in gone_keys[:200]:
        rc.set(f"k:{i}", f"new {i}")

    # The shard comes back from its own data (AOF and nodes.conf) at its old addresses.
    master.start()
    replica.start()
    everyone = [*listed, master, replica]
    wait_until("the returned master to give up its old slots", lambda: not (myself(master).slots & lost), 30)
    assert all(len(owners) == 1 for owners in claims(everyone).values()), "two masters claim one slot"
    with pytest.raises(redis.exceptions.MovedError):
        master.client().set(f"k:{gone_keys[0]}", "written to the returned master")
    assert [rc.get(f"k:{i}") for i in gone_keys[:200]] == [f"new {i}" for i in gone_keys[:200]]
    rc.close()

    # Listed again (a pod back at its address): folded in as replicas, the newer values kept.
    again = run_cli("apply", "--masters", "3", "--replicas", "1", "--timeout", "90", *(n.address for n in everyone))
    assert again.returncode == 0, again.stderr[-3000:]
    assert all(len(owners) == 1 for owners in claims(everyone).values()), "two masters claim one slot"
    assert len(missing_keys(everyone, KEYS)) == len(gone_keys)
    rc = cluster_client(everyone)
    assert [rc.get(f"k:{i}") for i in gone_keys[:200]] == [f"new {i}" for i in gone_keys[:200]]
    rc.close()


def test_the_lease_holds_while_its_own_slot_moves_and_a_second_run_still_refuses(redis_farm: RedisFarm) -> None:
    """redis-py raises AskError/MovedError without the words ASK/MOVED in the text: the renewals followed no
    redirect, the lease lapsed mid-move, and a second run started alongside the first."""
    nodes = redis_farm.spawn(3, hosts=HOSTS)
    apply(nodes, 3, 0)
    said: list[str] = []
    inventory = static_inventory([n.address for n in nodes])
    with connected(DirectConnector()) as connector:
        snap = ops.take_snapshot(inventory, connector)
        with lease.hold(snap, connector, said.append):
            owner = next(n for n in nodes if lease.SLOT in myself(n).slots)
            target = next(n for n in nodes if n is not owner)
            src_id, dst_id = myself(owner).node_id, myself(target).node_id
            target.client().execute_command("CLUSTER", "SETSLOT", lease.SLOT, "IMPORTING", src_id)
            owner.client().execute_command("CLUSTER", "SETSLOT", lease.SLOT, "MIGRATING", dst_id)
            owner.client().execute_command("MIGRATE", target.host, target.port, "", 0, 5000, "KEYS", lease.KEY)
            time.sleep(lease.RENEW_S * 2)  # renewals while the key answers ASK
            for n in nodes:
                n.client().execute_command("CLUSTER", "SETSLOT", lease.SLOT, "NODE", dst_id)
            time.sleep(lease.RENEW_S * 2)  # renewals while the key answers MOVED
            ttl = target.client().pttl(lease.KEY)
            assert ttl > (lease.TTL_S - lease.RENEW_S * 1.5) * 1000, f"the lease was not renewed: pttl {ttl}"
            assert not [s for s in said if "could not renew" in s], said
            # A second run, looking from the old owner's side, is redirected and still refuses.
            second: list[BaseException] = []

            def other_run() -> None:
                with connected(DirectConnector()) as c2:
                    try:
                        with lease.hold(snap, c2, lambda _: None):
                            pass
                    except errors.LeaseHeld as exc:
                        second.append(exc)

            t = threading.Thread(target=other_run)
            t.start()
            t.join(timeout=lease.TTL_S * 2)
            assert second, "a second run took the lease while the first held it"
        assert target.client().get(lease.KEY) is None, "the lease was not released at the end"
    assert open_slots(nodes) == {}


def test_a_source_that_dies_mid_move_is_named_in_the_error(redis_farm: RedisFarm) -> None:
    """It ended with `ConnectionError: Connection closed by server` and no node named."""
    nodes = redis_farm.spawn(4, hosts=HOSTS)
    apply(nodes[:3], 3, 0)
    load(nodes[:3], 60_000)
    victim = nodes[0]
    killed = threading.Event()

    def progress(message: str) -> None:
        if message.startswith("moved ") and not killed.is_set():
            killed.set()
            victim.stop(hard=True)

    with connected(DirectConnector()) as connector, pytest.raises(errors.BootstrapError) as err:
        from bootstrap.converge import converge
        from bootstrap.model import Shape

        converge(static_inventory([n.address for n in nodes]), connector, Shape(4, 0), 60, progress, True)
    assert killed.is_set(), "the move finished before the source could be killed"
    # Mid-move (MIGRATE): "moving slots … from A to B: A stopped answering"; with atomic migration the server
    # moves a whole range at once and the next look names it: "A (address) does not answer".
    assert victim.address in str(err.value), str(err.value)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--timeout", "0"], "--timeout is '0': it takes a number of seconds above 0"),
        (["--timeout", "-5"], "--timeout is '-5'"),
        (["--accept-lost-slots", "16384"], "--accept-lost-slots is '16384': it takes 'all' or slot ranges"),
        (["--accept-lost-slots", "x-y"], "--accept-lost-slots is 'x-y'"),
    ],
)
def test_bad_apply_options_are_named_before_anything_is_asked(args: list[str], message: str) -> None:
    out = run_cli("apply", "--masters", "3", "--replicas", "0", *args, "127.0.0.1:1")
    assert out.returncode == 2, out.stderr
    assert message in out.stderr, out.stderr


def test_a_returning_shard_that_cannot_reach_the_cluster_is_folded_in_when_listed(redis_farm: RedisFarm) -> None:
    """The shard comes back after its slots were reassigned and every other node moved to a new address
    (pods rescheduled): its nodes.conf names addresses nobody answers at, so Redis never tells it it was
    outranked and it serves its old slots to whoever dials it. Listed again, it meets the new owner and
    becomes its replica; the keys written since stay."""
    listed, master, replica, lost = lose_a_shard(redis_farm)
    accepted = run_cli(
        "apply", "--masters", "3", "--replicas", "1", "--accept-lost-slots", "all", *(n.address for n in listed)
    )
    assert accepted.returncode == 0, accepted.stderr[-3000:]
    gone_keys = keys_in(lost)
    rc = cluster_client(listed)
    for i in gone_keys[:200]:
        rc.set(f"k:{i}", f"new {i}")
    rc.close()
    for n, host in zip(listed, ["127.0.0.4", "127.0.0.5", "127.0.0.6"] * 2, strict=True):
        n.restart(host=host)
    apply(listed, 3, 1)
    master.start()
    replica.start()
    time.sleep(2)  # what Redis would do by itself within this, it has done
    assert myself(master).slots == lost, "the precondition: the returned master still claims its old slots"

    everyone = [*listed, master, replica]
    run = run_cli("apply", "--masters", "3", "--replicas", "1", "--timeout", "120", *(n.address for n in everyone))

    assert run.returncode == 0, run.stderr[-3000:]
    assert f"{master.address} came back claiming slots {format_ranges(lost)}" in run.stderr, run.stderr
    assert f"its {len(gone_keys)} older key(s) in them are dropped" in run.stderr, run.stderr
    assert all(len(owners) == 1 for owners in claims(everyone).values()), "two masters claim one slot"
    assert not myself(master).is_master
    # Read through the nodes that never left: the returned pair's tables may still name a peer at its old
    # address for a gossip round or two (seen on Valkey 9: a client seeded there dialled a dead address).
    rc = cluster_client(listed)
    assert [rc.get(f"k:{i}") for i in gone_keys[:200]] == [f"new {i}" for i in gone_keys[:200]]
    rc.close()
    assert len(missing_keys(listed, KEYS)) == len(gone_keys)
