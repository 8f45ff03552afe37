"""What every scenario reports: the product's rate against a raw baseline from the same run."""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Result:
    scenario: str
    product: float
    baseline: float
    unit: str
    gate: float  # the floor the issue sets: below it the scenario fails
    goal: float
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        """product / baseline: higher is better."""
        return self.product / self.baseline if self.baseline else 0.0

    def as_json(self) -> str:
        payload = {
            "scenario": self.scenario,
            "product": round(self.product, 3),
            "baseline": round(self.baseline, 3),
            "unit": self.unit,
            "ratio": round(self.ratio, 4),
            "floor": self.gate,
            "goal": self.goal,
            **({"notes": self.notes} if self.notes else {}),
        }
        return json.dumps(payload)

    def as_text(self) -> str:
        status = "ok" if self.ratio >= self.gate else "BELOW FLOOR"
        return (
            f"{self.scenario:<22} product {self.product:>12,.1f} {self.unit:<10} "
            f"baseline {self.baseline:>12,.1f}  ratio {self.ratio:7.3f} "
            f"(floor {self.gate}, goal {self.goal})  {status}"
            + (f"\n{'':<22} {json.dumps(self.notes)}" if self.notes else "")
        )


@contextmanager
def stopwatch() -> Iterator[list[float]]:
    """`with stopwatch() as t: ...` then `t[0]` holds the elapsed seconds."""
    elapsed = [0.0]
    started = time.perf_counter()
    try:
        yield elapsed
    finally:
        elapsed[0] = time.perf_counter() - started


def machine() -> dict[str, Any]:
    import os

    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "system": platform.system(),
    }


def summary(results: list[Result]) -> dict[str, Any]:
    return {
        "summary": True,
        "machine": machine(),
        "scenarios": len(results),
        "below_floor": [r.scenario for r in results if r.ratio < r.gate],
        "below_goal": [r.scenario for r in results if r.ratio < r.goal],
    }
