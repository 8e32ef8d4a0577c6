"""A backup that is one consistent cut across every shard (``python -m bootstrap backup``).

Saving each shard on its own, at its own moment, gives a backup no single
moment of the cluster ever looked like: a write acknowledged on one shard may
be in it while an earlier one on another shard is not. So the cut is fixed
with every master's writes paused at once (``CLIENT PAUSE <bound> WRITE``: it
lifts by itself at the bound even if this run dies) and lasts only as long as
it takes to start each shard's snapshot:

1. before the pause, each shard's source is chosen (a replica whose link is up,
   so masters do not fork; else the master) and a replication connection to it
   is opened and logged in;
2. pause every master; read each one's replication offset and key count;
3. wait (briefly) for each replica source to reach its master's offset, else
   take the master instead;
4. ``PSYNC ? -1`` on every source: without the ``eof`` capability the server
   forks a disk-based snapshot at once and answers ``+FULLRESYNC <id> <offset>``
   — the offset proves the snapshot is the cut (an older snapshot it may
   attach to would show an older offset, and the run retries);
5. unpause. The snapshots stream in while writes go on.

Each shard's RDB is stored with its SHA-256 next to a manifest (engine,
format, slots, node ids, offsets, keys, the cut's time, the pause). The
backup is written under a temporary name and renamed at the end: it is
complete or absent.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import redis

from bootstrap import failover, waiting
from bootstrap import operations as ops
from bootstrap.endpoints import Connector, Inventory
from bootstrap.engines import Engine, RdbFormat
from bootstrap.errors import BackupError
from bootstrap.manifest import MANIFEST, Manifest, ShardFile
from bootstrap.model import Member, Snapshot, format_ranges

PAUSE_BOUND_MS = 2000  # the pause lifts by itself after this, whatever happens to the run
CATCH_UP_S = 0.3  # how long a replica may take to reach its master's paused offset before the master is used
CUT_ATTEMPTS = 3
CHUNK = 1 << 20
# What a backup runs (the ACL rules of a user that may take backups and nothing else): look at the cluster,
# pause and unpause writes, read offsets and key counts, and ask for a snapshot as a replica would.
BACKUP_ACL = "-@all +ping +info +dbsize +cluster|nodes +client|pause +client|unpause +psync"


@dataclass
class _Shard:
    master: Member
    source: Member
    stream: _ReplicationStream | None = None
    offset: int = 0  # the master's replication offset at the cut
    keys: int = 0


def backup(inventory: Inventory, connector: Connector, to: Path, progress: waiting.Progress) -> Path:
    """Take one consistent backup of the cluster into a new directory under ``to``; return its path."""
    snap = ops.take_snapshot(inventory, connector, tolerate_unreachable=True)
    _require_whole(snap)
    engine = Engine.from_info(connector.client(snap.members[0].address).info("server"))
    to.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC)
    name = f"redis-cluster-{started.strftime('%Y%m%dT%H%M%SZ')}"
    final, work = to / name, to / f".{name}.partial"
    if final.exists():
        raise BackupError(f"{final} exists already: one backup per second at most")
    work.mkdir()
    try:
        shards, cut, pause_ms = _cut(snap, connector, progress)
        files = _receive(shards, work, progress)
        manifest = Manifest(
            engine=str(engine),
            cut=cut.isoformat(timespec="milliseconds"),
            pause_ms=round(pause_ms, 1),
            shards=tuple(files),
        )
        (work / MANIFEST).write_text(json.dumps(manifest.to_json(), indent=2) + "\n")
        work.rename(final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    keys = sum(f.keys for f in manifest.shards)
    size = sum(f.bytes for f in manifest.shards)
    progress(
        f"backup {final}: {len(manifest.shards)} shards, {keys:,} keys, {size / 1e6:.1f} MB, "
        f"writes paused {pause_ms:.0f} ms"
    )
    return final


def _require_whole(snap: Snapshot) -> None:
    served = set().union(*(m.slots for m in snap.members if m.is_master))
    if len(served) < 16384:
        raise BackupError(
            f"{16384 - len(served)} slots are not served (e.g. {format_ranges(set(range(16384)) - served)[:60]}): "
            f"a backup would miss them; heal the cluster first (python -m bootstrap check)"
        )


def _sources(snap: Snapshot, connector: Connector) -> list[_Shard]:
    """Per master, a replica with its link up (so the master does not fork), else the master itself."""
    linked = failover.caught_up(snap, connector)
    shards = []
    for master in sorted((m for m in snap.members if m.is_master and m.slots), key=lambda m: min(m.slots)):
        replicas = [r for r in snap.members if r.master_id == master.node_id and r.node_id in linked]
        shards.append(_Shard(master=master, source=replicas[0] if replicas else master))
    return shards


def _cut(snap: Snapshot, connector: Connector, progress: waiting.Progress) -> tuple[list[_Shard], datetime, float]:
    for attempt in range(1, CUT_ATTEMPTS + 1):
        shards = _sources(snap, connector)
        try:
            return _cut_once(shards, snap, connector, progress)
        except BaseException as exc:
            for s in shards:
                if s.stream is not None:
                    s.stream.close()
            if not isinstance(exc, _Stale):
                raise
            if attempt == CUT_ATTEMPTS:
                raise BackupError(f"no consistent cut after {CUT_ATTEMPTS} attempts: {exc}") from exc
            progress(f"cut attempt {attempt}: {exc}; trying again")
            time.sleep(0.5)
    raise AssertionError("unreachable")


class _Stale(Exception):
    """A snapshot started at another offset than the cut (it attached to an older one)."""


def _cut_once(
    shards: list[_Shard], snap: Snapshot, connector: Connector, progress: waiting.Progress
) -> tuple[list[_Shard], datetime, float]:
    for s in shards:
        s.stream = _ReplicationStream.open(connector, s.source.address)
    masters = [s.master for s in shards]
    paused_at = time.monotonic()
    try:
        waiting.parallel(
            lambda m: _client(connector, m).execute_command("CLIENT", "PAUSE", PAUSE_BOUND_MS, "WRITE"), masters
        )
        cut = datetime.now(UTC)
        offsets = waiting.parallel(
            lambda m: int(_client(connector, m).info("replication")["master_repl_offset"]), masters
        )
        keys = waiting.parallel(lambda m: int(_client(connector, m).dbsize()), masters)
        for s, offset, n in zip(shards, offsets, keys, strict=True):
            s.offset, s.keys = offset, n
        behind = {
            s.source.node_id
            for s, reached in zip(
                shards,
                waiting.parallel(lambda s: s.source is s.master or _reaches(connector, s.source, s.offset), shards),
                strict=True,
            )
            if not reached
        }
        for s in shards:
            if s.source.node_id in behind:
                progress(f"{s.source.name} lagged behind {s.master.name}'s offset {s.offset}: the master is the source")
                assert s.stream is not None
                s.stream.close()
                s.source, s.stream = s.master, _ReplicationStream.open(connector, s.master.address)
        for s in shards:
            assert s.stream is not None
            s.stream.send("PSYNC", "?", "-1")
        for s in shards:
            assert s.stream is not None
            offset = s.stream.full_resync()
            if offset != s.offset:
                raise _Stale(f"{s.source.name} snapshots at offset {offset}, the cut is at {s.offset}")
    finally:
        waiting.parallel(lambda m: _unpause(connector, m), masters)
        pause_ms = (time.monotonic() - paused_at) * 1000
    progress(
        f"cut at {cut.isoformat(timespec='milliseconds')}: writes paused {pause_ms:.0f} ms on {len(masters)} masters"
    )
    return shards, cut, pause_ms


def header(path: Path) -> bytes:
    """An RDB file's first bytes, which name its format (without reading the rest of a large file)."""
    with path.open("rb") as f:
        return f.read(9)


