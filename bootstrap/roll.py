"""Rolling restarts driven by the bootstrap: one pod at a time, replicas first, masters after a handover.

The StatefulSet runs with ``updateStrategy: OnDelete``, so a changed pod
template (image, config, resources) restarts nothing by itself; on the next
`pulumi up` the bootstrap restarts each stale pod here, in the order
``rules.next_restart`` gives, and waits until the cluster is whole again
before the next one: the restarted node is back, every replica's link is up,
every slot is served. A master first hands its slots to a caught-up replica
with a graceful CLUSTER FAILOVER (no acknowledged write lost, no slot down),
and comes back as a replica.

What a "pod" is stays behind ``Pods``: the Kubernetes implementation
(``kube.StatefulSetPods``) deletes pods and waits for the controller to
recreate them; the tests restart loopback servers with the same code path.
Each step reads a fresh inventory, since a restarted pod may come back at a
new address.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from bootstrap import errors, failover, lease, rules, waiting
from bootstrap import operations as ops
from bootstrap.converge import converge
from bootstrap.endpoints import Connector, Inventory, connected
from bootstrap.errors import PlanError
from bootstrap.model import Shape, Snapshot

HOLD_REPORT_S = 10.0
HEAL_AFTER_S = 10.0  # a restarted node is normally whole again within a few seconds (its replica's resync)


class Pods(Protocol):
    """What a roll needs from whatever runs the nodes."""

    def stale(self) -> list[str]:
        """Names of the pods that still run an old revision."""
        ...

    def inventory(self, timeout: float) -> Inventory:
        """Every declared pod as it is now (addresses may have changed)."""
        ...

    def restart(self, name: str, timeout: float, progress: waiting.Progress) -> None:
        """Stop the pod and wait until it runs the current revision and answers again."""
        ...

    def ready(self, name: str) -> bool:
        """Whether what runs the pod says it serves (Kubernetes: its Ready condition)."""
        ...


def roll(
    pods: Pods,
    connect: Callable[[Inventory], Connector],
    shape: Shape,
    timeout: float,
    progress: waiting.Progress,
    accept_lost: frozenset[int] = frozenset(),
    reassigned: set[int] | None = None,
) -> list[str]:
    """Restart every stale pod, one at a time; returns their names in the order they restarted.

    ``accept_lost``: as for ``converge``, for the heals a roll runs; lost slots they reassign are added
    to ``reassigned``.

    Runs before the converge: a changed template may be what the declared
    shape needs (per-pod external access announces new addresses only after a
    restart). So "whole" means the cluster as it was when the roll began —
    as many masters owning slots, each with as many replicas — counting only
    the nodes already in it (a pod of a scale-out joins in the converge after).
    Raises BootstrapError (ConvergenceTimeout) when the time is up; the message
    names the pod the roll was at and what it waited for, and a later run
    resumes from there (only stale pods restart).
    """
    deadline = time.monotonic() + timeout
    first = pods.stale()
    if not first:
        return []
    with lease.for_run(progress):
        return _roll(pods, connect, shape, first, deadline, progress, accept_lost, reassigned)


def _roll(
    pods: Pods,
    connect: Callable[[Inventory], Connector],
    shape: Shape,
    first: list[str],
    deadline: float,
    progress: waiting.Progress,
    accept_lost: frozenset[int],
    reassigned: set[int] | None,
) -> list[str]:
    def left() -> float:
        return max(deadline - time.monotonic(), 1.0)

    found = reassigned if reassigned is not None else set()

    def heal(inventory: Inventory, connector: Connector, snap: Snapshot, why: str) -> None:
        shape_now = _heal_shape(whole, shape, snap)
        _heal(inventory, connector, shape_now, why, deadline, progress, accept_lost, found)

    total = len(first)
    progress(f"rolling {total} pod(s) to the new revision, one at a time, replicas first: {', '.join(first)}")
    inventory = pods.inventory(left())
    with connected(connect(inventory)) as connector:
        snap, down = _sure_look(pods, inventory, connector, deadline)
        # Held from here to the end of the run (the converge after the roll too, see provider.apply):
        # a second run must not move slots, or evict a pod, while a pod of this one is down.
        lease.hold_on(snap, connector, progress)
        whole = _Whole.of(snap)
        if not down and (problems := whole.problems(snap, ops.cluster_infos(snap, connector))):
            # E.g. a lost volume: its pod back empty, the old id a ghost. Healed now, the roll can go on.
            heal(inventory, connector, snap, "; ".join(problems[:3]))
            whole = _Whole.of(_sure_look(pods, inventory, connector, deadline)[0])
    done: list[str] = []
    while stale := pods.stale():
        if len(done) >= 2 * total:
            raise errors.BootstrapError(f"pods {', '.join(stale)} are still stale after {len(done)} restarts")
        inventory = pods.inventory(left())
        where = f"pod {len(done) + 1} of {total}"
        with connected(connect(inventory)) as connector:
            lease.hold_on(ops.take_snapshot(inventory, connector, tolerate_unreachable=True), connector, progress)
            step = _next(pods, inventory, connector, shape, whole, set(stale), deadline, progress, heal)
            if step.warning:
                progress(f"WARNING: {step.warning}")
            if step.heir:
                snap = ops.take_snapshot(inventory, connector)
                heir = snap.by_id[step.heir]
                master = next(m for m in snap.members if m.name == step.name)
                progress(f"{where}: {step.name} hands its slots to {heir.name} (CLUSTER FAILOVER), then restarts")
                failover.hand_over(snap, connector, master.node_id, heir.node_id, min(left(), 60.0), progress)
            else:
                progress(f"{where}: restarting {step.name}")
        started = time.monotonic()
        pods.restart(step.name, left(), progress)
        inventory = pods.inventory(left())
        with connected(connect(inventory)) as connector:
            healed = False

            def back(
                inventory: Inventory = inventory, connector: Connector = connector, started: float = started
            ) -> str | None:
                nonlocal healed
                snap, down = _look(inventory, connector)
                problems = whole.problems(snap, ops.cluster_infos(snap, connector))
                if problems and not down and not healed and time.monotonic() - started > HEAL_AFTER_S:
                    healed = True  # once per restart: what a restart leaves (a replica resyncing) passes alone
                    heal(inventory, connector, snap, "; ".join(problems[:3]))
                    return "healed"
                return "; ".join(problems[:5]) or None

            waiting.poll(
                f"rolling restart stopped after {where} ({step.name}): the cluster was not whole again", back, left()
            )
        progress(f"{where}: {step.name} is back and the cluster is whole ({time.monotonic() - started:.1f}s)")
        done.append(step.name)
    progress(f"rolled {len(done)} pod(s): {', '.join(done)}")
    return done


@dataclass(frozen=True)
class _Whole:
    """The cluster as the roll found it: every restart must leave it at least so."""

    masters: int
    replicas: int  # the fewest any master had

    @staticmethod
    def of(snap: Snapshot) -> _Whole:
        masters = [m for m in snap.members if m.is_master and m.slots]
        counts = [sum(1 for r in snap.members if r.master_id == m.node_id) for m in masters]
        return _Whole(len(masters), min(counts, default=0))

    def problems(self, snap: Snapshot, infos: dict[str, str]) -> list[str]:
        return list(rules.health(snap, infos, self.replicas, self.masters).problems)


def _look(inventory: Inventory, connector: Connector) -> tuple[Snapshot, set[str]]:
    """The cluster's members that answer, and the names of the pods that do not.

    A node that knows only itself and owns nothing (a pod of a scale-out, not
    met yet) is not part of what the roll keeps whole: the converge brings it in.
    """
    snap = ops.take_snapshot(inventory, connector, tolerate_unreachable=True)
    answering = {m.name for m in snap.members}
    down = {e.name for e in inventory.endpoints if e.name not in answering}
    joined = [m for m in snap.members if m.slots or m.master_id or len(snap.views[m.node_id]) > 1]
    ids = {m.node_id for m in joined}
    view = Snapshot(
        members=joined,
        views={i: v for i, v in snap.views.items() if i in ids},
        ghosts=snap.ghosts,
        strangers=snap.strangers,
        unreachable=snap.unreachable,
    )
    return view, down


def _next(
    pods: Pods,
    inventory: Inventory,
    connector: Connector,
    shape: Shape,
    whole: _Whole,
    stale: set[str],
    deadline: float,
    progress: waiting.Progress,
    heal: Callable[[Inventory, Connector, Snapshot, str], None],
) -> rules.Restart:
    """The next restart, once it may go: while the rule holds the roll, or the cluster is short of
    anything (the last restart not healed yet, a replica resyncing), look again until it lets go or
    the time is up; the error names the pod the roll waits to restart and why."""
    reported = 0.0
    healed = False
    while True:
        snap, down = _look(inventory, connector)
        # Down must mean down: a pod restarts without a handover only when Kubernetes agrees it serves
        # nothing, not because one look (through a tunnel, say) failed. A master taken for down would stop
        # with its slots.
        if unsure := sorted(n for n in down & stale if pods.ready(n)):
            reason = f"{', '.join(unsure)} did not answer, but Kubernetes reports them Ready: looking again"
        else:
            step = rules.next_restart(snap, stale, failover.caught_up(snap, connector), shape.replicas_per_master, down)
            if step is None:
                raise errors.BootstrapError(f"pods {', '.join(sorted(stale))} are stale but none is a cluster member")
            if isinstance(step, rules.Hold):
                reason = step.reason
            elif step.name in down or step.name not in {m.name for m in snap.members}:
                return step  # it serves nothing now: restarting it costs nothing
            elif not (problems := whole.problems(snap, ops.cluster_infos(snap, connector))):
                return step
            else:
                reason = f"{step.name} restarts once the cluster is whole: {'; '.join(problems[:3])}"
                if not healed and not down:  # the converge needs every node to answer
                    healed = True
                    heal(inventory, connector, snap, reason)
                    continue
        now = time.monotonic()
        if now > deadline:
            raise errors.ConvergenceTimeout(f"rolling restart stopped: {reason}")
        if now - reported > HOLD_REPORT_S:
            progress(f"rolling restart waits: {reason}")
            reported = now
        time.sleep(0.2)


def _heal_shape(whole: _Whole, declared: Shape, snap: Snapshot) -> Shape:
    """As many masters as own slots now, or as the roll found, whichever is more: a heal moves no slot (a
    scale-out waits for the converge after the roll); replicas as declared."""
    stale = {c.stale.node_id for c in rules.double_claims(snap)}  # a node back with old slots is no master
    owning = sum(1 for m in snap.members if m.is_master and m.slots and m.node_id not in stale)
    owning += len(rules.losses(snap))
    return Shape(max(whole.masters, owning) or declared.masters, declared.replicas_per_master)


def _sure_look(pods: Pods, inventory: Inventory, connector: Connector, deadline: float) -> tuple[Snapshot, set[str]]:
    """``_look``, again while a pod that did not answer is one Kubernetes reports Ready: the roll's picture
    of the whole cluster must not be taken while one of its masters merely looked silent."""
    while True:
        snap, down = _look(inventory, connector)
        unsure = sorted(n for n in down if pods.ready(n))
        if not unsure:
            return snap, down
        if time.monotonic() > deadline:
            raise errors.ConvergenceTimeout(
                f"rolling restart stopped: {', '.join(unsure)} did not answer, but Kubernetes reports them Ready"
            )
        time.sleep(0.2)


def _heal(
    inventory: Inventory,
    connector: Connector,
    shape: Shape,
    reason: str,
    deadline: float,
    progress: waiting.Progress,
    accept_lost: frozenset[int],
    reassigned: set[int],
) -> None:
    """Mend what keeps the cluster from being whole before the next restart, as the converge after the
    roll would: a ghost left by a lost volume, a missing replica, an heir to promote, a slot left open.

    Without it a roll that met such a fault waited out its timeout, and since the converge runs only
    after the roll, every later `pulumi up` failed the same way: the fault could not be healed without
    reverting the template change. The shape is the one the roll found (a scale-out waits for the
    converge after it). A loss only a person may accept stops the roll with its own message (and with
    the consent, ``accept_lost``, it is healed like the rest); anything else that fails here is said,
    and the roll waits as before.
    """
    progress(f"rolling restart: healing first ({reason})")
    try:
        outcome = converge(
            inventory, connector, shape, max(deadline - time.monotonic(), 1.0), progress, accept_lost=accept_lost
        )
    except errors.DataLossRefused:
        raise
    except (errors.BootstrapError, PlanError) as exc:
        progress(f"rolling restart: could not heal ({exc}); waiting for the cluster to be whole")
        return
    reassigned.update(*(step.lost_slots for step in outcome.plans))
