"""Formation: fresh servers to a complete M x 1 cluster, timed by the benchmark's own poller.

The clock starts once every node answers PING and stops at the first poller
sweep in which every node reports cluster_state:ok, 16384 slots, M masters,
all nodes known and every replica's link up and, with ``done="replicas"``
(the default since issue 13), every node lists every replica. The tool's own
exit time is recorded too but is not the result: a tool that exits early has
not finished. Up to TIMELINE_MAX_MASTERS the poller also records when each
formation step became visible (bench.state.STEPS), seconds from the tool's start.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.child import Child, bootstrap_cmd
from bench.servers import cli_binary, farm
from bench.state import Poller

TOOLS = ("bootstrap", "redis-cli")
DONE = ("replicas", "ok")  # finish lines: "ok" = the pre-issue-13 one, without "every node sees every replica"
TIMELINE_MAX_MASTERS = 10  # a full sweep of every node every 20 ms is cheap at 20 nodes, not at 100


@dataclass
class FormationRun:
    tool: str
    masters: int
    node_timeout_ms: int
    round: int
    settle_s: float  # servers were up (answering PING) this long before the clock started
    writable_floor_s: float  # Redis' CLUSTER_WRITABLE_DELAY: 2 s after the last server started, from the clock start
    seconds: float  # PING-ready -> poller sees the cluster complete
    tool_exit_s: float
    ok: bool
    error: str = ""
    servers_cpu_s: float = 0.0  # all redis-servers' CPU (user+system) from the tool's start to ready
    tool_cpu_s: float = 0.0
    done: str = "ok"
    steps: dict[str, float] = field(default_factory=dict)  # bench.state.STEPS -> s from the tool's start
    # Servers ran with the server's own defaults (servers.config(defaults=True); e.g. repl-diskless-sync-delay
    # 5), not the bench's tuned config (issue 26). Rows written before the field: tuned.
    server_defaults: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def command(tool: str, masters: int, addresses: list[str]) -> list[str]:
    if tool == "bootstrap":
        return bootstrap_cmd("apply", "--masters", str(masters), "--replicas", "1", "--timeout", "300", *addresses)
    return [cli_binary(), "--cluster", "create", *addresses, "--cluster-replicas", "1", "--cluster-yes"]


WRITABLE_DELAY_S = 2.0  # cluster.h CLUSTER_WRITABLE_DELAY: a new master stays fail this long after its first cron


def form_once(
    tool: str,
    masters: int,
    node_timeout_ms: int,
    rnd: int,
    work: Path,
    timeout: float,
    settle: float = 0.0,
    done_when: str = "replicas",
    server_defaults: bool = False,
) -> FormationRun:
    """One formation on fresh servers; ``settle`` > 0 models pods that have been Ready for a while;
    ``server_defaults``: the servers run with the server's defaults, not the tuned bench config."""
    name = f"form-{tool}-{masters}-{node_timeout_ms}-{settle}{'-defaults' if server_defaults else ''}-{rnd}"
    with farm(work / name, node_timeout_ms, defaults=server_defaults) as f:
        servers = f.spawn(masters * 2)  # returns once every node answers PING
        last_start = time.monotonic() if not f.started_at else max(f.started_at)
        time.sleep(settle)
        poller = Poller(
            servers, masters, 1, roles_everywhere=done_when == "replicas", timeline=masters <= TIMELINE_MAX_MASTERS
        )
        cpu0 = sum(s.cpu_seconds() for s in servers)
        try:
            child = Child(command(tool, masters, [s.address for s in servers]), f.base / "tool.log")
            try:
                ready = poller.wait(timeout)
                error = ""
            except TimeoutError as exc:
                ready, error = 0.0, str(exc)
            servers_cpu = sum(s.cpu_seconds() for s in servers) - cpu0
            done = child.wait(timeout)
        finally:
            poller.close()
        if done.returncode != 0:
            error = (error + f"; {tool} exited {done.returncode}: {done.tail(5)}").strip("; ")
        return FormationRun(
            tool=tool,
            masters=masters,
            node_timeout_ms=node_timeout_ms,
            round=rnd,
            settle_s=settle,
            writable_floor_s=max(last_start + WRITABLE_DELAY_S - child.started, 0.0),
            seconds=(ready - child.started) if ready else float("nan"),
            tool_exit_s=done.seconds,
            ok=not error,
            error=error,
            servers_cpu_s=round(servers_cpu, 2),
            tool_cpu_s=round(done.cpu_s, 2),
            done=done_when,
            steps={k: round(t - child.started, 3) for k, t in poller.steps.items()},
            server_defaults=server_defaults,
        )
