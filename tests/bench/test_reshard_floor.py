"""Resharding without replicas (issue 26): 3x0 -> 4x0 really ends with 4 masters and no replica, and
each run records the new master's rejoin floor; the report keeps those cells apart from the 3x1 ones.

The real run is tiny (2000 keys, node timeout 1000 ms: a floor of about 1 s); no timing is asserted
beyond what holds by construction (the floor lies inside the wall time).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import pytest

from bench import report
from bench.run import _replicas, main, parser
from bench.state import JOIN_STEPS


def test_a_no_replica_resharding_ends_at_4x0_and_records_a_floor_inside_the_wall_time(tmp_path: Path) -> None:
    out, md, png = tmp_path / "r.json", tmp_path / "b.md", tmp_path / "b.png"
    argv = ["--skip", "formation", "--keys", "2000", "--reshard-timeouts", "1000", "--reshard-replicas", "0"]
    argv += ["--rounds", "1", "--timeout", "120"]
    assert main([*argv, "--out", str(out), "--markdown", str(md), "--chart", str(png)]) == 0
    rows = json.loads(out.read_text())["resharding"]
    assert {r["tool"] for r in rows} == {"bootstrap", "redis-cli"}
    for r in rows:
        # ok: the poller saw 4 masters x 0 replicas complete (cluster_size 4, 4 nodes known, no replica up:
        # bench.state.Poller(servers, 4, 0)) and every key was read back.
        assert r["ok"] and r["error"] == "", r
        assert r["replicas"] == 0 and r["lost"] == 0 and r["checked"] == r["keys"] == 2000
        assert 0 < r["keys_moved"] < r["keys"]
        assert set(r["join_steps"]) == set(JOIN_STEPS), r["join_steps"]
        steps = r["join_steps"]
        assert 0 <= steps["joined"] <= steps["sees_slots"] <= steps["ok"] <= r["seconds"] + 0.05, r
        assert 0 < r["floor_s"] < r["seconds"], r
        assert math.isclose(r["gap_s"], r["seconds"] - r["floor_s"], abs_tol=1e-9)
    text = md.read_text()
    assert "| 2,000 | 3x0 → 4x0 | 1000 ms |" in text
    assert "### Without replicas: the new master's rejoin floor" in text
    assert "bootstrap within 0.5 s of the floor" in text


def _rs(tool: str, seconds: float, **more: Any) -> dict[str, Any]:
    return {
        "tool": tool,
        "keys": 50_000,
        "node_timeout_ms": 3000,
        "round": 0,
        "seconds": seconds,
        "move_seconds": 1.0,
        "move_keys_per_s": 12_500.0,
        "keys_moved": 12_500,
        "keys_per_s": 12_500 / seconds,
        "lost": 0,
        "rest_p50_ms": 0.2,
        "rest_p99_ms": 0.4,
        "move_p50_ms": 0.3,
        "move_p99_ms": 1.0,
        "client_errors": 0,
        "peak_rss_mb": 70.0,
        "tool_cpu_s": 1.0,
        "redis_cpu_s": {"a": 1.0},
        "failures": [],
        "ok": True,
        "error": "",
        **more,
    }


def test_the_report_keeps_no_replica_cells_apart_reads_older_rows_as_x1_and_judges_the_gap() -> None:
    joined = {"joined": 0.3, "sees_slots": 0.32, "ok": 3.4}
    rows = [
        _rs("bootstrap", 5.0),  # written before the field existed: 3x1 -> 4x1
        _rs("redis-cli", 12.0),
        _rs("bootstrap", 3.5, replicas=0, floor_s=3.1, join_steps=joined),
        _rs("redis-cli", 12.5, replicas=0, floor_s=3.0, join_steps=joined),
    ]
    table = report.reshard_table(rows)
    assert len([ln for ln in table if "| 3x1 → 4x1 |" in ln]) == len([ln for ln in table if "| 3x0 → 4x0 |" in ln])
    assert len(table) == 6, table
    floors = report.floor_table(rows)
    assert len(floors) == 4, floors  # header, rule, one line per tool: the x1 rows have no floor
    assert "| 0.40 (0.40-0.40) | gap ≤ 0.5 s: met |" in floors[2], floors[2]
    lines = report.ratios({"formation": [], "resharding": rows})
    assert len([ln for ln in lines if "without replicas" in ln]) == 2  # the 3x0 cell's ratio line and its floor
    floor = lines[-1]
    assert floor.startswith("- resharding 50,000 keys without replicas (3x0 → 4x0), node-timeout 3000 ms: floor 3.05 s")
    assert "bootstrap 3.50 s, 0.40 s over its floor (target ≤ 0.5 s: met)" in floor
    assert "redis-cli 12.50 s, 9.50 s over its floor" in floor
    rows[2] = _rs("bootstrap", 3.7, replicas=0, floor_s=3.1, join_steps=joined)
    assert "(target ≤ 0.5 s: missed)" in report.ratios({"formation": [], "resharding": rows})[-1]


def test_reshard_replicas_take_0_and_1_default_to_1_and_refuse_anything_else() -> None:
    assert parser().parse_args([]).reshard_replicas == (1,)
    assert _replicas("0") == (0,) and _replicas("1,0") == (1, 0)
    with pytest.raises(argparse.ArgumentTypeError):
        _replicas("2")
    with pytest.raises(SystemExit):
        parser().parse_args(["--reshard-replicas", ""])
