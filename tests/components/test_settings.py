"""Config validation: every bad value is named with its key, value and what is allowed."""

from __future__ import annotations

import re
import typing
from typing import Any, Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from components.settings import DEFAULTS, KEYS, ClusterSettings, SettingsError, parse_quantity, validate
from tests.components.harness import declared_defaults, project_file

YAML_TYPES = {str: "string", int: "integer", bool: "boolean", list: "array"}


def test_code_defaults_match_pulumi_yaml() -> None:
    assert declared_defaults() == DEFAULTS
    for key, spec in project_file()["config"].items():
        assert spec["type"] == YAML_TYPES[type(DEFAULTS[key.split(":", 1)[1]])], key
        assert spec["description"].strip(), key


def test_field_names_mirror_the_keys() -> None:
    for key in KEYS:
        assert key.field == re.sub(r"(?<!^)(?=[A-Z])", "_", key.name).lower(), key.name
        assert key.doc and key.rule.allowed, key.name


CHOICES = [key for key in KEYS if typing.get_origin(typing.get_type_hints(ClusterSettings)[key.field]) is Literal]


def test_choices_are_literal_types_and_their_rule_takes_exactly_those() -> None:
    assert {key.name for key in CHOICES} == {"imagePullPolicy", "antiAffinity", "bootstrapConnection", "externalAccess"}
    for key in CHOICES:
        options = typing.get_args(typing.get_type_hints(ClusterSettings)[key.field])
        assert key.default in options
        assert key.rule.allowed == "one of " + ", ".join(options)
        for option in options:
            assert getattr(validate({key.name: option}), key.field) == option
        with pytest.raises(SettingsError, match=re.escape(f"{key.name} = 'other': must be one of")):
            validate({key.name: "other"})


def test_defaults_are_the_recipe() -> None:
    s = validate({})
    assert (s.masters, s.replicas_per_master, s.pod_count) == (3, 1, 6)
    assert (s.storage_size, s.external_node_port, s.node_timeout_ms) == ("150Mi", 30036, 15000)
    assert (s.namespace, s.name, s.anti_affinity, s.default_storage_class) == (
        "default",
        "redis-cluster",
        "preferred",
        False,
    )
    assert s.bootstrap_connection == "port-forward" and s.bootstrap_timeout_seconds == 600
    assert s.nodes == () and s.bootstrap_endpoints == ()
    # Secure by default: auth (generated password), guard rails, NetworkPolicy, nothing exposed.
    assert (s.auth, s.password, s.allow_dangerous_commands, s.network_policy) == (True, None, False, True)
    assert (s.external_access, s.tls) == ("none", False)


def test_engine_strings_are_parsed() -> None:
    s = validate(
        {
            "masters": "4",
            "replicasPerMaster": "2",
            "defaultStorageClass": "true",
            "nodes": '["a", "b", "c"]',
            "bootstrapEndpoints": "127.0.0.1:7000," * 11 + "127.0.0.1:7000",
        }
    )
    assert (s.masters, s.replicas_per_master, s.default_storage_class) == (4, 2, True)
    assert s.nodes == ("a", "b", "c")
    assert len(s.bootstrap_endpoints) == 12


BAD: list[tuple[str, Any, str]] = [
    ("masters", 2, "integer from 3"),
    ("masters", "three", "integer from 3"),
    ("masters", 3.5, "integer from 3"),
    ("masters", True, "integer from 3"),
    ("replicasPerMaster", -1, "integer from 0"),
    ("storageSize", "150MB", "Kubernetes quantity"),
    ("storageSize", "0", "Kubernetes quantity"),
    ("storageSize", "", "Kubernetes quantity"),
    ("externalNodePort", 29999, "from 30000 to 32767"),
    ("externalNodePort", 32768, "from 30000 to 32767"),
    ("namespace", "Redis_Prod", "DNS-1123 label"),
    ("namespace", "a" * 64, "DNS-1123 label"),
    ("name", "redis.cluster", "DNS-1123 label"),
    ("image", "", "non-empty image"),
    ("image", "  ", "non-empty image"),
    ("imagePullPolicy", "sometimes", "Always, IfNotPresent, Never"),
    ("antiAffinity", "strict", "preferred, required"),
    ("bootstrapConnection", "ssh", "port-forward, direct"),
    ("bootstrapEndpoints", ["127.0.0.1"], '"host:port"'),
    ("bootstrapEndpoints", ["127.0.0.1:0"], '"host:port"'),
    ("bootstrapEndpoints", ["127.0.0.1:70000"], '"host:port"'),
    ("bootstrapEndpoints", ["a b:6379"], '"host:port"'),
    ("bootstrapEndpoints", ["127.0.0.1:7000"], "one endpoint per pod"),
    ("bootstrapTimeoutSeconds", 0, "integer from 1"),
    ("acceptLostSlots", "16384", "'all' or slot ranges from 0 to 16383"),
    ("acceptLostSlots", "10-5", "'all' or slot ranges from 0 to 16383"),
    ("acceptLostSlots", "some", "'all' or slot ranges from 0 to 16383"),
    ("nodes", ["node-a"], "at least replicasPerMaster+1 = 2"),
    ("nodes", ["node-a", "node-a"], "unique"),
    ("nodes", ["Node A", "b"], "DNS-1123 subdomains"),
    ("nodes", "[not json", "list of strings"),
    ("storageClassName", "Local_Class", "DNS-1123 subdomain"),
    ("hostPathBase", "relative/dir", "absolute directory"),
    ("hostPathBase", "/", "absolute directory"),
    ("nodeTimeoutMs", 10, "integer from 1000"),
    ("cpuRequest", "lots", "Kubernetes quantity"),
    ("memoryLimit", "1Gb", "Kubernetes quantity"),
    ("memoryLimit", "64Mi", "must not be below memoryRequest"),
    ("defaultStorageClass", "yes", "true or false"),
    ("replicaPerMaster", 2, "unknown key"),
]


