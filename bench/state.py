"""The benchmark's own judge of "done": polled from outside, never taken from the tool's word.

A cluster is ready when every node reports cluster_state:ok, all 16384 slots
assigned, the expected number of masters serving slots and of known nodes,
every replica reports master_link_status:up and, with ``roles_everywhere``,
every node's CLUSTER NODES lists every replica as the replica of a master
(what a client asking any node for the topology gets). Each tool is timed
until this poller says so, so both are held to the same finish line.

With ``timeline`` every sweep asks every node everything, and the first
sweep at which each step of a formation is visible from outside is kept
(``STEPS``): the same observer for both tools, so their steps compare.

``JoinWatch`` follows one node added to a running cluster from its own
CLUSTER INFO (``JOIN_STEPS``): when a MEET reached it and when it first
reports cluster_state:ok. Between the two is the rejoin delay a slotless
master waits out (the resharding floor, issue 26).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import redis

from bench.servers import Server
from bootstrap.model import parse_cluster_nodes

POLL_S = 0.02

# What each formation step looks like from outside, in the order a formation goes through them.
STEPS = {
    "assigned": "every slot is owned by some node in its own view (ADDSLOTS done)",
    "met": "every node knows every node, no handshake pending (MEET done)",
    "replicating": "every replica-to-be names its master in its own view (REPLICATE done)",
    "first_ok": "the first node reports cluster_state:ok",
    "all_ok": "every node reports cluster_state:ok",
    "links_up": "every replica's master_link_status is up",
    "replicas_seen": "every node lists every replica as the replica of a master",
}

# What a node added to a running cluster goes through, as its own CLUSTER INFO shows it (JoinWatch).
JOIN_STEPS = {
    "joined": "the new node knows another node (a MEET reached it: cluster_known_nodes > 1)",
    "sees_slots": "the new node counts a master serving slots (cluster_size >= 1: no longer a minority of its "
    "own view, the rejoin delay's clock runs from here)",
    "ok": "the new node reports cluster_state:ok (it accepts keys: RESTORE-ASKING no longer gets CLUSTERDOWN)",
}


def _fields(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


@dataclass
class Poller:
    """Persistent connections to every node; ``ready`` answers one sweep, cheapest check first."""

    servers: Sequence[Server]
    masters: int
    replicas_per_master: int
    roles_everywhere: bool = False
    timeline: bool = False
    steps: dict[str, float] = field(default_factory=dict)  # step -> time.monotonic() first seen

    def __post_init__(self) -> None:
        self._clients = [s.client(timeout=5) for s in self.servers]
        self._start = 0  # the node that was not ready last time is asked first (stops the sweep early)
        self.last_problem = ""

    @property
    def _replicas(self) -> int:
        return self.masters * self.replicas_per_master

    def _sees_every_replica(self, nodes_text: str) -> bool:
        lines = parse_cluster_nodes(nodes_text)
        masters = {ln.node_id for ln in lines if ln.is_master}
        return sum(1 for ln in lines if ln.master_id in masters and not ln.is_master) == self._replicas

    def ready(self) -> bool:
        if self.timeline:
            return self._sweep_all()
        n = len(self._clients)
        replicas_up = 0
        for k in range(n):
            i = (self._start + k) % n
            try:
                pipe = self._clients[i].pipeline(transaction=False)
                pipe.execute_command("CLUSTER", "INFO")
                pipe.execute_command("INFO", "replication")
                cinfo, rinfo = pipe.execute()
            except redis.RedisError as exc:
                return self._not_yet(i, f"{self.servers[i].address}: {exc}")
            c = _fields(str(cinfo))
            r = rinfo if isinstance(rinfo, dict) else _fields(str(rinfo))
            if c.get("cluster_state") != "ok":
                return self._not_yet(i, f"{self.servers[i].address} cluster_state:{c.get('cluster_state')}")
            if c.get("cluster_slots_assigned") != "16384":
                return self._not_yet(i, f"{self.servers[i].address} slots {c.get('cluster_slots_assigned')}")
            if c.get("cluster_size") != str(self.masters):
                return self._not_yet(i, f"{self.servers[i].address} cluster_size:{c.get('cluster_size')}")
            if c.get("cluster_known_nodes") != str(n):
                return self._not_yet(i, f"{self.servers[i].address} knows {c.get('cluster_known_nodes')} nodes")
            if str(r.get("role")) == "slave":
                if str(r.get("master_link_status")) != "up":
                    return self._not_yet(i, f"{self.servers[i].address} replica link {r.get('master_link_status')}")
                replicas_up += 1
            if self.roles_everywhere:
                try:
                    text = str(self._clients[i].execute_command("CLUSTER", "NODES"))
                except redis.RedisError as exc:
                    return self._not_yet(i, f"{self.servers[i].address}: {exc}")
                if not self._sees_every_replica(text):
                    return self._not_yet(i, f"{self.servers[i].address} does not see every replica yet")
        if replicas_up != self._replicas:
            self.last_problem = f"{replicas_up} replicas up, {self._replicas} expected"
            return False
        return True

    def _sweep_all(self) -> bool:
        """Ask every node everything; record each step the first time it holds; ready = every step + shape."""
        now = time.monotonic()
        infos, roles, views = [], [], []
        for i, client in enumerate(self._clients):
            try:
                pipe = client.pipeline(transaction=False)
                pipe.execute_command("CLUSTER", "INFO")
                pipe.execute_command("INFO", "replication")
                pipe.execute_command("CLUSTER", "NODES")
                cinfo, rinfo, nodes = pipe.execute()
            except redis.RedisError as exc:
                self.last_problem = f"{self.servers[i].address}: {exc}"
                return False
            infos.append(_fields(str(cinfo)))
            roles.append(rinfo if isinstance(rinfo, dict) else _fields(str(rinfo)))
            views.append(parse_cluster_nodes(str(nodes)))
        n = len(self._clients)
        selves = [next((ln for ln in v if ln.is_myself), None) for v in views]
        state = [c.get("cluster_state") == "ok" for c in infos]
        replicas = [r for r in roles if str(r.get("role")) == "slave"]
        held = {
            "assigned": sum(len(s.slots) for s in selves if s) == 16384,
            "met": all(len(v) == n and not any(ln.in_handshake for ln in v) for v in views),
            "replicating": sum(1 for s in selves if s and s.master_id) == self._replicas,
            "first_ok": any(state),
            "all_ok": all(state),
            "links_up": len(replicas) == self._replicas
            and all(str(r.get("master_link_status")) == "up" for r in replicas),
            "replicas_seen": all(
                sum(1 for ln in v if ln.master_id and not ln.is_master) == self._replicas for v in views
            ),
        }
        for step, ok in held.items():
            if ok and step not in self.steps:
                self.steps[step] = now
        shape = all(
            c.get("cluster_slots_assigned") == "16384" and c.get("cluster_size") == str(self.masters) for c in infos
        )
        wanted = [s for s in held if s != "replicas_seen" or self.roles_everywhere]
        missing = [s for s in wanted if not held[s]] + ([] if shape else ["shape"])
        self.last_problem = "not yet: " + ", ".join(missing)
        return not missing

    def _not_yet(self, i: int, problem: str) -> bool:
        self._start = i
        self.last_problem = problem
        return False

    def wait(self, timeout: float, poll_s: float = POLL_S) -> float:
        """Bounded poll until ready; returns time.monotonic() of the sweep that saw it."""
        deadline = time.monotonic() + timeout
        while True:
            if self.ready():
                return time.monotonic()
            if time.monotonic() > deadline:
                raise TimeoutError(f"cluster not ready within {timeout}s: {self.last_problem}")
            time.sleep(poll_s)

    def close(self) -> None:
        for c in self._clients:
            with contextlib.suppress(Exception):
                c.close()


class JoinWatch:
    """Asks one node CLUSTER INFO every ``poll_s`` in a thread; ``steps``: JOIN_STEPS -> time.monotonic() first seen.

    Each sample is stamped when it was asked (as the Poller's sweeps are), so a
    step is seen at most ``poll_s`` plus one round trip after it happened. The
    thread ends once every step was seen, or at ``stop``.
    """

    def __init__(self, server: Server, poll_s: float = POLL_S) -> None:
        self.server = server
        self.poll_s = poll_s
        self.steps: dict[str, float] = {}
        self.last_problem = ""
        self._client = server.client(timeout=5)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set() and len(self.steps) < len(JOIN_STEPS):
            asked = time.monotonic()
            try:
                info = self._client.execute_command("CLUSTER", "INFO")
            except redis.RedisError as exc:
                self.last_problem = f"{self.server.address}: {exc}"
            else:
                c = info if isinstance(info, dict) else _fields(str(info))
                held = {
                    "joined": int(c.get("cluster_known_nodes", 0)) > 1,
                    "sees_slots": int(c.get("cluster_size", 0)) >= 1,
                    "ok": c.get("cluster_state") == "ok",
                }
                for step, ok in held.items():
                    if ok and step not in self.steps:
                        self.steps[step] = asked
            self._stop.wait(self.poll_s)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        with contextlib.suppress(Exception):
            self._client.close()

    def floor(self) -> float:
        """Seconds from the MEET reaching the node to its first cluster_state:ok (NaN if either was not seen)."""
        if "joined" not in self.steps or "ok" not in self.steps:
            return float("nan")
        return self.steps["ok"] - self.steps["joined"]
