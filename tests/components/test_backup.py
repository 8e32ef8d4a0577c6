"""The backup volume, the CronJob and the restore Job as the real program registers them (Pulumi mocks).

What the scripts do is proven on real servers (test_backup_scripts.py) and on Kubernetes (e2e step
13); here: which objects exist for which settings, what they mount and whom they log in as, that no
selector of the Redis pods picks a job's pod, and that bad settings are refused before anything.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import pytest

from components import backup, labels, redis_config
from components.settings import BACKUP_USER, SettingsError, validate
from tests.components.harness import (
    BOOTSTRAP_TYPE,
    ProgramRun,
    assert_valid_kubernetes,
    is_secret,
    run_failing_program,
    run_program,
    stack_config,
    unsecret,
)

CRONJOB = "kubernetes:batch/v1:CronJob"
JOB = "kubernetes:batch/v1:Job"
PV = "kubernetes:core/v1:PersistentVolume"
PVC = "kubernetes:core/v1:PersistentVolumeClaim"
SECRET = "kubernetes:core/v1:Secret"
CONFIG_MAP = "kubernetes:core/v1:ConfigMap"
SVC = "kubernetes:core/v1:Service"
PDB = "kubernetes:policy/v1:PodDisruptionBudget"
SCHEDULE = "0 3 * * *"


def program(**overrides: Any) -> ProgramRun:
    return _program(json.dumps(overrides, sort_keys=True))


@functools.cache
def _program(overrides: str) -> ProgramRun:
    return run_program(stack_config("dev", **json.loads(overrides)))


def by_name(run: ProgramRun, typ: str) -> dict[str, dict[str, Any]]:
    return {r.inputs["metadata"]["name"]: unsecret(r.inputs) for r in run.of_type(typ)}


def auth_keys(run: ProgramRun) -> set[str]:
    [auth] = [r for r in run.of_type(SECRET) if r.inputs["metadata"]["name"] == "redis-cluster-auth"]
    assert is_secret(auth.inputs["stringData"])
    return set(unsecret(auth.inputs["stringData"]))


def test_without_backup_settings_there_is_no_volume_job_user_or_password() -> None:
    run = program()
    assert run.of_type(CRONJOB) == [] and run.of_type(JOB) == []
    assert not [n for n in by_name(run, PV) if n.endswith("-backup")]
    assert BACKUP_USER not in by_name(run, CONFIG_MAP)["redis-cluster-config"]["data"][redis_config.USERS_KEY]
    assert redis_config.BACKUP_PASSWORD_KEY not in auth_keys(run)
    assert "backupCronJob" not in run.exports and "backupVolume" not in run.exports


def test_a_schedule_makes_the_cronjob_its_volume_its_user_and_nothing_else_with_a_key() -> None:
    run = program(backupSchedule=SCHEDULE, backupRetention=3)
    [cron] = by_name(run, CRONJOB).values()
    for manifest in (cron, by_name(run, PV)["default-redis-cluster-backup"], by_name(run, PVC)["redis-cluster-backup"]):
        assert_valid_kubernetes(manifest)
    assert cron["spec"]["schedule"] == SCHEDULE and cron["spec"]["concurrencyPolicy"] == "Forbid"
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["BACKUP_RETENTION"] == "3" and env["BACKUP_USER"] == BACKUP_USER
    settings = validate({})
    assert env["REDIS_NODES"].split() == [f"{labels.pod_fqdn(settings, i)}:6379" for i in range(6)]
    volumes = {v["name"]: v for v in pod["volumes"]}
    # Of the auth Secret, the backup user's password only.
    assert volumes["auth"]["secret"]["items"] == [
        {"key": redis_config.BACKUP_PASSWORD_KEY, "path": redis_config.BACKUP_PASSWORD_KEY}
    ]
    assert volumes["backup"]["persistentVolumeClaim"] == {"claimName": "redis-cluster-backup", "readOnly": False}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True and pod["securityContext"]["runAsUser"] == 999
    users = by_name(run, CONFIG_MAP)["redis-cluster-config"]["data"][redis_config.USERS_KEY]
    assert f"user {BACKUP_USER} {redis_config.backup_user_rules()}" in users.splitlines()
    assert "~" not in redis_config.backup_user_rules() and "+config" not in redis_config.backup_user_rules()
    assert redis_config.BACKUP_PASSWORD_KEY in auth_keys(run)
    scripts = by_name(run, CONFIG_MAP)["redis-cluster-backup-scripts"]["data"]
    assert set(scripts) == {backup.BACKUP_SCRIPT, backup.RESTORE_SCRIPT, backup.COMMON_SCRIPT}
    assert run.exports["backupVolume"] == {"node": None, "path": "/mnt/redis-cluster/default/redis-cluster-backup"}
    assert run.exports["backupCronJob"] == "redis-cluster-backup"


def test_no_selector_of_the_redis_pods_picks_a_job_pod() -> None:
    """A backup pod behind the client Service would take clients' connections; under the PDB it would count."""
    run = program(backupSchedule=SCHEDULE, restoreFrom="latest", externalAccess="shared")
    job_pods = [
        by_name(run, CRONJOB)["redis-cluster-backup"]["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"],
        by_name(run, JOB)["redis-cluster-restore"]["spec"]["template"]["metadata"]["labels"],
    ]
    selectors = [s["spec"]["selector"] for s in by_name(run, SVC).values() if s["spec"].get("selector")]
    selectors += [p["spec"]["selector"]["matchLabels"] for p in by_name(run, PDB).values()]
    assert selectors
    for pod_labels in job_pods:
        for selector in selectors:
            assert not selector.items() <= pod_labels.items(), f"{selector} selects a job pod {pod_labels}"


