"""The scheduler's start: `Scheduler.fold()` from position 0 over a history of N published
events (`bench.scale`'s grower: grants given, changed, revoked; team members joining and
leaving), in CPU seconds and events per CPU second. Not a ratio scenario of `python -m bench`:
run it by hand against two checkouts on the same history (kept in $TMPDIR, made once): copy
this file out of the tree first, since `python -m` would put the working directory (this
checkout) ahead of PYTHONPATH: `cp bench/scheduler_start.py /tmp/s.py; cd /tmp;
PYTHONPATH=<checkout> python s.py [events] [rounds]`. It prints which scheduler it ran."""

from __future__ import annotations

import gc
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import structlog

from bench.as_of_query import _Tenancy
from bench.scale import _Grower
from domain.clock import system_clock
from domain.service import TenancyService
from tenantry.server.scheduler import Scheduler
from tenantry.server.store import event_store_env
from tenantry.settings import Settings


def history(events: int) -> TenancyService:
    folder = Path(tempfile.gettempdir()) / f"tenantry-scheduler-start-{events}"
    settings = Settings(state_dir=folder)
    made = (folder / "done").exists()
    service = TenancyService(event_store_env(settings))
    if not made:
        tenancy = _Tenancy(service)
        tenancy.set_up()
        _Grower(service, tenancy).grow_to(events)
        (folder / "done").touch()
    return service


async def _never(*_: object) -> object:
    raise AssertionError("fold only")


def main() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    events = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    service = history(events)
    stored = service.recorder.max_notification_id() or 0
    cpu, wall = [], []
    for _ in range(rounds):
        scheduler = Scheduler(service.recorder, _never, system_clock)  # type: ignore[arg-type]
        gc.collect()
        c0, w0 = time.process_time(), time.perf_counter()
        scheduler.fold()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
        assert scheduler.position == stored, (scheduler.position, stored)
    c, w = statistics.median(cpu), statistics.median(wall)
    print(
        f"{sys.modules[Scheduler.__module__].__file__}: {stored} stored records, fold from 0: "
        f"cpu {c:.2f} s ({stored / c:,.0f} records/cpu-s), wall {w:.2f} s; "
        f"cpu rounds {[round(x, 2) for x in cpu]}"
    )
    service.close()


if __name__ == "__main__":
    main()