def _client(connector: Connector, m: Member) -> redis.Redis:
    return connector.client(m.address)


def _unpause(connector: Connector, master: Member) -> None:
    with contextlib.suppress(redis.RedisError, OSError):  # the pause lifts by itself at its bound anyway
        connector.client(master.address).execute_command("CLIENT", "UNPAUSE")


def _reaches(connector: Connector, replica: Member, offset: int) -> bool:
    deadline = time.monotonic() + CATCH_UP_S
    while True:
        info = connector.client(replica.address).info("replication")
        if int(info.get("slave_repl_offset", info.get("master_repl_offset", -1))) >= offset:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)


def _receive(shards: list[_Shard], work: Path, progress: waiting.Progress) -> list[ShardFile]:
    def one(i_shard: tuple[int, _Shard]) -> ShardFile:
        i, s = i_shard
        assert s.stream is not None
        path = work / f"shard-{i}.rdb"
        try:
            digest, size = s.stream.save_rdb(path)
        finally:
            s.stream.close()
        fmt = RdbFormat.of(header(path))
        progress(f"shard {i} ({format_ranges(s.master.slots)}): {size / 1e6:.1f} MB from {s.source.name}")
        return ShardFile(
            file=path.name,
            sha256=digest,
            bytes=size,
            rdb=str(fmt),
            slots=format_ranges(s.master.slots),
            master_id=s.master.node_id,
            source_id=s.source.node_id,
            source=s.source.name,
            offset=s.offset,
            keys=s.keys,
        )

    return waiting.parallel(one, list(enumerate(shards)))


