"""Fixtures for the engine test tier: a real Pulumi engine built by tools/build-toolchain.sh.

Every test collected under tests/engine/ is marked ``pytest.mark.engine`` and is skipped, with the reason,
when the toolchain is missing. The toolchain is found through ``REDIS_CLUSTER_TOOLCHAIN_BIN`` (a directory
holding ``pulumi``; set by ``source tools/toolchain-env.sh``) or else in the toolchain cache
(``tools/build-toolchain.sh --print-bin``, which only looks and never builds).

``engine_stack`` is a factory::

    def test_render(engine_stack: EngineStackFactory, tmp_path: Path) -> None:
        stack = engine_stack(config={"renderYamlTo": str(tmp_path / "manifests")})
        stack.up(on_output=print)

It creates an Automation API stack for a project directory (the repo root by default, used as
``work_dir``) with a fresh ``file://`` backend under the test's tmp_path, the passphrase secrets
provider, the offline engine settings and the given config, and destroys and removes the stack on
teardown, whether the test passed or failed.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from pulumi import automation as auto

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "tools" / "build-toolchain.sh"
ENGINE_TESTS_DIR = Path(__file__).resolve().parent

#: The config namespace of the program (the project name in Pulumi.yaml).
CONFIG_NAMESPACE = "redis-cluster"
#: Only for throwaway test stacks; an already set PULUMI_CONFIG_PASSPHRASE wins.
DEFAULT_TEST_PASSPHRASE = "redis-cluster-tests"

ConfigInput = str | int | float | bool | Sequence[Any] | Mapping[str, Any] | auto.ConfigValue


@dataclass(frozen=True)
class Toolchain:
    """Where the built engine lives."""

    bin_dir: Path
    #: The toolchain root: ``<root>/bin/pulumi`` (what ``PulumiCommand(root=...)`` expects).
    root: Path
    #: PULUMI_HOME of the toolchain: holds the installed kubernetes plugin.
    pulumi_home: Path

    @property
    def pulumi(self) -> Path:
        return self.bin_dir / "pulumi"

    def command(self) -> auto.PulumiCommand:
        """A PulumiCommand for this toolchain (checks the CLI's stamped version)."""
        return auto.PulumiCommand(root=str(self.root))

    def env(self) -> dict[str, str]:
        """The offline engine settings (no backend: each stack gets its own)."""
        path = os.environ.get("PATH", "")
        return {
            "PATH": f"{self.bin_dir}{os.pathsep}{path}" if path else str(self.bin_dir),
            "PULUMI_HOME": str(self.pulumi_home),
            "PULUMI_SKIP_UPDATE_CHECK": "true",
            "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
            "PULUMI_CONFIG_PASSPHRASE": os.environ.get("PULUMI_CONFIG_PASSPHRASE", DEFAULT_TEST_PASSPHRASE),
            # Dynamic providers of a project without a virtualenv option run `$PULUMI_PYTHON_CMD -m
            # pulumi.dynamic`: use the interpreter running the tests (it has pulumi and dill).
            "PULUMI_PYTHON_CMD": os.environ.get("PULUMI_PYTHON_CMD", sys.executable),
        }


def find_toolchain() -> tuple[Toolchain | None, str]:
    """Return the built toolchain, or None and the reason it is missing."""
    from_env = os.environ.get("REDIS_CLUSTER_TOOLCHAIN_BIN")
    if from_env:
        bin_dir = Path(from_env)
        if not os.access(bin_dir / "pulumi", os.X_OK):
            return None, f"REDIS_CLUSTER_TOOLCHAIN_BIN={from_env} holds no executable 'pulumi'"
        home = os.environ.get("PULUMI_HOME") or str(bin_dir.parent / "home")
        return Toolchain(bin_dir=bin_dir, root=bin_dir.parent, pulumi_home=Path(home)), ""
    if not BUILD_SCRIPT.is_file():
        return None, f"{BUILD_SCRIPT} is missing"
    try:
        proc = subprocess.run(
            ["bash", str(BUILD_SCRIPT), "--print-bin"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"could not ask {BUILD_SCRIPT.name} for the toolchain: {exc}"
    if proc.returncode != 0:
        where = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "the toolchain cache"
        return None, (
            f"the Pulumi engine toolchain is not built (looked for {where}); "
            "run tools/build-toolchain.sh or set REDIS_CLUSTER_TOOLCHAIN_BIN"
        )
    bin_dir = Path(proc.stdout.strip().splitlines()[-1])
    return Toolchain(bin_dir=bin_dir, root=bin_dir.parent, pulumi_home=bin_dir.parent / "home"), ""


TOOLCHAIN, TOOLCHAIN_MISSING_REASON = find_toolchain()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test under tests/engine as `engine`; skip them all when the toolchain is missing."""
    for item in items:
        if ENGINE_TESTS_DIR not in Path(item.path).resolve().parents:
            continue
        item.add_marker(pytest.mark.engine)
        if TOOLCHAIN is None:
            item.add_marker(pytest.mark.skip(reason=TOOLCHAIN_MISSING_REASON))


@pytest.fixture(scope="session")
def toolchain() -> Toolchain:
    """The built engine toolchain (skips the test when it is missing)."""
    if TOOLCHAIN is None:
        pytest.skip(TOOLCHAIN_MISSING_REASON)
    return TOOLCHAIN


def importable_root(module: ModuleType) -> Path:
    """The sys.path entry from which `module` is imported under its own name.

    Dynamic providers are pickled by reference to their module; the provider process (started by the
    engine with the project dir as working directory) must be able to import that module too, so tests
    put this directory on the engine's PYTHONPATH (``engine_stack(..., python_path=[...])``).
    """
    file = getattr(module, "__file__", None)
    if file is None:
        raise ValueError(f"module {module.__name__} has no file")
    path = Path(file).resolve()
    depth = module.__name__.count(".") + (1 if path.name == "__init__.py" else 0)
    return path.parents[depth]


def _config_value(value: ConfigInput) -> auto.ConfigValue:
    if isinstance(value, auto.ConfigValue):
        return value
    if isinstance(value, str):
        return auto.ConfigValue(value=value)
    # Structured values (lists such as bootstrapEndpoints, objects, numbers, booleans) as JSON, which
    # `pulumi.Config.require_object`/`get_int`/`get_bool` read back.
    return auto.ConfigValue(value=json.dumps(value))


def _qualify(key: str) -> str:
    return key if ":" in key else f"{CONFIG_NAMESPACE}:{key}"


@dataclass
class EngineStackFactory:
    """Creates Automation API stacks; `cleanup()` destroys and removes all of them."""

    toolchain: Toolchain
    tmp_path: Path
    stacks: list[tuple[auto.Stack, Path | None]] = field(default_factory=list)

    def __call__(
        self,
        project_dir: Path | str | None = None,
        *,
        config: Mapping[str, ConfigInput] | None = None,
        secrets: Mapping[str, str] | None = None,
        stack_name: str | None = None,
        program: auto.PulumiFn | None = None,
        project_name: str | None = None,
        env: Mapping[str, str] | None = None,
        python_path: Sequence[Path | str] = (),
    ) -> auto.Stack:
        """Create a stack.

        project_dir: the Pulumi project (its Pulumi.yaml), also the workspace's work_dir; defaults to
            the repo root. With `program` (an inline program) it is only the work_dir.
        config: keys without a namespace go to ``redis-cluster:``; non-string values are stored as JSON.
        secrets: like config, stored as secrets (passphrase provider).
        stack_name: defaults to a unique name (the stack's Pulumi.<stack>.yaml lands in project_dir
            and is removed with the stack).
        env: extra environment for the engine; python_path: directories put on its PYTHONPATH.
        """
        work_dir = Path(project_dir) if project_dir is not None else REPO_ROOT
        name = stack_name or f"t{uuid.uuid4().hex[:10]}"
        backend = self.tmp_path / f"backend-{name}"
        backend.mkdir(parents=True, exist_ok=True)

        env_vars = self.toolchain.env()
        env_vars["PULUMI_BACKEND_URL"] = backend.as_uri()
        if python_path:
            entries = [str(Path(p)) for p in python_path]
            if os.environ.get("PYTHONPATH"):
                entries.append(os.environ["PYTHONPATH"])
            env_vars["PYTHONPATH"] = os.pathsep.join(entries)
        if env:
            env_vars.update(env)

        opts = auto.LocalWorkspaceOptions(
            work_dir=str(work_dir),
            pulumi_home=str(self.toolchain.pulumi_home),
            env_vars=env_vars,
            secrets_provider="passphrase",
            pulumi_command=self.toolchain.command(),
        )
        if program is not None:
            stack = auto.create_or_select_stack(
                stack_name=name, project_name=project_name or "engine-test", program=program, opts=opts
            )
            stack_file: Path | None = None
        else:
            stack = auto.create_or_select_stack(stack_name=name, work_dir=str(work_dir), opts=opts)
            stack_file = work_dir / f"Pulumi.{name}.yaml"
        self.stacks.append((stack, stack_file))

        values = {_qualify(k): _config_value(v) for k, v in (config or {}).items()}
        values.update({_qualify(k): auto.ConfigValue(value=v, secret=True) for k, v in (secrets or {}).items()})
        if values:
            stack.set_all_config(values)
        return stack

    def cleanup(self) -> None:
        errors: list[str] = []
        for stack, stack_file in reversed(self.stacks):
            try:
                try:
                    stack.destroy(on_output=_log_line)
                except Exception:
                    # A test that killed an engine leaves its lock behind: lift it and try once more.
                    stack.cancel()
                    stack.destroy(on_output=_log_line)
            except Exception as exc:  # teardown must go on: report at the end
                errors.append(f"destroy {stack.name}: {exc}")
            try:
                stack.workspace.remove_stack(stack.name, force=True)
            except Exception as exc:
                errors.append(f"remove {stack.name}: {exc}")
            if stack_file is not None and stack_file.exists():
                stack_file.unlink()
        self.stacks.clear()
        if errors:
            log.warning("engine stack teardown problems:\n%s", "\n".join(errors))


def _log_line(line: str) -> None:
    log.info("%s", line.rstrip())


@pytest.fixture
def engine_stack(toolchain: Toolchain, tmp_path: Path) -> Iterator[EngineStackFactory]:
    """Factory for Automation API stacks on a throwaway file:// backend; torn down after the test."""
    factory = EngineStackFactory(toolchain=toolchain, tmp_path=tmp_path)
    try:
        yield factory
    finally:
        factory.cleanup()


#: Convenience for tests: ``on_output=collect(lines)`` gathers the engine output.
def collect(lines: list[str]) -> Callable[[str], None]:
    return lines.append
