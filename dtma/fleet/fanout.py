"""Bounded fan-out over agents, and the one way a fleet command opens a client to an agent."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
from pydantic import ValidationError

from dtma.client import DtmaClient
from dtma.fleet.inventory import FleetAgent

# What else an agent (or something that is not one) can do to a call: answer a body that is
# not the API's shape, or break the HTTP exchange in a way the client does not retry.
STRANGE_ANSWERS = (ValidationError, aiohttp.ClientError)


def strange_answer(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return f"not a dtma agent's answer ({exc.error_count()} fields do not match the API)"
    return f"HTTP exchange failed: {type(exc).__name__}: {exc}"


T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Connection:
    """How to reach agents: TLS context (or None), per-request timeout, attempts per request.
    Fleet commands retry less than the one-agent CLI: a dead host must not hold a batch up."""

    ssl: Any = None
    timeout: float = 10.0
    retries: int = 2

    def client(self, agent: FleetAgent) -> DtmaClient:
        return DtmaClient(
            agent.url,
            agent.token.get_secret_value(),
            timeout=self.timeout,
            retries=self.retries,
            ssl=self.ssl,
        )


async def fan_out(items: Sequence[T], work: Callable[[T], Awaitable[R]], parallel: int) -> list[R]:
    """`work` on every item, at most `parallel` at a time; results in the items' order.

    `work` is expected to turn an agent's failure into a result rather than raise: one
    unreachable host is a row, not a crash. If it raises anyway, the TaskGroup cancels the rest
    and the error propagates (a bug, not a host's failure)."""
    if parallel < 1:
        raise ValueError("parallel must be at least 1")
    gate = asyncio.Semaphore(parallel)

    async def one(item: T) -> R:
        async with gate:
            return await work(item)

    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(one(i)) for i in items]
    return [t.result() for t in tasks]
