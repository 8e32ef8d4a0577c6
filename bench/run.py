"""``python -m bench``: formation and resharding, this project's bootstrap vs redis-cli, in one run.

Rounds alternate which tool goes first, so drift of the machine (page cache,
CPU frequency, a noisy neighbour) hits both. Every run starts its own
servers and stops them by PID afterwards, on success and on failure.
Writes raw results (JSON), docs/benchmarks.md and docs/benchmarks.png.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import data, report, servers
from bench.child import REPO
from bench.formation import DONE, TOOLS, form_once
from bench.resharding import REPLICAS, ReshardRun, reshard_once

DEFAULT_FORM_SIZES = (3, 10, 50)
DEFAULT_KEYS = (50_000, 200_000, 1_000_000)
# 15000 ms: the project's default (components/settings/); Redis clamps its rejoin delay to 5 s. Clock at once.
# 1000 ms, servers up 3 s first (pods Ready before the bootstrap runs): the smallest timeout the project allows
# and no CLUSTER_WRITABLE_DELAY left, i.e. as little of Redis' own waiting as possible, to show the tools' part.
# Third field: the servers run with the server's own defaults (servers.config(defaults=True)), not tuned.
DEFAULT_FORM_CELLS = ((15000, 0.0, False), (1000, 3.0, False))
DEFAULTS = "defaults"  # --form-cells NODE_TIMEOUT_MS:SETTLE_S:defaults
SMOKE: dict[str, tuple[int, ...] | int] = {
    "form_sizes": (3,),
    "keys": (2000,),
    "rounds": 1,
    "reshard_timeouts": (1000,),
}
# 100 nodes with a 1 s node timeout ping every peer every 0.5 s: on 2 cores that saturated the machine
# (load average 99) and a second round never formed in 5 minutes (bench/NOTES.md). Not a setting to run.
MAX_MASTERS_SHORT_TIMEOUT = 10


def _cell(text: str) -> tuple[int, float, bool]:
    """``NODE_TIMEOUT_MS:SETTLE_S`` (tuned servers) or ``NODE_TIMEOUT_MS:SETTLE_S:defaults``."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] != DEFAULTS):
        raise argparse.ArgumentTypeError(f"{text!r}: a cell is NODE_TIMEOUT_MS:SETTLE_S[:{DEFAULTS}]")
    return int(parts[0]), float(parts[1]), len(parts) == 3


def _cells(text: str) -> tuple[tuple[int, float, bool], ...]:
    return tuple(_cell(c) for c in text.split(",") if c)


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x)


def _replicas(text: str) -> tuple[int, ...]:
    """``--reshard-replicas``: replicas per master of the resharding cells, each one of REPLICAS."""
    got = _ints(text)
    if not got or any(r not in REPLICAS for r in got):
        raise argparse.ArgumentTypeError(f"{text!r}: replicas per master, comma-separated, each one of {REPLICAS}")
    return got


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--report-only", action="store_true", help="rewrite the Markdown and chart from --out, run nothing")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, one round (for the test suite)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--form-sizes", type=_ints, default=DEFAULT_FORM_SIZES, help="masters, e.g. 3,10,50")
    p.add_argument("--keys", type=_ints, default=DEFAULT_KEYS, help="keys for resharding, e.g. 200000,1000000")
    p.add_argument(
        "--form-cells",
        type=_cells,
        default=DEFAULT_FORM_CELLS,
        help="formation cells NODE_TIMEOUT_MS:SETTLE_S[:defaults], e.g. 15000:0,1000:3,3000:0:defaults (settle: "
        "seconds the servers are up before the clock starts; 0 = at once, as the issue asks; defaults: the "
        "servers run with the server's own defaults, e.g. repl-diskless-sync-delay 5, instead of the bench's "
        "tuned config, see bench/servers.py config)",
    )
    p.add_argument(
        "--form-done",
        choices=DONE,
        default=DONE[0],
        help="formation finish line: replicas = every node ok AND every node lists every replica (issue 13); "
        "ok = without the last part (the earlier runs)",
    )
    p.add_argument(
        "--append",
        action="store_true",
        help="add this run's rows to those already in --out (formation cells keep apart by node timeout, settle, "
        "finish line, server defaults or tuned; resharding cells by keys, node timeout, replicas); the Markdown "
        "lists every command",
    )
    p.add_argument("--reshard-timeouts", type=_ints, default=(15000, 1000), help="cluster-node-timeout, resharding")
    p.add_argument(
        "--reshard-replicas",
        type=_replicas,
        default=(1,),
        help="replicas per master of the resharding cells, e.g. 1,0: 1 = 3x1 -> 4x1 (2 servers added); 0 = 3x0 -> "
        "4x0 (one server added as the 4th master; each run also measures the new master's rejoin floor, "
        "bench/NOTES.md)",
    )
    p.add_argument("--tools", type=lambda t: tuple(t.split(",")), default=TOOLS, help="bootstrap,redis-cli")
    p.add_argument("--skip", choices=("formation", "resharding"), action="append", default=[])
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per tool run")
    p.add_argument(
        "--server",
        help=f"server binary for every node: a path or one of {', '.join(servers.SERVERS)} "
        f"(default: ${servers.ENV}, else redis-7)",
    )
    p.add_argument("--work", type=Path, help="keep servers' dirs and tool logs here (default: a temp dir, removed)")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "latest.json")
    p.add_argument("--markdown", type=Path, default=REPO / "docs" / "benchmarks.md")
    p.add_argument("--chart", type=Path, default=REPO / "docs" / "benchmarks.png")
    return p


