"""docs/config.md's reference and Pulumi.yaml's config block are what components/settings.py declares."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
from typing import Any

import pytest
import yaml

from components import settings
from tests.components.harness import ROOT, project_file

ROW = re.compile(
    r"^\| `(?P<key>[A-Za-z]+)` \| (?P<type>\w+) \| `(?P<default>[^`]*)` \| (?P<allowed>.+) \| (?P<desc>.+) \|$"
)
REGENERATE = "regenerate with `venv/bin/python -m components.settings`"


def documented() -> dict[str, tuple[str, Any]]:
    rows: dict[str, tuple[str, Any]] = {}
    for line in (ROOT / "docs" / "config.md").read_text().splitlines():
        match = ROW.match(line)
        if match:
            assert match["key"] not in rows, f"{match['key']} documented twice"
            rows[match["key"]] = (match["type"], match["default"])
    return rows


def as_doc(value: Any) -> str:
    if isinstance(value, bool | list) or value == "":
        return json.dumps(value)
    return str(value)


def test_project_file_runs_python_from_venv_on_a_local_backend() -> None:
    project = project_file()
    assert project["name"] == "redis-cluster"
    assert project["runtime"] == {"name": "python", "options": {"toolchain": "pip", "virtualenv": "venv"}}
    assert project["backend"]["url"] == "file://~"


def test_config_reference_matches_pulumi_yaml() -> None:
    declared = {
        key.split(":", 1)[1]: (spec["type"], as_doc(spec["default"])) for key, spec in project_file()["config"].items()
    }
    assert documented() == declared


def test_config_reference_is_generated_from_the_declarations() -> None:
    doc = (ROOT / "docs" / "config.md").read_text()
    assert settings.with_reference(doc) == doc, REGENERATE
    assert list(documented()) == [key.name for key in settings.KEYS]


def test_pulumi_yaml_config_is_generated_from_the_declarations() -> None:
    text = (ROOT / "Pulumi.yaml").read_text()
    assert project_file()["config"] == settings.pulumi_config(), REGENERATE
    assert settings.with_config_block(text) == text, REGENERATE


def test_a_changed_declaration_shows_up_in_both_generated_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """The generators really read the declarations: a changed one changes both outputs."""
    changed = dataclasses.replace(settings.KEYS[0], doc="A doc that no file holds yet.")
    monkeypatch.setattr(settings, "KEYS", (changed, *settings.KEYS[1:]))
    assert "A doc that no file holds yet." in settings.with_reference((ROOT / "docs" / "config.md").read_text())
    assert "A doc that no file holds yet." in settings.with_config_block((ROOT / "Pulumi.yaml").read_text())


def load_workflow(name: str) -> dict[Any, Any]:
    data: dict[Any, Any] = yaml.safe_load((ROOT / ".github" / "workflows" / name).read_text())
    return data


def pulumi_steps(workflow: dict[Any, Any]) -> list[dict[str, Any]]:
    return [
        step
        for job in workflow["jobs"].values()
        for step in job["steps"]
        if str(step.get("uses", "")).startswith("pulumi/actions@")
    ]


def committed_stacks() -> set[str]:
    """The environments of the repository: tracked Pulumi.<stack>.yaml files (the engine tests create and
    remove throwaway stack files in the project directory while they run)."""
    tracked = subprocess.run(
        ["git", "ls-files", "Pulumi.*.yaml"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    return {name.split(".")[1] for name in tracked}


def test_preview_workflow_covers_every_stack_and_comments() -> None:
    workflow = load_workflow("preview.yml")
    assert "pull_request" in workflow[True]  # YAML 1.1 reads the key `on` as True
    stacks = {entry["stack"] for entry in workflow["jobs"]["preview"]["strategy"]["matrix"]["include"]}
    assert stacks == committed_stacks()
    [step] = pulumi_steps(workflow)
    assert step["with"]["command"] == "preview" and step["with"]["comment-on-pr"] is True


def test_deploy_and_destroy_workflows() -> None:
    deploy = load_workflow("deploy.yml")
    assert deploy[True]["push"]["branches"] == ["main"]
    [up] = pulumi_steps(deploy)
    assert (up["with"]["command"], up["with"]["stack-name"]) == ("up", "dev")
    destroy = load_workflow("destroy.yml")
    assert set(destroy[True]["workflow_dispatch"]["inputs"]["stack"]["options"]) == {"dev", "prod"}
    [down] = pulumi_steps(destroy)
    assert down["with"]["command"] == "destroy"
