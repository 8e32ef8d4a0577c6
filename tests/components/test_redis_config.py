"""redis.conf and the probes, run for real: redis-server 7.0 started through start-redis.sh.

A directive Redis does not know, or a probe that does not mean what it says,
would only show up as crash-looping pods; here it fails a test instead.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from components import nodes, redis_config
from components.settings import validate
from tests.conftest import REDIS_SERVER, free_cluster_port

FQDN = "redis-cluster-0.redis-cluster-headless.default.svc.cluster.local"


@dataclass
class Started:
    proc: subprocess.Popen[bytes]
    port: int
    data: Path

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5, decode_responses=True)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def started(tmp_path: Path) -> Iterator[Started]:
    """The generated redis.conf, with only the port and /data moved into the test's sandbox."""
    port = free_cluster_port()
    data = tmp_path / "data"
    data.mkdir()
    conf = tmp_path / "redis.conf"
    text = redis_config.redis_conf(validate({"nodeTimeoutMs": 5000}))
    conf.write_text(text.replace("/data", str(data)).replace("port 6379", f"port {port}"))
    log = (tmp_path / "redis.log").open("wb")
    proc = subprocess.Popen(
        ["sh", str(redis_config.SCRIPT_PATH)],
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "POD_IP": "127.0.0.1",
            "REDIS_ANNOUNCE_HOSTNAME": FQDN,
            "REDIS_CONF": str(conf),
            "REDIS_NODES_CONF": str(data / "nodes.conf"),
            "REDIS_SERVER": REDIS_SERVER,
            "REDIS_NODES_BACKUP_SECONDS": "1",
        },
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the backup loop is ours to stop too
    )
    node = Started(proc, port, data)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                if node.client().ping():
                    break
            except redis.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((tmp_path / "redis.log").read_text()[-2000:]) from None
                time.sleep(0.05)
        yield node
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        log.close()


def test_redis_accepts_the_generated_config(started: Started) -> None:
    c = started.client()
    got = {key: c.config_get(key)[key] for key in ("cluster-enabled", "appendonly", "cluster-node-timeout")}
    assert got == {"cluster-enabled": "yes", "appendonly": "yes", "cluster-node-timeout": "5000"}
    assert c.config_get("cluster-require-full-coverage")["cluster-require-full-coverage"] == "no"
    assert c.config_get("cluster-allow-replica-migration")["cluster-allow-replica-migration"] == "yes"
    assert c.config_get("cluster-preferred-endpoint-type")["cluster-preferred-endpoint-type"] == "ip"
    assert c.config_get("cluster-announce-hostname")["cluster-announce-hostname"] == FQDN
    assert c.config_get("cluster-announce-ip")["cluster-announce-ip"] == "127.0.0.1"
    assert c.config_get("dir")["dir"] == str(started.data)


def test_backup_loop_keeps_a_good_copy_and_ends_with_redis(started: Started) -> None:
    backup = started.data / "nodes.conf.bak"
    deadline = time.monotonic() + 10
    while not backup.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "myself" in backup.read_text()
    assert backup.read_text().rstrip().splitlines()[-1].startswith("vars ")
    assert group_alive(started.proc.pid)
    started.proc.send_signal(signal.SIGTERM)  # redis-server itself (the script exec'd into it)
    started.proc.wait(timeout=10)
    deadline = time.monotonic() + 5
    while group_alive(started.proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not group_alive(started.proc.pid), "the backup loop outlived redis-server"


def _probe(command: list[str], port: int) -> int:
    script = command[-1].replace("-p 6379", f"-p {port}")
    return subprocess.run([*command[:-1], script], capture_output=True, timeout=10, check=False).returncode


def test_probes_answer_on_a_node_that_is_not_in_a_cluster(started: Started) -> None:
    assert "cluster_state:fail" in str(started.client().execute_command("CLUSTER", "INFO"))
    s = validate({})
    assert _probe(nodes.readiness_command(s), started.port) == 0
    assert _probe(nodes.liveness_command(s), started.port) == 0


def test_probes_fail_without_redis() -> None:
    port = free_cluster_port()
    s = validate({})
    assert _probe(nodes.readiness_command(s), port) != 0
    assert _probe(nodes.liveness_command(s), port) != 0
