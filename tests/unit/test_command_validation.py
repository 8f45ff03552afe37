"""Commands are strict, frozen pydantic models: names, labels, roots and types are checked on
the way in (the wire answers `validation_error`), before anything is loaded."""

from __future__ import annotations

import posixpath
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from domain.commands import COMMANDS, ChangeCommand

from .bodies import VALID_BODIES


def _accepts(command: str, **fields: Any) -> None:
    COMMANDS[command].model_validate({**VALID_BODIES[command], **fields})


def _refuses(command: str, field: str, **fields: Any) -> None:
    """`command` with `fields` changed is refused, and the error names `field`."""
    with pytest.raises(ValidationError) as info:
        COMMANDS[command].model_validate({**VALID_BODIES[command], **fields})
    locations = [error["loc"] for error in info.value.errors()]
    assert any(loc and loc[0] == field for loc in locations) or (
        field == "" and all(loc == () for loc in locations)
    ), locations


def test_every_command_has_a_valid_body_here() -> None:
    assert sorted(VALID_BODIES) == sorted(COMMANDS)
    for name, body in VALID_BODIES.items():
        COMMANDS[name].model_validate(body)


# --- names --------------------------------------------------------------------------------

DNS_LABEL_OK = ["a", "0", "a" * 63, "dev-1", "1-a", "a--b"]
DNS_LABEL_BAD = ["", "a" * 64, "Dev", "-dev", "dev-", "dev_1", "dev.1", "dév", " dev"]

# (command, field) of every DNS-label name kind: environments, storage integrations, teams,
# applications, and the references to them.
DNS_LABEL_FIELDS = [
    ("create_environment", "name"),
    ("update_environment", "name"),
    ("register_storage_integration", "name"),
    ("create_ml_repo", "storage_integration"),
    ("create_team", "name"),
    ("add_team_member", "team"),
    ("register_application", "name"),
    ("create_workspace", "environment"),
    ("add_cluster_environment", "environment"),
]


@pytest.mark.parametrize(("command", "field"), DNS_LABEL_FIELDS)
@pytest.mark.parametrize("value", DNS_LABEL_OK)
def test_dns_label_names_accepted(command: str, field: str, value: str) -> None:
    _accepts(command, **{field: value})


@pytest.mark.parametrize(("command", "field"), DNS_LABEL_FIELDS)
@pytest.mark.parametrize("value", DNS_LABEL_BAD)
def test_dns_label_names_refused(command: str, field: str, value: str) -> None:
    _refuses(command, field, **{field: value})


def test_a_clusters_environments_are_dns_labels_and_at_least_one() -> None:
    _accepts("register_cluster", environments=["dev", "a" * 63])
    _refuses("register_cluster", "environments", environments=[])
    _refuses("register_cluster", "environments", environments=["Dev"])


CLUSTER_OK = ["abc", "a" * 35, "prod-eu-1", "a1b", "a-1"]
CLUSTER_BAD = ["ab", "a" * 36, "1abc", "-abc", "abc-", "Prod", "prod_eu", "prod.eu"]


@pytest.mark.parametrize("value", CLUSTER_OK)
@pytest.mark.parametrize(
    ("command", "field"), [("register_cluster", "name"), ("add_cluster_environment", "cluster")]
)
def test_cluster_names_accepted(command: str, field: str, value: str) -> None:
    _accepts(command, **{field: value})


@pytest.mark.parametrize("value", CLUSTER_BAD)
@pytest.mark.parametrize(
    ("command", "field"),
    [
        ("register_cluster", "name"),
        ("add_cluster_environment", "cluster"),
        ("create_workspace", "cluster"),
    ],
)
def test_cluster_names_refused(command: str, field: str, value: str) -> None:
    _refuses(command, field, **{field: value})


@pytest.mark.parametrize("value", ["abc", "a" * 32, "fraud-2"])
def test_workspace_names_accepted(value: str) -> None:
    _accepts("create_workspace", name=value)


@pytest.mark.parametrize("value", ["ab", "a" * 33, "2fraud", "fraud-", "Fraud", "fr_aud"])
def test_workspace_names_refused(value: str) -> None:
    _refuses("create_workspace", "name", name=value)


@pytest.mark.parametrize("value", ["prod-eu:fraud", f"{'c' * 35}:{'w' * 32}", "abc:abc", "a-1:b-2"])
def test_workspace_fqns_accepted(value: str) -> None:
    _accepts("set_workspace_environment", workspace=value)
    _accepts("grant_repo_access", subject=f"workspace:{value}")


