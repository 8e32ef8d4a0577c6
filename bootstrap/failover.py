"""Failovers: moving a master's role to a replica, each way bounded and none losing an acknowledged write.

The most delicate code of the bootstrap, kept apart from the looking and meshing of ``operations``
(which it uses; nothing there uses it): ``fail_over`` promotes replicas of gone masters (the mode
``rules.failover_mode`` picks); ``hand_over`` switches a live master to its replica (a graceful
failover, then the same by hand with the master's writes paused, never lifted while the old master
may still own the slots); ``caught_up`` says which replicas could take over now; ``serve_at_once``
gets new empty masters serving without Redis' rejoin delays by swapping roles with their empty
replicas and back.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence

import redis

from bootstrap import rules
from bootstrap.endpoints import Connector, DeadlineExceeded
from bootstrap.errors import BootstrapError, ConvergenceTimeout
from bootstrap.model import Member, NodeLine, Snapshot
from bootstrap.operations import VIEW_WAIT_S, cluster, myself, replicate_one, view
from bootstrap.waiting import Progress, parallel, poll

FORCE_WAIT_S = 10.0


def fail_over(
    snap: Snapshot, connector: Connector, replica_ids: Sequence[str], timeout: float, progress: Progress | None = None
) -> None:
    """Promote replicas with the option ``rules.failover_mode`` picks; FORCE falls back to TAKEOVER."""
    by_id = snap.by_id
    if replica_ids and progress and rules.quorum_lost(snap):
        alive, counted = rules.quorum(snap)
        progress(f"{counted - alive} of {counted} masters are gone: no election can win, promoting by TAKEOVER")
    for rid in replica_ids:
        replica = by_id[rid]
        client = connector.client(replica.address)

        def promoted(client: redis.Redis = client) -> str | None:
            return None if myself(client).is_master else "check its replication link (INFO replication)"

        mode = rules.failover_mode(snap, replica)
        cluster(client, "FAILOVER", *mode)
        wait = min(timeout, FORCE_WAIT_S) if mode == ("FORCE",) else timeout
        try:
            poll(f"replica {replica.name} was not promoted (CLUSTER FAILOVER {' '.join(mode)})", promoted, wait)
        except ConvergenceTimeout:
            if mode != ("FORCE",):
                raise
            # FORCE needs a majority of masters to vote; TAKEOVER does not.
            cluster(client, "FAILOVER", "TAKEOVER")
            poll(f"replica {replica.name} was not promoted (CLUSTER FAILOVER TAKEOVER)", promoted, timeout)


# Redis abandons a manual failover it could not finish in 5 s (CLUSTER_MF_TIMEOUT) without a word, e.g.
# when the election's votes did not come in time; and a replica whose election failed starts the next one
# only 4 x cluster-node-timeout later (60 s at the default), so asking again soon is no use.
HANDOVER_ATTEMPT_S = 8.0
GRACEFUL_ATTEMPTS = 2
LINK_WAIT_S = 5.0  # a restarted node's links come back within a cron tick or two
LINK_PROBE_S = 1.0  # a voter that does not answer CLUSTER NODES within this is left out
PAUSE_MS = 10_000  # the longest a paused takeover may hold the master's writes, should this process die


def hand_over(
    snap: Snapshot,
    connector: Connector,
    master_id: str,
    heir_id: str,
    timeout: float,
    progress: Progress | None = None,
) -> None:
    """Switch a live master's slots to its replica with no acknowledged write lost, waited until both agree.

    First the graceful way: CLUSTER FAILOVER without options (Redis pauses
    the master's clients until the replica has every write, then the replica
    is elected). Seen on Kubernetes right after another handover: the election
    never came through and Redis dropped it. Then the same done by hand, with
    no election: the master's writes paused (CLIENT PAUSE WRITE; clients wait,
    they get no error), the replica waited for until it has the master's
    offset, CLUSTER FAILOVER TAKEOVER, the pause lifted once the replica is
    master (the held writes then get MOVED to it). The wait for the old master
    to call itself a replica keeps its pod from stopping while clients may
    still write to it.
    """
    by_id = snap.by_id
    master, heir = by_id[master_id], by_id[heir_id]
    heir_client, master_client = connector.client(heir.address), connector.client(master.address)

    def promoted() -> str | None:
        return None if myself(heir_client).is_master else f"{heir.name} is still a replica"

    deadline = time.monotonic() + timeout
    with contextlib.suppress(ConvergenceTimeout):  # then the attempts below and their fallback decide
        poll("cluster-bus links to the heir", lambda: _unlinked(snap, connector, heir), LINK_WAIT_S)
    for _ in range(GRACEFUL_ATTEMPTS):
        if myself(heir_client).is_master:
            break
        cluster(heir_client, "FAILOVER")
        try:
            poll("graceful failover", promoted, min(HANDOVER_ATTEMPT_S, max(deadline - time.monotonic(), 0.0)))
            break
        except ConvergenceTimeout:
            continue
    else:
        if progress:
            waited = GRACEFUL_ATTEMPTS * HANDOVER_ATTEMPT_S
            progress(
                f"{heir.name} was not elected within {waited:.0f}s of CLUSTER FAILOVER: "
                f"taking over with {master.name}'s writes paused"
            )
        # Short socket timeouts: every look must fit between two renewals of the pause (PAUSE_RENEW_S).
        short = (
            connector.client(master.address, timeout=LINK_PROBE_S),
            connector.client(heir.address, timeout=LINK_PROBE_S),
        )
        _paused_takeover(master, heir, *short, deadline)
    if not myself(heir_client).is_master:
        raise ConvergenceTimeout(
            f"replica {heir.name} could not take over from {master.name} in {timeout:.0f}s; "
            f"{heir.name}: {_replication(heir_client)}; {master.name}: {_replication(master_client)}"
        )

    def demoted() -> str | None:
        return None if myself(master_client).master_id == heir_id else f"{master.name} still calls itself a master"

    poll(f"{master.name} did not become a replica of {heir.name}", demoted, max(deadline - time.monotonic(), 5.0))


def _unlinked(snap: Snapshot, connector: Connector, heir: Member) -> str | None:
    """The cluster-bus links between the voters (masters with slots) and ``heir`` that are down, or None.

    A master sends its vote over its own link to the replica and drops it when
    that link is down, which it is for up to a cron tick (100 ms) after the
    replica restarted. Seen in a roll: the heir asked 70 ms after its start,
    all three masters granted the vote, none arrived, and Redis allows the next
    election only 4 x node-timeout later, with the master's clients paused for
    the 5 s of each failed attempt. A voter that does not answer cannot vote
    either way: nothing to wait for.
    """

    def seen_by(m: Member) -> dict[str, NodeLine] | None:
        try:
            return view(connector.client(m.address, timeout=LINK_PROBE_S))
        except DeadlineExceeded:
            raise
        except (redis.ConnectionError, redis.TimeoutError):
            return None

    def up(seen: dict[str, NodeLine], peer: Member) -> bool:
        line = seen.get(peer.node_id)
        return line is not None and line.connected and not line.failed

    voters = [m for m in snap.members if m.is_master and m.slots and m.node_id != heir.node_id]
    views = dict(zip((m.node_id for m in [heir, *voters]), parallel(seen_by, [heir, *voters]), strict=True))
    heirs_view = views[heir.node_id] or {}
    down = []
    for v in voters:
        if (seen := views[v.node_id]) is None:
            continue
        down += [f"{v.name} -> {heir.name}"] if not up(seen, heir) else []
        down += [f"{heir.name} -> {v.name}"] if not up(heirs_view, v) else []
    return ", ".join(down) or None


PAUSE_RENEW_S = 3.0  # renew the pause this long before it would lapse (each look below takes at most 1 s)


def _paused_takeover(
    master: Member, heir: Member, master_client: redis.Redis, heir_client: redis.Redis, deadline: float
) -> None:
    """The graceful failover's steps without its election. The pause is lifted only once the old master
    calls itself a replica: the writes it held then get MOVED, none lands on it after the switch.

    From the TAKEOVER on, the pause is never lifted while the old master may still call itself the owner
    (it was, after ~9 s, whatever the old master believed): a write it accepted then would be lost when
    it learns. It is renewed before it lapses until the run's deadline; past it, or on any error, the run
    fails saying so, and the pause ends by itself within PAUSE_MS, as it does should this process die. It
    is lifted early only when the heir is seen not to have taken over (the master still owns its slots).
    """
    master_client.execute_command("CLIENT", "PAUSE", PAUSE_MS, "WRITE")
    paused_at = time.monotonic()
    unpause = True
    try:
        target = int(master_client.info("replication").get("master_repl_offset", 0))

        def synced() -> str | None:
            got = int(heir_client.info("replication").get("slave_repl_offset", -1))
            return None if got >= target else f"{heir.name} at offset {got}, {master.name} at {target}"

        poll(f"{heir.name} did not reach {master.name}'s offset with its writes paused", synced, PAUSE_MS / 3000)
        unpause = False
        cluster(heir_client, "FAILOVER", "TAKEOVER")

        def switched() -> str | None:
            views = [myself(c) for c in (heir_client, master_client)]
            follows = views[1].master_id == views[0].node_id
            if views[0].is_master and follows:
                return None
            return f"{heir.name} is master: {views[0].is_master}; {master.name} follows it: {follows}"

        while True:
            renew_at = paused_at + PAUSE_MS / 1000 - PAUSE_RENEW_S
            try:
                poll(
                    f"{master.name} and {heir.name} did not switch",
                    switched,
                    max(min(renew_at, deadline) - time.monotonic(), 0.0),
                )
                unpause = True
                return
            except ConvergenceTimeout:
                if not myself(heir_client).is_master:
                    unpause = True  # no takeover: the master still owns its slots and may serve again
                    raise
                if time.monotonic() >= deadline:
                    raise ConvergenceTimeout(
                        f"{heir.name} took over, but {master.name} has not learned it: its writes stay paused "
                        f"(for at most {PAUSE_MS / 1000:.0f}s more), since a write it accepted would be lost"
                    ) from None
                master_client.execute_command("CLIENT", "PAUSE", PAUSE_MS, "WRITE")
                paused_at = time.monotonic()
    finally:
        if unpause:
            master_client.execute_command("CLIENT", "UNPAUSE")


def _replication(client: redis.Redis) -> str:
    info = client.info("replication")
    keys = ("role", "master_link_status", "master_sync_in_progress", "slave_repl_offset", "master_repl_offset")
    return ", ".join(f"{k}={info[k]}" for k in keys if k in info)


def caught_up(snap: Snapshot, connector: Connector) -> set[str]:
    """Replica ids whose link is up and whose offset has reached what their master had a moment before.

    The masters' offsets are read first, so under live writes a replica
    within a round trip of its master counts as caught up, and one in a full
    sync or behind a backlog does not.
    """
    by_id = snap.by_id
    replicas = [m for m in snap.members if m.master_id in by_id]
    masters = sorted({m.master_id for m in replicas if m.master_id})

    def offset_of(node_id: str) -> tuple[str, int]:
        info = connector.client(by_id[node_id].address).info("replication")
        return node_id, int(info.get("master_repl_offset", 0))

    def replica_state(m: Member) -> tuple[str, bool, int]:
        info = connector.client(m.address).info("replication")
        synced = info.get("master_link_status") == "up" and not int(info.get("master_sync_in_progress", 0))
        return m.node_id, synced, int(info.get("slave_repl_offset", -1))

    before = dict(parallel(offset_of, masters))
    return {
        rid
        for rid, synced, offset in parallel(replica_state, replicas)
        if synced and offset >= before[by_id[rid].master_id or ""]
    }


SWAP_WAIT_S = 5.0  # each step of a role swap takes a few ms; past this the node is not coming, fall back
SWAP_POLL_S = 0.01  # the steps take milliseconds: a coarser poll would be most of a formation's time


def serve_at_once(snap: Snapshot, connector: Connector, swaps: Sequence[tuple[str, str]], progress: Progress) -> None:
    """Get new, empty masters serving now instead of after Redis' floors.

    Redis holds a master in the fail state for its rejoin delay
    (clamp(node-timeout, 0.5 s, 5 s)) after it was a minority, which every new
    master is until it learns the slot owners, and a just-started one for 2 s
    more (CLUSTER_WRITABLE_DELAY); a replica is exempt from both. So the new
    master's (empty) replica, already ok, takes the master role with TAKEOVER,
    the old master follows it and is ok as a replica at once, and takes its
    role back the same way: the planned roles, both ok, in milliseconds. Only
    for pairs where neither side holds a key (``rules.role_swaps``); anything
    unexpected leaves the planned master the master and the caller waits the
    delay out, as before.

    A master that owns slots (a fresh formation's) hands them over with each
    TAKEOVER, which claims the slots the taker *sees* its master own; so each
    TAKEOVER waits until the taker's view shows all of them, each side checks
    it owns them after, and such pairs go one at a time: run at once, their
    epoch bumps without consensus raced, and 2 in 6 formations ended with a
    master short of its slots (bench/NOTES.md).
    """
    by_id = snap.by_id
    owning = [pair for pair in swaps if by_id[pair[0]].slots]
    parallel(
        lambda pair: _swap(connector, by_id[pair[0]], by_id[pair[1]], progress), [p for p in swaps if p not in owning]
    )
    for m_id, r_id in owning:
        _swap(connector, by_id[m_id], by_id[r_id], progress)
    if swaps:
        with contextlib.suppress(ConvergenceTimeout):  # the moves then say which node refused, as before
            poll(
                "every node to see the swapped masters as masters", lambda: _behind(snap, connector, swaps), VIEW_WAIT_S
            )


def _cluster_ok(client: redis.Redis) -> str | None:
    return None if "cluster_state:ok" in str(cluster(client, "INFO")) else "not cluster_state:ok yet"


def _sees(client: redis.Redis, owner: Member, slots: frozenset[int]) -> str | None:
    """None once ``client``'s node sees ``owner`` as the master of exactly ``slots``."""
    line = view(client).get(owner.node_id)
    if line is None or not line.is_master or line.slots != slots:
        return f"does not see {owner.name} as the master of its {len(slots)} slots yet"
    return None


def _settled(client: redis.Redis, owner: Member, slots: frozenset[int]) -> str | None:
    return _sees(client, owner, slots) or _cluster_ok(client)


def _swap_wait(what: str, probe: Callable[[], str | None]) -> None:
    poll(what, probe, SWAP_WAIT_S, interval=SWAP_POLL_S)


def _swap(connector: Connector, m: Member, r: Member, progress: Progress) -> None:
    """One role swap: ``r`` (the empty replica) takes ``m``'s role and gives it back (see serve_at_once)."""
    mc, rc = connector.client(m.address), connector.client(r.address)
    if _cluster_ok(mc) is None or mc.dbsize() or rc.dbsize():
        return  # serving already, or holding keys: nothing to gain, or not harmless
    started = time.monotonic()
    # A master that loses all its slots to a TAKEOVER follows the taker by itself (and refuses
    # REPLICATE until it has seen them go): so each side first sees the other own them.
    try:
        _swap_wait(f"{r.name} as replica", lambda: _settled(rc, m, m.slots))
        cluster(rc, "FAILOVER", "TAKEOVER")
        _swap_wait(f"{r.name} promoted", lambda: _settled(rc, r, m.slots))
        _swap_wait(f"{m.name} to see {r.name} promoted", lambda: _sees(mc, r, m.slots))
        replicate_one(connector, m, r.node_id, SWAP_WAIT_S)
        _swap_wait(f"{m.name} as replica", lambda: _settled(mc, r, m.slots))
        cluster(mc, "FAILOVER", "TAKEOVER")
        _swap_wait(f"{m.name} promoted again", lambda: _settled(mc, m, m.slots))
        _swap_wait(f"{r.name} to see {m.name} promoted again", lambda: _sees(rc, m, m.slots))
        said = f"{m.name} serves at once: its empty replica {r.name} held the role and gave it back"
    except (BootstrapError, redis.ResponseError) as exc:
        said = f"{m.name} waits out Redis' delay: the role swap with {r.name} stopped ({exc})"
        if not myself(mc).is_master:  # the planned master stays the master
            cluster(mc, "FAILOVER", "TAKEOVER")
            _swap_wait(f"{m.name} promoted again", lambda: None if myself(mc).is_master else "not a master yet")
        with contextlib.suppress(ConvergenceTimeout):  # then REPLICATE below says what is wrong
            _swap_wait(f"{r.name} to see {m.name} promoted again", lambda: _sees(rc, m, m.slots))
    replicate_one(connector, r, m.node_id)
    progress(f"{said} ({time.monotonic() - started:.2f}s)")


def _behind(snap: Snapshot, connector: Connector, swaps: Sequence[tuple[str, str]]) -> str | None:
    """Nodes that still see a swapped master as a replica, or short of its slots: a source refuses
    SETSLOT MIGRATING to it ("Target node is not a master"), seen once in the engine tier 0.1 s after a
    swap, and a client sent elsewhere for one of its slots is redirected again."""
    by_id = snap.by_id

    def lagging(x: Member) -> list[str]:
        lines = view(connector.client(x.address))
        return [
            f"{x.name} sees {by_id[i].name} as a replica or short of its slots"
            for i, _ in swaps
            if i in lines and (not lines[i].is_master or lines[i].slots != by_id[i].slots)
        ]

    lag = [said for part in parallel(lagging, snap.members) for said in part]
    return "; ".join(lag[:5]) or None
