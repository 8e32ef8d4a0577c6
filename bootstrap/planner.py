"""The pure planner: from what the cluster is to what has to happen. No I/O.

The planner simulates its own steps (failovers change who owns slots, drains
empty masters) so that a single plan takes any reachable state to the declared
shape. The executor re-plans after executing, so a plan only has to be right,
not final: a converged cluster always plans to nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from bootstrap.errors import PlanError
from bootstrap.model import SLOTS, Member, Plan, Shape, SlotMove


@dataclass
class _Node:
    """The planner's mutable copy of a member while it simulates the plan."""

    member: Member
    slots: set[int]
    master_id: str | None
    is_master: bool

    @property
    def id(self) -> str:
        return self.member.node_id

    @property
    def domain(self) -> str:
        return self.member.domain


@dataclass
class _Draft:
    failovers: list[str] = field(default_factory=list)
    detach: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def plan(
    members: Sequence[Member],
    shape: Shape,
    ghosts: Mapping[str, frozenset[int]] | None = None,
) -> Plan:
    """Plan the way from ``members`` (+ ``ghosts``: unreachable ids -> slots they hold) to ``shape``.

    Raises PlanError when the shape cannot be reached at all (too few nodes);
    everything reachable is planned even when a part of the shape cannot be.
    """
    ghosts = dict(ghosts or {})
    if shape.masters < 1 or shape.replicas_per_master < 0:
        raise PlanError(f"invalid shape {shape}")
    members = sorted(members, key=lambda m: (m.order, m.name))
    if len({m.node_id for m in members}) != len(members):
        raise PlanError("two endpoints report the same node id")
    keep = [m for m in members if not m.retire]
    if len(keep) < shape.masters:
        raise PlanError(
            f"{shape.masters} masters need at least {shape.masters} nodes; "
            f"only {len(keep)} are available ({', '.join(m.name for m in keep) or 'none'})"
        )

    nodes = {m.node_id: _Node(m, set(m.slots), m.master_id, m.is_master) for m in members}
    draft = _Draft()

    lost = _promote_replicas_of_ghosts(nodes, ghosts, draft)
    owned: set[int] = set().union(*(n.slots for n in nodes.values()))
    _fail_over_retiring_masters(nodes, draft)
    masters = _choose_masters(nodes, shape, draft)
    assign, moves = _balance_slots(nodes, masters, set(range(SLOTS)) - owned)
    replicate = _assign_replicas(nodes, masters, shape, draft)

    claimed: set[int] = set().union(*(n.slots for n in nodes.values()))
    if len(claimed) != SLOTS:  # pragma: no cover - an invariant of _balance_slots
        raise PlanError(f"internal: plan covers {len(claimed)} of {SLOTS} slots")
    return Plan(
        forget=tuple(sorted(ghosts)),
        failovers=tuple(draft.failovers),
        detach=tuple(draft.detach),
        assign=tuple(assign),
        moves=tuple(moves),
        replicate=tuple(replicate),
        remove=tuple(m.node_id for m in members if m.retire),
        masters=tuple(n.id for n in masters),
        lost_slots=tuple(sorted(lost)),
        problems=tuple(draft.problems),
    )


def _promote_replicas_of_ghosts(
    nodes: dict[str, _Node], ghosts: Mapping[str, frozenset[int]], draft: _Draft
) -> set[int]:
    """A vanished master's slots go to its best live replica; without one they are lost (returned)."""
    owned = set().union(*(n.slots for n in nodes.values())) if nodes else set()
    lost: set[int] = set()
    for ghost_id, ghost_slots in sorted(ghosts.items()):
        slots = set(ghost_slots) - owned
        if not slots:
            continue
        heirs = [n for n in nodes.values() if not n.is_master and n.master_id == ghost_id]
        heirs.sort(key=lambda n: (n.member.retire, n.member.order))
        if heirs:
            _promote(nodes, heirs[0], slots, ghost_id)
            draft.failovers.append(heirs[0].id)
            owned |= slots
        else:
            lost |= slots
    return lost