class _ReplicationStream:
    """A replication connection read by hand: redis-py has no reader for a full resync's RDB payload."""

    def __init__(self, sock: socket.socket, address: str) -> None:
        self._sock, self._address, self._buf = sock, address, b""

    @staticmethod
    def open(connector: Connector, address: str) -> _ReplicationStream:
        host, port = connector.dial(address)
        sock = socket.create_connection((host, port), timeout=30)
        stream = _ReplicationStream(sock, address)
        if auth := connector.auth_args():
            # AUTH [user] password: auth_args is MIGRATE's form, where a user makes it AUTH2.
            stream.send("AUTH", *auth[1:])
            if not (line := stream._line()).startswith(b"+OK"):
                stream.close()
                raise BackupError(f"{address} refused the backup's login: {line.decode(errors='replace')}")
        return stream

    def send(self, *args: str) -> None:
        parts = [f"*{len(args)}\r\n".encode()]
        for a in args:
            b = a.encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(b), b))
        self._sock.sendall(b"".join(parts))

    def _fill(self) -> None:
        data = self._sock.recv(CHUNK)
        if not data:
            raise BackupError(f"{self._address} closed the replication connection")
        self._buf += data

    def _line(self) -> bytes:
        while b"\r\n" not in self._buf:
            self._fill()
        line, self._buf = self._buf.split(b"\r\n", 1)
        return line

    def full_resync(self) -> int:
        """The offset the server's new snapshot stands at (its ``+FULLRESYNC <replid> <offset>``)."""
        line = self._line().lstrip(b"\n")
        if not line.startswith(b"+FULLRESYNC"):
            raise BackupError(f"{self._address} answered PSYNC with {line.decode(errors='replace')[:200]}")
        return int(line.split()[2])

    def save_rdb(self, path: Path) -> tuple[str, int]:
        """Write the snapshot's bytes to ``path``; return their SHA-256 and size."""
        self._sock.settimeout(300)  # a large snapshot takes its time to fork-write before the first byte
        while True:
            while not self._buf:
                self._fill()
            if self._buf.startswith(b"\n"):  # keepalives while the server writes the snapshot
                self._buf = self._buf.lstrip(b"\n")
                continue
            break
        header = self._line()
        if not header.startswith(b"$") or header.startswith(b"$EOF:"):
            raise BackupError(f"{self._address} sent {header[:60]!r} instead of a snapshot's length")
        left = int(header[1:])
        digest, size = hashlib.sha256(), left
        with path.open("wb") as out:
            while left:
                if not self._buf:
                    self._fill()
                chunk, self._buf = self._buf[:left], self._buf[left:]
                out.write(chunk)
                digest.update(chunk)
                left -= len(chunk)
        return digest.hexdigest(), size

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.close()
