"""`tenantry.Client`: the async Python client of the bus. It sends command models
(`send(CreateWorkspace(...))`) and query models (`query(ListWorkspaces(...))`, typed by the
query's result model); `client.<command or query name>(**fields)` is built from the same models.

Every command is validated here by the same pydantic model the command service uses, then sent
with a command id of its own; a request that times out or finds no responder is sent again, a
bounded number of times with backoff, under the SAME command id, so a retry can never apply
twice (the service answers a known id with its first answer, `replayed: true`)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar, Unpack, overload

import nats
from nats.aio.client import Client as NatsClient
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from pydantic import BaseModel

from domain.names import is_valid_actor
from projections.query_params import PARAMS, Query, name_of
from tenantry.inboxes import inbox_options
from tenantry.protocol import (
    ACTOR_HEADER,
    APPLY,
    COMMAND_ID_HEADER,
    CORRELATION_ID_HEADER,
    TIMEOUT_HEADER,
    ApplyReply,
    CommandReply,
    InternalError,
    InvalidRequest,
    QueryAnswer,
    QueryTimeout,
    Unavailable,
    command_subject,
    error_from_wire,
    query_subject,
)
from tenantry.sdk.by_name import as_json, by_name, valid
from tenantry.server import wire
from tenantry.settings import Settings

if TYPE_CHECKING:
    from domain.commands import Command

DEFAULT_TIMEOUT = 5.0
DEFAULT_RETRIES = 3
DEFAULT_BACKOFF = 0.2
_MAX_BACKOFF = 2.0
# The longest `min_position_timeout` a query service accepts.
_MAX_SERVER_WAIT = 30.0
# Rows per page of a list query: well under the bus's 1 MiB for any row the views hold.
PAGE_SIZE = 1000

R = TypeVar("R")
M = TypeVar("M", bound=BaseModel)


class CommandOptions(TypedDict, total=False):
    """What every command method accepts besides the command's fields.

    `command_id`: the idempotency key (generated when absent); pass your own to make a
    command safe to send again from another process. `correlation_id`: ties the events of
    several commands together in the audit log."""

    command_id: str
    correlation_id: str


class ReadOptions(TypedDict, total=False):
    """What every query method accepts: wait until the views have applied `min_position`
    (by default, the last position this client wrote), for at most `min_position_timeout`
    seconds (5 by default)."""

    min_position: int
    min_position_timeout: float


class Client:
    """An async client of a Tenantry bus. Make one with `await Client.connect()`; close it with
    `await client.close()` or use it as `async with await Client.connect() as client:`."""

    def __init__(
        self,
        nc: NatsClient,
        *,
        actor: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        backoff: float = DEFAULT_BACKOFF,
        read_your_writes: bool = True,
        owns_connection: bool = False,
    ) -> None:
        _check_actor(actor)
        self._nc = nc
        self.actor = actor
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.read_your_writes = read_your_writes
        self._owns_connection = owns_connection
        self.position = 0
        """The highest position this client has written (or waited for)."""

    @classmethod
    async def connect(
        cls,
        url: str | None = None,
        actor: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109 (per request, not for the call)
        retries: int = DEFAULT_RETRIES,
        backoff: float = DEFAULT_BACKOFF,
        read_your_writes: bool = True,
        **nats_options: Any,
    ) -> Client:
        """Connect to the bus at `url` (several, comma-separated, for a cluster).

        Without `url`: TENANTRY_NATS_URL, else the `nats.url` a local `tenantry up` wrote in
        TENANTRY_STATE_DIR, else where `tenantry up` listens (nats://127.0.0.1:4223), as the
        CLI does. Without `actor`:
        TENANTRY_ACTOR, else none (the service then acts as `user:anonymous@localhost`).
        `timeout` bounds each request; `retries` is how many times a request that timed out
        or found no responder is sent again."""
        settings = Settings.from_env()
        url = url or settings.client_nats_url()
        actor = actor if actor is not None else settings.actor
        _check_actor(actor)
        options: dict[str, Any] = {
            "name": "tenantry-client",
            "connect_timeout": 2,
            "max_reconnect_attempts": 5,
            "reconnect_time_wait": 0.5,
            # nats-py's default prints a traceback for every failed attempt; the outcome is
            # what matters, and it is raised.
            "error_cb": _quiet,
            # Replies under this user's own inboxes, which NATS lets no other user read.
            **inbox_options(url, nats_options.get("user")),
            **nats_options,
        }
        try:
            nc = await nats.connect(url.split(","), **options)
        except Exception as exc:
            raise Unavailable(f"cannot reach the bus at {url}: {exc}", {"url": url}) from exc
        return cls(
            nc,
            actor=actor,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            read_your_writes=read_your_writes,
            owns_connection=True,
        )

    async def close(self) -> None:
        """Close the connection, if this client opened it."""
        if self._owns_connection and not self._nc.is_closed:
            await self._nc.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # --- commands ------------------------------------------------------------------------

    async def send(self, command: Command, **options: Unpack[CommandOptions]) -> CommandReply:
        """Send a command model (already valid: it was built)."""
        command_id = options.get("command_id") or str(uuid.uuid4())
        headers = self._command_headers(command_id, options.get("correlation_id"))
        payload = command.model_dump_json(exclude_none=True).encode()
        subject = command_subject(command.wire_name)
        data = await self._request(subject, payload, headers, self.timeout, command_id)
        reply = CommandReply.model_validate(data)
        self.position = max(self.position, reply.position)
        return reply

    async def apply(
        self,
        commands: Sequence[Command],
        *,
        dry_run: bool = False,
        **options: Unpack[CommandOptions],
    ) -> ApplyReply:
        """Send `commands` as one apply: decided in order (each sees what those before it did)
        and saved in one transaction, or none is and the first refusal is raised, its
        `details` naming the command's `index` and name. With `dry_run`, the service decides
        the same and writes nothing. `command_id` is the apply id (same id, same commands:
        the first answer again). A body over the bus's 64 KiB is refused here: split the
        commands into several applies (each all or nothing)."""
        apply_id = options.get("command_id") or str(uuid.uuid4())
        payload = wire.apply_body(commands, dry_run)
        headers = self._command_headers(apply_id, options.get("correlation_id"))
        subject = command_subject(APPLY)
        data = await self._request(subject, payload, headers, self.timeout, apply_id)
        reply = ApplyReply.model_validate(data)
        if reply.position is not None:
            self.position = max(self.position, reply.position)
        return reply

    async def command(
        self, name: str, body: Mapping[str, Any], **options: Unpack[CommandOptions]
    ) -> CommandReply:
        """Send the command `name` with `body` (validated here first, as JSON: None fields are
        left out, so the model's defaults apply)."""
        from domain.commands import COMMANDS

        model = COMMANDS.get(name)
        if model is None:
            raise InvalidRequest(f"unknown command {name!r}", {"commands": sorted(COMMANDS)})
        return await self.send(valid(model, name, "command", body), **options)

    # --- queries -------------------------------------------------------------------------

    @overload
    async def query(self, query: Query[R], /, **options: Unpack[ReadOptions]) -> R: ...
    @overload
    async def query(self, query: str, /, **params: Any) -> QueryAnswer: ...

    async def query(self, query: Query[Any] | str, /, **params: Any) -> Any:
        """A query model's answer, read into its result model (a list is asked for page by
        page, its `limit` the page size, so that a list of any size comes through the bus); or,
        by name, one raw answer. `min_position` defaults to the last position this client
        wrote."""
        if isinstance(query, str):
            return await self._ask(query, params)
        name = name_of(query)
        body = {**query.model_dump(mode="json", by_alias=True, exclude_none=True), **params}
        if not query.pages:
            return query.result.validate_python((await self._ask(name, body)).data)
        return query.result.validate_python(await self.rows(name, **body))

    async def _ask(self, name: str, params: Mapping[str, Any]) -> QueryAnswer:
        params = {k: v for k, v in params.items() if v is not None}
        if self.read_your_writes and "min_position" not in params and self.position:
            params["min_position"] = self.position
        body = as_json(params)
        model = PARAMS.get(name)
        if model is not None:
            valid(model, name, "query", params)
        wait = float(params.get("min_position_timeout", 5.0)) if "min_position" in params else 0
        within = self.timeout + wait
        # Past this the query service drops the request unanswered: nobody would read it.
        headers = {TIMEOUT_HEADER: f"{within:g}"}
        data = await self._request(query_subject(name), body.encode(), headers, within, None)
        return QueryAnswer.model_validate(data)

    def _command_headers(self, command_id: str, correlation_id: str | None) -> dict[str, str]:
        headers = {COMMAND_ID_HEADER: command_id}
        if correlation_id is not None:
            headers[CORRELATION_ID_HEADER] = correlation_id
        for header, value in headers.items():
            if not wire.is_valid_id(value):
                raise InvalidRequest(
                    f"{header} must be 1-128 letters, digits or ._:@/+=-", {"header": header}
                )
        if self.actor is not None:
            headers[ACTOR_HEADER] = self.actor
        return headers

    async def wait_for(self, position: int, timeout: float = 30.0) -> int:  # noqa: ASYNC109
        """Until the views have applied `position` (a command reply's `position`); returns the
        position they reached. Raises `QueryTimeout` past `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                answer = await self.query(
                    "list_environments",
                    limit=1,  # the answer's position is what is wanted, not the list
                    min_position=position,
                    min_position_timeout=min(max(remaining, 0.05), _MAX_SERVER_WAIT),
                )
            except QueryTimeout:
                if time.monotonic() >= deadline:
                    raise
                continue
            self.position = max(self.position, position)
            return answer.position

    async def _request(
        self,
        subject: str,
        payload: bytes,
        headers: dict[str, str] | None,
        within: float,
        command_id: str | None,
    ) -> dict[str, Any]:
        attempt = 0
        timed_out = False  # once a request timed out, a service may have taken it
        while True:
            try:
                msg = await self._nc.request(subject, payload, timeout=within, headers=headers)
                break
            except (NatsTimeout, NoRespondersError) as exc:
                attempt += 1
                timed_out = timed_out or isinstance(exc, NatsTimeout)
                if attempt > self.retries:
                    why = "no answer" if isinstance(exc, NatsTimeout) else "no responder"
                    details: dict[str, Any] = {"subject": subject, "attempts": attempt}
                    message = f"{why} on {subject} after {attempt} attempts"
                    if command_id is not None:
                        details["command_id"] = command_id
                        details["applied"] = None if timed_out else False
                        if timed_out:
                            message += (
                                f"; the command may or may not have been applied: send it "
                                f"again with command_id={command_id!r} to find out"
                            )
                        else:
                            # The server said no service listens: nobody took the request.
                            message += "; nobody received it: the command was not applied"
                    raise Unavailable(message, details) from exc
                await asyncio.sleep(min(self.backoff * 2 ** (attempt - 1), _MAX_BACKOFF))
        try:
            answer = json.loads(msg.data)
        except ValueError as exc:
            raise InternalError(f"unreadable reply on {subject}", {"subject": subject}) from exc
        if not isinstance(answer, dict):
            raise InternalError(f"unreadable reply on {subject}", {"subject": subject})
        if not answer.get("ok"):
            raise error_from_wire(answer.get("error") or {})
        return answer

    async def rows(self, query: str, /, **params: Any) -> list[Any]:
        """Every row of the list query `query`, as the wire has them: asked page by page, so
        that a list of any size comes through the bus."""
        rows: list[Any] = []
        limit = params.pop("limit", None) or PAGE_SIZE
        after = params.pop("after", None)
        while True:
            try:
                answer = await self._ask(query, {**params, "limit": limit, "after": after})
            except InvalidRequest as refused:
                limit = _smaller_page(refused, limit)
                continue
            rows += answer.data
            if answer.next is None:
                return rows
            after = answer.next

    # --- conveniences: client.<name>(**fields), built from the models -------------------

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        """`client.create_workspace(cluster=..., ...)` sends the command of that name, and
        `client.list_workspaces(cluster=...)` asks the query of that name (its whole list),
        with the model's fields as keyword arguments (plus `command_id`/`correlation_id`, or
        `min_position`/`min_position_timeout`)."""
        if name.startswith("_"):
            raise AttributeError(name)
        return by_name(self, name)


def _check_actor(actor: str | None) -> None:
    if actor is not None and not is_valid_actor(actor):
        raise InvalidRequest(
            "an actor is 'user:<email>' or 'service:<name>'", {"actor": actor[:300]}
        )


async def _quiet(error: Exception) -> None:
    return None


def _smaller_page(refused: InvalidRequest, limit: int) -> int:
    """The page size to ask next after a page was refused as larger than the bus carries
    (rows of that size fit in 80 % of its `max_payload`); re-raise any other refusal."""
    size, most = refused.details.get("bytes"), refused.details.get("max_payload")
    if not isinstance(size, int) or not isinstance(most, int) or limit == 1:
        raise refused
    return max(1, min(limit - 1, limit * most * 4 // (size * 5)))
