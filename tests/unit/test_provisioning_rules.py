"""The provisioning workers' pure rules: namespace labels, access from roles, S3 principals and
bucket policies, report ids, which failures are permanent, what the views fold."""

from __future__ import annotations

import errno
import re

import pytest

from workers.access_policy import (
    READ_ACTIONS,
    WRITE_ACTIONS,
    access_of,
    bucket_policy,
    principal_arn,
    repo_statements,
)
from workers.errors import PermanentError, TransientError, classify
from workers.events import Event, Report
from workers.manifests import fqn_label, namespace_spec
from workers.namespaces import NamespaceView
from workers.storage import RepoLedger, StorageProvisioner

LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
COMMAND_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")


def test_the_fqn_label_is_a_valid_label_value_even_for_the_longest_names() -> None:
    assert fqn_label("prod-eu", "fraud") == "prod-eu.fraud"
    cluster, a, b = "c" * 35, "w" * 31 + "a", "w" * 31 + "b"
    long_a, long_b = fqn_label(cluster, a), fqn_label(cluster, b)
    assert len(long_a) <= 63 and LABEL_VALUE.match(long_a)
    assert long_a != long_b  # shortened, still one per workspace


def test_tenantry_labels_win_over_the_workspace_s_own() -> None:
    spec = namespace_spec(
        "prod-eu",
        "fraud",
        environment="prod",
        is_production=True,
        optimize_for="availability",
        labels={"tenantry.io/production": "false", "team": "risk"},
        annotations={"tenantry.io/workspace-fqn": "forged"},
    )
    assert spec.labels["tenantry.io/production"] == "true"
    assert spec.labels["team"] == "risk"
    assert spec.annotations["tenantry.io/workspace-fqn"] == "prod-eu:fraud"


def test_roles_give_read_or_read_write() -> None:
    assert access_of("viewer") == ("read",)
    assert access_of("editor") == access_of("admin") == ("read", "write")


def test_subjects_map_to_documented_principals() -> None:
    account = "123456789012"
    assert principal_arn("workspace:prod-eu:fraud", account) == (
        "arn:aws:iam::123456789012:role/tenantry/workspaces/prod-eu/fraud"
    )
    assert (
        principal_arn("team:risk", account) == "arn:aws:iam::123456789012:role/tenantry/teams/risk"
    )
    assert principal_arn("user:ana@example.com", account) == (
        "arn:aws:iam::123456789012:user/tenantry/ana@example.com"
    )


def test_one_statement_per_granted_principal_and_one_to_list_the_prefix() -> None:
    statements = repo_statements(
        "ml-bucket",
        "repos/fraud-models/",
        "fraud-models",
        {"user:ana@example.com": "admin", "team:risk": "viewer"},
        "1",
    )
    by_action = {str(s["Principal"]["AWS"]): s["Action"] for s in statements}
    assert by_action["arn:aws:iam::1:user/tenantry/ana@example.com"] == WRITE_ACTIONS
    assert by_action["arn:aws:iam::1:role/tenantry/teams/risk"] == READ_ACTIONS
    assert len(statements) == 3
    assert repo_statements("b", "p/", "r", {}, "1") == []


def test_a_bucket_policy_keeps_statements_that_are_not_ours() -> None:
    foreign = {"Sid": "Theirs", "Effect": "Deny", "Principal": "*", "Action": "s3:*"}
    ours = {"Sid": "tenantry-r-1", "Effect": "Allow"}
    current = {"Version": "2012-10-17", "Statement": [foreign, {"Sid": "tenantry-old"}]}
    assert bucket_policy(current, [ours]) == {
        "Version": "2012-10-17",
        "Statement": [foreign, ours],
    }
    assert bucket_policy({"Statement": [{"Sid": "tenantry-old"}]}, []) is None


def test_a_report_id_is_the_same_for_the_same_event_outcome_and_subject() -> None:
    event = Event(3, {"id": "f3bca223-3fc5-5b49-8147-dd1afac26671", "type": "x", "fqn": "a"})
    one = Report.of("storage", event, "record_storage_provisioned", "fraud-models", repo="x")
    assert one == Report.of(
        "storage", event, "record_storage_provisioned", "fraud-models", repo="x"
    )
    assert COMMAND_ID.match(one.command_id)
    others = {
        Report.of("storage", event, "record_storage_failed", "fraud-models").command_id,
        Report.of("storage", event, "record_storage_provisioned", "churn-models").command_id,
        one.command_id,
    }
    assert len(others) == 3


@pytest.mark.parametrize(
    ("error", "permanent"),
    [
        (NotADirectoryError(errno.ENOTDIR, "Not a directory"), True),
        (PermissionError(errno.EACCES, "Permission denied"), True),
        (OSError(errno.ENOSPC, "No space left on device"), False),
        (TimeoutError(), False),
        (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), False),
        (PermanentError("no backend"), True),
        (TransientError("git lock"), False),
        (KeyError("surprise"), False),
    ],
)
def test_which_failures_are_permanent(error: Exception, permanent: bool) -> None:
    assert classify(error).permanent is permanent


def _body(type_: str, fqn: str, **data: object) -> dict[str, object]:
    return {"type": type_, "fqn": fqn, "data": data}


def test_only_a_change_the_labels_show_marks_an_environment_as_relabelled() -> None:
    view = NamespaceView()
    view.fold(1, _body("environment.created", "dev", is_production=False, optimize_for="cost"))
    view.fold(5, _body("environment.updated", "dev", is_production=False, optimize_for="cost"))
    assert view.environments["dev"].labels_changed_at == 1  # a colour change
    view.fold(8, _body("environment.updated", "dev", is_production=True, optimize_for="cost"))
    assert view.environments["dev"].labels_changed_at == 8


def test_a_repo_ledger_follows_grants_and_deletion() -> None:
    ledger = RepoLedger()
    ledger.fold(1, _body("ml_repo.created", "m", name="m", location="s3://b/p/m/"))
    ledger.fold(2, _body("ml_repo.access_granted", "m", subject="team:risk", role="viewer"))
    ledger.fold(3, _body("ml_repo.access_granted", "m", subject="team:risk", role="editor"))
    ledger.fold(4, _body("ml_repo.created", "n", name="n", location="s3://b/p/n/"))
    assert ledger.repos["m"].grants == {"team:risk": "editor"}
    assert [r.name for r in ledger.neighbours(ledger.repos["m"])] == ["m", "n"]
    ledger.fold(5, _body("ml_repo.access_revoked", "m", subject="team:risk"))
    ledger.fold(6, _body("ml_repo.deletion_requested", "m", delete_storage=True))
    repo = ledger.repos["m"]
    assert (repo.grants, repo.live, repo.delete_storage) == ({}, False, True)
    assert [r.name for r in ledger.neighbours(repo)] == ["n"]


def test_an_expired_grant_leaves_the_storage_policy_as_a_revoked_one_does() -> None:
    ledger = RepoLedger()
    ledger.fold(1, _body("ml_repo.created", "m", name="m", location="s3://b/p/m/"))
    ledger.fold(
        2,
        _body(
            "ml_repo.access_granted",
            "m",
            subject="user:bo@example.com",
            role="viewer",
            expires_at="2026-03-01T10:00:00Z",
        ),
    )
    ledger.fold(3, _body("ml_repo.access_granted", "m", subject="team:risk", role="editor"))
    ledger.fold(4, _body("ml_repo.access_expired", "m", subject="user:bo@example.com"))
    assert ledger.repos["m"].grants == {"team:risk": "editor"}
    assert "tenantry.evt.ml_repo.access_expired" in StorageProvisioner.action_subjects
