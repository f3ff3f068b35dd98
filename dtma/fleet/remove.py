"""`dtma fleet rm`: delete a toolbox on every selected agent, at most `parallel` at once."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Literal

from dtma.client import ApiError, Unreachable
from dtma.fleet.fanout import STRANGE_ANSWERS, Connection, fan_out, strange_answer
from dtma.fleet.inventory import FleetAgent


@dataclass(frozen=True)
class RemoveResult:
    """`removed`, `absent` (the agent never had it: fine, so a re-run is idempotent),
    `failed` (the agent's delete operation did not succeed, or an API error) or `unreachable`."""

    agent: FleetAgent
    outcome: Literal["removed", "absent", "failed", "unreachable"]
    message: str = ""


async def fleet_remove(
    agents: list[FleetAgent],
    toolbox: str,
    conn: Connection,
    *,
    parallel: int = 16,
    timeout: float = 120.0,
) -> list[RemoveResult]:
    """DELETE the toolbox on each agent and wait for its operation, each within `timeout`."""

    async def one(agent: FleetAgent) -> RemoveResult:
        try:
            async with asyncio.timeout(timeout), conn.client(agent) as client:
                try:
                    ref = await client.delete(toolbox)
                except ApiError as exc:
                    if exc.status == 404:
                        return RemoveResult(agent, "absent")
                    raise
                op = await client.wait_operation(ref.operation, timeout)
        except TimeoutError:
            return RemoveResult(agent, "failed", f"not removed within {timeout:g}s")
        except Unreachable as exc:
            return RemoveResult(agent, "unreachable", str(exc))
        except ApiError as exc:
            return RemoveResult(agent, "failed", f"{exc.status} {exc.code}: {exc.message}")
        except STRANGE_ANSWERS as exc:
            return RemoveResult(agent, "failed", strange_answer(exc))
        if op.state == "succeeded":
            return RemoveResult(agent, "removed")
        return RemoveResult(agent, "failed", f"delete {op.state}: {op.error or ''}".rstrip(": "))

    return await fan_out(agents, one, parallel)
