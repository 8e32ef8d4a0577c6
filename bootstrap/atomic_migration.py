"""Slot moves by the server itself: atomic slot migration, in its two dialects.

With MIGRATE the tool moves keys: a round trip per batch, slots left open
(IMPORTING/MIGRATING) while it works, ASK redirects for clients, and an
interrupted move that someone has to finish. With atomic migration the source
streams a snapshot of the slots plus their write stream to the target and
ownership changes in one step at the end (a short write pause); a failure or a
cancel rolls back, so the slots are never half moved. Two servers have it,
with different commands:

- Valkey 9: ``CLUSTER MIGRATESLOTS`` on the *source*, watched with ``CLUSTER
  GETSLOTMIGRATIONS``; a failed job stays failed. The source logs in to the
  target as a replica does (masterauth / masteruser), and that user must be
  allowed ``CLUSTER SYNCSLOTS``.
- Redis 8.4+: ``CLUSTER MIGRATION IMPORT`` on the *target*, which picks the
  source itself from the slots' owner, watched with ``CLUSTER MIGRATION
  STATUS``; the nodes log in to each other with the cluster's internal secret.
  A node runs one task at a time (import or export: a second IMPORT is refused
  "another ASM task is already in progress", and a source busy with another
  export fails the import, which the target retries every second), and a
  failed import is retried by the server until it succeeds or is cancelled.
  So moves are run in rounds in which no node takes part twice (``rounds``).

Our part is to ask, to watch the job within a deadline, and to say which node
and which slots when it does not succeed.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import redis

from bootstrap.endpoints import Connector
from bootstrap.errors import BootstrapError, ConvergenceTimeout
from bootstrap.model import Member, format_ranges, to_ranges
from bootstrap.operations import cluster, view
from bootstrap.waiting import Progress

POLL_S = 0.05
COUNT_PIPELINE = 1024  # COUNTKEYSINSLOT per round trip when counting what moves
DONE = "success"
FAILED = ("failed", "cancelled")
REDIS_DONE = "completed"
REDIS_CANCELLED = "canceled"
REDIS_BUSY = "another ASM task is already in progress"
Dialect = Literal["valkey", "redis"]


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def dialect(client: redis.Redis) -> Dialect | None:
    """Which atomic slot migration the server has: ``valkey`` (9.0+), ``redis`` (8.4+) or None.

    Reads the server's own command list (``CLUSTER HELP``), so a build that has
    the command under another version string is still found (``COMMAND INFO``
    would be the table itself, but redis-py cannot parse its nil for an unknown
    command); a user not allowed CLUSTER HELP falls back to INFO's version fields.
    """
    try:
        lines = [_text(line).strip().upper() for line in cluster(client, "HELP")]
    except redis.ResponseError:
        info = client.info("server")
        if int(_text(info.get("valkey_version", "0")).split(".")[0] or 0) >= 9:
            return "valkey"
        major, minor = (int(x) for x in _text(info.get("redis_version", "0.0")).split(".")[:2])
        return "redis" if (major, minor) >= (8, 4) and "valkey_version" not in info else None
    if any(line.startswith("MIGRATESLOTS ") for line in lines):
        return "valkey"
    if any(line.startswith("MIGRATION IMPORT") for line in lines):
        return "redis"
    return None


def rounds(pairs: Sequence[tuple[str, str]]) -> list[list[int]]:
    """Indices of ``pairs`` (source, target) in rounds where no node takes part twice.

    For Redis' one task per node: greedy, in the given order, so a scale-out's
    moves from every source into one new master run one after another, and
    disjoint pairs of a rebalance run side by side.
    """
    out: list[tuple[set[str], list[int]]] = []
    for i, (src, dst) in enumerate(pairs):
        free = next((r for r in out if src not in r[0] and dst not in r[0]), None)
        if free is None:
            free = (set(), [])
            out.append(free)
        free[0].update((src, dst))
        free[1].append(i)
    return [indices for _, indices in out]


def records(reply: object) -> list[dict[str, str]]:
    """A list of records as dicts, whether redis-py made them dicts (RESP3) or flat lists (RESP2)."""
    out = []
    for entry in reply or []:  # type: ignore[attr-defined]
        if isinstance(entry, dict):
            out.append({_text(k): _text(v) for k, v in entry.items()})
        else:
            items = [_text(x) for x in entry]
            out.append(dict(zip(items[::2], items[1::2], strict=False)))
    return out


def _jobs(client: redis.Redis) -> list[dict[str, str]]:
    return records(cluster(client, "GETSLOTMIGRATIONS"))


def _count_keys(client: redis.Redis, slots: Sequence[int]) -> int:
    total = 0
    for i in range(0, len(slots), COUNT_PIPELINE):
        pipe = client.pipeline(transaction=False)
        for slot in slots[i : i + COUNT_PIPELINE]:
            pipe.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot)
        total += sum(int(n) for n in pipe.execute())
    return total


def move_atomic(
    connector: Connector,
    src: Member,
    dst: Member,
    slots: Sequence[int],
    deadline: float,
    progress: Progress,
) -> int:
    """Move ``slots`` from master ``src`` to master ``dst`` in one atomic migration; returns the keys moved.

    ``deadline`` is a ``time.monotonic()`` value: a job still running then is
    cancelled (which rolls it back: the slots stay on ``src``) and
    ConvergenceTimeout is raised. A job that fails for good or is cancelled by
    someone else raises BootstrapError with the server's own message. The key
    count is taken on ``src`` just before the move, so writes during it are not
    counted.
    """
    wanted = sorted(set(slots))
    if not wanted:
        return 0
    what = f"slots {format_ranges(wanted)} from {src.address} to {dst.address}"
    kind = dialect(connector.client(src.address))
    if kind is None:
        raise BootstrapError(
            f"{src.address} has no atomic slot migration (Valkey 9+ or Redis 8.4+); cannot move {what}"
        )
    keys = _count_keys(connector.client(src.address), wanted)
    move = _Move(connector, src, dst, wanted, what, keys, deadline, progress)
    started = time.monotonic()
    note = (_move_valkey if kind == "valkey" else _move_redis)(move)
    seconds = time.monotonic() - started
    progress(f"atomic migration of {what} done: {move.keys} keys in {seconds:.2f}s{note}")
    return move.keys


@dataclass(frozen=True)
class _Move:
    """One pair's move as both dialects need it: ``what`` names it in every message, ``keys`` counted before."""

    connector: Connector
    src: Member
    dst: Member
    wanted: Sequence[int]
    what: str
    keys: int
    deadline: float
    progress: Progress


