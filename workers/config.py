"""What the provisioning workers need to know about the outside world they act on."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NAMESPACE_BACKENDS = ("gitops", "kubernetes")
STORAGE_BACKENDS = ("local", "s3")


@dataclass(frozen=True)
class BackendConfig:
    """Backends of both workers and the tuning of their durable consumers.

    `file://` locations are always served by the local storage backend (a folder needs no
    settings); `s3://` locations need `storage_backend="s3"` and, for anything but AWS itself,
    an endpoint and credentials."""

    namespace_backend: str = "gitops"
    gitops_root: Path = Path(".tenantry/gitops")
    # `git init` the GitOps root when it is not inside a git repository yet (`tenantry up`),
    # so that every namespace change is a commit; off, a plain folder is written as it is.
    gitops_init: bool = False
    # None: lightkube's default ($KUBECONFIG, then ~/.kube/config). One context per cluster,
    # named after the cluster.
    kubeconfig: Path | None = None
    kube_field_manager: str = "tenantry"
    storage_backend: str = "local"
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None
    # The AWS account whose IAM roles and users stand for Tenantry subjects in bucket policies.
    s3_principal_account: str = "000000000000"
    # Redelivery: a crashed worker's message comes back after `ack_wait`; a transient failure
    # is retried after backoff[n] seconds, and the `max_deliver`-th failure is recorded as
    # failed (the message is then terminated, never retried forever).
    ack_wait: float = 30.0
    max_deliver: int = 6
    backoff: tuple[float, ...] = (1.0, 5.0, 15.0, 30.0, 60.0)

    def __post_init__(self) -> None:
        if self.namespace_backend not in NAMESPACE_BACKENDS:
            raise ValueError(f"namespace_backend must be one of {NAMESPACE_BACKENDS}")
        if self.storage_backend not in STORAGE_BACKENDS:
            raise ValueError(f"storage_backend must be one of {STORAGE_BACKENDS}")
        if self.max_deliver < 1 or not self.backoff or self.ack_wait <= 0:
            raise ValueError("max_deliver >= 1, a non-empty backoff and ack_wait > 0 are needed")

    @classmethod
    def under(cls, state_dir: Path, **changes: Any) -> BackendConfig:
        """The laptop defaults: manifests committed in `<state_dir>/gitops`, local storage."""
        return cls(gitops_root=state_dir / "gitops", gitops_init=True, **changes)

    def replace(self, **changes: Any) -> BackendConfig:
        return dataclasses.replace(self, **changes)

    def retry_delay(self, attempt: int) -> float:
        """Seconds to wait before delivery `attempt + 1` after the `attempt`-th failed."""
        return self.backoff[min(attempt, len(self.backoff)) - 1]
