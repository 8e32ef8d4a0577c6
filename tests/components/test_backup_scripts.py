"""The CronJob's backup and the restore Job's script (components/scripts/backup.sh, restore.sh) on real
servers: the same shell, the same redis-cli, the same ACL user and server settings as in the pods.

The test that matters is the first: a client writes a counter's keys in order across every shard (key
i only after key i-1 was acknowledged) while the script takes its backup; restored by the restore
script into a cluster of another shape, the keys present must be exactly 0..k. The CLI's restore reads
the script's backup too (one manifest format).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench import servers
from bootstrap.manifest import MANIFEST
from bootstrap.restore import verify
from components import redis_config
from components.settings import BACKUP_USER
from tests.bootstrap.helpers import HOSTS, apply, load, missing_keys
from tests.bootstrap.test_backup import TTL_MS, assert_one_cut, counter
from tests.conftest import RedisFarm, RedisNode, free_cluster_port
from tests.toolkit import cluster_client, run_cli

BACKUP_SH = Path(redis_config.__file__).parent / "scripts" / "backup.sh"
RESTORE_SH = Path(redis_config.__file__).parent / "scripts" / "restore.sh"
BACKUP_PASSWORD = "backup-pw-0123456789"
TARGET_PASSWORD = "target-pw-0123456789"
# The scripts run each image's own tools (the servers of this module are the image's too): only the default
# pass of tools/test.sh runs them.
pytestmark = pytest.mark.skipif(
    os.environ.get("REDIS_CLUSTER_SERVER") not in (None, "", "redis-7"), reason="the images are chosen here"
)
# The e2e tiers' images (tools/cluster/build.sh): their server and the redis-cli they carry, by short name
# (bench/servers.py). Valkey's images link redis-server/redis-cli to valkey-*; its valkey-cli is 8.1's.
IMAGES = {"redis-7.0": ("redis-7", "redis-7"), "valkey-9.1": ("valkey-9", "valkey-8")}


@dataclass(frozen=True)
class Image:
    server: str  # the binary every server of the test runs
    bin_dir: Path  # redis-server and redis-cli as the image names them, first on the scripts' PATH


@pytest.fixture(autouse=True, params=sorted(IMAGES))
def image(
    request: pytest.FixtureRequest, redis_farm: RedisFarm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Image:
    """Each test once per image: the scripts with that image's redis-cli against its servers."""
    server_name, cli_name = IMAGES[request.param]
    try:
        server, cli_server = servers.resolve_server(server_name), servers.resolve_server(cli_name)
    except ValueError as exc:
        pytest.skip(str(exc))
    cli = Path(cli_server).with_name(Path(cli_server).name.replace("-server", "-cli"))
    bin_dir = tmp_path / "image-bin"
    bin_dir.mkdir()
    (bin_dir / "redis-server").symlink_to(server)
    (bin_dir / "redis-cli").symlink_to(cli if cli.is_file() else shutil.which("redis-cli") or "/usr/bin/redis-cli")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    redis_farm.binary = server
    return Image(server, bin_dir)


def source_cluster(farm: RedisFarm, masters: int = 3, replicas: int = 1) -> list[RedisNode]:
    """A cluster as the pods run it: their replication settings and the `backup` ACL user."""
    nodes = farm.spawn(masters * (1 + replicas), hosts=HOSTS, extra=dict(redis_config.REPLICATION_SYNC))
    apply(nodes, masters, replicas)
    for node in nodes:
        rules = redis_config.backup_user_rules()
        node.client().execute_command("ACL", "SETUSER", BACKUP_USER, "reset", f">{BACKUP_PASSWORD}", *rules.split())
        node.client().execute_command("ACL", "LOG", "RESET")
    return nodes