@pytest.mark.parametrize(
    "value",
    [
        "fraud",
        "prod-eu:",
        ":fraud",
        "prod-eu:fraud:x",
        "ab:fraud",  # cluster too short
        f"{'c' * 36}:fraud",  # cluster too long
        f"prod-eu:{'w' * 33}",  # workspace too long
        "Prod-eu:fraud",
    ],
)
def test_workspace_fqns_refused(value: str) -> None:
    _refuses("set_workspace_environment", "workspace", workspace=value)
    _refuses("grant_repo_access", "subject", subject=f"workspace:{value}")


ML_REPO_OK = ["abc", "Fraud-Models", "a" * 100, "a1-B2", "aB3"]
ML_REPO_BAD = ["ab", "a" * 101, "1abc", "-abc", "abc-", "fraud_models", "fraud.models"]


@pytest.mark.parametrize("value", ML_REPO_OK)
def test_ml_repo_names_accepted(value: str) -> None:
    _accepts("create_ml_repo", name=value)
    _accepts("grant_repo_access", repo=value)


@pytest.mark.parametrize("value", ML_REPO_BAD)
def test_ml_repo_names_refused(value: str) -> None:
    _refuses("create_ml_repo", "name", name=value)
    _refuses("grant_repo_access", "repo", repo=value)
    _refuses(
        "create_workspace", "ml_repo_access", ml_repo_access=[{"repo": value, "role": "viewer"}]
    )


@pytest.mark.parametrize("value", ["ana@example.com", "a.b+c@sub.example.org", "o'neil@x.io"])
def test_member_emails_accepted(value: str) -> None:
    _accepts("add_team_member", user=value)
    _accepts("create_team", members=[value])


@pytest.mark.parametrize(
    "value", ["ana", "ana@", "@example.com", "ana@ex ample.com", "user:ana@x.io"]
)
def test_member_emails_refused(value: str) -> None:
    _refuses("add_team_member", "user", user=value)
    _refuses("create_team", "members", members=[value])


@pytest.mark.parametrize("value", ["user:ana@example.com", "team:risk", "workspace:prod-eu:fraud"])
def test_subjects_accepted(value: str) -> None:
    _accepts("grant_repo_access", subject=value)
    _accepts("revoke_repo_access", subject=value)


@pytest.mark.parametrize(
    "value",
    [
        "ana@example.com",
        "user:ana",
        "team:Risk",
        "team:",
        "group:risk",
        "service:namespaces",
        "app:prod-eu:fraud:scorer",
        "workspace:prod-eu",
    ],
)
def test_subjects_refused(value: str) -> None:
    _refuses("grant_repo_access", "subject", subject=value)
    _refuses("revoke_repo_access", "subject", subject=value)


@pytest.mark.parametrize("role", ["viewer", "editor", "admin"])
def test_roles_accepted(role: str) -> None:
    _accepts("grant_repo_access", role=role)


@pytest.mark.parametrize("role", ["owner", "Admin", "", "read"])
def test_roles_refused(role: str) -> None:
    _refuses("grant_repo_access", "role", role=role)
    _refuses("create_workspace", "ml_repo_access", ml_repo_access=[{"repo": "abc", "role": role}])


def test_ml_repo_access_names_each_repo_once() -> None:
    _refuses(
        "create_workspace",
        "",
        ml_repo_access=[{"repo": "abc", "role": "viewer"}, {"repo": "abc", "role": "editor"}],
    )


@pytest.mark.parametrize("value", ["eu-west-1", "us", "a" * 64, "1"])
def test_regions_accepted(value: str) -> None:
    _accepts("register_cluster", region=value)
    _accepts("register_storage_integration", region=value)


@pytest.mark.parametrize("value", ["", "EU", "-eu", "eu west", "a" * 65, "eu_west"])
def test_regions_refused(value: str) -> None:
    _refuses("register_cluster", "region", region=value)
    _refuses("register_storage_integration", "region", region=value)


@pytest.mark.parametrize("value", ["#000000", "#aBcDeF", "#123456"])
def test_colors_accepted(value: str) -> None:
    _accepts("create_environment", color=value)


@pytest.mark.parametrize("value", ["000000", "#fff", "#1234567", "#ggg000", "red"])
def test_colors_refused(value: str) -> None:
    _refuses("create_environment", "color", color=value)
    _refuses("update_environment", "color", color=value)


