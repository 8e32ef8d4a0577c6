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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from bootstrap import rules
from bootstrap.atomic_migration import dialect, move_atomic, rounds
from bootstrap.endpoints import MIGRATE_SOCKET_TIMEOUT_S, Connector, DeadlineExceeded, split_address
from bootstrap.errors import BootstrapError
from bootstrap.failover import fail_over
from bootstrap.model import Member, SlotMove, Snapshot, format_ranges
from bootstrap.operations import cluster, myself, view, wait_serving
from bootstrap.waiting import Progress, parallel

# Slots opened at once per source/target pair. Closing a chunk makes the target bump its config epoch,
# and every node then saves nodes.conf with fsync, stalling its clients (measured: 256 -> 1024 cut the move
# time and the client p99 during it, see docs/benchmarks.md); a chunk is also the unit a resumed move redoes.
SLOTS_PER_CHUNK = 1024
# Keys migrated per round trip. A source runs MIGRATE synchronously and executes a pipeline's MIGRATEs back
# to back while its other clients wait: a small batch keeps that wait short. Measured on a 1M-key move (~61
# keys per slot; client p99 during the move / move keys/s): 64 slots 79-90 ms; 4 slots 20-27 ms / 60-74k;
# 2 slots 12.6-13.8 ms / 63-75k; 1 slot 12.4 ms / 46k. So about 2 such slots' worth of keys per round trip;
# a sparse key space (50k keys: ~3 per slot) then packs ~40 slots into one instead of 2.
KEYS_PER_BATCH = 128
# Slots whose key names are listed in one round trip (and held here at once) before being batched by keys.
SLOTS_PER_WINDOW = 64
KEYS_PER_MIGRATE = 1000
MIGRATE_TIMEOUT_MS = 60_000
POLL_S = 0.1
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
    allow_atomic: bool = True,
) -> int:
    """Execute the planned moves, source/target pairs in parallel; returns the number of keys moved.

    Where every node taking part has the same atomic slot migration (Valkey 9,
    Redis 8.4+), the server moves each pair's slots itself
    (``atomic_migration``): no slot is ever left open, and on Valkey it is
    25-90x faster than MIGRATE, whose every SETSLOT waits for the replicas'
    acknowledgement there (bench/NOTES.md). Redis runs one such task per node,
    so its pairs go in rounds in which no node takes part twice.
    ``allow_atomic=False`` takes the MIGRATE path anyway (``python -m bench.atomic`` compares the two).
    """
    if not moves:
        return 0
    by_id = snap.by_id
    counter = _Counter(sum(len(m.slots) for m in moves), progress)
    masters = [m for m in snap.members if m.is_master]
    taking_part = {by_id[i] for move in moves for i in (move.source, move.target)}
    dialects = {dialect(connector.client(m.address)) for m in taking_part}
    atomic = allow_atomic and len(dialects) == 1 and None not in dialects
    deadline = time.monotonic() + (connector.remaining() or MIGRATE_TIMEOUT_MS / 1000 * 10)

    def run(move: SlotMove) -> None:
        src, dst = by_id[move.source], by_id[move.target]
        try:
            if atomic:
                counter.add(len(move.slots), move_atomic(connector, src, dst, move.slots, deadline, progress))
                return
            others = [m for m in masters if m.node_id not in (src.node_id, dst.node_id)]
            chunks = [move.slots[i : i + SLOTS_PER_CHUNK] for i in range(0, len(move.slots), SLOTS_PER_CHUNK)]
            _stream(connector, src, dst, others, chunks, counter.add)
        except DeadlineExceeded:
            raise
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            # redis-py's text names no node ("Connection closed by server."): ask which one is gone.
            silent = [f"{m.name} ({m.address})" for m in (src, dst) if not _answers(connector, m)]
            who = " and ".join(silent) or f"{src.name} ({src.address}) or {dst.name} ({dst.address})"
            raise BootstrapError(
                f"moving slots {format_ranges(move.slots)} from {src.name} to {dst.name}: {who} stopped answering "
                f"({type(exc).__name__}: {exc}); no key is lost: the slots left open are finished by the next "
                f"apply once the node is back or its replica has taken over"
            ) from exc

    if atomic and dialects == {"redis"}:
        for indices in rounds([(m.source, m.target) for m in moves]):
            parallel(run, [moves[i] for i in indices])
    else:
        parallel(run, moves)
    return counter.keys


