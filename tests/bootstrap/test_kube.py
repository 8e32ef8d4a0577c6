"""The rollout check the converge waits on: a StatefulSet is rolled only when the controller says so.

With OnDelete (what the program declares) the controller rolls nothing: only a spec it has not seen
yet is waited for, and the stale pods are the bootstrap's roll (tests/bootstrap/test_roll.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from bootstrap.kube import RUNNING_IS_BACK_S, _not_ready, _running_for, rollout_pending


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


def crash_looping_pod() -> object:
    status = SimpleNamespace(
        name="redis",
        state=SimpleNamespace(waiting=SimpleNamespace(reason="CrashLoopBackOff", message="back-off 40s")),
        last_state=SimpleNamespace(terminated=SimpleNamespace(reason="OOMKilled", exit_code=137)),
        restart_count=4,
    )
    return SimpleNamespace(
        metadata=SimpleNamespace(name="redis-cluster-2", namespace="ns"),
        status=SimpleNamespace(phase="Running", container_statuses=[status]),
    )


def test_a_pod_that_does_not_come_back_is_named_with_its_cause_and_its_warnings() -> None:
    """What `kubectl describe pod` would show, in the error of a roll or a wait that gave up."""
    event = SimpleNamespace(
        reason="BackOff",
        message="Back-off restarting failed container redis",
        last_timestamp=1,
        event_time=None,
        metadata=SimpleNamespace(creation_timestamp=1),
    )
    events = SimpleNamespace(list_namespaced_event=lambda ns, field_selector: SimpleNamespace(items=[event]))
    said = _not_ready(crash_looping_pod(), events)
    assert said == (
        "container redis: CrashLoopBackOff back-off 40s, last run ended OOMKilled (exit code 137), 4 restart(s); "
        "event BackOff: Back-off restarting failed container redis"
    )


def test_events_that_cannot_be_read_leave_the_cause_as_it_is() -> None:
    def forbidden(ns: str, field_selector: str) -> object:
        raise PermissionError("events: forbidden")

    said = _not_ready(crash_looping_pod(), SimpleNamespace(list_namespaced_event=forbidden))
    assert said.endswith("4 restart(s)")


def running(seconds_ago: float) -> SimpleNamespace:
    started = datetime.now(UTC) - timedelta(seconds=seconds_ago)
    return SimpleNamespace(state=SimpleNamespace(running=SimpleNamespace(started_at=started), waiting=None))


def pod_of(*containers: SimpleNamespace) -> SimpleNamespace:
    return SimpleNamespace(status=SimpleNamespace(container_statuses=list(containers)))


def test_a_restarted_pod_running_steadily_is_back_even_when_not_ready() -> None:
    """The readiness probe keeps an empty node not Ready until it is joined; the roll's restart waited for
    Ready and so for its own heal, which runs only after the restart returns, until its timeout."""
    crashing = SimpleNamespace(state=SimpleNamespace(running=None, waiting=SimpleNamespace(reason="CrashLoopBackOff")))
    assert _running_for(pod_of(running(60), running(RUNNING_IS_BACK_S + 5))) >= RUNNING_IS_BACK_S
    assert _running_for(pod_of(running(60), running(2))) < 3, "the last container to start counts"
    assert _running_for(pod_of(running(60), crashing)) == 0.0
    assert _running_for(pod_of()) == 0.0
