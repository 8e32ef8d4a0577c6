"""Backup and restore on real servers: one consistent cut, restored into any shape, bad input refused.

The test that matters is the first: a client writes a counter's keys in order
across every shard (key i only after key i-1 was acknowledged) while the
backup runs. Restored into a fresh cluster of another shape, the keys present
must be exactly 0..k: every key before the cut, none after it. A backup that
saved each shard at its own moment would show gaps (a later key on one shard
without an earlier one on another).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from redis.cluster import RedisCluster

from bench import data
from bootstrap import errors
from bootstrap.backup import backup
from bootstrap.endpoints import DirectConnector, connected, static_inventory
from bootstrap.errors import RestoreRefused
from bootstrap.manifest import MANIFEST
from bootstrap.restore import restore, verify
from tests.bootstrap.helpers import HOSTS, apply, load, missing_keys
from tests.conftest import REDIS_SERVER, RedisFarm, RedisNode
from tests.toolkit import Writer, cluster_client, run_cli

TTL_MS = 600_000


def take(nodes: list[RedisNode], to: Path, said: list[str] | None = None) -> Path:
    with connected(DirectConnector()) as connector:
        return backup(static_inventory([n.address for n in nodes]), connector, to, (said or []).append)


def put_back(nodes: list[RedisNode], source: Path, replace: bool = False) -> int:
    with connected(DirectConnector()) as connector:
        inventory = static_inventory([n.address for n in nodes])
        return restore(inventory, connector, source, REDIS_SERVER, print, replace=replace).keys


def counter(nodes: list[RedisNode]) -> Writer:
    """Writes seq:0, seq:1, ... one after the other, each only once the previous was acknowledged."""
    return Writer(lambda: cluster_client(nodes), "seq:", limit_s=120)


def assert_one_cut(rc: RedisCluster, before: int, after: int) -> None:
    """The counter's keys present are exactly 0..k, with the backup's run between ``before`` and ``after``
    writes; the ``ttl:`` keys kept their TTLs."""
    seq = rc.mget_nonatomic([f"seq:{i}" for i in range(after + 1)])
    present = [i for i, v in enumerate(seq) if v is not None]
    assert all(seq[i] == str(i) for i in present)
    k = len(present)
    assert present == list(range(k)), f"a gap: key {next(i for i in range(k) if present[i] != i)} is missing"
    assert before <= k <= after, f"the cut at {k} is not within the backup's run ({before}..{after})"
    ttls = [rc.pttl(f"ttl:{i}") for i in range(0, 500, 50)]
    assert all(0 < t <= TTL_MS for t in ttls), ttls


def test_a_backup_is_one_cut_across_every_shard_and_restores_into_five_masters(
    redis_farm: RedisFarm, tmp_path: Path
) -> None:
    source = redis_farm.spawn(6, hosts=HOSTS)
    apply(source, 3, 1)
    load(source, 20_000)
    rc = cluster_client(source)
    for i in range(500):
        rc.set(f"ttl:{i}", "t", px=TTL_MS)
    rc.close()
    said: list[str] = []
    with counter(source) as writer:
        while writer.written < 300:
            time.sleep(0.01)
        before = writer.written
        made = take(source, tmp_path / "backups", said)
        after = writer.written
        time.sleep(0.2)
    manifest = verify(made)
    assert manifest.pause_ms < 1000, f"writes were paused {manifest.pause_ms} ms"
    assert {s.source_id for s in manifest.shards}.isdisjoint(s.master_id for s in manifest.shards), (
        f"a master forked though it had a caught-up replica: {said}"
    )
    target = redis_farm.spawn(5, hosts=HOSTS)
    apply(target, 5, 0)

    restored = put_back(target, made)

    assert restored == manifest.keys
    rc = cluster_client(target)
    assert_one_cut(rc, before, after)
    rc.close()
    assert missing_keys(target, 20_000) == []


MILLION = 1_000_000


def test_the_command_line_restores_a_million_keys_of_three_masters_into_five_and_into_two(
    redis_farm: RedisFarm, tmp_path: Path
) -> None:
    slots = data.keys_by_slot(MILLION)  # the bench's key space: loaded and read back per owner, pipelined
    source = redis_farm.spawn(3, hosts=HOSTS)
    apply(source, 3, 0)
    data.load(source[0].client(), slots)
    made = run_cli("backup", "--to", str(tmp_path), source[0].address)
    assert made.returncode == 0, made.stderr
    backup_dir = Path(made.stdout.strip())
    assert "writes paused" in made.stderr and not list(tmp_path.glob(".*partial")), made.stderr
    for masters in (5, 2):
        target = redis_farm.spawn(masters, hosts=HOSTS)
        apply(target, masters, 0)
        done = run_cli("restore", "--from", str(backup_dir), "--server", REDIS_SERVER, target[0].address)
        assert done.returncode == 0, done.stderr
        assert f"restored {MILLION:,} keys" in done.stderr, done.stderr
        assert data.count_lost(target[0].client(), slots) == (0, MILLION), f"into {masters}"
        for node in target:
            node.stop()


@pytest.fixture
def backed_up(redis_farm: RedisFarm, tmp_path: Path) -> tuple[Path, list[RedisNode]]:
    """A 3-shard backup of 3,000 keys, and an empty 3-master target."""
    source = redis_farm.spawn(3, hosts=HOSTS)
    apply(source, 3, 0)
    load(source, 3000)
    made = take(source, tmp_path / "backups")
    target = redis_farm.spawn(3, hosts=HOSTS)
    apply(target, 3, 0)
    return made, target


def refused(target: list[RedisNode], made: Path, *words: str) -> None:
    with pytest.raises(RestoreRefused) as err:
        put_back(target, made)
    assert all(w in str(err.value) for w in words), err.value
    assert sum(n.client().dbsize() for n in target) == 0, "something was written before the refusal"


def test_a_changed_file_is_refused_by_its_checksum_naming_it(backed_up: tuple[Path, list[RedisNode]]) -> None:
    made, target = backed_up
    shard = made / "shard-1.rdb"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    refused(target, made, "shard-1.rdb", "SHA-256")


def test_a_missing_or_a_stray_shard_file_is_refused(backed_up: tuple[Path, list[RedisNode]]) -> None:
    made, target = backed_up
    (made / "shard-2.rdb").rename(made / "elsewhere.bin")
    refused(target, made, "shard-2.rdb", "missing")
    (made / "elsewhere.bin").rename(made / "shard-2.rdb")
    (made / "shard-9.rdb").write_bytes((made / "shard-0.rdb").read_bytes())
    refused(target, made, "shard-9.rdb", "not in the manifest")


def test_a_truncated_file_that_its_manifest_matches_is_refused_by_the_loading_server(
    backed_up: tuple[Path, list[RedisNode]],
) -> None:
    """A manifest rewritten to match (or a file truncated before its checksum was taken): the server that
    loads it for the restore refuses, and so does the restore, before writing anything."""
    made, target = backed_up
    shard = made / "shard-0.rdb"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    manifest = json.loads((made / MANIFEST).read_text())
    from bootstrap.restore import _sha256

    manifest["shards"][0].update(bytes=shard.stat().st_size, sha256=_sha256(shard))
    (made / MANIFEST).write_text(json.dumps(manifest))
    refused(target, made, "could not load", "shard-0.rdb")


def test_a_target_that_holds_keys_is_refused_unless_replace(backed_up: tuple[Path, list[RedisNode]]) -> None:
    made, target = backed_up
    rc = cluster_client(target)
    rc.set("k:1", "was here")
    rc.close()
    with pytest.raises(RestoreRefused, match="holds keys"):
        put_back(target, made)
    assert put_back(target, made, replace=True) == 3000
    assert missing_keys(target, 3000) == []


def test_a_backup_the_target_engine_cannot_load_is_refused_naming_both(redis_farm: RedisFarm, tmp_path: Path) -> None:
    """Valkey 9 writes VALKEY 80, which no Redis loads: refused before the first key, whatever the server."""
    from bench import servers

    try:
        valkey = servers.resolve_server("valkey-9")
    except ValueError as exc:
        pytest.skip(str(exc))
    with connected(DirectConnector()) as connector:
        client = connector.client(redis_farm.spawn(1, cluster=False, extra={"appendonly": "no"})[0].address)
        if "valkey_version" in client.info("server"):
            pytest.skip("this run's server is Valkey: it reads Valkey 9's format")
    source = redis_farm.spawn(3, hosts=HOSTS, binary=valkey)
    apply(source, 3, 0)
    load(source, 1000)
    made = take(source, tmp_path / "backups")
    target = redis_farm.spawn(3, hosts=HOSTS)
    apply(target, 3, 0)
    refused(target, made, "VALKEY 80", "cannot load", "shard-0.rdb")


def test_a_backup_of_a_cluster_with_unserved_slots_is_refused_and_leaves_nothing(
    redis_farm: RedisFarm, tmp_path: Path
) -> None:
    nodes = redis_farm.spawn(3, hosts=HOSTS)
    apply(nodes, 3, 0)
    nodes[1].stop(hard=True)
    with pytest.raises(errors.BootstrapError, match="not served"):
        take(nodes, tmp_path / "backups")
    assert not (tmp_path / "backups").exists() or not any((tmp_path / "backups").iterdir()), "a partial backup"


def test_a_backup_runs_as_an_acl_user_with_only_the_commands_it_needs(redis_farm: RedisFarm, tmp_path: Path) -> None:
    """It logged in with MIGRATE's `AUTH2 user pw` form, which is no command: every backup with --user failed."""
    from bootstrap.backup import BACKUP_ACL

    secret = "backup-password-for-tests"
    source = redis_farm.spawn(
        3, hosts=HOSTS, password="admin-password", extra={"user": f"backup on >{secret} resetkeys {BACKUP_ACL}"}
    )
    apply(source, 3, 0, password="admin-password")
    with connected(DirectConnector(secret, "backup")) as connector:
        made = backup(static_inventory([n.address for n in source]), connector, tmp_path, print)
    assert verify(made).keys == 0
    refusals = [n.client().execute_command("ACL", "LOG") for n in source]
    assert not any(refusals), f"the backup user was refused something: {refusals}"


