"""redis-server processes for one benchmark step, started on free loopback ports and stopped by PID.

The config mirrors what the deployment runs (components/redis_config.py:
appendonly everysec, replica migration on, full coverage off) plus what a
loopback farm needs: ``bind-source-addr`` so that nodes on 127.0.0.2/3 are
seen at their own address, and ``repl-diskless-sync-delay 0`` so a replica
syncs at once instead of waiting 5 s for company (a pod would wait as well,
but that wait would measure Redis' default, not either tool).
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import redis

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
START_TIMEOUT_S = 20.0
HOSTS = ("127.0.0.1", "127.0.0.2", "127.0.0.3")  # three "Kubernetes nodes" (failure domains)
KEEP_DIRS = False  # --keep-logs: leave data dirs and tool logs behind for a post-mortem


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_cluster_port(host: str, taken: set[int]) -> int:
    """A free port whose cluster bus twin (port + 10000) is free too, not handed out already."""
    for _ in range(1000):
        port = random.randint(20000, 29999)
        if port not in taken and _port_free(host, port) and _port_free(host, port + 10000):
            taken.add(port)
            return port
    raise RuntimeError(f"no free port pair (port, port+10000) found on {host}")


@dataclass
class Server:
    """One redis-server we started; ``proc`` is ours, so stopping it never touches anyone else's."""

    host: str
    port: int
    dir: Path
    proc: subprocess.Popen[bytes]

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def client(self, timeout: float = 10.0) -> redis.Redis:
        return redis.Redis(host=self.host, port=self.port, socket_timeout=timeout, decode_responses=True)

    def cpu_seconds(self) -> float:
        """utime + stime of the server process so far (from /proc), to see where CPU goes."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of stat)
        return ticks / _CLK_TCK


_CLK_TCK = float(os.sysconf("SC_CLK_TCK"))


def config_text(host: str, port: int, dir: Path, node_timeout_ms: int) -> str:
    conf = {
        "bind": host,
        "bind-source-addr": host,
        "port": str(port),
        "dir": str(dir),
        "daemonize": "no",
        "save": '""',
        "appendonly": "yes",
        "appendfsync": "everysec",
        "protected-mode": "no",
        "logfile": str(dir / "redis.log"),
        "cluster-enabled": "yes",
        "cluster-config-file": "nodes.conf",
        "cluster-node-timeout": str(node_timeout_ms),
        "cluster-require-full-coverage": "no",
        "cluster-migration-barrier": "1",
        "cluster-allow-replica-migration": "yes",
        "cluster-preferred-endpoint-type": "ip",
        "repl-diskless-sync-delay": "0",
    }
    return "".join(f"{k} {v}\n" for k, v in conf.items())


class Farm:
    """Servers of one step; ``stop_all`` (always called, see ``farm``) stops exactly these PIDs."""

    def __init__(self, base: Path, node_timeout_ms: int) -> None:
        self.base = base
        self.node_timeout_ms = node_timeout_ms
        self.servers: list[Server] = []
        self.started_at: list[float] = []  # time.monotonic() of each Popen
        self._ports: set[int] = set()

    def spawn(self, count: int) -> list[Server]:
        """Start ``count`` servers round-robin over HOSTS and wait until every one answers PING."""
        started: list[Server] = []
        for _ in range(count):
            host = HOSTS[len(self.servers) % len(HOSTS)]
            port = free_cluster_port(host, self._ports)
            d = self.base / f"node-{len(self.servers)}"
            d.mkdir(parents=True, exist_ok=True)
            (d / "redis.conf").write_text(config_text(host, port, d, self.node_timeout_ms))
            proc = subprocess.Popen(
                [REDIS_SERVER, str(d / "redis.conf")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            self.started_at.append(time.monotonic())
            server = Server(host, port, d, proc)
            self.servers.append(server)
            started.append(server)
        wait_ping(started)
        return started

    def stop_all(self) -> None:
        for s in self.servers:
            if s.proc.poll() is None:
                s.proc.terminate()
        for s in self.servers:
            try:
                s.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                s.proc.kill()
                s.proc.wait(timeout=10)
        self.servers.clear()


def wait_ping(servers: list[Server], timeout: float = START_TIMEOUT_S) -> None:
    """Bounded wait until every server answers PING; a server that exits fails at once with its log."""
    pending = list(servers)
    deadline = time.monotonic() + timeout
    while pending:
        still = []
        for s in pending:
            if s.proc.poll() is not None:
                log = (s.dir / "redis.log").read_text()[-2000:] if (s.dir / "redis.log").exists() else ""
                raise RuntimeError(f"redis-server {s.address} exited at start:\n{log}")
            try:
                with contextlib.closing(s.client(timeout=1)) as c:
                    c.ping()
            except (redis.ConnectionError, redis.TimeoutError):
                still.append(s)
        pending = still
        if pending and time.monotonic() > deadline:
            raise RuntimeError(f"{len(pending)} redis-server(s) did not answer PING within {timeout}s")
        if pending:
            time.sleep(0.02)


@contextlib.contextmanager
def farm(base: Path, node_timeout_ms: int) -> Iterator[Farm]:
    """A Farm whose servers are stopped on success and on failure."""
    f = Farm(base, node_timeout_ms)
    try:
        yield f
    finally:
        f.stop_all()
        if not KEEP_DIRS:
            shutil.rmtree(base, ignore_errors=True)
