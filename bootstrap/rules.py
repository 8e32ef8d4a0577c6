"""The rules the operations follow: pure functions of a snapshot, no I/O.

``planner`` decides the shape (who owns which slots, who replicates whom);
these decide the rest from what the nodes report: who is gone and who is
foreign, whether it is safe to touch them, who must MEET whom and in which
direction, who must announce its slots, how open slots pair up after a fault,
which pod a rolling restart takes next, and when a cluster is healthy. ``operations`` and ``migration`` carry them out.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from bootstrap.model import SLOTS, Member, NodeLine, Snapshot, format_ranges

# --- who is who ---------------------------------------------------------------


def unserved(
    members: Sequence[Member], views: Mapping[str, Sequence[NodeLine]]
) -> tuple[dict[str, frozenset[int]], dict[str, str]]:
    """(ghosts, strangers): ids in some view that no member is. Ghosts are gone (flagged failed by
    someone: id -> the slots they still claim that no member does); strangers look alive (id -> address)."""
    ours = set(views)
    owned = owned_by(members)
    ghosts: dict[str, frozenset[int]] = {}
    strangers: dict[str, str] = {}
    for lines in views.values():
        for line in lines:
            if line.node_id in ours or line.in_handshake:
                continue  # a handshake entry carries a random id until the peer answers
            if line.failed:
                ghosts[line.node_id] = ghosts.get(line.node_id, frozenset()) | (line.slots - owned)
            else:
                strangers[line.node_id] = line.address
    for node_id in ghosts:
        strangers.pop(node_id, None)  # failed in someone's view: gone, not foreign
    return ghosts, strangers


def owned_by(members: Iterable[Member]) -> frozenset[int]:
    return frozenset().union(*(m.slots for m in members))


def taken_addresses(snap: Snapshot) -> set[str]:
    """Addresses members answer at: another id listed there is gone (a node that came back empty)."""
    return {m.seen_as for m in snap.members} | {m.address for m in snap.members}


def bury(snap: Snapshot, node_ids: Iterable[str]) -> None:
    """Turn these strangers into ghosts, with the slots views still give them that no member holds."""
    owned = owned_by(snap.members)
    for node_id in node_ids:
        del snap.strangers[node_id]
        slots = {s for lines in snap.views.values() for ln in lines if ln.node_id == node_id for s in ln.slots}
        snap.ghosts[node_id] = frozenset(slots - owned)


def unsafe(snap: Snapshot) -> list[str]:
    """Why nodes must not be touched: data or membership that is not ours to change."""
    problems: list[str] = []
    loners = {m.node_id for m in snap.members if m.is_master and m.keys and len(snap.views[m.node_id]) == 1}
    for m in snap.members:
        if m.node_id in loners and len(snap.members) > 1:
            # E.g. its nodes.conf was lost but its AOF kept: Redis then even claims the slots of its keys.
            problems.append(
                f"{m.name} ({m.address}) holds {m.keys} keys but is in no cluster: refusing to join it, "
                f"which would drop its data (restore its nodes.conf, or empty it after checking its keys)"
            )
    for node_id, address in snap.strangers.items():
        seen_by = [m.name for m in snap.members if any(ln.node_id == node_id for ln in snap.views[m.node_id])]
        problems.append(
            f"node {node_id[:8]} at {address or 'no address'} is a live member of the cluster that "
            f"{', '.join(seen_by)} belong(s) to, but is not part of this deployment: refusing to "
            f"change a cluster shared with nodes we do not manage"
        )
    claims = double_claims(snap)
    for c in claims:
        if not c.safe_to_fold:
            problems.append(
                f"{c.stale.name} ({c.stale.address}, config epoch {c.stale_epoch}) claims slots "
                f"{format_ranges(c.slots)} that {c.current.name} ({c.current.address}, epoch {c.current_epoch}) "
                f"serves for the rest of the cluster: once they meet, Redis gives the slots to the higher epoch and "
                f"drops the other's keys in them. Refusing: check both nodes' keys, then empty the one to give up "
                f"(FLUSHALL, CLUSTER RESET HARD) or raise {c.current.name}'s epoch (CLUSTER BUMPEPOCH) and run again"
            )
    paired = {frozenset((c.stale.node_id, c.current.node_id)) for c in claims}

    def knows(a: Member, b: Member) -> bool:
        return any(line.node_id == b.node_id for line in snap.views[a.node_id])

    # Two groups that each own slots and do not know each other are two clusters.
    owners = [m for m in snap.members if m.slots and m.node_id not in loners]
    for i, a in enumerate(owners):
        for b in owners[i + 1 :]:
            if frozenset((a.node_id, b.node_id)) in paired:
                continue  # one came back after its slots were reassigned: said above, or folded in
            if not knows(a, b) and not knows(b, a):  # a forgotten node that returns still knows the others
                problems.append(
                    f"{a.name} and {b.name} both own slots but do not know each other: they belong to "
                    f"different clusters; refusing to merge them"
                )
    return problems


# --- what is gone ---------------------------------------------------------------


@dataclass(frozen=True)
class Loss:
    """A gone master's slots that no live member serves, and the live replicas that could take them."""

    owner: str  # the gone master's node id
    address: str  # where the views last saw it
    slots: frozenset[int]
    heirs: tuple[str, ...]  # live replica ids; none: every copy of these slots is gone