def _promote(nodes: dict[str, _Node], heir: _Node, slots: set[int], old_master: str) -> None:
    heir.is_master, heir.master_id = True, None
    heir.slots |= slots
    for n in nodes.values():
        if n.master_id == old_master and n is not heir:
            n.master_id = heir.id  # siblings follow the promoted replica, as Redis does
    if old_master in nodes:
        old = nodes[old_master]
        old.slots.clear()
        old.is_master, old.master_id = False, heir.id


def _fail_over_retiring_masters(nodes: dict[str, _Node], draft: _Draft) -> None:
    """A retiring master with a staying replica hands over by failover: no key has to move."""
    for node in list(nodes.values()):
        if not (node.member.retire and node.is_master and node.slots):
            continue
        heirs = [n for n in nodes.values() if not n.is_master and n.master_id == node.id and not n.member.retire]
        if heirs:
            heir = min(heirs, key=lambda n: n.member.order)
            _promote(nodes, heir, set(node.slots), node.id)
            draft.failovers.append(heir.id)


def _choose_masters(nodes: dict[str, _Node], shape: Shape, draft: _Draft) -> list[_Node]:
    """Keep the masters that own the most slots; add empty nodes on the least used domains."""
    owners = [n for n in nodes.values() if n.is_master and n.slots and not n.member.retire]
    owners.sort(key=lambda n: (-len(n.slots), n.member.order))
    masters = owners[: shape.masters]
    if len(masters) < shape.masters:
        chosen = {n.id for n in masters}
        spare = [n for n in nodes.values() if n.id not in chosen and not n.member.retire and not n.slots]
        while len(masters) < shape.masters and spare:
            used = [m.domain for m in masters]
            # Empty masters first (no replica link to break), then least used domain, then order.
            best = min(spare, key=lambda n: (not n.is_master, used.count(n.domain), n.member.order))
            spare.remove(best)
            if not best.is_master:
                draft.detach.append(best.id)
                best.is_master, best.master_id = True, None
            masters.append(best)
    if len(masters) < shape.masters:  # pragma: no cover - guarded by the keep-count check
        raise PlanError(f"only {len(masters)} nodes can be masters, {shape.masters} are declared")
    return masters


def _balance_slots(
    nodes: dict[str, _Node], masters: list[_Node], unowned: set[int]
) -> tuple[list[tuple[str, tuple[int, ...]]], list[SlotMove]]:
    """Give every master its share (16384 / M, within one) moving the fewest slots possible.

    Masters that already hold the most slots get the larger shares, donors give
    their highest slots (so ranges stay contiguous) and every slot moves at most once.
    """
    chosen = {n.id for n in masters}
    base, extra = divmod(SLOTS, len(masters))
    by_size = sorted(masters, key=lambda n: (-len(n.slots), n.member.order))
    target = {n.id: base + (1 if i < extra else 0) for i, n in enumerate(by_size)}

    # Donations, in the order they are handed out: unowned slots (ADDSLOTS, no keys to move),
    # then everything a non-master still owns, then each master's surplus from its top end.
    pool: list[tuple[str | None, int]] = [(None, s) for s in sorted(unowned)]
    for n in sorted(nodes.values(), key=lambda n: n.member.order):
        if n.id not in chosen and n.slots:
            pool += [(n.id, s) for s in sorted(n.slots)]
    for n in by_size:
        surplus = len(n.slots) - target[n.id]
        if surplus > 0:
            pool += [(n.id, s) for s in sorted(n.slots)[-surplus:]]

    assign: dict[str, list[int]] = {}
    moves: dict[tuple[str, str], list[int]] = {}
    receivers = sorted(masters, key=lambda n: n.member.order)
    cursor = 0
    for r in receivers:
        need = target[r.id] - len(r.slots)
        take, cursor = pool[cursor : cursor + max(need, 0)], cursor + max(need, 0)
        for source, slot in take:
            if source is None:
                assign.setdefault(r.id, []).append(slot)
            else:
                moves.setdefault((source, r.id), []).append(slot)
                nodes[source].slots.discard(slot)
            r.slots.add(slot)
    return (
        [(k, tuple(v)) for k, v in assign.items()],
        [SlotMove(source=s, target=t, slots=tuple(v)) for (s, t), v in moves.items()],
    )


