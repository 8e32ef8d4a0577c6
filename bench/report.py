"""docs/benchmarks.md and docs/benchmarks.png from the raw results of one run.

Medians with min-max spread, ratios of medians (redis-cli / bootstrap time, or
bootstrap / redis-cli keys/s), and the Redis-imposed floors next to them, so a
reader can tell what the tool controls from what Redis does by itself.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import redis

from bench import servers

Row = dict[str, Any]


def loadavg() -> str:
    """The 1/5/15-minute load averages: the machine may be shared, and the numbers depend on it."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def machine_info() -> dict[str, str]:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = next(
        (int(ln.split()[1]) for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal")), 0
    )
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).parents[1],
    ).stdout
    return {
        "cpu": f"{cpu} x {os.cpu_count()}",
        "memory": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "kernel": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "redis-py": redis.__version__,
        "server": servers.server_version(servers.server_binary()),
        "cli": servers.server_version(servers.cli_binary()),
        "commit": commit.strip(),
        "load average at start": loadavg(),
    }


def _clamp_rejoin_ms(node_timeout_ms: int) -> int:
    """Redis' rejoin delay for a master that was among the minority (cluster.c, clusterUpdateState)."""
    return min(max(node_timeout_ms, 500), 5000)


def _replicas(r: Row) -> int:
    """Replicas per master of a resharding row; rows from before issue 26 had no field and ran 3x1 -> 4x1."""
    return int(r.get("replicas", 1))


def _shape(replicas: int) -> str:
    return f"3x{replicas} → 4x{replicas}"


def _select_rs(rows: list[Row], replicas: int, **match: Any) -> list[Row]:
    return [r for r in _select(rows, **match) if _replicas(r) == replicas]


def _rs_cells(rows: list[Row]) -> list[tuple[int, int, int]]:
    """(keys, node timeout, replicas) of the resharding rows: keys up, node timeout down, x1 before x0."""
    return sorted({(r["keys"], r["node_timeout_ms"], _replicas(r)) for r in rows}, key=lambda c: (c[0], -c[1], -c[2]))


def _floor(r: Row) -> float:
    """The run's measured floor (MEET reached the new master -> its first cluster_state:ok); NaN if none."""
    return float(r.get("floor_s", math.nan))


def _join(r: Row, step: str) -> float:
    return float(r.get("join_steps", {}).get(step, math.nan))


def _stats(values: Iterable[float]) -> tuple[float, float, float]:
    v = [x for x in values if not math.isnan(x)]
    if not v:
        return math.nan, math.nan, math.nan
    return statistics.median(v), min(v), max(v)


def _fmt(values: Iterable[float], digits: int = 2, scale: float = 1.0) -> str:
    med, lo, hi = _stats(x * scale for x in values)
    if math.isnan(med):
        return "—"
    return f"{med:,.{digits}f} ({lo:,.{digits}f}-{hi:,.{digits}f})"


def _select(rows: list[Row], **match: Any) -> list[Row]:
    """Rows matching, without those marked ``excluded`` (kept in the JSON, listed in the Markdown)."""
    return [r for r in rows if not r.get("excluded") and all(r[k] == v for k, v in match.items())]


def excluded(results: dict[str, Any]) -> list[str]:
    return [
        f"- {kind} {r['tool']} round {r['round']} ({r.get('masters', r.get('keys'))}"
        f"{', ' + _shape(_replicas(r)) if kind == 'resharding' else ''}, node-timeout "
        f"{r['node_timeout_ms']} ms{', server defaults' if _defaults(r) else ''}): {r['seconds']:.2f} s, "
        f"excluded: {r['excluded']}"
        for kind in ("formation", "resharding")
        for r in results[kind]
        if r.get("excluded")
    ]


def _med(rows: list[Row], key: str | Callable[[Row], float]) -> float:
    get = key if callable(key) else (lambda r: float(r[key]))
    return _stats(get(r) for r in rows if r["ok"])[0]


def _ratio(a: float, b: float) -> str:
    return "—" if math.isnan(a) or math.isnan(b) or b == 0 else f"{a / b:.1f}x"


def _done(r: Row) -> str:
    """The finish line of a formation row; rows from before issue 13 had no field and used "ok"."""
    return str(r.get("done", "ok"))


DONE_LABEL = {"ok": "all ok", "replicas": "all ok + every node sees every replica"}


def _defaults(r: Row) -> bool:
    """Whether a formation row's servers ran with the server's own defaults (issue 26); older rows: tuned."""
    return bool(r.get("server_defaults", False))


