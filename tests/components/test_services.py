"""Service specs for any valid settings."""

from __future__ import annotations

from hypothesis import given
from hypothesis import settings as hsettings

from components import security, services
from components.settings import ClusterSettings
from tests.components.harness import assert_valid_kubernetes
from tests.components.strategies import settings


@hsettings(max_examples=25, deadline=None)
@given(settings())
def test_services(s: ClusterSettings) -> None:
    headless, client, external = (
        services.headless_manifest(s),
        services.client_manifest(s),
        services.external_manifest(s),
    )
    for manifest in (headless, client, external):
        assert_valid_kubernetes(manifest)
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"] is True
    tls_port = [6380] if s.tls and not s.tls_only else []
    assert [p["port"] for p in headless["spec"]["ports"]] == [6379, *tls_port, 16379]
    assert external["spec"]["ports"][0]["nodePort"] == s.external_node_port
    assert len({m["metadata"]["name"] for m in (headless, client, external)}) == 3
    per_pod = [services.per_pod_manifest(s, i) for i in range(s.pod_count)]
    for manifest in per_pod:
        assert_valid_kubernetes(manifest)
    node_ports = [p["nodePort"] for m in per_pod for p in m["spec"]["ports"]]
    assert len(set(node_ports)) == len(node_ports) == 2 * s.pod_count
    assert len(services.external_seeds(s)) == {"none": 0, "shared": 1, "per-pod": s.pod_count}[s.external_access]


@hsettings(max_examples=25, deadline=None)
@given(settings())
def test_security_manifests(s: ClusterSettings) -> None:
    assert_valid_kubernetes(security.network_policy_manifest(s))
    assert_valid_kubernetes(security.auth_secret_manifest(s, "pw-placeholder" if s.auth else None, "op-placeholder"))
    assert_valid_kubernetes(security.tls_secret_manifest(s, "crt", "key", "ca"))


def test_seed_addresses_bracket_ipv6_hosts_only() -> None:
    """Redis lists an IPv6 node bare ("fd00::7:31000"); clients need "[fd00::7]:31000"."""
    assert services.seed_address("10.218.0.1:31000") == "10.218.0.1:31000"
    assert services.seed_address("fd00::7:31000") == "[fd00::7]:31000"
    assert services.seed_address("[fd00::7]:31000") == "[fd00::7]:31000"
