"""Run the real ``__main__.py`` under Pulumi mocks and record what it registers.

Config is fed the way the engine feeds it: Pulumi.yaml's declared defaults
overlaid with a Pulumi.<stack>.yaml, every value as a string (lists as JSON).
"""

from __future__ import annotations

import json
import runpy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import kubernetes_validate
import pulumi
import yaml
from pulumi.runtime.mocks import MockMonitor
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

ROOT = Path(__file__).resolve().parents[2]
MAIN = ROOT / "__main__.py"
PROJECT = "redis-cluster"
# Newest Kubernetes schema the validator ships (1.37 with kubernetes-validate 1.37.0).
K8S_VERSION = kubernetes_validate.utils.latest_version()


def assert_valid_kubernetes(manifest: Mapping[str, Any]) -> None:
    """Strict OpenAPI validation: unknown fields fail too."""
    kubernetes_validate.validate(dict(manifest), K8S_VERSION, strict=True)


@dataclass
class Registered:
    typ: str
    name: str
    inputs: dict[str, Any]
    provider: str | None
    custom: bool | None
    urn: str = ""
    parent: str = ""
    dependencies: list[str] = field(default_factory=list)
    ignore_changes: list[str] = field(default_factory=list)


def fake_password(name: str) -> str:
    """What a GeneratedPassword named ``name`` yields under the mocks (its provider never runs)."""
    return f"GenPw-{name}-Zq9"


def fake_pem(kind: str, name: str) -> str:
    return f"-----BEGIN {kind}-----\nFAKE{kind.replace(' ', '')}{name}\n-----END {kind}-----\n"


# What the providers would compute, per resource type: outputs the mocks must invent.
_COMPUTED: dict[str, Callable[[str], dict[str, Any]]] = {
    "tls:index/privateKey:PrivateKey": lambda n: {
        "privateKeyPem": fake_pem("PRIVATE KEY", n),
        "privateKeyPemPkcs8": fake_pem("PRIVATE KEY", n + "pkcs8"),
        "publicKeyPem": fake_pem("PUBLIC KEY", n),
    },
    "tls:index/selfSignedCert:SelfSignedCert": lambda n: {"certPem": fake_pem("CERTIFICATE", n)},
    "tls:index/certRequest:CertRequest": lambda n: {"certRequestPem": fake_pem("CERTIFICATE REQUEST", n)},
    "tls:index/locallySignedCert:LocallySignedCert": lambda n: {"certPem": fake_pem("CERTIFICATE", n)},
}


# The dynamic resources' own types (bootstrap/resource.py, bootstrap/password.py): what a preview shows.
BOOTSTRAP_TYPE = "pulumi-python:dynamic/redis-cluster:ClusterBootstrap"
DRAIN_TYPE = "pulumi-python:dynamic/redis-cluster:ClusterDrain"
PASSWORD_TYPE = "pulumi-python:dynamic/redis-cluster:GeneratedPassword"


@dataclass
class RecordingMocks(pulumi.runtime.Mocks):
    resources: list[Registered] = field(default_factory=list)

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict[Any, Any]]:
        self.resources.append(Registered(args.typ, args.name, dict(args.inputs), args.provider, args.custom))
        outputs = dict(args.inputs)
        if args.typ == PASSWORD_TYPE:
            outputs["value"] = fake_password(args.name)  # bootstrap.password.GeneratedPassword
        if args.typ == BOOTSTRAP_TYPE:
            outputs["announcedAddresses"] = MOCK_ANNOUNCED  # what the live pods would announce
        computed = _COMPUTED.get(args.typ)
        if computed is not None:
            outputs.update(computed(args.name))
        return f"{args.name}-id", outputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[Any, Any], list[tuple[str, str]] | None]:
        return {}, None


# The bootstrap's announcedAddresses output under the mocks (the real one reads the pods' node IPs).
MOCK_ANNOUNCED = ["198.51.100.1:31000", "198.51.100.2:31001"]


class RecordingMonitor(MockMonitor):
    """Also records what the mocks do not see: parent, dependencies and register_outputs calls."""

    def __init__(self, mocks: pulumi.runtime.Mocks) -> None:
        super().__init__(mocks)
        self.requests: dict[tuple[str, str], Any] = {}
        self.outputs_registered: list[str] = []

    def RegisterResource(self, request: Any) -> Any:
        response = super().RegisterResource(request)  # type: ignore[no-untyped-call]
        self.requests[(request.type, request.name)] = (response.urn, request)
        return response

    def RegisterResourceOutputs(self, request: Any) -> Any:
        self.outputs_registered.append(request.urn)
        return super().RegisterResourceOutputs(request)  # type: ignore[no-untyped-call]