def _settings(defaults: bool) -> str:
    return "server defaults" if defaults else "tuned"


# A formation cell: node timeout, settle, finish line, server defaults. Rows differing in any stay apart.
FormCell = tuple[int, float, str, bool]


def _form_cells(rows: list[Row]) -> list[FormCell]:
    return sorted(
        {(r["node_timeout_ms"], r["settle_s"], _done(r), _defaults(r)) for r in rows},
        key=lambda c: (c[2], c[3], -c[0], c[1]),
    )


def _select_form(rows: list[Row], done: str, defaults: bool, **match: Any) -> list[Row]:
    return [r for r in _select(rows, **match) if _done(r) == done and _defaults(r) == defaults]


def formation_table(rows: list[Row]) -> list[str]:
    out = [
        "| nodes | done when | node-timeout | servers up before clock | server settings | Redis rejoin delay "
        "| Redis writable floor (s) | bootstrap apply (s) | redis-cli create (s) | speed-up | target "
        "| bootstrap exits (s) | redis-cli exits (s) | servers' CPU, bootstrap / redis-cli (s) | bootstrap CPU (s) "
        "| failed runs |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for nt, settle, done, defaults in _form_cells(rows):
        for m in sorted({r["masters"] for r in rows}):
            match = {"masters": m, "node_timeout_ms": nt, "settle_s": settle}
            ours = _select_form(rows, done, defaults, tool="bootstrap", **match)
            cli = _select_form(rows, done, defaults, tool="redis-cli", **match)
            if not ours and not cli:
                continue  # a cell not run (e.g. skipped by bench.run)
            target = {3: "≥ 3x", 50: "≥ 5x"}.get(m, "")
            failed = sum(not r["ok"] for r in ours + cli)
            out.append(
                f"| {m}x1 ({2 * m}) | {DONE_LABEL.get(done, done)} | {nt} ms | {settle:g} s | {_settings(defaults)} "
                f"| {_clamp_rejoin_ms(nt) / 1000:.1f} s "
                f"| {_fmt(r['writable_floor_s'] for r in ours + cli)} "
                f"| {_fmt(r['seconds'] for r in ours if r['ok'])} | {_fmt(r['seconds'] for r in cli if r['ok'])} "
                f"| {_ratio(_med(cli, 'seconds'), _med(ours, 'seconds'))} | {target} "
                f"| {_fmt(r['tool_exit_s'] for r in ours if r['ok'])} "
                f"| {_fmt(r['tool_exit_s'] for r in cli if r['ok'])} "
                f"| {_fmt(r.get('servers_cpu_s', math.nan) for r in ours if r['ok'])} / "
                f"{_fmt(r.get('servers_cpu_s', math.nan) for r in cli if r['ok'])} "
                f"| {_fmt(r.get('tool_cpu_s', math.nan) for r in ours if r['ok'])} "
                f"| {failed} |"
            )
    return out


def steps_table(rows: list[Row]) -> list[str]:
    """Median seconds from the tool's start to each formation step, as the poller saw it (bench.state.STEPS)."""
    from bench.state import STEPS

    timed = [r for r in rows if r.get("steps") and r["ok"]]
    if not timed:
        return []
    out = [
        "| nodes | node-timeout | servers up before clock | server settings | tool | runs | "
        + " | ".join(STEPS)
        + " | done |",
        "|---|---|---|---|---|---|" + "---|" * (len(STEPS) + 1),
    ]
    for nt, settle, done, defaults in _form_cells(timed):
        for m in sorted({r["masters"] for r in timed}):
            for tool in ("bootstrap", "redis-cli"):
                sel = _select_form(timed, done, defaults, tool=tool, masters=m, node_timeout_ms=nt, settle_s=settle)
                if not sel:
                    continue
                cells = [_fmt(r["steps"].get(step, math.nan) for r in sel) for step in STEPS]
                out.append(
                    f"| {m}x1 | {nt} ms | {settle:g} s | {_settings(defaults)} | {tool} | {len(sel)} | "
                    + " | ".join(cells)
                    + f" | {_fmt(r['seconds'] for r in sel)} |"
                )
    out += ["", "Steps: " + "; ".join(f"**{k}**: {v}" for k, v in STEPS.items()) + "."]
    return out


def reshard_table(rows: list[Row]) -> list[str]:
    out = [
        "| keys | scale-out | node-timeout | tool | keys moved | wall (s) | keys/s (wall) | move phase (s) "
        "| keys/s (move phase) | client p50 / p99 at rest (ms) | client p50 / p99 during move (ms) | client errors "
        "| keys lost | peak RSS (MB) | tool CPU (s) | busiest redis-server CPU (s) | tool failures |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for keys, nt, replicas in _rs_cells(rows):
        for tool in ("bootstrap", "redis-cli"):
            sel = _select_rs(rows, replicas, tool=tool, keys=keys, node_timeout_ms=nt)
            if not sel:
                continue
            ok = [r for r in sel if r["ok"]]
            lost = sum(max(r["lost"], 0) for r in sel)
            fails = sum(len(r["failures"]) for r in sel)
            out.append(
                f"| {keys:,} | {_shape(replicas)} | {nt} ms | {tool} | {_fmt((r['keys_moved'] for r in ok), 0)} "
                f"| {_fmt(r['seconds'] for r in ok)} | {_fmt((r['keys_per_s'] for r in ok), 0)} "
                f"| {_fmt(r['move_seconds'] for r in ok)} | {_fmt((r['move_keys_per_s'] for r in ok), 0)} "
                f"| {_fmt(r['rest_p50_ms'] for r in ok)} / {_fmt(r['rest_p99_ms'] for r in ok)} "
                f"| {_fmt(r['move_p50_ms'] for r in ok)} / {_fmt(r['move_p99_ms'] for r in ok)} "
                f"| {sum(r['client_errors'] for r in ok)} | {lost} "
                f"| {_fmt((r['peak_rss_mb'] for r in ok), 0)} | {_fmt(r['tool_cpu_s'] for r in ok)} "
                f"| {_fmt(max(r['redis_cpu_s'].values(), default=math.nan) for r in ok)} "
                f"| {fails} in {len(sel)} runs; {sum(not r['ok'] for r in sel)} run(s) did not finish |"
            )
    return out


FLOOR_TARGET_S = 0.5  # issue 26: the bootstrap within 0.5 s of the floor (median gap, wall - floor, per run)


def floor_table(rows: list[Row]) -> list[str]:
    """The no-replica cells: each run's measured floor, the tool's wall time and the gap, split around the floor."""
    cells = [c for c in _rs_cells(rows) if c[2] == 0]
    if not cells:
        return []
    out = [
        "| keys | node-timeout | Redis rejoin delay (formula) | tool | runs with a floor | MEET reached the new master "
        "(s after start) | floor: MEET → new master ok (s) | of it, new master sees slots → ok (s) "
        "| new master ok → done (s) | wall (s) | gap: wall - floor (s) | target |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for keys, nt, replicas in cells:
        for tool in ("bootstrap", "redis-cli"):
            sel = [r for r in _select_rs(rows, replicas, tool=tool, keys=keys, node_timeout_ms=nt) if r["ok"]]
            if not sel:
                continue
            floored = [r for r in sel if not math.isnan(_floor(r))]
            target = ""
            if tool == "bootstrap":
                gap = _stats(r["seconds"] - _floor(r) for r in floored)[0]
                verdict = "—" if math.isnan(gap) else "met" if gap <= FLOOR_TARGET_S else "missed"
                target = f"gap ≤ {FLOOR_TARGET_S:g} s: {verdict}"
            out.append(
                f"| {keys:,} | {nt} ms | {_clamp_rejoin_ms(nt) / 1000:.1f} s | {tool} | {len(floored)} of {len(sel)} "
                f"| {_fmt(_join(r, 'joined') for r in floored)} | {_fmt(_floor(r) for r in floored)} "
                f"| {_fmt(_join(r, 'ok') - _join(r, 'sees_slots') for r in floored)} "
                f"| {_fmt(r['seconds'] - _join(r, 'ok') for r in floored)} "
                f"| {_fmt(r['seconds'] for r in sel)} | {_fmt(r['seconds'] - _floor(r) for r in floored)} "
                f"| {target} |"
            )
    return out


def floor_lines(rows: list[Row]) -> list[str]:
    """The issue-26 target per no-replica cell: the bootstrap within FLOOR_TARGET_S of the measured floor."""
    lines = []
    for keys, nt, replicas in _rs_cells(rows):
        if replicas != 0:
            continue
        every = [r for r in _select_rs(rows, replicas, keys=keys, node_timeout_ms=nt) if r["ok"]]
        floor = _stats(_floor(r) for r in every)[0]
        if math.isnan(floor):
            continue
        parts = []
        for tool in ("bootstrap", "redis-cli"):
            sel = [r for r in every if r["tool"] == tool and not math.isnan(_floor(r))]
            if not sel:
                continue
            wall, gap = _stats(r["seconds"] for r in sel)[0], _stats(r["seconds"] - _floor(r) for r in sel)[0]
            verdict = ""
            if tool == "bootstrap":
                verdict = f" (target ≤ {FLOOR_TARGET_S:g} s: {'met' if gap <= FLOOR_TARGET_S else 'missed'})"
            parts.append(f"{tool} {wall:.2f} s, {gap:.2f} s over its floor{verdict}")
        lines.append(
            f"- resharding {keys:,} keys without replicas ({_shape(replicas)}), node-timeout {nt} ms: floor "
            f"{floor:.2f} s (the new master's MEET → its first cluster_state:ok, median of {len(every)} runs; "
            f"Redis' rejoin delay {_clamp_rejoin_ms(nt) / 1000:.1f} s); bootstrap within "
            f"{FLOOR_TARGET_S:g} s of the floor: " + "; ".join(parts)
        )
    return lines


def ratios(results: dict[str, Any]) -> list[str]:
    """The issue's targets, as measured in this run."""
    lines = []
    form = results["formation"]
    for m, want in ((3, 3.0), (50, 5.0)):
        for nt, settle, done, defaults in _form_cells(form):
            match = {"masters": m, "node_timeout_ms": nt, "settle_s": settle}
            ours = _med(_select_form(form, done, defaults, tool="bootstrap", **match), "seconds")
            cli = _med(_select_form(form, done, defaults, tool="redis-cli", **match), "seconds")
            if not math.isnan(ours) and not math.isnan(cli):
                verdict = "met" if cli / ours >= want else "missed"
                lines.append(
                    f"- formation {m}x1 (done: {DONE_LABEL.get(done, done)}), node-timeout {nt} ms, "
                    f"servers up {settle:g} s before the clock{', server defaults' if defaults else ''}: "
                    f"{cli / ours:.1f}x (target {want:.0f}x, {verdict})"
                )
    rs = results["resharding"]
    for keys, nt, replicas in _rs_cells(rs):
        ours_rows = _select_rs(rs, replicas, tool="bootstrap", keys=keys, node_timeout_ms=nt)
        cli_rows = _select_rs(rs, replicas, tool="redis-cli", keys=keys, node_timeout_ms=nt)
        ours, cli = _med(ours_rows, "keys_per_s"), _med(cli_rows, "keys_per_s")
        if math.isnan(ours) or math.isnan(cli):
            continue
        move = _ratio(_med(ours_rows, "move_keys_per_s"), _med(cli_rows, "move_keys_per_s"))
        p99_rest, p99_move = _med(ours_rows, "rest_p99_ms"), _med(ours_rows, "move_p99_ms")
        rss = max((r["peak_rss_mb"] for r in ours_rows), default=math.nan)
        lost = sum(max(r["lost"], 0) for r in ours_rows + cli_rows)
        shape = "" if replicas == 1 else f" without replicas ({_shape(replicas)})"
        lines.append(
            f"- resharding {keys:,} keys{shape}, node-timeout {nt} ms: {ours / cli:.1f}x redis-cli's keys/s over "
            f"the wall time, {move} in the move phase (target 10x at 1M); "
            f"client p99 during/at rest {p99_move / p99_rest:.1f}x (target ≤ 10x); "
            f"bootstrap peak RSS {rss:.0f} MB (target < 150 MB); keys lost {lost}"
        )
    return lines + floor_lines(rs)


NOTES = Path(__file__).with_name("NOTES.md")


def markdown(results: dict[str, Any], chart_link: str = "benchmarks.png") -> str:
    """The Markdown; ``chart_link``: the chart's path relative to the Markdown file."""
    m = results["machine"]
    runs = results.get("runs") or []
    runs_lines: list[str] = []
    if runs:
        runs_lines = ["Rows come from several runs (`--append`), each with its own command and load:", ""]
        for r in runs:
            machine = r.get("machine", {})
            runs_lines += [
                f"- started {r.get('started')}, {r.get('seconds')} s, {r.get('rounds')} round(s); "
                f"server {machine.get('server', machine.get('redis-server', '?'))}; "
                f"commit {machine.get('commit', '?')}; load average at start "
                f"{machine.get('load average at start', '?')}, at end {r.get('loadavg_end', '?')}:",
                "",
                "  ```",
                *(f"  {line}" for line in str(r.get("command", "")).splitlines()),
                "  ```",
            ]
        runs_lines.append("")
    parts = [
        "# Benchmarks: bootstrap vs redis-cli --cluster",
        "",
        "Generated by `bench/` (do not edit by hand; rerun the command). "
        f"Run started {results['started']}, took {results['seconds']} s, {results['rounds']} round(s) per cell; "
        "tools alternate which goes first in each round. Cells are median (min-max).",
        "",
        "```",
        results["command"],
        "```",
        "",
        "Machine: "
        + "; ".join(f"{k} {v}" for k, v in m.items())
        + f"; load average at end {results.get('loadavg_end', '?')}",
        "",
        *runs_lines,
        "## Targets, as measured",
        "",
        *ratios(results),
        "",
    ]
    if results["formation"]:
        parts += [
            "## Formation",
            "",
            "Fresh servers, 127.0.0.1-3 standing in for three Kubernetes nodes. Timed by the benchmark's own "
            'poller from "every node answers PING" to the first sweep in which every node reports '
            "`cluster_state:ok`, 16384 slots assigned, M masters, every node known, and every replica "
            "`master_link_status:up`. Two delays of Redis itself bound this from below for both tools: the "
            "writable floor (CLUSTER_WRITABLE_DELAY: a master reports fail for 2 s after its first cluster cron; "
            "shown as seconds after the clock started, from each server's start time) and the rejoin delay "
            "(clamp(cluster-node-timeout, 0.5 s, 5 s), for a master that has been in a minority partition). "
            '"exits" is when the tool\'s process ended (what a `pulumi up` waits for), also from the clock start. '
            "\"servers' CPU\" is the user+system CPU of all redis-server processes from the tool's start to ready: "
            "on this machine's cores, a run of W seconds can use at most cores x W, so a value near that means the "
            "servers' own work (handshakes, gossip), not the tool, set the pace. "
            '"server settings": tuned = the bench\'s config (bench/servers.py: `repl-diskless-sync-delay 0`, '
            "`appendonly yes`, `save \"\"`, the deployment's cluster settings); server defaults = the server's "
            "own defaults for all of those (Redis 7.0: `repl-diskless-sync-delay 5`, `appendonly no`), only "
            "what a loopback node needs set (`--form-cells NODE_TIMEOUT_MS:SETTLE_S:defaults`).",
            "",
            *formation_table(results["formation"]),
            "",
        ]
        steps = steps_table(results["formation"])
        if steps:
            parts += [
                "### Where the seconds go: formation steps as seen from outside",
                "",
                "Seconds from the tool's start (median (min-max)) to the first poller sweep (every 20 ms, every node "
                "asked CLUSTER INFO, INFO replication and CLUSTER NODES) at which each step is visible. The same "
                "observer for both tools.",
                "",
                *steps,
                "",
            ]
    if results["resharding"]:
        shapes = {_replicas(r) for r in results["resharding"]}
        parts += [
            "## Resharding 3 → 4 masters" + (" (x 1 replica)" if shapes == {1} else ""),
            "",
            "Each run: 6 fresh servers formed into 3x1 by the tool under test, N keys of 100 bytes loaded "
            "and replicated, then 2 empty servers added (4th master + its replica): bootstrap "
            "`apply --masters 4 --replicas 1` with all 8 nodes; redis-cli `add-node`, `add-node --cluster-slave` "
            "and `rebalance --cluster-use-empty-masters` (each retried after 0.5 s while it fails, e.g. with "
            '"I don\'t know about node"; a failed rebalance is followed by `--cluster fix`; every failure is '
            "counted in the last column). Wall time runs from the first command to the poller seeing 4x1 "
            "complete. Keys moved = keys of every slot whose owner changed. A paced redis-py `RedisCluster` "
            "client (500 ops/s, GET/SET, own process) measures latency for 3 s at rest and during the move. "
            "Afterwards every key is read back from its slot's owner. Peak RSS is the bootstrap process' "
            "high-water RSS (VmHWM of its own image, read from /proc every 10 ms; not ru_maxrss, which Linux "
            "carries over from the forked benchmark process into the exec'd tool).",
            "",
        ]
        if 0 in shapes:
            parts += [
                f"Without replicas ({_shape(0)}, `--reshard-replicas 0`): 3 fresh servers formed into 3x0, the "
                "keys loaded, then ONE empty server added as the 4th master: bootstrap `apply --masters 4 "
                "--replicas 0` with all 4 nodes; redis-cli `add-node` and `rebalance --cluster-use-empty-masters` "
                "(retried as above). Done when the poller sees 4x0 complete; everything else as above.",
                "",
            ]
        parts += [*reshard_table(results["resharding"]), ""]
        floors = floor_table(results["resharding"])
        if floors:
            parts += [
                "### Without replicas: the new master's rejoin floor",
                "",
                "A master that joins with no slots is a minority of its own view until it knows a master serving "
                "slots, and Redis then keeps it `cluster_state:fail` for its rejoin delay, clamp(cluster-node-"
                "timeout, 0.5 s, 5 s), refusing RESTORE-ASKING with CLUSTERDOWN: no key can move onto it before. "
                "Measured in every run, not assumed: a watcher asks the new server CLUSTER INFO every 20 ms from "
                "before the tool starts (bench.state.JoinWatch). **Floor** = from the first sample in which it "
                "knows another node (a MEET reached it) to the first in which it reports `cluster_state:ok`. "
                'Times "after start" count from the tool\'s start, the origin of the wall time, so wall = '
                "MEET + floor + (new master ok → done), and the **gap** (wall - floor, per run) is everything "
                "the tool adds: its start before the MEET and the move and finish after the new master serves. "
                "Each run is held to its own floor; the target is the bootstrap's median gap.",
                "",
                *floors,
                "",
            ]
    if excluded(results):
        parts += ["## Runs left out of the medians", "", *excluded(results), ""]
    if NOTES.exists():
        parts += [NOTES.read_text().strip(), ""]
    parts += [f"![formation and resharding]({chart_link})", ""]
    return "\n".join(parts)


def chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(16, 5), gridspec_kw={"width_ratios": [2, 1]})
    form = results["formation"]
    cells = sorted(
        {(r["node_timeout_ms"], r["settle_s"], r["masters"], _done(r), _defaults(r)) for r in form},
        key=lambda c: (c[3], c[4], -c[0], c[1], c[2]),
    )
    width = 0.38
    for k, tool in enumerate(("bootstrap", "redis-cli")):
        meds: list[float] = []
        errs: list[list[float]] = [[], []]
        for nt, settle, m, done, defaults in cells:
            sel = _select_form(form, done, defaults, tool=tool, masters=m, node_timeout_ms=nt, settle_s=settle)
            med, lo, hi = _stats(r["seconds"] for r in sel if r["ok"])
            meds.append(med)
            errs[0].append(med - lo if not math.isnan(med) else 0)
            errs[1].append(hi - med if not math.isnan(med) else 0)
        xs = [i + (k - 0.5) * width for i in range(len(cells))]
        ax1.bar(xs, meds, width, yerr=errs, label=tool, capsize=3)
    ax1.set_xticks(
        range(len(cells)),
        [
            f"{m}x1\nnt {nt / 1000:g}s\nup {st:g}s\n{'+replicas' if d == 'replicas' else 'ok'}"
            + ("\ndefaults" if dflt else "")
            for nt, st, m, d, dflt in cells
        ],
        fontsize=7,
    )
    ax1.set_ylabel("seconds to complete cluster (lower is better)")
    ax1.set_title("Formation")
    ax1.legend()
    rs = results["resharding"]
    rcells = sorted(_rs_cells(rs), key=lambda c: (c[0], c[1], -c[2]))
    for k, tool in enumerate(("bootstrap", "redis-cli")):
        meds = []
        errs = [[], []]
        for keys, nt, replicas in rcells:
            med, lo, hi = _stats(
                r["keys_per_s"] for r in _select_rs(rs, replicas, tool=tool, keys=keys, node_timeout_ms=nt) if r["ok"]
            )
            meds.append(med)
            errs[0].append(med - lo if not math.isnan(med) else 0)
            errs[1].append(hi - med if not math.isnan(med) else 0)
        xs = [i + (k - 0.5) * width for i in range(len(rcells))]
        ax2.bar(xs, meds, width, yerr=errs, label=tool, capsize=3)
    ax2.set_xticks(
        range(len(rcells)),
        [
            f"{keys // 1000:,}k keys\nnt {nt / 1000:g}s" + ("" if replicas == 1 else f"\n{replicas} replicas")
            for keys, nt, replicas in rcells
        ],
        fontsize=8,
    )
    ax2.set_ylabel("keys moved per second, wall time (higher is better)")
    ax2.set_title("Resharding 3→4 masters")
    ax2.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
