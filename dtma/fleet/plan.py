"""The order of a fleet rollout (pure): canaries one at a time, then batches."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from dtma.fleet.inventory import FleetAgent


@dataclass(frozen=True)
class Wave:
    """Agents updated together; the next wave starts only once every gate in this one ended
    and all passed. `label` is what progress lines show, e.g. `canary 1/2` or `batch 3/5`."""

    kind: Literal["canary", "batch"]
    label: str
    agents: tuple[FleetAgent, ...]


def plan_waves(agents: list[FleetAgent], canary: int, batch: int) -> list[Wave]:
    """Split the selected agents, in fleet-file order: the first `canary` each alone, the rest
    in waves of `batch`. Deterministic, so a re-run walks the same order (resume)."""
    if canary < 0 or batch < 1:
        raise ValueError("canary must be >= 0 and batch >= 1")
    first, rest = agents[:canary], agents[canary:]
    waves = [Wave("canary", f"canary {i + 1}/{len(first)}", (a,)) for i, a in enumerate(first)]
    chunks = [tuple(rest[i : i + batch]) for i in range(0, len(rest), batch)]
    waves += [
        Wave("batch", f"batch {i + 1}/{len(chunks)}", chunk) for i, chunk in enumerate(chunks)
    ]
    return waves
