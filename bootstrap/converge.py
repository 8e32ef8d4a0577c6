"""Converge: look, plan, act, look again — until the cluster is the declared shape.

This is the one entry point the dynamic provider and the command line share.
Each round re-reads the cluster instead of trusting the previous plan, so a
failover Redis did by itself, a node that restarted mid-way or a move someone
interrupted is simply part of what the next round sees.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from bootstrap import errors, failover, lease, rules, sync_delay, waiting
from bootstrap import operations as ops
from bootstrap.endpoints import Connector, DeadlineExceeded, Endpoint, Inventory
from bootstrap.errors import PlanError
from bootstrap.migration import move_slots, repair_open_slots
from bootstrap.model import Plan, Shape, Snapshot, format_ranges
from bootstrap.planner import plan

MAX_ROUNDS = 5


@dataclass(frozen=True)
class Outcome:
    snapshot: Snapshot
    plans: tuple[Plan, ...]
    keys_moved: int
    seconds: float


def converge(
    inventory: Inventory,
    connector: Connector,
    shape: Shape,
    timeout: float,
    progress: waiting.Progress,
    adopt_unlisted: bool = False,
    accept_lost: frozenset[int] = frozenset(),
) -> Outcome:
    """Bring the endpoints to ``shape``; raise BootstrapError with the reason when that is impossible.

    ``adopt_unlisted``: cluster members missing from the inventory are drained
    and removed (the command line's "list the nodes you want" semantics). Off
    for Kubernetes, where every legitimate node is a pod we listed, so an
    unlisted live member means a foreign cluster and is refused.

    ``accept_lost``: slots whose every copy is gone that a person has said may
    be reassigned empty. Any other such slot stops the run before it is
    reassigned (``errors.DataLossRefused``), naming the slots and the keys they
    likely held: losing data is never the bootstrap's own decision.
    """
    started = time.monotonic()
    require_enough_nodes(inventory, shape)
    # Every socket read and connect ends by the deadline too: a frozen node cannot hold the run past it.
    connector.set_deadline(started + timeout)
    try:
        return _converge(inventory, connector, shape, timeout, progress, adopt_unlisted, accept_lost, started)
    except DeadlineExceeded as exc:
        raise errors.ConvergenceTimeout(f"the run's {timeout:.0f}s are up: {exc}") from exc
    except (redis.RedisError, OSError) as exc:
        # A node that died or hung up mid-run: say which and what, not a traceback.
        raise errors.BootstrapError(
            f"{type(exc).__name__}: {exc}; run again once the node is back or replaced"
        ) from exc
    finally:
        connector.set_deadline(None)


def require_enough_nodes(inventory: Inventory, shape: Shape) -> None:
    """Refuse, before anything changes, a shape the listed nodes cannot fill."""
    staying = [e for e in inventory.endpoints if not e.retire]
    if len(staying) < shape.nodes:
        raise PlanError(
            f"{shape.masters} masters x {shape.replicas_per_master} replicas need {shape.nodes} nodes, "
            f"{len(staying)} are listed ({', '.join(e.name for e in staying)}): add nodes or declare fewer"
        )


def _converge(
    inventory: Inventory,
    connector: Connector,
    shape: Shape,
    timeout: float,
    progress: waiting.Progress,
    adopt_unlisted: bool,
    accept_lost: frozenset[int],
    started: float,
) -> Outcome:
    deadline = started + timeout

    def left() -> float:
        return max(deadline - time.monotonic(), 1.0)

    ops.wait_reachable(inventory, connector, left(), progress)
    first = ops.take_snapshot(inventory, connector)
    if adopt_unlisted and (adopted := adopt(inventory, first)) != inventory:
        inventory, first = adopted, ops.take_snapshot(adopted, connector)
    # syncs: entered by the first step that attaches a replica or fails over (sync_delay.py), left after
    # the last wait, so the servers get their own delays back whether the run succeeds or not.
    with lease.hold(first, connector, progress), contextlib.ExitStack() as syncs:
        return _rounds(inventory, connector, shape, progress, left, started, accept_lost, syncs)


def _rounds(
    inventory: Inventory,
    connector: Connector,
    shape: Shape,
    progress: waiting.Progress,
    left: Callable[[], float],
    started: float,
    accept_lost: frozenset[int],
    syncs: contextlib.ExitStack,
) -> Outcome:
    executed: list[Plan] = []
    keys_moved = 0
    for _ in range(MAX_ROUNDS):
        snap = ops.take_snapshot(inventory, connector)
        ops.refuse_unsafe(snap)
        if ops.fold_in(snap, connector, progress):
            snap = ops.take_snapshot(inventory, connector)
        # Each on a fresh look: the repair may promote a replica, which must then not be relinked.
        if repair_open_slots(snap, connector, progress, min(left(), 60.0)):
            snap = ops.take_snapshot(inventory, connector)
        if ops.relink_replicas(snap, connector, progress):
            snap = ops.take_snapshot(inventory, connector)
        step = plan(snap.members, shape, snap.ghosts)
        if refused := set(step.lost_slots) - accept_lost:
            raise errors.DataLossRefused(
                f"{rules.describe_lost(snap, refused)}. They were not reassigned: bring those nodes back with "
                f"their data and run again, or accept the loss by naming the slots (python -m bootstrap apply "
                f"--accept-lost-slots {format_ranges(refused)}; in the Pulumi program the setting acceptLostSlots)"
            )
        if step.empty and ops.mesh(snap, connector) == 0:
            ops.announce(snap, connector)
            break
        for line in step.describe(snap.names()):
            progress(line)
        if (step.replicate or step.failovers) and not any(s.replicate or s.failovers for s in executed):
            syncs.enter_context(sync_delay.lifted(list(snap.members), connector, progress))
        executed.append(step)
        keys_moved += _execute(step, snap, inventory, connector, progress, left)
    else:
        raise errors.BootstrapError(f"cluster still not in shape after {MAX_ROUNDS} rounds: {executed[-1].describe()}")
    final = ops.wait_converged(
        inventory, connector, left(), progress, expect_masters=shape.masters, expect_replicas=None
    )
    problems = [p for step in executed[-1:] for p in step.problems]
    if problems:
        raise errors.BootstrapError("; ".join(problems))
    return Outcome(final, tuple(executed), keys_moved, time.monotonic() - started)


def _execute(
    step: Plan,
    snap: Snapshot,
    inventory: Inventory,
    connector: Connector,
    progress: waiting.Progress,
    left: Callable[[], float],
) -> int:
    """Run one plan; returns keys moved. Role changes end the round early so it is re-planned."""
    fresh = rules.is_fresh(snap)
    if fresh:
        progress(f"forming a new cluster of {len(snap.members)} nodes")
        ops.assign_slots(snap, connector, step.assign, fresh=True)
    if ops.mesh(snap, connector, owners=step.masters):
        if _only_adds_replicas(step) and (fresh or not step.assign):
            # A replica only needs to know its master: it syncs while the others still shake hands.
            ops.wait_known(snap, connector, step.replicate, left())
            ops.replicate(snap, connector, step.replicate)
            ops.wait_meshed(inventory, connector, left(), progress)
            if fresh and len(snap.members) <= rules.ROLE_ANNOUNCE_MAX_NODES:
                # The new masters own slots but no key: serve now, not after Redis' delays (not above the
                # limit, see rules.formation_swaps, so a big formation is not looked at once more for nothing).
                formed = ops.take_snapshot(inventory, connector)
                failover.serve_at_once(formed, connector, rules.formation_swaps(formed), progress)
            return 0
        ops.wait_meshed(inventory, connector, left(), progress)
        snap = ops.take_snapshot(inventory, connector)
        # A new master serves (and can take keys) only once it knows the slot owners' slots, and then
        # only after Redis' rejoin delay: start that clock now rather than at the owners' next ping.
        ops.announce(snap, connector)
    if step.failovers:
        failover.fail_over(snap, connector, step.failovers, timeout=min(left(), 60.0), progress=progress)
    ops.forget(connector, snap.members, step.forget)
    if step.detach:
        ops.detach(snap, connector, step.detach)
    if step.failovers or step.detach:
        return 0  # roles changed: look again before moving anything
    if not fresh and step.assign:
        ops.assign_slots(snap, connector, step.assign, fresh=False)
        # A slot without an owner in a formed cluster had one, which may come back from its data.
        ops.outrank(snap, connector, [owner for owner, _ in step.assign])
    # Before the moves: a new master's replica then syncs an empty dataset during Redis' rejoin delay
    # and follows the moved keys as a stream, instead of a full copy of them afterwards. A master that
    # still owns slots can become a replica only once they have moved off it.
    by_id = snap.by_id
    now = [pair for pair in step.replicate if not by_id[pair[0]].slots]
    ops.replicate(snap, connector, now)
    if step.moves:
        targets = {m.target for m in step.moves}
        failover.serve_at_once(snap, connector, rules.role_swaps(snap, targets, now), progress)
        ops.wait_serving(snap, connector, targets, left())
        progress(f"moving {step.moved_slots} slots in {len(step.moves)} stream(s)")
    moved = move_slots(snap, connector, step.moves, progress)
    ops.replicate(snap, connector, [pair for pair in step.replicate if pair not in now])
    loud = ops.remove(snap, connector, step.remove)
    if step.remove:
        names = snap.names()
        progress(
            f"removed {', '.join(names[i] for i in step.remove)} from the cluster: stop them now; until then they "
            f"still answer clients, and a replica among them keeps receiving its old master's writes"
        )
    if loud:
        progress(
            f"WARNING: the node timeout of {', '.join(loud)} could not be raised: on Valkey 8.1+ a removed node "
            f"still running after one node timeout meets its way back in (the next run forgets it once stopped)"
        )
    if step.lost_slots:
        progress(
            f"slots {format_ranges(step.lost_slots)} were reassigned empty, as accepted: every copy was gone; their "
            f"new owners outrank the old one should it come back"
        )
    return moved


def _only_adds_replicas(step: Plan) -> bool:
    """Nothing but slot assignment and replicas: no move, failover or removal needs the full mesh first."""
    return not (step.moves or step.failovers or step.detach or step.forget or step.remove)


def adopt(inventory: Inventory, snap: Snapshot) -> Inventory:
    """The inventory plus every live cluster member it does not list, marked to be drained and removed."""
    known = len(inventory.endpoints)
    extra = [
        Endpoint(name=address, address=address, domain=address.rpartition(":")[0], order=known + i, retire=True)
        for i, address in enumerate(sorted(a for a in snap.strangers.values() if a))
    ]
    return Inventory(inventory.endpoints + tuple(extra))


def describe(snap: Snapshot) -> dict[str, Any]:
    """The cluster as stack outputs: masters with slot ranges, replica map, node ids."""
    names = snap.names()
    masters = sorted((m for m in snap.members if m.is_master and m.slots), key=lambda m: min(m.slots))
    return {
        "masters": [
            {
                "name": m.name,
                "nodeId": m.node_id,
                "address": m.address,
                "slots": format_ranges(m.slots),
                "replicas": sorted(r.name for r in snap.members if r.master_id == m.node_id),
            }
            for m in masters
        ],
        "replicaOf": {m.name: names.get(m.master_id or "", m.master_id or "") for m in snap.members if m.master_id},
        "nodeIds": {m.name: m.node_id for m in sorted(snap.members, key=lambda m: m.order)},
        # Per-pod external access: where outside clients reach each node (what MOVED names).
        "announced": [m.announced for m in sorted(snap.members, key=lambda m: m.order) if m.announced],
    }
