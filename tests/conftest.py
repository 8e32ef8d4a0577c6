"""Shared fixtures: real ``redis-server`` processes on loopback.

Every test that needs Redis gets it from here, so that servers are always
started on free ports and always stopped (by PID) on success and failure.
Several loopback addresses (127.0.0.x) stand in for several Kubernetes nodes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from bench.servers import free_cluster_port as bench_free_cluster_port

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
START_TIMEOUT_S = 10.0


def free_cluster_port(host: str = "127.0.0.1") -> int:
    """A free port whose cluster bus twin (port + 10000) is free too (one implementation, the bench's)."""
    return bench_free_cluster_port(host, set())


@dataclass
class RedisNode:
    """One redis-server process; ``restart`` keeps its data dir (and nodes.conf)."""

    host: str
    port: int
    dir: Path
    cluster: bool = True
    extra: dict[str, str] = field(default_factory=dict)
    password: str | None = None  # requirepass and masterauth; what client() authenticates with
    proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def config_text(self) -> str:
        conf = {
            "bind": self.host,
            # Outgoing cluster-bus connections leave from our own loopback address, as from a pod's IP;
            # without it every node on 127.0.0.x would be seen as 127.0.0.1 by its peers.
            "bind-source-addr": self.host,
            "port": str(self.port),
            "dir": str(self.dir),
            "daemonize": "no",
            "save": '""',
            "appendonly": "yes",
            "protected-mode": "no",
            "logfile": str(self.dir / "redis.log"),
            "pidfile": str(self.dir / "redis.pid"),
        }
        if self.cluster:
            conf.update(
                {
                    "cluster-enabled": "yes",
                    "cluster-config-file": "nodes.conf",
                    "cluster-node-timeout": "3000",
                    "cluster-require-full-coverage": "yes",
                    "repl-diskless-sync-delay": "0",
                }
            )
        if self.password:
            conf.update({"requirepass": self.password, "masterauth": self.password})
        conf.update(self.extra)
        return "".join(f"{k} {v}\n" for k, v in conf.items())

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        conf_path = self.dir / "redis.conf"
        conf_path.write_text(self.config_text())
        self.proc = subprocess.Popen(
            [REDIS_SERVER, str(conf_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = (self.dir / "redis.log").read_text() if (self.dir / "redis.log").exists() else ""
                raise RuntimeError(f"redis-server {self.address} exited at start:\n{log[-2000:]}")
            try:
                if self.client().ping():
                    return
            except (redis.AuthenticationError, redis.exceptions.NoPermissionError):
                return  # it answered: up, just not for this login
            except redis.ConnectionError:
                time.sleep(0.02)
        raise RuntimeError(f"redis-server {self.address} did not answer PING in {START_TIMEOUT_S}s")

    def stop(self, hard: bool = False) -> None:
        """Stop the process we started (SIGKILL when ``hard``, like a crashed pod)."""
        if self.proc is None or self.proc.poll() is not None:
            self.proc = None
            return
        if hard:
            self.proc.kill()
        else:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def restart(self, host: str | None = None) -> None:
        """Restart on the same data dir, optionally on a new address (a pod with a new IP)."""
        self.stop()
        if host is not None:
            self.host = host
        self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def client(self, **kwargs: object) -> redis.Redis:
        options: dict[str, object] = {"password": self.password, **kwargs}
        return redis.Redis(
            host=self.host,
            port=self.port,
            socket_timeout=5,
            decode_responses=True,
            **options,  # type: ignore[arg-type]
        )


class RedisFarm:
    """Starts redis-server processes for one test and stops all of them afterwards."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.nodes: list[RedisNode] = []

    def spawn(
        self,
        count: int,
        hosts: list[str] | None = None,
        cluster: bool = True,
        extra: dict[str, str] | None = None,
        password: str | None = None,
    ) -> list[RedisNode]:
        """Start ``count`` servers; node i binds ``hosts[i % len(hosts)]`` (default 127.0.0.1)."""
        hosts = hosts or ["127.0.0.1"]
        started: list[RedisNode] = []
        for i in range(count):
            host = hosts[i % len(hosts)]
            port = free_cluster_port(host)
            node = RedisNode(
                host=host,
                port=port,
                dir=self.base / f"node-{len(self.nodes)}",
                cluster=cluster,
                extra=dict(extra or {}),
                password=password,
            )
            self.nodes.append(node)
            node.start()
            started.append(node)
        return started

    def stop_all(self) -> None:
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.stop()


@pytest.fixture
def redis_farm(tmp_path: Path) -> Iterator[RedisFarm]:
    farm = RedisFarm(tmp_path / "redis")
    try:
        yield farm
    finally:
        farm.stop_all()


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In CI (REDIS_CLUSTER_REQUIRE_TIERS=1) a tier that would be skipped is an error, not a green run:
    tools/setup.sh installs everything every tier needs, so a skip there means a broken setup."""
    if os.environ.get("REDIS_CLUSTER_REQUIRE_TIERS") != "1":
        return
    skipped = [
        f"{item.nodeid}: {mark.kwargs.get('reason', '')}" for item in items for mark in item.iter_markers("skip")
    ]
    if skipped:
        raise pytest.UsageError("tiers that CI requires would be skipped:\n" + "\n".join(skipped[:20]))
