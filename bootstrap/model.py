"""The cluster as data: slots, node table lines and the inventory the planner reads.

Everything here is pure (no I/O) so that the planner and its property tests
can build any cluster state they like without a server.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

SLOTS = 16384


# --- slot ranges --------------------------------------------------------------


def to_ranges(slots: Iterable[int]) -> list[tuple[int, int]]:
    """Compress slots into sorted inclusive ranges (the unit of ADDSLOTSRANGE and of output)."""
    ranges: list[tuple[int, int]] = []
    for slot in sorted(set(slots)):
        if ranges and ranges[-1][1] == slot - 1:
            ranges[-1] = (ranges[-1][0], slot)
        else:
            ranges.append((slot, slot))
    return ranges


def format_ranges(slots: Iterable[int]) -> str:
    """``0-5460,5462`` — compact and stable, so it diffs well in `pulumi preview`."""
    return ",".join(f"{a}-{b}" if a != b else str(a) for a, b in to_ranges(slots))


def parse_ranges(text: str) -> frozenset[int]:
    slots: set[int] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        lo, _, hi = part.partition("-")
        slots.update(range(int(lo), int(hi or lo) + 1))
    return frozenset(slots)


SLOT_SELECTION = f"'all' or slot ranges from 0 to {SLOTS - 1} such as 5461-10922,16000"


def parse_slot_selection(text: str) -> frozenset[int]:
    """``all`` or ranges (``0-5460,10923``) as a person names slots: raises ValueError unless every part
    is a slot or an ascending range of slots (``SLOT_SELECTION`` says what is allowed)."""
    if text.strip() == "all":
        return frozenset(range(SLOTS))
    slots: set[int] = set()
    for part in (p.strip() for p in text.split(",")):
        lo, _, hi = part.partition("-")
        if not (lo.isdigit() and (hi.isdigit() or not hi)) or int(hi or lo) < int(lo) or int(hi or lo) >= SLOTS:
            raise ValueError(f"{text!r}: it takes {SLOT_SELECTION}")
        slots.update(range(int(lo), int(hi or lo) + 1))
    return frozenset(slots)


# --- CLUSTER NODES ------------------------------------------------------------


@dataclass(frozen=True)
class NodeLine:
    """One line of ``CLUSTER NODES``: what one node believes about one node."""

    node_id: str
    address: str  # "ip:port", "" when the node has no address (noaddr / :0)
    hostname: str
    flags: frozenset[str]
    master_id: str | None
    config_epoch: int
    connected: bool
    slots: frozenset[int]
    migrating: dict[int, str] = field(default_factory=dict)  # slot -> target id (myself only)
    importing: dict[int, str] = field(default_factory=dict)  # slot -> source id (myself only)

    @property
    def is_myself(self) -> bool:
        return "myself" in self.flags

    @property
    def is_master(self) -> bool:
        return "master" in self.flags

    @property
    def failed(self) -> bool:
        return bool(self.flags & {"fail", "fail?", "noaddr"}) or not self.address

    @property
    def in_handshake(self) -> bool:
        return "handshake" in self.flags


def parse_cluster_nodes(text: str) -> list[NodeLine]:
    """Parse the raw ``CLUSTER NODES`` reply (format documented in cluster.c)."""
    lines: list[NodeLine] = []
    for raw in text.splitlines():
        parts = raw.split()
        if len(parts) < 8:
            continue
        node_id, addr_field, flags_field, master, _ping, _pong, epoch, link = parts[:8]
        addr, _, hostname = addr_field.partition(",")
        address = addr.split("@", 1)[0]
        if address.startswith(":") or address.endswith(":0"):
            address = ""
        slots: set[int] = set()
        migrating: dict[int, str] = {}
        importing: dict[int, str] = {}
        for token in parts[8:]:
            if token.startswith("["):
                body = token.strip("[]")
                if "->-" in body:
                    slot, other = body.split("->-")
                    migrating[int(slot)] = other
                elif "-<-" in body:
                    slot, other = body.split("-<-")
                    importing[int(slot)] = other
                continue
            lo, _, hi = token.partition("-")
            slots.update(range(int(lo), int(hi or lo) + 1))
        lines.append(
            NodeLine(
                node_id=node_id,
                address=address,
                hostname=hostname,
                flags=frozenset(flags_field.split(",")),
                master_id=None if master == "-" else master,
                config_epoch=int(epoch),
                connected=link == "connected",
                slots=frozenset(slots),
                migrating=migrating,
                importing=importing,
            )
        )
    return lines


# --- what the planner reads ---------------------------------------------------


@dataclass(frozen=True)
class Member:
    """A reachable node, described by its own view of itself.

    ``name`` is the stable identity of the slot it fills (a pod name, or the
    address for plain servers); ordering by it decides who is preferred as a
    master and which ordinals go away first. ``domain`` is the failure domain
    (the Kubernetes node) used to keep a replica away from its master.
    """

    name: str
    node_id: str
    address: str
    domain: str = ""
    is_master: bool = True
    master_id: str | None = None
    slots: frozenset[int] = frozenset()
    keys: int = 0
    retire: bool = False  # will be removed: drain it, then forget it everywhere
    order: int = 0
    announced: str = ""  # the address peers list it under, when it announces one (external access)

    @property
    def seen_as(self) -> str:
        return self.announced or self.address


@dataclass(frozen=True)
class Shape:
    masters: int
    replicas_per_master: int

    @property
    def nodes(self) -> int:
        return self.masters * (1 + self.replicas_per_master)


@dataclass(frozen=True)
class SlotMove:
    source: str  # node id
    target: str  # node id
    slots: tuple[int, ...]


@dataclass(frozen=True)
class Plan:
    """Everything that has to happen to reach the shape.

    The fields are what, not when. ``converge._execute`` runs them in this
    order, each for a reason: a fresh cluster's slots first (as redis-cli
    does: no master is ever a slotless minority), then the MEETs, failovers,
    forget and detach (a role change ends the round: it is planned again from
    a fresh look), the other slot assignments, REPLICATE for nodes without
    slots (a new master's replica syncs during Redis' rejoin delay), the moves,
    REPLICATE for masters the moves emptied (Redis refuses it before), remove.
    """

    forget: tuple[str, ...] = ()  # ghost node ids: in some table, served by no reachable node
    failovers: tuple[str, ...] = ()  # replica ids to promote (their master retires or vanished)
    detach: tuple[str, ...] = ()  # replica ids to turn into empty masters (more masters declared)
    assign: tuple[tuple[str, tuple[int, ...]], ...] = ()  # (master id, uncovered slots) -> ADDSLOTS
    moves: tuple[SlotMove, ...] = ()
    replicate: tuple[tuple[str, str], ...] = ()  # (replica id, master id), only changes
    remove: tuple[str, ...] = ()  # retiring node ids: reset and forget once drained
    masters: tuple[str, ...] = ()  # node ids that own slots when the plan is done
    lost_slots: tuple[int, ...] = ()  # slots whose owner vanished without a replica: data gone
    problems: tuple[str, ...] = ()  # parts of the shape this plan cannot reach

    @property
    def empty(self) -> bool:
        return not (
            self.forget or self.failovers or self.detach or self.assign or self.moves or self.replicate or self.remove
        )

    @property
    def moved_slots(self) -> int:
        return sum(len(m.slots) for m in self.moves)

    def describe(self, names: dict[str, str] | None = None) -> list[str]:
        """Human lines for `python -m bootstrap plan` and the Pulumi log."""
        n = names or {}

        def who(node_id: str) -> str:
            return n.get(node_id, node_id[:8])

        out: list[str] = []
        out += [f"forget ghost node {who(i)}" for i in self.forget]
        out += [f"fail over to replica {who(i)}" for i in self.failovers]
        out += [f"turn replica {who(i)} into an empty master" for i in self.detach]
        out += [f"assign slots {format_ranges(s)} to {who(i)}" for i, s in self.assign]
        out += [
            f"move {len(m.slots)} slots ({format_ranges(m.slots)}) {who(m.source)} -> {who(m.target)}"
            for m in self.moves
        ]
        out += [f"make {who(r)} a replica of {who(m)}" for r, m in self.replicate]
        out += [f"remove {who(i)} from the cluster" for i in self.remove]
        out += [f"PROBLEM: {p}" for p in self.problems]
        if self.lost_slots:
            lost = format_ranges(self.lost_slots)
            out.append(f"LOST: slots {lost} have no live copy, their keys are lost; reassigned only when accepted")
        return out


@dataclass
class Snapshot:
    """Every endpoint's view of the cluster at one moment."""

    members: list[Member]
    views: dict[str, list[NodeLine]]  # node id -> that node's CLUSTER NODES
    ghosts: dict[str, frozenset[int]] = field(default_factory=dict)  # unserved ids -> slots
    strangers: dict[str, str] = field(default_factory=dict)  # live ids not declared -> address
    unreachable: list[str] = field(default_factory=list)  # "name (address): error", when tolerated

    @property
    def by_id(self) -> dict[str, Member]:
        return {m.node_id: m for m in self.members}

    def open_slots(self) -> list[tuple[Member, dict[int, str], dict[int, str]]]:
        """(member, migrating, importing) for every member with a slot left half moved."""
        out = []
        for m in self.members:
            me = next(line for line in self.views[m.node_id] if line.is_myself)
            if me.migrating or me.importing:
                out.append((m, me.migrating, me.importing))
        return out

    def names(self) -> dict[str, str]:
        return {m.node_id: m.name for m in self.members}
