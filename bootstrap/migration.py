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
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import redis

from bootstrap.endpoints import MIGRATE_SOCKET_TIMEOUT_S, Connector, split_address
from bootstrap.model import Member, SlotMove, format_ranges
from bootstrap.operations import ClusterError, Progress, Snapshot, parallel

# Slots opened at once per source/target pair. Closing a chunk makes the target bump its config epoch,
# and every node then saves nodes.conf with fsync, stalling its clients (measured: 256 -> 1024 cut the move
# time and the client p99 during it, see docs/benchmarks.md); a chunk is also the unit a resumed move redoes.
SLOTS_PER_CHUNK = 1024
# Slots whose keys are fetched and migrated per round trip. A source runs MIGRATE synchronously and executes
# a pipeline's MIGRATEs back to back while its other clients wait: a small batch keeps that wait short and
# bounds the key names held here. Measured on a 1M-key move (client p99 during the move / move keys/s):
# 64 slots 79-90 ms; 4 slots 20-27 ms / 60-74k; 2 slots 12.6-13.8 ms / 63-75k; 1 slot 12.4 ms / 46k.
SLOTS_PER_BATCH = 2
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
        chunks = [move.slots[i : i + SLOTS_PER_CHUNK] for i in range(0, len(move.slots), SLOTS_PER_CHUNK)]
        _stream(connector, src, dst, others, chunks, counter.add)

    parallel(run, moves)
    return counter.keys


def _stream(
    connector: Connector,
    src: Member,
    dst: Member,
    others: Sequence[Member],
    chunks: Sequence[Sequence[int]],
    done: Callable[[int, int], None] = lambda slots, keys: None,
) -> int:
    """Move chunk after chunk from ``src`` to ``dst``; returns the number of keys moved.

    Where the time went (measured, see docs/benchmarks.md): CLUSTER SETSLOT makes
    a node save nodes.conf (and the epoch bump on closing makes every node fsync
    it), and a SETSLOT sent to a master that is itself the source of another
    stream waits behind that stream's MIGRATEs: with a chunk of 64 slots and
    others told per chunk, SETSLOT NODE took as long as the MIGRATEs.
    So the closing SETSLOT NODE of one chunk and the opening IMPORTING/MIGRATING
    of the next go in one pipeline per node (target first, as before), and the
    masters outside this pair are told once, when the stream is done, instead of
    after every chunk: the target's SETSLOT NODE bumps its config epoch and
    broadcasts the new owner at once, so they learn it by gossip meanwhile, and
    until then a client they misdirect is redirected again by the source.
    Every step is still the documented protocol in its order, so an
    interruption at any point leaves only open slots that ``repair_open_slots``
    finishes, and no key is ever deleted by us.
    """
    source = connector.client(src.address, timeout=MIGRATE_SOCKET_TIMEOUT_S)
    target = connector.client(dst.address)
    moved = keys = 0
    closing: Sequence[int] = ()
    for chunk in [*chunks, ()]:
        close: list[tuple[tuple[object, ...], tuple[str, ...]]] = [
            (("SETSLOT", s, "NODE", dst.node_id), ()) for s in closing
        ]
        # Target first: from then on it answers for the closed slots even if the source is slow to learn it;
        # and a slot is IMPORTING on the target before it is MIGRATING on the source (no redirect loop).
        _pipeline_each(target, [*close, *((("SETSLOT", s, "IMPORTING", src.node_id), _ALREADY) for s in chunk)])
        # A master whose last slot just left turns into a replica (cluster-allow-replica-migration):
        # it learns the owner by gossip, and SETSLOT is refused by replicas.
        close = [(args, _REPLICA) for args, _ in close]
        _pipeline_each(source, [*close, *((("SETSLOT", s, "MIGRATING", dst.node_id), _ALREADY) for s in chunk)])
        if closing:
            done(len(closing), keys)
        if not chunk:
            break
        keys = _migrate_keys(source, src, dst, chunk, connector.auth_args())
        moved += keys
        closing = chunk
    _tell_others(connector, others, dst, [s for chunk in chunks for s in chunk])
    return moved


