"""The wire protocol of the bus (DESIGN §3-§5), in one place: subjects, headers, the error codes
with their numeric service codes and one exception class each, and the command reply.

The bottom of the tree: it imports nothing of Tenantry, so the domain, the server, the client,
the workers, the CLI and the benchmarks all take these from here."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

# --- subjects -----------------------------------------------------------------------------

COMMAND_PREFIX = "tenantry.cmd."
QUERY_PREFIX = "tenantry.query."
DENIED_PREFIX = "tenantry.audit.denied."
EVENT_PREFIX = "tenantry.evt."
ALERT_PREFIX = "tenantry.alert."
STREAM_ALERT_SUBJECT = ALERT_PREFIX + "stream"
CHECKPOINT_SUBJECT = "tenantry.checkpoint"


# `tenantry.cmd.apply`, many commands all or nothing: no command has this name.
APPLY = "apply"


def command_subject(name: str) -> str:
    return COMMAND_PREFIX + name


def query_subject(name: str) -> str:
    return QUERY_PREFIX + name


# --- headers ------------------------------------------------------------------------------

COMMAND_ID_HEADER = "Tenantry-Command-Id"
ACTOR_HEADER = "Tenantry-Actor"
CORRELATION_ID_HEADER = "Tenantry-Correlation-Id"
# How many seconds the sender waits for the reply, from when it sent the request: a query
# service drops a request older than that, unanswered (docs/decisions.md).
TIMEOUT_HEADER = "Tenantry-Timeout"
SERVICE_ERROR_HEADER = "Nats-Service-Error"
SERVICE_ERROR_CODE_HEADER = "Nats-Service-Error-Code"

# --- errors: one class per wire code ------------------------------------------------------


class TenantryError(Exception):
    """A refusal or failure, with the wire's `code`, `message` and `details`; `status` is the
    numeric code of the NATS micro-service convention (`Nats-Service-Error-Code`). A refused
    command wrote nothing."""

    code: ClassVar[str] = "internal"
    status: ClassVar[str] = "500"

    def __init__(
        self, message: str, details: Mapping[str, Any] | None = None, /, **more: Any
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = {**(details or {}), **more}

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class InvalidRequest(TenantryError):
    """`validation_error`: the body does not fit the command or query (checked by the client
    before sending, and by the server)."""

    code = "validation_error"
    status = "400"


class NotFound(TenantryError):
    """A command or a `get_*` names something that does not exist."""

    code = "not_found"
    status = "404"


class AlreadyExists(TenantryError):
    """A create names something live (names are unique: DESIGN §2, Identity)."""

    code = "already_exists"
    status = "409"


class Conflict(TenantryError):
    """An `expected_version` that did not match, or a command id reused for another command."""

    code = "conflict"
    status = "409"


class PreconditionFailed(TenantryError):
    """A domain rule refused the command."""

    code = "precondition_failed"
    status = "412"


class Forbidden(TenantryError):
    """The actor may not send this command (its policy: domain.policies); it is also published
    on `tenantry.audit.denied.<command>`."""

    code = "forbidden"
    status = "403"


class QueryTimeout(TenantryError):
    """`timeout`: the views had not reached `min_position` in time (`details.position` says
    where they stood), or the query service was stopping."""

    code = "timeout"
    status = "504"


class InternalError(TenantryError):
    """Something failed that is not the request's fault; nothing was applied."""

    code = "internal"
    status = "500"


class Unavailable(TenantryError):
    """No answer from the bus after every retry (client side; never sent on the wire). A
    command may or may not have been applied: send it again with the same command id
    (`details.command_id`) to find out, it cannot apply twice."""

    code = "unavailable"
    status = "503"


# Every code's class: each one is a direct subclass of TenantryError.
ERRORS: dict[str, type[TenantryError]] = {cls.code: cls for cls in TenantryError.__subclasses__()}
# What a command may be answered with (DESIGN §3); queries may also answer `timeout`.
COMMAND_ERROR_CODES: tuple[str, ...] = tuple(
    code for code in ERRORS if code not in ("timeout", "unavailable")
)


def error_from_wire(error: Mapping[str, Any]) -> TenantryError:
    """The exception for a reply's `error` object; an unknown code keeps its code."""
    code = str(error.get("code", "internal"))
    message = str(error.get("message", ""))
    details = error.get("details") or {}
    cls = ERRORS.get(code)
    if cls is None:
        unknown = TenantryError(message, details)
        unknown.code = code  # type: ignore[misc]
        return unknown
    return cls(message, details)


# --- replies ------------------------------------------------------------------------------


class CommandReply(BaseModel):
    """A command's success (the body of DESIGN §3 without `ok`): `position` is what to pass as
    `min_position` (or to `wait_for`) to read this write; `replayed` says that the command id
    had been handled before and nothing was written this time. Fields a newer server adds are
    ignored, so a client keeps working when the server learns to say more."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    command_id: str
    fqn: str
    aggregate_id: str
    version: int
    position: int
    events: list[str]
    replayed: bool


class AppliedCommand(BaseModel):
    """What one command of an apply did."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    command: str
    fqn: str
    aggregate_id: str
    version: int
    events: list[str]


class ApplyReply(BaseModel):
    """An apply's success: what each command did, in order. `position` is the last written
    (None for a dry run, which writes nothing); `replayed`: the apply id had been applied
    before and nothing was written this time."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    apply_id: str
    dry_run: bool
    position: int | None
    commands: list[AppliedCommand]
    replayed: bool


class QueryAnswer(BaseModel):
    """A query's success (DESIGN §5 without `ok`): the position the answering views stood at,
    and the data; a paged list's `next` is the cursor for the rows that follow (null: no more)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    position: int
    data: Any
    next: str | None = None
