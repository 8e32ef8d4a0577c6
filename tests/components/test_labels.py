"""Names derived from settings stay valid Kubernetes names at the limits."""

from __future__ import annotations

import re

import pytest

from components import labels
from components.settings import MAX_NAME_LEN, validate

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def test_longest_names_are_still_valid() -> None:
    s = validate({"name": "r" * MAX_NAME_LEN, "namespace": "n" * 63, "masters": 1000, "replicasPerMaster": 10})
    last = s.pod_count - 1
    for name in (labels.pod_name(s, last), labels.claim_name(s, last), labels.headless_service_name(s)):
        assert len(name) <= 63 and DNS_LABEL.match(name), name
    assert len(labels.volume_name(s, last)) <= 253


@pytest.mark.parametrize(
    ("image", "version"),
    [
        ("redis:7.0.15", "7.0.15"),
        ("registry.local:5000/redis:7.2", "7.2"),
        ("registry.local:5000/redis", "latest"),
        ("redis@sha256:abc", "latest"),
        ("redis:7.0.15-alpine@sha256:abc", "7.0.15-alpine"),
    ],
)
def test_image_version_label(image: str, version: str) -> None:
    assert labels.image_version(image) == version


def test_pod_dns_names_use_the_headless_service() -> None:
    s = validate({"namespace": "redis", "clusterDomain": "example.internal"})
    assert labels.pod_fqdn(s, 4) == "redis-cluster-4.redis-cluster-headless.redis.svc.example.internal"
