"""``python -m bench.atomic``: atomic slot migration against the bootstrap's MIGRATE path.

Same server (Valkey 9 or Redis 8.4+), same cluster, same slots, same keys: 8
fresh servers formed into 4 masters x 1 replica by ``converge``, N keys
loaded, then the 4th master's slots moved in equal thirds to the other three
(the shape of a scale-in). Both methods are bootstrap.migration.move_slots:
``migrate`` told not to use the server's atomic migration (SETSLOT
IMPORTING/MIGRATING, pipelined MIGRATE, SETSLOT NODE everywhere, pairs in
parallel), ``atomic`` as converge runs it (one CLUSTER MIGRATESLOTS per pair in
parallel on Valkey, one CLUSTER MIGRATION IMPORT per pair one after another on
Redis, which runs one task per node).
Timed from the first command to every node's view showing the new owners;
every key is read back afterwards. Writes bench/results/atomic.json; the
numbers go into bench/NOTES.md by hand (this is not part of ``python -m bench``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import data, servers
from bench.child import REPO
from bench.report import loadavg
from bootstrap import migration
from bootstrap.converge import converge
from bootstrap.endpoints import DirectConnector, static_inventory
from bootstrap.model import Member, Shape, SlotMove, parse_cluster_nodes
from bootstrap.operations import take_snapshot

METHODS = ("migrate", "atomic")


def _quiet(_message: str) -> None:
    """Progress lines would land in the timing; the results say it all."""


def _masters(server: servers.Server) -> list[Member]:
    with contextlib.closing(server.client()) as c:
        lines = parse_cluster_nodes(str(c.execute_command("CLUSTER", "NODES")))
    owners = sorted((ln for ln in lines if ln.is_master and ln.slots), key=lambda ln: min(ln.slots))
    return [Member(name=ln.address, node_id=ln.node_id, address=ln.address, slots=ln.slots) for ln in owners]


def _everyone_sees(farm: list[servers.Server], slots: set[int], owners: set[str], timeout: float = 60) -> float:
    """Bounded wait until no node's view has any of ``slots`` outside ``owners``; returns that moment."""
    deadline = time.monotonic() + timeout
    while True:
        ok = True
        for s in farm:
            with contextlib.closing(s.client()) as c:
                for ln in parse_cluster_nodes(str(c.execute_command("CLUSTER", "NODES"))):
                    if ln.slots & slots and ln.node_id not in owners:
                        ok = False
        if ok:
            return time.monotonic()
        if time.monotonic() > deadline:
            raise TimeoutError("not every node sees the new owners")
        time.sleep(0.02)


def once(method: str, keys: int, slots_of: list[list[int]], work: Path, rnd: int, binary: str) -> dict[str, Any]:
    with servers.farm(work / f"atomic-{method}-{rnd}", 3000, binary) as f:
        farm = f.spawn(8)
        connector = DirectConnector()
        try:
            inventory = static_inventory([s.address for s in farm])
            converge(inventory, connector, Shape(4, 1), 120, progress=_quiet)
            with contextlib.closing(farm[0].client(timeout=60)) as seed:
                data.load(seed, slots_of)
            a, b, c, d = _masters(farm[0])
            leaving = sorted(d.slots)
            thirds = [leaving[i::3] for i in range(3)]
            pairs = list(zip((a, b, c), thirds, strict=True))
            start = time.monotonic()
            snap = take_snapshot(inventory, connector)
            moves = [SlotMove(d.node_id, dst.node_id, tuple(part)) for dst, part in pairs]
            moved = migration.move_slots(snap, connector, moves, _quiet, allow_atomic=method == "atomic")
            tool_done = time.monotonic()
            seen = _everyone_sees(farm, set(leaving), {a.node_id, b.node_id, c.node_id})
            with contextlib.closing(farm[0].client(timeout=60)) as seed:
                lost, checked = data.count_lost(seed, slots_of)
        finally:
            connector.close()
    return {
        "method": method,
        "round": rnd,
        "keys": keys,
        "slots": len(leaving),
        "keys_moved": moved,
        "seconds": round(seen - start, 3),
        "tool_seconds": round(tool_done - start, 3),
        "keys_per_s": round(moved / (seen - start)),
        "lost": lost,
        "checked": checked,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.atomic", description=__doc__)
    p.add_argument("--keys", type=int, default=50_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--server", default="valkey-9", help="a path or bench.servers.SERVERS name (valkey-9, redis-8.6)")
    p.add_argument("--methods", type=lambda t: tuple(t.split(",")), default=METHODS, help="migrate,atomic")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "atomic.json")
    args = p.parse_args(argv)
    slots_of = data.keys_by_slot(args.keys)
    results: dict[str, Any] = {
        "command": "venv/bin/python -m bench.atomic " + " ".join(sys.argv[1:] if argv is None else argv),
        "server": servers.server_version(servers.resolve_server(args.server)),
        "load average at start": loadavg(),
        "runs": [],
    }
    with tempfile.TemporaryDirectory(prefix="bench-atomic-") as tmp:
        for rnd in range(args.rounds):
            for method in args.methods if rnd % 2 == 0 else args.methods[::-1]:
                r = once(method, args.keys, slots_of, Path(tmp), rnd, servers.resolve_server(args.server))
                print(json.dumps(r), file=sys.stderr, flush=True)
                results["runs"].append(r)
    results["load average at end"] = loadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