def losses(snap: Snapshot) -> list[Loss]:
    """Every gone master that still owns slots nobody alive claims (as the planner counts them)."""
    out = []
    for ghost, slots in sorted(snap.ghosts.items()):
        if not slots:
            continue
        heirs = tuple(m.node_id for m in sorted(snap.members, key=lambda m: m.order) if m.master_id == ghost)
        address = next((ln.address for lines in snap.views.values() for ln in lines if ln.node_id == ghost), "")
        out.append(Loss(ghost, address, slots, heirs))
    return out


def lost_slots(snap: Snapshot) -> frozenset[int]:
    """Slots whose every copy is gone: reassigning them is a decision only a person makes."""
    return frozenset().union(*(loss.slots for loss in losses(snap) if not loss.heirs))


def quorum(snap: Snapshot) -> tuple[int, int]:
    """(masters that can vote, masters Redis counts): Redis counts every master that owns slots, the gone
    ones too, and an election needs (counted // 2) + 1 votes."""
    alive = sum(1 for m in snap.members if m.is_master and m.slots)
    return alive, alive + len(losses(snap))


def quorum_lost(snap: Snapshot) -> bool:
    """No failover can be elected: too few masters answer. Only TAKEOVER (no vote) promotes a replica then."""
    alive, counted = quorum(snap)
    return alive < counted // 2 + 1


def estimated_keys(snap: Snapshot, slots: Collection[int]) -> int:
    """Keys ``slots`` likely held: the live masters' keys per slot (the gone ones cannot be asked)."""
    owners = [m for m in snap.members if m.is_master and m.slots]
    owned = sum(len(m.slots) for m in owners)
    return round(sum(m.keys for m in owners) * len(slots) / owned) if owned else 0


def describe_lost(snap: Snapshot, slots: Collection[int]) -> str:
    """What is lost, whose it was, and how many keys it likely held; for errors, `check` and the refresh."""
    chosen = set(slots)
    gone = [f"{loss.owner[:8]} ({loss.address or 'no address'})" for loss in losses(snap) if loss.slots & chosen]
    return (
        f"slots {format_ranges(chosen)} ({len(chosen)} slots, about {estimated_keys(snap, chosen):,} keys by the "
        f"live masters' keys per slot) have no live copy: master(s) {', '.join(gone)} and every replica are gone"
    )