def _assign_replicas(
    nodes: dict[str, _Node], masters: list[_Node], shape: Shape, draft: _Draft
) -> list[tuple[str, str]]:
    """Pair every master with its replicas, never on the master's failure domain when avoidable.

    A maximum bipartite matching over the cross-domain pairs (Kuhn's augmenting
    paths, started from the existing links so they are kept where possible)
    guarantees the most cross-domain pairs; only then are same-domain pairs used.
    """
    master_ids = [m.id for m in masters]
    chosen = set(master_ids)
    pool = sorted(
        (n for n in nodes.values() if n.id not in chosen and not n.member.retire),
        key=lambda n: n.member.order,
    )
    domain = {n.id: n.domain for n in nodes.values()}

    def apart(replica: _Node, master_id: str) -> bool:
        return not replica.domain or not domain[master_id] or replica.domain != domain[master_id]

    # Each master has R seats; a seat is (master id, k). match: seat -> replica id.
    seats = [(mid, k) for mid in master_ids for k in range(shape.replicas_per_master)]
    match: dict[tuple[str, int], str] = {}
    owner: dict[str, tuple[str, int]] = {}
    for n in pool:  # seed with the current links that are allowed
        if n.master_id in chosen and apart(n, n.master_id):
            open_seat = next((s for s in seats if s[0] == n.master_id and s not in match), None)
            if open_seat:
                match[open_seat], owner[n.id] = n.id, open_seat

    def augment(replica: _Node, seen: set[tuple[str, int]]) -> bool:
        # A free seat first (its own master's, then the emptiest), displacing others only when needed:
        # that keeps every existing link that can stay.
        def preference(seat: tuple[str, int]) -> tuple[bool, bool, int, int]:
            taken = sum(1 for s in match if s[0] == seat[0])
            return (seat in match, seat[0] != replica.master_id, taken, seat[1])

        for seat in sorted(seats, key=preference):
            if seat in seen or not apart(replica, seat[0]):
                continue
            seen.add(seat)
            if seat not in match or augment(nodes[match[seat]], seen):
                if replica.id in owner:
                    del match[owner[replica.id]]
                match[seat], owner[replica.id] = replica.id, seat
                return True
        return False

    for n in pool:
        if n.id not in owner:
            augment(n, set())
    # Seats no cross-domain node can fill: same-domain nodes. Every existing link is kept before any
    # seat takes a free node: filled seat by seat, the first master without a replica took the lowest
    # ordinal, which was another master's replica, and every replica after it moved on (each a full resync).
    for keep_link in (True, False):
        for seat in seats:
            free = [n for n in pool if n.id not in owner and (n.master_id == seat[0] or not keep_link)]
            if seat not in match and free:
                best = min(free, key=lambda n: n.member.order)
                match[seat], owner[best.id] = best.id, seat
    # Spare nodes beyond the shape still replicate something: the master with fewest replicas.
    for n in pool:
        if n.id not in owner:
            counts = {mid: sum(1 for s in owner.values() if s[0] == mid) for mid in master_ids}
            mid = n.master_id if n.master_id in chosen else min(master_ids, key=lambda m: counts[m])
            owner[n.id] = (mid, -1)

    missing = len(seats) - len(match)
    if missing:
        draft.problems.append(
            f"{missing} replica(s) missing: {shape.masters} masters x {shape.replicas_per_master} replicas "
            f"need {shape.nodes} nodes, {len(pool) + len(masters)} are available"
        )
    changes: list[tuple[str, str]] = []
    for n in pool:
        mid = owner[n.id][0]
        if n.is_master or n.master_id != mid:
            changes.append((n.id, mid))
        n.is_master, n.master_id = False, mid
    return changes
