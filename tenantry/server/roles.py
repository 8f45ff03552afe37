"""The roles `tenantry serve <role>` runs, each wired from settings (part of the composition
root, `tenantry.server.bootstrap`, which starts them over one store and one bus connection)."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import structlog
from nats.aio.client import Client

from domain.authorization import Authorization
from domain.service import TenancyService
from projections.store import ViewStore
from tenantry.audit.checkpoint import load_private_key
from tenantry.audit.checkpoints import Cadence, Checkpointer
from tenantry.log.relay import Relay
from tenantry.server.command_endpoint import CommandEndpoint
from tenantry.server.discovery import Discovery
from tenantry.server.identity import ActorPolicy
from tenantry.server.metrics import Metrics, sample_lag
from tenantry.server.query_endpoint import serve_views
from tenantry.server.scheduler import Scheduler
from tenantry.server.store import creating_tables, event_store_env, view_store_url
from tenantry.server.wakeups import FollowedLog
from tenantry.settings import Settings
from workers import WORKER_KINDS, BackendConfig, run_worker

log = structlog.get_logger("tenantry")


async def command_role(
    service: TenancyService,
    nc: Client,
    settings: Settings,
    stop: asyncio.Event,
    metrics: Metrics,
) -> None:
    if settings.admins is None:
        log.warning(
            "authorization.off", reason="TENANTRY_ADMINS is unset: every actor may do anything"
        )
    if settings.auth == "header":
        # With admins set, `serve` has checked the bus is loopback only (or refused to start).
        log.warning(
            "authentication.off",
            reason="TENANTRY_AUTH=header: the Tenantry-Actor header is believed as sent"
            + (
                "; TENANTRY_ADMINS holds only because the bus listens on loopback only: "
                "any local process may claim to be an admin"
                if settings.admins is not None
                else ""
            ),
        )
    endpoint = CommandEndpoint(
        nc,
        service,
        settings.queue_group,
        settings.max_in_flight,
        metrics=metrics,
        actors=ActorPolicy(settings.auth, settings.client_account),
    )
    discovery = Discovery(nc, "tenantry-command", "Tenantry commands", [endpoint.counters])
    # Due work (expired grants, …), sent through this endpoint's writer: every command service
    # runs one, exactly once coming from the command ids (tenantry.server.scheduler).
    scheduler = Scheduler(service.recorder, endpoint.submit, service.clock)
    await endpoint.start()
    await discovery.start()
    try:
        await scheduler.run(stop, settings.expiry_interval)
    finally:
        await discovery.stop()
        await endpoint.stop()


async def relay_role(
    followed: FollowedLog,
    nc: Client,
    settings: Settings,
    stop: asyncio.Event,
    metrics: Metrics,
) -> None:
    woken = followed.wakeups(event_store_env(settings), take_rows=True, relaying=True)
    relay = Relay(
        followed.recorder,
        nc,
        replicas=settings.stream_replicas,
        poll_interval=settings.poll_interval,
        wakeup=woken.event,
        recent=woken.recent,
        metrics=metrics,
        stream=followed.stream,
    )
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(woken.listen(stop))
        tasks.create_task(
            sample_lag(
                metrics.relay_lag,
                followed.recorder.max_notification_id,
                lambda: relay.position,
                stop,
            )
        )
        await relay.run(stop)


async def projections_role(
    followed: FollowedLog,
    nc: Client,
    settings: Settings,
    stop: asyncio.Event,
    metrics: Metrics,
) -> None:
    """The read models, fed from the event store, and the queries on tenantry.query.*."""
    woken = followed.wakeups(event_store_env(settings), take_rows=True)
    assert woken.recent is not None
    store = await asyncio.to_thread(open_view_store, settings)
    try:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(woken.listen(stop))
            await serve_views(
                followed.recorder,
                store,
                nc,
                stop,
                woken.event,
                poll_interval=settings.poll_interval,
                metrics=metrics,
                take_rows=woken.recent.take,
                after=followed.stream,
                authorization=Authorization(admins=settings.admins),
            )
    finally:
        store.close()


def open_view_store(settings: Settings) -> ViewStore:
    """The read models' store, its tables created if missing."""
    store = ViewStore.from_url(view_store_url(settings))
    try:
        with creating_tables(settings):
            store.create_tables()
    except BaseException:
        store.close()
        raise
    return store


