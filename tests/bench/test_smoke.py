"""The benchmark at smoke size, end to end: it must keep working, and it must never lose a key.

No timing is asserted (the suite runs on shared machines); only that every
run finished, the results are well formed and every key was read back.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from bench.run import main
from bench.state import STEPS


def test_smoke_run_writes_results_and_loses_no_key(tmp_path: Path) -> None:
    out, md, png = tmp_path / "r.json", tmp_path / "b.md", tmp_path / "b.png"
    assert main(["--smoke", "--out", str(out), "--markdown", str(md), "--chart", str(png)]) == 0
    results = json.loads(out.read_text())
    assert {r["tool"] for r in results["formation"]} == {"bootstrap", "redis-cli"}
    for r in results["formation"]:
        assert r["ok"], r
        assert r["seconds"] > 0 and r["masters"] == 3
        # The issue-13 finish line, and every step of the formation seen on the way (at most when done).
        assert r["done"] == "replicas"
        assert set(r["steps"]) == set(STEPS), r["steps"]
        assert all(0 <= t <= r["seconds"] + 0.05 for t in r["steps"].values()), r["steps"]
        assert r["steps"]["first_ok"] <= r["steps"]["all_ok"]
    assert {r["tool"] for r in results["resharding"]} == {"bootstrap", "redis-cli"}
    for r in results["resharding"]:
        assert r["ok"], r
        assert r["lost"] == 0 and r["checked"] == r["keys"]
        assert 0 < r["keys_moved"] < r["keys"]
        assert r["seconds"] > 0 and not math.isnan(r["keys_per_s"])
        assert r["client_ops_during_move"] > 0
        if r["tool"] == "bootstrap":
            assert r["peak_rss_mb"] > 0  # ru_maxrss of the apply process was collected
    text = md.read_text()
    assert "| 3x1 (6) |" in text and "redis-cli" in text and results["command"] in text
    assert "Where the seconds go" in text and "| replicas_seen |" in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_backup_bench_at_smoke_size_restores_every_key_with_both_tools(tmp_path: Path) -> None:
    from bench.backup import main as backup_main

    out, md = tmp_path / "backup.json", tmp_path / "backup.md"
    assert backup_main(["--keys", "5000", "--rounds", "1", "--out", str(out), "--markdown", str(md)]) == 0
    runs = json.loads(out.read_text())["runs"]
    assert {r["tool"] for r in runs} == {"bootstrap", "redis-cli"}
    for r in runs:
        assert r["error"] == "" and r["lost"] == 0, r
    assert [r["pause_ms"] >= 0 for r in runs if r["tool"] == "bootstrap"] == [True]
    assert "the bootstrap is" in md.read_text()