def loss_report(snap: Snapshot) -> list[str]:
    """What `check` and the refresh say about gone masters: a lost quorum, slots with no copy left."""
    found = losses(snap)
    if not found:
        return []
    out = []
    alive, counted = quorum(snap)
    unserved = sum(len(loss.slots) for loss in found)
    heirs = [loss for loss in found if loss.heirs]
    if quorum_lost(snap):
        out.append(
            f"{counted - alive} of {counted} masters are gone: no failover can be elected; {unserved} slots unserved"
            + ("; `apply` promotes their replicas" if heirs else "")
        )
    elif heirs:
        waiting = sum(len(loss.slots) for loss in heirs)
        out.append(f"{waiting} slots of gone masters are unserved until a replica is promoted")
    if lost := lost_slots(snap):
        out.append(
            f"{describe_lost(snap, lost)}; `apply` reassigns them empty only when told to "
            f"(--accept-lost-slots {format_ranges(lost)})"
        )
    return out


@dataclass(frozen=True)
class DoubleClaim:
    """Two live masters that each claim slots as their own: one came back after its slots were reassigned."""

    stale: Member  # the claim Redis would drop (lower config epoch)
    current: Member
    slots: frozenset[int]
    stale_epoch: int
    current_epoch: int

    @property
    def safe_to_fold(self) -> bool:
        """The stale claimant is the one the rest of the cluster does not count as the owner."""
        return self.stale_epoch < self.current_epoch


def double_claims(snap: Snapshot) -> list[DoubleClaim]:
    """Slots two live members of one cluster (they know some node in common) claim in their own views.

    The current claim is the one the other members' views give the slots to
    (the cluster's), the stale one the other; when the views do not decide, the
    higher config epoch, as Redis decides when the two meet.
    """

    def known(m: Member) -> set[str]:
        return {ln.node_id for ln in snap.views[m.node_id] if not ln.is_myself}

    def epoch(m: Member) -> int:
        return next(ln.config_epoch for ln in snap.views[m.node_id] if ln.is_myself)

    # Views are read only for claimants whose slots overlap: none in a healthy cluster, and this runs on
    # every look of the waits (``meetings``, ``health``).
    claimants = [m for m in snap.members if m.is_master and m.slots]
    out = []
    for i, a in enumerate(claimants):
        for b in claimants[i + 1 :]:
            both = a.slots & b.slots
            if not both or not (known(a) & known(b)):
                continue  # no acquaintance in common: two different clusters (``unsafe`` refuses them)
            slot = min(both)
            votes = {a.node_id: 0, b.node_id: 0}
            for x in snap.members:
                if x.node_id in votes:
                    continue
                owner = next((ln.node_id for ln in snap.views[x.node_id] if ln.is_master and slot in ln.slots), None)
                if owner in votes:
                    votes[owner] += 1
            current, stale = (a, b) if (votes[a.node_id], epoch(a)) > (votes[b.node_id], epoch(b)) else (b, a)
            out.append(DoubleClaim(stale, current, frozenset(both), epoch(stale), epoch(current)))
    return out


# --- reaching the shape -----------------------------------------------------


def meshed(snap: Snapshot) -> list[str]:
    """What keeps the members from all seeing each other, connected, at their current address."""
    names = snap.names()
    gaps = []
    for m in snap.members:
        seen = {line.node_id: line for line in snap.views[m.node_id]}
        for o in snap.members:
            line = seen.get(o.node_id)
            if o.node_id == m.node_id:
                continue
            if line is None or line.address != o.seen_as or line.in_handshake or line.failed:
                gaps.append(f"{m.name} does not see {names[o.node_id]} at {o.seen_as}")
    return gaps


def is_fresh(snap: Snapshot) -> bool:
    return all(len(snap.views[m.node_id]) == 1 and not m.slots for m in snap.members)


# --- gossip: who meets whom -----------------------------------------------------


