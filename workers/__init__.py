"""Provisioning workers that follow the event stream: namespaces and storage (DESIGN §7)."""

from workers.config import BackendConfig
from workers.run import WORKER_KINDS, run_worker

__all__ = ["WORKER_KINDS", "BackendConfig", "run_worker"]
