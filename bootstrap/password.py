"""A password generated once, kept in the state as a secret.

Why not pulumi-random: its provider is a separate Go plugin that no reachable
registry ships as a binary; a dynamic provider needs nothing but the SDK. Like
every dynamic provider here it lives at a stable module path (renaming it
breaks existing stacks) and holds no state.
"""

from __future__ import annotations

import secrets
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, Resource, ResourceProvider

from bootstrap.resource import MODULE, UNTYPED

LENGTH = 32  # characters of URL-safe base64: ~192 bits


class PasswordProvider(ResourceProvider):
    def create(self, props: dict[str, Any]) -> CreateResult:
        value = secrets.token_urlsafe(LENGTH)[:LENGTH]
        return CreateResult(id_=secrets.token_hex(8), outs={"length": LENGTH, "value": value})

    def diff(self, _id: str, _olds: dict[str, Any], _news: dict[str, Any]) -> DiffResult:
        """Never changes by itself: rotating is replacing the resource (or setting the password in config)."""
        return DiffResult(changes=False, replaces=[], delete_before_replace=False)


class GeneratedPassword(Resource, module=MODULE, name="GeneratedPassword"):
    """``value`` is a secret output; it is generated on create and then stable for the life of the stack.

    Replacing it would change the cluster's password: the alias keeps the one a stack created
    under the untyped name (bootstrap/resource.py) has.
    """

    value: pulumi.Output[str]

    def __init__(self, name: str, opts: pulumi.ResourceOptions | None = None) -> None:
        own = pulumi.ResourceOptions(additional_secret_outputs=["value"], aliases=[pulumi.Alias(type_=UNTYPED)])
        super().__init__(PasswordProvider(), name, {"value": None}, pulumi.ResourceOptions.merge(opts, own))
