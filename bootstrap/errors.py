"""Every error this package raises on purpose, in one place (as redis-py keeps its own in one module).

Pure: no I/O and no third-party import, so every layer may raise them. Each message names the node,
file or setting and what to do; the provider and the command line print it without a traceback.
``BootstrapError`` is not called ``ClusterError``: redis-py has a ``ClusterError`` of its own, and a
module catching one must never catch the other by a name.
"""

from __future__ import annotations


class BootstrapError(Exception):
    """An operation failed; the message says on which node and what to do."""


class RefusedError(BootstrapError):
    """The nodes hold something this deployment must not touch (data, another cluster)."""


class EngineMoveRefused(RefusedError):
    """An image whose engine cannot take over the data the pods' engine wrote (engines.move_refusal)."""


class DataLossRefused(RefusedError):
    """Slots whose every copy is gone, which no one has said may be reassigned empty."""


class ConvergenceTimeout(BootstrapError):
    """The cluster did not reach the expected state in time; the message says what is missing."""


class LeaseHeld(BootstrapError):
    """Another run is changing this cluster right now."""


class BackupError(BootstrapError):
    """The backup could not be taken; nothing was left behind."""


class RestoreRefused(RefusedError):
    """A check failed before anything was written to the target."""


class PlanError(Exception):
    """The declared shape cannot be reached from what the cluster is now."""


class PropsError(ValueError):
    """Properties this code cannot read: named, so a broken state says what is wrong with it."""


class ManifestError(ValueError):
    """The manifest is not one this tool wrote, or it contradicts itself."""
