"""Resharding 3 -> 4 masters (x1 replica, or x0) under a paced client, both tools on identical data.

Each run gets fresh servers: 6 formed by the tool under test into 3 x 1, N keys
of 100 bytes loaded and replicated, then 2 empty servers added, one to become
the 4th master and one its replica. Timed from the first command to the first
poller sweep that sees 4 masters x 1 complete; afterwards every key is read
back from its slot's owner. "Keys moved" is counted from the slot maps before
and after (keys of every slot whose owner changed), the same for both tools.

Without replicas (``replicas=0``, issue 26): 3 servers formed into 3 x 0, the
keys loaded, ONE empty server added as the 4th master, done at 4 x 0. A master
that joins with no slots stays cluster_state:fail for Redis' rejoin delay and
refuses keys until then; a ``JoinWatch`` on it measures that floor in the same
run (``floor_s``: the MEET reaching it -> its first cluster_state:ok).
"""

from __future__ import annotations

import contextlib
import statistics
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis

from bench import client, data
from bench.child import Child, Finished, bootstrap_cmd, run
from bench.servers import Server, cli_binary, farm
from bench.state import JoinWatch, Poller

REST_S = 3.0  # client latency "at rest" is sampled this long before the move
REBALANCE_TRIES = 40  # redis-cli attempts (each failure recorded); bounded in count and time below
REBALANCE_RETRY_S = 0.5
REPLICAS = (1, 0)  # replicas per master of a resharding cell: 1 (the original cells) or 0 (issue 26)


@dataclass
class ReshardRun:
    tool: str
    keys: int
    node_timeout_ms: int
    round: int
    seconds: float = float("nan")
    move_seconds: float = float("nan")  # first key on the new master -> last key there (sampled every 50 ms)
    move_keys: int = 0  # keys the new master holds at the end
    keys_moved: int = 0
    lost: int = -1
    checked: int = 0
    rest_p50_ms: float = float("nan")
    rest_p99_ms: float = float("nan")
    move_p50_ms: float = float("nan")
    move_p99_ms: float = float("nan")
    client_errors: int = 0
    client_ops_during_move: int = 0
    peak_rss_mb: float = float("nan")  # the tool process (bootstrap: python; redis-cli: C)
    tool_cpu_s: float = 0.0
    redis_cpu_s: dict[str, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)  # redis-cli attempts that failed, first line each
    ok: bool = False
    error: str = ""
    replicas: int = 1  # per master, before and after (rows written before the field: 1)
    # Without replicas only (bench.state.JOIN_STEPS, seconds from the tool's start, as the JoinWatch saw them):
    join_steps: dict[str, float] = field(default_factory=dict)
    floor_s: float = float("nan")  # the new master: MEET reached it -> its first cluster_state:ok

    @property
    def gap_s(self) -> float:
        """Wall time beyond the floor: what the tool adds to the rejoin delay (NaN without a floor)."""
        return self.seconds - self.floor_s

    @property
    def keys_per_s(self) -> float:
        return self.keys_moved / self.seconds if self.seconds > 0 else float("nan")

    @property
    def move_keys_per_s(self) -> float:
        return self.move_keys / self.move_seconds if self.move_seconds > 0 else float("nan")

    def to_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "keys_per_s": self.keys_per_s,
            "move_keys_per_s": self.move_keys_per_s,
            "gap_s": self.gap_s,
        }


class KeyWatch:
    """Samples the key count of the new nodes, to time the move itself apart from waits before it.

    The wall time includes what Redis makes every tool wait for (a new master
    stays cluster_state:fail for its rejoin delay and refuses RESTORE-ASKING);
    the window from the first to the last key arriving is the data movement.
    """

    SAMPLE_S = 0.05

    def __init__(self, servers: list[Server]) -> None:
        self._clients = [s.client(timeout=5) for s in servers]
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            counts = []
            for c in self._clients:
                with contextlib.suppress(redis.RedisError):
                    counts.append(int(c.dbsize()))
            self.samples.append((time.monotonic(), max(counts, default=0)))
            self._stop.wait(self.SAMPLE_S)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for c in self._clients:
            c.close()

    def window(self) -> tuple[float, int]:
        """(seconds from the first sample with a key to the first with the final count, that count).

        The final count, not "keys moved": redis-cli's rebalance may also move a
        slot between the old masters, so the new master never holds all of those.
        """
        if not self.samples or not self.samples[-1][1]:
            return float("nan"), 0
        final = self.samples[-1][1]
        first = next(t for t, n in self.samples if n > 0)
        last = next(t for t, n in self.samples if n >= final)
        return last - first, final


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def _node_id(server: Server) -> str:
    with contextlib.closing(server.client()) as c:
        return str(c.execute_command("CLUSTER", "MYID"))


