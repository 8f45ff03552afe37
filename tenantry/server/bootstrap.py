"""The composition root: everything is wired here, with production defaults tests replace; the
roles it starts are wired in `tenantry.server.roles`."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import fcntl
import gc
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import IO

import nats
import structlog
from cryptography.hazmat.primitives import serialization
from nats.aio.client import Client

from domain.access_request import Governance
from domain.authorization import Authorization
from domain.service import TenancyService
from tenantry.audit.checkpoint import generate_key_pair, key_id, load_private_key
from tenantry.inboxes import inbox_options
from tenantry.server.identity import refuse_untrusted_headers
from tenantry.server.metrics import Metrics
from tenantry.server.nats_server import NatsServer
from tenantry.server.roles import ROLES, STORE_ROLES
from tenantry.server.store import creating_tables, event_store_env
from tenantry.settings import Settings

log = structlog.get_logger("tenantry")


def build_service(settings: Settings, *, seed: bool = True) -> TenancyService:
    """The command-handling application on the configured event store (seeded once)."""
    env = {**event_store_env(settings), **settings.extra}
    # Its tables are created here if missing: one process at a time (roles start together).
    with creating_tables(settings):
        service = TenancyService(
            env,
            authorization=Authorization(admins=settings.admins),
            governance=Governance(request_ttl=timedelta(seconds=settings.access_request_ttl)),
        )
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
        if STORE_ROLES & set(roles)
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

# The interpreter handed to a waiting thread after 1 ms instead of 5: the relay's reader thread
# holds it for a page at a time, while the event loop waits for it to take a batch's ack and
# write the next batch to the socket (relay_throughput --quick: 0.58-0.83 at 5 ms, 0.83-1.11 at
# 1 ms, same minutes; latency unchanged: docs/benchmarks.md, "Session 6: relay").
SWITCH_INTERVAL = 0.001


def tune_process() -> None:
    """Process settings of a long-running Tenantry process (also applied by `bench`)."""
    gc.set_threshold(*GC_THRESHOLDS)
    sys.setswitchinterval(SWITCH_INTERVAL)


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
