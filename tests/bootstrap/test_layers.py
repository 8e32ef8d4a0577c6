"""The layers bootstrap/__init__.py names, kept honest: dependencies point one way.

Read from the source (every import statement, those inside functions too), so a shortcut across
layers fails here before it makes the pure planner need a server or the Kubernetes layer need Redis.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import bootstrap
from tests.imports import imported_modules

PACKAGE = Path(bootstrap.__file__).parent
PURE = {"errors", "model", "engines", "manifest", "planner", "rules", "waiting", "props"}
REDIS_IO = {
    "endpoints",
    "operations",
    "failover",
    "atomic_migration",
    "migration",
    "lease",
    "auth",
    "backup",
    "restore",
    "sync_delay",
}
KUBE = {"kube"}
ORCHESTRATION = {"converge", "roll"}
BOUNDARY = {"provider", "resource", "password", "cli", "__main__"}
LAYERS = PURE | REDIS_IO | KUBE | ORCHESTRATION | BOUNDARY


def imports(module: str) -> set[str]:
    return imported_modules(PACKAGE / f"{module}.py", "bootstrap")


def ours(module: str) -> set[str]:
    return {name.split(".")[1] for name in imports(module) if name.startswith("bootstrap.")}


def third_party(module: str) -> set[str]:
    return {name.split(".")[0] for name in imports(module)} & {"redis", "kubernetes", "pulumi"}


def test_every_module_has_a_layer() -> None:
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    assert modules == LAYERS, f"unplaced: {sorted(modules - LAYERS)}; gone: {sorted(LAYERS - modules)}"


@pytest.mark.parametrize("module", sorted(PURE))
def test_pure_modules_import_no_server_cluster_or_engine_client_and_only_pure_modules(module: str) -> None:
    assert third_party(module) == set(), f"{module} imports {third_party(module)}"
    assert ours(module) <= PURE, f"{module} imports {ours(module) - PURE}"


def test_the_kubernetes_layer_does_not_reach_into_the_redis_operations() -> None:
    assert "redis" not in third_party("kube")
    assert ours("kube") <= PURE | {"endpoints"}, ours("kube")


@pytest.mark.parametrize("module", sorted(REDIS_IO))
def test_redis_io_never_imports_orchestration_kubernetes_or_pulumi(module: str) -> None:
    assert ours(module).isdisjoint(ORCHESTRATION | BOUNDARY | KUBE), f"{module} imports {ours(module)}"
    assert third_party(module) <= {"redis"}, f"{module} imports {third_party(module)}"


def test_operations_knows_nothing_of_the_failovers_or_the_migrations_built_on_it() -> None:
    assert ours("operations").isdisjoint({"failover", "migration", "atomic_migration", "lease", "backup"})
    assert "migration" not in ours("failover")


@pytest.mark.parametrize("module", sorted(ORCHESTRATION))
def test_orchestration_imports_no_pulumi(module: str) -> None:
    assert "pulumi" not in third_party(module)
    assert ours(module).isdisjoint(BOUNDARY), ours(module)


def test_only_the_pulumi_boundary_imports_pulumi() -> None:
    importers = {m for m in LAYERS if "pulumi" in third_party(m)}
    assert importers <= BOUNDARY, importers