def test_the_command_line_takes_a_seed_or_a_statefulset_and_says_what_is_wrong(tmp_path: Path) -> None:
    both = run_cli("backup", "--to", str(tmp_path), "--kube", "ns/sts", "127.0.0.1:1")
    assert both.returncode == 2 and "a seed HOST:PORT or --kube NAMESPACE/STATEFULSET" in both.stderr, both.stderr
    neither = run_cli("check")
    assert neither.returncode == 2 and "one of them" in neither.stderr, neither.stderr
    bad = run_cli("check", "--kube", "just-a-name")
    assert bad.returncode == 1 and "--kube is 'just-a-name': it takes NAMESPACE/STATEFULSET" in bad.stderr, bad.stderr
    restore_both = run_cli("restore", "--from", str(tmp_path), "--kube", "ns/sts", "127.0.0.1:1")
    assert restore_both.returncode == 2 and "one of them" in restore_both.stderr, restore_both.stderr
    restore_bad = run_cli("restore", "--from", str(tmp_path), "--kube", "ns")
    assert restore_bad.returncode == 1 and "--kube is 'ns'" in restore_bad.stderr, restore_bad.stderr
    no_config = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
    no_config["KUBECONFIG"] = str(tmp_path / "absent" / "kubeconfig")
    unconfigured = run_cli("check", "--kube", "ns/sts", env=no_config)
    assert unconfigured.returncode == 1 and unconfigured.stderr.startswith("error: ConfigException"), (
        unconfigured.stderr
    )
    assert not list(tmp_path.iterdir()), "a refused command made something"
