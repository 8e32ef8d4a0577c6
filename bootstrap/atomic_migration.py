"""Slot moves by the server itself: Valkey 9's atomic slot migration (``CLUSTER MIGRATESLOTS``).

With MIGRATE the tool moves keys: a round trip per batch, slots left open
(IMPORTING/MIGRATING) while it works, ASK redirects for clients, and an
interrupted move that someone has to finish. With MIGRATESLOTS, run on the
source, the source streams a snapshot of the slots plus their write stream to
the target and hands ownership over in one step at the end (a short write
pause); a failure or cancel rolls back, so the slots are never half moved.
Our part is to ask, to watch the job (``CLUSTER GETSLOTMIGRATIONS``) within a
deadline, and to say which node and which slots when it does not succeed.

The server needs to log in to the target as a replica does (masterauth /
masteruser), and that user must be allowed ``CLUSTER SYNCSLOTS``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence

import redis

from bootstrap.endpoints import Connector
from bootstrap.model import Member, format_ranges, to_ranges
from bootstrap.operations import ClusterError, ConvergenceTimeout, Progress

POLL_S = 0.05
COUNT_PIPELINE = 1024  # COUNTKEYSINSLOT per round trip when counting what moves
DONE = "success"
FAILED = ("failed", "cancelled")


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def supports_atomic_migration(client: redis.Redis) -> bool:
    """Whether the server has ``CLUSTER MIGRATESLOTS`` (Valkey 9.0+).

    Reads the server's own command list (``CLUSTER HELP``), so a build that has
    the command under another version string is still found (``COMMAND INFO``
    would be the table itself, but redis-py cannot parse its nil for an unknown
    command); a user not allowed CLUSTER HELP falls back to INFO's ``valkey_version``.
    """
    try:
        lines = client.execute_command("CLUSTER", "HELP")
    except redis.ResponseError:
        version = _text(client.info("server").get("valkey_version", "0"))
        return int(version.split(".")[0] or 0) >= 9
    return any(_text(line).strip().upper().startswith("MIGRATESLOTS ") for line in lines)


def _jobs(client: redis.Redis) -> list[dict[str, str]]:
    """CLUSTER GETSLOTMIGRATIONS as dicts (RESP2 gives flat lists, redis-py may not convert them)."""
    out = []
    for entry in client.execute_command("CLUSTER", "GETSLOTMIGRATIONS") or []:
        if isinstance(entry, dict):
            out.append({_text(k): _text(v) for k, v in entry.items()})
        else:
            items = [_text(x) for x in entry]
            out.append(dict(zip(items[::2], items[1::2], strict=False)))
    return out


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
    """Move ``slots`` from master ``src`` to master ``dst`` with one MIGRATESLOTS; returns the keys moved.

    ``deadline`` is a ``time.monotonic()`` value: a job still running then is
    cancelled (which rolls it back: the slots stay on ``src``) and
    ConvergenceTimeout is raised; CANCELSLOTMIGRATIONS has no job argument, so
    other moves out of ``src`` running at the same time are cancelled too (and
    raise ClusterError: give parallel moves one deadline). A job that fails or is cancelled by someone
    else raises ClusterError with the server's own message. The key count is
    taken on ``src`` just before the move, so writes during it are not counted.
    """
    wanted = sorted(set(slots))
    if not wanted:
        return 0
    ranges = to_ranges(wanted)
    what = f"slots {format_ranges(wanted)} from {src.address} to {dst.address}"
    client = connector.client(src.address)
    keys = _count_keys(client, wanted)
    before = {job.get("name") for job in _jobs(client)}
    args: list[str | int] = ["CLUSTER", "MIGRATESLOTS", "SLOTSRANGE"]
    for lo, hi in ranges:
        args += [lo, hi]
    args += ["NODE", dst.node_id]
    started = time.monotonic()
    try:
        client.execute_command(*args)
    except redis.ResponseError as exc:
        raise ClusterError(f"CLUSTER MIGRATESLOTS of {what} refused by {src.address}: {exc}") from exc
    progress(f"atomic migration of {what} started ({keys} keys)")
    while True:
        ours = [
            job
            for job in _jobs(client)
            if job.get("name") not in before
            and job.get("operation") == "EXPORT"
            and job.get("target_node") == dst.node_id
        ]
        failed = [job for job in ours if job.get("state") in FAILED]
        if failed:
            job = failed[0]
            raise ClusterError(
                f"atomic migration of {what} {job.get('state')} on {src.address} (job {job.get('name')}): "
                f"{job.get('message') or 'no message; see CLUSTER GETSLOTMIGRATIONS on both nodes'}"
            )
        if ours and all(job.get("state") == DONE for job in ours):
            break
        if time.monotonic() > deadline:
            states = ", ".join(f"{job.get('slot_ranges')}: {job.get('state')}" for job in ours) or "no job listed"
            with contextlib.suppress(redis.RedisError):
                client.execute_command("CLUSTER", "CANCELSLOTMIGRATIONS")  # rolls back: the slots stay on src
            raise ConvergenceTimeout(
                f"atomic migration of {what} not done by the deadline ({states}); cancelled on {src.address}"
            )
        time.sleep(POLL_S)
    seconds = time.monotonic() - started
    progress(f"atomic migration of {what} done: {keys} keys in {seconds:.2f}s")
    return keys
