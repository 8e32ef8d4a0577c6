"""Proves the engine toolchain works: the CLI's stamped version, and an inline Automation API program
with one dynamic resource (defined in this importable module) going up and being destroyed."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pulumi
import pulumi.dynamic
import pytest

if TYPE_CHECKING:  # only for annotations: the dynamic provider process imports this module too
    from .conftest import EngineStackFactory, Toolchain

pytestmark = pytest.mark.engine

EXPECTED_CLI_VERSION = "v3.274.1"

# The sys.path entry this module is imported from (as tests.engine.test_toolchain): the engine's
# dynamic-provider process needs it to unpickle MarkerFileProvider, which dill pickles by reference.
IMPORT_ROOT = Path(__file__).resolve().parents[__name__.count(".")]


class MarkerFileProvider(pulumi.dynamic.ResourceProvider):
    """Writes `content` to the file `path`; deleting the resource removes the file."""

    def create(self, props: dict[str, Any]) -> pulumi.dynamic.CreateResult:
        Path(props["path"]).write_text(props["content"])
        return pulumi.dynamic.CreateResult(id_=uuid.uuid4().hex, outs=dict(props))

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> pulumi.dynamic.UpdateResult:
        Path(news["path"]).write_text(news["content"])
        return pulumi.dynamic.UpdateResult(outs=dict(news))

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        Path(props["path"]).unlink(missing_ok=True)


class MarkerFile(pulumi.dynamic.Resource):
    path: pulumi.Output[str]
    content: pulumi.Output[str]

    def __init__(self, name: str, path: str, content: str) -> None:
        super().__init__(MarkerFileProvider(), name, {"path": path, "content": content})


def test_cli_reports_stamped_version(toolchain: Toolchain) -> None:
    out = subprocess.run([str(toolchain.pulumi), "version"], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == EXPECTED_CLI_VERSION


def test_inline_program_with_dynamic_resource_up_and_destroy(engine_stack: EngineStackFactory, tmp_path: Path) -> None:
    marker = tmp_path / "marker.txt"

    def program() -> None:
        res = MarkerFile("marker", path=str(marker), content="hello from the dynamic provider")
        pulumi.export("path", res.path)

    stack = engine_stack(
        tmp_path,
        program=program,
        project_name="toolchain-check",
        python_path=[IMPORT_ROOT],
    )
    lines: list[str] = []
    up = stack.up(on_output=lines.append)
    assert up.summary.result == "succeeded", "\n".join(lines)
    assert up.outputs["path"].value == str(marker)
    assert marker.read_text() == "hello from the dynamic provider"

    destroy = stack.destroy(on_output=lines.append)
    assert destroy.summary.result == "succeeded", "\n".join(lines)
    assert not marker.exists()
