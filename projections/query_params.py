"""The queries of DESIGN §5 as models: each one's parameters (strict) and the result model its
answer's `data` is (`Query[R]`). Light to import: the client validates and reads with them
without loading the views (SQLAlchemy) that `projections.queries` answers from."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Generic, Literal, Self, TypeVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from domain.names import (
    CLUSTER_NAME_RE,
    DNS_LABEL_RE,
    Action,
    ClusterName,
    DnsLabel,
    MlRepoName,
    Subject,
    WorkspaceFqn,
    has_nul,
)
from projections import results as r

MAX_WAIT_SECONDS = 30.0

# --- parameters ---------------------------------------------------------------------------

_WS = CLUSTER_NAME_RE[1:-1]
_APP_SUBJECT = re.compile(rf"^app:{_WS}:{_WS}:{DNS_LABEL_RE[1:-1]}$")
_GRANT_SUBJECT: TypeAdapter[str] = TypeAdapter(Subject)


def _query_subject(value: str) -> str:
    """A grant subject, or an application: `app:<cluster>:<workspace>:<name>`."""
    if _APP_SUBJECT.fullmatch(value):
        _, cluster, workspace, name = value.split(":")
        if 3 <= len(cluster) <= 35 and 3 <= len(workspace) <= 32 and len(name) <= 63:
            return value
    else:
        try:
            return _GRANT_SUBJECT.validate_python(value)
        except ValidationError:
            pass
    raise ValueError(
        "a subject is 'user:<email>', 'team:<name>', 'workspace:<cluster>:<name>' or "
        "'app:<cluster>:<workspace>:<name>'"
    )


QuerySubject = Annotated[str, StringConstraints(max_length=300), AfterValidator(_query_subject)]
Position = Annotated[int, Field(ge=0, le=2**63 - 1)]
EventType = Annotated[str, StringConstraints(pattern=r"^[a-z_]+\.[a-z_]+$", max_length=100)]


def _in_utc_range(value: datetime) -> datetime:
    """A moment that exists in UTC (`9999-12-31T23:59:59-14:00` does not): views compare UTC."""
    try:
        value.astimezone(UTC)
    except OverflowError:
        raise ValueError("the moment is out of range once in UTC") from None
    return value


Moment = Annotated[AwareDatetime, AfterValidator(_in_utc_range)]


class QueryParams(BaseModel):
    """What every query accepts. `min_position` asks to wait (up to `min_position_timeout`
    seconds, 5 by default) until the views have applied that position: read-your-writes."""

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")

    min_position: Position | None = None
    min_position_timeout: Annotated[float, Field(gt=0, le=MAX_WAIT_SECONDS)] | None = None

    @model_validator(mode="after")
    def _no_nul(self) -> Self:
        # PostgreSQL text can't hold U+0000: the query would fail as an internal error.
        if has_nul(self.__dict__):
            raise ValueError("strings must not contain NUL (U+0000)")
        return self


R = TypeVar("R")


class Query(QueryParams, Generic[R]):
    """A query whose answer's `data` is an `R`; `result` reads (validates) one."""

    result: ClassVar[TypeAdapter[Any]]
    pages: ClassVar[bool] = False  # a list, asked for page by page (Paged)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        for base in cls.__mro__:
            meta = getattr(base, "__pydantic_generic_metadata__", None) or {}
            origin, args = meta.get("origin"), meta.get("args")
            if origin is not None and args and not meta.get("parameters"):
                row = args[0]
                cls.result = TypeAdapter(list[row] if origin.pages else row)  # type: ignore[valid-type]
                return


MAX_PAGE = 10_000
Order = tuple[tuple[str, type[str] | type[int]], ...]


class Paged(Query[list[R]], Generic[R]):
    """A query answering a list. Without `limit`, the whole list; with it, at most `limit` rows
    and the reply's `next`: pass it as `after` for the rows that follow (null: no more).

    Each page is read in its own snapshot, at its own `position`; rows are in a fixed order
    and `after` is the place of the last row seen, so a page never repeats a row of an earlier
    one. A reply larger than the bus carries is refused (`validation_error`): ask with `limit`."""

    pages: ClassVar[bool] = True
    # The list's order, unique per row: the fields (and the type of each) whose values, as a
    # JSON array, are a reply's `next` and name the place an `after` starts from.
    order: ClassVar[Order] = (("name", str),)
    limit: Annotated[int, Field(ge=1, le=MAX_PAGE)] | None = None
    after: Annotated[str, StringConstraints(min_length=2, max_length=4000)] | None = None

    @field_validator("after")
    @classmethod
    def _a_place_of_this_list(cls, after: str | None) -> str | None:
        # Judged here only (the client validates with this model too): what passes, the query
        # can place in its list.
        if after is not None:
            _place(after, cls.order)
        return after

    def place(self) -> tuple[str | int, ...] | None:
        """The values of `order` of the row the page starts after, None for the first page."""
        return None if self.after is None else _place(self.after, self.order)


def _place(
    after: str, order: tuple[tuple[str, type[str] | type[int]], ...]
) -> tuple[str | int, ...]:
    try:
        place = json.loads(after)
    except ValueError:
        place = None
    if not (
        isinstance(place, list)
        and len(place) == len(order)
        and all(type(part) is kind for part, (_, kind) in zip(place, order, strict=False))
    ):
        raise ValueError("`after` is not a `next` this query gave")
    return tuple(place)


class ListEnvironments(Paged[r.Environment]):
    pass


class ListClusters(Paged[r.Cluster]):
    environment: DnsLabel | None = None