@pytest.mark.parametrize(
    ("field", "value"),
    [("provider", "eks"), ("provider", "AWS-EKS"), ("provider", None)],
)
def test_cluster_provider_is_one_of_four(field: str, value: Any) -> None:
    _refuses("register_cluster", field, **{field: value})


@pytest.mark.parametrize("provider", ["aws-eks", "gcp-gke-standard", "azure-aks", "generic"])
def test_cluster_providers_accepted(provider: str) -> None:
    _accepts("register_cluster", provider=provider)


@pytest.mark.parametrize("value", ["speed", "Cost", ""])
def test_optimize_for_is_cost_or_availability(value: str) -> None:
    _refuses("create_environment", "optimize_for", optimize_for=value)


# --- labels and annotations (Kubernetes rules) --------------------------------------------

LABELS_OK = [
    {},
    {"team": "risk"},
    {"app.kubernetes.io/name": "fraud"},
    {"k": ""},
    {"a" * 63: "v" * 63},
    {f"{'p' * 63}.example.com/name": "x"},
    {"A_b.c-D": "X_y.z-1"},
]
LABELS_BAD = [
    {"": "v"},
    {"a" * 64: "v"},
    {"-team": "v"},
    {"team-": "v"},
    {"te am": "v"},
    {"/name": "v"},
    {"Example.com/name": "v"},
    {"a/b/c": "v"},
    {f"{'p' * 254}/name": "v"},
    {"k": "v" * 64},
    {"k": "-v"},
    {"k": "v w"},
    {"k": "v/w"},
    {f"k{i}": "v" for i in range(65)},
]


@pytest.mark.parametrize("labels", LABELS_OK)
def test_kubernetes_labels_accepted(labels: dict[str, str]) -> None:
    _accepts("register_cluster", labels=labels)
    _accepts("create_workspace", labels=labels)
    _accepts("update_workspace", labels=labels)


@pytest.mark.parametrize("labels", LABELS_BAD)
def test_kubernetes_labels_refused(labels: dict[str, str]) -> None:
    _refuses("register_cluster", "labels", labels=labels)
    _refuses("create_workspace", "labels", labels=labels)
    _refuses("update_workspace", "labels", labels=labels)


def test_annotation_values_are_free_text_within_256_kib() -> None:
    _accepts("create_workspace", annotations={"example.com/doc": "any text: / ! é\n" * 100})
    _accepts("create_workspace", annotations={"k": "x" * (256 * 1024 - 1)})
    _refuses("create_workspace", "annotations", annotations={"k": "x" * (256 * 1024)})
    _refuses(
        "update_workspace",
        "annotations",
        annotations={"a": "x" * (128 * 1024), "b": "x" * (128 * 1024)},
    )


@pytest.mark.parametrize("key", ["", "-k", "a" * 64, "Bad.Prefix/k", "/k", "k k"])
def test_annotation_keys_follow_the_label_key_rules(key: str) -> None:
    _refuses("create_workspace", "annotations", annotations={key: "v"})
    _refuses("update_workspace", "annotations", annotations={key: "v"})


# --- storage roots ------------------------------------------------------------------------

ROOTS = {
    "s3": ["s3://ml-bucket", "s3://ml-bucket/prefix/", "s3://a.b-c/x/y"],
    "gcs": ["gs://ml-eu", "gs://ml_eu.data/p"],
    "azure-blob": ["az://mlstore/container", "az://mlstore"],
    "local": ["file:///srv/ml", "file:///srv/ml/", "file:///srv/ml-v2/a_b.c/x~y+z=1,@2"],
}


@pytest.mark.parametrize(
    ("provider", "root"), [(p, r) for p, roots in ROOTS.items() for r in roots]
)
def test_a_storage_root_with_its_providers_scheme_is_accepted(provider: str, root: str) -> None:
    _accepts("register_storage_integration", provider=provider, storage_root=root)


@pytest.mark.parametrize(
    ("provider", "root"),
    [(p, r) for p in ROOTS for q, roots in ROOTS.items() if q != p for r in roots],
)
def test_a_storage_root_of_another_providers_scheme_is_refused(provider: str, root: str) -> None:
    _refuses("register_storage_integration", "", provider=provider, storage_root=root)


