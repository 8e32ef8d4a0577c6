"""The benchmark's key space: key i holds a 100-byte value derived from i, so any key can be checked."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import redis
from redis.crc import key_slot

VALUE_BYTES = 100
MSETS_PER_PIPELINE = 200


def key(i: int) -> str:
    return f"bench:{i}"


def value(i: int) -> str:
    return f"{i:0{VALUE_BYTES}d}"


def keys_by_slot(count: int) -> list[list[int]]:
    """Key indexes per slot (16384 lists), computed once per key count."""
    slots: list[list[int]] = [[] for _ in range(16384)]
    for i in range(count):
        slots[key_slot(key(i).encode())].append(i)
    return slots


def slot_owners(client: redis.Redis) -> dict[int, tuple[str, int]]:
    """slot -> (host, port) of its master, from CLUSTER SLOTS."""
    owners: dict[int, tuple[str, int]] = {}
    for entry in client.execute_command("CLUSTER", "SLOTS"):
        lo, hi, master = int(entry[0]), int(entry[1]), entry[2]
        for s in range(lo, hi + 1):
            owners[s] = (str(master[0]), int(master[1]))
    return owners


def _by_owner(owners: dict[int, tuple[str, int]], slots: list[list[int]]) -> dict[tuple[str, int], list[int]]:
    out: dict[tuple[str, int], list[int]] = defaultdict(list)
    for s, idx in enumerate(slots):
        if idx:
            out[owners.get(s, ("", 0))].append(s)  # ("", 0): nobody serves the slot
    return out


def load(seed: redis.Redis, slots: list[list[int]]) -> None:
    """One MSET per slot (keys of one slot may share a command), pipelined per owning master."""
    owners = slot_owners(seed)
    for (host, port), owned in _by_owner(owners, slots).items():
        with redis.Redis(host=host, port=port, socket_timeout=60) as c:
            for i in range(0, len(owned), MSETS_PER_PIPELINE):
                pipe = c.pipeline(transaction=False)
                for s in owned[i : i + MSETS_PER_PIPELINE]:
                    pipe.mset({key(k): value(k) for k in slots[s]})
                pipe.execute()


def count_lost(seed: redis.Redis, slots: list[list[int]]) -> tuple[int, int]:
    """(keys missing or wrong, keys checked): every key is read back from its slot's current owner."""
    owners = slot_owners(seed)
    lost = checked = 0
    for (host, port), owned in _by_owner(owners, slots).items():
        if not host:
            unserved = sum(len(slots[s]) for s in owned)
            lost, checked = lost + unserved, checked + unserved
            continue
        with redis.Redis(host=host, port=port, socket_timeout=60, decode_responses=True) as c:
            for i in range(0, len(owned), MSETS_PER_PIPELINE):
                batch: Sequence[int] = owned[i : i + MSETS_PER_PIPELINE]
                pipe = c.pipeline(transaction=False)
                for s in batch:
                    pipe.mget([key(k) for k in slots[s]])
                for s, got in zip(batch, pipe.execute(), strict=True):
                    for k, v in zip(slots[s], got, strict=True):
                        checked += 1
                        lost += v != value(k)
    return lost, checked
