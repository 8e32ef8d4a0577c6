"""Latency probe: a redis-py RedisCluster client doing paced GET/SET on the benchmark's keys.

Runs as its own process (``python -m bench.client``) so that the benchmark's
poller and the tool's output handling never hold its GIL: the latencies are
what a client sees from Redis, not from our own harness. It is paced (not a
closed loop) so it does not eat a core that Redis and the tools need on a
small machine. It stops when its stdin closes or after ``--max-seconds``.

Output: one line per operation, ``<monotonic start s> <latency us> <0|1 ok> [why not ok]``.
time.monotonic() is CLOCK_MONOTONIC, shared by all processes on Linux, so the
parent can cut the record into "at rest" and "during the move" windows.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from redis.cluster import ClusterNode, RedisCluster

from bench.data import key, value


@contextlib.contextmanager
def running(seed: str, keys: int, out: Path) -> Iterator[None]:
    """This probe as a child process of the benchmark: connected (its slot map loaded) when the block
    starts; stopped (its stdin closed) and its record written to ``out`` when the block ends."""
    from bench.child import PYTHON, REPO

    proc = subprocess.Popen(
        [PYTHON, "-m", "bench.client", "--seed", seed, "--keys", str(keys), "--out", str(out)],
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        proc.stdout.readline()  # "ready"
        yield
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--seed", required=True, help="HOST:PORT of any node")
    p.add_argument("--keys", type=int, required=True)
    p.add_argument("--rate", type=float, default=500.0, help="operations per second")
    p.add_argument("--max-seconds", type=float, default=1800.0)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    host, _, port = args.seed.rpartition(":")
    client = RedisCluster(startup_nodes=[ClusterNode(host, int(port))], socket_timeout=10, decode_responses=True)
    stop = threading.Event()

    def watch_stdin() -> None:
        sys.stdin.read()  # returns at EOF: the parent closed our stdin
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    records: list[str] = []
    rng = random.Random(7)
    interval = 1.0 / args.rate
    next_at = time.monotonic()
    end = next_at + args.max_seconds
    print("ready", flush=True)
    n = 0
    while not stop.is_set() and time.monotonic() < end:
        i = rng.randrange(args.keys)
        start = time.monotonic()
        ok, why = 1, ""
        try:
            if n % 2:
                client.set(key(i), value(i))  # the same value: the key-loss check stays exact
            else:
                got = client.get(key(i))
                ok, why = int(got == value(i)), "" if got == value(i) else f"GET returned {str(got)[:20]!r}"
        except Exception as exc:  # any failure is a data point, not a crash: counted as not ok
            ok, why = 0, type(exc).__name__
        latency_us = (time.monotonic() - start) * 1e6
        records.append(f"{start:.6f} {latency_us:.1f} {ok} {why}".rstrip())
        n += 1
        next_at += interval
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            next_at = time.monotonic()  # fell behind (a slow op): do not burst to catch up
    args.out.write_text("\n".join(records) + "\n")
    client.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
