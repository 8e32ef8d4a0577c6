"""Converge: look, plan, act, look again — until the cluster is the declared shape.

This is the one entry point the dynamic provider and the command line share.
Each round re-reads the cluster instead of trusting the previous plan, so a
failover Redis did by itself, a node that restarted mid-way or a move someone
interrupted is simply part of what the next round sees.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bootstrap import operations as ops
from bootstrap.endpoints import Connector, Endpoint, Inventory
from bootstrap.migration import move_slots, repair_open_slots
from bootstrap.model import Plan, Shape, format_ranges
from bootstrap.planner import plan

MAX_ROUNDS = 5


@dataclass(frozen=True)
class Outcome:
    snapshot: ops.Snapshot
    plans: tuple[Plan, ...]
    keys_moved: int
    seconds: float


def converge(
    inventory: Inventory,
    connector: Connector,
    shape: Shape,
    timeout: float,
    progress: ops.Progress,
    adopt_unlisted: bool = False,
) -> Outcome:
    """Bring the endpoints to ``shape``; raise ClusterError with the reason when that is impossible.

    ``adopt_unlisted``: cluster members missing from the inventory are drained
    and removed (the command line's "list the nodes you want" semantics). Off
    for Kubernetes, where every legitimate node is a pod we listed, so an
    unlisted live member means a foreign cluster and is refused.
    """
    started = time.monotonic()
    deadline = started + timeout

    def left() -> float:
        return max(deadline - time.monotonic(), 1.0)

    ops.wait_reachable(inventory, connector, left(), progress)
    if adopt_unlisted:
        inventory = _adopt_unlisted(inventory, ops.take_snapshot(inventory, connector))
    executed: list[Plan] = []
    keys_moved = 0
    for _ in range(MAX_ROUNDS):
        snap = ops.take_snapshot(inventory, connector)
        ops.refuse_unsafe(snap)
        if repair_open_slots(snap, connector, progress) + ops.relink_replicas(snap, connector, progress):
            snap = ops.take_snapshot(inventory, connector)
        step = plan(snap.members, shape, snap.ghosts)
        if step.empty and ops.mesh(snap, connector) == 0:
            ops.announce(snap, connector)
            break
        for line in step.describe(snap.names()):
            progress(line)
        executed.append(step)
        keys_moved += _execute(step, snap, inventory, connector, progress, left)
    else:
        raise ops.ClusterError(f"cluster still not in shape after {MAX_ROUNDS} rounds: {executed[-1].describe()}")
    final = ops.wait_converged(
        inventory, connector, left(), progress, expect_masters=shape.masters, expect_replicas=None
    )
    problems = [p for step in executed[-1:] for p in step.problems]
    if problems:
        raise ops.ClusterError("; ".join(problems))
    return Outcome(final, tuple(executed), keys_moved, time.monotonic() - started)


def _execute(
    step: Plan,
    snap: ops.Snapshot,
    inventory: Inventory,
    connector: Connector,
    progress: ops.Progress,
    left: Callable[[], float],
) -> int:
    """Run one plan; returns keys moved. Role changes end the round early so it is re-planned."""
    fresh = ops.is_fresh(snap)
    if fresh:
        progress(f"forming a new cluster of {len(snap.members)} nodes")
        ops.assign_slots(snap, connector, step.assign, fresh=True)
    if ops.mesh(snap, connector, owners=step.masters):
        if _only_adds_replicas(step) and (fresh or not step.assign):
            # A replica only needs to know its master: it syncs while the others still shake hands.
            ops.wait_known(snap, connector, step.replicate, left())
            ops.replicate(snap, connector, step.replicate)
            ops.wait_meshed(inventory, connector, left(), progress)
            return 0
        ops.wait_meshed(inventory, connector, left(), progress)
        snap = ops.take_snapshot(inventory, connector)
        # A new master serves (and can take keys) only once it knows the slot owners' slots, and then
        # only after Redis' rejoin delay: start that clock now rather than at the owners' next ping.
        ops.announce(snap, connector)
    if step.failovers:
        ops.fail_over(snap, connector, step.failovers, timeout=min(left(), 60.0))
    ops.forget(connector, snap.members, step.forget)
    if step.detach:
        ops.detach(snap, connector, step.detach)
    if step.failovers or step.detach:
        return 0  # roles changed: look again before moving anything
    if not fresh:
        ops.assign_slots(snap, connector, step.assign, fresh=False)
    # Before the moves: a new master's replica then syncs an empty dataset during Redis' rejoin delay
    # and follows the moved keys as a stream, instead of a full copy of them afterwards.
    ops.replicate(snap, connector, step.replicate)
    if step.moves:
        ops.wait_serving(snap, connector, {m.target for m in step.moves}, left())
        progress(f"moving {step.moved_slots} slots in {len(step.moves)} stream(s)")
    moved = move_slots(snap, connector, step.moves, progress)
    ops.remove(snap, connector, step.remove)
    if step.lost_slots:
        progress(f"slots {format_ranges(step.lost_slots)} were reassigned empty: their owner is gone")
    return moved


def _only_adds_replicas(step: Plan) -> bool:
    """Nothing but slot assignment and replicas: no move, failover or removal needs the full mesh first."""
    return not (step.moves or step.failovers or step.detach or step.forget or step.remove)


def _adopt_unlisted(inventory: Inventory, snap: ops.Snapshot) -> Inventory:
    known = len(inventory.endpoints)
    extra = [
        Endpoint(name=address, address=address, domain=address.rpartition(":")[0], order=known + i, retire=True)
        for i, address in enumerate(sorted(a for a in snap.strangers.values() if a))
    ]
    return Inventory(inventory.endpoints + tuple(extra))


def describe(snap: ops.Snapshot) -> dict[str, Any]:
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
