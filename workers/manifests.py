"""The Namespace and ServiceAccount of a workspace, as Kubernetes objects (plain dicts).

Label values can't hold ':' and are at most 63 characters, so the `tenantry.io/workspace-fqn`
label is `<cluster>.<name>` (shortened with a hash suffix in the rare case it is longer than
63), and the exact FQN is in the annotation of the same key."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

FQN_KEY = "tenantry.io/workspace-fqn"
ENVIRONMENT_KEY = "tenantry.io/environment"
PRODUCTION_KEY = "tenantry.io/production"
OPTIMIZE_FOR_KEY = "tenantry.io/optimize-for"
SUBJECT_KEY = "tenantry.io/subject"
MANAGED_BY = {"app.kubernetes.io/managed-by": "tenantry"}
# The workspace's own identity for repo grants (`workspace:<cluster>:<name>`) in its namespace.
SERVICE_ACCOUNT = "tenantry-workspace"
_MAX_LABEL_VALUE = 63


def fqn_label(cluster: str, name: str) -> str:
    value = f"{cluster}.{name}"
    if len(value) <= _MAX_LABEL_VALUE:
        return value
    digest = hashlib.sha256(f"{cluster}:{name}".encode()).hexdigest()[:8]
    return f"{value[:54].rstrip('.-')}-{digest}"


@dataclass(frozen=True)
class NamespaceSpec:
    """Everything the namespace of one workspace must look like."""

    cluster: str
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)

    @property
    def fqn(self) -> str:
        return f"{self.cluster}:{self.name}"

    def namespace(self) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": self.name,
                "labels": dict(sorted(self.labels.items())),
                "annotations": dict(sorted(self.annotations.items())),
            },
        }

    def service_account(self) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {
                "name": SERVICE_ACCOUNT,
                "namespace": self.name,
                "labels": {FQN_KEY: self.labels[FQN_KEY], **MANAGED_BY},
                "annotations": {FQN_KEY: self.fqn, SUBJECT_KEY: f"workspace:{self.fqn}"},
            },
        }


def namespace_spec(
    cluster: str,
    name: str,
    *,
    environment: str,
    is_production: bool,
    optimize_for: str,
    labels: Mapping[str, str],
    annotations: Mapping[str, str],
) -> NamespaceSpec:
    """The workspace's own labels and annotations, with Tenantry's keys winning a clash."""
    ours = {
        FQN_KEY: fqn_label(cluster, name),
        ENVIRONMENT_KEY: environment,
        PRODUCTION_KEY: "true" if is_production else "false",
        OPTIMIZE_FOR_KEY: optimize_for,
        **MANAGED_BY,
    }
    return NamespaceSpec(
        cluster,
        name,
        labels={**labels, **ours},
        annotations={**annotations, FQN_KEY: f"{cluster}:{name}"},
    )
