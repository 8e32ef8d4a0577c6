"""The order components/settings/__init__.py names, kept honest: each module imports only the ones before it.

Read from the source, like tests/bootstrap/test_layers.py: a rule that reaches for a declaration, or
validation that reaches for the engine's config, fails here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import components.settings
from tests.imports import imported_modules

PACKAGE = Path(components.settings.__file__).parent
ORDER = ["rules", "declarations", "validate", "load", "reference"]


def imports(module: str) -> set[str]:
    return imported_modules(PACKAGE / f"{module}.py", "components.settings")


def test_every_module_has_its_place() -> None:
    assert {p.stem for p in PACKAGE.glob("*.py")} - {"__init__", "__main__"} == set(ORDER)


@pytest.mark.parametrize("module", ORDER)
def test_a_module_imports_only_the_settings_modules_before_it_and_no_other_component(module: str) -> None:
    found = imports(module)
    siblings = {name.rsplit(".", 1)[1] for name in found if name.startswith("components.settings.")}
    assert siblings <= set(ORDER[: ORDER.index(module)]), f"{module} imports {siblings}"
    others = {name for name in found if name.startswith("components") and not name.startswith("components.settings")}
    assert not others, f"{module} imports {others}: the settings are what the components are built from"


def test_only_loading_reads_the_engine_and_validation_only_names_its_error_type() -> None:
    users = {m for m in ORDER if "pulumi" in {name.split(".")[0] for name in imports(m)}}
    assert users == {"validate", "load"}, users
    validate_source = (PACKAGE / "validate.py").read_text()
    assert "pulumi.Config" not in validate_source and "pulumi.runtime" not in validate_source
