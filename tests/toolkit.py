"""What every test tier shares: a cluster client, one bounded wait, one writer that writes on while the cluster changes.

Loopback, engine, Kubernetes and multi-node tests all ask the same two questions of a change
(was an acknowledged write lost? what did clients see meanwhile?), so they ask them with the
same code: :class:`Writer` records every acknowledged write and counts failures by exception
type; :meth:`Writer.lost` reads them all back at the end.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Protocol

from redis.cluster import ClusterNode, RedisCluster

#: redis-py's cluster client dereferences None when an ASK redirect names a node its slot cache does
#: not hold yet (a new master during its first import): redis/redis-py#4015, fix pending upstream.
#: The write did not happen and was not acknowledged, so nothing is lost; counted under this name,
#: apart from real errors.
REDIS_PY_4015 = "AttributeError (redis-py #4015)"


REPO = Path(__file__).resolve().parents[1]


def run_cli(
    *args: str, env: Mapping[str, str] | None = None, cwd: Path = REPO, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``python -m bootstrap ARGS`` as an operator runs it, output kept for the assertions (``env``: all of it)."""
    return subprocess.run(
        [sys.executable, "-m", "bootstrap", *args],
        cwd=cwd,
        env=dict(env) if env is not None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class Node(Protocol):
    """A server a test started (tests/conftest.py's RedisNode): its address, and its password if it has one."""

    host: str
    port: int
    password: str | None


def cluster_client(
    seeds: Iterable[Node] | Iterable[tuple[str, int]],
    password: str | None = None,
    *,
    username: str | None = None,
    timeout: float = 10.0,
) -> RedisCluster:
    """A cluster-aware client (follows MOVED/ASK) seeded at ``seeds``, answers decoded.

    ``seeds`` are addresses, or servers a test started; then ``password`` defaults to theirs.
    """
    addresses: list[tuple[str, int]] = []
    for seed in seeds:
        if isinstance(seed, tuple):
            addresses.append(seed)
        else:
            addresses.append((seed.host, seed.port))
            password = seed.password if password is None else password
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in addresses],
        username=username,
        password=password,
        decode_responses=True,
        socket_timeout=timeout,
        socket_connect_timeout=min(timeout, 5.0),
    )


def wait_for(what: str, probe: Callable[[], str | None], timeout: float, interval: float = 0.1) -> float:
    """Poll ``probe`` until it returns None (done); otherwise it returns why not yet. Returns the seconds waited.

    A probe that raises cannot look yet (a pod restarting, a node loading): that is "not yet" too,
    and the exception is what the timeout reports if it never gets further.
    """
    start = time.monotonic()
    deadline = start + timeout
    while True:
        try:
            why = probe()
        except Exception as exc:
            why = f"{type(exc).__name__}: {exc}"
        if why is None:
            return time.monotonic() - start
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last seen: {why}")
        time.sleep(interval)


def wait_until(what: str, predicate: Callable[[], object], timeout: float, interval: float = 0.1) -> float:
    """:func:`wait_for` with a yes/no question."""
    return wait_for(what, lambda: None if predicate() else "not yet", timeout, interval)


class Writer:
    """Writes ``<prefix><i>`` = ``i`` in a thread until stopped, while the cluster changes.

    A write is acknowledged when SET returned OK; ``acked`` holds each one's number and
    ``acked_at`` its time. A failed write is tried again under the same key (same value: if the
    failed one did happen, nothing differs), so the acknowledged keys are ``0 .. written-1``.
    Failures are counted by exception type in ``errors`` (one message of each in ``samples``): a
    test says which types it tolerates. ``check(client, i)``, run after each
    acknowledged write, may read something back and return what was wrong (kept in ``wrong``).
    ``reconnect`` drops the client after a failure (a client outside Kubernetes whose seed may be
    the node that went away); :meth:`login` switches credentials (the app picking up a new Secret).
    Bounded: it stops by itself after ``limit_s``.
    """

    def __init__(
        self,
        connect: Callable[[], RedisCluster],
        prefix: str = "live:",
        *,
        check: Callable[[RedisCluster, int], str | None] | None = None,
        reconnect: bool = False,
        pace_s: float = 0.0,
        backoff_s: float = 0.05,
        limit_s: float = 600.0,
    ) -> None:
        self.connect = connect
        self.prefix = prefix
        self.acked: list[int] = []
        self.acked_at: list[float] = []
        self.errors: Counter[str] = Counter()
        self.samples: dict[str, str] = {}
        self.wrong: list[str] = []
        self._check = check
        self._reconnect = reconnect
        self._pace_s = pace_s
        self._backoff_s = backoff_s
        self._limit_s = limit_s
        self._client: RedisCluster | None = None
        self._relogin = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"writer-{prefix}", daemon=True)

    @property
    def written(self) -> int:
        return len(self.acked)

    def key(self, i: int) -> str:
        return f"{self.prefix}{i}"

    def login(self, connect: Callable[[], RedisCluster]) -> None:
        """From the next write on, use a client from ``connect`` (new credentials)."""
        self.connect = connect
        self._relogin.set()

    def _run(self) -> None:
        deadline = time.monotonic() + self._limit_s
        i = 0
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                if self._relogin.is_set() and self._client is not None:
                    self._relogin.clear()
                    self._client.close()
                    self._client = None
                if self._client is None:
                    self._client = self.connect()
                if self._client.set(self.key(i), str(i)) is True:
                    self.acked.append(i)
                    self.acked_at.append(time.monotonic())
                    i += 1
                    if self._check is not None and (wrong := self._check(self._client, i - 1)) is not None:
                        self.wrong.append(wrong)
            except Exception as exc:  # every failure counts (SlotNotCoveredError is no RedisError)
                kind = type(exc).__name__
                if isinstance(exc, AttributeError) and "redis_connection" in str(exc):
                    kind = REDIS_PY_4015
                self.errors[kind] += 1
                self.samples.setdefault(kind, str(exc)[:300])
                if self._reconnect and self._client is not None:
                    self._client.close()
                    self._client = None
                time.sleep(self._backoff_s)
            if self._pace_s:
                time.sleep(self._pace_s)

    def start(self) -> None:
        self._thread.start()

    def __enter__(self) -> Writer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        if self._client is not None:
            self._client.close()
            self._client = None

    def errors_except(self, *tolerated: str) -> dict[str, int]:
        """The failures not of a ``tolerated`` type, by type (for an assertion that names the rest)."""
        return {kind: n for kind, n in self.errors.items() if kind not in tolerated}

    def lost(self, chunk: int = 1000) -> list[int]:
        """Acknowledged writes that do not read back (asked after the writer stopped, with a fresh client)."""
        client = self.connect()
        lost: list[int] = []
        try:
            for start in range(0, len(self.acked), chunk):
                batch = self.acked[start : start + chunk]
                got = client.mget_nonatomic([self.key(i) for i in batch])
                lost += [i for i, value in zip(batch, got, strict=True) if value != str(i)]
        finally:
            client.close()
        return lost

    def writes_since(self, t: float) -> int:
        return sum(1 for s in self.acked_at if s >= t)

    def longest_gap(self, since: float) -> float:
        """The longest time without an acknowledged write after ``since`` (redis-py retries inside a call,
        so an outage shows as a stalled call more than as errors)."""
        times = [since, *(s for s in self.acked_at if s >= since)]
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)
