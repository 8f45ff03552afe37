"""Access review (a campaign): the grants in a scope as they stood when it opened, one item each,
and every decision taken on them, until it closes; after that it never changes.

Reviews are decided here: an item is decided once (`keep` or `revoke`), by a person before the
review is due, or, when it closes (at `due`, or asked), as the system's decision `on_undecided`.
What a revoke does to the repo or the team is done by the handler in the same transaction
(`domain.handlers`, access reviews); who may decide an item, `domain.authorization`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal
from uuid import UUID

from eventsourcing.domain import event
from pydantic import BaseModel, ConfigDict

from domain.base import Aggregate, now
from domain.errors import NotFound, PreconditionFailed, ValidationFailed
from domain.names import identity

ScopeKind = Literal["repos", "environment", "all"]
Decision = Literal["keep", "revoke"]
# The snapshot is written in events of at most this many items, so that no published event
# comes near the bus's message size (1 MiB by default): an item is about 300 bytes.
ITEMS_PER_EVENT = 250
# The most items a review may hold: a scope larger than this is refused (narrow it).
MAX_ITEMS = 20_000


class ReviewItem(BaseModel):
    """One thing to decide: a direct grant on a repo (`kind` grant: `subject` holds `role` on
    `repo`), or a user's membership of a team that holds a grant in scope (`kind` membership:
    `subject` is the member, `team` the team, `repos` the repos in scope it holds grants on)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    kind: Literal["grant", "membership"]
    subject: str
    repo: str | None = None
    role: str | None = None
    granted_by: str | None = None
    granted_at: datetime | None = None
    reason: str | None = None
    expires_at: datetime | None = None
    team: str | None = None
    repos: tuple[str, ...] = ()

    def about(self, actor: str) -> bool:
        """Whether the item is about `actor`'s own access: its grant or membership (a team's
        grant is its members' access: see `domain.authorization`)."""
        return self.subject == actor

    def repos_affected(self) -> tuple[str, ...]:
        """The repos whose access a decision on this item changes."""
        return (self.repo,) if self.repo is not None else self.repos


@dataclass(frozen=True)
class ItemDecision:
    decision: str
    reason: str
    decided_by: str
    decided_at: datetime
    automatic: bool
    outcome: str


class AccessReview(Aggregate):
    @staticmethod
    def create_id(name: str) -> UUID:
        return identity("access_review", name)

    class Opened(Aggregate.Created):
        name: str
        scope: str
        environment: str | None
        repos: list[str]
        due: datetime
        on_undecided: str
        item_count: int
        # The version of every repo and team the snapshot was read from: the snapshot is
        # exactly their grants and members at those versions (replay them to check it).
        read_versions: dict[str, int]

    @event(Opened)
    def __init__(
        self,
        name: str,
        scope: str,
        environment: str | None,
        repos: list[str],
        due: datetime,
        on_undecided: str,
        item_count: int,
        read_versions: dict[str, int],
    ) -> None:
        self.name = name
        self.scope = scope
        self.environment = environment
        self.repos = tuple(repos)
        self.due = due
        self.on_undecided = on_undecided
        self.item_count = item_count
        self.items: dict[str, ReviewItem] = {}
        self.decisions: dict[str, ItemDecision] = {}
        self.closed = False

    @classmethod
    def open(
        cls,
        name: str,
        scope: str,
        environment: str | None,
        repos: list[str],
        due: datetime,
        on_undecided: str,
        items: list[ReviewItem],
        read_versions: dict[str, int],
    ) -> AccessReview:
        """A new review of `items` (its snapshot, in the order given), due at `due` (in the
        future: `validation_error` otherwise)."""
        if due <= now():
            raise ValidationFailed("due must be in the future", due=due.isoformat())
        if len(items) > MAX_ITEMS:
            raise PreconditionFailed(
                f"the scope holds {len(items)} grants and memberships, more than a review may "
                f"({MAX_ITEMS}): review fewer repos at a time",
                items=len(items),
                max_items=MAX_ITEMS,
            )
        review = cls(name, scope, environment, repos, due, on_undecided, len(items), read_versions)
        for start in range(0, len(items), ITEMS_PER_EVENT):
            review._items_snapshotted(items=items[start : start + ITEMS_PER_EVENT])
        return review

    class ItemsSnapshotted(Aggregate.Event):
        items: list[ReviewItem]

    @event(ItemsSnapshotted)
    def _items_snapshotted(self, items: list[ReviewItem]) -> None:
        for item in items:
            self.items[item.id] = item

    def item(self, item_id: str) -> ReviewItem:
        found = self.items.get(item_id)
        if found is None:
            raise NotFound(
                f"access review {self.name!r} has no item {item_id!r}",
                review=self.name,
                item=item_id,
            )
        return found

    def undecided(self) -> list[ReviewItem]:
        """The items nobody decided yet, in snapshot order."""
        return [item for item_id, item in self.items.items() if item_id not in self.decisions]

    def is_due(self, at: datetime) -> bool:
        return at >= self.due

    def require_decidable(self, item_id: str) -> ReviewItem:
        """The item, if a person may still decide it: the review open and not yet due (from
        `due` on, what is undecided gets `on_undecided`), the item not decided already."""
        item = self.item(item_id)
        if self.closed:
            raise PreconditionFailed(
                f"access review {self.name!r} is closed", review=self.name, item=item_id
            )
        if self.is_due(now()):
            raise PreconditionFailed(
                f"access review {self.name!r} was due at {self.due.isoformat()}: its undecided "
                f"items get {self.on_undecided!r} when it closes",
                review=self.name,
                item=item_id,
            )
        decided = self.decisions.get(item_id)
        if decided is not None:
            raise PreconditionFailed(
                f"item {item_id!r} of access review {self.name!r} was decided already "
                f"({decided.decision} by {decided.decided_by})",
                review=self.name,
                item=item_id,
            )
        return item

    def decide(
        self, item_id: str, decision: str, reason: str, outcome: str, automatic: bool = False
    ) -> None:
        """Record a decision (`outcome`: what it did, `kept`, `revoked`, …), its checks made."""
        self._item_decided(
            item=item_id, decision=decision, reason=reason, automatic=automatic, outcome=outcome
        )

    class ItemDecided(Aggregate.Event):
        item: str
        decision: str
        reason: str
        # The system's decision (`on_undecided`, when the review closed), not a person's.
        automatic: bool
        outcome: str

    @event(ItemDecided)
    def _item_decided(
        self, item: str, decision: str, reason: str, automatic: bool, outcome: str
    ) -> None:
        self.decisions[item] = ItemDecision(
            decision, reason, self.last_event.actor, self.last_event.timestamp, automatic, outcome
        )

    def require_open(self) -> None:
        if self.closed:
            raise PreconditionFailed(f"access review {self.name!r} is closed", review=self.name)

    def close(self, at_due: bool) -> None:
        """Close, once every item is decided (the caller gave the undecided ones
        `on_undecided`)."""
        self.require_open()
        assert not self.undecided(), "close after deciding every item"
        counts = {"keep": 0, "revoke": 0}
        automatic = 0
        for decided in self.decisions.values():
            counts[decided.decision] += 1
            automatic += decided.automatic
        self._closed(
            at_due=at_due, kept=counts["keep"], revoked=counts["revoke"], automatic=automatic
        )

    @event("Closed")
    def _closed(self, at_due: bool, kept: int, revoked: int, automatic: int) -> None:
        self.closed = True
