"""Reading a stack's config from the Pulumi engine; the one place that touches ``pulumi.Config``."""

from __future__ import annotations

from typing import Any

import pulumi

from components.settings.declarations import KEYS, SECRET_KEYS, ClusterSettings
from components.settings.validate import validate


def load_settings(cfg: pulumi.Config) -> ClusterSettings:
    """Read the stack's config and validate it; raises before anything is registered.

    Keys set in the stack that this program does not know are reported too: a
    typo such as ``replicaPerMaster`` would otherwise silently deploy the default.
    """
    prefix = cfg.name + ":"
    everything: dict[str, Any] = pulumi.runtime.config.CONFIG.get()
    raw: dict[str, Any] = {k[len(prefix) :]: v for k, v in everything.items() if k.startswith(prefix)}
    for key in KEYS:
        value = cfg.get(key.name)
        if value is not None:
            raw[key.name] = value
    # The secret's value is only validated here; it leaves as a SecretValue and becomes a
    # secret Output in components/cluster.py.
    plaintext = [key for key in SECRET_KEYS if key in raw and not pulumi.runtime.config.is_config_secret(prefix + key)]
    return validate(raw, plaintext_keys=plaintext)
