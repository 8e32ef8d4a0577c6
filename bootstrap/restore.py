"""Restore a backup into a formed cluster of any shape (``python -m bootstrap restore``).

Every check runs before the first key is written, and each refusal names the
file or node: the manifest against the files (each one present, its size,
SHA-256 and header format as recorded, no stray shard file); the target's
engine against each file's format (``engines``); a target that holds keys
(unless ``replace``); a server for the restore that cannot load a file.

Then each shard's file is loaded by a temporary server of our own (standalone,
loopback, no persistence), and its keys go to the masters that own their slots
now, server to server: ``MIGRATE … KEYS`` in batches, TTLs included, whatever
the target's shape (3 masters into 5 or into 2). Progress in keys and keys/s.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import subprocess
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis
from redis.crc import key_slot

from bootstrap import errors, waiting
from bootstrap import operations as ops
from bootstrap.backup import header
from bootstrap.endpoints import Connector, Inventory
from bootstrap.engines import Engine, RdbFormat, unreadable
from bootstrap.errors import ManifestError, RestoreRefused
from bootstrap.manifest import MANIFEST, Manifest
from bootstrap.model import Member, Snapshot

SCAN_COUNT = 5000
MIGRATE_TIMEOUT_MS = 60_000
START_S = 120.0  # a temporary server loading a large shard
REPORT_S = 2.0
VALKEY_FORMATS_FROM = 80  # Valkey 9 numbers its own formats from 80, above any of Redis'


@dataclass(frozen=True)
class Restored:
    keys: int
    seconds: float


def verify(backup: Path) -> Manifest:
    """The manifest, once every file matches it; RestoreRefused naming the first file that does not."""
    try:
        manifest = Manifest.from_json(json.loads((backup / MANIFEST).read_text()))
    except FileNotFoundError as exc:
        raise RestoreRefused(f"{backup} has no {MANIFEST}: not a backup, or an incomplete one") from exc
    except (ManifestError, json.JSONDecodeError) as exc:
        raise RestoreRefused(f"{backup / MANIFEST}: {exc}") from exc
    listed = {s.file for s in manifest.shards}
    if stray := sorted(p.name for p in backup.glob("*.rdb") if p.name not in listed):
        raise RestoreRefused(f"{backup}: {', '.join(stray)} not in the manifest (a file from another backup?)")
    for shard in manifest.shards:
        path = backup / shard.file
        if not path.is_file():
            raise RestoreRefused(f"{path} is missing: the manifest lists it for slots {shard.slots}")
        if (size := path.stat().st_size) != shard.bytes:
            raise RestoreRefused(f"{path} has {size} bytes, the manifest says {shard.bytes} (truncated or replaced)")
        if (digest := _sha256(path)) != shard.sha256:
            raise RestoreRefused(f"{path}: SHA-256 {digest[:16]}…, the manifest says {shard.sha256[:16]}…")
        try:
            fmt = RdbFormat.of(header(path))
        except ValueError as exc:
            raise RestoreRefused(f"{path}: {exc}") from exc
        if str(fmt) != shard.rdb:
            raise RestoreRefused(f"{path} is in format {fmt}, the manifest says {shard.rdb}")
    return manifest


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def restore(
    inventory: Inventory,
    connector: Connector,
    backup: Path,
    server: str,
    progress: waiting.Progress,
    replace: bool = False,
) -> Restored:
    """Put every key of ``backup`` into the cluster; refuse (RestoreRefused) before writing when anything is off."""
    manifest = verify(backup)
    snap = ops.take_snapshot(inventory, connector, tolerate_unreachable=True)
    owners = _owners(snap)
    masters = sorted({m.address: m for m in owners.values()}.values(), key=lambda m: m.name)
    for m in masters:
        engine = Engine.from_info(connector.client(m.address).info("server"))
        for shard in manifest.shards:
            if why := unreadable(engine, RdbFormat.of(header(backup / shard.file)), shard.file):
                raise RestoreRefused(f"{m.name}: {why}")
    if not replace and (held := {m.name: n for m in masters if (n := int(connector.client(m.address).dbsize()))}):
        said = ", ".join(f"{name} {n:,}" for name, n in held.items())
        raise RestoreRefused(f"the target holds keys ({said}): restore into an empty cluster, or pass --replace")
    with tempfile.TemporaryDirectory(prefix="redis-cluster-restore-") as tmp:
        loaders = []
        try:
            for i, shard in enumerate(manifest.shards):
                loaders.append(_Loader.start(server, backup / shard.file, Path(tmp) / f"shard-{i}"))
            target_engine = Engine.from_info(connector.client(masters[0].address).info("server"))
            for loader in loaders:
                moved_as = f"{server} ({loader.engine}) moves keys in what"
                if why := unreadable(target_engine, loader.payload_format(), moved_as):
                    raise RestoreRefused(f"{masters[0].name}: {why}; pass --server with a release the target reads")
            total = sum(loader.keys for loader in loaders)
            progress(f"restoring {total:,} keys from {len(loaders)} shard files into {len(masters)} masters")
            return _migrate_all(loaders, owners, connector, progress, replace, total)
        finally:
            for loader in loaders:
                loader.stop()


def _owners(snap: Snapshot) -> dict[int, Member]:
    owners = {slot: m for m in snap.members if m.is_master for slot in m.slots}
    if len(owners) < 16384:
        raise RestoreRefused(f"{16384 - len(owners)} slots of the target are not served: form or heal it first")
    return owners


def _migrate_all(
    loaders: list[_Loader],
    owners: dict[int, Member],
    connector: Connector,
    progress: waiting.Progress,
    replace: bool,
    total: int,
) -> Restored:
    started = time.monotonic()
    done = [0]
    lock = threading.Lock()
    stop = threading.Event()

    def count(n: int) -> None:
        with lock:
            done[0] += n

    def report() -> None:
        while not stop.wait(REPORT_S):
            rate = done[0] / max(time.monotonic() - started, 1e-6)
            progress(f"restored {done[0]:,} of {total:,} keys ({rate:,.0f} keys/s)")

    reporter = threading.Thread(target=report, daemon=True)
    reporter.start()
    try:
        waiting.parallel(lambda loader: loader.migrate(owners, connector, replace, count), loaders)
    finally:
        stop.set()
    seconds = time.monotonic() - started
    progress(f"restored {done[0]:,} keys in {seconds:.1f}s ({done[0] / max(seconds, 1e-6):,.0f} keys/s)")
    return Restored(done[0], seconds)


@dataclass
class _Loader:
    """A temporary server holding one shard's snapshot, and the keys it moves out."""

    proc: subprocess.Popen[bytes]
    client: redis.Redis
    file: Path
    engine: Engine
    keys: int

    @staticmethod
    def start(server: str, file: Path, work: Path) -> _Loader:
        work.mkdir()
        (work / "dump.rdb").symlink_to(file.resolve())
        port = _free_port()
        args = [server, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(work), "--save", "",
                "--appendonly", "no", "--protected-mode", "yes", "--logfile", str(work / "server.log")]  # fmt: skip
        try:
            proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except OSError as exc:
            raise RestoreRefused(f"cannot start {server} to load the shard files ({exc}); pass --server PATH") from exc
        try:
            return _Loader._loaded(proc, port, server, file, work)
        except BaseException:
            _stop(proc)  # ours, started a moment ago: never left running with a shard's data
            raise

    @staticmethod
    def _loaded(proc: subprocess.Popen[bytes], port: int, server: str, file: Path, work: Path) -> _Loader:
        client = redis.Redis(port=port, socket_timeout=MIGRATE_TIMEOUT_MS / 1000 + 5, decode_responses=False)
        deadline = time.monotonic() + START_S
        while True:
            if proc.poll() is not None:
                log = (work / "server.log").read_text(errors="replace").strip().splitlines()
                why = next((ln for ln in reversed(log) if "#" in ln), log[-1] if log else "no log")
                raise RestoreRefused(f"{server} could not load {file}: {why.split('# ', 1)[-1]}")
            with contextlib.suppress(redis.ConnectionError, redis.BusyLoadingError):
                client.ping()
                break
            if time.monotonic() > deadline:
                raise RestoreRefused(f"{server} did not finish loading {file} within {START_S:.0f}s")
            time.sleep(0.05)
        info = {k: v.decode() if isinstance(v, bytes) else v for k, v in client.info("server").items()}
        engine = Engine.from_info(info)
        return _Loader(proc, client, file, engine, int(client.dbsize()))

    def migrate(
        self, owners: dict[int, Member], connector: Connector, replace: bool, count: Callable[[int], None]
    ) -> None:
        auth = connector.auth_args()
        passes = 0
        while (left := int(self.client.dbsize())) and passes < 3:
            passes += 1
            cursor = 0
            while True:
                cursor, found = self.client.scan(cursor, count=SCAN_COUNT)
                by_owner: dict[str, list[bytes]] = defaultdict(list)
                for k in found:
                    raw = k if isinstance(k, bytes) else str(k).encode()  # bytes: this client does not decode
                    by_owner[owners[key_slot(raw)].address].append(raw)
                for address, batch in by_owner.items():
                    host, port = connector.dial(address)
                    options = ["REPLACE"] if replace else []
                    try:
                        self.client.execute_command(
                            "MIGRATE", host, port, "", 0, MIGRATE_TIMEOUT_MS, *options, *auth, "KEYS", *batch
                        )
                    except redis.ResponseError as exc:  # BUSYKEY, a refused login, a moved slot ...
                        raise errors.BootstrapError(f"moving keys of {self.file.name} to {address}: {exc}") from exc
                    count(len(batch))
                if cursor == 0:
                    break
        if left := int(self.client.dbsize()):
            raise errors.BootstrapError(f"{left} keys of {self.file.name} could not be moved after 3 passes")

    def payload_format(self) -> RdbFormat:
        """The format MIGRATE sends in: what DUMP writes here (its last 10 bytes: 2 of version, 8 of CRC).

        Asked of the server itself: a release between two rows of the engines table may write a newer
        format than the table says, and a target that cannot read it would fail after writes began."""
        for key in self.client.scan_iter(count=10):
            payload = self.client.dump(key)
            if isinstance(payload, bytes) and len(payload) >= 10:
                version = int.from_bytes(payload[-10:-8], "little")
                return RdbFormat("VALKEY" if version >= VALKEY_FORMATS_FROM else "REDIS", version)
        return self.engine.writes()  # nothing to move: nothing MIGRATE could send

    def stop(self) -> None:
        _stop(self.proc)
        self.client.close()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _free_port() -> int:
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