SECRET_SIG = "4dabf18193072939515e22adb298388d"  # pulumi's marker key of a serialized secret


def is_secret(value: Any) -> bool:
    return isinstance(value, dict) and SECRET_SIG in value


def unsecret(value: Any) -> Any:
    """Secrets replaced by their values (what the API server finally receives)."""
    if is_secret(value):
        return unsecret(value.get("value"))
    if isinstance(value, dict):
        return {k: unsecret(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unsecret(v) for v in value]
    return value


def _plain(value: Any) -> Any:
    """Integral floats back to ints: protobuf Structs carry every number as a double."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


@dataclass
class ProgramRun:
    resources: list[Registered]
    exports: dict[str, Any]
    outputs_registered: list[str] = field(default_factory=list)

    def of_type(self, typ: str) -> list[Registered]:
        return [r for r in self.resources if r.typ == typ]

    def one(self, typ: str) -> Registered:
        found = self.of_type(typ)
        assert len(found) == 1, f"expected one {typ}, got {[r.name for r in found]}"
        return found[0]

    def manifests(self) -> list[dict[str, Any]]:
        """Inputs of every Kubernetes object (apiVersion/kind/metadata/spec...) as sent to the engine."""
        return [
            unsecret(r.inputs)
            for r in self.resources
            if r.custom and r.typ.startswith("kubernetes:") and "kind" in r.inputs
        ]


def project_file() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    return data


def declared_defaults() -> dict[str, Any]:
    """``key -> default`` from Pulumi.yaml's config block (keys without the namespace)."""
    out: dict[str, Any] = {}
    for key, spec in project_file()["config"].items():
        out[key.split(":", 1)[1]] = spec["default"]
    return out


def stack_values(stack: str) -> dict[str, Any]:
    data = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text()) or {}
    return {k.split(":", 1)[1]: v for k, v in (data.get("config") or {}).items()}


def as_engine_string(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def engine_config(values: Mapping[str, Any]) -> dict[str, str]:
    return {f"{PROJECT}:{k}": as_engine_string(v) for k, v in values.items()}


def stack_config(stack: str, **overrides: Any) -> dict[str, str]:
    """What the engine hands the program for ``stack``: declared defaults, the stack file, overrides."""
    return engine_config({**declared_defaults(), **stack_values(stack), **overrides})


def run_main() -> None:
    runpy.run_path(str(MAIN), run_name="__main__")


def _execute(
    config: Mapping[str, str],
    stack: str,
    body: Callable[[], None] = run_main,
    secret_keys: tuple[str, ...] = (),
) -> tuple[ProgramRun, BaseException | None]:
    mocks = RecordingMocks()
    monitor = RecordingMonitor(mocks)
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=False, monitor=monitor)
    # Secret keys as the engine names them (`redis-cluster:password`); always reset.
    pulumi.runtime.set_all_config(dict(config), [f"{PROJECT}:{k}" for k in secret_keys])
    exports: dict[str, Any] = {}
    resolved: dict[str, Any] = {}

    def record(name: str, value: Any) -> None:
        exports[name] = value

    def program() -> None:
        with mock.patch.object(pulumi, "export", record):
            body()
        values: dict[str, Any] | None = _sync_await(pulumi.Output.from_input(exports).future())
        resolved.update(values or {})

    error: BaseException | None = None
    try:
        _sync_await(run_pulumi_func(program))
    except Exception as e:  # the caller decides whether a failure was expected
        error = e
    user = [r for r in mocks.resources if r.typ != "pulumi:pulumi:Stack"]
    for r in user:
        urn, request = monitor.requests[(r.typ, r.name)]
        r.urn, r.parent, r.dependencies = urn, request.parent, list(request.dependencies)
        r.ignore_changes = list(request.ignoreChanges)
        r.inputs = _plain(r.inputs)
    run = ProgramRun(resources=user, exports=_plain(resolved), outputs_registered=monitor.outputs_registered)
    return run, error


def run_program(
    config: Mapping[str, str],
    stack: str = "test",
    body: Callable[[], None] = run_main,
    secret_keys: tuple[str, ...] = (),
) -> ProgramRun:
    """Execute ``__main__.py`` (or ``body``) with mocks; an exception from the program propagates.

    ``secret_keys``: config keys (without the namespace) the stack stores as secrets.
    """
    run, error = _execute(config, stack, body, secret_keys)
    if error is not None:
        raise error
    return run


def run_failing_program(
    config: Mapping[str, str], stack: str = "test", secret_keys: tuple[str, ...] = ()
) -> tuple[BaseException, ProgramRun]:
    """Execute a program expected to fail; returns the error and whatever was registered before it."""
    run, error = _execute(config, stack, secret_keys=secret_keys)
    assert error is not None, "the program was expected to fail"
    return error, run