def test_restore_from_runs_once_after_the_bootstrap_as_the_operator_from_a_read_only_volume() -> None:
    run = program(restoreFrom="redis-cluster-20261207T030000Z", backupNode="node-b", backupPath="/srv/backups")
    [job] = run.of_type(JOB)
    manifest = unsecret(job.inputs)
    assert_valid_kubernetes(manifest)
    assert manifest["spec"]["backoffLimit"] == 0
    pod = manifest["spec"]["template"]["spec"]
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    assert env["RESTORE_FROM"] == "redis-cluster-20261207T030000Z" and env["RESTORE_USER"] == "operator"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["backup"]["persistentVolumeClaim"]["readOnly"] is True
    assert volumes["auth"]["secret"]["items"] == [
        {"key": redis_config.OPERATOR_PASSWORD_KEY, "path": redis_config.OPERATOR_PASSWORD_KEY}
    ]
    assert pod["nodeSelector"] == {"kubernetes.io/hostname": "node-b"} and "initContainers" not in pod
    bootstrap = [r.urn for r in run.of_type(BOOTSTRAP_TYPE)]
    assert set(bootstrap) <= set(job.dependencies) and bootstrap, "the restore must wait for the formed cluster"
    assert "spec" in job.ignore_changes, "a later up must not run the restore again"
    pv = by_name(run, PV)["default-redis-cluster-backup"]
    assert pv["spec"]["local"] == {"path": "/srv/backups"} and pv["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
    assert run.of_type(CRONJOB) == [] and redis_config.BACKUP_PASSWORD_KEY not in auth_keys(run)
    assert run.exports["restoredFrom"] == "redis-cluster-20261207T030000Z"


BAD = [
    ({"backupSchedule": "every night"}, "backupSchedule", "a CronJob schedule"),
    ({"backupSchedule": "0 3 * *"}, "backupSchedule", "a CronJob schedule"),
    ({"restoreFrom": "yesterday"}, "restoreFrom", "redis-cluster-<YYYYMMDD>T<HHMMSS>Z"),
    ({"backupRetention": 0}, "backupRetention", "an integer from 1 to 1000"),
    ({"backupPath": "relative/dir", "backupSchedule": SCHEDULE}, "backupPath", "an absolute directory path"),
    ({"backupNode": "node-b"}, "backupNode", "needs backupSchedule or restoreFrom"),
    ({"backupRetention": 3}, "backupRetention", "needs backupSchedule or restoreFrom"),
    ({"backupSchedule": SCHEDULE, "tls": True}, "backupSchedule", "not supported with tls yet"),
    ({"restoreFrom": "latest", "bootstrapEndpoints": ["127.0.0.1:7000"] * 6}, "restoreFrom", "needs pods"),
    ({"backupSchedule": SCHEDULE, "aclUsers": ["backup +@read ~*"]}, "aclUsers", "must not name the user 'backup'"),
]


@pytest.mark.parametrize(("overrides", "key", "allowed"), BAD, ids=[f"{k}:{a}" for _o, k, a in BAD])
def test_bad_backup_config_names_the_key_value_and_what_is_allowed(
    overrides: dict[str, Any], key: str, allowed: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        validate(overrides | ({"aclPasswords": json.dumps({"backup": "p" * 12})} if "aclUsers" in overrides else {}))
    [problem] = caught.value.problems  # one mistake, one message
    assert problem.startswith(f"redis-cluster:{key} = ") and allowed in problem, problem
    secret_keys = ("aclPasswords",) if "aclUsers" in overrides else ()
    extra = {"aclPasswords": json.dumps({"backup": "p" * 12})} if "aclUsers" in overrides else {}
    error, run = run_failing_program(stack_config("dev", **overrides, **extra), secret_keys=secret_keys)
    assert isinstance(error, SettingsError) and f"redis-cluster:{key} = " in str(error)
    assert run.resources == []