def _answers(connector: Connector, m: Member) -> bool:
    try:
        return bool(connector.client(m.address, timeout=2).ping())
    except DeadlineExceeded:
        raise
    except (redis.RedisError, OSError):
        return False


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
        if chunk:
            _bind_to_source(source, target, src, chunk)
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
        keys = _migrate_keys(connector, source, src, dst, chunk)
        moved += keys
        closing = chunk
    _tell_others(connector, others, dst, [s for chunk in chunks for s in chunk])
    return moved


def _bind_to_source(source: redis.Redis, target: redis.Redis, src: Member, slots: Sequence[int]) -> None:
    """Tell the target the source owns the slots it is about to import, where its view does not say so yet.

    A node never binds a slot it is IMPORTING to the owner gossip names (it
    leaves that to whoever closes the move), so a target that had not heard
    of the source's slots yet when IMPORTING came keeps them unbound: its
    slots are not all covered, it answers CLUSTERDOWN to every RESTORE-ASKING,
    and the move stalls (seen once in 11 scale-outs onto a target that had
    just met the cluster). The source's own view is the authority, and
    SETSLOT NODE of another node leaves the target's keys and marks alone.
    """
    seen = view(target).get(src.node_id)
    unbound = [s for s in slots if seen is None or s not in seen.slots]
    if unbound:
        owned = myself(source).slots
        _pipeline(target, [("SETSLOT", s, "NODE", src.node_id) for s in unbound if s in owned])


def _migrate_keys(connector: Connector, source: redis.Redis, src: Member, dst: Member, slots: Sequence[int]) -> int:
    """MIGRATE every key of the (open) slots, at most SLOTS_PER_WINDOW slots' key names in memory at once.

    One MIGRATE per slot (a cluster refuses keys of several slots in one); the
    GETKEYSINSLOT that checks a slot is empty rides in the same pipeline as the
    MIGRATEs, right after them, so each batch costs one round trip per pass.
    A target that answers CLUSTERDOWN/TRYAGAIN (restarted, in its rejoin delay)
    is asked again until the run's time is up: REPLACE makes a repeated batch safe.
    """
    host, port = split_address(dst.address)
    auth = connector.auth_args()
    moved = 0
    for batch, found in _batches(source, slots):
        pending = [s for s in batch if found[s]]
        # A slot with more than KEYS_PER_MIGRATE keys takes several passes; the source never gains
        # keys in a MIGRATING slot (writes to absent keys are redirected), so this ends.
        while pending:
            time_left = connector.remaining()
            # The target's own wait for the source never outlasts the run either.
            timeout_ms = (
                MIGRATE_TIMEOUT_MS if time_left is None else max(min(MIGRATE_TIMEOUT_MS, int(time_left * 1000)), 100)
            )
            pipe = source.pipeline(transaction=False)
            for s in pending:
                pipe.execute_command("MIGRATE", host, port, "", 0, timeout_ms, "REPLACE", *auth, "KEYS", *found[s])
            for s in pending:
                pipe.execute_command("CLUSTER", "GETKEYSINSLOT", s, KEYS_PER_MIGRATE)
            results = pipe.execute(raise_on_error=False)
            waiting = False
            for s, result in zip(pending, results, strict=False):
                if isinstance(result, Exception) and _not_serving(result) and (connector.remaining() or 1.0) > POLL_S:
                    waiting = True  # its keys stay on the source; GETKEYSINSLOT below lists them again
                    continue
                if isinstance(result, Exception):
                    raise BootstrapError(
                        f"MIGRATE {src.name} -> {dst.name} (slot {s}) failed: {result}. "
                        f"No key is lost; the slot stays open and the next apply resumes the move."
                    )
                moved += len(found[s])
            left = results[len(pending) :]
            for s, keys in zip(pending, left, strict=True):
                if isinstance(keys, Exception):
                    raise BootstrapError(f"CLUSTER GETKEYSINSLOT {s} on {src.name}: {keys}")
                found[s] = keys
            pending = [s for s in pending if found[s]]
            if waiting:
                time.sleep(POLL_S)
    return moved


