"""A stack created before the dynamic resources had their own types upgrades without replacing anything.

Until this version the bootstrap, the drain and the generated password were all
``pulumi-python:dynamic:Resource``; now each has its own type, and an alias finds
the old one. Without it the engine would replace them, and a replaced
GeneratedPassword is a new cluster password. The previous version is this
program with the three class declarations put back as they were (the only
difference between the two), run by the real engine against real servers.
"""

from __future__ import annotations

import re
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from pulumi import automation as auto

from bootstrap.resource import UNTYPED
from tests.components.harness import BOOTSTRAP_TYPE, DRAIN_TYPE, PASSWORD_TYPE
from tests.conftest import RedisFarm
from tests.engine.conftest import REPO_ROOT
from tests.engine.test_program import HOSTS, changes, resources, set_endpoints

if TYPE_CHECKING:
    from .conftest import EngineStackFactory

pytestmark = pytest.mark.engine

OWN_TYPE = re.compile(r"class (\w+)\(Resource, module=MODULE, name=\"\w+\"\):")
ALIAS = re.compile(r", aliases=\[pulumi\.Alias\(type_=UNTYPED\)\]")


def previous_version(into: Path) -> Path:
    """This project as the previous version had it: the three dynamic resources without their own type or alias."""
    into.mkdir()
    for entry in ("Pulumi.yaml", "__main__.py", "components", "bootstrap"):
        source = REPO_ROOT / entry
        if source.is_dir():
            shutil.copytree(source, into / entry, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, into / entry)
    (into / "venv").symlink_to(REPO_ROOT / "venv")
    declared = 0
    for module in ("resource.py", "password.py"):
        path = into / "bootstrap" / module
        text, typed = OWN_TYPE.subn(r"class \1(Resource):", path.read_text())
        text, aliased = ALIAS.subn("", text)
        assert aliased == 1, f"{module}: expected the one alias, found {aliased}"
        declared += typed
        path.write_text(text)
    assert declared == 3, (
        f"expected the bootstrap, the drain and the password to have their own types, found {declared}"
    )
    return into


def dynamic(stack: auto.Stack) -> dict[str, tuple[str, str]]:
    """Each dynamic resource's name: its type and id (a replaced one gets a new id: the password's is random)."""
    return {r["urn"].rsplit("::", 1)[1]: (r["type"], r["id"]) for r in resources(stack) if "dynamic" in r["type"]}


def test_an_up_of_a_stack_created_by_the_previous_version_replaces_nothing(
    engine_stack: EngineStackFactory, redis_farm: RedisFarm, tmp_path: Path
) -> None:
    nodes = redis_farm.spawn(6, hosts=HOSTS)
    name = f"t{uuid.uuid4().hex[:10]}"  # the engine factory's own pattern: .gitignore covers its stack file
    config: dict[str, str | int] = {"renderYamlTo": str(tmp_path / "m"), "masters": 3, "replicasPerMaster": 1}
    old_dir = previous_version(tmp_path / "previous")
    old = engine_stack(old_dir, config=config, stack_name=name)
    set_endpoints(old, nodes)
    lines: list[str] = []
    created = old.up(on_output=lines.append)
    assert created.summary.result == "succeeded", "\n".join(lines[-40:])
    before = dynamic(old)
    assert {typ for typ, _id in before.values()} == {UNTYPED} and len(before) >= 3, before

    # The same stack (same backend, same config and encryption salt) under this version.
    shutil.copy2(old_dir / f"Pulumi.{name}.yaml", REPO_ROOT / f"Pulumi.{name}.yaml")
    new = engine_stack(stack_name=name)
    preview = new.preview(on_output=lines.append, diff=True)
    assert changes(preview) == {}, f"the upgrade may change nothing: {changes(preview)}\n" + "\n".join(lines[-40:])
    upgraded = new.up(on_output=lines.append)
    assert changes(upgraded) == {}, "\n".join(lines[-40:])
    after = dynamic(new)
    assert {n: i for n, (_t, i) in after.items()} == {n: i for n, (_t, i) in before.items()}, "a resource was replaced"
    own = {"-bootstrap": BOOTSTRAP_TYPE, "-drain": DRAIN_TYPE, "password": PASSWORD_TYPE}
    assert {n: t for n, (t, _i) in after.items()} == {n: own[next(s for s in own if n.endswith(s))] for n in after}
    assert upgraded.outputs["clusterState"].value == "ok"
