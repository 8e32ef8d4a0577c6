"""Formation cells on the server's own defaults (issue 26): the servers really run them, and the
report keeps those cells apart from the tuned ones. Seconds: three servers, no formation.
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from typing import Any

import pytest

from bench import report, servers
from bench.run import _cells, parser

# What config(defaults=True) still sets (a loopback node needs it, see servers.config), with what a
# server given only port, bind, dir and logfile differs in besides.
KEPT = {
    "bind",
    "bind-source-addr",
    "port",
    "dir",
    "daemonize",
    "protected-mode",
    "logfile",
    "pidfile",
    "cluster-enabled",
    "cluster-config-file",
    "cluster-node-timeout",
}


def _config(server: servers.Server) -> dict[str, str]:
    with contextlib.closing(server.client()) as c:
        return {str(k): str(v) for k, v in c.config_get("*").items()}


def test_a_defaults_farm_runs_every_setting_but_the_farms_own_at_the_servers_default(tmp_path: Path) -> None:
    bare_dir = tmp_path / "bare"
    port = servers.free_cluster_port()
    bare_conf = {"bind": "127.0.0.1", "port": str(port), "dir": str(bare_dir), "logfile": str(bare_dir / "r.log")}
    bare_proc = servers.start_server(servers.server_binary(), "127.0.0.1", port, bare_dir, bare_conf)
    try:
        servers.wait_answering([("127.0.0.1", port, bare_proc, bare_dir / "r.log")])
        bare = _config(servers.Server("127.0.0.1", port, bare_dir, bare_proc))
        with (
            servers.farm(tmp_path / "defaults", 3000, defaults=True) as plain,
            servers.farm(tmp_path / "tuned", 3000) as tuned,
        ):
            [on_defaults], [on_tuned] = plain.spawn(1), tuned.spawn(1)
            got, tuned_got = _config(on_defaults), _config(on_tuned)
    finally:
        servers.stop(bare_proc)
    assert got["repl-diskless-sync-delay"] == bare["repl-diskless-sync-delay"] == "5"
    assert tuned_got["repl-diskless-sync-delay"] == "0"
    assert got["appendonly"] == "no" and tuned_got["appendonly"] == "yes"
    assert got["cluster-enabled"] == "yes" and got["cluster-node-timeout"] == "3000"
    differ = {k: (got[k], bare.get(k)) for k in got if k not in KEPT and got[k] != bare.get(k)}
    assert differ == {}, differ


def test_form_cells_take_defaults_as_a_third_field_and_nothing_else() -> None:
    assert _cells("3000:0:defaults,3000:0,1000:3") == ((3000, 0.0, True), (3000, 0.0, False), (1000, 3.0, False))
    with pytest.raises(argparse.ArgumentTypeError):
        _cells("3000:0:tuned")
    with pytest.raises(SystemExit):
        parser().parse_args(["--form-cells", "3000:0:1"])


def _row(tool: str, seconds: float, **more: Any) -> dict[str, Any]:
    return {
        "tool": tool,
        "masters": 3,
        "node_timeout_ms": 3000,
        "round": 0,
        "settle_s": 0.0,
        "writable_floor_s": 2.0,
        "seconds": seconds,
        "tool_exit_s": seconds,
        "ok": True,
        "error": "",
        "done": "replicas",
        **more,
    }


def test_the_report_keeps_default_cells_apart_and_reads_older_rows_as_tuned() -> None:
    rows = [
        _row("bootstrap", 1.0),  # written before the field existed: tuned
        _row("redis-cli", 3.0),
        _row("bootstrap", 2.0, server_defaults=True),
        _row("redis-cli", 8.0, server_defaults=True),
    ]
    table = report.formation_table(rows)
    tuned = [line for line in table if "| tuned |" in line]
    plain = [line for line in table if "| server defaults |" in line]
    assert len(tuned) == len(plain) == 1 and len(table) == 4, table
    assert "| 3.0x |" in tuned[0] and "| 4.0x |" in plain[0]
    results = {"formation": rows, "resharding": []}
    assert [line.endswith("server defaults: 4.0x (target 3x, met)") for line in report.ratios(results)] == [
        False,
        True,
    ]
