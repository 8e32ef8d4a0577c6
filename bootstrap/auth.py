"""Live password rotation, in two phases around the Kubernetes rollout, without a restart.

Redis 6+ lets the default user hold several passwords at once. Phase one (the
drain resource, before the Secret changes) adds the new password on every node
and points replication at it; clients may switch whenever they like while both
work. Phase two (the bootstrap resource, after the StatefulSet) removes the old
one. A pod that restarts in between reads the new password from its Secret and
is accepted by every node. Passwords never reach a log line or an error message.
"""

from __future__ import annotations

import redis

from bootstrap.endpoints import Connector, Endpoint, Inventory
from bootstrap.errors import BootstrapError
from bootstrap.waiting import Progress, parallel


def add_password(inventory: Inventory, connector: Connector, new: str | None, progress: Progress) -> None:
    """Make ``new`` valid everywhere (keeping the current one), or drop auth when ``new`` is None."""

    def run(e: Endpoint) -> None:
        client = connector.client(e.address)
        try:
            if new:
                client.execute_command("ACL", "SETUSER", "default", "on", f">{new}")
            else:
                client.execute_command("ACL", "SETUSER", "default", "on", "nopass")
            client.execute_command("CONFIG", "SET", "masterauth", new or "")
        except redis.RedisError as exc:
            raise BootstrapError(f"adding the new password on {e.name} failed: {type(exc).__name__}") from None

    progress(f"password rotation 1/2: new password accepted on {len(inventory.endpoints)} node(s)")
    parallel(run, inventory.endpoints)


def drop_password(inventory: Inventory, connector: Connector, old: str, progress: Progress) -> None:
    """Remove ``old`` everywhere; ``connector`` authenticates with the new one, valid since phase one."""

    def run(e: Endpoint) -> None:
        try:
            connector.client(e.address).execute_command("ACL", "SETUSER", "default", f"<{old}")
        except redis.RedisError as exc:
            raise BootstrapError(f"removing the old password on {e.name} failed: {type(exc).__name__}") from None

    parallel(run, inventory.endpoints)
    progress(f"password rotation 2/2: old password removed on {len(inventory.endpoints)} node(s)")
