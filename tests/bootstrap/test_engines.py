"""Which server reads what another wrote: ``engines`` against every installed server, pair by pair.

Each server saves a dump of the same few keys (a string, a hash, a key with a
TTL); every server then starts on every dump. What loaded must be exactly what
``Engine.reads`` says, and each server's header must be what ``Engine.writes``
says for the release its INFO reports: the table in bootstrap/engines.py is
this test's result, not a belief.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench import servers
from bootstrap.engines import REDIS, VALKEY, Engine, RdbFormat, unreadable
from tests.conftest import RedisFarm

NAMES = ("redis-7", "redis-8", "redis-8.6", "valkey-8", "valkey-9")
PLAIN = {"appendonly": "no"}  # load the dump, not an AOF


def installed() -> dict[str, str]:
    found = {}
    for name in NAMES:
        try:
            found[name] = servers.resolve_server(name)
        except ValueError:
            continue
    return found


def test_every_installed_server_loads_exactly_the_dumps_engines_says_it_reads(redis_farm: RedisFarm) -> None:
    binaries = installed()
    if len(binaries) < 2:
        pytest.skip(f"fewer than two servers installed ({', '.join(binaries)})")
    dumps: dict[str, tuple[Path, RdbFormat]] = {}
    engines: dict[str, Engine] = {}
    for name, binary in binaries.items():
        [node] = redis_farm.spawn(1, cluster=False, extra=PLAIN, binary=binary)
        c = node.client()
        engines[name] = Engine.from_info(c.info("server"))
        c.set("k", "v")
        c.hset("h", mapping={"a": "1"})
        c.set("t", "x", px=600_000)
        c.save()
        dump = node.dir / "dump.rdb"
        fmt = RdbFormat.of(dump.read_bytes()[:9])
        assert fmt == engines[name].writes(), f"{name} ({engines[name]}) writes {fmt}"
        dumps[name] = (dump, fmt)
        node.stop()
    measured, said = {}, {}
    for src, (dump, fmt) in dumps.items():
        for dst, binary in binaries.items():
            node = redis_farm.add(cluster=False, extra=PLAIN, binary=binary)
            node.dir.mkdir(parents=True)
            shutil.copy(dump, node.dir / "dump.rdb")
            try:
                node.start()
                measured[src, dst] = node.client().dbsize() == 3
            except Exception:  # it refused the file: it does not answer
                measured[src, dst] = False
            node.stop()
            said[src, dst] = engines[dst].reads(fmt)
    assert measured == said, {k: (measured[k], said[k]) for k in measured if measured[k] != said[k]}


@given(
    st.sampled_from([REDIS, VALKEY]),
    st.tuples(st.integers(7, 12), st.integers(0, 9), st.integers(0, 20)).filter(lambda v: v >= (7, 2, 0)),
)
def test_a_server_reads_what_it_writes_and_every_older_release_of_its_family_wrote(
    family: str, version: tuple[int, int, int]
) -> None:
    engine = Engine(family, version)
    assert engine.reads(engine.writes())
    older = Engine(family, (7, 0, 0) if family == REDIS else (7, 2, 0))
    assert engine.reads(older.writes())
    assert unreadable(engine, engine.writes(), "the file") is None


def test_the_refusal_names_the_file_both_formats_and_the_server() -> None:
    said = unreadable(Engine(REDIS, (7, 0, 15)), RdbFormat("VALKEY", 80), "shard-0.rdb")
    assert said is not None
    assert "shard-0.rdb" in said and "VALKEY 80" in said and "Redis 7.0.15" in said and "REDIS 10" in said


def test_valkey_reports_its_own_release_not_the_redis_version_it_shows_clients() -> None:
    assert Engine.from_info({"redis_version": "7.2.4", "valkey_version": "9.1.2", "server_name": "valkey"}) == Engine(
        VALKEY, (9, 1, 2)
    )
    assert Engine.from_info({"redis_version": "8.6.3"}) == Engine(REDIS, (8, 6, 3))
    with pytest.raises(ValueError, match="not an RDB file"):
        RdbFormat.of(b"hello wor")
