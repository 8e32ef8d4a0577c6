"""``python -m bench.roll``: a rolling restart of every node under a paced client, three ways, side by side.

What a `pulumi up` that changes the image or a restart-requiring config
value does to a running cluster, on loopback servers (3 masters x 1
replica, N keys, the deployment's redis.conf), with every node restarted
once on its own data dir and port, as a pod keeps its volume:

``rolling-update``
    what the StatefulSet controller does with ``updateStrategy:
    RollingUpdate`` and a PING readiness probe (the Helm chart's shape):
    ordinals from the highest down, each stopped (SIGTERM), down for
    ``--down`` seconds, started, and the next one as soon as it answers PING.
``rolling-update+prestop``
    the same with what this project shipped before the bootstrap rolled:
    the real preStop script (components/scripts/handover.sh) before each
    stop, and a readiness that keeps a replica back until its link is up.
``bootstrap``
    this project: ``bootstrap.roll.roll`` (OnDelete; replicas first, each
    master after a graceful CLUSTER FAILOVER to a caught-up replica; the
    next pod only once the cluster is whole again).

``--down`` stands for the time a pod is gone (kubelet teardown, scheduling,
container start): the same for every method. A client process
(bench/client.py, 500 ops/s, GET/SET on the loaded keys) records every
operation; the report counts failed operations by kind, the seconds
without service ("unavailable", see ``_outages``), CLUSTERDOWN replies and
the keys lost after the roll. Writes bench/results/roll.json and
docs/benchmarks-rolling.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import client, data, servers
from bench.child import REPO
from bench.report import loadavg, machine_info
from bootstrap import waiting
from bootstrap.converge import converge
from bootstrap.endpoints import DirectConnector, Inventory, static_inventory
from bootstrap.model import Shape, parse_cluster_nodes
from bootstrap.roll import roll

METHODS = ("rolling-update", "rolling-update+prestop", "bootstrap")
HANDOVER = REPO / "components" / "scripts" / "handover.sh"
REST_S = 2.0
LINK_WAIT_S = 60.0  # the readiness hold of components/nodes.py
STALL_MS = 1000.0  # an operation this slow was stuck, not served


@dataclass
class RollRun:
    method: str
    round: int
    node_timeout_ms: int
    down_s: float
    keys: int
    seconds: float = 0.0
    ops: int = 0
    failed: dict[str, int] = field(default_factory=dict)
    unavailable_s: float = 0.0
    longest_outage_s: float = 0.0
    clusterdown: int = 0
    lost: int = 0
    p99_ms: float = 0.0
    error: str = ""


def _say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _quiet(_message: str) -> None:
    """The bootstrap's progress lines would only interleave with the report."""


class BenchPods:
    """The farm's servers as ``bootstrap.roll.Pods``: a restart keeps the data dir and the port."""

    def __init__(self, farm: servers.Farm, down_s: float) -> None:
        self.farm, self.down_s = farm, down_s
        self._stale = {s.address for s in farm.servers}

    def stale(self) -> list[str]:
        return sorted(self._stale)

    def inventory(self, timeout: float) -> Inventory:
        return static_inventory([s.address for s in self.farm.servers])

    def restart(self, name: str, timeout: float, progress: waiting.Progress) -> None:
        server = next(s for s in self.farm.servers if s.address == name)
        _restart(self.farm, server, self.down_s)
        self._stale.discard(name)

    def ready(self, name: str) -> bool:
        server = next(s for s in self.farm.servers if s.address == name)
        return server.proc is not None and server.proc.poll() is None


def _restart(farm: servers.Farm, server: servers.Server, down_s: float) -> None:
    servers.stop(server.proc)
    time.sleep(down_s)
    server.proc = servers.launch([farm.binary, str(server.dir / "redis.conf")])
    servers.wait_answering([(server.host, server.port, server.proc, server.dir / "redis.log")], 60)


