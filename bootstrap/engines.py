"""Which server reads what another wrote: the RDB format each engine writes, and which it reads.

A backup restores only into a server that can load it, and a replica follows
only a master whose replication stream (an RDB, then commands) it can read.
Both rest on one rule, ``reads``, checked before anything is written. The
rows below were measured: every server the tests have saved a dump, and every
other one loaded it (tests/bootstrap/test_engines.py). ``_WRITES`` adds three
releases from their release notes (Redis 7.2 writes 11, 7.4 writes 12, Valkey
9.0 writes 80), not measured here:

==================  =========  ========================================
writer              format     read by
==================  =========  ========================================
Redis 7.0           REDIS 10   every one of them
Valkey 8.1          REDIS 11   Redis 8.2, Redis 8.6, Valkey 8.1, Valkey 9.1
Redis 8.2           REDIS 12   Redis 8.2, Redis 8.6
Redis 8.6           REDIS 13   Redis 8.6
Valkey 9.1          VALKEY 80  Valkey 9.1
==================  =========  ========================================

A format is read by the same family at the same or a later format; Valkey
reads Redis formats up to 11 (Redis 7.2's) and no later one. A release between
two rows is taken to write the earlier row's format: as a reader, that can
refuse a restore it could load, never allow one it cannot. What a server
writes is therefore asked of the server itself where it matters (the restore's
loader DUMPs a key), not taken from this table.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

REDIS, VALKEY = "redis", "valkey"
# Valkey loads Redis' formats up to Redis 7.2's; 12 (Redis 7.4) and later are Redis' own.
VALKEY_READS_REDIS_UP_TO = 11
# (family, first release writing it) -> (magic, format version). Redis 7.2/7.4 from their release notes.
_WRITES: dict[tuple[str, tuple[int, int]], tuple[str, int]] = {
    (REDIS, (7, 0)): ("REDIS", 10),
    (REDIS, (7, 2)): ("REDIS", 11),
    (REDIS, (7, 4)): ("REDIS", 12),
    (REDIS, (8, 6)): ("REDIS", 13),
    (VALKEY, (7, 2)): ("REDIS", 11),
    (VALKEY, (9, 0)): ("VALKEY", 80),
}
_HEADER = re.compile(rb"^(REDIS|VALKEY)(\d{3,4})")


@dataclass(frozen=True, order=True)
class RdbFormat:
    """What an RDB file's first bytes say: ``REDIS0011`` is ("REDIS", 11), ``VALKEY080`` ("VALKEY", 80)."""

    magic: str
    version: int

    @staticmethod
    def of(head: bytes) -> RdbFormat:
        m = _HEADER.match(head)
        if m is None:
            raise ValueError(f"not an RDB file: it starts with {head[:9]!r}, not REDIS<nnnn> or VALKEY<nnn>")
        return RdbFormat(m.group(1).decode(), int(m.group(2)))

    def __str__(self) -> str:
        return f"{self.magic} {self.version}"


@dataclass(frozen=True)
class Engine:
    """A server's family and release, from its INFO server section."""

    family: str
    version: tuple[int, int, int]

    @staticmethod
    def from_info(info: Mapping[str, Any]) -> Engine:
        """Valkey reports ``redis_version:7.2.4`` (for clients) and its own ``valkey_version``."""
        if info.get("valkey_version") or info.get("server_name") == VALKEY:
            return Engine(VALKEY, _release(str(info.get("valkey_version") or info.get("redis_version"))))
        return Engine(REDIS, _release(str(info.get("redis_version", ""))))

    def __str__(self) -> str:
        return f"{self.family.capitalize()} {'.'.join(map(str, self.version))}"

    def writes(self) -> RdbFormat:
        """The format it saves in: that of the latest table row of its family at or before its release."""
        rows = [(first, fmt) for (family, first), fmt in _WRITES.items() if family == self.family]
        known = [fmt for first, fmt in sorted(rows) if first <= self.version[:2]]
        if not known:
            raise ValueError(f"{self} is older than any release this tool knows (Redis 7.0, Valkey 7.2)")
        return RdbFormat(*known[-1])

    def reads(self, fmt: RdbFormat) -> bool:
        own = self.writes()
        if fmt.magic == own.magic:
            return fmt.version <= own.version
        if fmt.magic == "REDIS" and self.family == VALKEY:
            return fmt.version <= VALKEY_READS_REDIS_UP_TO
        return False  # a Valkey format on Redis


def unreadable(engine: Engine, fmt: RdbFormat, what: str) -> str | None:
    """Why ``engine`` cannot load ``fmt`` (``what`` names the file or the writer), or None when it can."""
    if engine.reads(fmt):
        return None
    return (
        f"{what} is in format {fmt}, which {engine} cannot load (it writes {engine.writes()}; a server reads "
        f"its own family's formats up to its own, and Valkey reads Redis formats up to "
        f"{VALKEY_READS_REDIS_UP_TO} only)"
    )


def _release(text: str) -> tuple[int, int, int]:
    parts = [int(p) for p in re.findall(r"\d+", text)[:3]]
    if not parts:
        raise ValueError(f"no version number in {text!r}")
    major, minor, patch = [*parts, 0, 0][:3]
    return major, minor, patch