@pytest.mark.parametrize(("key", "value", "allowed"), BAD, ids=[f"{k}={v!r}" for k, v, _ in BAD])
def test_bad_value_is_named_with_key_value_and_allowed(key: str, value: Any, allowed: str) -> None:
    with pytest.raises(SettingsError) as caught:
        validate({key: value})
    message = str(caught.value)
    assert f"redis-cluster:{key} = {value!r}" in message
    assert allowed in message


def test_required_anti_affinity_needs_a_node_per_pod() -> None:
    with pytest.raises(SettingsError, match="one Redis pod per node"):
        validate({"antiAffinity": "required", "nodes": ["a", "b", "c"]})
    assert validate({"antiAffinity": "required", "nodes": list("abcdef")}).pod_count == 6
    assert validate({"antiAffinity": "preferred", "nodes": ["a", "b"]}).nodes == ("a", "b")


def test_all_problems_are_reported_together() -> None:
    with pytest.raises(SettingsError) as caught:
        validate({"masters": 1, "externalNodePort": 80, "image": "", "namespace": "A"})
    assert len(caught.value.problems) == 4


ONE_MISTAKE: list[dict[str, Any]] = [
    # A check across keys waits until each of its keys is fine on its own: one mistake, one message.
    {"replicasPerMaster": "two", "nodes": ["node-a"]},
    {"masters": 2, "antiAffinity": "required", "nodes": ["a", "b", "c"]},
    {"masters": "x", "bootstrapEndpoints": ["127.0.0.1:7000"]},
    {"externalAccess": "per-pod", "externalHost": "203.0.113.7", "nodeCidrs": ["10.0.0.1/8"]},
    {"externalAccess": "per-pod", "masters": 3, "externalNodePortBase": "high"},
    {"tls": "maybe", "tlsOnly": True},
    {"aclUsers": ["Bad +@all"]},
]


@pytest.mark.parametrize("raw", ONE_MISTAKE, ids=[",".join(r) for r in ONE_MISTAKE])
def test_one_mistake_gives_one_message(raw: dict[str, Any]) -> None:
    with pytest.raises(SettingsError) as caught:
        validate(raw)
    assert len(caught.value.problems) == 1, caught.value.problems


def test_every_bad_acl_entry_is_named() -> None:
    with pytest.raises(SettingsError) as caught:
        validate({"aclUsers": ["Bad +@all", "good +@read", "good +@write", "norules"]})
    assert [p.split(":", 1)[1].split(" = ")[0] for p in caught.value.problems] == ["aclUsers"] * 3
    assert "'Bad +@all'" in caught.value.problems[0] and "unique" in caught.value.problems[1]
    assert "'norules': needs ACL rules" in caught.value.problems[2]


@given(st.integers(min_value=1, max_value=10**6), st.sampled_from(["", "Ki", "Mi", "Gi", "k", "M", "G", "m"]))
def test_quantities_parse(number: int, suffix: str) -> None:
    parsed = parse_quantity(f"{number}{suffix}")
    assert parsed is not None and parsed > 0


@pytest.mark.parametrize("text", ["1.5Gi", "100m", "1e3", ".5", "150Mi", "2"])
def test_quantity_forms(text: str) -> None:
    assert parse_quantity(text) is not None


@pytest.mark.parametrize("text", ["", "Mi", "1 Gi", "1GB", "-1Gi", "1.2.3", "0x10"])
def test_not_quantities(text: str) -> None:
    assert parse_quantity(text) is None
