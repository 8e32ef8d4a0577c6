"""The rollout check the converge waits on: a StatefulSet is rolled only when the controller says so.

With OnDelete (what the program declares) the controller rolls nothing: only a spec it has not seen
yet is waited for, and the stale pods are the bootstrap's roll (tests/bootstrap/test_roll.py)."""

from __future__ import annotations

from types import SimpleNamespace

from bootstrap.kube import rollout_pending


def sts(
    generation: int,
    observed: int,
    current: str,
    update: str,
    updated: int,
    replicas: int = 6,
    strategy: str = "RollingUpdate",
) -> object:
    return SimpleNamespace(
        metadata=SimpleNamespace(generation=generation),
        spec=SimpleNamespace(replicas=replicas, update_strategy=SimpleNamespace(type=strategy)),
        status=SimpleNamespace(
            observed_generation=observed, current_revision=current, update_revision=update, updated_replicas=updated
        ),
    )


def test_a_rolled_statefulset_is_done() -> None:
    assert rollout_pending(sts(3, 3, "rev-b", "rev-b", 6)) is None


def test_a_spec_the_controller_has_not_seen_is_pending() -> None:
    """What Pulumi's await reported as done in 0.28 s: the status still describes the old generation."""
    assert rollout_pending(sts(4, 3, "rev-b", "rev-b", 6)) == "the controller has not seen the new spec yet"


def test_a_roll_in_progress_and_pods_not_yet_created_are_pending() -> None:
    assert rollout_pending(sts(4, 4, "rev-b", "rev-c", 2)) == "2 of 6 pods at the new revision"
    assert rollout_pending(sts(4, 4, "rev-c", "rev-c", 6, replicas=8)) == "6 of 8 pods created"


def test_with_on_delete_only_an_unseen_spec_is_waited_for() -> None:
    assert rollout_pending(sts(4, 4, "rev-b", "rev-c", 0, strategy="OnDelete")) is None
    assert rollout_pending(sts(5, 4, "rev-b", "rev-c", 0, strategy="OnDelete")) is not None