@pytest.mark.parametrize(
    ("provider", "root"),
    [
        ("s3", "s3://Bucket/x"),
        ("s3", "s3://ab"),
        ("s3", "s3:/ml-bucket"),
        ("s3", "s3://ml-bucket/with space"),
        ("local", "file://srv/ml"),
        ("local", "/srv/ml"),
        ("gcs", "gs://-bucket"),
        ("azure-blob", "az://ml_store"),
    ],
)
def test_malformed_storage_roots_are_refused(provider: str, root: str) -> None:
    _refuses("register_storage_integration", "", provider=provider, storage_root=root)


# Roots that are not canonical: each names a place other than it seems to (`..`, `%2e%2e`,
# `.`, `//`), the whole filesystem (`file:///`), or puts every repo of the integration in one
# folder (a query or fragment swallows the `/<repo>/` appended to make a location).
NON_CANONICAL_ROOTS = [
    ("local", "file:///"),
    ("local", "file:////"),
    ("local", "file:///srv/../outside"),
    ("local", "file:///srv/ml/.."),
    ("local", "file:///srv/./ml"),
    ("local", "file:///srv/%2e%2e/outside"),
    ("local", "file:///srv/%2E%2E"),
    ("local", "file:///srv/ml%2Fx"),
    ("local", "file:///srv//ml"),
    ("local", "file:///srv/ml//"),
    ("local", "file:///srv/ml?"),
    ("local", "file:///srv/ml?x=1"),
    ("local", "file:///srv/ml#"),
    ("local", "file:///srv/ml#frag"),
    ("local", "file://localhost/srv/ml"),
    ("local", "file:///srv/ml\\..\\x"),
    ("local", "file:///srv/ml\n"),
    ("local", "file:///srv/ml;x"),
    ("s3", "s3://ml-bucket/../other"),
    ("s3", "s3://ml-bucket/a/%2e%2e/b"),
    ("s3", "s3://ml-bucket/a/./b"),
    ("s3", "s3://ml-bucket/a//b"),
    ("s3", "s3://ml-bucket//"),
    ("s3", "s3://ml-bucket/a?x"),
    ("s3", "s3://ml-bucket?"),
    ("s3", "s3://ml-bucket#x"),
    ("s3", "s3://ml-bucket/a#"),
    ("s3", "s3://ml..bucket/a"),
    ("s3", "s3://ml-bucket/a\n"),
    ("gcs", "gs://ml-eu/./x"),
    ("gcs", "gs://ml-eu/x#y"),
    ("gcs", "gs://ml-eu/%2e%2e"),
    ("azure-blob", "az://mlstore/../x"),
    ("azure-blob", "az://mlstore/c?sv=1"),
]


@pytest.mark.parametrize(("provider", "root"), NON_CANONICAL_ROOTS)
def test_storage_roots_must_be_canonical(provider: str, root: str) -> None:
    _refuses("register_storage_integration", "", provider=provider, storage_root=root)


_ROOT_TEXT = st.text(alphabet="ab./%?#\\~ 2eE-", max_size=24)


@settings(max_examples=400, deadline=None)
@given(path=_ROOT_TEXT)
def test_an_accepted_local_root_is_the_folder_it_reads_as(path: str) -> None:
    """Whatever is accepted names one folder, spelled one way: normalising, unquoting or
    parsing it as a URL changes nothing, and it is not the filesystem's root."""
    root = f"file:///{path}"
    try:
        _accepts("register_storage_integration", provider="local", storage_root=root)
    except ValidationError:
        return
    folder = root.removeprefix("file://").removesuffix("/")
    assert folder != "" and folder != "/"
    assert posixpath.normpath(folder) == folder
    assert unquote(folder) == folder
    parts = urlsplit(root)
    assert (parts.query, parts.fragment, parts.path) == ("", "", root.removeprefix("file://"))


@settings(max_examples=400, deadline=None)
@given(path=_ROOT_TEXT)
def test_an_accepted_s3_root_is_the_prefix_it_reads_as(path: str) -> None:
    root = f"s3://ml-bucket/{path}"
    try:
        _accepts("register_storage_integration", provider="s3", storage_root=root)
    except ValidationError:
        return
    prefix = root.removeprefix("s3://ml-bucket").removesuffix("/")
    assert prefix == "" or posixpath.normpath(prefix) == prefix
    assert unquote(prefix) == prefix
    parts = urlsplit(root)
    assert (parts.netloc, parts.query, parts.fragment) == ("ml-bucket", "", "")


def test_storage_providers_are_the_four_known() -> None:
    _refuses("register_storage_integration", "provider", provider="hdfs", storage_root="s3://ab-c")


