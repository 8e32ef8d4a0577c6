"""The real redis_exporter (built by tools/cluster.sh from its Go module) against a real cluster on loopback.

It logs in as the `exporter` ACL user whose rules come from the code that writes users.acl
(components/redis_config.py), with the password file and the flags the pod spec gives it
(components/metrics.py), and is scraped on a free loopback port. What must hold for a Prometheus
user: the node is up, the cluster metrics and key counts are there, and the restricted user is never
refused a command but `SLOWLOG GET` (unless metricsSlowlogEntries allows it: one grouped ACL LOG
entry otherwise, nothing in the exporter's output) — while it really is restricted (no keys, no CONFIG).

Skipped (with the reason) only when the binary is not built; CI builds it (tools/setup.sh runs
tools/cluster.sh build) and REDIS_CLUSTER_REQUIRE_TIERS=1 turns a skip into a failure.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from components import metrics, redis_config
from components.settings import EXPORTER_USER, EXPORTER_VERSION, validate
from tests.bootstrap.helpers import HOSTS, apply, load, table
from tests.components.test_start_script import make_certs
from tests.conftest import RedisFarm, RedisNode
from tests.prometheus import samples

REPO = Path(__file__).resolve().parents[2]
EXPORTER_PASSWORD = "Exp0rter-Test-Pa55word"
KEYS = 2000
SCRAPE_TIMEOUT_S = 30.0


def exporter_binary() -> Path | None:
    """``REDIS_CLUSTER_EXPORTER``, else the one ``tools/cluster.sh build`` put in its cache."""
    given = os.environ.get("REDIS_CLUSTER_EXPORTER")
    if given:
        path = Path(given)
    else:
        key = subprocess.run(
            ["bash", str(REPO / "tools" / "cluster.sh"), "key"], capture_output=True, text=True, timeout=30, check=False
        )
        path = Path(key.stdout.strip()) / "bin" / "redis_exporter"
    return path if path.is_file() and os.access(path, os.X_OK) else None


EXPORTER = exporter_binary()
# A plain `skip` mark (not skipif): tests/conftest.py turns it into a failure under REDIS_CLUSTER_REQUIRE_TIERS=1.
pytestmark = (
    [
        pytest.mark.skip(
            reason="redis_exporter is not built: run `bash tools/cluster.sh exporter` (tools/setup.sh builds it)"
        )
    ]
    if EXPORTER is None
    else []
)


def exporter_acl_line(slowlog_entries: bool = False) -> str:
    """The `exporter` line of users.acl as the start script completes it (`... >password`)."""
    acl = redis_config.users_acl(validate({"metrics": True, "metricsSlowlogEntries": slowlog_entries})).splitlines()
    [line] = [line for line in acl if line.startswith(f"user {EXPORTER_USER} ")]
    return f"{line.removeprefix('user ')} >{EXPORTER_PASSWORD}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Exporter:
    node: RedisNode
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    def scrape(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as response:
            return str(response.read().decode())

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def exporters(
    nodes: list[RedisNode], base: Path, address: str = "", ca_file: Path | None = None
) -> Iterator[list[Exporter]]:
    """One exporter per node, as in each pod (at ``address`` instead of the node's plain port when
    given); all stopped (by PID) afterwards."""
    started: list[Exporter] = []
    try:
        for i, node in enumerate(nodes):
            assert EXPORTER is not None
            target = address or f"redis://{node.address}"
            secret = base / f"exporter-{i}.json"
            secret.write_text(metrics.password_file(target, EXPORTER_PASSWORD))
            secret.chmod(0o600)
            log = base / f"exporter-{i}.log"
            port = free_port()
            flags = metrics.exporter_args(target, f"127.0.0.1:{port}", str(secret), str(ca_file) if ca_file else None)
            argv = [str(EXPORTER), *flags]
            with log.open("wb") as out:
                proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
            started.append(Exporter(node, port, proc, log))
        yield started
    finally:
        for e in started:
            e.proc.terminate()
            try:
                e.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                e.proc.kill()
                e.proc.wait(timeout=10)


def scraped_up(e: Exporter) -> dict[str, float]:
    """Bounded: the exporter listens a moment after it starts."""
    deadline = time.monotonic() + SCRAPE_TIMEOUT_S
    last = "never scraped"
    while time.monotonic() < deadline:
        if e.proc.poll() is not None:
            raise AssertionError(f"the exporter for {e.node.address} exited {e.proc.returncode}: {e.output()[-2000:]}")
        try:
            got = samples(e.scrape())
            if got.get("redis_up") == 1:
                return got
            last = f"redis_up {got.get('redis_up')}"
        except OSError as exc:
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.5)
    raise AssertionError(f"no redis_up 1 from {e.node.address} within {SCRAPE_TIMEOUT_S:.0f}s ({last}): {e.output()}")


DENIED = re.compile(r"NOPERM|no permissions|WRONGPASS|NOAUTH|level=error", re.IGNORECASE)


def test_exporter_as_the_restricted_user_reports_cluster_and_key_metrics(redis_farm: RedisFarm, tmp_path: Path) -> None:
    nodes = redis_farm.spawn(6, hosts=HOSTS, extra={"user": exporter_acl_line()})
    apply(nodes, 3, 1)
    load(nodes, KEYS)
    lines = table(nodes[0])
    by_address = {ln.address.split("@")[0]: ln for ln in lines}
    master = next(n for n in nodes if by_address[n.address].is_master)
    replica = next(n for n in nodes if by_address[n.address].master_id == by_address[master.address].node_id)
    # The master's user as deployed by default (no SLOWLOG GET), the replica's with metricsSlowlogEntries.
    replica.client().execute_command(
        "ACL", "SETUSER", EXPORTER_USER, "reset", *exporter_acl_line(slowlog_entries=True).split()[1:]
    )
    for node in (master, replica):
        node.client().acl_log_reset()

    with exporters([master, replica], tmp_path) as (on_master, on_replica):
        for e in (on_master, on_replica):
            got = scraped_up(e)
            got = samples(e.scrape())  # a second scrape: nothing logged "once only" either
            assert got["redis_up"] == 1
            assert got['redis_exporter_last_scrape_error{err=""}'] == 0
            assert got["redis_cluster_enabled"] == 1
            assert got["redis_cluster_state"] == 1
            assert got["redis_cluster_slots_assigned"] == 16384 and got["redis_cluster_slots_ok"] == 16384
            assert got["redis_cluster_known_nodes"] == 6 and got["redis_cluster_size"] == 3
            # Key counts: this node's own, as DBSIZE tells (the replica holds its master's keys).
            dbsize = int(e.node.client().dbsize())
            assert dbsize > 0
            assert got['redis_db_keys{db="db0"}'] == dbsize, (got.get('redis_db_keys{db="db0"}'), dbsize)
            # SLOWLOG LEN and LATENCY were allowed (their metrics come only from those commands); the
            # slowlog's entries (SLOWLOG GET: key names, arguments) only where metricsSlowlogEntries allows them.
            assert "redis_slowlog_length" in got
            assert ("redis_slowlog_last_id" in got) is (e is on_replica), sorted(k for k in got if "slow" in k)
            assert any(k.startswith("redis_commands_latencies_usec_count") for k in got)
            assert any(k.startswith("redis_exporter_build_info") and EXPORTER_VERSION in k for k in got)
        assert samples(on_master.scrape())["redis_connected_slaves"] == 1
        link = {k: v for k, v in samples(on_replica.scrape()).items() if k.startswith("redis_master_link_up{")}
        assert list(link.values()) == [1], link
        assert f'master_port="{master.port}"' in next(iter(link)), link
        assert on_master.scrape().count('role="master"') >= 1 and 'role="slave"' in on_replica.scrape()
        # The replica's count followed its master's within the sync.
        assert samples(on_replica.scrape())['redis_db_keys{db="db0"}'] == int(master.client().dbsize())

        for e in (on_master, on_replica):
            output = e.output()
            assert not [line for line in output.splitlines() if DENIED.search(line)], output
            assert EXPORTER_PASSWORD not in output
            log = e.node.client().acl_log()
            if e is on_replica:
                assert log == [], f"{e.node.address} refused the exporter: {log}"
            else:  # SLOWLOG GET refused on every scrape, and grouped by the server into one entry
                assert [(entry["object"], entry["username"]) for entry in log] == [("slowlog|get", EXPORTER_USER)], log
                assert int(str(log[0]["count"])) >= 2, log

    # ... and the user really is restricted: no keys, no CONFIG (CONFIG GET * shows masterauth).
    login = redis.Redis(
        host=master.host, port=master.port, username=EXPORTER_USER, password=EXPORTER_PASSWORD, socket_timeout=5
    )
    try:
        assert login.ping()
        for command in (("GET", "k:1"), ("CONFIG", "GET", "masterauth"), ("CLUSTER", "NODES"), ("KEYS", "*")):
            with pytest.raises(redis.exceptions.NoPermissionError):
                login.execute_command(*command)
    finally:
        login.close()


@pytest.mark.skipif(not shutil.which("openssl"), reason="no openssl")
def test_exporter_speaks_tls_with_the_ca_alone(redis_farm: RedisFarm, tmp_path: Path) -> None:
    """tlsOnly's flags (rediss://, the CA file, a password file keyed by the rediss address) against a
    node's TLS port; the plain port stays only for the fixture's own start-up check."""
    certs = tmp_path / "tls"
    make_certs(certs)
    tls_port = free_port()
    tls = {
        "tls-port": str(tls_port),
        "tls-cert-file": str(certs / "tls.crt"),
        "tls-key-file": str(certs / "tls.key"),
        "tls-ca-cert-file": str(certs / "ca.crt"),
        "tls-auth-clients": "optional",
    }
    [node] = redis_farm.spawn(1, extra={"user": exporter_acl_line(), **tls})
    address = f"rediss://127.0.0.1:{tls_port}"
    assert metrics.redis_address(validate({"metrics": True, "tls": True, "tlsOnly": True})).startswith("rediss://")
    with exporters([node], tmp_path, address=address, ca_file=certs / "ca.crt") as [e]:
        got = scraped_up(e)
        assert got['redis_exporter_last_scrape_error{err=""}'] == 0
        # That port speaks TLS only: redis_up 1 from it means the exporter spoke TLS and trusted the CA.
        with pytest.raises(redis.ConnectionError):
            redis.Redis(host="127.0.0.1", port=tls_port, socket_timeout=3).ping()
        output = e.output()
        assert not [line for line in output.splitlines() if DENIED.search(line)], output