async def checkpoints_role(
    followed: FollowedLog,
    nc: Client,
    settings: Settings,
    stop: asyncio.Event,
    metrics: Metrics,
) -> None:
    """Signed checkpoints of the log on TENANTRY_CHECKPOINTS, and the Merkle proof queries."""
    if settings.signing_key is None:
        raise RuntimeError("the checkpoints role needs TENANTRY_SIGNING_KEY (an Ed25519 key)")
    woken = followed.wakeups(event_store_env(settings))
    checkpointer = Checkpointer(
        followed.recorder,
        nc,
        load_private_key(settings.signing_key),
        cadence=Cadence(settings.checkpoint_events, settings.checkpoint_seconds),
        replicas=settings.stream_replicas,
        poll_interval=settings.poll_interval,
        wakeup=woken.event,
    )
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(woken.listen(stop))
        await checkpointer.run(stop)


# A role as `serve` starts it: given the command application when a role of this process uses
# the event store (`STORE_ROLES`), else None. Each role is typed by what it needs (the command
# role the application, the log's followers a `FollowedLog`), and adapted by `_given`.
Role = Callable[
    [TenancyService | None, Client, Settings, asyncio.Event, Metrics], Coroutine[Any, Any, None]
]
Needs = TypeVar("Needs")


def _given(
    needs: Callable[[TenancyService], Needs],
    role: Callable[[Needs, Client, Settings, asyncio.Event, Metrics], Coroutine[Any, Any, None]],
) -> Role:
    async def run(
        service: TenancyService | None,
        nc: Client,
        settings: Settings,
        stop: asyncio.Event,
        metrics: Metrics,
    ) -> None:
        if service is None:
            raise RuntimeError("this role needs the event store, which serve() did not open")
        await role(needs(service), nc, settings, stop, metrics)

    return run


_FOLLOWED: weakref.WeakKeyDictionary[TenancyService, FollowedLog] = weakref.WeakKeyDictionary()


def _followed(service: TenancyService) -> FollowedLog:
    """The recorder and the saves of the command application the process's roles share, one
    for all its roles (the relay tells the views through it how far it has published)."""
    followed = _FOLLOWED.get(service)
    if followed is None:
        followed = _FOLLOWED[service] = FollowedLog(service.recorder, service.listeners)
    return followed


def _itself(service: TenancyService) -> TenancyService:
    return service


def backend_config(settings: Settings) -> BackendConfig:
    """The workers' backends: under the state directory unless settings say otherwise."""
    base = BackendConfig.under(settings.state_dir)
    return base.replace(
        namespace_backend=settings.namespace_backend,
        gitops_root=settings.gitops_root or base.gitops_root,
        gitops_init=settings.gitops_root is None,
        kubeconfig=settings.kubeconfig,
        storage_backend=settings.storage_backend,
        s3_endpoint_url=settings.s3_endpoint_url,
        s3_region=settings.s3_region,
        s3_access_key_id=settings.s3_access_key_id,
        s3_secret_access_key=settings.s3_secret_access_key,
        s3_principal_account=settings.s3_principal_account,
    )


def _worker_role(kind: str) -> Role:
    async def role(
        service: TenancyService | None,
        nc: Client,
        settings: Settings,
        stop: asyncio.Event,
        metrics: Metrics,
    ) -> None:
        outcomes = metrics.worker_outcomes
        await run_worker(
            kind,
            nc,
            stop,
            backend_config=backend_config(settings),
            on_outcome=lambda outcome: outcomes.labels(kind, outcome).inc(),
        )

    return role


ROLES: dict[str, Role] = {
    "command": _given(_itself, command_role),
    "relay": _given(_followed, relay_role),
    "projections": _given(_followed, projections_role),
    "checkpoints": _given(_followed, checkpoints_role),
    **{f"worker {kind}": _worker_role(kind) for kind in WORKER_KINDS},
}
# The roles that work on the event store (workers only talk to the bus).
STORE_ROLES = {"command", "relay", "projections", "checkpoints"}