def _wait_replicated(masters_and_replicas: list[Server], timeout: float = 120.0) -> None:
    """Let every replica catch up with the load, so the move does not compete with initial sync."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lagging = False
        for s in masters_and_replicas:
            with contextlib.closing(s.client()) as c:
                info = c.info("replication")
            if info.get("role") != "master":
                continue
            offset = int(info.get("master_repl_offset", 0))
            for k in range(int(info.get("connected_slaves", 0))):
                if int(info[f"slave{k}"]["offset"]) < offset:
                    lagging = True
        if not lagging:
            return
        time.sleep(0.1)
    raise TimeoutError("replicas did not catch up with the load")


def _joined(server: Server, master_id: str | None) -> bool:
    """Whether add-node's effect is there already: the node knows the cluster (and replicates ``master_id``).

    A redis-cli add-node that printed an error after its MEET went through
    fails every retry with "node is not empty"; this tells the two apart.
    """
    with contextlib.closing(server.client()) as c:
        lines = str(c.execute_command("CLUSTER", "NODES")).splitlines()
    me = next((ln.split() for ln in lines if "myself" in ln), [])
    if len(lines) < 2 or not me:
        return False
    return master_id is None or (len(me) > 3 and me[3] == master_id)


NOTHING_TO_DO = "No rebalancing needed"  # redis-cli rebalance, exit 0: every master it saw is within the threshold


def _owns_slots(server: Server) -> bool:
    """Whether the node's own view gives it a slot (its ``myself`` line in CLUSTER NODES lists one)."""
    with contextlib.closing(server.client()) as c:
        lines = str(c.execute_command("CLUSTER", "NODES")).splitlines()
    me = next((ln.split() for ln in lines if "myself" in ln), [])
    return len(me) > 8