def meetings(snap: Snapshot, owners: Iterable[str] = ()) -> list[tuple[Member, list[Member]]]:
    """(sender, receivers) for every MEET needed so that members see each other at their current address.

    Direction matters: a MEET makes the receiver ping back, and that ping is
    what tells the sender the receiver's slots (the receiver learns only that
    the sender exists; its slots and role follow with the sender's next
    regular ping, up to cluster-node-timeout / 2 later). So every node meets
    every slot owner (``owners``, plus members that own slots already), and
    of two strangers that will own none only one meets the other: at 50x1
    that is 6,175 handshakes instead of 9,900.
    """
    owner_ids = set(owners) | {m.node_id for m in snap.members if m.slots}
    # Never introduce a returning node to an owner it would win slots from (``unsafe`` refuses those runs;
    # the waits that mesh again must not do it either).
    apart = {frozenset((c.stale.node_id, c.current.node_id)) for c in double_claims(snap) if not c.safe_to_fold}
    jobs: list[tuple[Member, list[Member]]] = []
    known = {m.node_id: {line.node_id: line for line in snap.views[m.node_id]} for m in snap.members}
    for m in snap.members:
        seen = known[m.node_id]
        todo = []
        for o in snap.members:
            if o.node_id == m.node_id or frozenset((m.node_id, o.node_id)) in apart:
                continue
            line = seen.get(o.node_id)
            if line is None:
                if not (o.node_id in owner_ids or m.node_id in known[o.node_id]) and (
                    m.node_id in owner_ids or (o.order, o.node_id) < (m.order, m.node_id)
                ):
                    continue  # o meets m: m learns that o exists, which is all a non-owner needs
                todo.append(o)
            elif line.address != o.seen_as or line.failed or line.in_handshake:
                todo.append(o)
        if todo:
            jobs.append((m, todo))
    return jobs


# A replica's role reaches the others with its own next regular ping, up to cluster-node-timeout / 2
# later (7.5 s at the default): in a small cluster it tells them at once. Not in big ones: at 50x1,
# pushing roles to 100 nodes doubled the handshake work and fed on itself (bench/NOTES.md).
ROLE_ANNOUNCE_MAX_NODES = 20


def announcements(snap: Snapshot) -> dict[str, list[Member]]:
    """Node id -> the members whose view of its slots (or, in clusters of up to ROLE_ANNOUNCE_MAX_NODES,
    of its role as a replica) is behind (see ``operations.announce``)."""
    roles_too = len(snap.members) <= ROLE_ANNOUNCE_MAX_NODES
    jobs: dict[str, list[Member]] = {}
    for x in snap.members:
        seen = {line.node_id: line for line in snap.views[x.node_id]}
        for o in snap.members:
            line = seen.get(o.node_id)
            if o is x or line is None or line.in_handshake or line.failed:
                continue
            if (o.slots and line.slots != o.slots) or (roles_too and o.master_id and line.master_id != o.master_id):
                jobs.setdefault(o.node_id, []).append(x)
    return jobs