def _move_valkey(m: _Move) -> str:
    """MIGRATESLOTS on the source. CANCELSLOTMIGRATIONS has no job argument, so other moves out of
    ``src`` running at the same time are cancelled too (and raise BootstrapError: give parallel moves one
    deadline)."""
    client = m.connector.client(m.src.address)
    before = {job.get("name") for job in _jobs(client)}
    args: list[str | int] = ["CLUSTER", "MIGRATESLOTS", "SLOTSRANGE"]
    for lo, hi in to_ranges(m.wanted):
        args += [lo, hi]
    args += ["NODE", m.dst.node_id]
    try:
        client.execute_command(*args)
    except redis.ResponseError as exc:
        raise BootstrapError(f"CLUSTER MIGRATESLOTS of {m.what} refused by {m.src.address}: {exc}") from exc
    m.progress(f"atomic migration of {m.what} started ({m.keys} keys)")
    while True:
        ours = [
            job
            for job in _jobs(client)
            if job.get("name") not in before
            and job.get("operation") == "EXPORT"
            and job.get("target_node") == m.dst.node_id
        ]
        failed = [job for job in ours if job.get("state") in FAILED]
        if failed:
            job = failed[0]
            raise BootstrapError(
                f"atomic migration of {m.what} {job.get('state')} on {m.src.address} (job {job.get('name')}): "
                f"{job.get('message') or 'no message; see CLUSTER GETSLOTMIGRATIONS on both nodes'}"
            )
        if ours and all(job.get("state") == DONE for job in ours):
            return ""
        if time.monotonic() > m.deadline:
            states = ", ".join(f"{job.get('slot_ranges')}: {job.get('state')}" for job in ours) or "no job listed"
            with contextlib.suppress(redis.RedisError):
                client.execute_command("CLUSTER", "CANCELSLOTMIGRATIONS")  # rolls back: the slots stay on src
            raise ConvergenceTimeout(
                f"atomic migration of {m.what} not done by the deadline ({states}); cancelled on {m.src.address}"
            )
        time.sleep(POLL_S)