class GetWorkspace(Query[r.Workspace]):
    fqn: WorkspaceFqn


class ListWorkspaces(Paged[r.Workspace]):
    order = (("fqn", str),)
    cluster: ClusterName | None = None
    environment: DnsLabel | None = None
    production: bool | None = None


class GetMlRepo(Query[r.MlRepo]):
    name: MlRepoName


class ListMlRepos(Paged[r.MlRepo]):
    subject: QuerySubject | None = None


class RepoAccess(Paged[r.Grant]):
    order = (("subject", str),)
    repo: MlRepoName


class SubjectAccess(Paged[r.Access]):
    order = (("repo", str),)
    subject: QuerySubject


class CheckAccess(Query[r.AccessCheck]):
    subject: QuerySubject
    repo: MlRepoName
    action: Action


class EnvironmentTags(Paged[r.EnvironmentTags]):
    order = (("environment", str),)
    environment: DnsLabel | None = None


class AuditLog(Query[r.AuditPage]):
    """`since` is inclusive and `until` exclusive; `after` is a position (exclusive), for paging
    with the `next` of the previous page."""

    since: Moment | None = None
    until: Moment | None = None
    actor: Annotated[str, StringConstraints(min_length=1, max_length=300)] | None = None
    fqn: Annotated[str, StringConstraints(min_length=1, max_length=300)] | None = None
    type: EventType | None = None
    after: Position | None = None
    limit: Annotated[int, Field(ge=1, le=1000)] = 100


class AccessReport(Paged[r.AccessInForce]):
    """What was in force at `as_of` (any RFC 3339 offset), events at that very moment included."""

    order = (("repo", str), ("subject", str), ("via", str))

    as_of: Moment
    repo: MlRepoName | None = None
    subject: QuerySubject | None = None


class AccessChanges(Paged[r.AccessChange]):
    """Changes after `from` up to and including `to`: exactly what turns `access_report` at
    `from` into `access_report` at `to`."""

    order = (("position", int), ("repo", str), ("subject", str), ("via", str), ("change", str))

    from_: Moment = Field(alias="from")
    to: Moment
    repo: MlRepoName | None = None
    subject: QuerySubject | None = None

    @model_validator(mode="after")
    def _in_order(self) -> AccessChanges:
        if self.to < self.from_:
            raise ValueError("`to` is before `from`")
        return self


class ListTeams(Paged[r.Team]):
    pass


class GetTeam(Query[r.Team]):
    name: DnsLabel


class ListStorageIntegrations(Paged[r.StorageIntegration]):
    pass


class GetStorageIntegration(Query[r.StorageIntegration]):
    name: DnsLabel


# --- access governance (issue 15) ---------------------------------------------------------

RequestStatus = Literal["pending", "approved", "denied", "cancelled", "expired"]


class ListAccessRequests(Paged[r.AccessRequest]):
    """Requests, oldest first; with `approver`, the pending ones that user may approve as a
    tenant admin (any), or as an admin of the repo (directly or through a team): not their own,
    not for their own access, not approved by them already."""

    order = (("opened_at", str), ("request", str))
    status: RequestStatus | None = None
    repo: MlRepoName | None = None
    requester: Subject | None = None
    approver: Subject | None = None


class GetAccessRequest(Query[r.AccessRequest]):
    request: Annotated[
        str,
        StringConstraints(
            pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
        ),
    ]


# Every query's parameters, by name (projections.queries.QUERIES holds the same models).
PARAMS: dict[str, type[Query[Any]]] = {
    "list_environments": ListEnvironments,
    "list_clusters": ListClusters,
    "get_workspace": GetWorkspace,
    "list_workspaces": ListWorkspaces,
    "get_ml_repo": GetMlRepo,
    "list_ml_repos": ListMlRepos,
    "repo_access": RepoAccess,
    "subject_access": SubjectAccess,
    "check_access": CheckAccess,
    "environment_tags": EnvironmentTags,
    "audit_log": AuditLog,
    "access_report": AccessReport,
    "access_changes": AccessChanges,
    "list_teams": ListTeams,
    "get_team": GetTeam,
    "list_storage_integrations": ListStorageIntegrations,
    "get_storage_integration": GetStorageIntegration,
    "list_access_requests": ListAccessRequests,
    "get_access_request": GetAccessRequest,
}
_NAMES: dict[type[Query[Any]], str] = {query: name for name, query in PARAMS.items()}


def name_of(query: Query[Any]) -> str:
    """The name a query is asked by on the bus (`tenantry.query.<name>`)."""
    return _NAMES[type(query)]


# --- access reviews (issue 15) ------------------------------------------------------------


class ListAccessReviews(Paged[r.AccessReview]):
    status: Literal["open", "closed"] | None = None


class GetAccessReview(Query[r.AccessReview]):
    name: DnsLabel


class ListAccessReviewItems(Paged[r.AccessReviewItem]):
    """The items of `review` (of every review without it), `status` decided or undecided;
    with `reviewer`, the items waiting for that user (see `projections.access_reviews`)."""

    order = (("review", str), ("ordinal", int))
    review: DnsLabel | None = None
    status: Literal["decided", "undecided"] | None = None
    reviewer: QuerySubject | None = None


REVIEW_QUERIES: dict[str, type[Query[Any]]] = {
    "list_access_reviews": ListAccessReviews,
    "get_access_review": GetAccessReview,
    "list_access_review_items": ListAccessReviewItems,
}
PARAMS.update(REVIEW_QUERIES)
_NAMES.update({query: name for name, query in REVIEW_QUERIES.items()})
