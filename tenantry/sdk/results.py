"""What the bus answers, as pydantic models, for the SDK's users: the command and query replies
(tenantry.protocol) and each query's result (projections.results, shared with the server)."""

from __future__ import annotations

from projections.results import (
    Access,
    AccessChange,
    AccessCheck,
    AccessInForce,
    AuditPage,
    Cluster,
    Environment,
    EnvironmentTags,
    Grant,
    MlRepo,
    StorageIntegration,
    Team,
    Workspace,
)
from tenantry.protocol import AppliedCommand, ApplyReply, CommandReply, QueryAnswer

__all__ = [
    "Access",
    "AccessChange",
    "AccessCheck",
    "AccessInForce",
    "AppliedCommand",
    "ApplyReply",
    "AuditPage",
    "Cluster",
    "CommandReply",
    "Environment",
    "EnvironmentTags",
    "Grant",
    "MlRepo",
    "QueryAnswer",
    "StorageIntegration",
    "Team",
    "Workspace",
]