def _move_redis(m: _Move) -> str:
    """MIGRATION IMPORT on the target, after checking that the target sees ``src`` own every slot.

    IMPORT takes its source from the slots' owner in the target's view, so
    without that check a stale plan would move another master's slots. A
    ``failed`` task is not the end here: the server retries it every second
    (a source busy with another export fails it, for one), so it is waited
    for, its last error reported once, until the deadline cancels it.
    """
    client = m.connector.client(m.dst.address)
    seen = view(client).get(m.src.node_id)
    elsewhere = [s for s in m.wanted if seen is None or s not in seen.slots]
    if elsewhere:
        raise BootstrapError(
            f"cannot move {m.what}: {m.dst.address} does not see {m.src.address} own slots {format_ranges(elsewhere)}"
        )
    args: list[str | int] = ["CLUSTER", "MIGRATION", "IMPORT"]
    for lo, hi in to_ranges(m.wanted):
        args += [lo, hi]
    while True:
        try:
            task = _text(client.execute_command(*args))
            break
        except redis.ResponseError as exc:
            if REDIS_BUSY not in str(exc) or time.monotonic() > m.deadline:
                raise BootstrapError(f"CLUSTER MIGRATION IMPORT of {m.what} refused by {m.dst.address}: {exc}") from exc
        time.sleep(POLL_S)
    m.progress(f"atomic migration of {m.what} started ({m.keys} keys, task {task})")
    reported = ""
    while True:
        job = next(iter(records(cluster(client, "MIGRATION", "STATUS", "ID", task))), {})
        state, error = job.get("state", "not listed"), job.get("last_error", "")
        if job.get("source") not in (None, m.src.node_id):
            raise BootstrapError(f"atomic migration of {m.what} (task {task}) took the slots from {job.get('source')}")
        if state == REDIS_DONE:
            _recount(client, m.dst, m.wanted[0], m.progress)
            return f" (writes paused {job.get('write_pause_ms', '?')} ms)"
        if state == REDIS_CANCELLED:
            raise BootstrapError(f"atomic migration of {m.what} cancelled on {m.dst.address} (task {task}): {error}")
        if error and error != reported:
            reported = error
            m.progress(f"atomic migration of {m.what}: {state} ({error}); the server retries it")
        if time.monotonic() > m.deadline:
            with contextlib.suppress(redis.RedisError):
                cluster(client, "MIGRATION", "CANCEL", "ID", task)  # rolls back: the slots stay on src
            raise ConvergenceTimeout(
                f"atomic migration of {m.what} not done by the deadline ({state}"
                f"{': ' + error if error else ''}); cancelled on {m.dst.address} (task {task})"
            )
        time.sleep(POLL_S)


def _recount(client: redis.Redis, dst: Member, slot: int, progress: Progress) -> None:
    """Make the target recount the cluster after it took slots (Redis 8.6).

    Its takeover bumps the epoch and broadcasts, but never marks the node's
    own cluster state for update, so a master that had no slots before went on
    reporting the old ``cluster_size`` (and computing its quorum from it) until
    something else changed: seen as ``cluster_size:3`` on the new master of a
    4-master cluster, for good. ``SETSLOT <its own slot> NODE <itself>``
    changes nothing but that.
    """
    try:
        cluster(client, "SETSLOT", slot, "NODE", dst.node_id)
    except redis.ResponseError as exc:
        progress(f"{dst.address} took slots but did not recount the cluster ({exc}); its cluster_size may lag")
