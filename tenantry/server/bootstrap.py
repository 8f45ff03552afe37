"""The composition root: everything is wired here, with production defaults tests replace."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import fcntl
import gc
import os
import signal
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import IO, Any, TypeVar

import nats
import structlog
from cryptography.hazmat.primitives import serialization
from nats.aio.client import Client

from domain.authorization import Authorization
from domain.service import TenancyService
from projections.store import ViewStore
from tenantry.audit.checkpoint import generate_key_pair, key_id, load_private_key
from tenantry.audit.checkpoints import Cadence, Checkpointer
from tenantry.inboxes import inbox_options
from tenantry.log.recent import RecentCommits
from tenantry.log.relay import Relay
from tenantry.server.command_endpoint import CommandEndpoint
from tenantry.server.discovery import Discovery
from tenantry.server.identity import ActorPolicy, refuse_untrusted_headers
from tenantry.server.metrics import Metrics, sample_lag
from tenantry.server.nats_server import NatsServer
from tenantry.server.query_endpoint import serve_views
from tenantry.server.store import creating_tables, event_store_env, view_store_url
from tenantry.server.wakeups import FollowedLog, listen_postgres
from tenantry.settings import Settings
from workers import WORKER_KINDS, BackendConfig, run_worker

log = structlog.get_logger("tenantry")


def build_service(settings: Settings, *, seed: bool = True) -> TenancyService:
    """The command-handling application on the configured event store (seeded once)."""
    env = {**event_store_env(settings), **settings.extra}
    # Its tables are created here if missing: one process at a time (roles start together).
    with creating_tables(settings):
        service = TenancyService(env, authorization=Authorization(admins=settings.admins))
    if seed and service.seed_default_environments():
        log.info("store.seeded", environments=["dev", "staging", "prod"])
    return service


async def connect(
    url: str, name: str, user: str | None = None, password: str | None = None
) -> Client:
    shown = _without_credentials(url)

    async def _disconnected() -> None:
        log.warning("nats.disconnected", url=shown)

    async def _reconnected() -> None:
        log.info("nats.reconnected", url=shown)

    async def _error(exc: Exception) -> None:
        log.warning("nats.error", error=str(exc))

    return await nats.connect(
        url.split(","),
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        disconnected_cb=_disconnected,
        reconnected_cb=_reconnected,
        error_cb=_error,
        user=user,
        password=password,
        **inbox_options(url, user),
    )


def _without_credentials(url: str) -> str:
    """The bus URL(s) fit for a log line: `nats://user:password@host` loses its user and
    password (nats-py takes them from the URL, so operators do put them there)."""
    shown = []
    for part in url.split(","):
        scheme, separator, rest = part.strip().rpartition("://")
        authority, slash, path = rest.partition("/")
        shown.append(f"{scheme}{separator}{authority.rpartition('@')[2]}{slash}{path}")
    return ",".join(shown)


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
    await endpoint.start()
    await discovery.start()
    try:
        await stop.wait()
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
    recent = RecentCommits()
    wakeup = followed.woken_on_save(recent)
    relay = Relay(
        followed.recorder,
        nc,
        replicas=settings.stream_replicas,
        poll_interval=settings.poll_interval,
        wakeup=wakeup,
        recent=recent,
        metrics=metrics,
    )
    store_env = event_store_env(settings)
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(listen_postgres(followed.recorder, store_env, [wakeup], stop))
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
    wakeup = followed.woken_on_save()
    store = await asyncio.to_thread(open_view_store, settings)
    try:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(
                listen_postgres(followed.recorder, event_store_env(settings), [wakeup], stop)
            )
            await serve_views(
                followed.recorder,
                store,
                nc,
                stop,
                wakeup,
                poll_interval=settings.poll_interval,
                metrics=metrics,
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
    wakeup = followed.woken_on_save()
    checkpointer = Checkpointer(
        followed.recorder,
        nc,
        load_private_key(settings.signing_key),
        cadence=Cadence(settings.checkpoint_events, settings.checkpoint_seconds),
        replicas=settings.stream_replicas,
        poll_interval=settings.poll_interval,
        wakeup=wakeup,
    )
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(
            listen_postgres(followed.recorder, event_store_env(settings), [wakeup], stop)
        )
        await checkpointer.run(stop)


def with_signing_key(settings: Settings) -> Settings:
    """`tenantry up` without TENANTRY_SIGNING_KEY: the key in its state directory, made once;
    its public key is said at every start (auditors verify checkpoints with it)."""
    if settings.signing_key is not None:
        return settings
    path = settings.default_signing_key
    if not path.exists():
        generate_key_pair(path)
    public = load_private_key(path).public_key()
    log.info(
        "checkpoint.signing_key",
        private_key=str(path),
        public_key=str(path.with_name(path.name + ".pub")),
        key_id=key_id(public),
        public_key_raw=base64.b64encode(
            public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        ).decode(),
    )
    return dataclasses.replace(settings, signing_key=path)


# A role as `serve` starts it: given the command application when a role of this process uses
# the event store (`_STORE_ROLES`), else None. Each role is typed by what it needs (the command
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


def _followed(service: TenancyService) -> FollowedLog:
    """The recorder and the saves of the command application the process's roles share."""
    return FollowedLog(service.recorder, service.listeners)


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
_STORE_ROLES = {"command", "relay", "projections", "checkpoints"}


