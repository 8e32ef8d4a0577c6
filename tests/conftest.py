"""Shared fixtures: real server processes on loopback (``bench.servers``, the one starter).

Every test that needs Redis gets it from here, so that servers are always
started on free ports and always stopped (by PID) on success and failure.
Several loopback addresses (127.0.0.x) stand in for several Kubernetes nodes.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from bench import servers

# The binary under test (REDIS_CLUSTER_SERVER: a path or a short name such as valkey-9; default redis-7).
REDIS_SERVER = servers.server_binary()
START_TIMEOUT_S = 10.0


def free_cluster_port(host: str = "127.0.0.1") -> int:
    """A free port whose cluster bus twin (port + 10000) is free too (one implementation, the bench's)."""
    return servers.free_cluster_port(host)


@dataclass
class RedisNode:
    """One server process; ``restart`` keeps its data dir (and nodes.conf)."""

    host: str
    port: int
    dir: Path
    cluster: bool = True
    extra: dict[str, str] = field(default_factory=dict)
    password: str | None = None  # requirepass and masterauth; what client() authenticates with
    proc: subprocess.Popen[bytes] | None = None
    binary: str = REDIS_SERVER  # another server for this node only (e.g. servers.resolve_server("valkey-9"))

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def config_text(self) -> str:
        extra = {"cluster-require-full-coverage": "yes"} if self.cluster else {}
        if self.password:
            extra.update({"requirepass": self.password, "masterauth": self.password})
        extra.update(self.extra)
        return servers.config_text(servers.config(self.host, self.port, self.dir, cluster=self.cluster, extra=extra))

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        conf_path = self.dir / "redis.conf"
        conf_path.write_text(self.config_text())
        self.proc = servers.launch([self.binary, str(conf_path)])
        servers.wait_answering(
            [(self.host, self.port, self.proc, self.dir / "redis.log")], START_TIMEOUT_S, self.password
        )

    def stop(self, hard: bool = False) -> None:
        """Stop the process we started (SIGKILL when ``hard``, like a crashed pod)."""
        if self.proc is not None:
            servers.stop(self.proc, hard)
        self.proc = None

    def restart(self, host: str | None = None, binary: str | None = None) -> None:
        """Restart on the same data dir, optionally on a new address (a pod with a new IP) or onto another
        server binary (a pod restarted onto a new image)."""
        self.stop()
        if host is not None:
            self.host = host
        if binary is not None:
            self.binary = binary
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
        self.binary: str | None = None  # the server of nodes started without their own (default REDIS_SERVER)

    def spawn(
        self,
        count: int,
        hosts: list[str] | None = None,
        cluster: bool = True,
        extra: dict[str, str] | None = None,
        password: str | None = None,
        binary: str | None = None,
    ) -> list[RedisNode]:
        """Start ``count`` servers; node i binds ``hosts[i % len(hosts)]`` (default 127.0.0.1).

        ``binary``: a server other than this run's REDIS_CLUSTER_SERVER, for tests of one server's features.
        """
        hosts = hosts or ["127.0.0.1"]
        started: list[RedisNode] = []
        for i in range(count):
            node = self.add(hosts[i % len(hosts)], cluster, extra, password, binary)
            node.start()
            started.append(node)
        return started

    def add(
        self,
        host: str = "127.0.0.1",
        cluster: bool = True,
        extra: dict[str, str] | None = None,
        password: str | None = None,
        binary: str | None = None,
    ) -> RedisNode:
        """A server on a free port, not started yet (put files in its ``dir`` first); stopped with the rest."""
        node = RedisNode(
            host=host,
            port=free_cluster_port(host),
            dir=self.base / f"node-{len(self.nodes)}",
            cluster=cluster,
            extra=dict(extra or {}),
            password=password,
            binary=binary or self.binary or REDIS_SERVER,
        )
        self.nodes.append(node)
        return node

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
