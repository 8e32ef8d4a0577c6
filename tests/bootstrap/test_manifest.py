"""The backup manifest: what is written reads back the same; a manifest that contradicts itself is refused."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bootstrap.errors import ManifestError
from bootstrap.manifest import Manifest, ShardFile
from bootstrap.model import format_ranges


def shard(i: int, slots: frozenset[int]) -> ShardFile:
    return ShardFile(
        file=f"shard-{i}.rdb",
        sha256="0" * 64,
        bytes=100 + i,
        rdb="REDIS 10",
        slots=format_ranges(slots),
        master_id=f"{i:040x}",
        source_id=f"{i + 100:040x}",
        source=f"127.0.0.1:{7000 + i}",
        offset=1000 * i,
        keys=10 * i,
    )


@given(st.lists(st.integers(0, 16383), min_size=1, max_size=8, unique=True).map(sorted))
def test_a_manifest_reads_back_as_written(cuts: list[int]) -> None:
    bounds = [0, *cuts, 16384]
    pairs = [(lo, hi) for lo, hi in itertools.pairwise(bounds) if hi > lo]
    shards = tuple(shard(i, frozenset(range(lo, hi))) for i, (lo, hi) in enumerate(pairs))
    manifest = Manifest(engine="Redis 7.0.15", cut="2026-12-07T06:00:00.000+00:00", pause_ms=12.5, shards=shards)
    assert Manifest.from_json(json.loads(json.dumps(manifest.to_json()))) == manifest
    assert manifest.keys == sum(s.keys for s in shards)


def test_overlapping_slots_a_shard_named_twice_and_an_unknown_version_are_refused() -> None:
    base = Manifest(engine="Redis 7.0.15", cut="t", pause_ms=1.0, shards=(shard(0, frozenset(range(0, 10))),))
    overlapping = base.to_json()
    overlapping["shards"].append({**overlapping["shards"][0], "file": "shard-1.rdb", "slots": "5-20"})
    with pytest.raises(ManifestError, match=r"slot 5 is in both shard-0\.rdb and shard-1\.rdb"):
        Manifest.from_json(overlapping)
    twice = base.to_json()
    twice["shards"].append({**twice["shards"][0], "slots": "11-20"})
    with pytest.raises(ManifestError, match=r"shard-0\.rdb more than once"):
        Manifest.from_json(twice)
    with pytest.raises(ManifestError, match="version 7"):
        Manifest.from_json({**base.to_json(), "version": 7})
    lacking = base.to_json()
    del lacking["shards"][0]["sha256"]
    with pytest.raises(ManifestError, match="lacks sha256"):
        Manifest.from_json(lacking)
