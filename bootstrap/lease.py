"""One changing run per cluster at a time: a lease key, renewed while the run lasts.

Two runs that change one cluster at once (two `pulumi up`s of two stacks
pointed at it, or an operator's `apply` during an up) opened slots in both
directions between the same masters, duplicated keys and froze a master for
the MIGRATE timeout. So a run that changes the cluster first takes a lease:
``SET <key> <holder> NX PX <ttl>`` on the master that owns the key's slot,
renewed by a thread every ``RENEW_S`` and deleted at the end of the run (a
`pulumi up`'s roll and converge are one run: ``for_run``). A second run
that finds it refuses, once it has seen the lease renewed (its holder is
alive); a lease nobody renews expires within ``TTL_S``, so a run killed with
``kill -9`` blocks the next one for at most that long.

A cluster without a live, serving owner of the key's slot (not formed yet,
that owner gone, or the cluster down) cannot hold the lease: the run goes on
without one and says so (two such runs are not kept apart).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field

import redis
from redis.crc import key_slot

from bootstrap.endpoints import Connector
from bootstrap.errors import BootstrapError, LeaseHeld
from bootstrap.model import Snapshot
from bootstrap.waiting import Progress

KEY = "redis-cluster:bootstrap-lease"
SLOT = key_slot(KEY.encode())
TTL_S = 10.0
RENEW_S = 2.0
LOOK_S = 0.25
# Renew only while we hold it (compare and extend); delete only our own.
_RENEW = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0"
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


@dataclass
class _Route:
    """Where the key lives, following MOVED/ASK while our own moves carry its slot elsewhere, and
    asking another node when the one it knew stops answering (a restart in a roll)."""

    connector: Connector
    addresses: dict[str, str]  # address a node is seen as (what MOVED names) -> address we dial
    address: str
    lock: threading.Lock = field(default_factory=threading.Lock)  # the renewer and the run's own looks

    def call(self, *args: object) -> object:
        with self.lock:
            return self._call(*args)

    def _call(self, *args: object) -> object:
        asking = False
        untried = [a for a in self.addresses.values() if a != self.address]
        for _ in range(5 + len(untried)):
            client = self.connector.client(self.address)
            try:
                if asking:
                    pipe = client.pipeline(transaction=False)
                    pipe.execute_command("ASKING")
                    pipe.execute_command(*args)
                    return pipe.execute()[1]
                return client.execute_command(*args)
            except redis.exceptions.AskError as exc:
                # By type: redis-py drops the "ASK"/"MOVED" word from the text (MovedError is an AskError).
                seen = f"{exc.host}:{exc.port}"
                moved = isinstance(exc, redis.exceptions.MovedError)
                self.address, asking = self.addresses.get(seen, seen), not moved
                if moved:
                    self.addresses[seen] = self.address
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, ValueError):
                # ValueError: a tunnel to an address no pod has any more (a restarted pod's old IP).
                if not untried:
                    raise
                self.address, asking = untried.pop(0), False  # it redirects us to the owner
        raise BootstrapError(f"lease key {KEY}: redirected more than 5 times, last to {self.address}")


def _holder() -> str:
    return f"{socket.gethostname()} pid {os.getpid()} since {time.strftime('%H:%M:%S')} ({uuid.uuid4().hex[:8]})"


class _Run:
    """The lease of one run, from the first look that can take it to the end of the run."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._me = _holder()
        self._route: _Route | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def take(self, snap: Snapshot, connector: Connector) -> None:
        """Take the lease, or, held already, follow the cluster to ``connector`` and make sure it is still ours."""
        owner = next((m for m in snap.members if m.is_master and SLOT in m.slots), None)
        if owner is None:
            if self._route is None:
                self._progress("no lease: the cluster has no live owner of its slot yet (forming, or its master gone)")
            return
        addresses = {m.seen_as: m.address for m in snap.members}
        if self._route is not None:
            route = self._route
            with route.lock:  # the renewer reads all three
                previous, route.connector = route.connector, connector
                route.address, route.addresses = owner.address, addresses  # the newest look, not old pod IPs
            if previous is not connector:
                previous.close()  # its step has ended; this closes what the renewer reopened on it since
            self._keep()
            return
        route = _Route(connector, addresses, owner.address)
        try:
            _acquire(route, self._me)
        except (redis.exceptions.ClusterDownError, redis.exceptions.TryAgainError) as exc:
            # Down (every node restarted on a new address, say): nobody can hold a lease until it is mended.
            self._progress(f"no lease: the cluster does not serve its slot right now ({exc})")
            return
        self._route = route
        self._renewer = threading.Thread(target=_renew, args=(route, self._me, self._stop, self._progress), daemon=True)
        self._renewer.start()

    def _keep(self) -> None:
        """Still ours, or taken again if it lapsed and nobody else took it; another run holding it stops this one."""
        assert self._route is not None
        try:
            if self._route.call("EVAL", _RENEW, 1, KEY, self._me, int(TTL_S * 1000)) == 1:
                return
        except (redis.exceptions.ClusterDownError, redis.exceptions.TryAgainError) as exc:
            self._progress(f"could not check the lease now ({exc}); the renewals go on")
            return
        if self._route.call("SET", KEY, self._me, "NX", "PX", int(TTL_S * 1000)):
            self._progress("the lease had lapsed (nobody renewed it for a while); taken again")
            return
        raise LeaseHeld(
            f"this run's lease lapsed and another run ({self._route.call('GET', KEY)}) took it: stopping here; "
            f"run again once that one has finished"
        )

    def release(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=RENEW_S * 2)
        if self._route is not None:
            with contextlib.suppress(redis.RedisError, OSError, BootstrapError, ValueError):
                self._route.call("EVAL", _RELEASE, 1, KEY, self._me)
            self._route.connector.close()


