"""Namespace provisioner: each workspace's namespace, labels and ServiceAccount follow its
events, and those of the environment it is tagged with.

Acts on workspace creation, recreation, retagging, label or annotation change and deletion,
and on an environment's `is_production` / `optimize_for` change (every workspace tagged with
it is relabelled, in one change). Reports `record_namespace_provisioned` / `_failed` /
`_deleted` as `service:namespaces`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from workers.errors import PermanentError
from workers.events import Event, Report, Result
from workers.manifests import NamespaceSpec, namespace_spec
from workers.runtime import attempt, subjects

log = structlog.get_logger("workers.namespaces")

NAME = "namespaces"
_WORKSPACE_CHANGES = (
    "workspace.created",
    "workspace.recreated",
    "workspace.environment_set",
    "workspace.updated",
)
_DELETION = "workspace.deletion_requested"
_ENVIRONMENT_UPDATED = "environment.updated"


class NamespaceBackend(Protocol):
    async def ensure(self, specs: Sequence[NamespaceSpec], event: Event) -> str: ...

    async def remove(self, cluster: str, name: str, event: Event) -> str: ...

    async def close(self) -> None: ...


@dataclass
class EnvironmentView:
    name: str
    is_production: bool
    optimize_for: str
    # The stream sequence of the last event that changed what the labels show.
    labels_changed_at: int


@dataclass
class WorkspaceView:
    cluster: str
    name: str
    environment: str
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    live: bool = True

    @property
    def fqn(self) -> str:
        return f"{self.cluster}:{self.name}"


class NamespaceView:
    """Environments and workspaces as the events read so far left them."""

    def __init__(self) -> None:
        self.environments: dict[str, EnvironmentView] = {}
        self.workspaces: dict[str, WorkspaceView] = {}

    def fold(self, seq: int, body: dict[str, Any]) -> None:
        type_, fqn, data = body.get("type"), str(body.get("fqn")), body.get("data") or {}
        if type_ in ("environment.created", "environment.recreated", "environment.updated"):
            env = self.environments.get(fqn)
            shown = (bool(data["is_production"]), str(data["optimize_for"]))
            if env is None or type_ != "environment.updated":
                self.environments[fqn] = EnvironmentView(fqn, *shown, labels_changed_at=seq)
            elif (env.is_production, env.optimize_for) != shown:
                env.is_production, env.optimize_for = shown
                env.labels_changed_at = seq
        elif type_ == "environment.deleted":
            self.environments.pop(fqn, None)
        elif type_ in ("workspace.created", "workspace.recreated"):
            cluster, _, name = fqn.partition(":")
            self.workspaces[fqn] = WorkspaceView(
                cluster,
                name,
                str(data["environment"]),
                dict(data.get("labels") or {}),
                dict(data.get("annotations") or {}),
            )
        elif (ws := self.workspaces.get(fqn)) is not None:
            if type_ == "workspace.environment_set":
                ws.environment = str(data["environment"])
            elif type_ == "workspace.updated":
                ws.labels = dict(data.get("labels") or {})
                ws.annotations = dict(data.get("annotations") or {})
            elif type_ == _DELETION:
                ws.live = False

    def spec(self, ws: WorkspaceView) -> NamespaceSpec:
        env = self.environments.get(ws.environment)
        if env is None:
            raise PermanentError(f"environment {ws.environment!r} of {ws.fqn} is not known")
        return namespace_spec(
            ws.cluster,
            ws.name,
            environment=env.name,
            is_production=env.is_production,
            optimize_for=env.optimize_for,
            labels=ws.labels,
            annotations=ws.annotations,
        )


class NamespaceProvisioner:
    name = NAME
    action_subjects = subjects(*_WORKSPACE_CHANGES, _DELETION, _ENVIRONMENT_UPDATED)
    state_subjects = subjects(
        *_WORKSPACE_CHANGES,
        _DELETION,
        "environment.created",
        "environment.recreated",
        "environment.updated",
        "environment.deleted",
    )

    def __init__(self, backend: NamespaceBackend) -> None:
        self._backend = backend
        self.view = NamespaceView()

    def fold(self, seq: int, body: dict[str, Any]) -> None:
        self.view.fold(seq, body)

    async def close(self) -> None:
        await self._backend.close()

    async def act(self, event: Event, *, last_attempt: bool) -> Result:
        """Bring the namespaces the event is about to their latest state."""
        if event.type == _ENVIRONMENT_UPDATED:
            env = self.view.environments.get(event.fqn)
            if env is None or env.labels_changed_at != event.seq:
                # Only its colour changed (or a later event changed the labels again, and
                # that event will relabel): nothing the namespaces show.
                return Result()
            tagged = [
                ws for ws in self.view.workspaces.values() if ws.live and ws.environment == env.name
            ]
            return await self._ensure(event, sorted(tagged, key=lambda w: w.fqn), last_attempt)
        ws = self.view.workspaces.get(event.fqn)
        if ws is None:
            log.warning("namespaces.unknown_workspace", fqn=event.fqn, seq=event.seq)
            return Result()
        if ws.live:
            return await self._ensure(event, [ws], last_attempt)
        outcome = await attempt(
            self._backend.remove(ws.cluster, ws.name, event), last_attempt=last_attempt
        )
        if not outcome.ok:
            # The domain records no failure once deletion was asked for: the log says it.
            return Result(failure=outcome.detail)
        return Result([self._report(event, "record_namespace_deleted", ws, outcome.detail)])

    async def _ensure(
        self, event: Event, workspaces: list[WorkspaceView], last_attempt: bool
    ) -> Result:
        if not workspaces:
            return Result()

        async def ensure() -> str:
            specs = [self.view.spec(ws) for ws in workspaces]
            return await self._backend.ensure(specs, event)

        outcome = await attempt(ensure(), last_attempt=last_attempt)
        command = "record_namespace_provisioned" if outcome.ok else "record_namespace_failed"
        reports = [self._report(event, command, ws, outcome.detail) for ws in workspaces]
        return Result(reports, failure=None if outcome.ok else outcome.detail)

    @staticmethod
    def _report(event: Event, command: str, ws: WorkspaceView, detail: str) -> Report:
        return Report.of(
            NAME, event, command, ws.fqn, workspace=ws.fqn, namespace=ws.name, detail=detail
        )
