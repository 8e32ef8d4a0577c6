"""Backup and restore, this project's bootstrap vs redis-cli, side by side: ``python -m bench.backup``.

Each round starts its own servers: a 3-master x 1-replica source (formed by
the bootstrap) holding N keys of 100 bytes (``bench.data``), then for each tool:

- backup: ``python -m bootstrap backup`` (one consistent cut; the manifest
  says how long writes were paused) against the usual recipe, ``redis-cli
  --rdb FILE`` against each master in turn (no common cut, no pause);
- restore into a fresh 5-master cluster: ``python -m bootstrap restore``
  against ``redis-cli --cluster import TARGET --cluster-from LOADER
  --cluster-copy`` for each shard's file, loaded into a standalone server first
  (both tools' times include that load); every key is read back after each.

Tools alternate which goes first per round. Results: bench/results/backup.json
and docs/benchmarks-backup.md (every number with the command that made it).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import redis

from bench import data, report, servers
from bench.child import REPO

PYTHON = sys.executable
TOOLS = ("bootstrap", "redis-cli")


@dataclass
class Run:
    tool: str
    keys: int
    round: int
    backup_s: float = float("nan")
    pause_ms: float = float("nan")  # writes paused on every master for the cut (bootstrap only)
    restore_s: float = float("nan")
    restore_keys_per_s: float = float("nan")
    lost: int = -1
    error: str = ""


def _say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _cluster(f: servers.Farm, masters: int, replicas: int) -> list[servers.Server]:
    nodes = f.spawn(masters * (1 + replicas))
    cmd = [PYTHON, "-m", "bootstrap", "apply", "--masters", str(masters), "--replicas", str(replicas)]
    subprocess.run([*cmd, *(n.address for n in nodes)], cwd=REPO, check=True, capture_output=True, timeout=300)
    return nodes


def _masters(nodes: list[servers.Server]) -> list[servers.Server]:
    return [n for n in nodes if n.client().info("replication")["role"] == "master"]


def _backup(tool: str, source: list[servers.Server], out: Path) -> tuple[float, float, list[Path]]:
    """(seconds, pause ms, shard files) for one tool."""
    t0 = time.monotonic()
    if tool == "bootstrap":
        done = subprocess.run(
            [PYTHON, "-m", "bootstrap", "backup", "--to", str(out), source[0].address],
            cwd=REPO, check=True, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        seconds = time.monotonic() - t0
        made = Path(done.stdout.strip())
        manifest = json.loads((made / "manifest.json").read_text())
        return seconds, float(manifest["pause_ms"]), sorted(made.glob("shard-*.rdb"))
    out.mkdir(parents=True)
    files = []
    for i, m in enumerate(_masters(source)):
        path = out / f"shard-{i}.rdb"
        subprocess.run(
            [servers.cli_binary(), "-h", m.host, "-p", str(m.port), "--rdb", str(path)],
            check=True, capture_output=True, timeout=600,
        )  # fmt: skip
        files.append(path)
    return time.monotonic() - t0, float("nan"), files


def _restore(tool: str, files: list[Path], target: list[servers.Server], f: servers.Farm, work: Path) -> float:
    t0 = time.monotonic()
    if tool == "bootstrap":
        backup_dir = files[0].parent
        subprocess.run(
            [PYTHON, "-m", "bootstrap", "restore", "--from", str(backup_dir), "--server", servers.server_binary(),
             target[0].address],
            cwd=REPO, check=True, capture_output=True, timeout=1800,
        )  # fmt: skip
        return time.monotonic() - t0
    for i, file in enumerate(files):
        d = work / f"loader-{i}"
        d.mkdir(parents=True)
        (d / "dump.rdb").symlink_to(file.resolve())
        port = servers.free_cluster_port("127.0.0.1")
        conf = servers.config("127.0.0.1", port, d, cluster=False, extra={"appendonly": "no"})
        proc = servers.start_server(servers.server_binary(), "127.0.0.1", port, d, conf)
        try:
            servers.wait_answering([("127.0.0.1", port, proc, d / "redis.log")], timeout=300)
            subprocess.run(
                [servers.cli_binary(), "--cluster", "import", target[0].address, "--cluster-from",
                 f"127.0.0.1:{port}", "--cluster-copy"],
                check=True, capture_output=True, timeout=3600,
            )  # fmt: skip
        finally:
            servers.stop(proc)
    return time.monotonic() - t0


def run_once(tool: str, keys: int, rnd: int, work: Path, slots: list[list[int]]) -> Run:
    r = Run(tool=tool, keys=keys, round=rnd)
    base = work / f"{tool}-{keys}-{rnd}"
    try:
        with servers.farm(base / "source", 3000) as sf:
            source = _cluster(sf, 3, 1)
            data.load(source[0].client(timeout=60), slots)
            r.backup_s, r.pause_ms, files = _backup(tool, source, base / "backup")
        with servers.farm(base / "target", 3000) as tf:
            target = _cluster(tf, 5, 0)
            r.restore_s = _restore(tool, files, target, tf, base / "loaders")
            r.restore_keys_per_s = keys / r.restore_s
            r.lost, _ = data.count_lost(target[0].client(timeout=60), slots)
    except (subprocess.SubprocessError, OSError, RuntimeError, redis.RedisError) as exc:
        r.error = f"{type(exc).__name__}: {exc}"[:500]
    return r


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "# Benchmarks: backup and restore",
        "",
        f"Command: `{results['command']}` (server: {results['server']}); "
        f"{', '.join(f'{k} {v}' for k, v in results['machine'].items())}; "
        f"started {results['started']}, {results['seconds']} s.",
        "",
        "Source 3 masters x 1 replica with N keys of 100 bytes; restore into 5 masters; medians of the rounds. "
        "Backup: `python -m bootstrap backup` (one cut, writes paused on every master while each shard's "
        "snapshot forks) vs `redis-cli --rdb` against each master in turn (no common cut). Restore: "
        "`python -m bootstrap restore` vs `redis-cli --cluster import --cluster-copy` from each shard file "
        "loaded into a standalone server (both times include the load). Every key read back after each restore.",
        "",
        "| keys | tool | backup s | write pause ms | restore s | restore keys/s | lost | errors |",
        "|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    by: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for r in results["runs"]:
        by.setdefault((r["keys"], r["tool"]), []).append(r)
    for (keys, tool), rows in sorted(by.items()):

        def med(field: str, rows: list[dict[str, Any]] = rows) -> float:
            vals = [float(r[field]) for r in rows if r[field] == r[field]]  # NaN != NaN
            return statistics.median(vals) if vals else float("nan")

        errors = "; ".join(r["error"] for r in rows if r["error"]) or "none"
        lost = max(int(r["lost"]) for r in rows)
        pause = f"{med('pause_ms'):.0f}" if med("pause_ms") == med("pause_ms") else "none (no cut)"
        lines.append(
            f"| {keys:,} | {tool} | {med('backup_s'):.2f} | {pause} | {med('restore_s'):.2f} | "
            f"{med('restore_keys_per_s'):,.0f} | {lost} | {errors} |"
        )
    for keys in sorted({k for k, _ in by}):
        ours, theirs = by.get((keys, "bootstrap")), by.get((keys, "redis-cli"))
        if ours and theirs:
            ratio = statistics.median(r["restore_s"] for r in theirs) / statistics.median(r["restore_s"] for r in ours)
            lines.append(f"\nRestore of {keys:,} keys: the bootstrap is {ratio:.1f}x redis-cli (medians).")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.backup", description=__doc__)
    p.add_argument("--keys", type=lambda t: [int(x) for x in t.split(",")], default=[1_000_000])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--server", help=f"a path or one of {', '.join(servers.SERVERS)} (default redis-7)")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "backup.json")
    p.add_argument("--markdown", type=Path, default=REPO / "docs" / "benchmarks-backup.md")
    p.add_argument("--report-only", action="store_true", help="rewrite the Markdown from --out, run nothing")
    args = p.parse_args(argv)
    if args.report_only:
        args.markdown.write_text(markdown(json.loads(args.out.read_text())))
        return 0
    if args.server:
        os.environ[servers.ENV] = args.server
    results: dict[str, Any] = {
        "command": "venv/bin/python -m bench.backup " + shlex.join(sys.argv[1:] if argv is None else list(argv)),
        "server": servers.server_version(servers.server_binary()),
        "machine": report.machine_info(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "runs": [],
    }
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-backup-") as tmp:
        for keys in args.keys:
            slots = data.keys_by_slot(keys)
            for rnd in range(args.rounds):
                for tool in TOOLS if rnd % 2 == 0 else TOOLS[::-1]:
                    r = run_once(tool, keys, rnd, Path(tmp), slots)
                    _say(
                        f"{keys:,} keys {tool}: backup {r.backup_s:.2f}s (pause {r.pause_ms:.0f} ms), restore "
                        f"{r.restore_s:.2f}s ({r.restore_keys_per_s:,.0f} keys/s), lost {r.lost} {r.error}"
                    )
                    results["runs"].append(asdict(r))
                    results["seconds"] = round(time.monotonic() - started, 1)
                    args.out.parent.mkdir(parents=True, exist_ok=True)
                    args.out.write_text(json.dumps(results, indent=2) + "\n")
                    args.markdown.write_text(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
