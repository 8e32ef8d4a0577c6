"""Which nodes make up the deployment and how this process reaches each of them.

Two addresses matter for every node: the one the cluster uses (pod IP:6379,
always what CLUSTER MEET gets) and the one this process dials (the same in
``direct`` mode, a local tunnel in ``port-forward`` mode). A Connector maps
the first to a client on the second, so nothing above it cares which it is.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import redis
from redis.backoff import ConstantBackoff
from redis.retry import Retry

SOCKET_TIMEOUT_S = 10.0
MIGRATE_SOCKET_TIMEOUT_S = 120.0
CONNECT_TIMEOUT_S = 5.0
# A node that answers LOADING (a replica loading the dataset of a full resync, a restarted pod reading its
# AOF) is asked again every LOADING_POLL_S, at most LOADING_RETRIES times; the run's deadline bounds it too.
LOADING_POLL_S = 0.1
LOADING_RETRIES = 3000


class DeadlineExceeded(redis.TimeoutError):
    """A node did not answer before the run's deadline; the message names it."""


@dataclass
class Deadline:
    """The run's end (time.monotonic()), shared by every connection a connector opens.

    Without it one call to a frozen node waits its own socket timeout (120 s for
    MIGRATE) no matter how little of the run is left; with it, every read and
    connect ends by the deadline and the error says which node kept it waiting.
    """

    at: float | None = None

    def remaining(self) -> float | None:
        return None if self.at is None else self.at - time.monotonic()


class DeadlineConnection(redis.Connection):
    """A redis connection whose connects and reads never outlast the shared ``Deadline``."""

    def __init__(self, *args: Any, deadline: Deadline | None = None, label: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        self._deadline = deadline or Deadline()
        self._label = label or f"{self.host}:{self.port}"  # the cluster address, also behind a tunnel

    def _left(self) -> float | None:
        left = self._deadline.remaining()
        if left is not None and left <= 0:
            raise DeadlineExceeded(f"{self._label}: the run's time is up before it could be asked")
        return left

    def connect(self) -> None:
        left = self._left()
        if left is not None:
            self.socket_connect_timeout = min(CONNECT_TIMEOUT_S, left)
        super().connect()  # type: ignore[no-untyped-call]

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        left = self._left()
        if left is None or (self.socket_timeout is not None and self.socket_timeout <= left):
            return super().read_response(*args, **kwargs)
        try:
            return super().read_response(*args, timeout=max(left, 0.01), **kwargs)
        except redis.TimeoutError as exc:
            raise DeadlineExceeded(
                f"{self._label} did not answer before the run's time was up (it may be frozen or overloaded): {exc}"
            ) from exc


@dataclass(frozen=True)
class Endpoint:
    """A node the deployment declares: ``name`` is stable (pod name), ``address`` may change."""

    name: str
    address: str  # host:port inside the cluster network (used for MEET and by MIGRATE)
    domain: str = ""  # failure domain: the Kubernetes node it runs on
    order: int = 0  # StatefulSet ordinal (or list position)
    retire: bool = False  # beyond the declared pod count: to be drained and removed
    announced: str = ""  # host:port the node announces (cluster-announce-*), when not its own address

    @property
    def seen_as(self) -> str:
        """The address its peers list it under."""
        return self.announced or self.address


@dataclass(frozen=True)
class Inventory:
    """The endpoints, in order; ``retire`` ones are drained and removed."""

    endpoints: tuple[Endpoint, ...]

    @property
    def by_address(self) -> dict[str, Endpoint]:
        return {e.address: e for e in self.endpoints}


class Connector(Protocol):
    """Builds clients for cluster addresses; closes whatever it opened."""

    def client(self, address: str, timeout: float = SOCKET_TIMEOUT_S) -> redis.Redis: ...

    def dial(self, address: str) -> tuple[str, int]:
        """Where this process connects to reach ``address`` (itself, or a local tunnel's end)."""
        ...

    def auth_args(self) -> list[str]:
        """MIGRATE's AUTH/AUTH2 arguments: the source node logs in to the target as we do."""
        ...

    def set_deadline(self, at: float | None) -> None:
        """Bound every later read and connect by ``at`` (time.monotonic()); None lifts the bound."""
        ...

    def remaining(self) -> float | None:
        """Seconds left before the deadline, None without one."""
        ...

    def close(self) -> None: ...


def split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"address {address!r} is not HOST:PORT")
    if not 1 <= int(port) <= 65535:
        raise ValueError(f"address {address!r}: port {port} is not in 1-65535")
    return host.strip("[]"), int(port)


