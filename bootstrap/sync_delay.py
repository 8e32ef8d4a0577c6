"""``repl-diskless-sync-delay`` lifted while a run attaches replicas, and set back when it ends.

A master about to start a full sync waits ``repl-diskless-sync-delay`` seconds (the server default
is 5) for more replicas to share its fork. The bootstrap attaches every replica at once already, so
on servers as users configure them that wait only delays the links the run then waits for: a 3x1
formation took 6.2 s, 1.3 s of it work (issue 26; bench/ has the side-by-side cell). Waiting for the
links stays (a replica that has not synced is no replica); waiting out the delay goes.

What changes on the servers, and for how long: once a run has something to do, every member whose
delay is above 0 gets 0, and the value it had is set back when the run ends, succeeded or failed
(the progress log names both). A run killed in between leaves 0, which is what the program's own
pods run with. A login that may not run CONFIG leaves the setting alone (the run then waits the
delay out, as before).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import redis

from bootstrap.endpoints import Connector
from bootstrap.model import Member
from bootstrap.waiting import Progress, parallel

SETTING = "repl-diskless-sync-delay"
# Setting values back gets these seconds of its own, also when the run ended because its time was up.
RESTORE_S = 10.0


@contextlib.contextmanager
def lifted(members: list[Member], connector: Connector, progress: Progress) -> Iterator[None]:
    """Delay 0 on these members for the body, each one's own value back afterwards."""
    changed = [found for found in parallel(lambda m: _lift(m, connector), members) if found is not None]
    if changed:
        was = ", ".join(sorted({str(value) for _m, value in changed}))
        progress(f"{SETTING} 0 on {len(changed)} node(s) for this run (was {was} s): set back at its end")
    try:
        yield
    finally:
        if changed:
            _put_back(changed, connector, progress)


def _lift(m: Member, connector: Connector) -> tuple[Member, int] | None:
    client = connector.client(m.address)
    try:
        value = int(client.config_get(SETTING).get(SETTING) or 0)
        if value <= 0:
            return None
        client.config_set(SETTING, 0)
    # NOPERM (a login without CONFIG), a server without the setting, or a failed member the run is about
    # to replace or report: that node keeps its delay.
    except (redis.RedisError, OSError):
        return None
    return m, value


def _put_back(changed: list[tuple[Member, int]], connector: Connector, progress: Progress) -> None:
    left = connector.remaining()
    connector.set_deadline(time.monotonic() + RESTORE_S)
    failed: list[str] = []

    def put_back(found: tuple[Member, int]) -> None:
        m, value = found
        try:
            connector.client(m.address).config_set(SETTING, value)
        except (redis.RedisError, OSError) as exc:  # a node gone meanwhile: say so, the run's outcome stands
            failed.append(f"{m.name} ({type(exc).__name__}: {exc})")

    try:
        parallel(put_back, changed)
    finally:
        connector.set_deadline(None if left is None else time.monotonic() + left)
    if failed:
        progress(f"WARNING: {SETTING} could not be set back on {', '.join(failed)}; it is 0 there")
    else:
        progress(f"{SETTING} set back on {len(changed)} node(s)")
