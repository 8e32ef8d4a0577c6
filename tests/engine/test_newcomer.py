"""The README's newcomer path through the real engine: `bash tools/deploy.sh`, then `pulumi destroy`.

Each runs in its own bash that first runs the README quickstart's environment block word for word
(the passphrase, tools/toolchain-env.sh), as a user's shell would. The state goes to a throwaway file
backend (PULUMI_BACKEND_URL), the Kubernetes objects are rendered to a directory (renderYamlTo), and a
stub kubectl reports a context, so deploy.sh takes its "existing context" branch: it never starts the
embedded cluster and nothing reaches a Kubernetes API.
"""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.engine.conftest import REPO_ROOT, Toolchain

pytestmark = pytest.mark.engine


def readme_environment() -> str:
    """The quickstart's environment block: the first sh block after "The environment every"."""
    readme = (REPO_ROOT / "README.md").read_text()
    after = readme[readme.index("The environment every") :]
    match = re.search(r"```sh\n(.*?)```", after, re.S)
    assert match, "the README quickstart has no environment block"
    return match.group(1)


@pytest.fixture
def newcomer(toolchain: Toolchain, tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """A stack name with its Pulumi.<stack>.yaml (render mode), and a user's environment without any Pulumi
    settings or toolchain on PATH; the stack and its file are removed afterwards."""
    name = f"newcomer{uuid.uuid4().hex[:8]}"
    stack_file = REPO_ROOT / f"Pulumi.{name}.yaml"
    stack_file.write_text(yaml.safe_dump({"config": {"redis-cluster:renderYamlTo": str(tmp_path / "manifests")}}))
    stub = tmp_path / "bin"
    stub.mkdir()
    kubectl = stub / "kubectl"
    kubectl.write_text('#!/bin/sh\n[ "$1 $2" = "config current-context" ] && echo stub-context && exit 0\nexit 1\n')
    kubectl.chmod(0o755)
    backend = tmp_path / "backend"
    backend.mkdir()
    path = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != str(toolchain.bin_dir)]
    # No KUBECONFIG: the kubernetes provider would take it, and it conflicts with rendering.
    unset = ("PULUMI_", "REDIS_CLUSTER_TOOLCHAIN_", "KUBECONFIG")
    env = {k: v for k, v in os.environ.items() if not k.startswith(unset)}
    env.update(PATH=os.pathsep.join([str(stub), *path]), PULUMI_BACKEND_URL=backend.as_uri())
    try:
        yield name, env
    finally:
        user_shell(f"pulumi stack rm --force --yes --stack {name}", env, timeout=120)
        stack_file.unlink(missing_ok=True)


def user_shell(commands: str, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """A fresh bash in the repository, set up as the README says, then ``commands``."""
    script = f"set -e\n{readme_environment()}\n{commands}\n"
    return subprocess.run(
        ["bash", "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_deploy_then_destroy_in_the_readmes_environment(newcomer: tuple[str, dict[str, str]]) -> None:
    name, env = newcomer
    assert (
        "pulumi"
        not in subprocess.run(
            ["bash", "-c", "command -v pulumi || true"], env=env, text=True, capture_output=True
        ).stdout
    ), "the user's PATH must not hold pulumi"

    deploy = user_shell(f"bash tools/deploy.sh {name}", env)
    assert deploy.returncode == 0, deploy.stdout[-3000:] + deploy.stderr[-3000:]
    assert "using Kubernetes context stub-context" in deploy.stderr
    assert f"deploy: stack {name} is up" in deploy.stderr

    # What the issue saw, when the shell's passphrase was not the one deploy.sh had used:
    wrong = user_shell(f"export PULUMI_CONFIG_PASSPHRASE=another-one\npulumi destroy --stack {name} --yes", env)
    assert wrong.returncode != 0 and "incorrect passphrase" in wrong.stdout + wrong.stderr

    destroy = user_shell(f"pulumi destroy --stack {name} --yes", env)
    assert destroy.returncode == 0, destroy.stdout[-3000:] + destroy.stderr[-3000:]
    assert "incorrect passphrase" not in destroy.stdout + destroy.stderr
    left = user_shell(f"pulumi stack --stack {name} --show-urns", env)
    assert left.returncode == 0 and "urn:pulumi" not in left.stdout, left.stdout
