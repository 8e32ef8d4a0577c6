"""Turning pure manifest dicts into pulumi_kubernetes constructor arguments.

Specs are built as plain Kubernetes manifests (camelCase, exactly what the API
server and kubernetes-validate understand) so they are testable without Pulumi;
this is the only place that knows how such a dict maps onto a resource's
keyword arguments.
"""

from __future__ import annotations

import re
from typing import Any

Manifest = dict[str, Any]


def _snake(key: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()


def resource_kwargs(manifest: Manifest) -> dict[str, Any]:
    """Top-level fields as snake_case keyword arguments; nested dicts stay camelCase.

    The SDK sends apiVersion/kind itself, so they are dropped here.
    """
    return {_snake(k): v for k, v in manifest.items() if k not in ("apiVersion", "kind")}
