"""Service specs for any valid settings."""

from __future__ import annotations

from hypothesis import given
from hypothesis import settings as hsettings

from components import services
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
    assert [p["port"] for p in headless["spec"]["ports"]] == [6379, 16379]
    assert external["spec"]["ports"][0]["nodePort"] == s.external_node_port
    assert len({m["metadata"]["name"] for m in (headless, client, external)}) == 3