def _migrate_keys(source: redis.Redis, src: Member, dst: Member, slots: Sequence[int], auth: list[str]) -> int:
    """MIGRATE every key of the (open) slots, at most SLOTS_PER_BATCH slots' key names in memory at once.

    One MIGRATE per slot (a cluster refuses keys of several slots in one); the
    GETKEYSINSLOT that checks a slot is empty rides in the same pipeline as the
    MIGRATEs, right after them, so each batch costs one round trip per pass.
    """
    host, port = split_address(dst.address)
    moved = 0
    for i in range(0, len(slots), SLOTS_PER_BATCH):
        batch = slots[i : i + SLOTS_PER_BATCH]
        pipe = source.pipeline(transaction=False)
        for s in batch:
            pipe.execute_command("CLUSTER", "GETKEYSINSLOT", s, KEYS_PER_MIGRATE)
        found = dict(zip(batch, pipe.execute(), strict=True))
        pending = [s for s in batch if found[s]]
        # A slot with more than KEYS_PER_MIGRATE keys takes several passes; the source never gains
        # keys in a MIGRATING slot (writes to absent keys are redirected), so this ends.
        while pending:
            pipe = source.pipeline(transaction=False)
            for s in pending:
                pipe.execute_command(
                    "MIGRATE", host, port, "", 0, MIGRATE_TIMEOUT_MS, "REPLACE", *auth, "KEYS", *found[s]
                )
            for s in pending:
                pipe.execute_command("CLUSTER", "GETKEYSINSLOT", s, KEYS_PER_MIGRATE)
            results = pipe.execute(raise_on_error=False)
            for s, result in zip(pending, results, strict=False):
                if isinstance(result, Exception):
                    raise ClusterError(
                        f"MIGRATE {src.name} -> {dst.name} (slot {s}) failed: {result}. "
                        f"No key is lost; the slot stays open and the next apply resumes the move."
                    )
                moved += len(found[s])
            left = results[len(pending) :]
            for s, keys in zip(pending, left, strict=True):
                if isinstance(keys, Exception):
                    raise ClusterError(f"CLUSTER GETKEYSINSLOT {s} on {src.name}: {keys}")
                found[s] = keys
            pending = [s for s in pending if found[s]]
    return moved


def _tell_others(connector: Connector, others: Sequence[Member], dst: Member, slots: Sequence[int]) -> None:
    """SETSLOT NODE on the masters outside the pair, in parallel, so none waits for gossip any longer."""

    def tell(node: Member) -> None:
        _pipeline(
            connector.client(node.address), [("SETSLOT", s, "NODE", dst.node_id) for s in slots], tolerate=_REPLICA
        )

    if slots:
        parallel(tell, others)


def _move_chunk(
    connector: Connector,
    src: Member,
    dst: Member,
    others: Sequence[Member],
    slots: Sequence[int],
) -> int:
    """Finish (or do) the move of ``slots`` from ``src`` to ``dst``, SLOTS_PER_CHUNK at a time."""
    chunks = [slots[i : i + SLOTS_PER_CHUNK] for i in range(0, len(slots), SLOTS_PER_CHUNK)]
    return _stream(connector, src, dst, others, chunks)


def _pipeline(client: redis.Redis, commands: Sequence[tuple[object, ...]], tolerate: tuple[str, ...] = ()) -> None:
    _pipeline_each(client, [(args, tolerate) for args in commands])


def _pipeline_each(client: redis.Redis, commands: Sequence[tuple[tuple[object, ...], tuple[str, ...]]]) -> None:
    """CLUSTER commands in one round trip; each with the error texts that only mean "nothing to do"."""
    if not commands:
        return
    pipe = client.pipeline(transaction=False)
    for args, _ in commands:
        pipe.execute_command("CLUSTER", *args)
    for (args, tolerate), result in zip(commands, pipe.execute(raise_on_error=False), strict=True):
        if isinstance(result, Exception) and not any(t in str(result) for t in tolerate):
            raise ClusterError(f"CLUSTER {' '.join(map(str, args))}: {result}")


def repair_open_slots(snap: Snapshot, connector: Connector, progress: Progress) -> int:
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
        _move_chunk(connector, src, dst, others, slots)

    parallel(finish, list(finishable.items()))
    return len(pairs)
