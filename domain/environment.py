"""Environment: a tag (dev, staging, prod, …) with production and optimisation metadata."""

from __future__ import annotations

from uuid import UUID

from eventsourcing.domain import event

from domain.base import Aggregate
from domain.errors import PreconditionFailed
from domain.names import identity


class Environment(Aggregate):
    @staticmethod
    def create_id(name: str) -> UUID:
        return identity("environment", name)

    # Spelled out for `access_approvals` (how many approvals a grant of editor or admin to a
    # workspace in this environment needs: 0, the default, lets it be granted directly): events
    # stored before it existed read as 0.
    class Created(Aggregate.Created):
        name: str
        is_production: bool
        optimize_for: str
        color: str | None
        access_approvals: int = 0

    class Recreated(Aggregate.Event):
        is_production: bool
        optimize_for: str
        color: str | None
        access_approvals: int = 0

    class Updated(Aggregate.Event):
        is_production: bool
        optimize_for: str
        color: str | None
        access_approvals: int = 0

    @event(Created)
    def __init__(
        self,
        name: str,
        is_production: bool,
        optimize_for: str,
        color: str | None,
        access_approvals: int = 0,
    ) -> None:
        self.name = name
        self.is_production = is_production
        self.optimize_for = optimize_for
        self.color = color
        self.access_approvals = access_approvals
        self.clusters: set[str] = set()
        self.live = True

    @event(Recreated)
    def recreate(
        self, is_production: bool, optimize_for: str, color: str | None, access_approvals: int = 0
    ) -> None:
        self.is_production = is_production
        self.optimize_for = optimize_for
        self.color = color
        self.access_approvals = access_approvals
        self.clusters = set()
        self.live = True

    def update(
        self,
        is_production: bool | None,
        optimize_for: str | None,
        color: str | None,
        access_approvals: int | None = None,
    ) -> None:
        """Change what is given; nothing is recorded when nothing differs."""
        new = (
            self.is_production if is_production is None else is_production,
            self.optimize_for if optimize_for is None else optimize_for,
            self.color if color is None else color,
            self.access_approvals if access_approvals is None else access_approvals,
        )
        if new != (self.is_production, self.optimize_for, self.color, self.access_approvals):
            self._updated(
                is_production=new[0], optimize_for=new[1], color=new[2], access_approvals=new[3]
            )

    @event(Updated)
    def _updated(
        self, is_production: bool, optimize_for: str, color: str | None, access_approvals: int = 0
    ) -> None:
        self.is_production = is_production
        self.optimize_for = optimize_for
        self.color = color
        self.access_approvals = access_approvals

    def link_cluster(self, cluster: str) -> None:
        if cluster not in self.clusters:
            self._cluster_linked(cluster=cluster)

    @event("ClusterLinked")
    def _cluster_linked(self, cluster: str) -> None:
        self.clusters.add(cluster)

    def unlink_cluster(self, cluster: str) -> None:
        if cluster in self.clusters:
            self._cluster_unlinked(cluster=cluster)

    @event("ClusterUnlinked")
    def _cluster_unlinked(self, cluster: str) -> None:
        self.clusters.discard(cluster)

    def delete(self) -> None:
        if self.clusters:
            raise PreconditionFailed(
                f"environment {self.name!r} is used by clusters {sorted(self.clusters)}",
                environment=self.name,
                clusters=sorted(self.clusters),
            )
        self._deleted()

    @event("Deleted")
    def _deleted(self) -> None:
        self.live = False
