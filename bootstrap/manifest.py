"""What a backup holds, as written next to its files (``manifest.json``); no I/O here.

The restore trusts nothing it has not checked against this: each file's size,
SHA-256 and format, and that the shards' slots do not overlap.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from bootstrap.errors import ManifestError
from bootstrap.model import parse_slot_selection

MANIFEST = "manifest.json"
VERSION = 1


@dataclass(frozen=True)
class ShardFile:
    """One shard's snapshot: which slots its master served at the cut, and where the bytes came from."""

    file: str
    sha256: str
    bytes: int
    rdb: str  # the format its header names, e.g. "REDIS 10"
    slots: str  # ranges, e.g. "0-5460"
    master_id: str
    source_id: str  # the node the snapshot was taken on (a caught-up replica, or the master)
    source: str
    offset: int  # the master's replication offset at the cut
    keys: int  # the master's key count at the cut


@dataclass(frozen=True)
class Manifest:
    engine: str
    cut: str  # ISO time of the cut (UTC)
    pause_ms: float
    shards: tuple[ShardFile, ...]

    def to_json(self) -> dict[str, Any]:
        return {"version": VERSION, **asdict(self), "shards": [asdict(s) for s in self.shards]}

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> Manifest:
        if data.get("version") != VERSION:
            raise ManifestError(f"manifest version {data.get('version')!r}: this tool reads version {VERSION}")
        try:
            shards = tuple(_shard(s) for s in data["shards"])
            manifest = Manifest(
                engine=str(data["engine"]), cut=str(data["cut"]), pause_ms=float(data["pause_ms"]), shards=shards
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ManifestError(f"manifest field missing or malformed: {exc}") from exc
        manifest.check()
        return manifest

    def check(self) -> None:
        """Shards named once each, slots of no two shards overlapping."""
        if not self.shards:
            raise ManifestError("the manifest lists no shard")
        names = [s.file for s in self.shards]
        if twice := sorted({n for n in names if names.count(n) > 1}):
            raise ManifestError(f"the manifest lists {', '.join(twice)} more than once")
        seen: dict[int, str] = {}
        for s in self.shards:
            for slot in parse_slot_selection(s.slots):
                if slot in seen:
                    raise ManifestError(f"slot {slot} is in both {seen[slot]} and {s.file}")
                seen[slot] = s.file

    @property
    def keys(self) -> int:
        return sum(s.keys for s in self.shards)


def _shard(data: Mapping[str, Any]) -> ShardFile:
    names = {f.name for f in fields(ShardFile)}
    if missing := sorted(names - set(data)):
        raise ManifestError(f"a shard lacks {', '.join(missing)}")
    return ShardFile(**{k: data[k] for k in names})
