"""One provisioning worker as its own process, wired the way `tenantry serve worker` will be:
`python -m tests.e2e.worker_process KIND NATS_URL CONFIG_JSON` (CONFIG_JSON: BackendConfig's
fields). SIGTERM stops it cleanly; the tests SIGKILL it to crash it."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from tenantry.logs import configure_logging
from tenantry.server.bootstrap import connect, run_until_signalled
from workers import BackendConfig, run_worker


def main() -> None:
    kind, url, raw = sys.argv[1:4]
    fields = json.loads(raw)
    for key in ("gitops_root", "kubeconfig"):
        if fields.get(key) is not None:
            fields[key] = Path(fields[key])
    fields["backoff"] = tuple(fields["backoff"])
    config = BackendConfig(**fields)
    configure_logging("json", "info")

    async def serve(stop: asyncio.Event) -> None:
        nc = await connect(url, f"tenantry-worker-{kind}")
        try:
            await run_worker(kind, nc, stop, backend_config=config)
        finally:
            await nc.drain()

    run_until_signalled(serve)


if __name__ == "__main__":
    main()
