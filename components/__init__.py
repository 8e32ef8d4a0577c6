"""Typed Pulumi components that deploy a Redis Cluster on Kubernetes.

Each module owns one concern; pure ``*_manifest`` functions build the specs and
the components only wire them, so specs are testable without Pulumi.
"""