# --- strictness ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(VALID_BODIES))
def test_unknown_fields_are_refused_by_every_command(name: str) -> None:
    _refuses(name, "surprise", surprise=1)


CREATIONS = [
    "create_environment",
    "create_ml_repo",
    "create_team",
    "create_workspace",
    "open_access_review",
    "register_cluster",
    "register_storage_integration",
    "request_repo_access",
]


def test_exactly_the_creations_take_no_expected_version() -> None:
    assert sorted(n for n, cls in COMMANDS.items() if not issubclass(cls, ChangeCommand)) == (
        CREATIONS
    )


@pytest.mark.parametrize("name", CREATIONS)
def test_creations_refuse_an_expected_version(name: str) -> None:
    _refuses(name, "expected_version", expected_version=1)


@pytest.mark.parametrize("name", sorted(set(COMMANDS) - set(CREATIONS)))
def test_every_other_command_takes_an_expected_version_from_1(name: str) -> None:
    _accepts(name, expected_version=1)
    _refuses(name, "expected_version", expected_version=0)


@pytest.mark.parametrize(
    ("command", "field", "value"),
    [
        ("create_environment", "is_production", "true"),
        ("create_environment", "is_production", 1),
        ("create_environment", "name", 7),
        ("update_environment", "expected_version", "3"),
        ("update_environment", "expected_version", 3.0),
        ("update_environment", "expected_version", True),
        ("delete_workspace", "force", "yes"),
        ("delete_ml_repo", "delete_storage", 0),
        ("register_cluster", "environments", "dev"),
        ("register_cluster", "environments", ("dev",)),
        ("register_cluster", "labels", [["k", "v"]]),
        ("create_team", "members", "bob@example.com"),
        ("create_workspace", "ml_repo_access", {"repo": "abc", "role": "viewer"}),
        ("grant_repo_access", "reason", 5),
        ("update_ml_repo", "description", None),
    ],
)
def test_wrong_types_are_refused_without_coercion(command: str, field: str, value: Any) -> None:
    _refuses(command, field, **{field: value})


@pytest.mark.parametrize(
    ("command", "field"),
    [
        ("create_environment", "name"),
        ("register_cluster", "environments"),
        ("create_workspace", "environment"),
        ("grant_repo_access", "role"),
        ("update_ml_repo", "description"),
        ("register_storage_integration", "storage_root"),
    ],
)
def test_required_fields_are_required(command: str, field: str) -> None:
    body = {k: v for k, v in VALID_BODIES[command].items() if k != field}
    with pytest.raises(ValidationError) as info:
        COMMANDS[command].model_validate(body)
    assert [(e["loc"], e["type"]) for e in info.value.errors()] == [((field,), "missing")]


def test_lengths_of_free_text_are_bounded() -> None:
    _accepts("grant_repo_access", reason="r" * 1000)
    _refuses("grant_repo_access", "reason", reason="r" * 1001)
    _accepts("create_ml_repo", description="d" * 4000)
    _refuses("create_ml_repo", "description", description="d" * 4001)
    _refuses("record_namespace_failed", "detail", detail="d" * 4001)


@pytest.mark.parametrize("name", sorted(VALID_BODIES))
def test_every_command_is_frozen(name: str) -> None:
    command = COMMANDS[name].model_validate(VALID_BODIES[name])
    field = next(iter(VALID_BODIES[name]))

    with pytest.raises(ValidationError) as info:
        setattr(command, field, VALID_BODIES[name][field])
    assert info.value.errors()[0]["type"] == "frozen_instance"


def test_json_on_the_wire_is_held_to_the_same_strict_types() -> None:
    model = COMMANDS["create_environment"]

    assert model.model_validate_json(b'{"name": "qa", "is_production": true}').is_production
    with pytest.raises(ValidationError):
        model.model_validate_json(b'{"name": "qa", "is_production": "true"}')
    with pytest.raises(ValidationError):
        model.model_validate_json(b'{"name": "qa", "extra": 1}')


@pytest.mark.parametrize("value", ["fraud", "a", "a" * 63])
def test_reported_namespaces_accepted(value: str) -> None:
    _accepts("record_namespace_provisioned", namespace=value)


@pytest.mark.parametrize("value", ["", "a" * 64, "Fraud", "fraud-", "fr_aud"])
def test_reported_namespaces_refused(value: str) -> None:
    _refuses("record_namespace_provisioned", "namespace", namespace=value)


def test_a_reported_location_is_not_empty() -> None:
    _refuses("record_storage_provisioned", "location", location="")