def _say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _chart_link(args: argparse.Namespace) -> str:
    """The chart as the Markdown links it: relative to the Markdown's directory (docs/X.md -> X.png)."""
    chart: Path = args.chart
    markdown: Path = args.markdown
    return os.path.relpath(chart.resolve(), markdown.resolve().parent)


def _write(args: argparse.Namespace, results: dict[str, Any], started: float) -> None:
    """Rewrite all outputs after every run: an interrupted run still leaves what it measured."""
    results["seconds"] = round(time.monotonic() - started, 1)
    results["loadavg_end"] = report.loadavg()
    if "runs" in results:  # --append: this run's header joins the earlier ones
        this = {k: results[k] for k in ("command", "machine", "started", "rounds", "seconds", "loadavg_end")}
        results["runs"] = [r for r in results["runs"] if r.get("started") != results["started"]] + [this]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    args.markdown.parent.mkdir(parents=True, exist_ok=True)
    args.markdown.write_text(report.markdown(results, _chart_link(args)))
    report.chart(results, args.chart)


def _reshard(
    args: argparse.Namespace,
    results: dict[str, Any],
    started: float,
    work: Path,
    tool: str,
    keys: int,
    nt: int,
    rnd: int,
    slots: list[list[int]],
    replicas: int,
) -> None:
    try:
        rr = reshard_once(tool, keys, nt, rnd, work, args.timeout, slots, replicas)
    except Exception as exc:  # a failed run is a result, not the end of the benchmark
        rr = ReshardRun(tool=tool, keys=keys, node_timeout_ms=nt, round=rnd, replicas=replicas)
        rr.error = f"{type(exc).__name__}: {exc}"[:500]
    shape = "" if replicas == 1 else f" 3x{replicas}->4x{replicas}"
    floor = "" if replicas == 1 else f" (floor {rr.floor_s:.2f}s, gap {rr.gap_s:.2f}s)"
    _say(
        f"resharding{shape} {keys} keys node-timeout {nt} {tool}: {rr.seconds:.2f}s{floor} "
        f"{rr.keys_moved} moved ({rr.keys_per_s:,.0f} keys/s; "
        f"move phase {rr.move_seconds:.2f}s "
        f"{rr.move_keys_per_s:,.0f} keys/s) lost {rr.lost} "
        f"p99 rest/move {rr.rest_p99_ms:.2f}/{rr.move_p99_ms:.2f} ms "
        f"rss {rr.peak_rss_mb:.0f} MB failures {len(rr.failures)}"
    )
    results["resharding"].append(rr.to_json())
    _write(args, results, started)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # SIGTERM unwinds like an exception, so every farm's finally stops its redis-servers by PID.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.report_only:
        saved = json.loads(args.out.read_text())
        args.markdown.write_text(report.markdown(saved, _chart_link(args)))
        report.chart(saved, args.chart)
        return 0
    if args.server:
        os.environ[servers.ENV] = args.server  # the farms and bench.servers.server_binary() read it
    try:
        servers.server_binary()
    except ValueError as exc:
        print(f"python -m bench: {exc}", file=sys.stderr)
        return 2
    if args.smoke:
        args.form_sizes, args.keys, args.rounds = SMOKE["form_sizes"], SMOKE["keys"], SMOKE["rounds"]
        args.reshard_timeouts, args.form_cells = SMOKE["reshard_timeouts"], ((1000, 0.0, False),)
    results: dict[str, Any] = {
        "command": "venv/bin/python -m bench " + shlex.join(sys.argv[1:] if argv is None else list(argv)),
        "machine": report.machine_info(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "rounds": args.rounds,
        "formation": [],
        "resharding": [],
    }
    if args.append and args.out.exists():
        saved = json.loads(args.out.read_text())
        earlier = saved.get("runs") or [
            {k: saved[k] for k in ("command", "machine", "started", "rounds", "seconds", "loadavg_end") if k in saved}
        ]
        results["runs"] = earlier
        results["formation"], results["resharding"] = saved["formation"], saved["resharding"]
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        work = Path(tmp)
        if args.work:
            servers.KEEP_DIRS, work = True, args.work
        if "formation" not in args.skip:
            for nt, settle, defaults in args.form_cells:
                settings = "server defaults" if defaults else "tuned"
                for masters in args.form_sizes:
                    if masters > MAX_MASTERS_SHORT_TIMEOUT and nt < 5000:
                        _say(f"formation {masters}x1 at node-timeout {nt} ms skipped (see MAX_MASTERS_SHORT_TIMEOUT)")
                        continue
                    for rnd in range(args.rounds):
                        for tool in args.tools if rnd % 2 == 0 else args.tools[::-1]:
                            r = form_once(tool, masters, nt, rnd, work, args.timeout, settle, args.form_done, defaults)
                            _say(
                                f"formation {masters}x1 node-timeout {nt} settle {settle} {settings} {tool}: "
                                f"{r.seconds:.2f}s (writable floor {r.writable_floor_s:.2f}s) {r.error}"
                            )
                            results["formation"].append(r.to_json())
                            _write(args, results, started)
        if "resharding" not in args.skip:
            for keys in args.keys:
                slots = data.keys_by_slot(keys)
                for nt in args.reshard_timeouts:
                    for replicas in args.reshard_replicas:
                        for rnd in range(args.rounds):
                            for tool in args.tools if rnd % 2 == 0 else args.tools[::-1]:
                                _reshard(args, results, started, work, tool, keys, nt, rnd, slots, replicas)
    _write(args, results, started)
    _say(f"wrote {args.out}, {args.markdown}, {args.chart} in {results['seconds']}s")
    return 0
