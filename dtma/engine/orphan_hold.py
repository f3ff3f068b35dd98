"""The orphan hold: what an agent that starts on an empty state dir finds of its own id.

The state was lost, not necessarily the workload, so those containers and networks may still be
serving: the reaper (engine/watcher.py) keeps off them until an operator releases the hold.
"""

from __future__ import annotations

from typing import Any

import structlog

from dtma.domain.containers import ObservedContainer, ObservedNetwork
from dtma.ports import ContainerRuntime

log = structlog.get_logger(__name__)


class OrphanHold:
    """Containers and networks of this agent's id that no toolbox wanted when the agent
    started on an empty state dir: they may be serving (the state was lost, not the
    workload), so the reaper keeps off them until an operator releases the hold
    (`dtma adopt`, POST /v1/agent/adopt, or DTMA_ADOPT_ORPHANS=true at start)."""

    def __init__(self) -> None:
        self.containers: set[str] = set()
        self.networks: set[str] = set()

    def hold(self, containers: list[ObservedContainer], networks: list[ObservedNetwork]) -> None:
        self.containers |= {c.id for c in containers}
        self.networks |= {n.name for n in networks}

    async def hold_unknown(self, runtime: ContainerRuntime, agent_id: str, known: set[str]) -> None:
        """At start, before recovery and the reaper: hold what the engine has of `agent_id`
        that no toolbox in `known` (the state DB's) wants, and say so loudly. Adds to the hold;
        calling it again holds nothing twice."""
        containers = [
            c
            for c in await runtime.list_managed()
            if c.agent == agent_id and c.toolbox not in known
        ]
        networks = [n for n in await runtime.list_networks() if n.toolbox not in known]
        if not containers and not networks:
            return
        self.hold(containers, networks)
        log.warning(
            "orphans_held",
            agent_id=agent_id,
            containers=len(containers),
            networks=len(networks),
            toolboxes=sorted({c.toolbox for c in containers} | {n.toolbox for n in networks}),
            message="started on an empty state dir while containers of this agent id exist: "
            "they are NOT reaped until `dtma adopt` (POST /v1/agent/adopt) releases them",
        )

    def release(self) -> tuple[int, int]:
        """Hand the held orphans to the reaper; returns (containers, networks) released."""
        counts = len(self.containers), len(self.networks)
        self.containers.clear()
        self.networks.clear()
        return counts

    def describe(self) -> dict[str, Any]:
        held = bool(self.containers or self.networks)
        return {
            "held": held,
            "containers": len(self.containers),
            "networks": len(self.networks),
            "hint": (
                "the agent started on an empty state dir and found these of its own id: they "
                "are not reaped until `dtma adopt` (or POST /v1/agent/adopt) hands them to the "
                "reaper; re-apply the toolboxes you want to keep first"
                if held
                else None
            ),
        }
