"""Settings: every environment variable Tenantry reads, read in one place."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    state_dir: Path = Path(".tenantry")
    database_url: str | None = None
    nats_url: str | None = None
    nats_port: int = 4223
    admins: frozenset[str] | None = None
    queue_group: str = "tenantry-command"
    log_format: str = "auto"
    log_level: str = "info"
    max_in_flight: int = 64
    stream_replicas: int = 1
    poll_interval: float = 0.25
    metrics_port: int = 9464
    # Loopback by default: /metrics tells whoever reads it what the tenancy does; the production
    # layout sets 0.0.0.0 so that Prometheus, in another container, can scrape it.
    metrics_host: str = "127.0.0.1"
    actor: str | None = None
    # Who is asking: `header` believes Tenantry-Actor (laptop); `nats` takes the authenticated
    # NATS user (production, see deploy/nats-accounts.conf).
    auth: str = "header"
    client_account: str = "CLIENTS"
    nats_user: str | None = None
    nats_password: str | None = field(default=None, repr=False)
    # Provisioning workers (DESIGN §7).
    namespace_backend: str = "gitops"
    gitops_root: Path | None = None  # default: <state_dir>/gitops, made a git repository
    kubeconfig: Path | None = None
    storage_backend: str = "local"
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None
    s3_principal_account: str = "000000000000"
    # Signed checkpoints of the log (tenantry.audit.checkpoints): the Ed25519 private key (PEM) and
    # how often: every N events or T seconds, whichever comes first.
    signing_key: Path | None = None
    checkpoint_events: int = 1000
    checkpoint_seconds: float = 60.0
    # How often each command service's scheduler looks for due work (expired grants, …): an
    # expiry is recorded within this many seconds of its deadline (access ends AT the deadline
    # whatever this is: every reader compares with it).
    expiry_interval: float = 60.0
    extra: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        admins_raw = env.get("TENANTRY_ADMINS")
        admins = (
            frozenset(a.strip() for a in admins_raw.split(",") if a.strip())
            if admins_raw is not None and admins_raw.strip()
            else None
        )
        return cls(
            state_dir=Path(env.get("TENANTRY_STATE_DIR", ".tenantry")),
            database_url=env.get("TENANTRY_DATABASE_URL") or None,
            nats_url=env.get("TENANTRY_NATS_URL") or None,
            nats_port=int(env.get("TENANTRY_NATS_PORT", "4223")),
            admins=admins,
            queue_group=env.get("TENANTRY_QUEUE_GROUP", "tenantry-command"),
            log_format=env.get("TENANTRY_LOG_FORMAT", "auto"),
            log_level=env.get("TENANTRY_LOG_LEVEL", "info"),
            max_in_flight=int(env.get("TENANTRY_MAX_IN_FLIGHT", "64")),
            stream_replicas=int(env.get("TENANTRY_STREAM_REPLICAS", "1")),
            poll_interval=float(env.get("TENANTRY_POLL_INTERVAL", "0.25")),
            metrics_port=int(env.get("TENANTRY_METRICS_PORT", "9464")),
            metrics_host=env.get("TENANTRY_METRICS_HOST") or "127.0.0.1",
            namespace_backend=env.get("TENANTRY_NAMESPACE_BACKEND", "gitops"),
            gitops_root=_path(env.get("TENANTRY_GITOPS_ROOT")),
            kubeconfig=_path(env.get("TENANTRY_KUBECONFIG")),
            storage_backend=env.get("TENANTRY_STORAGE_BACKEND", "local"),
            s3_endpoint_url=env.get("TENANTRY_S3_ENDPOINT_URL") or None,
            s3_region=env.get("TENANTRY_S3_REGION") or None,
            s3_access_key_id=env.get("TENANTRY_S3_ACCESS_KEY_ID") or None,
            s3_secret_access_key=env.get("TENANTRY_S3_SECRET_ACCESS_KEY") or None,
            s3_principal_account=env.get("TENANTRY_S3_PRINCIPAL_ACCOUNT", "000000000000"),
            actor=env.get("TENANTRY_ACTOR") or None,
            auth=env.get("TENANTRY_AUTH", "header"),
            client_account=env.get("TENANTRY_CLIENT_ACCOUNT", "CLIENTS"),
            nats_user=env.get("TENANTRY_NATS_USER") or None,
            nats_password=env.get("TENANTRY_NATS_PASSWORD") or None,
            signing_key=_path(env.get("TENANTRY_SIGNING_KEY")),
            checkpoint_events=int(env.get("TENANTRY_CHECKPOINT_EVENTS", "1000")),
            checkpoint_seconds=float(env.get("TENANTRY_CHECKPOINT_SECONDS", "60")),
            expiry_interval=float(env.get("TENANTRY_EXPIRY_INTERVAL", "60")),
        )

    @property
    def default_signing_key(self) -> Path:
        """Where `tenantry up` keeps the key it makes when TENANTRY_SIGNING_KEY is unset."""
        return self.state_dir / "signing.key"

    @property
    def nats_url_file(self) -> Path:
        """Where `tenantry up` writes the URL of the nats-server it started, for the CLI."""
        return self.state_dir / "nats.url"

    @property
    def up_lock_file(self) -> Path:
        """Held (flock) by the `tenantry up` running in this state folder; says its pid and URL."""
        return self.state_dir / "up.lock"

    def client_nats_url(self) -> str:
        """Where a client finds the bus: TENANTRY_NATS_URL, else the server a local
        `tenantry up` started (its `nats.url`), else where `tenantry up` would listen
        (TENANTRY_NATS_PORT, 4223): a client never lands on an unrelated NATS on 4222."""
        if self.nats_url:
            return self.nats_url
        try:
            written = self.nats_url_file.read_text().strip()
        except OSError:
            written = ""
        return written or f"nats://127.0.0.1:{self.nats_port}"


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None
