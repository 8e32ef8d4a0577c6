"""Moving slots with their keys, and finishing moves someone else left half done.

A move is the documented protocol: IMPORTING on the target, MIGRATING on the
source, ``MIGRATE ... REPLACE KEYS`` until the source holds no key of the slot,
then ``SETSLOT NODE`` on the target, the source and every other master. Keys
are never deleted by us: MIGRATE deletes a key on the source only after the
target has stored it, and REPLACE makes a retried batch safe (while a slot is
MIGRATING the source owns every key it still holds). It is streamed a chunk of
slots at a time, so memory does not grow with the key space.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import redis

from bootstrap.endpoints import MIGRATE_SOCKET_TIMEOUT_S, Connector, split_address
from bootstrap.model import Member, SlotMove, format_ranges
from bootstrap.operations import ClusterError, Progress, Snapshot, parallel

SLOTS_PER_CHUNK = 64  # slots opened at once per source/target pair
KEYS_PER_MIGRATE = 1000
MIGRATE_TIMEOUT_MS = 60_000
# SETSLOT IMPORTING/MIGRATING answers that only mean "already past that step" on a resumed move.
_ALREADY = ("already the owner", "not the owner", "I'm not the owner")
_REPLICA = ("only with masters",)


@dataclass
class _Counter:
    total_slots: int
    progress: Progress
    slots: int = 0
    keys: int = 0
    last: float = 0.0

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self.started = time.monotonic()

    def add(self, slots: int, keys: int) -> None:
        with self.lock:
            self.slots += slots
            self.keys += keys
            now = time.monotonic()
            if now - self.last >= 2.0 or self.slots == self.total_slots:
                self.last = now
                rate = self.keys / max(now - self.started, 1e-6)
                self.progress(f"moved {self.slots}/{self.total_slots} slots, {self.keys} keys ({rate:,.0f} keys/s)")


def move_slots(
    snap: Snapshot,
    connector: Connector,
    moves: Sequence[SlotMove],
    progress: Progress,
    password: str | None = None,
) -> int:
    """Execute the planned moves, source/target pairs in parallel; returns the number of keys moved."""
    if not moves:
        return 0
    by_id = snap.by_id
    counter = _Counter(sum(len(m.slots) for m in moves), progress)
    masters = [m for m in snap.members if m.is_master]

    def run(move: SlotMove) -> None:
        src, dst = by_id[move.source], by_id[move.target]
        others = [m for m in masters if m.node_id not in (src.node_id, dst.node_id)]
        for i in range(0, len(move.slots), SLOTS_PER_CHUNK):
            chunk = move.slots[i : i + SLOTS_PER_CHUNK]
            keys = _move_chunk(connector, src, dst, others, chunk, password)
            counter.add(len(chunk), keys)

    parallel(run, moves)
    return counter.keys


def _move_chunk(
    connector: Connector,
    src: Member,
    dst: Member,
    others: Sequence[Member],
    slots: Sequence[int],
    password: str | None,
) -> int:
    source = connector.client(src.address, timeout=MIGRATE_SOCKET_TIMEOUT_S)
    target = connector.client(dst.address)
    _pipeline(target, [("SETSLOT", s, "IMPORTING", src.node_id) for s in slots], tolerate=_ALREADY)
    _pipeline(source, [("SETSLOT", s, "MIGRATING", dst.node_id) for s in slots], tolerate=_ALREADY)
    host, port = split_address(dst.address)
    auth: list[str] = ["AUTH", password] if password else []
    moved = 0
    pending = list(slots)
    while pending:
        pipe = source.pipeline(transaction=False)
        for s in pending:
            pipe.execute_command("CLUSTER", "GETKEYSINSLOT", s, KEYS_PER_MIGRATE)
        found = dict(zip(pending, pipe.execute(), strict=True))
        pending = [s for s in pending if found[s]]
        if not pending:
            break
        # One MIGRATE per slot (a cluster refuses keys of several slots in one), all in one round trip.
        pipe = source.pipeline(transaction=False)
        for s in pending:
            pipe.execute_command("MIGRATE", host, port, "", 0, MIGRATE_TIMEOUT_MS, "REPLACE", *auth, "KEYS", *found[s])
        for s, result in zip(pending, pipe.execute(raise_on_error=False), strict=True):
            if isinstance(result, Exception):
                raise ClusterError(
                    f"MIGRATE {src.name} -> {dst.name} (slot {s}) failed: {result}. "
                    f"No key is lost; the slot stays open and the next apply resumes the move."
                )
            moved += len(found[s])
    # Target first: from then on it answers for the slot even if the source is slow to learn it.
    _pipeline(target, [("SETSLOT", s, "NODE", dst.node_id) for s in slots])
    for node in (src, *others):
        # A master whose last slot just left turns into a replica (cluster-allow-replica-migration):
        # it learns the owner by gossip, and SETSLOT is refused by replicas.
        client = connector.client(node.address)
        _pipeline(client, [("SETSLOT", s, "NODE", dst.node_id) for s in slots], tolerate=_REPLICA)
    return moved


def _pipeline(client: redis.Redis, commands: Sequence[tuple[object, ...]], tolerate: tuple[str, ...] = ()) -> None:
    pipe = client.pipeline(transaction=False)
    for args in commands:
        pipe.execute_command("CLUSTER", *args)
    for args, result in zip(commands, pipe.execute(raise_on_error=False), strict=True):
        if isinstance(result, Exception) and not any(t in str(result) for t in tolerate):
            raise ClusterError(f"CLUSTER {' '.join(map(str, args))}: {result}")


def repair_open_slots(snap: Snapshot, connector: Connector, progress: Progress, password: str | None) -> int:
    """Finish every half-done move towards its target; close states whose other side is gone.

    Finishing (rather than rolling back) is always safe: the target already
    holds part of the keys and accepts the rest; the source keeps serving the
    keys it still has until the very last SETSLOT.
    """
    by_id = snap.by_id
    pairs: dict[int, tuple[str, str]] = {}
    for member, migrating, importing in snap.open_slots():
        for slot, target in migrating.items():
            pairs[slot] = (member.node_id, target)
        for slot, source in importing.items():
            pairs.setdefault(slot, (source, member.node_id))
    if not pairs:
        return 0
    progress(f"finishing {len(pairs)} slot(s) left open by an interrupted move: {format_ranges(pairs)}")
    masters = [m for m in snap.members if m.is_master]
    finishable: dict[tuple[str, str], list[int]] = {}
    for slot, (src_id, dst_id) in sorted(pairs.items()):
        if src_id in by_id and dst_id in by_id:
            finishable.setdefault((src_id, dst_id), []).append(slot)
        else:
            # The other side is gone: whoever still has the state closes it; slot ownership
            # is then the planner's business (a lost owner's slots get reassigned).
            for m in snap.members:
                _pipeline(connector.client(m.address), [("SETSLOT", slot, "STABLE")])

    def finish(item: tuple[tuple[str, str], list[int]]) -> None:
        (src_id, dst_id), slots = item
        src, dst = by_id[src_id], by_id[dst_id]
        others = [m for m in masters if m.node_id not in (src_id, dst_id)]
        _move_chunk(connector, src, dst, others, slots, password)

    parallel(finish, list(finishable.items()))
    return len(pairs)
