"""The entry point the composition root wires: `run_worker("namespaces" | "storage", …)`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from nats.aio.client import Client

from workers.config import BackendConfig
from workers.namespaces import NamespaceBackend, NamespaceProvisioner
from workers.runtime import Provisioner, WorkerRuntime
from workers.storage import StorageBackend, StorageProvisioner

WORKER_KINDS = ("namespaces", "storage")


def namespace_backend(config: BackendConfig) -> NamespaceBackend:
    if config.namespace_backend == "kubernetes":
        # Imported only when chosen: the laptop default needs no Kubernetes client loaded.
        from workers.kube import KubernetesBackend

        return KubernetesBackend(config.kubeconfig, config.kube_field_manager)
    from workers.gitops import GitOpsBackend

    return GitOpsBackend(config.gitops_root, init=config.gitops_init)


def storage_backends(config: BackendConfig) -> dict[str, StorageBackend]:
    from workers.local_storage import LocalStorageBackend

    backends: dict[str, StorageBackend] = {"file": LocalStorageBackend()}
    if config.storage_backend == "s3":
        from workers.s3_storage import S3StorageBackend

        backends["s3"] = S3StorageBackend(
            endpoint_url=config.s3_endpoint_url,
            region=config.s3_region,
            access_key_id=config.s3_access_key_id,
            secret_access_key=config.s3_secret_access_key,
            principal_account=config.s3_principal_account,
        )
    return backends


def build_provisioner(kind: str, config: BackendConfig) -> Provisioner:
    if kind == "namespaces":
        return NamespaceProvisioner(namespace_backend(config))
    if kind == "storage":
        return StorageProvisioner(storage_backends(config))
    raise ValueError(f"unknown worker {kind!r}: one of {', '.join(WORKER_KINDS)}")


async def run_worker(
    kind: str,
    nc: Client,
    stop: asyncio.Event,
    *,
    backend_config: BackendConfig,
    on_outcome: Callable[[str], None] | None = None,
) -> None:
    """Run the `kind` worker on `nc` until `stop` is set.

    Its pull subscriptions are unsubscribed before this returns, so the caller can drain the
    connection right after."""
    provisioner = build_provisioner(kind, backend_config)
    await WorkerRuntime(nc, provisioner, backend_config, on_outcome).run(stop)
