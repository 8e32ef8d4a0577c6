"""The benchmark's own judge of "done": polled from outside, never taken from the tool's word.

A cluster is ready when every node reports cluster_state:ok, all 16384 slots
assigned, the expected number of masters serving slots and of known nodes,
and every replica reports master_link_status:up. Each tool is timed until
this poller says so, so both are held to the same finish line.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass

import redis

from bench.servers import Server

POLL_S = 0.02


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

    def __post_init__(self) -> None:
        self._clients = [s.client(timeout=5) for s in self.servers]
        self._start = 0  # the node that was not ready last time is asked first (stops the sweep early)
        self.last_problem = ""

    def ready(self) -> bool:
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
        if replicas_up != self.masters * self.replicas_per_master:
            self.last_problem = f"{replicas_up} replicas up, {self.masters * self.replicas_per_master} expected"
            return False
        return True

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
