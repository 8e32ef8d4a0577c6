"""Forming and converging the Redis cluster: planner, operations, provider (docs/architecture.md)."""

from __future__ import annotations

import ctypes
import ctypes.util

_M_ARENA_MAX = -8  # glibc malloc.h


def _limit_malloc_arenas(arenas: int = 2) -> None:
    """Cap glibc's malloc arenas before any thread starts.

    glibc gives each thread of a busy thread pool an arena of its own (up to
    8 per core) and keeps what they freed: the bootstrap's peak RSS during a
    1M-key move was 160 MB with the default and 67 MB with two arenas
    (docs/benchmarks.md), with the same throughput. Not glibc (musl, macOS):
    nothing to tune.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(_M_ARENA_MAX, arenas)
    except (OSError, AttributeError):
        pass


_limit_malloc_arenas()
