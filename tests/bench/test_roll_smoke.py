"""The rolling-restart bench at smoke size: every method finishes, no key is lost, the report is written.

Only the bootstrap's roll is held to "no failed operation": it is the product's promise (every
master hands over before it stops). The baselines' numbers are what the bench is for, not asserted.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.roll import METHODS, main


def test_every_method_rolls_every_node_and_the_bootstraps_roll_fails_no_operation(tmp_path: Path) -> None:
    out, md = tmp_path / "roll.json", tmp_path / "roll.md"
    argv = ["--rounds", "1", "--keys", "2000", "--node-timeouts", "3000", "--down", "0.5"]
    assert main([*argv, "--out", str(out), "--markdown", str(md)]) == 0
    runs = json.loads(out.read_text())["runs"]
    assert [r["method"] for r in runs] == list(METHODS)
    for r in runs:
        assert r["error"] == "" and r["lost"] == 0, r
        assert r["ops"] > 100 and r["seconds"] > 0, r
    bootstrap = next(r for r in runs if r["method"] == "bootstrap")
    assert bootstrap["failed"] == {} and bootstrap["clusterdown"] == 0 and bootstrap["unavailable_s"] == 0, bootstrap
    text = md.read_text()
    assert all(f"| {m} |" in text for m in METHODS) and "python -m bench.roll" in text
