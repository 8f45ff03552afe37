"""Kubernetes namespace backend: server-side apply of the Namespace and its ServiceAccount
through lightkube, one kubeconfig context per cluster (the context is named after the cluster).

Kept thin on purpose: the objects are the same dicts the GitOps backend writes, applied with a
fixed field manager and `force` (Tenantry owns these fields), so applying twice is a no-op."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import httpx2
from lightkube import AsyncClient, codecs
from lightkube.config.kubeconfig import KubeConfig
from lightkube.core.exceptions import ApiError, ConfigError
from lightkube.resources.core_v1 import Namespace

from workers.errors import PermanentError, TransientError
from workers.events import Event
from workers.manifests import NamespaceSpec

_TRANSIENT_STATUS = frozenset({409, 429})


class KubernetesBackend:
    def __init__(self, kubeconfig: Path | None, field_manager: str = "tenantry") -> None:
        self._kubeconfig = kubeconfig
        self._field_manager = field_manager
        self._clients: dict[str, AsyncClient] = {}

    def _client(self, cluster: str) -> AsyncClient:
        client = self._clients.get(cluster)
        if client is None:
            try:
                config = (
                    KubeConfig.from_file(self._kubeconfig)
                    if self._kubeconfig
                    else KubeConfig.from_env()
                )
                context = config.get(context_name=cluster)
            except (ConfigError, OSError) as exc:
                raise PermanentError(
                    f"no kubeconfig context for cluster {cluster!r}: {exc}"
                ) from exc
            client = AsyncClient(config=context, field_manager=self._field_manager)
            self._clients[cluster] = client
        return client

    async def ensure(self, specs: Sequence[NamespaceSpec], event: Event) -> str:
        for spec in specs:
            client = self._client(spec.cluster)
            for document in (spec.namespace(), spec.service_account()):
                with _translated():
                    await client.apply(codecs.from_dict(document), force=True)
        return "kubernetes: " + ", ".join(f"{s.cluster}/{s.name}" for s in specs)

    async def remove(self, cluster: str, name: str, event: Event) -> str:
        client = self._client(cluster)
        try:
            with _translated():
                await client.delete(Namespace, name)
        except PermanentError as exc:
            if not isinstance(exc.__cause__, ApiError) or exc.__cause__.status.code != 404:
                raise
        return f"kubernetes: {cluster}/{name} removed"

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()


class _translated:
    """API errors as permanent (4xx) or transient (5xx, 409, 429, the network)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, ApiError):
            code = exc.status.code or 0
            message = f"Kubernetes API {code}: {exc.status.message}"
            if code >= 500 or code in _TRANSIENT_STATUS:
                raise TransientError(message) from exc
            raise PermanentError(message) from exc
        if isinstance(exc, httpx2.TransportError):
            raise TransientError(f"Kubernetes API unreachable: {exc!r}") from exc