def role_swaps(snap: Snapshot, targets: Iterable[str], pairs: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """(new master, its new replica) pairs that can skip Redis' rejoin delay (see ``failover.serve_at_once``).

    Both must be slotless: the slots come later, by migration, and a master
    serving slots already has nothing to gain (a fresh formation's masters own
    slots but no key: ``formation_swaps``). One replica per master (the first
    listed): two swaps of one master at once would race for its role.
    """
    by_id, wanted = snap.by_id, set(targets)
    chosen: dict[str, str] = {}
    for replica, master in pairs:
        m, r = by_id.get(master), by_id.get(replica)
        if master in wanted and m and r and not m.slots and not r.slots and master not in chosen:
            chosen[master] = replica
    return list(chosen.items())


def formation_swaps(snap: Snapshot) -> list[tuple[str, str]]:
    """(master, replica) pairs of a fresh formation for ``failover.serve_at_once``: every master with
    slots and no key, with its first replica (by order) that owns no slot and holds no key.

    None above ROLE_ANNOUNCE_MAX_NODES: there roles reach the other nodes by gossip only, and each swap
    changes two roles twice; measured at 50x1 (node timeout 15 s), every node saw every replica 52-88 s
    after the start with the swaps against 50 s without, and the tool polled 100 views for 15 s.
    """
    if len(snap.members) > ROLE_ANNOUNCE_MAX_NODES:
        return []
    by_id = snap.by_id
    chosen: dict[str, str] = {}
    for r in sorted(snap.members, key=lambda x: x.order):
        m = by_id.get(r.master_id or "")
        if m and m.slots and not m.keys and not r.slots and not r.keys and m.node_id not in chosen:
            chosen[m.node_id] = r.node_id
    return list(chosen.items())


def failover_mode(snap: Snapshot, replica: Member) -> tuple[str, ...]:
    """CLUSTER FAILOVER's option: none with the master alive, FORCE when it is gone, TAKEOVER when it is
    gone and owned no slots (Redis holds no election for a replica of such a master, e.g. a migration
    target that died before its first slot closed) or when too few masters answer to elect anyone
    (``quorum_lost``: waiting for a FORCE that cannot be granted only spent the run's time)."""
    if replica.master_id in snap.by_id:
        return ()
    if not snap.ghosts.get(replica.master_id or "") or quorum_lost(snap):
        return ("TAKEOVER",)
    return ("FORCE",)


# --- open slots after a fault ---------------------------------------------------


@dataclass
class Repair:
    """How to finish the slots left open, decided from one snapshot (see ``migration.repair_open_slots``)."""

    finish: dict[tuple[str, str], list[int]] = field(default_factory=dict)  # (source, target) -> slots
    stale: dict[int, str] = field(default_factory=dict)  # slot -> owner the importing target must be told
    promote: set[str] = field(default_factory=set)  # replicas of gone targets, promoted first
    close: dict[str, list[int]] = field(default_factory=dict)  # master -> slots whose marks just go
    probe: dict[int, str] = field(default_factory=dict)  # slot -> owner; its gone target's heir: ask the nodes
    waiting: list[int] = field(default_factory=list)  # slots whose owner is gone: after the plan's failover

    @property
    def slots(self) -> list[int]:
        out = [s for slots in self.finish.values() for s in slots]
        out += [s for slots in self.close.values() for s in slots]
        return sorted({*out, *self.probe, *self.waiting})


def pair_open_slots(snap: Snapshot) -> Repair:
    """Pair every open slot by what is true now, not by the ids its marks recorded.

    The source is the slot's current owner (after a failover, the old
    source's replica: it holds the keys not moved yet but has no MIGRATING
    mark). The target is the master that has the slot IMPORTING, else the
    MIGRATING mark's target, else, when that target is gone, its heir: its
    replica (to be promoted), or, when Redis promoted one already, whichever
    master holds keys of the slot (``probe``: only the nodes can tell).
    A slot whose owner is gone waits for the planner to promote the owner's
    replica; the next round pairs it.
    """
    by_id = snap.by_id
    masters = {m.node_id for m in snap.members if m.is_master}
    migrating: dict[int, str] = {}
    importing: dict[int, str] = {}
    imported_from: dict[int, str] = {}
    marked: dict[int, list[str]] = {}
    for member, out, into in snap.open_slots():
        if member.node_id not in masters:
            continue  # a replica's copy of the marks (Valkey 8 replicates them) is not a move
        migrating.update(out)
        importing.update(dict.fromkeys(into, member.node_id))
        imported_from.update(into)
        for slot in [*out, *into]:
            marked.setdefault(slot, []).append(member.node_id)
    owner = slot_owners(snap)
    repair = Repair()
    for slot in sorted(set(migrating) | set(importing)):
        src = owner.get(slot)
        if src is not None and src not in by_id:
            repair.waiting.append(slot)
            continue
        dst = importing.get(slot)
        if dst is None or dst == src:
            target = migrating.get(slot)
            dst = None
            if target in by_id:
                dst = target if by_id[target].is_master else None
            elif target is not None:
                heirs = sorted((m for m in snap.members if m.master_id == target), key=lambda m: m.order)
                if heirs:
                    dst = heirs[0].node_id
                    repair.promote.add(dst)
                elif src is not None:
                    repair.probe[slot] = src
                    continue
        if src is None or dst is None or dst == src:
            for node_id in marked[slot]:  # no live node took part of its keys: close what marks are left
                repair.close.setdefault(node_id, []).append(slot)
            continue
        repair.finish.setdefault((src, dst), []).append(slot)
        if imported_from.get(slot, src) != src:
            # Redis never rebinds a slot it imports: after the source's failover the target still sees the
            # dead source own it, so it stays down (CLUSTERDOWN) until told the current owner.
            repair.stale[slot] = src
    return repair


def slot_owners(snap: Snapshot) -> dict[int, str]:
    """Who owns each slot now: a member's own claim first, else what views say of the gone ones."""
    owner = {s: m.node_id for m in snap.members if m.is_master for s in m.slots}
    by_id = snap.by_id
    for lines in snap.views.values():
        for ln in lines:
            if ln.is_master and ln.node_id not in by_id:
                for s in ln.slots:
                    owner.setdefault(s, ln.node_id)
    return owner


def one_direction_at_a_time(pairs: Iterable[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    """Batches of (source, target) pairs to run one after the other, none holding both A -> B and B -> A
    (two MIGRATE streams in opposite directions block each other's node for the MIGRATE timeout)."""
    pairs = list(pairs)
    first = [p for p in pairs if p[::-1] not in pairs or p < p[::-1]]
    rest = [p for p in pairs if p not in first]
    return [batch for batch in (first, rest) if batch]


# --- rolling restarts -------------------------------------------------------------


@dataclass(frozen=True)
class Restart:
    """The pod a roll restarts next; ``heir``: the replica a master hands its slots to first."""

    name: str
    heir: str | None = None  # replica node id: CLUSTER FAILOVER on it before the master stops
    warning: str = ""  # why this restart costs availability anyway


@dataclass(frozen=True)
class Hold:
    """Nothing may restart right now; the reason names the pod and what it waits for."""

    reason: str


def next_restart(
    snap: Snapshot,
    stale: Collection[str],
    caught_up: Collection[str],
    declared_replicas: int,
    down: Collection[str] = (),
) -> Restart | Hold | None:
    """Which stale pod restarts next, or why none may; None when no pod is stale.

    The order is what keeps every slot served: a stale pod that does not
    answer first (restarting it costs nothing, and it may be waiting for
    exactly this fix), then replicas and slotless masters, then masters, each
    only after handing its slots to a replica that has caught up
    (``caught_up``: replica ids whose link is up with their master's offset).
    Rolled replicas are preferred as heirs: they will not restart again. A
    master whose shard declares no replica restarts as it is (its slots are
    down until it is back: the warning says so); one whose replicas lag holds
    the roll until they catch up.
    """
    by_name = {m.name: m for m in snap.members}
    order = {m.name: m.order for m in snap.members}
    pending = sorted(stale, key=lambda n: (order.get(n, 1 << 30), n))
    if not pending:
        return None
    for name in pending:
        if name in down or name not in by_name:
            return Restart(name)
    for name in pending:
        m = by_name[name]
        if m.master_id or not m.slots:
            return Restart(name)
    m = by_name[pending[0]]
    replicas = sorted(
        (r for r in snap.members if r.master_id == m.node_id), key=lambda r: (r.name in stale, r.order, r.name)
    )
    heirs = [r for r in replicas if r.node_id in caught_up]
    if heirs:
        return Restart(m.name, heir=heirs[0].node_id)
    if not replicas and declared_replicas == 0:
        slots = format_ranges(m.slots)
        return Restart(m.name, warning=f"{m.name} has no replica (0 declared): slots {slots} are down until it is back")
    if not replicas:
        return Hold(f"master {m.name} has no replica to hand its slots to; {declared_replicas} declared")
    lagging = ", ".join(r.name for r in replicas)
    return Hold(f"master {m.name} waits for its replica(s) {lagging} to catch up before it hands its slots over")


# --- the verdict ------------------------------------------------------------------


@dataclass(frozen=True)
class Health:
    """What a converged cluster looks like from every node, and what is off when it is not."""

    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def health(
    snap: Snapshot,
    infos: dict[str, str],
    expect_replicas: int | None = None,
    expect_masters: int | None = None,
) -> Health:
    """Judge a snapshot: one slot map everywhere, everyone knows everyone, state ok, replicas
    synced, shape right.

    A replica's role counts as it sees it itself, with its link up; that every other node has
    heard of it is not required. Redis tells the others with the replica's next regular ping
    (within cluster-node-timeout / 2), long before a failover could need their votes (after
    cluster-node-timeout); pushing it to every node at once (a MEET per view) doubled the
    handshake load of a 100-node formation and, repeated while the nodes were busy, fed on itself.
    """
    problems: list[str] = [*snap.unreachable, *loss_report(snap)]
    problems += [
        f"{c.stale.name} came back claiming slots {format_ranges(c.slots)} that {c.current.name} serves"
        for c in double_claims(snap)
    ]
    ids = {m.node_id for m in snap.members}
    names = snap.names()
    reference: dict[int, str] | None = None
    for m in snap.members:
        lines = snap.views[m.node_id]
        known = {ln.node_id for ln in lines}
        if missing := ids - known:
            problems.append(f"{m.name} does not know {', '.join(names[i] for i in sorted(missing))}")
        if extra := known - ids:
            problems.append(f"{m.name} still lists {len(extra)} node(s) not in the deployment")
        for ln in lines:
            if ln.node_id in ids and not ln.is_myself and (ln.failed or ln.in_handshake):
                problems.append(f"{m.name} sees {names[ln.node_id]} as {','.join(sorted(ln.flags))}")
            if ln.is_myself and (ln.migrating or ln.importing):
                problems.append(f"{m.name} has open slots {format_ranges([*ln.migrating, *ln.importing])}")
        owners = {s: ln.node_id for ln in lines if ln.is_master for s in ln.slots}
        if len(owners) != SLOTS:
            problems.append(f"{m.name} sees {len(owners)} of {SLOTS} slots assigned")
        if reference is None:
            reference = owners
        elif owners != reference:
            problems.append(f"{m.name} disagrees with {snap.members[0].name} about slot owners")
        if "cluster_state:ok" not in infos.get(m.node_id, ""):
            problems.append(f"{m.name} reports cluster_state other than ok")
        if m.master_id and "master_link_status:up" not in infos.get(m.node_id, ""):
            # Not synced yet: such a replica holds no data and could not take over from its master.
            problems.append(f"replica {m.name} has no live replication link to its master")
    if expect_masters is not None or expect_replicas is not None:
        masters = [m for m in snap.members if m.is_master and m.slots]
        if expect_masters is not None and len(masters) != expect_masters:
            problems.append(f"{len(masters)} masters own slots, {expect_masters} declared")
        if expect_replicas is not None:
            for master in masters:
                count = sum(1 for m in snap.members if m.master_id == master.node_id)
                if count < expect_replicas:
                    problems.append(f"master {master.name} has {count} replica(s), {expect_replicas} declared")
    return Health(tuple(problems))


def info_field(info: str, name: str) -> str:
    for line in info.splitlines():
        key, _, value = line.partition(":")
        if key == name:
            return value.strip()
    return ""


def knows_all(n: int) -> Callable[[Member, str], bool]:
    """Exactly n: a handshake in progress counts as one more node."""
    return lambda m, info: info_field(info, "cluster_known_nodes") == str(n)


def serving(n: int) -> Callable[[Member, str], bool]:
    """What every node of a converged cluster of ``n`` says about itself in CLUSTER INFO."""

    def ok(m: Member, info: str) -> bool:
        return (
            info_field(info, "cluster_state") == "ok"
            and info_field(info, "cluster_slots_assigned") == str(SLOTS)
            and knows_all(n)(m, info)
            and (not m.master_id or info_field(info, "master_link_status") == "up")
        )

    return ok