def _link_up(server: servers.Server, timeout: float) -> None:
    """The readiness hold: a replica is Ready once its link is up (or after LINK_WAIT_S, as the probe)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.closing(server.client(timeout=5)) as c:
            info = c.info("replication")
        if info.get("role") != "slave" or (
            info.get("master_link_status") == "up" and not int(info.get("master_sync_in_progress", 0))
        ):
            return
        time.sleep(0.1)


def _handover(server: servers.Server) -> None:
    env = {
        **os.environ,
        "REDIS_HOST": server.host,
        "REDIS_PORT": str(server.port),
        "REDIS_AUTH_DIR": "/nonexistent",
        "REDIS_HANDOVER_TIMEOUT": "45",
    }
    subprocess.run(["sh", str(HANDOVER)], env=env, capture_output=True, timeout=60, check=False)


def _roll(method: str, farm: servers.Farm, down_s: float, timeout: float) -> None:
    if method == "bootstrap":
        roll(BenchPods(farm, down_s), lambda _inv: DirectConnector(), Shape(3, 1), timeout, _quiet)
        return
    for server in reversed(farm.servers):  # the controller's order: the highest ordinal first
        if method == "rolling-update+prestop":
            _handover(server)
        _restart(farm, server, down_s)
        if method == "rolling-update+prestop":
            _link_up(server, LINK_WAIT_S)


def _outages(records: list[tuple[float, float, bool, str]], start: float, end: float) -> tuple[float, float]:
    """(seconds without service, the longest such stretch) between ``start`` and ``end``.

    Without service: from the start of a failed operation to the start of the
    next one that succeeded, and the time of any operation that succeeded
    only after more than a second (the client was stuck on a node that was
    gone). Failures alone would undercount: a client waiting out a connect
    timeout fails once for seconds of nothing.
    """
    total = longest = 0.0
    down_since: float | None = None
    for t, latency_ms, ok, _ in sorted(records):
        if not start <= t <= end:
            continue
        if not ok:
            down_since = t if down_since is None else down_since
            continue
        if down_since is not None:
            gap, down_since = t - down_since, None
            total, longest = total + gap, max(longest, gap)
        if latency_ms > STALL_MS:
            total, longest = total + latency_ms / 1000, max(longest, latency_ms / 1000)
    if down_since is not None:
        total, longest = total + end - down_since, max(longest, end - down_since)
    return round(total, 2), round(longest, 2)


def roll_once(method: str, rnd: int, nt: int, down_s: float, keys: int, work: Path, timeout: float) -> RollRun:
    result = RollRun(method=method, round=rnd, node_timeout_ms=nt, down_s=down_s, keys=keys)
    base = work / f"roll-{method}-{nt}-{rnd}"
    slots = data.keys_by_slot(keys)
    with servers.farm(base, nt) as farm:
        nodes = farm.spawn(6)
        inventory = static_inventory([s.address for s in nodes])
        with contextlib.closing(DirectConnector()) as connector:
            converge(inventory, connector, Shape(3, 1), 120, _quiet)
        with contextlib.closing(nodes[0].client(timeout=60)) as seed:
            data.load(seed, slots)
        probe = base / "client.txt"
        with client.running(nodes[0].address, keys, probe):
            time.sleep(REST_S)
            start = time.monotonic()
            try:
                _roll(method, farm, down_s, timeout)
            except Exception as exc:  # a failed roll is a result
                result.error = f"{type(exc).__name__}: {exc}"[:500]
            end = time.monotonic()
            time.sleep(REST_S)
        records = []
        for line in probe.read_text().splitlines():
            parts = line.split(maxsplit=3)
            records.append(
                (float(parts[0]), float(parts[1]) / 1000, parts[2] == "1", parts[3] if len(parts) > 3 else "")
            )
        during = [r for r in records if start <= r[0] <= end]
        result.seconds = round(end - start, 2)
        result.ops = len(during)
        result.failed = dict(Counter(why.split()[0] if why else "?" for _, _, ok, why in during if not ok))
        result.clusterdown = sum(1 for *_, why in during if "ClusterDown" in why or "CLUSTERDOWN" in why)
        result.unavailable_s, result.longest_outage_s = _outages(records, start, end)
        latencies = sorted(lat for _, lat, ok, _ in during if ok)
        result.p99_ms = round(latencies[int(0.99 * (len(latencies) - 1))], 2) if latencies else 0.0
        _wait_ok(nodes, 120)
        with contextlib.closing(nodes[0].client(timeout=60)) as seed:
            result.lost, _ = data.count_lost(seed, slots)
    return result


def _wait_ok(nodes: list[servers.Server], timeout: float) -> None:
    """Before counting keys: every slot served again (a plain roll may leave a failover in flight)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.closing(nodes[0].client(timeout=5)) as c:
            lines = parse_cluster_nodes(str(c.execute_command("CLUSTER", "NODES")))
            state = str(c.execute_command("CLUSTER", "INFO"))
        if "cluster_state:ok" in state and not any(ln.failed for ln in lines):
            return
        time.sleep(0.2)