def _batches(source: redis.Redis, slots: Sequence[int]) -> Iterator[tuple[list[int], dict[int, list[Any]]]]:
    """Slots grouped so each group's keys (as listed now) fit KEYS_PER_BATCH, at least one slot per group."""
    for w in range(0, len(slots), SLOTS_PER_WINDOW):
        window = slots[w : w + SLOTS_PER_WINDOW]
        pipe = source.pipeline(transaction=False)
        for s in window:
            pipe.execute_command("CLUSTER", "GETKEYSINSLOT", s, KEYS_PER_MIGRATE)
        found = dict(zip(window, pipe.execute(), strict=True))
        batch: list[int] = []
        size = 0
        for s in window:
            if batch and size + len(found[s]) > KEYS_PER_BATCH:
                yield batch, found
                batch, size = [], 0
            batch.append(s)
            size += len(found[s])
        if batch:
            yield batch, found


def _not_serving(error: Exception) -> bool:
    """The target is up but not taking keys yet: ask again shortly. (redis-py strips the code of the
    errors it knows: a ClusterDownError reads "The cluster is down"; MIGRATE quotes the target's.)"""
    if isinstance(error, (redis.exceptions.ClusterDownError, redis.exceptions.TryAgainError)):
        return True
    return "CLUSTERDOWN" in str(error) or "TRYAGAIN" in str(error)


def _tell_others(connector: Connector, others: Sequence[Member], dst: Member, slots: Sequence[int]) -> None:
    """SETSLOT NODE on the masters outside the pair, in parallel, so none waits for gossip any longer."""

    def tell(node: Member) -> None:
        # A node that does not know the target yet (a fresh one, still meeting) learns the owner when it meets.
        _pipeline(
            connector.client(node.address),
            [("SETSLOT", s, "NODE", dst.node_id) for s in slots],
            tolerate=(*_REPLICA, "Unknown node"),
        )

    if slots:
        parallel(tell, others)


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
            raise BootstrapError(f"CLUSTER {' '.join(map(str, args))}: {result}")


def repair_open_slots(snap: Snapshot, connector: Connector, progress: Progress, timeout: float = 60.0) -> int:
    """Finish every half-done move towards whoever holds its moved keys now; returns slots handled.

    Finishing (rather than rolling back) is always safe: the target already
    holds part of the keys and accepts the rest; the source keeps serving the
    keys it still has until the very last SETSLOT. ``rules.pair_open_slots``
    decides who is source and target after a fault; here the heirs are
    promoted (TAKEOVER), the importers told their slot's current owner, and
    the moves finished, one direction between a pair of masters at a time.
    """
    repair = rules.pair_open_slots(snap)
    if not repair.slots:
        return 0
    progress(f"finishing {len(repair.slots)} slot(s) left open by an interrupted move: {format_ranges(repair.slots)}")
    by_id = snap.by_id
    for slot, src in repair.probe.items():
        # Redis promoted the gone target's replica already (it owned slots): that master holds keys of a slot
        # it does not own.
        heir = next((m for m in snap.members if _holds_keys(connector, m, slot, src)), None)
        if heir is None:
            repair.close.setdefault(src, []).append(slot)
        else:
            repair.finish.setdefault((src, heir.node_id), []).append(slot)
    if repair.promote:
        fail_over(snap, connector, sorted(repair.promote), timeout=timeout)
    for node_id, slots in repair.close.items():
        _pipeline(connector.client(by_id[node_id].address), [("SETSLOT", s, "STABLE") for s in slots], _REPLICA)
    masters = [m for m in snap.members if m.is_master or m.node_id in repair.promote]

    def finish(pair: tuple[str, str]) -> None:
        src, dst = by_id[pair[0]], by_id[pair[1]]
        todo = repair.finish[pair]
        stale = [("SETSLOT", s, "NODE", repair.stale[s]) for s in todo if s in repair.stale]
        _pipeline(connector.client(dst.address), stale)
        wait_serving(snap, connector, [dst.node_id], timeout)  # a restarted target answers CLUSTERDOWN until then
        others = [m for m in masters if m.node_id not in pair]
        chunks = [todo[i : i + SLOTS_PER_CHUNK] for i in range(0, len(todo), SLOTS_PER_CHUNK)]
        _stream(connector, src, dst, others, chunks)

    for batch in rules.one_direction_at_a_time(repair.finish):
        parallel(finish, batch)
    return len(repair.slots)


def _holds_keys(connector: Connector, m: Member, slot: int, owner: str) -> bool:
    if not m.is_master or m.node_id == owner or slot in m.slots:
        return False
    return bool(int(cluster(connector.client(m.address), "COUNTKEYSINSLOT", slot)))
