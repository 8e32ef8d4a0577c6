"""docs/config.md's reference and Pulumi.yaml's config block are what components/settings/declarations.py declares."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from components import settings
from components.settings import reference
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
    monkeypatch.setattr(reference, "KEYS", (changed, *settings.KEYS[1:]))
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


# ------------------------------------------------------------------ the newcomer path (README quickstart)


def quickstart() -> str:
    readme = (ROOT / "README.md").read_text()
    return readme[readme.index("## Quickstart") : readme.index("\n## ", readme.index("## Quickstart") + 1)]


def test_deploy_refuses_to_start_without_a_passphrase(tmp_path: Path) -> None:
    """Before anything is created (no pulumi, kubectl or cluster.sh call), with the fix in the message."""
    called = tmp_path / "called"
    for tool in ("pulumi", "kubectl"):
        fake = tmp_path / tool
        fake.write_text(f"#!/bin/sh\necho {tool} >> {called}\n")
        fake.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULUMI_CONFIG_PASSPHRASE")}
    env["PATH"] = f"{tmp_path}:{env.get('PATH', '')}"
    run = subprocess.run(
        ["bash", str(ROOT / "tools" / "deploy.sh"), "newcomer"], env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 2, run.stderr
    assert "PULUMI_CONFIG_PASSPHRASE is not set" in run.stderr
    assert "export PULUMI_CONFIG_PASSPHRASE=" in run.stderr
    assert not called.exists(), called.read_text()
    assert not (ROOT / "Pulumi.newcomer.yaml").exists()


def test_toolchain_env_leaves_the_passphrase_to_its_owner() -> None:
    """Sourced with no passphrase set (toolchain built or not), it sets none; one that is set it keeps."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULUMI_CONFIG_PASSPHRASE")}
    script = 'source tools/toolchain-env.sh >/dev/null 2>&1; echo "${PULUMI_CONFIG_PASSPHRASE-<unset>}"'
    unset = subprocess.run(["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert unset.stdout.strip() == "<unset>"
    mine = subprocess.run(
        ["bash", "-c", script],
        cwd=ROOT,
        env={**env, "PULUMI_CONFIG_PASSPHRASE": "mine"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert mine.stdout.strip() == "mine"


def test_quickstart_names_real_outputs_and_the_dev_stacks_node_port() -> None:
    text = quickstart()
    assert "export PULUMI_CONFIG_PASSPHRASE=" in text and "source tools/toolchain-env.sh" in text
    exported = set(re.findall(r'pulumi\.export\("(\w+)"', (ROOT / "__main__.py").read_text()))
    used = set(re.findall(r"pulumi stack output (\w+)", text)) | set(re.findall(r"output `(\w+)`", text))
    assert {"authSecret", "namespace", "externalNodePort"} <= used
    assert used <= exported, used - exported
    dev = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())["config"]
    assert dev["redis-cluster:externalAccess"] == "shared"
    assert f"redis-cli -c -p {dev['redis-cluster:externalNodePort']} " in text
    assert "REDISCLI_AUTH" in text and 'get secret "$secret"' in text