class DirectConnector:
    """Dials cluster addresses as they are (pods reachable: in-cluster, on a node, tests)."""

    def __init__(
        self,
        password: str | None = None,
        username: str | None = None,
        fallback: tuple[str | None, str | None] | None = None,
    ) -> None:
        """``fallback`` (username, password) is tried once when the first login is refused: a
        stack deployed before the ``operator`` user existed has none until its pods roll."""
        self._password = password
        self._username = username
        self._fallback = fallback
        self._clients: dict[tuple[str, float], redis.Redis] = {}
        self._lock = threading.Lock()
        self._deadline = Deadline()

    def set_deadline(self, at: float | None) -> None:
        self._deadline.at = at

    def remaining(self) -> float | None:
        return self._deadline.remaining()

    def dial(self, address: str) -> tuple[str, int]:
        return split_address(address)

    def client(self, address: str, timeout: float = SOCKET_TIMEOUT_S) -> redis.Redis:
        with self._lock:
            key = (address, timeout)
            if key not in self._clients:
                self._clients[key] = self._new_client(address, timeout)
                if self._fallback is not None:
                    self._probe_login(key)
            return self._clients[key]

    def _new_client(self, address: str, timeout: float) -> redis.Redis:
        host, port = self.dial(address)
        # Retries for LOADING only: every other wait is a bounded loop of its own above (a retried MIGRATE
        # to a frozen node multiplied its socket timeout by the retry count). A loading node has not run
        # the command, so asking again is safe; without this a replica's full resync after a REPLICATE
        # (its load takes ms to minutes) failed the next look at the cluster with "does not answer".
        pool = redis.ConnectionPool(
            retry=Retry(ConstantBackoff(LOADING_POLL_S), LOADING_RETRIES, supported_errors=(redis.BusyLoadingError,)),
            connection_class=DeadlineConnection,
            deadline=self._deadline,
            label=address,
            host=host,
            port=port,
            username=self._username,
            password=self._password,
            socket_timeout=timeout,
            socket_connect_timeout=CONNECT_TIMEOUT_S,
            decode_responses=True,
        )
        return redis.Redis.from_pool(pool)  # closing the client closes its pool

    def _probe_login(self, key: tuple[str, float]) -> None:
        """Switch every client to the fallback login when the first one is refused."""
        try:
            self._clients[key].ping()
        except redis.AuthenticationError:
            self._username, self._password = self._fallback or (None, None)
            self._fallback = None
            for c in self._clients.values():
                c.close()
            self._clients.clear()
            self._clients[key] = self._new_client(*key)
        except redis.RedisError:
            pass  # unreachable right now: the caller's own command reports it

    def auth_args(self) -> list[str]:
        if not self._password:
            return []
        if self._username:
            return ["AUTH2", self._username, self._password]
        return ["AUTH", self._password]

    def close(self) -> None:
        with self._lock:
            for c in self._clients.values():
                with contextlib.suppress(Exception):
                    c.close()
            self._clients.clear()


def static_inventory(addresses: Sequence[str], retire: Sequence[str] = ()) -> Inventory:
    """Endpoints from plain HOST:PORT lists; the host stands in for the failure domain."""
    endpoints = []
    listed = [*addresses, *retire]
    if twice := sorted({a for a in listed if listed.count(a) > 1}):
        raise ValueError(f"node address(es) listed more than once: {', '.join(twice)}")
    for i, address in enumerate(listed):
        host, _ = split_address(address)
        endpoints.append(Endpoint(name=address, address=address, domain=host, order=i, retire=i >= len(addresses)))
    return Inventory(tuple(endpoints))


@contextlib.contextmanager
def connected(connector: Connector) -> Iterator[Connector]:
    try:
        yield connector
    finally:
        connector.close()
