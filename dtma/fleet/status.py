"""`dtma fleet status`: every agent's toolboxes, gathered concurrently, one row per agent."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from dtma.api.schemas import ToolboxStatusOut
from dtma.client import ApiError, Unreachable
from dtma.fleet.fanout import STRANGE_ANSWERS, Connection, fan_out, strange_answer
from dtma.fleet.inventory import FleetAgent


@dataclass(frozen=True)
class AgentStatus:
    """One agent's answer, or why there is none: `reachable` is False when no HTTP answer came
    (refused, timed out); an agent that answered with an error (401, 503) is reachable with
    `error` set. Either way the row has no toolboxes."""

    agent: FleetAgent
    reachable: bool
    error: str | None = None
    toolboxes: list[ToolboxStatusOut] = field(default_factory=list)

    def phases(self) -> dict[str, int]:
        return dict(sorted(Counter(t.phase for t in self.toolboxes).items()))

    def toolbox(self, toolbox_id: str) -> ToolboxStatusOut | None:
        return next((t for t in self.toolboxes if t.id == toolbox_id), None)

    def as_json(self, toolbox_id: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "agent": self.agent.name,
            "url": self.agent.url,
            "labels": self.agent.labels,
            "reachable": self.reachable,
            "error": self.error,
            "toolboxes": len(self.toolboxes),
            "phases": self.phases(),
        }
        if toolbox_id is not None:
            tb = self.toolbox(toolbox_id)
            out["toolbox"] = (
                None
                if tb is None
                else {
                    "id": tb.id,
                    "revision": serving(tb),
                    "latest_revision": tb.revision,
                    "stable_revision": tb.stable_revision,
                    "phase": tb.phase,
                }
            )
        return out


def serving(status: ToolboxStatusOut) -> int | None:
    """The revision that serves: the toolbox's `revision` is the newest *applied* one (a
    rolled-back revision too), so read the servers'; while a start_first rollout gates, the
    old servers carry the lower number. No servers (stopped, failed): the stable revision."""
    revisions = [s.revision for s in status.servers]
    return min(revisions) if revisions else status.stable_revision


async def fleet_status(
    agents: list[FleetAgent], conn: Connection, *, parallel: int = 16, timeout: float = 10.0
) -> list[AgentStatus]:
    """GET /v1/toolboxes on every agent, at most `parallel` at once, each bounded by `timeout`
    seconds in all (retries included). Never raises for an agent's failure."""

    async def one(agent: FleetAgent) -> AgentStatus:
        try:
            async with asyncio.timeout(timeout), conn.client(agent) as client:
                return AgentStatus(agent, True, toolboxes=await client.toolboxes())
        except TimeoutError:
            return AgentStatus(agent, False, f"no answer within {timeout:g}s")
        except Unreachable as exc:
            return AgentStatus(agent, False, str(exc))
        except ApiError as exc:  # 401, 503 after retries, ...: reached, but no usable answer
            return AgentStatus(agent, True, f"{exc.status} {exc.code}: {exc.message}")
        except STRANGE_ANSWERS as exc:
            return AgentStatus(agent, True, strange_answer(exc))

    return await fan_out(agents, one, parallel)