Ready = Callable[[], Awaitable[None]]


async def serve(
    settings: Settings,
    stop: asyncio.Event,
    nats_url: str,
    roles: list[str],
    on_ready: Ready | None = None,
) -> None:
    """Run `roles` over one store and one bus connection until `stop`, then drain and close.
    `on_ready` is awaited once the command service and the queries answer on the bus."""
    metrics = Metrics()
    metrics.serve(settings.metrics_port, settings.metrics_host)
    service = (
        await asyncio.to_thread(build_service, settings, seed="command" in roles)
        if _STORE_ROLES & set(roles)
        else None
    )
    nc = await connect(
        nats_url, "tenantry-" + "+".join(roles), settings.nats_user, settings.nats_password
    )
    try:
        if "command" in roles:
            # What the server told this connection of where it listens (nats-py keeps the
            # INFO only privately).
            refuse_untrusted_headers(settings.auth, settings.admins, nc._server_info)
        async with asyncio.TaskGroup() as tasks:
            for role in roles:
                tasks.create_task(ROLES[role](service, nc, settings, stop, metrics))
            if on_ready is not None:
                tasks.create_task(_when_answering(nc, stop, on_ready))
    finally:
        await close_connection(nc)
        if service is not None:
            service.close()


async def close_connection(nc: Client, within: float = 10.0) -> None:
    """Drain `nc` if the bus is there (bounded), else just close it: a SIGTERM while the bus
    is unreachable must still end the process, and end it cleanly."""
    if nc.is_connected:
        try:
            async with asyncio.timeout(within):
                await nc.drain()
            return
        except Exception as exc:
            log.warning("nats.drain_failed", error=f"{type(exc).__name__}: {exc}")
    try:
        await nc.close()
    except Exception as exc:  # nats-py flushes what it still holds, into a dead socket
        log.warning("nats.close_failed", error=f"{type(exc).__name__}: {exc}")


async def _when_answering(nc: Client, stop: asyncio.Event, on_ready: Ready) -> None:
    """Await `on_ready` once the command and query services answer on the bus: each answers
    micro-service discovery only after its endpoint subscribed (a ping, so that no product
    metric counts the probe)."""
    for service in ("tenantry-command", "tenantry-query"):
        while not stop.is_set():
            try:
                await nc.request(f"$SRV.PING.{service}", b"", timeout=1)
                break
            except Exception:  # not answering yet (no responders, a timeout)
                await asyncio.sleep(0.05)
    if not stop.is_set():
        await on_ready()


class AlreadyRunning(RuntimeError):
    """Another `tenantry up` holds this state folder."""


