"""Waiting and fanning out: the two ways this package spends time, each bounded.

Every wait of the bootstrap is one ``poll``: when it gives up it says what it waited for and the
probe's last word on what is missing. ``parallel`` runs I/O-bound calls over nodes at once.
Pure of Redis and Kubernetes, so every I/O layer (operations, kube) uses it without importing
another.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from bootstrap.errors import ConvergenceTimeout

Progress = Callable[[str], None]
T = TypeVar("T")
R = TypeVar("R")

POLL_S = 0.05
MAX_THREADS = 16


def parallel(fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """Run ``fn`` over items concurrently (I/O bound) and re-raise the first failure."""
    items = list(items)
    if len(items) <= 1:
        return [fn(i) for i in items]
    with ThreadPoolExecutor(max_workers=min(MAX_THREADS, len(items))) as pool:
        return list(pool.map(fn, items))


def poll(what: str, probe: Callable[[], str | None], timeout: float, interval: float = POLL_S) -> None:
    """Call ``probe`` until it reports nothing missing (None).

    Past ``timeout`` raise ConvergenceTimeout: "<what> within <timeout>s: <the
    probe's last word on what is missing>".
    """
    deadline = time.monotonic() + timeout
    while (missing := probe()) is not None:
        if time.monotonic() > deadline:
            raise ConvergenceTimeout(f"{what} within {timeout:.0f}s: {missing}")
        time.sleep(interval)
