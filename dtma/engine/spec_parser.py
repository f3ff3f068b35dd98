"""Spec parsing off the event loop: a small pool of its own and a time bound.

A big YAML body costs up to a second of CPU; on the loop it would stall every probe and gate
(spurious restarts and rollbacks follow). The pool is separate from the threads that Docker and
Vault calls use, so a flood of big bodies cannot starve them either.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from dtma.errors import SpecInvalid
from dtma.spec.models import ToolboxSpec
from dtma.spec.validate import SpecPolicy, parse_spec

PARSE_WORKERS = 2
PARSE_TIMEOUT_S = 10.0


class SpecParser:
    """Concurrency: any number of callers; at most PARSE_WORKERS parses run at once, the rest
    queue. A parse that outlives the time bound is answered with SpecInvalid; its thread runs to
    completion (threads cannot be killed), bounded by the document limits. close() is
    idempotent and not final: the agent stops and starts again while Docker is not up yet, and
    the next parse makes a new pool."""

    def __init__(
        self, policy: SpecPolicy, workers: int = PARSE_WORKERS, timeout: float = PARSE_TIMEOUT_S
    ) -> None:
        self.policy = policy
        self._timeout = timeout
        self._workers = workers
        self._pool: ThreadPoolExecutor | None = None

    async def parse(self, body: bytes | str) -> ToolboxSpec:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="dtma-spec")
        work = asyncio.get_running_loop().run_in_executor(self._pool, parse_spec, body, self.policy)
        try:
            return await asyncio.wait_for(work, self._timeout)
        except TimeoutError:
            raise SpecInvalid(
                "spec too complex",
                [{"loc": ["body"], "msg": f"could not be parsed within {self._timeout:g}s"}],
            ) from None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
