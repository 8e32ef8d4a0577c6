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

The same rule decides which engine moves a `pulumi up` may make by changing the
image (``move_refusal``): a pod restarted onto the new image loads the data its
old engine wrote (its data and its nodes.conf), and a replica on the new engine
takes a full sync from a master still on the old one. A move is refused,
before any pod restarts, when the new engine cannot read either.
The moves measured on loopback (tests/bootstrap/test_engines.py: a master and
its replica on the old engine, the replica restarted onto the new one over its
own files and synced, a handover, the old master restarted the same way) and
on Kubernetes (tests/e2e) are ``TESTED`` and ``ON_KUBERNETES``; docs/engines.md shows them
(``moves_table``).
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


# The releases the tests run (bench/servers.py SERVERS): every ordered pair of them is moved or refused on
# loopback (tests/bootstrap/test_engines.py); ON_KUBERNETES are made (or refused) by `pulumi up` on
# Kubernetes as well (tests/e2e). docs/engines.md shows ``moves_table()``.
TESTED = (
    Engine(REDIS, (7, 0, 15)),
    Engine(REDIS, (8, 2, 3)),
    Engine(REDIS, (8, 6, 3)),
    Engine(VALKEY, (8, 1, 8)),
    Engine(VALKEY, (9, 1, 2)),
)
ON_KUBERNETES = frozenset(
    {(TESTED[0], TESTED[4]), (TESTED[0], TESTED[2]), (TESTED[4], TESTED[0]), (TESTED[2], TESTED[0])}
)


def moves_table() -> str:
    """Every tested move as a Markdown table: from, to, allowed or refused, where it was proven."""
    rows = ["| from | to | by `pulumi up` | proven |", "|---|---|---|---|"]
    for old in TESTED:
        for new in TESTED:
            if old == new:
                continue
            verdict = "refused" if move_refusal(old, new) else "rolled"
            where = "loopback, Kubernetes" if (old, new) in ON_KUBERNETES else "loopback"
            rows.append(f"| {old} | {new} | {verdict} | {where} |")
    return "\n".join(rows) + "\n"


def move_refusal(old: Engine, new: Engine) -> str | None:
    """Why a cluster on ``old`` cannot be rolled onto ``new`` (a downgrade, or a move the new engine cannot
    read), or None when it can: the one rule for an engine change.

    Two things a restarted pod reads: its data (the RDB format, ``reads``) and its cluster config file.
    Valkey's nodes.conf carries fields Redis calls corrupt (``client-ipv4=...``, measured: Valkey 8.1 ->
    Redis 8.2 stops with "corrupted cluster config file" although the RDB would load), so no Valkey ->
    Redis move is made; Redis' own is read by Valkey.
    """
    if not new.reads(old.writes()):
        why = (
            f"{new} cannot load what {old} wrote (format {old.writes()}; {new} reads its own family's formats up "
            f"to {new.writes()}"
            + (f" and Redis formats up to {VALKEY_READS_REDIS_UP_TO}" if new.family == VALKEY else "")
            + ")"
        )
    elif old.family == VALKEY and new.family == REDIS:
        why = f"{new} cannot read the cluster config file (nodes.conf) {old} writes: it has fields Redis calls corrupt"
    else:
        return None
    return (
        f"{old} -> {new} is refused: {why}, so a pod restarted onto it would not start and a replica on it could "
        f"not sync. Keep the image on {old}, or move to a release that reads it (docs/engines.md)"
    )


# An image reference's repository (last path segment) and tag: `registry:5000/team/valkey:9.0.1-alpine@sha256:..`
_IMAGE = re.compile(r"^(?:.*/)?(?P<repo>[^/:@]+)(?::(?P<tag>[^/@]+))?(?:@.*)?$")
_TAG_RELEASE = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?(?![\d.])")


def image_engine(ref: str) -> Engine | None:
    """The engine an image's name says it runs: ``valkey`` or ``redis`` in the repository's name, the
    release from the tag (``7.0-local``, ``8.6.3-alpine``, ``9.1``). None when the name does not say (no
    tag, ``latest``, a major alone such as ``redis:7``, which may be any 7.x, or another name): such an
    image's move is not checked by name, and the log says so."""
    m = _IMAGE.match(ref.strip())
    if m is None or not m.group("tag"):
        return None
    repo = m.group("repo").lower()
    family = VALKEY if "valkey" in repo else REDIS if "redis" in repo else None
    release = _TAG_RELEASE.match(m.group("tag"))
    if family is None or release is None:
        return None
    return Engine(family, (int(release.group(1)), int(release.group(2)), int(release.group(3) or 0)))


def _release(text: str) -> tuple[int, int, int]:
    parts = [int(p) for p in re.findall(r"\d+", text)[:3]]
    if not parts:
        raise ValueError(f"no version number in {text!r}")
    major, minor, patch = [*parts, 0, 0][:3]
    return major, minor, patch