def run_script(
    script: Path, nodes: list[RedisNode], env: dict[str, str], auth: Path
) -> subprocess.CompletedProcess[str]:
    """The script in a process group of its own, all of it killed should it overrun: the restore's
    loaders are redis-servers, which a killed `sh` alone would leave running."""
    proc = subprocess.Popen(
        ["sh", str(script)],
        env={
            "PATH": os.environ["PATH"],
            "REDIS_NODES": " ".join(n.address for n in nodes),
            "REDIS_AUTH_DIR": str(auth),
            **env,
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"{script.name} overran 120 s and was killed with its children:\n{err}") from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.fixture
def auth_dir(tmp_path: Path) -> Path:
    """The Secret's files as the pods mount them: one per user."""
    d = tmp_path / "auth"
    d.mkdir()
    (d / f"{BACKUP_USER}-password").write_text(BACKUP_PASSWORD)
    (d / "default-password").write_text(TARGET_PASSWORD)
    return d


def back_up(nodes: list[RedisNode], to: Path, auth: Path, retention: int = 7) -> tuple[Path, str]:
    done = run_script(BACKUP_SH, nodes, {"BACKUP_DIR": str(to), "BACKUP_RETENTION": str(retention)}, auth)
    assert done.returncode == 0, done.stderr
    made = re.search(r"backup (\S+) complete", done.stderr)
    assert made, done.stderr
    return Path(made.group(1)), done.stderr


def target_cluster(farm: RedisFarm, masters: int) -> list[RedisNode]:
    nodes = farm.spawn(masters, hosts=HOSTS, password=TARGET_PASSWORD)
    apply(nodes, masters, 0, password=TARGET_PASSWORD)
    return nodes


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive free loopback ports."""
    for _ in range(50):
        base = free_cluster_port()
        try:
            with contextlib.ExitStack() as held:
                for port in range(base, base + count):
                    sock = held.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError(f"no {count} consecutive free ports")


def put_back(
    nodes: list[RedisNode], source: Path, auth: Path, tmp: Path, name: str = ""
) -> subprocess.CompletedProcess[str]:
    port = free_ports(3)  # the loaders: shard i on port + i
    return run_script(
        RESTORE_SH,
        nodes,
        {
            "BACKUP_DIR": str(source.parent),
            "RESTORE_FROM": name or source.name,
            "RESTORE_USER": "default",
            "RESTORE_WORK": str(tmp / f"restore-{port}"),
            "RESTORE_PORT_BASE": str(port),
        },
        auth,
    )


def total_keys(nodes: list[RedisNode]) -> int:
    return sum(int(n.client().dbsize()) for n in nodes)


def test_the_scheduled_backup_is_one_cut_and_the_restore_job_puts_it_into_five_masters(
    redis_farm: RedisFarm, tmp_path: Path, auth_dir: Path
) -> None:
    source = source_cluster(redis_farm)
    load(source, 20_000)
    rc = cluster_client(source)
    for i in range(500):
        rc.set(f"ttl:{i}", "t", px=TTL_MS)
    rc.close()
    with counter(source) as writer:
        while writer.written < 300:
            time.sleep(0.01)
        before = writer.written
        made, said = back_up(source, tmp_path / "backups", auth_dir)
        after = writer.written
        time.sleep(0.2)
    manifest = verify(made)  # the CLI's own checks: the script writes its format
    pause = re.search(r"writes paused (\d+) ms", said)
    assert pause and int(pause.group(1)) == manifest.pause_ms < 1000, said
    assert {s.source_id for s in manifest.shards}.isdisjoint(s.master_id for s in manifest.shards), (
        f"a master forked though it had a caught-up replica: {said}"
    )
    denied = [n.client().execute_command("ACL", "LOG") for n in source]
    assert denied == [[]] * len(source), f"the backup user was refused something: {denied}"

    target = target_cluster(redis_farm, 5)
    done = put_back(target, made, auth_dir, tmp_path)
    assert done.returncode == 0, done.stderr

    assert total_keys(target) == manifest.keys, done.stderr
    rc = cluster_client(target)
    assert_one_cut(rc, before, after)
    rc.close()


def test_the_command_line_restores_a_scheduled_backup_and_retention_keeps_the_newest(
    redis_farm: RedisFarm, tmp_path: Path, auth_dir: Path, image: Image
) -> None:
    source = source_cluster(redis_farm, 3, 0)
    load(source, 3000)
    to = tmp_path / "backups"
    (to / ".redis-cluster-20200101T000000Z.partial").mkdir(parents=True)  # what a killed run leaves
    made = []
    for _ in range(3):
        made.append(back_up(source, to, auth_dir, retention=2)[0])
        time.sleep(1.05)  # one backup per second: the name is the start time
    assert sorted(p.name for p in to.iterdir()) == sorted(p.name for p in made[1:]), list(to.iterdir())

    target = redis_farm.spawn(2, hosts=HOSTS)
    apply(target, 2, 0)
    done = run_cli("restore", "--from", str(made[-1]), "--server", image.server, target[0].address)
    assert done.returncode == 0, done.stderr
    assert missing_keys(target, 3000) == []


@pytest.fixture
def scripted_backup(redis_farm: RedisFarm, tmp_path: Path, auth_dir: Path) -> tuple[Path, list[RedisNode]]:
    """A 3-shard backup of 3,000 keys by the script, and an empty 3-master target."""
    source = source_cluster(redis_farm, 3, 0)
    load(source, 3000)
    made, _ = back_up(source, tmp_path / "backups", auth_dir)
    return made, target_cluster(redis_farm, 3)


def refused(target: list[RedisNode], made: Path, auth: Path, tmp: Path, *words: str, name: str = "") -> None:
    done = put_back(target, made, auth, tmp, name)
    assert done.returncode != 0 and "REFUSED" in done.stderr, done.stderr
    assert all(w in done.stderr for w in words), done.stderr
    assert total_keys(target) == 0, "something was written before the refusal"


def test_the_restore_job_refuses_bad_input_before_writing_anything(
    scripted_backup: tuple[Path, list[RedisNode]], tmp_path: Path, auth_dir: Path
) -> None:
    made, target = scripted_backup
    refused(target, made, auth_dir, tmp_path, "no such backup", name="redis-cluster-20200101T000000Z")
    shard = made / "shard-1.rdb"
    good = shard.read_bytes()
    shard.write_bytes(good[:100] + bytes([good[100] ^ 0xFF]) + good[101:])
    refused(target, made, auth_dir, tmp_path, "shard-1.rdb", "SHA-256")
    shard.rename(made / "elsewhere.bin")
    refused(target, made, auth_dir, tmp_path, "shard-1.rdb", "missing")
    (made / "elsewhere.bin").unlink()
    shard.write_bytes(good)
    (made / "shard-9.rdb").write_bytes(good)
    refused(target, made, auth_dir, tmp_path, "shard-9.rdb", "not in the manifest")
    (made / "shard-9.rdb").unlink()
    # Truncated, its manifest rewritten to match: the loading server refuses it.
    shard.write_bytes(good[: len(good) // 2])
    manifest = json.loads((made / MANIFEST).read_text())
    manifest["shards"][1]["sha256"] = subprocess.run(
        ["sha256sum", str(shard)], capture_output=True, text=True, check=True
    ).stdout.split()[0]
    (made / MANIFEST).write_text(json.dumps(manifest, indent=2))
    refused(target, made, auth_dir, tmp_path, "shard-1.rdb", "cannot be loaded")
    shard.write_bytes(good)
    manifest["shards"][1]["sha256"] = subprocess.run(
        ["sha256sum", str(shard)], capture_output=True, text=True, check=True
    ).stdout.split()[0]
    (made / MANIFEST).write_text(json.dumps(manifest, indent=2))
    rc = cluster_client(target)
    rc.set("k:1", "was here")
    done = put_back(target, made, auth_dir, tmp_path, "latest")
    assert done.returncode != 0 and "holds 1 keys" in done.stderr, done.stderr
    rc.delete("k:1")
    rc.close()
    done = put_back(target, made, auth_dir, tmp_path, "latest")  # the newest backup, the good one again
    assert done.returncode == 0, done.stderr
    assert total_keys(target) == 3000


def test_both_jobs_wait_for_the_first_answer_as_a_new_pod_must_under_a_network_policy(
    image: Image, tmp_path: Path, auth_dir: Path
) -> None:
    """A job's pod is new: an enforcer refuses its connects until it has seen the pod's address (e2e found
    the restore job dying on its first, refused, CLUSTER NODES). The scripts' await_nodes waits for a PING
    answer: here the only node starts listening 1.5 s after the wait began, and the wait ends once it
    answers; with no node ever, it gives up after the bound it was given."""
    port = free_cluster_port()
    common = RESTORE_SH.parent / "backup-common.sh"
    script = f"me=test verdict=FAILED user={BACKUP_USER}; . {common}; await_nodes $BOUND"
    env = {"PATH": os.environ["PATH"], "REDIS_NODES": f"127.0.0.1:{port}", "REDIS_AUTH_DIR": str(auth_dir)}
    late = subprocess.Popen(
        ["sh", "-c", f"sleep 1.5; exec {image.server} --port {port} --save '' --appendonly no --dir {tmp_path}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        t0 = time.monotonic()
        waited = subprocess.run(["sh", "-c", script], env={**env, "BOUND": "20"}, timeout=60, check=False)
        took = time.monotonic() - t0
        assert waited.returncode == 0 and 1.4 < took < 10, (waited.returncode, took)
    finally:
        late.kill()
        late.wait(timeout=10)
    t0 = time.monotonic()
    gave_up = subprocess.run(["sh", "-c", script], env={**env, "BOUND": "2"}, timeout=60, check=False)
    assert gave_up.returncode == 1 and 2 <= time.monotonic() - t0 < 10