def _lock_state_dir(settings: Settings) -> IO[str]:
    """Hold the state folder's lock (released by the kernel whenever this process ends, even
    killed), or raise `AlreadyRunning` naming the holder's pid and URL."""
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    lock = settings.up_lock_file.open("a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        pid, _, url = lock.read().strip().partition(" ")
        lock.close()
        raise AlreadyRunning(
            f"tenantry up is already running here: pid {pid or '?'}, {url or 'starting'}"
            f" (state folder {settings.state_dir})"
        ) from None
    _say_in_lock(lock, "")
    return lock


def _say_in_lock(lock: IO[str], url: str) -> None:
    lock.seek(0)
    lock.truncate()
    lock.write(f"{os.getpid()} {url}".strip() + "\n")
    lock.flush()


def start_embedded_nats(settings: Settings) -> NatsServer:
    server = NatsServer(settings.state_dir / "nats", port=settings.nats_port).start()
    log.info("nats.started", url=server.url, store_dir=str(server.store_dir))
    return server


async def up(settings: Settings, stop: asyncio.Event) -> None:
    """Everything in one process: nats-server (unless TENANTRY_NATS_URL is set) and every role.

    One per state folder (a lock); `nats.url` is written once commands and queries answer, and
    removed on the way out only if it is still the one this process wrote."""
    lock = _lock_state_dir(settings)
    server = None
    written: str | None = None
    try:
        settings = with_signing_key(settings)
        nats_url = settings.nats_url
        if nats_url is None:
            # Started from the main thread on purpose: the server is tied to the life of the
            # thread that started it (see NatsServer), and worker threads come and go.
            server = start_embedded_nats(settings)
            nats_url = server.url
        _say_in_lock(lock, _without_credentials(nats_url))

        async def ready() -> None:
            nonlocal written
            written = f"{nats_url}\n"
            settings.nats_url_file.write_text(written)
            print(banner(settings, nats_url), flush=True)

        await serve(settings, stop, nats_url, list(ROLES), on_ready=ready)
    finally:
        if server is not None:
            await asyncio.to_thread(server.stop)
        if written is not None and _read(settings.nats_url_file) == written:
            settings.nats_url_file.unlink(missing_ok=True)
        lock.close()


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def banner(settings: Settings, nats_url: str) -> str:
    """What `tenantry up` prints once it answers: where everything is, and what to type next."""
    port = settings.metrics_port
    metrics = f"http://{settings.metrics_host}:{port}/metrics" if port else "off"
    if settings.admins is None:
        authorization = "off (TENANTRY_ADMINS is unset: every actor may do anything)"
    else:
        authorization = f"on (admins: {', '.join(sorted(settings.admins))})"
    here = Path.cwd() / ".tenantry"
    finds_it = settings.nats_url is None and settings.state_dir.resolve() == here.resolve()
    prefix = "" if finds_it else f"TENANTRY_NATS_URL={_without_credentials(nats_url)} "
    return "\n".join(
        [
            f"Tenantry is up (pid {os.getpid()}).",
            f"  bus:           {_without_credentials(nats_url)}",
            f"  metrics:       {metrics}",
            f"  state folder:  {settings.state_dir.resolve()}",
            f"  authorization: {authorization}",
            f"Next, in another terminal in this folder: {prefix}tenantry get environments",
        ]
    )


# Young objects collected every 50,000 allocations instead of 700: the relay and the views make
# several containers per event that live for a whole batch, and at CPython's default they are
# traversed over and over (15-20 % of a rebuild's time, measured in bench/projection_rebuild).
GC_THRESHOLDS = (50_000, 10, 10)


def tune_process() -> None:
    """Process settings of a long-running Tenantry process (also applied by `bench`)."""
    gc.set_threshold(*GC_THRESHOLDS)


def run_until_signalled(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run `main(stop)` with SIGTERM and SIGINT setting `stop` for a clean drain."""
    tune_process()

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    asyncio.run(runner())