def _redis_cli_scale(old: list[Server], new: list[Server], work: Path, deadline: float, result: ReshardRun) -> None:
    """add-node the master, add-node --cluster-slave its replica (if ``new`` has one), then rebalance; retry what
    gossip makes fail."""
    seed = old[0].address
    cli = cli_binary()
    # (command, the node it adds, the master that node is to replicate): the node is checked before a retry.
    steps: list[tuple[list[str], Server | None, str | None]] = [
        ([cli, "--cluster", "add-node", new[0].address, seed], new[0], None)
    ]
    if len(new) > 1:
        master_id = _node_id(new[0])
        replica = [cli, "--cluster", "add-node", new[1].address, seed, "--cluster-slave", "--cluster-master-id"]
        steps.append(([*replica, master_id], new[1], master_id))
    steps.append(([cli, "--cluster", "rebalance", seed, "--cluster-use-empty-masters"], None, None))
    for n, (cmd, node, master) in enumerate(steps):
        for attempt in range(REBALANCE_TRIES):
            if attempt and node is not None and _joined(node, master):
                break  # an attempt that reported an error did join the node: add-node is done
            done = run(cmd, work / f"cli-{n}-{attempt}.log", max(deadline - time.monotonic(), 1.0))
            # add-node of a master does not wait for the join (only --cluster-slave does): a rebalance right
            # after it may not see the new master yet and exits 0 with "No rebalancing needed". Retried while
            # the new master has no slot, as an operator would rerun it (happens without a replica to add).
            unseen = cmd[2] == "rebalance" and NOTHING_TO_DO in done.output and not _owns_slots(new[0])
            if done.returncode == 0 and "[ERR]" not in done.output and not unseen:
                break
            first = next(
                (ln for ln in done.output.splitlines() if "ERR" in ln or "know about" in ln or NOTHING_TO_DO in ln),
                done.tail(1),
            )
            result.failures.append(f"{cmd[2]}: {first.strip()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"redis-cli {cmd[2]} still failing at the deadline: {first}")
            if "know about node" not in done.output and cmd[2] == "rebalance" and not unseen:
                # A failed MIGRATE leaves an open slot; rebalance refuses to run until it is fixed.
                fixed = run([cli, "--cluster", "fix", seed, "--cluster-yes"], work / f"fix-{attempt}.log", 120)
                result.failures.append(f"fix: exit {fixed.returncode}")
            time.sleep(REBALANCE_RETRY_S)
        else:
            raise RuntimeError(f"redis-cli {cmd[2]} failed {REBALANCE_TRIES} times")


def _client_latencies(path: Path, start: float, end: float, rest_from: float) -> tuple[list[float], list[float], int]:
    rest: list[float] = []
    move: list[float] = []
    errors = 0
    for line in path.read_text().split("\n"):
        if not line:
            continue
        t, lat, ok = line.split()[:3]
        ts = float(t)
        if rest_from <= ts < start:
            rest.append(float(lat) / 1000)
        elif start <= ts < end:
            move.append(float(lat) / 1000)
            errors += ok == "0"
    return rest, move, errors


def reshard_once(
    tool: str,
    keys: int,
    node_timeout_ms: int,
    rnd: int,
    work: Path,
    timeout: float,
    slots: list[list[int]],
    replicas: int = 1,
) -> ReshardRun:
    """One scale-out 3 x ``replicas`` -> 4 x ``replicas`` on fresh servers (``replicas``: one of REPLICAS)."""
    if replicas not in REPLICAS:
        raise ValueError(f"replicas per master: one of {REPLICAS}, not {replicas}")
    result = ReshardRun(tool=tool, keys=keys, node_timeout_ms=node_timeout_ms, round=rnd, replicas=replicas)
    base = work / f"reshard-{tool}-{keys}-{node_timeout_ms}-{rnd}{'' if replicas == 1 else f'-x{replicas}'}"
    shard = 1 + replicas  # servers per master
    with farm(base, node_timeout_ms) as f:
        servers = f.spawn(4 * shard)
        old, new = servers[: 3 * shard], servers[3 * shard :]
        addrs = [s.address for s in old]
        if tool == "bootstrap":
            formed = run(
                bootstrap_cmd("apply", "--masters", "3", "--replicas", str(replicas), *addrs), base / "form.log", 300
            )
        else:
            cmd = [cli_binary(), "--cluster", "create", *addrs, "--cluster-replicas", str(replicas), "--cluster-yes"]
            formed = run(cmd, base / "form.log", 300)
        _check(formed, f"forming 3 x {replicas}")
        Poller(old, 3, replicas).wait(120)
        with contextlib.closing(old[0].client(timeout=60)) as seed:
            data.load(seed, slots)
            before = data.slot_owners(seed)
        _wait_replicated(old)
        probe = base / "client.txt"
        with client.running(old[0].address, keys, probe):
            rest_from = time.monotonic()
            time.sleep(REST_S)
            poller = Poller(servers, 4, replicas)
            cpu0 = {s.address: s.cpu_seconds() for s in servers}
            watch = KeyWatch(new)
            # Without replicas the new master waits out Redis' rejoin delay: watch it, to measure that floor.
            join = JoinWatch(new[0]) if replicas == 0 else None
            start = time.monotonic()
            deadline = start + timeout
            try:
                if tool == "bootstrap":
                    child = Child(
                        bootstrap_cmd("apply", "--masters", "4", "--replicas", str(replicas), "--timeout",
                                      str(timeout), *addrs, *(s.address for s in new)),
                        base / "apply.log",
                    )  # fmt: skip
                    done = child.wait(timeout)
                    _check(done, "apply --masters 4")
                    result.peak_rss_mb = done.max_rss_kb / 1024
                    result.tool_cpu_s = done.cpu_s
                else:
                    _redis_cli_scale(old, new, base, deadline, result)
                end = poller.wait(max(deadline - time.monotonic(), 1.0), poll_s=0.1)
            finally:
                if join is not None:
                    join.stop()
            poller.close()
            watch.stop()
            result.redis_cpu_s = {a: round(s.cpu_seconds() - cpu0[a], 2) for a, s in ((x.address, x) for x in servers)}
            time.sleep(0.2)
        result.seconds = end - start
        if join is not None:
            result.join_steps = {k: round(t - start, 3) for k, t in join.steps.items()}
            result.floor_s = round(join.floor(), 3)
        rest, move, errors = _client_latencies(probe, start, end, rest_from)
        result.rest_p50_ms, result.rest_p99_ms = _pct(rest, 50), _pct(rest, 99)
        result.move_p50_ms, result.move_p99_ms = _pct(move, 50), _pct(move, 99)
        result.client_errors, result.client_ops_during_move = errors, len(move)
        with contextlib.closing(old[0].client(timeout=60)) as seed:
            after = data.slot_owners(seed)
            result.keys_moved = sum(len(slots[s]) for s in range(16384) if before.get(s) != after.get(s))
            result.move_seconds, result.move_keys = watch.window()
            result.lost, result.checked = data.count_lost(seed, slots)
        result.ok = result.lost == 0 and result.checked == keys
        if not result.ok:
            result.error = f"{result.lost} keys lost of {result.checked} checked"
    return result


def _check(done: Finished, what: str) -> None:
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {done.returncode}):\n{done.tail()}")