def markdown(results: dict[str, Any]) -> str:
    rows = results["runs"]
    out = [
        "# Rolling restart: every node once, under a client (generated by `python -m bench.roll`)",
        "",
        f"Command: `{results['command']}`  ",
        f"Machine: {', '.join(f'{k} {v}' for k, v in results['machine'].items())}; "
        f"started {results['started']}; load at the end {results['loadavg_end']}.",
        "",
        "3 masters x 1 replica on loopback, the deployment's redis.conf; each node stopped (SIGTERM), down "
        "for the stated seconds (a pod being replaced), started on its own data dir. A paced client "
        "(500 ops/s, GET/SET) records every operation. *Unavailable*: seconds from a failed operation to "
        "the next one that succeeded, plus operations that took over a second (stuck on a node that was "
        "gone); *longest*: the longest such stretch. What each method does: the docstring of bench/roll.py.",
        "",
        "| method | node timeout | down | round | roll s | ops | failed ops (by kind) | unavailable s "
        "| longest outage s | CLUSTERDOWN | keys lost | p99 ms | error |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        failed = ", ".join(f"{k} {v}" for k, v in sorted(r["failed"].items())) or "0"
        out.append(
            f"| {r['method']} | {r['node_timeout_ms']} ms | {r['down_s']:g} s | {r['round']} | {r['seconds']:.1f} "
            f"| {r['ops']} | {failed} | {r['unavailable_s']:.1f} | {r['longest_outage_s']:.1f} | {r['clusterdown']} "
            f"| {r['lost']} | {r['p99_ms']:.1f} | {r['error'] or ''} |"
        )
    out.append("")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.roll", description=__doc__)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--keys", type=int, default=50_000)
    p.add_argument("--node-timeouts", type=lambda t: tuple(int(x) for x in t.split(",")), default=(15000, 3000))
    p.add_argument("--down", type=float, default=5.0, help="seconds each node is gone between stop and start")
    p.add_argument("--methods", type=lambda t: tuple(t.split(",")), default=METHODS)
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "roll.json")
    p.add_argument("--markdown", type=Path, default=REPO / "docs" / "benchmarks-rolling.md")
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        p.error(f"--methods: {', '.join(unknown)} unknown; choose from {', '.join(METHODS)}")
    results: dict[str, Any] = {
        "command": "venv/bin/python -m bench.roll " + shlex.join(sys.argv[1:] if argv is None else list(argv)),
        "machine": machine_info(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "runs": [],
    }
    with tempfile.TemporaryDirectory(prefix="bench-roll-") as tmp:
        for nt in args.node_timeouts:
            for rnd in range(args.rounds):
                order = args.methods if rnd % 2 == 0 else args.methods[::-1]
                for method in order:
                    r = roll_once(method, rnd, nt, args.down, args.keys, Path(tmp), args.timeout)
                    _say(
                        f"{method} nt={nt} round {rnd}: {r.seconds:.1f}s, {sum(r.failed.values())} of {r.ops} ops "
                        f"failed {r.failed}, unavailable {r.unavailable_s:.1f}s (longest {r.longest_outage_s:.1f}s), "
                        f"CLUSTERDOWN {r.clusterdown}, lost {r.lost} {r.error}"
                    )
                    results["runs"].append(asdict(r))
                    results["loadavg_end"] = loadavg()
                    args.out.parent.mkdir(parents=True, exist_ok=True)
                    args.out.write_text(json.dumps(results, indent=2) + "\n")
                    args.markdown.write_text(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