_RUN: ContextVar[_Run | None] = ContextVar("bootstrap_lease_run", default=None)


@contextlib.contextmanager
def for_run(progress: Progress) -> Iterator[None]:
    """Keep the lease that any ``hold`` in the body takes until the body ends.

    A `pulumi up` is one run: the roll's restarts (during which no converge
    holds anything), its heals and the converge after it. Between two holds a
    second run could otherwise take the lease and, say, evict the heir of the
    handover under way. Nested: the outermost keeps it. Per thread of control
    (a context variable), so two runs in one process stay two runs.
    """
    if _RUN.get() is not None:
        yield
        return
    run = _Run(progress)
    token = _RUN.set(run)
    try:
        yield
    finally:
        _RUN.reset(token)
        run.release()


def hold_on(snap: Snapshot, connector: Connector, progress: Progress) -> None:
    """Inside ``for_run``: take the lease, or check it is still ours and renew it through ``connector``."""
    run = _RUN.get()
    if run is None:
        raise RuntimeError("lease.hold_on outside lease.for_run: nothing would release the lease")
    run.take(snap, connector)


@contextlib.contextmanager
def hold(snap: Snapshot, connector: Connector, progress: Progress) -> Iterator[None]:
    """Hold the lease for the body (for the whole run inside ``for_run``); raise LeaseHeld when another
    live run holds it."""
    with for_run(progress):
        hold_on(snap, connector, progress)
        yield


def _acquire(route: _Route, me: str) -> None:
    """Take the lease, waiting out one that nobody renews; refuse one that is renewed."""
    deadline = time.monotonic() + TTL_S + RENEW_S
    while True:
        if route.call("SET", KEY, me, "NX", "PX", int(TTL_S * 1000)):
            return
        other, ttl, looked = route.call("GET", KEY), route.call("PTTL", KEY), time.monotonic()
        while time.monotonic() - looked < RENEW_S * 1.5:
            time.sleep(LOOK_S)
            other_now, ttl_now = route.call("GET", KEY), route.call("PTTL", KEY)
            if other_now is None:
                break  # released or expired: try to take it
            waited_ms = (time.monotonic() - looked) * 1000
            # Unrenewed, the time to live falls by the time waited; a renewal puts it back near TTL_S.
            renewed = isinstance(ttl, int) and isinstance(ttl_now, int) and ttl_now > ttl - waited_ms + 500
            if renewed or other_now != other:
                raise LeaseHeld(
                    f"another bootstrap run ({other_now}) is changing this cluster right now (lease key {KEY} "
                    f"on {route.address}): wait for it to finish and run again; two runs at once would move "
                    f"slots against each other"
                )
        if time.monotonic() > deadline:
            raise LeaseHeld(f"the lease key {KEY} on {route.address} ({other}) neither expired nor was renewed")


def _renew(route: _Route, me: str, stop: threading.Event, progress: Progress) -> None:
    """Extend the lease every RENEW_S until told to stop; say so once when it was lost."""
    warned = False
    while not stop.wait(RENEW_S):
        try:
            still = route.call("EVAL", _RENEW, 1, KEY, me, int(TTL_S * 1000))
        except Exception as exc:  # the thread must outlive any one failure: it is the lease's only keeper
            still = f"{type(exc).__name__}: {exc}"
        if still != 1 and not warned:
            progress(f"could not renew the lease ({still}); another run may start before this one ends")
            warned = True
