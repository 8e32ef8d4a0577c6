"""Which server reads what another wrote: ``engines`` against every installed server, pair by pair.

Each server saves a dump of the same few keys (a string, a hash, a key with a
TTL); every server then starts on every dump. What loaded must be exactly what
``Engine.reads`` says, and each server's header must be what ``Engine.writes``
says for the release its INFO reports: the table in bootstrap/engines.py is
this test's result, not a belief.
"""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from bench import servers
from bootstrap.engines import (
    REDIS,
    TESTED,
    VALKEY,
    Engine,
    RdbFormat,
    image_engine,
    move_refusal,
    moves_table,
    unreadable,
)
from tests.conftest import RedisFarm, RedisNode
from tests.toolkit import wait_for, wait_until

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


# --- moves: an image change from one engine to another ----------------------------------------------------

KEYS = 300
# Pairs run side by side, each on its own servers: a port is picked free and taken at start, so picking and
# starting (also a restart on the same port) happen one at a time.
_PORTS = threading.Lock()


def _link_up(node: RedisNode, keys: int) -> bool:
    c = node.client()
    return c.info("replication").get("master_link_status") == "up" and c.dbsize() == keys


def _take_over(replica: RedisNode) -> None:
    """CLUSTER FAILOVER, asked again every 10 s: a manual failover the master does not grant within its own
    5 s is dropped by the replica, which happened once in CI (Redis 7.0 -> Valkey 8.1, both CI lanes
    busy). What the test asks of the engines is that the new one loads and syncs, not that it is quick."""

    def took_over() -> str | None:
        if replica.client().info("replication")["role"] == "master":
            return None
        if time.monotonic() >= asked[0] + 10:
            with contextlib.suppress(redis.ResponseError):  # it became a master meanwhile: seen next time
                replica.client().cluster("failover")
            asked[0] = time.monotonic()
        return "not yet"

    replica.client().cluster("failover")
    asked = [time.monotonic()]
    wait_for("it took over", took_over, 40)


def _moved(farm: RedisFarm, old: str, new: str) -> str | None:
    """The bootstrap's roll on one shard, old engine -> new: the replica restarts onto the new binary over its
    own files and syncs from the old master, takes over, and the old master restarts onto the new binary and
    syncs from it. None when every key is on both at the end, else where the new engine could not go on."""
    with _PORTS:
        master, replica = farm.spawn(2, binary=old)
    m, r = master.client(), replica.client()
    m.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
    r.cluster("meet", master.host, master.port)
    master_id = m.cluster("myid")
    wait_until("the replica knows the master", lambda: master_id in r.execute_command("CLUSTER", "NODES"), 10)
    r.cluster("replicate", master_id)
    wait_until("the master serves", lambda: "cluster_state:ok" in m.execute_command("CLUSTER", "INFO"), 10)
    pipe = m.pipeline(transaction=False)
    for i in range(KEYS):
        pipe.set(f"k{i}", f"v{i}")
    pipe.execute()
    wait_until(f"{old}: the replica synced", lambda: _link_up(replica, KEYS), 30)
    try:
        with _PORTS:
            replica.restart(binary=new)
        wait_until("the replica on the new engine synced", lambda: _link_up(replica, KEYS), 30)
        _take_over(replica)
        with _PORTS:
            master.restart(binary=new)
        wait_until("the old master on the new engine synced", lambda: _link_up(master, KEYS), 30)
    except (RuntimeError, AssertionError) as exc:
        return str(exc).splitlines()[0][:300]  # the new engine could not load or sync what the old one wrote
    return None


def test_every_move_between_installed_servers_rolls_or_is_refused_as_move_refusal_says(tmp_path: Path) -> None:
    binaries = installed()
    if len(binaries) < 2:
        pytest.skip(f"fewer than two servers installed ({', '.join(binaries)})")
    engines = {}
    probe = RedisFarm(tmp_path / "probe")
    try:
        for name, binary in binaries.items():
            [node] = probe.spawn(1, cluster=False, binary=binary)
            engines[name] = Engine.from_info(node.client().info("server"))
    finally:
        probe.stop_all()
    # docs/engines.md lists the releases the tests run: each installed one is among them
    assert {(e.family, e.version[:2]) for e in engines.values()} <= {(e.family, e.version[:2]) for e in TESTED}
    pairs = [(old, new) for old in binaries for new in binaries if old != new]

    def move(pair: tuple[str, str]) -> str | None:
        farm = RedisFarm(tmp_path / f"{pair[0]}-to-{pair[1]}")
        try:
            return _moved(farm, binaries[pair[0]], binaries[pair[1]])
        finally:
            farm.stop_all()

    with ThreadPoolExecutor(max_workers=4) as pool:
        stopped = dict(zip(pairs, pool.map(move, pairs), strict=True))
    measured = {pair: stopped[pair] is None for pair in pairs}
    said = {(old, new): move_refusal(engines[old], engines[new]) is None for old, new in pairs}
    assert measured == said, {k: (stopped[k] or "rolled", said[k]) for k in pairs if measured[k] != said[k]}


def test_a_refused_move_names_both_releases_and_why() -> None:
    said = move_refusal(Engine(VALKEY, (9, 1, 2)), Engine(REDIS, (7, 0, 15)))
    assert said is not None
    assert "Valkey 9.1.2 -> Redis 7.0.15" in said and "VALKEY 80" in said and "REDIS 10" in said
    assert move_refusal(Engine(REDIS, (7, 0, 15)), Engine(VALKEY, (9, 1, 2))) is None
    # a downgrade in one family: 8.6 writes a format 8.2 does not know
    assert move_refusal(Engine(REDIS, (8, 6, 3)), Engine(REDIS, (8, 2, 3))) is not None


@pytest.mark.parametrize(
    ("ref", "engine"),
    [
        ("localhost/redis-cluster/redis:7.0-local", Engine(REDIS, (7, 0, 0))),
        ("localhost/redis-cluster/valkey:9.1-local", Engine(VALKEY, (9, 1, 0))),
        ("valkey/valkey:9.0.1-alpine", Engine(VALKEY, (9, 0, 1))),
        ("registry.example:5000/team/redis:8.6.3@sha256:0123", Engine(REDIS, (8, 6, 3))),
        ("bitnami/redis-cluster:7.2.4-debian-12-r1", Engine(REDIS, (7, 2, 4))),
        ("redis:7", None),  # any 7.x: 7.4 writes a format Valkey cannot read, 7.0 one it can
        ("redis:latest", None),
        ("redis", None),
        ("registry.example:5000/redis", None),
        ("cache:1.2", None),
    ],
)
def test_the_engine_an_image_name_says(ref: str, engine: Engine | None) -> None:
    assert image_engine(ref) == engine


def test_the_docs_show_every_tested_move() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "engines.md").read_text()
    assert moves_table() in text, "docs/engines.md is stale: paste bootstrap.engines.moves_table() into it"
